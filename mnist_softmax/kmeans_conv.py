"""The `conv` front end: 64 filters learned without labels (spherical k-means on whitened patches),
giving 64×7×7 feature maps.

Fitting (on training images only, no labels), after Coates & Ng (2011):
    sample k×k patches that contain ink -> normalise each patch's brightness and contrast
    -> ZCA-whiten -> spherical k-means with 64 centroids. The filters are the centroids
    composed with the whitening, so extraction is a single (k·k × 64) matrix product.
Extraction, per image (28×28 in [0, 1]):
    every k×k patch ("same" padding, stride 1) -> the same normalisation -> responses r (64 per
    position) -> rectify max(0, r - threshold) -> average-pool 4×4 -> tent smoothing, so the
    pooling windows overlap -> (64, 7, 7).

Vectorised by im2col (a strided view; only the patches that touch ink are copied, one chunk at a
time) and one matrix product per chunk, so memory stays bounded whatever the number of images.
"""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

VERSION = 4  # bump when extraction changes, so cached features are recomputed
N_FILTERS = 64
POOL = 4  # 28 / 4 = 7
PATCH_VAR_EPS = 10 / 255**2  # brightness/contrast normalisation: (p - mean) / sqrt(var + eps)
CHUNK = 64  # images per matrix product: 50k patches, 13 MB of responses, so each pass stays in cache
# [1, 2, 1] / 4 along one axis of the 7×7 grid, zero beyond the edge, as a matrix (see _tent).
TENT = (np.eye(7) / 2 + np.eye(7, k=1) / 4 + np.eye(7, k=-1) / 4).astype(np.float32)


def _patch_view(images: np.ndarray, k: int) -> np.ndarray:
    """(n, 28, 28) -> a read-only view (n, 28, 28, k, k): the k×k patch around every pixel, zero padded."""
    p = k // 2
    return sliding_window_view(np.pad(images, ((0, 0), (p, p), (p, p))), (k, k), axis=(1, 2))


def normalise_patches(P: np.ndarray) -> np.ndarray:
    """Per-row brightness and contrast normalisation. (m, d) -> (m, d) float32."""
    mean = P.mean(axis=1, keepdims=True)
    centred = P - mean
    return centred / np.sqrt((centred * centred).mean(axis=1, keepdims=True) + PATCH_VAR_EPS)


def zca(P: np.ndarray, eps: float) -> tuple[np.ndarray, np.ndarray]:
    """(mean (d,), whitening matrix (d, d)) such that (P - mean) @ Z is white. P (m, d)."""
    mean = P.mean(axis=0)
    cov = np.cov(P - mean, rowvar=False)
    vals, vecs = np.linalg.eigh(cov)
    return mean, (vecs / np.sqrt(vals + eps)) @ vecs.T


def spherical_kmeans(X: np.ndarray, k: int, iters: int, rng: np.random.Generator) -> np.ndarray:
    """k unit-norm centroids (k, d) of the rows of X (m, d), by gain-shape (spherical) k-means.

    Each row is assigned to the centroid with the largest |dot product| and contributes
    dot·x to it; empty centroids are re-seeded from random rows.
    """
    D = rng.standard_normal((k, X.shape[1]))
    D /= np.linalg.norm(D, axis=1, keepdims=True)
    rows = np.arange(len(X))
    for _ in range(iters):
        S = X @ D.T
        best = np.abs(S).argmax(axis=1)
        coeff = S[rows, best]
        new = np.zeros_like(D)
        np.add.at(new, best, coeff[:, None] * X)
        norms = np.linalg.norm(new, axis=1)
        empty = norms < 1e-8
        new[empty] = X[rng.integers(0, len(X), int(empty.sum()))]
        D = new / np.linalg.norm(new, axis=1, keepdims=True)
    return D


def param_shapes(config: dict) -> dict[str, tuple[int, ...]]:
    """The shape of each parameter `fit` returns for a config (a dict of Config's fields)."""
    k = int(config["conv_kernel"])
    return {"filters": (k * k, N_FILTERS), "offset": (N_FILTERS,), "threshold": ()}


