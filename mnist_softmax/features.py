"""Feature front ends: images (n, 28, 28) uint8 -> feature maps (n, C, H, W) -> N-vectors (n, C*H*W).

A front end is a pair of pure functions: `fit` learns its parameters from training images (without
labels) and `maps` turns images into float32 feature maps. Their parameters are plain arrays, so
they go into the checkpoint and `eval`/`predict` rebuild exactly the same features.

The flatten is the same C-order reshape everywhere: (n, C, H, W) -> (n, C*H*W), feature index
c*H*W + h*W + w. Standardisation is applied after it, with constants fitted on the training split.
"""

from __future__ import annotations

import contextlib
import hashlib
from collections.abc import Callable
from pathlib import Path
from typing import NamedTuple

import numpy as np

from . import cnn, kmeans_conv

Params = dict[str, np.ndarray]


class FrontEnd(NamedTuple):
    name: str
    map_shape: tuple[int, int, int]  # (C, H, W) of one image's feature map
    fit: Callable[..., Params]  # (train images, rng, cfg) -> params; never sees labels (trained: initial weights)
    maps: Callable[..., np.ndarray]  # (images (n,28,28), params, progress=False) -> (n, C, H, W) float32
    cache: bool  # worth caching the features of the 70,000 MNIST images on disk
    version: int  # of the extraction: bumped when `maps` changes, so cached features are recomputed
    param_shapes: Callable[[dict], dict[str, tuple[int, ...]]]  # config dict -> {param name: shape}
    trained: bool = False  # its parameters are trained with W by backpropagation (not fitted without labels)

    @property
    def n_features(self) -> int:
        C, H, W = self.map_shape
        return C * H * W


def _pixels_fit(images: np.ndarray, rng: np.random.Generator, cfg) -> Params:
    return {}


def _pixels_maps(images: np.ndarray, params: Params, progress: bool = False) -> np.ndarray:
    """uint8 (n, 28, 28) -> float32 (n, 1, 28, 28) scaled to [0, 1]."""
    # One pass into one new array (uint8 -> float32 is exact, so this equals astype, then multiply).
    return np.multiply(images, np.float32(1 / 255), dtype=np.float32)[:, None]


PIXELS = FrontEnd("pixels", (1, 28, 28), _pixels_fit, _pixels_maps, cache=False, version=1, param_shapes=lambda c: {})
CONV = FrontEnd(
    "conv",
    (kmeans_conv.N_FILTERS, 7, 7),
    kmeans_conv.fit,
    kmeans_conv.maps,
    cache=True,
    version=kmeans_conv.VERSION,
    param_shapes=kmeans_conv.param_shapes,
)


def _cnn_fit(images: np.ndarray, rng: np.random.Generator, cfg) -> Params:
    """The network's starting weights (cnn.init_params), W and b of the softmax layer included:
    training, not fitting, makes them."""
    return cnn.init_params(rng, batch_norm=bool(getattr(cfg, "batch_norm", False)))


CNN = FrontEnd(
    "cnn",
    (cnn.N_MAPS[1], 7, 7),
    _cnn_fit,
    cnn.maps,
    cache=False,
    version=1,
    param_shapes=cnn.param_shapes,
    trained=True,
)
FRONT_ENDS = {fe.name: fe for fe in (PIXELS, CONV, CNN)}


def flatten(maps: np.ndarray) -> np.ndarray:
    """(n, C, H, W) -> (n, C*H*W), C order, n ≥ 0. A view when `maps` is contiguous."""
    return maps.reshape(len(maps), int(np.prod(maps.shape[1:])))


def unflatten(X: np.ndarray, map_shape: tuple[int, int, int]) -> np.ndarray:
    """(n, C*H*W) -> (n, C, H, W): the exact inverse of flatten."""
    return X.reshape(len(X), *map_shape)


def fit_standardizer(F: np.ndarray, mode: str, floor: float) -> tuple[np.ndarray, np.ndarray]:
    """Mean and scale (both float32 (N,)) from training features F (n, N).

    mode "feature": per-feature mean and std + floor; "global": one mean and std + floor for all;
    "none": mean 0, scale 1. F must have a row at least (ValueError): the mean of none is not defined.
    """
    if F.ndim != 2 or len(F) == 0:
        raise ValueError(f"F must be training features (n, N) with n ≥ 1 to fit a standardiser, got shape {F.shape}")
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


