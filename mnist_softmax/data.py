"""MNIST as plain arrays: the four files made sure of (download.py), then parsed (idx.py); and
which of its rows a run trains, validates and tests on (the split, drawn from the seed's "split"
stream, streams.py).

Nothing here trains, plots or prints.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import NamedTuple

import numpy as np

from .download import FILES, ensure_files
from .idx import parse_mnist_file
from .streams import rng_streams

SPLITS = ("train", "val", "test")


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


def load_mnist(
    data_dir: str | os.PathLike = "data",
    mirrors: Sequence[str] = (),
    quiet: bool = False,
    log: Callable[[str], None] = lambda msg: None,
    **fetch_kwargs,
) -> Mnist:
    """The four MNIST arrays, downloaded and verified first where needed.

    Loading re-checks each file's SHA-256 (about 30 ms for all four) and fetches again a file that
    was damaged after download.
    """
    bufs = ensure_files(data_dir, mirrors, quiet, log, **fetch_kwargs)
    arrays = {name: parse_mnist_file(buf, name) for name, buf in bufs.items()}
    return Mnist(*(arrays[name] for name in FILES))


def split_indices(n: int, val_size: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """A seeded split of range(n): (train indices (n - val_size,), val indices (val_size,)), sorted.

    0 <= val_size < n: the training split keeps at least one row (ValueError otherwise).
    """
    if not 0 <= val_size < n:
        raise ValueError(
            f"val_size must be in [0, {n}) for {n} rows (the training split keeps one at least), not {val_size}"
        )
    perm = rng.permutation(n)
    return np.sort(perm[val_size:]), np.sort(perm[:val_size])


def split_rows(
    split: str, n_train: int, seed: int, val_size: int, format_version: int = 2
) -> tuple[str, np.ndarray | slice]:
    """(part of MNIST, row index) of "train", "val" or "test", as training split them for this seed
    and size. Checkpoints of format version 1 drew the split first from default_rng(seed)."""
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}; expected one of {', '.join(SPLITS)}")
    if split == "test":
        return "test", slice(None)
    rng = np.random.default_rng(seed) if format_version == 1 else rng_streams(seed)["split"]
    train_idx, val_idx = split_indices(n_train, val_size, rng)
    return "train", train_idx if split == "train" else val_idx


def load_local(data_dir: str | os.PathLike = "data", parts: Sequence[str] = ("train", "test")) -> dict:
    """{part: (images uint8 (n, 28, 28), labels (n,))} of the MNIST parts asked for, from data_dir,
    verified and never downloaded: a DataError says how to get them when they are not there."""
    from .download import read_verified
    from .errors import DataError
    from .text import shown

    data_dir = Path(data_dir)
    names = {"train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
             "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")}  # fmt: skip
    out = {}
    for part in parts:
        found = [read_verified(data_dir / name, FILES[name]) for name in names[part]]
        if any(buf is None for buf in found):
            get = "mnist-softmax download" + ("" if data_dir == Path("data") else f" --data-dir {shown(data_dir)}")
            what = "test set" if part == "test" else "training set"
            raise DataError(f"the MNIST {what} is not in {shown(data_dir)}: `{get}` gets it")
        out[part] = tuple(parse_mnist_file(buf, name) for buf, name in zip(found, names[part], strict=True))
    return out


def load_test_set(data_dir: str | os.PathLike = "data") -> tuple[np.ndarray, np.ndarray]:
    """(test images (10000, 28, 28) uint8, labels (10000,)) from data_dir, verified and never
    downloaded: a DataError says how to get them when they are not there."""
    return load_local(data_dir, ("test",))["test"]
