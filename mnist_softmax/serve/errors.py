"""The API's refusals: an HTTP status, the one-line message the CLI would print, and a code by which
the page says it in the reader's language (web/i18n), with the values the message names."""

from __future__ import annotations

from ..errors import MnistSoftmaxError


class ApiError(MnistSoftmaxError):
    """A request the API refuses: its HTTP status and the one-line message sent as {"error": ...};
    `code` and `args` let the page say it in its own words; for 405, the methods the path takes
    (the Allow header)."""

    def __init__(self, status: int, message: str, code: str | None = None, allow: str | None = None, **args):
        super().__init__(message)
        self.status = status
        self.code = code
        self.args_ = args
        self.allow = allow

    def __reduce__(self):  # raised in a worker process (serve/work.py), re-raised in the server's
        return _rebuild, (self.status, str(self), self.code, self.allow, self.args_)

    def body(self) -> dict:
        """The JSON answer: {"error": message} and, when it has one, its code and values."""
        return {"error": str(self)} | ({"code": self.code, "args": self.args_} if self.code else {})


def _rebuild(status: int, message: str, code: str | None, allow: str | None, args: dict) -> ApiError:
    return ApiError(status, message, code, allow, **args)
