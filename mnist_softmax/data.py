"""MNIST on disk: fetch the four IDX files from mirrors, verify them, parse them into plain arrays.

Files are stored decompressed in the data folder (`data/train-images-idx3-ubyte`, ...), each written
only after the SHA-256 of its decompressed bytes matched the official value, so that any faithful
mirror works, gzipped or not. Loading re-checks the hash (about 30 ms for all four files) and
fetches again a file that was damaged after download.

Nothing here trains, plots or prints; progress bars and the `log` callback aside.
"""

from __future__ import annotations

import hashlib
import os
import sys
import time
import urllib.parse
import zlib
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import NamedTuple

import numpy as np

from . import __version__
from .errors import DataError, DownloadError
from .fileio import atomic_write_bytes

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

_IDX_DTYPES = {
    0x08: np.dtype("u1"),
    0x09: np.dtype("i1"),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}
_GZIP_MAGIC = b"\x1f\x8b"
_CHUNK = 1 << 16


class Mnist(NamedTuple):
    """The dataset as plain arrays: images uint8 (n, 28, 28), labels uint8 (n,)."""

    train_images: np.ndarray
    train_labels: np.ndarray
    test_images: np.ndarray
    test_labels: np.ndarray

    def part(self, name: str) -> tuple[np.ndarray, np.ndarray]:
        """(images, labels) of "train" (the 60,000) or "test" (the 10,000)."""
        if name == "train":
            return self.train_images, self.train_labels
        if name == "test":
            return self.test_images, self.test_labels
        raise ValueError(f"MNIST has parts 'train' and 'test', not {name!r}")


# ---------------------------------------------------------------------------------------------
# IDX parsing


def parse_idx(buf: bytes, name: str = "<bytes>") -> np.ndarray:
    """Parse an IDX file's bytes into an array (a read-only view of `buf`, no copy).

    Layout: 2 zero bytes, a dtype code, the number of dimensions d, then d big-endian uint32
    sizes, then the data in C order. Every mismatch raises DataError naming `name`; the array is
    a view, so a lying header can never cause a large allocation.
    """
    if len(buf) < 4:
        raise DataError(f"{name}: not an IDX file (only {len(buf)} bytes)")
    if buf[0] != 0 or buf[1] != 0:
        raise DataError(f"{name}: not an IDX file (bad magic number {buf[:4].hex()})")
    code, ndim = buf[2], buf[3]
    if code not in _IDX_DTYPES:
        raise DataError(f"{name}: unknown IDX data type code 0x{code:02x}")
    if ndim == 0:
        raise DataError(f"{name}: IDX header declares zero dimensions")
    header = 4 + 4 * ndim
    if len(buf) < header:
        raise DataError(f"{name}: truncated IDX header ({len(buf)} bytes, need {header})")
    shape = tuple(int(d) for d in np.frombuffer(buf, ">u4", ndim, offset=4))
    dtype = _IDX_DTYPES[code]
    expected = int(np.prod(shape, dtype=object)) * dtype.itemsize
    if len(buf) - header != expected:
        raise DataError(
            f"{name}: IDX header says {'x'.join(map(str, shape))} {dtype.name} "
            f"({expected} data bytes) but the file has {len(buf) - header}"
        )
    return np.frombuffer(buf, dtype, offset=header).reshape(shape)


def parse_mnist_file(buf: bytes, name: str) -> np.ndarray:
    """parse_idx plus the checks that make it an MNIST file: uint8, images (n,28,28) or labels (n,)."""
    arr = parse_idx(buf, name)
    images = "images" in name
    if arr.dtype != np.uint8:
        raise DataError(f"{name}: expected unsigned bytes, found {arr.dtype}")
    if images and (arr.ndim != 3 or arr.shape[1:] != (28, 28)):
        raise DataError(f"{name}: expected images of shape (n, 28, 28), found {arr.shape}")
    if not images and arr.ndim != 1:
        raise DataError(f"{name}: expected labels of shape (n,), found {arr.shape}")
    if not images and arr.size and arr.max() > 9:
        raise DataError(f"{name}: label {int(arr.max())} is outside 0..9")
    return arr


