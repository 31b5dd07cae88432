"""Get the four MNIST files onto disk, verified: mirrors tried in turn, resumable HTTP, checksums.

Files are stored decompressed in the data folder (`data/train-images-idx3-ubyte`, ...), each written
only after the SHA-256 of its decompressed bytes matched the official value, so that any faithful
mirror works, gzipped or not. A body is decompressed and hashed as it arrives, and refused as soon
as it is longer than its file can be. Processes filling one data folder take turns per file.

What the HTTP library does, it does: urllib3's Retry retries refused connections, timeouts before
the response and HTTP 408/429/5xx, with exponential backoff. What no library here does is done here:
falling through to the next mirror, and resuming a body cut off midway with an HTTP Range request.
Nothing here parses, trains or prints; progress bars and the `log` callback aside.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import os
import re
import sys
import time
import urllib.parse
import zlib
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import NamedTuple

from . import __version__
from .errors import DownloadError
from .fileio import atomic_write_bytes, exclusive, remove_stale_temps
from .text import shown

DEFAULT_SOURCES = (
    "https://storage.googleapis.com/cvdf-datasets/mnist/",
    "https://ossci-datasets.s3.amazonaws.com/mnist/",
    "http://yann.lecun.com/exdb/mnist/",
)
MIRROR_ENV = "MNIST_SOFTMAX_MIRROR"


class FileSpec(NamedTuple):
    sha256: str  # of the decompressed bytes
    size: int  # decompressed bytes
    shape: tuple[int, ...]


FILES = {
    "train-images-idx3-ubyte": FileSpec(
        "ba891046e6505d7aadcbbe25680a0738ad16aec93bde7f9b65e87a2fc25776db", 47040016, (60000, 28, 28)
    ),
    "train-labels-idx1-ubyte": FileSpec(
        "65a50cbbf4e906d70832878ad85ccda5333a97f0f4c3dd2ef09a8a9eef7101c5", 60008, (60000,)
    ),
    "t10k-images-idx3-ubyte": FileSpec(
        "0fa7898d509279e482958e8ce81c8e77db3f2f8254e26661ceb7762c4d494ce7", 7840016, (10000, 28, 28)
    ),
    "t10k-labels-idx1-ubyte": FileSpec(
        "ff7bcfd416de33731a308c3f266cc351222c34898ecbeaf847f06e48f7ec33f2", 10008, (10000,)
    ),
}
_GZIP_MAGIC = b"\x1f\x8b"
_CHUNK = 1 << 16
TRANSIENT_STATUS = (408, 429, *range(500, 600))


def max_body(spec: FileSpec) -> int:
    """The most bytes a faithful body of this file can have: the raw file, or its gzip (which
    exceeds the raw size by at most ~0.03% plus a header, for incompressible data)."""
    return spec.size + spec.size // 1000 + 1024


# ---------------------------------------------------------------------------------------------
# Sources


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


def _local_dir(source: str) -> Path | None:
    """The folder a source names, if it is a local path or a file:// URL; None for http(s)."""
    parsed = urllib.parse.urlparse(http_url(source)) if "://" in source else None
    if parsed is None:
        return Path(source).expanduser()
    if parsed.scheme == "file":
        from urllib.request import url2pathname  # only here: slow to import, eval/predict never need it

        return Path(url2pathname(parsed.path))
    return None


# ---------------------------------------------------------------------------------------------
# Bodies