def fit(images: np.ndarray, rng: np.random.Generator, cfg) -> dict[str, np.ndarray]:
    """Learn the filters from training images uint8 (n, 28, 28), without labels.

    Returns {"filters": (k·k, 64) float32, "offset": (64,) float32, "threshold": () float32}:
    responses are normalised_patch @ filters - offset.
    """
    k = cfg.conv_kernel
    # Oversample, then keep patches with some ink: MNIST is mostly empty background.
    n_draw = 3 * cfg.conv_patches
    idx = rng.integers(0, len(images), n_draw)
    r, c = rng.integers(0, 28, n_draw), rng.integers(0, 28, n_draw)
    P = _patch_view(images, k)[idx, r, c].reshape(n_draw, k * k).astype(np.float32) / 255
    P = P[P.var(axis=1) > 0.01][: cfg.conv_patches]
    P = normalise_patches(P).astype(np.float64)
    mean, Z = zca(P, cfg.conv_whiten_eps)
    D = spherical_kmeans((P - mean) @ Z, N_FILTERS, cfg.conv_kmeans_iters, rng)
    filters = Z @ D.T  # (k·k, 64): whitening then projection on each centroid
    return {
        "filters": filters.astype(np.float32),
        "offset": (mean @ filters).astype(np.float32),
        "threshold": np.array(cfg.conv_threshold, np.float32),
    }


