"""MNIST as plain arrays: the four files made sure of (download.py), then parsed (idx.py).

Nothing here trains, plots or prints.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from typing import NamedTuple

import numpy as np

from .download import FILES, ensure_files
from .idx import parse_mnist_file


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