class Decoder:
    """Takes a body chunk by chunk: gzip is decompressed as it arrives, the output hashed and kept.

    Raises ValueError as soon as the body cannot be the file (not gzip or IDX, an HTML page, more
    output than the file's size); `result()` checks completeness and the SHA-256.
    """

    def __init__(self, spec: FileSpec):
        self.spec = spec
        self.head = b""  # the first bytes, until there are two to tell gzip from IDX
        self.inflate = None  # a zlib decompressor for gzip bodies; None for raw IDX
        self.started = False
        self.out = bytearray()
        self.sha = hashlib.sha256()

    def feed(self, chunk: bytes) -> None:
        if not self.started:
            self.head += chunk
            if len(self.head) < 2:
                return
            chunk, self.head, self.started = self.head, b"", True
            if chunk[:2] == _GZIP_MAGIC:
                self.inflate = zlib.decompressobj(wbits=31)
            elif chunk[:2] != b"\x00\x00":
                raise ValueError("got an HTML page" if chunk.lstrip()[:1] == b"<" else "got neither gzip nor IDX data")
        if self.inflate is not None:
            if self.inflate.eof:
                return  # bytes after the gzip stream's end are not part of the file
            try:
                chunk = self.inflate.decompress(chunk, self.spec.size + 1 - len(self.out))
            except zlib.error as e:
                raise ValueError(f"corrupt gzip data ({e})") from None
        self.out += chunk
        self.sha.update(chunk)
        if len(self.out) > self.spec.size:
            raise ValueError(f"decompresses to more than the expected {self.spec.size} bytes")

    def result(self) -> bytes:
        """The verified decompressed bytes; ValueError says why not."""
        if not self.started:
            raise ValueError("got an empty body")
        if self.inflate is not None and not self.inflate.eof:
            raise ValueError("gzip stream is truncated")
        digest = self.sha.hexdigest()
        if digest != self.spec.sha256:
            raise ValueError(f"checksum mismatch (sha256 {digest[:12]}…, expected {self.spec.sha256[:12]}…)")
        return bytes(self.out)


def decode_body(body: bytes, spec: FileSpec) -> bytes:
    """The verified decompressed bytes of a whole body (gzip or raw IDX); ValueError says why not."""
    decoder = Decoder(spec)
    decoder.feed(body)
    return decoder.result()


def _read_chunks(path: Path) -> Iterator[bytes]:
    with open(path, "rb") as f:
        while chunk := f.read(_CHUNK):
            yield chunk


# ---------------------------------------------------------------------------------------------
# Fetching


def _progress(total: int | None, desc: str, quiet: bool, initial: int = 0):
    from tqdm import tqdm

    return tqdm(
        total=total,
        initial=initial,
        desc=desc,
        unit="B",
        unit_scale=True,
        unit_divisor=1024,
        leave=False,
        disable=quiet or not (sys.stdout.isatty() and sys.stderr.isatty()),
    )


class _Transient(Exception):
    """A body cut off midway: worth another try at the same source (the partial file is kept)."""


class _Unreachable(ValueError):
    """No answer from a source at all (refused, unknown host, timed out): it is skipped for the other files."""


class _Slow(_Unreachable):
    """A source that stopped sending (no chunk for the stall limit): asking it again, for this file or
    another, would cost another stall limit, so it is skipped for the rest of the command."""


STALL_SECONDS = 60.0  # no 64 kB chunk (or no complete headers) for this long: cut off (a trickling server)
SLOW_NOTICE_SECONDS = 10.0  # ... and after this long, the user is told which source is slow


class _Sockets(list):
    """The sockets of a session's connections (_watched_adapter), and whether a _Stall has cut them
    off: then a new connection (urllib3 retrying what the cut broke) is refused with _CutOff."""

    cut = False


class _CutOff(Exception):
    """A connection opened after its session was cut off. Not an OSError, so urllib3 does not retry it."""