# ---------------------------------------------------------------------------------------------
# Sources


def sources(mirrors: Sequence[str] = (), env: dict | None = None) -> list[str]:
    """Sources in the order tried: --mirror flags, then $MNIST_SOFTMAX_MIRROR, then the defaults.

    The environment variable may hold several sources separated by whitespace or commas.
    """
    env = os.environ if env is None else env
    from_env = env.get(MIRROR_ENV, "").replace(",", " ").split()
    seen: list[str] = []
    for s in [*mirrors, *from_env, *DEFAULT_SOURCES]:
        if s not in seen:
            seen.append(s)
    return seen


def _local_dir(source: str) -> Path | None:
    """The folder a source names, if it is a local path or a file:// URL; None for http(s)."""
    parsed = urllib.parse.urlparse(source)
    if parsed.scheme == "file":
        from urllib.request import url2pathname  # only here: slow to import, eval/predict never need it

        return Path(url2pathname(parsed.path))
    if parsed.scheme in ("http", "https"):
        return None
    return Path(source).expanduser()


def _gunzip_limited(data: bytes, limit: int) -> bytes:
    """Decompress gzip data, refusing output larger than `limit` bytes (a gzip bomb)."""
    d = zlib.decompressobj(wbits=31)
    try:
        out = d.decompress(data, limit + 1)
    except zlib.error as e:
        raise ValueError(f"corrupt gzip data ({e})") from None
    if len(out) > limit:
        raise ValueError(f"decompresses to more than the expected {limit} bytes")
    if not d.eof:
        raise ValueError("gzip stream is truncated")
    return out


def decode_body(body: bytes, spec: FileSpec) -> bytes:
    """The verified decompressed bytes of a fetched body (gzip or raw IDX); ValueError says why not."""
    if body[:2] == _GZIP_MAGIC:
        body = _gunzip_limited(body, spec.size)
    elif body[:2] != b"\x00\x00":
        kind = "an HTML page" if body.lstrip()[:1] == b"<" else "neither gzip nor IDX data"
        raise ValueError(f"got {kind}")
    digest = hashlib.sha256(body).hexdigest()
    if digest != spec.sha256:
        raise ValueError(f"checksum mismatch (sha256 {digest[:12]}…, expected {spec.sha256[:12]}…)")
    return body


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
    """A fault worth retrying at the same source (the partial file is kept, to resume from)."""


def _part_path(data_dir: Path, name: str, url: str) -> Path:
    """The partial download of `name` from `url`: one per URL, so a resume never mixes sources."""
    return data_dir / f".{name}.{hashlib.sha256(url.encode()).hexdigest()[:12]}.part"


def _fetch_http(url: str, part: Path, timeout: tuple[float, float], quiet: bool) -> bytes:
    """Stream `url` into `part`, resuming from its current length where the server allows (HTTP
    Range, answered 206) and starting over where it does not (answered 200). Returns the body.

    Raises _Transient for faults worth retrying (the partial file stays), ValueError otherwise.
    """
    import requests

    headers = {"User-Agent": f"mnist-softmax/{__version__} (+https://pypi.org/project/requests)"}
    have = part.stat().st_size if part.exists() else 0
    if have:
        headers["Range"] = f"bytes={have}-"
    try:
        with requests.get(url, headers=headers, stream=True, timeout=timeout) as r:
            if r.status_code == 416 and have:  # our partial file is not a prefix the server knows
                part.unlink()
                raise _Transient("partial file not resumable; starting over")
            resumed = have and r.status_code == 206 and r.headers.get("Content-Range", "").startswith(f"bytes {have}-")
            if r.status_code != 200 and not resumed:
                if r.status_code in (408, 429) or r.status_code >= 500:
                    raise _Transient(f"HTTP {r.status_code}")
                raise ValueError(f"HTTP {r.status_code}")
            if r.headers.get("Content-Type", "").startswith("text/html"):
                raise ValueError("got an HTML page")
            start = have if resumed else 0
            length = r.headers.get("Content-Length")
            # With a Content-Encoding, requests hands over decoded bytes and the length cannot be checked.
            encoded = r.headers.get("Content-Encoding", "identity") != "identity"
            total = start + int(length) if length and length.isdigit() and not encoded else None
            received = start
            with (
                open(part, "ab" if resumed else "wb") as f,
                _progress(total, url.rsplit("/", 1)[-1], quiet, start) as bar,
            ):
                for chunk in r.iter_content(_CHUNK):
                    f.write(chunk)
                    received += len(chunk)
                    bar.update(len(chunk))
            if total is not None and received != total:
                raise _Transient(f"connection closed after {received} of {total} bytes")
    except (requests.ConnectionError, requests.Timeout, requests.exceptions.ChunkedEncodingError) as e:
        raise _Transient(f"network error: {type(e).__name__}") from None
    except requests.RequestException as e:
        raise ValueError(str(e) or type(e).__name__) from None
    return part.read_bytes()


