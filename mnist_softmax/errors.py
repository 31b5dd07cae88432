"""The project's own exceptions, and how paths appear in messages.

The CLI turns each exception into a one-line message and exit code 1.
"""

import os


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


class TrainingDiverged(MnistSoftmaxError):
    """The loss became NaN or infinite."""


class Terminated(KeyboardInterrupt):
    """SIGTERM (sent by `timeout`, `kill`, `docker stop`, job schedulers), handled like Ctrl-C:
    what is complete is saved, temp files are removed, and the exit code is 143."""

    exit_code = 143


def exit_code(interrupt: KeyboardInterrupt) -> int:
    """The shell's code for a process stopped by this signal: 130 for SIGINT, 143 for SIGTERM."""
    return getattr(interrupt, "exit_code", 130)


def path_text(path) -> str:
    """A path as valid Unicode text: bytes that are not UTF-8 (a file name from another system)
    appear as \\xNN instead of as lone surrogates, which no UTF-8 output can carry."""
    return os.fsencode(path).decode("utf-8", "backslashreplace")


def escape_controls(text: str) -> str:
    """Control characters (newline, tab, escape sequences, ...) as visible escapes, so a file name
    can neither break a line of output nor send commands to the terminal."""
    return "".join(c if c.isprintable() else c.encode("unicode_escape").decode("ascii") for c in text)


def shown(path) -> str:
    """A path for human output and messages: path_text, with control characters escaped."""
    return escape_controls(path_text(path))