class _Stall:
    """Cuts a request off when its headers have not all come, or no body chunk has, for `seconds`.
    A server that trickles a byte every few seconds never trips the read timeout, which only bounds
    each socket read; this shuts the session's sockets from a watcher thread, so the blocked read
    returns and the fault is seen. Once `answered()`, `notice()` is called once, from the watcher,
    when no chunk has come for `notice_after` seconds."""

    def __init__(self, sockets: _Sockets, seconds: float, notice=lambda: None, notice_after: float | None = None):
        import threading

        self.sockets = sockets
        self.seconds = seconds
        self.notice = notice
        self.notice_after = SLOW_NOTICE_SECONDS if notice_after is None else notice_after
        self.last = time.monotonic()
        self.fired = self.fired_answered = False
        self.has_answered = False
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._watch, name="download-stall", daemon=True)

    def __enter__(self) -> _Stall:
        self.sockets.cut = False
        self._thread.start()
        return self

    def answered(self) -> None:
        self.has_answered = True
        self.progress()

    def progress(self) -> None:
        self.last = time.monotonic()

    def _watch(self) -> None:
        import socket

        noticed = False
        while not self._done.wait(min(1.0, self.seconds / 4, self.notice_after / 2)):
            quiet_for = time.monotonic() - self.last
            if self.has_answered and not noticed and self.notice_after < quiet_for < self.seconds:
                noticed = True
                with contextlib.suppress(Exception):  # a message must never stop the watch
                    self.notice()
            if quiet_for > self.seconds:
                self.fired, self.fired_answered = True, self.has_answered
                self.sockets.cut = True  # first: the retry of what the shutdown breaks connects no more
                for sock in list(self.sockets):
                    with contextlib.suppress(OSError):
                        sock.shutdown(socket.SHUT_RDWR)
                return

    def __exit__(self, *exc) -> None:
        self._done.set()
        if self._thread.is_alive():
            self._thread.join()

    def cut_off(self) -> _Slow:
        """The fault, once the watch has fired."""
        if self.fired_answered:
            return _Slow(f"too slow: no {_CHUNK // 1024} kB in {self.seconds:g} s")
        return _Slow(f"too slow: no complete answer in {self.seconds:g} s")


def _network_reason(e: Exception) -> str:
    """What a requests network error means, in a few words."""
    import requests

    text = str(e).lower()
    if isinstance(e, requests.Timeout) or "timed out" in text or "timeout" in text:
        return "network error: no answer in time"
    if "refused" in text:
        return "network error: connection refused"
    if "name or service not known" in text or "nodename nor servname" in text or "name resolution" in text:
        return "network error: host not found"
    return f"network error: {type(e).__name__}"


def _read_timed_out(e: Exception) -> bool:
    """Whether a requests error is the socket's read timeout (requests wraps urllib3's
    ReadTimeoutError in a ConnectionError once the body is streaming)."""
    import requests
    from urllib3.exceptions import ReadTimeoutError

    return isinstance(e, requests.ReadTimeout) or any(isinstance(a, ReadTimeoutError) for a in e.args)


def _part_path(data_dir: Path, name: str, url: str) -> Path:
    """The partial download of `name` from `url`: one per URL, so a resume never mixes sources."""
    return data_dir / f".{name}.{hashlib.sha256(url.encode()).hexdigest()[:12]}.part"


@functools.cache
def _retry_class():
    """urllib3's Retry, except that a timeout is not retried: a server that did not take the
    connection, or took the request and then said nothing, for the whole timeout would cost another
    timeout each time it was asked."""
    from urllib3.exceptions import ConnectTimeoutError, NewConnectionError, ReadTimeoutError
    from urllib3.util.retry import Retry

    class NoRetryOnSilence(Retry):
        def increment(self, method=None, url=None, response=None, error=None, _pool=None, _stacktrace=None):
            timed_out = isinstance(error, ConnectTimeoutError) and not isinstance(error, NewConnectionError)
            if timed_out or isinstance(error, ReadTimeoutError):  # (a refused connection is a NewConnectionError)
                raise error.with_traceback(_stacktrace)
            return super().increment(method, url, response, error, _pool, _stacktrace)

    return NoRetryOnSilence


def _watched_adapter(retry, sockets: _Sockets):
    """requests' HTTPAdapter whose connections add their socket to `sockets` once connected, so a
    _Stall can cut off a server that trickles even its headers; once it has, they raise _CutOff."""
    from requests.adapters import HTTPAdapter
    from urllib3.connection import HTTPConnection, HTTPSConnection
    from urllib3.connectionpool import HTTPConnectionPool, HTTPSConnectionPool

    def watched(pool_class, connection_class):
        class Connection(connection_class):
            def connect(self):
                if sockets.cut:
                    raise _CutOff
                super().connect()
                sockets.append(self.sock)

        return type(pool_class.__name__, (pool_class,), {"ConnectionCls": Connection})

    pools = {
        "http": watched(HTTPConnectionPool, HTTPConnection),
        "https": watched(HTTPSConnectionPool, HTTPSConnection),
    }

    class Adapter(HTTPAdapter):
        def init_poolmanager(self, *args, **kwargs):
            super().init_poolmanager(*args, **kwargs)
            self.poolmanager.pool_classes_by_scheme = pools

        def proxy_manager_for(self, proxy, **kwargs):
            manager = super().proxy_manager_for(proxy, **kwargs)
            manager.pool_classes_by_scheme = pools
            return manager

    return Adapter(max_retries=retry)