def _patch_stats(x: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Mean and std-with-eps of the k×k patch around every pixel of float32 images (m, 28, 28)
    ("same" zero padding) -> (m, 28, 28) each.

    Box sums by k shifted adds along rows, then along columns: sums of non-negative pixels, so a
    patch without ink has mean exactly 0 and one faint pixel is enough to make it positive. In
    float64: the variance E[p²] − μ² of an evenly inked patch is a small difference of two numbers
    near 1, which float32 would round to a few units in its 7th digit, and σ of such a patch is
    small, so that error would reach the responses (p − μ)/σ. The std is returned in float32.
    """
    p = k // 2
    padded = np.pad(x.astype(np.float64), ((0, 0), (p, p), (p, p)))

    def box_mean(a: np.ndarray) -> np.ndarray:
        rows = a[:, :28].copy()
        for t in range(1, k):
            rows += a[:, t : t + 28]
        out = rows[:, :, :28].copy()
        for t in range(1, k):
            out += rows[:, :, t : t + 28]
        out /= k * k
        return out

    mean = box_mean(padded)
    var = np.maximum(box_mean(padded * padded) - mean * mean, 0)
    return mean.astype(np.float32), np.sqrt(var + PATCH_VAR_EPS).astype(np.float32)


def _chunk_maps(x: np.ndarray, F_aug: np.ndarray, k: int, cols: np.ndarray, R: np.ndarray) -> np.ndarray:
    """float32 images (m, 28, 28) -> pooled maps (m, 64, 7, 7).

    cols (≥ m·784, k·k + 2) and R (≥ m·784, 64) are scratch. Pixels are taken in cell-major order
    (image, cell row, cell column, then the 4×4 pixels of the cell), so that each pooling cell's
    16 responses are consecutive rows of R. Only patches that touch ink (under half of MNIST's)
    go through the matrix product: an inkless patch normalises to zero, so its row
    [0, …, 0, 1] gives exactly the last row of F_aug, rectified, for every filter.
    """
    m, d = len(x), k * k
    mean, std = _patch_stats(x, k)
    live = np.flatnonzero(mean.reshape(m, 7, POOL, 7, POOL).transpose(0, 1, 3, 2, 4) > 0)
    n = len(live)
    cell, within = np.divmod(live, POOL * POOL)  # cell = image·49 + cell row·7 + cell column
    img, rc = np.divmod(cell, 49)
    r = rc // 7 * POOL + within // POOL
    c = rc % 7 * POOL + within % POOL
    inv = 1 / std[img, r, c]
    buf = cols[:n]
    np.multiply(_patch_view(x, k)[img, r, c].reshape(n, d), inv[:, None], out=buf[:, :d])
    buf[:, d] = 1.0
    responses = buf @ F_aug  # (n, 64), already divided by each patch's σ
    np.maximum(responses, 0, out=responses)
    Rm = R[: m * 784]
    Rm[...] = np.maximum(F_aug[d], 0)
    Rm[live] = responses
    pooled = Rm.reshape(m * 49, POOL * POOL, N_FILTERS).sum(axis=1) * np.float32(1 / POOL**2)
    return _tent(pooled.reshape(m, 7, 7, N_FILTERS))


def _tent(pooled: np.ndarray) -> np.ndarray:
    """4×4-average-pooled maps (m, 7, 7, 64) -> (m, 64, 7, 7) smoothed by [1, 2, 1] / 4 along rows
    and columns (zero beyond the edge).

    So the pooling windows overlap: each cell is a tent-weighted average over 12×12 pixels at
    stride 4, and a stroke moving across a cell border changes the features smoothly. Two small
    matrix products (TENT along rows, then along columns): 5× faster than adding shifted copies.
    """
    m = len(pooled)
    rows = np.matmul(TENT, pooled.reshape(m, 7, 7 * N_FILTERS))
    both = np.matmul(TENT, rows.reshape(m * 7, 7, N_FILTERS))
    return both.reshape(m, 7, 7, N_FILTERS).transpose(0, 3, 1, 2)


def zero_mean(filters: np.ndarray) -> np.ndarray:
    """Filters (k·k, 64) minus each one's mean over its k·k taps: the part that sees a patch's
    variation, all a normalised patch (p − μ)/σ can excite."""
    f = filters.astype(np.float64)
    return (f - f.mean(axis=0)).astype(np.float32)


def maps(images: np.ndarray, params: dict[str, np.ndarray], progress: bool = False) -> np.ndarray:
    """uint8 (n, 28, 28) -> float32 feature maps (n, 64, 7, 7), CHUNK images at a time on two threads.

    The patch normalisation is folded into the matrix product. With patch p of k·k pixels, mean μ,
    std σ > 0, and each filter F made zero-mean (F̃ = F − ΣF/k², zero_mean): (p − μ)·F = p·F̃,
    since Σp = k²μ, so relu(((p - μ)/σ)·F - offset - t) = relu([p/σ, 1] · [F̃; -(offset + t)]):
    each im2col row is scaled by 1/σ as it is copied and gets one more column. (p·F − μ·ΣF, the
    same in exact arithmetic, cancels two large numbers in float32 wherever a patch is evenly inked.)
    """
    from threadpoolctl import threadpool_limits

    filters = params["filters"]
    k = int(round(np.sqrt(filters.shape[0])))
    F_aug = np.vstack([zero_mean(filters), -(params["offset"] + params["threshold"])]).astype(np.float32)
    out = np.empty((len(images), N_FILTERS, 28 // POOL, 28 // POOL), np.float32)
    scratch = threading.local()  # scratch buffers per worker thread, reused for every chunk

    def work(s: int) -> int:
        if not hasattr(scratch, "cols"):
            scratch.cols = np.empty((CHUNK * 784, k * k + 1), np.float32)
            scratch.R = np.empty((CHUNK * 784, N_FILTERS), np.float32)
        x = np.multiply(images[s : s + CHUNK], np.float32(1 / 255), dtype=np.float32)
        out[s : s + len(x)] = _chunk_maps(x, F_aug, k, scratch.cols, scratch.R)
        return len(x)

    bar = None
    if progress:
        from tqdm import tqdm  # only here: predict's fast path never imports it

        bar = tqdm(total=len(images), desc="conv features", unit="img", leave=False)
    # NumPy releases the GIL in these array operations, so two threads use both cores; BLAS is held
    # to one thread meanwhile, as two threads each running a two-thread BLAS oversubscribe the cores.
    pool = ThreadPoolExecutor(2)
    try:
        with threadpool_limits(1, user_api="blas"):
            for m in pool.map(work, range(0, len(images), CHUNK)):
                if bar is not None:
                    bar.update(m)
    finally:  # on Ctrl-C, drop the chunks not started instead of finishing all 70,000 images first
        pool.shutdown(wait=True, cancel_futures=True)
    if bar is not None:
        bar.close()
    return out
