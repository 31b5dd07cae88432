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

import hashlib
import os
import sys
import time
import urllib.parse
import zlib
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import NamedTuple

from . import watched_http as wh
from .errors import DownloadError
from .fileio import atomic_write_bytes, exclusive, remove_stale_temps
from .sources import MIRROR_ENV, http_url, local_dir, redact, sources
from .text import shown


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
wh.CHUNK = 1 << 16
TRANSIENT_STATUS = (408, 429, *range(500, 600))


def max_body(spec: FileSpec) -> int:
    """The most bytes a faithful body of this file can have: the raw file, or its gzip (which
    exceeds the raw size by at most ~0.03% plus a header, for incompressible data)."""
    return spec.size + spec.size // 1000 + 1024


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
        while chunk := f.read(wh.CHUNK):
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


def _part_path(data_dir: Path, name: str, url: str) -> Path:
    """The partial download of `name` from `url`: one per URL, so a resume never mixes sources."""
    return data_dir / f".{name}.{hashlib.sha256(url.encode()).hexdigest()[:12]}.part"


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


def _stream_body(response, f, decoder: Decoder, received: int, cap: int, bar, watch: wh.Stall) -> int:
    """Append the response's body to file f and feed it to decoder, chunk by chunk; returns the bytes
    of the file received in all. Refuses a body longer than the file can be (cap); a stall (watch
    fired) is wh.Slow."""
    import requests

    try:
        for chunk in response.iter_content(wh.CHUNK):
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
    watch: wh.Stall,
    log: Callable[[str], None] = lambda msg: None,
) -> bytes:
    """Stream `url` into `part`, resuming from its current length where the server allows (HTTP
    Range, answered 206) and starting over where it does not (answered 200). Returns the verified
    decompressed bytes. `watch` cuts off the session's sockets when the answer stalls.

    Raises _Transient for a body cut off midway (the partial file stays), wh.Unreachable for no answer,
    wh.Slow for a stall, ValueError otherwise. Says through `log` when the server keeps silent.
    """
    import threading

    import requests

    have = _partial_length(part)
    decoder, cap = Decoder(spec), max_body(spec)
    responded = False
    silent = (
        f"{redact(url)} has not answered for {wh.SLOW_NOTICE_SECONDS:g} s; "
        f"it is given up once {min(timeout[1], watch.seconds):g} s pass without an answer"
    )
    waiting = threading.Timer(wh.SLOW_NOTICE_SECONDS, lambda: log(silent))
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
    except wh.CutOff:
        raise watch.cut_off() from None
    except (requests.ConnectionError, requests.Timeout, requests.exceptions.ChunkedEncodingError) as e:
        if watch.fired:
            raise watch.cut_off() from None
        if not responded:  # urllib3 has already retried these, where retrying made sense
            raise wh.Unreachable(wh.network_reason(e)) from None
        if wh.read_timed_out(e):  # the body stopped coming: a stall, whichever of the two limits saw it first
            raise wh.Slow(f"too slow: nothing for {timeout[1]:g} s") from None
        raise _Transient(wh.network_reason(e)) from None
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
    folder = local_dir(source)
    if folder is not None:
        return _fetch_local(folder, name, spec)
    url = urllib.parse.urljoin(http_url(source).rstrip("/") + "/", f"{name}.gz")
    part = _part_path(data_dir, name, url)
    sockets = wh.Sockets()
    notice = (
        f"{redact(url)} is slow: nothing for {wh.SLOW_NOTICE_SECONDS:g} s; "
        f"it is cut off once {stall:g} s pass without {wh.CHUNK // 1024} kB"
    )
    with wh.session(retries, backoff, sockets) as session:
        for attempt in range(retries + 1):
            resuming = part.is_file()
            try:
                with wh.Stall(sockets, stall, lambda: log(notice)) as watch:
                    return _fetch_http(session, url, part, spec, timeout, quiet, watch, log)
            except wh.Unreachable:
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
    stall: float = wh.STALL_SECONDS,
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
                if isinstance(e, wh.Unreachable):
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
