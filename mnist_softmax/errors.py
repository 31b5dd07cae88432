"""The project's own exceptions.

The CLI turns each exception into a one-line message and exit code 1.
"""

from __future__ import annotations


class MnistSoftmaxError(Exception):
    """Base class: a problem the user can act on, reported without a traceback."""


class DataError(MnistSoftmaxError):
    """A data file is malformed, truncated or not what it claims to be."""


class DownloadError(MnistSoftmaxError):
    """No source could provide a verified copy of a data file."""


class ConfigError(MnistSoftmaxError):
    """A config file or flag has an unknown key, a wrong type or an out-of-range value."""


class CheckpointError(MnistSoftmaxError):
    """A checkpoint is missing, foreign, truncated or of an unsupported format version."""


class ImageError(MnistSoftmaxError):
    """An image that cannot be read or holds no digit. `code` names the reason and `args` its
    numbers, by which the local page says it in its reader's language (the CLI prints the message)."""

    def __init__(self, message: str, code: str | None = None, **args):
        super().__init__(message)
        self.code = code
        self.args_ = args

    def named(self, path) -> ImageError:
        """The same refusal, its message naming the file."""
        return ImageError(f"{path}: {self}", self.code, **self.args_)

    def __reduce__(self):  # raised in serve's worker processes, re-raised in the server
        return _image_error, (str(self), self.code, self.args_)


def _image_error(message: str, code: str | None, args: dict) -> ImageError:
    return ImageError(message, code, **args)


class TrainingDiverged(MnistSoftmaxError):
    """The loss became NaN or infinite."""


class Terminated(KeyboardInterrupt):
    """SIGTERM (sent by `timeout`, `kill`, `docker stop`, job schedulers), handled like Ctrl-C:
    what is complete is saved, temp files are removed, and the exit code is 143."""

    exit_code = 143


def exit_code(interrupt: KeyboardInterrupt) -> int:
    """The shell's code for a process stopped by this signal: 130 for SIGINT, 143 for SIGTERM."""
    return getattr(interrupt, "exit_code", 130)


class Stopped(SystemExit):
    """A command stopped by a signal once what could be saved was saved and said: it exits with the
    signal's code (130 for Ctrl-C, 143 for SIGTERM), no further message."""
