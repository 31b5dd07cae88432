"""Run the mnist-softmax CLI with signals aimed at a moment, not at a time.

    python aim_signal.py AIM [AIM ...] -- mnist-softmax-args...

Each AIM is TARGET=SIGNALS. TARGET says when this process sends itself the signals (once):
  write:NAME          when the temp file of NAME (model.npz, metrics.csv, ...) is created: its write has begun
  slow-write:NAME     the same, and that write then takes 1 s more (a slow disk)
  figure:NAME         when the figure helper creates the temp file of NAME (curves.png, weights.png): the
                      helper sends them to this process, which is then waiting for its figures
  slow-figure:NAME    the same, and the helper then takes 30 s more over that file (a slow disk), so
                      this process stops it with the temp file half-written
  call:MODULE:FUNC:N  at the N-th call of mnist_softmax.MODULE.FUNC (or Class.method), before it runs
  after:MODULE:FUNC:N the same, as it returns
  swallow:MODULE:FUNC:N as call:, inside a `try: … except BaseException: pass`, as library code
                      that swallows the interrupt would (Cython module imports do)
  exit                as the interpreter exits (an atexit callback), the command done
  import:MODULE       as MODULE (numpy, click, ...) is first imported, before its code runs: during the
                      command's own imports
SIGNALS is a comma-separated list of INT, TERM or KILL, sent back to back: the second as soon as
the first has been handled (to this process: as its handler raises), while what it started runs.
Signals that arrive together, before Python runs a handler, would be handled as one.
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys
import time


def _send(pid: int, signals: str) -> None:
    first, *rest = signals.split(",")
    try:
        os.kill(pid, getattr(signal, f"SIG{first}"))  # to this process: its Python handler runs here
    finally:
        for name in rest:
            os.kill(pid, getattr(signal, f"SIG{name}"))


def _aim_at_temp(name: str, pid_to_signal, signals: str, then_wait: float = 0.0) -> None:
    from mnist_softmax import fileio

    real, fired = fileio._create_temp, []

    def create_temp(path):
        made = real(path)
        if path.name == name and not fired:
            fired.append(True)
            _send(pid_to_signal(), signals)
            time.sleep(then_wait)
        return made

    fileio._create_temp = create_temp


def _aim(target: str, signals: str) -> None:
    kind, _, what = target.partition(":")
    if kind in ("write", "slow-write"):
        _aim_at_temp(what, os.getpid, signals, 1.0 if kind == "slow-write" else 0.0)
    elif kind in ("figure", "slow-figure"):
        from mnist_softmax import plots

        init = plots.Painter.__init__
        wait = "30" if kind == "slow-figure" else "0"

        def painter_init(self, command=None):
            init(self, [sys.executable, os.path.abspath(__file__), "--figure-helper", what, signals, wait])

        plots.Painter.__init__ = painter_init
    elif kind in ("call", "after", "swallow"):
        import importlib

        module_name, func, n = what.split(":")
        owner = importlib.import_module(f"mnist_softmax.{module_name}")
        *path, func = func.split(".")  # a function, or Class.method
        for name in path:
            owner = getattr(owner, name)
        real, calls = getattr(owner, func), [0]

        def aimed(*a, **k):
            calls[0] += 1
            if calls[0] == int(n) and kind == "call":
                _send(os.getpid(), signals)
            if calls[0] == int(n) and kind == "swallow":
                with contextlib.suppress(BaseException):
                    _send(os.getpid(), signals)
            result = real(*a, **k)
            if calls[0] == int(n) and kind == "after":
                _send(os.getpid(), signals)
            return result

        setattr(owner, func, aimed)
    elif kind == "import":
        sys.meta_path.insert(0, _ImportAim(what, signals))
    elif kind == "exit":
        import atexit

        atexit.register(_send, os.getpid(), signals)
    else:
        raise SystemExit(f"unknown target {target!r}")


class _ImportAim:
    """A finder that finds nothing: it sends the signals when `module` is first asked for."""

    def __init__(self, module: str, signals: str):
        self.module, self.signals = module, signals

    def find_spec(self, name, path=None, target=None):
        if name == self.module:
            sys.meta_path.remove(self)
            _send(os.getpid(), self.signals)
        return None


def main() -> None:
    if sys.argv[1] == "--figure-helper":  # the figure helper of a `figure:` aim
        _, _, name, signals, wait = sys.argv
        _aim_at_temp(name, os.getppid, signals, float(wait))
        from mnist_softmax import plots

        code = plots._helper()
        sys.stdout.flush()
        os._exit(code)
    split = sys.argv.index("--")
    for aim in sys.argv[1:split]:
        target, _, signals = aim.rpartition("=")
        _aim(target, signals)
    from mnist_softmax.__main__ import run  # the `mnist-softmax` command itself

    sys.argv = ["mnist-softmax", *sys.argv[split + 1 :]]
    run()


if __name__ == "__main__":
    main()
