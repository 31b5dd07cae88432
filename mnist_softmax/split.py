"""The random streams a seed gives, and which MNIST rows a run trains, validates and tests on.

A seed becomes independent generators, one per purpose, spawned from np.random.SeedSequence(seed):
the train/validation split, the front end's fitting (or a trained front end's initial weights),
the batch order, the random shifts of training images. What one purpose draws
never shifts another's numbers, and `eval` rebuilds a run's split from its seed alone. A new
purpose is appended to STREAMS, which leaves the streams before it unchanged.
"""

from __future__ import annotations

import numpy as np

STREAMS = ("split", "front_end", "order", "shift")
SPLITS = ("train", "val", "test")


def rng_streams(seed: int) -> dict[str, np.random.Generator]:
    """{purpose: generator} for every purpose in STREAMS, independent of one another."""
    children = np.random.SeedSequence(seed).spawn(len(STREAMS))
    return {name: np.random.default_rng(child) for name, child in zip(STREAMS, children, strict=True)}


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
