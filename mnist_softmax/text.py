"""How names from the user's machine appear in what the tool prints: as valid Unicode, with control
characters escaped, so a file name can neither break a line of output nor send commands to the terminal."""

import os


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