def _session(retries: int, backoff: float, sockets: _Sockets):
    """A requests session whose urllib3 Retry handles faults before a response: refused or reset
    connections and HTTP 408/429/5xx, each at most `retries` times, waiting backoff·2^k seconds
    (urllib3's schedule: no wait before the first retry). A timeout is not retried (see
    _retry_class), and a server's Retry-After is not obeyed, so no server can make a download wait
    longer than that. Its connections' sockets are added to `sockets` (see _watched_adapter)."""
    import requests

    retry = _retry_class()(
        total=retries,
        status_forcelist=TRANSIENT_STATUS,
        allowed_methods=frozenset({"GET"}),
        backoff_factor=backoff,
        raise_on_status=False,  # the last answer comes back, and says which status it was
        respect_retry_after_header=False,
    )
    session = requests.Session()
    adapter = _watched_adapter(retry, sockets)
    for scheme in ("http://", "https://"):
        session.mount(scheme, adapter)
    session.headers["User-Agent"] = f"mnist-softmax/{__version__} (+https://pypi.org/project/requests)"
    return session


def _partial_length(part: Path) -> int:
    """How many bytes of an earlier attempt `part` holds (0 if none). Anything there that is not a
    file of ours (a FIFO would block the write, a link could point anywhere) is removed first; a
    folder is an error."""
    if part.exists() and not part.is_file() or part.is_symlink():
        if part.is_dir() and not part.is_symlink():
            raise ValueError(f"{part} is a folder in the way of the download; remove it")
        part.unlink()
    return part.stat().st_size if part.exists() else 0


def _resume_offset(response, have: int, part: Path) -> int:
    """Where the response's body starts in the file: `have` when the server resumed our partial file
    of that length (206 with the matching Content-Range), 0 when it sent the whole file (200).
    Anything else is an error: a 416 (our partial file is not a prefix it knows: removed, and
    _Transient so the next try starts over), another status, or an HTML page."""
    status = response.status_code
    if status == 416 and have:
        part.unlink()
        raise _Transient("partial file not resumable; starting over")
    resumed = have and status == 206 and response.headers.get("Content-Range", "").startswith(f"bytes {have}-")
    if status != 200 and not resumed:
        raise ValueError(f"HTTP {status}")
    if response.headers.get("Content-Type", "").startswith("text/html"):
        raise ValueError("got an HTML page")
    return have if resumed else 0


def _announced_total(response, start: int, cap: int) -> int | None:
    """The file's length the response announces (start + Content-Length), or None when it cannot be
    checked (no length, or a Content-Encoding, whose decoded bytes requests hands over). Refused at
    once if longer than the file can be (cap)."""
    length = response.headers.get("Content-Length")
    encoded = response.headers.get("Content-Encoding", "identity") != "identity"
    total = start + int(length) if length and length.isdigit() and not encoded else None
    if total is not None and total > cap:
        raise ValueError(f"announces {total} bytes; this file cannot be more than {cap}")
    return total


def _stream_body(response, f, decoder: Decoder, received: int, cap: int, bar, watch: _Stall) -> int:
    """Append the response's body to file f and feed it to decoder, chunk by chunk; returns the bytes
    of the file received in all. Refuses a body longer than the file can be (cap); a stall (watch
    fired) is _Slow."""
    import requests

    try:
        for chunk in response.iter_content(_CHUNK):
            watch.progress()
            received += len(chunk)
            if received > cap:
                raise ValueError(f"sent more than {cap} bytes; this file cannot be more")
            f.write(chunk)
            decoder.feed(chunk)
            bar.update(len(chunk))
    except (requests.ConnectionError, requests.exceptions.ChunkedEncodingError):
        if not watch.fired:
            raise
    if watch.fired:
        raise watch.cut_off()
    return received


