"""Ctrl-C and SIGTERM for a command whose work must survive them (`train`).

The first signal interrupts where the program is: KeyboardInterrupt for SIGINT, errors.Terminated
for SIGTERM. From then on, and while the result is being saved (`hold`), signals wait instead: the
clean-up and the save that follow an interrupt, or the save of a finished run, cannot themselves be
cut short, so nothing is left half-written. `release` ends the wait and delivers the first signal
that waited, if any, as if it had just arrived. Signals still waiting when the command leaves the
shield came after its work was done, and are dropped.

An interrupt raised where library code swallows it (in the import of a compiled module, say) is
not lost: `check`, called where the work can stop (before each epoch), raises it again.

A signal the command was started with ignored stays ignored (as Python itself leaves SIGINT): a
shell script's background job (`mnist-softmax train &`) is not stopped by a Ctrl-C meant for the
script.
"""

from __future__ import annotations

import signal
import threading

from .errors import Terminated

SIGNALS = (signal.SIGINT, signal.SIGTERM)


def handle_sigterm() -> None:
    """SIGTERM (timeout, kill, docker stop, a job scheduler) stops a command the way Ctrl-C does:
    errors.Terminated, a KeyboardInterrupt whose exit code is 143. One the process started with
    ignored stays ignored (see the module docstring); outside the main thread nothing is done."""

    def terminate(signum, frame):
        raise Terminated()

    if threading.current_thread() is threading.main_thread() and signal.getsignal(signal.SIGTERM) != signal.SIG_IGN:
        signal.signal(signal.SIGTERM, terminate)


def interrupt_for(signum: int) -> KeyboardInterrupt:
    """The exception a signal raises: Terminated (exit code 143) for SIGTERM, else KeyboardInterrupt (130)."""
    return Terminated() if signum == signal.SIGTERM else KeyboardInterrupt()


class Shield:
    """While inside: SIGINT and SIGTERM interrupt once, then wait until `release()` (see the module
    docstring). Outside the main thread, where Python delivers no signal, it does nothing."""

    def __init__(self) -> None:
        self.holding = False
        self.waiting: list[int] = []
        self.arrived: int | None = None  # the signal that interrupted, once one has
        self._previous: dict[int, object] = {}

    def __enter__(self) -> Shield:
        if threading.current_thread() is threading.main_thread():
            self._previous = {
                sig: signal.signal(sig, self._arrived) for sig in SIGNALS if signal.getsignal(sig) != signal.SIG_IGN
            }
        return self

    def __exit__(self, *exc) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        self._previous = {}
        self.waiting.clear()

    def _arrived(self, signum: int, frame) -> None:
        if self.holding:
            self.waiting.append(signum)
            return
        self.holding = True  # what runs because of this interrupt is not interrupted in turn
        self.arrived = signum
        raise interrupt_for(signum)

    def check(self) -> None:
        """Raise the interrupt again if one arrived: work that goes on after it does so only
        because something swallowed the exception (work that stopped never calls this)."""
        if self.arrived is not None:
            raise interrupt_for(self.arrived)

    def hold(self) -> None:
        """From now on signals wait (for a save that must complete)."""
        self.holding = True

    def release(self) -> None:
        """Signals act again; the first one that waited acts now (and holds the rest, as one that
        arrives does)."""
        if self.waiting:
            signum = self.waiting[0]
            self.waiting.clear()
            raise interrupt_for(signum)
        self.holding = False