def standardize_(X: np.ndarray, mean: np.ndarray, scale: np.ndarray) -> np.ndarray:
    """(X - mean) / scale in place, for a fresh array the caller owns; returns X."""
    X -= mean
    X /= scale
    return X


def features(images: np.ndarray, fe: FrontEnd, params: Params, mean: np.ndarray, scale: np.ndarray) -> np.ndarray:
    """The model's input: images uint8 (n, 28, 28) -> standardised float32 (n, N).

    Anything else is refused (ValueError): float images in [0, 1], say, would be read as nearly
    black and classified without a word.
    """
    images = np.asarray(images)
    if images.dtype != np.uint8 or images.ndim != 3 or images.shape[1:] != (28, 28):
        raise ValueError(f"images must be uint8 of shape (n, 28, 28) in MNIST form, not {images.dtype} {images.shape}")
    return standardize(flatten(fe.maps(images, params)), mean, scale)


def mnist_rows(
    fe: FrontEnd,
    params: Params,
    mnist,
    cache_dir: Path | None = None,
    progress: bool = False,
    about: dict | None = None,
):
    """A function (part, idx) -> fresh float32 (len(idx), N) feature rows, not standardised, of
    part "train" or "test" of MNIST; the same rows, to the bit, whichever way they are asked for.

    Front ends worth caching compute (or load) all 70,000 maps once, via mnist_maps, and copy the
    rows asked for. Others (pixels) map only those rows: no 60,000-row array is ever held.
    """
    if cache_dir is not None:
        from .fileio import remove_stale_temps

        remove_stale_temps(cache_dir)  # up to 878 MB each, left by runs that were killed
    if fe.cache:
        F = dict(zip(("train", "test"), mnist_maps(fe, params, mnist, cache_dir, progress, about), strict=True))

        def rows(part: str, idx) -> np.ndarray:
            X = F[part][idx]
            return X.copy() if np.may_share_memory(X, F[part]) else X  # a slice is a view: copy it

        return rows
    return lambda part, idx: flatten(fe.maps(mnist.part(part)[0][idx], params))


def params_key(fe: FrontEnd, params: Params) -> str:
    """A short hash that changes whenever the front end or any of its parameters does."""
    h = hashlib.sha256(f"{fe.name}/{fe.map_shape}/{fe.version}".encode())
    for name in sorted(params):
        a = np.ascontiguousarray(params[name])
        h.update(f"{name}/{a.dtype.str}/{a.shape}".encode())
        h.update(a.tobytes())
    return h.hexdigest()[:16]


def cache_name(fe: FrontEnd, params: Params) -> str:
    """The cache file of these features: front end, extraction version, parameter hash."""
    return f"{fe.name}-v{fe.version}-{params_key(fe, params)}.npy"


def made_by(config: dict, front_end: str) -> dict:
    """The settings a front end's parameters came from, to say in the cache what made a file."""
    keys = ("seed", "val_size")
    return {k: v for k, v in config.items() if k in keys or k.startswith(f"{front_end}_")}


def mnist_maps(
    fe: FrontEnd,
    params: Params,
    mnist,
    cache_dir: Path | None = None,
    progress: bool = False,
    about: dict | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Flattened feature maps of MNIST: (train (60000, N), test (10000, N)) float32, not standardised.

    For front ends worth it, they are kept in cache_dir (cache.py), verified and memory-mapped when
    found, so a second run does not recompute them. The cache is best-effort: a folder that cannot
    be written (read-only, full) costs the next run the recomputation, never this one its result.
    Train and test images are extracted separately, exactly as `eval` extracts the test set.
    """
    from . import cache

    path = cache_dir / cache_name(fe, params) if cache_dir and fe.cache else None
    shapes = {"train": (len(mnist.train_images), fe.n_features), "test": (len(mnist.test_images), fe.n_features)}
    if path is not None and path.is_file():
        found = cache.load(path, shapes)
        if found is not None:
            return found["train"], found["test"]
    F_train = flatten(fe.maps(mnist.train_images, params, progress))
    F_test = flatten(fe.maps(mnist.test_images, params, progress))
    if path is not None:
        about = {"front_end": fe.name, "version": fe.version, **(about or {})}
        with contextlib.suppress(OSError):
            cache.store(path, {"train": F_train, "test": F_test}, about)
            cache.remove_outdated(cache_dir, fe.name, fe.version)
    return F_train, F_test
