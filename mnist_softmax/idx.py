"""The IDX file format (LeCun's MNIST files), parsed into NumPy arrays without copying. Pure.

Layout: 2 zero bytes, a dtype code, the number of dimensions d, then d big-endian uint32 sizes,
then the data in C order.
"""

from __future__ import annotations

import numpy as np

from .errors import DataError

_IDX_DTYPES = {
    0x08: np.dtype("u1"),
    0x09: np.dtype("i1"),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}


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