def _fetch_local(folder: Path, name: str) -> bytes:
    for candidate in (folder / f"{name}.gz", folder / name):
        if candidate.is_file():
            return candidate.read_bytes()
    raise ValueError(f"no {name}.gz or {name} in {folder}")


def fetch_file(
    name: str,
    data_dir: Path,
    srcs: Sequence[str],
    timeout: tuple[float, float] = (10.0, 60.0),
    retries: int = 2,
    backoff: float = 0.5,
    quiet: bool = False,
) -> bytes:
    """Fetch, verify and atomically store `data_dir/name`; return its decompressed bytes.

    Sources are tried in turn. At one source, a transient fault (connection reset or refused, a
    body shorter than announced, a read timeout, HTTP 408/429/5xx) is retried up to `retries`
    times, waiting backoff·2^k seconds and resuming the partial download; any other failure
    (HTTP error, HTML page, bad gzip, checksum mismatch) moves on to the next source. The final
    file is only ever written with verified bytes; partial files are removed once a file is done.
    """
    spec = FILES[name]
    reasons = []
    for source in srcs:
        folder = _local_dir(source)
        url = None if folder else urllib.parse.urljoin(source.rstrip("/") + "/", f"{name}.gz")
        part = _part_path(data_dir, name, url) if url else None
        for attempt in range(retries + 1):
            resuming = part is not None and part.exists()
            try:
                body = _fetch_local(folder, name) if folder else _fetch_http(url, part, timeout, quiet)
                data = decode_body(body, spec)
            except _Transient as e:
                reason = str(e)
                if attempt < retries:
                    time.sleep(backoff * 2**attempt)
                    continue
            except (ValueError, OSError) as e:
                reason = str(e) or type(e).__name__
                if part is not None:
                    part.unlink(missing_ok=True)
                if resuming and attempt < retries:
                    continue  # the kept prefix may have been the problem: once more from scratch
            else:
                atomic_write_bytes(data_dir / name, data)
                for leftover in data_dir.glob(f".{name}.*.part"):
                    leftover.unlink(missing_ok=True)
                return data
            break
        reasons.append(f"  {source}: {reason}")
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
    data_dir.mkdir(parents=True, exist_ok=True)
    srcs = None
    out = {}
    for name, spec in FILES.items():
        path = data_dir / name
        buf = read_verified(path, spec)
        if buf is None:
            if path.exists():
                log(f"{path} is damaged (size or checksum wrong); fetching it again")
            srcs = srcs or sources(mirrors)
            buf = fetch_file(name, data_dir, srcs, quiet=quiet, **fetch_kwargs)
        out[name] = buf
    return out


def load_mnist(
    data_dir: str | os.PathLike = "data",
    mirrors: Sequence[str] = (),
    quiet: bool = False,
    log: Callable[[str], None] = lambda msg: None,
    **fetch_kwargs,
) -> Mnist:
    """The four MNIST arrays, downloaded and verified first where needed."""
    bufs = ensure_files(data_dir, mirrors, quiet, log, **fetch_kwargs)
    arrays = {name: parse_mnist_file(buf, name) for name, buf in bufs.items()}
    return Mnist(*(arrays[name] for name in FILES))
