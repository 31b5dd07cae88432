"""The `mnist-softmax` command (and `python -m mnist_softmax`): signal handlers first, then the CLI.

Ctrl-C and SIGTERM are handled before the heavy imports (click, NumPy: about half a second, more
on a busy machine): a signal then ends the command with one word and the shell's code (130 or
143), never a traceback from inside an import, nor a silent death.
"""

import sys

from .errors import exit_code
from .signals import handle_sigterm


def run() -> None:
    handle_sigterm()
    try:
        from .cli import run as cli_run
    except KeyboardInterrupt as e:  # Ctrl-C (or SIGTERM, as errors.Terminated) during the imports
        sys.stderr.write("interrupted\n")
        raise SystemExit(exit_code(e)) from None
    cli_run()


if __name__ == "__main__":
    run()