def _fetch_http(
    session,
    url: str,
    part: Path,
    spec: FileSpec,
    timeout: tuple[float, float],
    quiet: bool,
    watch: _Stall,
    log: Callable[[str], None] = lambda msg: None,
) -> bytes:
    """Stream `url` into `part`, resuming from its current length where the server allows (HTTP
    Range, answered 206) and starting over where it does not (answered 200). Returns the verified
    decompressed bytes. `watch` cuts off the session's sockets when the answer stalls.

    Raises _Transient for a body cut off midway (the partial file stays), _Unreachable for no answer,
    _Slow for a stall, ValueError otherwise. Says through `log` when the server keeps silent.
    """
    import threading

    import requests

    have = _partial_length(part)
    decoder, cap = Decoder(spec), max_body(spec)
    responded = False
    silent = (
        f"{redact(url)} has not answered for {SLOW_NOTICE_SECONDS:g} s; "
        f"it is given up once {min(timeout[1], watch.seconds):g} s pass without an answer"
    )
    waiting = threading.Timer(SLOW_NOTICE_SECONDS, lambda: log(silent))
    waiting.daemon = True
    waiting.start()
    try:
        with session.get(url, headers={"Range": f"bytes={have}-"} if have else {}, stream=True, timeout=timeout) as r:
            responded = True
            waiting.cancel()
            if watch.fired:  # what came before the cut is no answer
                raise watch.cut_off()
            watch.answered()
            start = _resume_offset(r, have, part)
            for chunk in _read_chunks(part) if start else ():
                decoder.feed(chunk)
            total = _announced_total(r, start, cap)
            with (
                open(part, "ab" if start else "wb") as f,
                _progress(total, url.rsplit("/", 1)[-1], quiet, start) as bar,
            ):
                received = _stream_body(r, f, decoder, start, cap, bar, watch)
            if total is not None and received != total:
                raise _Transient(f"connection closed after {received} of {total} bytes")
    except _CutOff:
        raise watch.cut_off() from None
    except (requests.ConnectionError, requests.Timeout, requests.exceptions.ChunkedEncodingError) as e:
        if watch.fired:
            raise watch.cut_off() from None
        if not responded:  # urllib3 has already retried these, where retrying made sense
            raise _Unreachable(_network_reason(e)) from None
        if _read_timed_out(e):  # the body stopped coming: a stall, whichever of the two limits saw it first
            raise _Slow(f"too slow: nothing for {timeout[1]:g} s") from None
        raise _Transient(_network_reason(e)) from None
    except requests.RequestException as e:
        raise ValueError(redact(str(e)) or type(e).__name__) from None
    finally:
        waiting.cancel()
    return decoder.result()


def _fetch_local(folder: Path, name: str, spec: FileSpec) -> bytes:
    for candidate in (folder / f"{name}.gz", folder / name):
        if candidate.is_file():
            if candidate.stat().st_size > max_body(spec):
                raise ValueError(f"{candidate} is larger than this file can be")
            decoder = Decoder(spec)
            for chunk in _read_chunks(candidate):
                decoder.feed(chunk)
            return decoder.result()
    raise ValueError(f"no {name}.gz or {name} in {folder}")


def _fetch_from(
    source: str,
    name: str,
    data_dir: Path,
    timeout,
    retries: int,
    backoff: float,
    quiet: bool,
    stall: float,
    log: Callable[[str], None] = lambda msg: None,
) -> bytes:
    """The verified bytes of `name` from one source. A body cut off midway is resumed up to
    `retries` times, waiting backoff·2^k seconds; ValueError says why the source failed."""
    spec = FILES[name]
    folder = _local_dir(source)
    if folder is not None:
        return _fetch_local(folder, name, spec)
    url = urllib.parse.urljoin(http_url(source).rstrip("/") + "/", f"{name}.gz")
    part = _part_path(data_dir, name, url)
    sockets = _Sockets()
    notice = (
        f"{redact(url)} is slow: nothing for {SLOW_NOTICE_SECONDS:g} s; "
        f"it is cut off once {stall:g} s pass without {_CHUNK // 1024} kB"
    )
    with _session(retries, backoff, sockets) as session:
        for attempt in range(retries + 1):
            resuming = part.is_file()
            try:
                with _Stall(sockets, stall, lambda: log(notice)) as watch:
                    return _fetch_http(session, url, part, spec, timeout, quiet, watch, log)
            except _Unreachable:
                raise
            except _Transient as e:
                reason = str(e)
                if attempt < retries:
                    time.sleep(backoff * 2**attempt)
                    continue
            except (ValueError, OSError) as e:
                reason = str(e) or type(e).__name__
                if part.is_file():
                    part.unlink()
                if resuming and attempt < retries:
                    continue  # the kept prefix may have been the problem: once more from scratch
            break
    raise ValueError(reason)


