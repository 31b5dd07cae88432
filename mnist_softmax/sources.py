"""Where the MNIST files come from: the sources tried in turn (--mirror flags, $MNIST_SOFTMAX_MIRROR,
the defaults), each checked before any download, and how a URL is shown and sent: its credentials
never printed (redact), its userinfo percent-encoded (http_url)."""

from __future__ import annotations

import os
import re
import urllib.parse
from collections.abc import Sequence
from pathlib import Path

from .errors import DownloadError

DEFAULT_SOURCES = (
    "https://storage.googleapis.com/cvdf-datasets/mnist/",
    "https://ossci-datasets.s3.amazonaws.com/mnist/",
    "http://yann.lecun.com/exdb/mnist/",
)
MIRROR_ENV = "MNIST_SOFTMAX_MIRROR"


# Where a URL starts: a scheme and one slash or more (http:/ is a mistyped http://, and its password
# is no less secret).
_SCHEME = re.compile(r"(?i)(?<![a-z0-9+.-])[a-z][a-z0-9+.-]*:/+")


def redact(text: str) -> str:
    """text with the credentials (user:password@) and the query string of any URL in it shown as ***:
    they are never printed.

    Each URL is parsed from its scheme to the end of its word (a password holds no whitespace:
    check_source refuses one that does): its userinfo runs to the word's last @, since a password
    may hold any character a URL allows there (quotes, an @, a / or a # of its own: http://u:12/x@h/
    even parses, as port 12), and an @ later in a path only hides more; its query runs from the
    first ? after the host to a #.
    """
    text = str(text)
    out, pos = [], 0
    for m in _SCHEME.finditer(text):
        if m.start() < pos:  # inside a word already redacted
            continue
        end = re.compile(r"\s|$").search(text, m.end()).start()
        word = text[m.end() : end]
        at = word.rfind("@")
        host_and_rest = word[at + 1 :] if at >= 0 else word
        query = re.search(r"\?[^#]+", host_and_rest)
        if query:
            host_and_rest = host_and_rest[: query.start() + 1] + "***" + host_and_rest[query.end() :]
        out += [text[pos : m.end()], "***@" if at >= 0 else "", host_and_rest]
        pos = end
    return "".join(out) + text[pos:]


def _split_sources(value: str) -> list[str]:
    """$MNIST_SOFTMAX_MIRROR's sources, separated by whitespace or commas, except the commas inside a
    URL's credentials (a comma may be part of a password): a URL's word is cut at a comma only
    where a new source starts after it (a scheme) or past its last @."""
    sources = []
    for word in value.split():
        for piece in re.split(r",(?=[A-Za-z][A-Za-z0-9+.-]*:/)", word):
            if _SCHEME.match(piece):
                head, at, tail = piece.rpartition("@")
                first, *more = tail.split(",")
                sources += [head + at + first, *more]
            else:
                sources += piece.split(",")
    return [s for s in sources if s]


def check_source(source: str) -> str:
    """The source if it is an http(s) URL with a host, a file:// URL or a plain path; else DownloadError."""
    if not source.strip():
        raise DownloadError("a mirror given is empty; give a URL or a folder")
    slash = re.match(r"(?i)(https?|file):(?!//)", source)
    if slash:
        scheme = slash.group(1).lower()
        raise DownloadError(f"mirror {redact(source)!r} looks like a URL without its two slashes; write {scheme}://")
    if "://" not in source:
        try:
            Path(source).expanduser()
        except RuntimeError as e:  # ~user of no user here
            raise DownloadError(f"mirror {source!r}: {e}") from None
        return source
    scheme, _, rest = source.partition("://")
    userinfo, at, tail = rest.rpartition("@")
    if re.search(r"\s", rest):  # redact() could not tell where such a password ends, nor a URL
        where = "its user name or password" if re.search(r"\s", userinfo) else "it"
        shown_url = f"{scheme}://{'***@' if at else ''}{tail}"
        raise DownloadError(f"mirror {shown_url!r}: {where} holds a space; percent-encode it (%20)")
    try:
        parsed = urllib.parse.urlparse(http_url(source))
        parsed.port  # noqa: B018 -- raises ValueError for a port that is not a number
    except ValueError as e:
        why = "its port is not a number" if str(e).startswith("Port could not") else redact(e)
        raise DownloadError(f"mirror {redact(source)!r} is not a valid URL ({why})") from None
    if parsed.scheme in ("http", "https") and parsed.hostname:
        return source
    if parsed.scheme == "file":
        return source
    raise DownloadError(f"mirror {redact(source)!r}: only http://, https://, file:// URLs and folders are supported")


# What a URL may hold in its userinfo unencoded (RFC 3986: unreserved, sub-delims, ":"), and "%"
# where it starts a %XX escape.
_USERINFO_AS_IS = re.compile(r"[A-Za-z0-9\-._~!$&'()*+,;=:]|%[0-9A-Fa-f]{2}")


def http_url(source: str) -> str:
    """An http(s) mirror URL as it is sent: its userinfo, which runs to the URL's last @ (see redact),
    percent-encoded wherever it holds a character a URL does not allow there (a /, ?, #, @, quote,
    bracket, backslash or % of a password), so that no URL parser takes part of a password for the
    host. The server receives the credentials as they were typed (they are decoded for Basic auth)."""
    head, sep, rest = source.partition("://")
    userinfo, at, tail = rest.rpartition("@")
    if not (sep and at):
        return source
    pieces = [m.group() for m in re.finditer(r"%[0-9A-Fa-f]{2}|.", userinfo, re.S)]
    encoded = "".join(p if _USERINFO_AS_IS.fullmatch(p) else urllib.parse.quote(p, safe="") for p in pieces)
    return f"{head}://{encoded}@{tail}"


def sources(mirrors: Sequence[str] = (), env: dict | None = None) -> list[str]:
    """Sources in the order tried: --mirror flags, then $MNIST_SOFTMAX_MIRROR, then the defaults.

    The environment variable may hold several sources separated by whitespace or commas. A
    malformed or unsupported URL is a DownloadError naming it.
    """
    env = os.environ if env is None else env
    from_env = _split_sources(env.get(MIRROR_ENV, ""))
    seen: list[str] = []
    for s in [*mirrors, *from_env, *DEFAULT_SOURCES]:
        if check_source(s) not in seen:
            seen.append(s)
    return seen


def local_dir(source: str) -> Path | None:
    """The folder a source names, if it is a local path or a file:// URL; None for http(s)."""
    parsed = urllib.parse.urlparse(http_url(source)) if "://" in source else None
    if parsed is None:
        return Path(source).expanduser()
    if parsed.scheme == "file":
        from urllib.request import url2pathname  # only here: slow to import, eval/predict never need it

        return Path(url2pathname(parsed.path))
    return None
