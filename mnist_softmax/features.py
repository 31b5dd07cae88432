"""Feature front ends: images (n, 28, 28) uint8 -> feature maps (n, C, H, W) -> N-vectors (n, C*H*W).

A front end is a pair of pure functions: `fit` learns its parameters from training images (without
labels) and `maps` turns images into float32 feature maps. Their parameters are plain arrays, so
they go into the checkpoint and `eval`/`predict` rebuild exactly the same features.

The flatten is the same C-order reshape everywhere: (n, C, H, W) -> (n, C*H*W), feature index
c*H*W + h*W + w. Standardisation is applied after it, with constants fitted on the training split.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import numpy as np

Params = dict[str, np.ndarray]


class FrontEnd(NamedTuple):
    name: str
    map_shape: tuple[int, int, int]  # (C, H, W) of one image's feature map
    fit: Callable[[np.ndarray, np.random.Generator], Params]  # (train images, rng) -> params
    maps: Callable[[np.ndarray, Params], np.ndarray]  # (images (n,28,28), params) -> (n, C, H, W)

    @property
    def n_features(self) -> int:
        C, H, W = self.map_shape
        return C * H * W


def _pixels_fit(images: np.ndarray, rng: np.random.Generator) -> Params:
    return {}


def _pixels_maps(images: np.ndarray, params: Params) -> np.ndarray:
    """uint8 (n, 28, 28) -> float32 (n, 1, 28, 28) scaled to [0, 1]."""
    return (images.astype(np.float32) * np.float32(1 / 255))[:, None]


PIXELS = FrontEnd("pixels", (1, 28, 28), _pixels_fit, _pixels_maps)
FRONT_ENDS = {fe.name: fe for fe in (PIXELS,)}


def flatten(maps: np.ndarray) -> np.ndarray:
    """(n, C, H, W) -> (n, C*H*W), C order. A view when `maps` is contiguous."""
    return maps.reshape(len(maps), -1)


def unflatten(X: np.ndarray, map_shape: tuple[int, int, int]) -> np.ndarray:
    """(n, C*H*W) -> (n, C, H, W): the exact inverse of flatten."""
    return X.reshape(len(X), *map_shape)


def fit_standardizer(F: np.ndarray, mode: str, floor: float) -> tuple[np.ndarray, np.ndarray]:
    """Mean and scale (both float32 (N,)) from training features F (n, N).

    mode "feature": per-feature mean and std + floor; "global": one mean and std + floor for all;
    "none": mean 0, scale 1.
    """
    N = F.shape[1]
    if mode == "none":
        return np.zeros(N, np.float32), np.ones(N, np.float32)
    if mode == "global":
        mean = np.full(N, F.mean(dtype=np.float64), np.float32)
        return mean, np.full(N, F.std(dtype=np.float64) + floor, np.float32)
    if mode == "feature":
        mean = F.mean(axis=0, dtype=np.float64)
        # Var via E[x²] - E[x]² in float64 chunks avoids an n×N float64 temporary.
        sq = sum(np.einsum("ij,ij->j", c, c, dtype=np.float64) for c in np.array_split(F, max(1, len(F) // 8192)))
        std = np.sqrt(np.maximum(sq / len(F) - mean**2, 0.0))
        return mean.astype(np.float32), (std + floor).astype(np.float32)
    raise ValueError(f"unknown standardize mode {mode!r}")


def standardize(F: np.ndarray, mean: np.ndarray, scale: np.ndarray) -> np.ndarray:
    """(F - mean) / scale, F (n, N) float32 -> new (n, N) float32 array."""
    return (F - mean) / scale


def features(images: np.ndarray, fe: FrontEnd, params: Params, mean: np.ndarray, scale: np.ndarray) -> np.ndarray:
    """The model's input: images uint8 (n, 28, 28) -> standardised float32 (n, N)."""
    return standardize(flatten(fe.maps(images, params)), mean, scale)