def fetch_file(
    name: str,
    data_dir: Path,
    srcs: Sequence[str],
    timeout: tuple[float, float] = (10.0, 60.0),
    retries: int = 2,
    backoff: float = 0.5,
    quiet: bool = False,
    stall: float = STALL_SECONDS,
    unreachable: set[str] | None = None,
    log: Callable[[str], None] = lambda msg: None,
) -> bytes:
    """Fetch, verify and atomically store `data_dir/name`; return its decompressed bytes.

    Sources are tried in turn; any failure at one (HTTP error, HTML page, bad gzip, checksum
    mismatch, too long a body, retries used up) moves on to the next, and `log` says so at once.
    The final file is only ever written with verified bytes; partial files are removed once the
    file is done. Processes that fetch the same file take turns, and a later one uses the file an
    earlier one stored. `unreachable` collects the sources that gave no answer at all (refused,
    timed out) or stopped sending (a stall), which are then skipped: ensure_files shares it
    across the four files, so one bad source costs one timeout or stall limit in all.
    """
    unreachable = set() if unreachable is None else unreachable
    spec = FILES[name]
    with exclusive(data_dir / f".{name}.lock"):
        done = read_verified(data_dir / name, spec)
        if done is not None:
            return done
        reasons = []
        for i, source in enumerate(srcs):
            if source in unreachable:
                reasons.append(f"  {shown(redact(source))}: skipped (silent or stalled for an earlier file)")
                continue
            try:
                data = _fetch_from(source, name, data_dir, timeout, retries, backoff, quiet, stall, log)
            except (ValueError, OSError) as e:
                if isinstance(e, _Unreachable):
                    unreachable.add(source)
                reason = redact(str(e))
                reasons.append(f"  {shown(redact(source))}: {reason}")
                later = [s for s in srcs[i + 1 :] if s not in unreachable]
                if later:
                    log(f"{shown(redact(source))}: {reason}; trying {shown(redact(later[0]))} for {name}")
                continue
            atomic_write_bytes(data_dir / name, data)
            for leftover in data_dir.glob(f".{name}.*.part"):
                leftover.unlink(missing_ok=True)
            return data
    raise DownloadError(
        f"could not get a verified {name} from any source:\n"
        + "\n".join(reasons)
        + f"\nPoint at a copy of the MNIST files with --mirror URL_OR_DIR or ${MIRROR_ENV}."
    )


def read_verified(path: Path, spec: FileSpec) -> bytes | None:
    """The file's bytes if it exists with the right size and SHA-256, else None."""
    try:
        if path.stat().st_size != spec.size:
            return None
        buf = path.read_bytes()
    except FileNotFoundError:
        return None
    return buf if hashlib.sha256(buf).hexdigest() == spec.sha256 else None


def ensure_files(
    data_dir: str | os.PathLike,
    mirrors: Sequence[str] = (),
    quiet: bool = False,
    log: Callable[[str], None] = lambda msg: None,
    **fetch_kwargs,
) -> dict[str, bytes]:
    """Verified bytes of the four MNIST files, fetching any that are missing or damaged."""
    data_dir = Path(data_dir)
    srcs = sources(mirrors)  # checked now, even when every file is there: a typo should not pass unseen
    data_dir.mkdir(parents=True, exist_ok=True)
    remove_stale_temps(data_dir)
    unreachable: set[str] = set()
    out = {}
    for name, spec in FILES.items():
        path = data_dir / name
        buf = read_verified(path, spec)
        if buf is None:
            if path.exists():
                log(f"{shown(path)} is damaged (size or checksum wrong); fetching it again")
            buf = fetch_file(name, data_dir, srcs, quiet=quiet, unreachable=unreachable, log=log, **fetch_kwargs)
        out[name] = buf
    return out
