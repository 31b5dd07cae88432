"""A small image toolkit on NumPy arrays: block sums and maxima, medians and robust spreads, Otsu's
threshold, connected components, erosion, box blur, stroke width, resizing. Pure functions, each a
few vectorised passes: on the small views the reading works on, call overhead is most of the cost.
"""

from __future__ import annotations

import numpy as np


def block_reduce(a: np.ndarray, k: int, op=np.add) -> np.ndarray:
    """Combine each k×k block of (H, W, ...) with `op` (np.add: sums, np.maximum: maxima).
    -> (H // k, W // k, ...); rows and columns past the last whole block are left out."""
    h, w = a.shape[0] // k, a.shape[1] // k
    # Rows first, each a whole row at a time; then the columns of the k-times smaller result.
    rows = a[0 : h * k : k, 0 : w * k].copy()
    for i in range(1, k):
        op(rows, a[i : h * k : k, 0 : w * k], out=rows)
    if op is np.add and a.ndim == 3 and a.shape[2] > 1 and k > 1:
        # Colour sums: k strided additions of a pixel's C values each would run C elements at a
        # time; a product with k stacked identities (k·C, C) adds each pixel's k neighbours at once.
        C = a.shape[2]
        ones = np.tile(np.eye(C, dtype=a.dtype), (k, 1))
        return (rows.reshape(h * w, k * C) @ ones).reshape(h, w, C)
    out = rows[:, 0::k].copy()
    for j in range(1, k):
        op(out, rows[:, j::k], out=out)
    return out


def median(values: np.ndarray, axis: int | None = None):
    """np.median of finite values (along axis 0 or 1, or of all), by one partial sort: the same
    numbers, at a fraction of np.median's cost on the small arrays this module takes medians of.
    Along axis 1 of a C-contiguous array is the fast way: each row's values are contiguous."""
    if axis is None:
        values, axis = values.ravel(), 0
    n = values.shape[axis]
    if n == 0:
        raise ValueError("the median of no values")
    k = n // 2
    if n % 2:
        return np.take(np.partition(values, k, axis=axis), k, axis=axis)
    part = np.partition(values, (k - 1, k), axis=axis)
    return (np.take(part, k - 1, axis=axis) + np.take(part, k, axis=axis)) / 2


def median_1d(v: np.ndarray, in_place: bool = False) -> float:
    """The median of a 1-D array of finite values, as np.median gives it for float64 (the middle
    two of an even count are averaged in float64 whatever the dtype), at a third of the cost;
    in_place: v may be reordered (a temporary of the caller's) instead of copied."""
    n = len(v)
    if n == 0:
        raise ValueError("the median of no values")
    k = n // 2
    part = v if in_place else v.copy()
    part.partition(k)
    return float(part[k]) if n % 2 else (float(part[:k].max()) + float(part[k])) / 2


def robust_sigma(values: np.ndarray) -> tuple[float, float]:
    """(median, σ̂) of values (n,), σ̂ = 1.4826·MAD: the standard deviation, were the values normal;
    unlike mean and std, a minority of outliers (ink) barely moves them."""
    med = median_1d(values)
    deviations = np.subtract(values, med)
    return med, 1.4826 * median_1d(np.abs(deviations, out=deviations), in_place=True)


def robust_upper(values: np.ndarray, k: float) -> float:
    """median + k·σ̂ (see robust_sigma)."""
    med, sigma = robust_sigma(values)
    return med + k * sigma


def otsu(values: np.ndarray, bins: int = 128) -> float:
    """The threshold that best separates values (n,) into two classes (Otsu: the largest
    between-class variance). Values above it form the upper class."""
    lo, hi = float(values.min()), float(values.max())
    hist, edges = histogram(values, bins, lo, hi)
    p = hist / max(len(values), 1)  # every value is counted
    centres = (edges[:-1] + edges[1:]) / 2
    share = p * centres
    w0 = p.cumsum()[:-1]
    m0 = share.cumsum()[:-1]
    total = float(share.sum())
    with np.errstate(divide="ignore", invalid="ignore"):
        between = (total * w0 - m0) ** 2 / (w0 * (1 - w0))
    return float(edges[1 + int(np.nanargmax(between))]) if np.isfinite(between).any() else hi


def histogram(values: np.ndarray, bins: int, lo: float, hi: float) -> tuple[np.ndarray, np.ndarray]:
    """np.histogram(values, bins, range=(lo, hi)) for values within [lo, hi], by one bincount:
    (counts (bins,), edges (bins + 1,)). The top value falls in the last bin, as there."""
    edges = np.arange(bins + 1.0)  # np.linspace(lo, hi, bins + 1), as it computes them
    edges *= (hi - lo) / bins
    edges += lo
    edges[-1] = hi
    if hi <= lo:
        return np.bincount(np.zeros(len(values), np.intp), minlength=bins), edges
    scaled = np.subtract(values, lo)
    scaled *= bins / (hi - lo)
    idx = scaled.astype(np.intp)
    return np.bincount(np.minimum(idx, bins - 1, out=idx), minlength=bins), edges


def erode(mask: np.ndarray) -> np.ndarray:
    """Pixels of mask (h, w) whose 8 neighbours are all in it too (outside counts as in): a 3×3
    square, as a row of 3 then a column of 3."""
    rows = mask.copy()
    rows[:, 1:] &= mask[:, :-1]
    rows[:, :-1] &= mask[:, 1:]
    out = rows.copy()
    out[1:] &= rows[:-1]
    out[:-1] &= rows[1:]
    return out


def label(mask: np.ndarray) -> tuple[np.ndarray, int]:
    """8-connected components of mask (h, w) bool -> (labels (h, w) int32, 0 outside; count),
    numbered in the order of each component's first pixel (row-major).

    Runs of set pixels in each row are joined to the runs they touch in the row above: the pairs
    are found for all rows at once (two sorted searches), then joined by repeated hooking of each
    run to the smallest run index it is connected to, with pointer jumping, until nothing changes.
    """
    labels, count, _ = label_runs(mask)
    return labels, count


def label_runs(mask: np.ndarray) -> tuple[np.ndarray, int, tuple[np.ndarray, ...]]:
    """label(mask), and its runs: (row, first column, end column (exclusive), component id from
    1), each (runs,), row-major."""
    h, w = mask.shape
    padded = np.zeros((h, w + 2), np.int8)
    padded[:, 1:-1] = mask
    edges = np.subtract(padded[:, 1:], padded[:, :-1])
    rs, cs = np.nonzero(edges == 1)
    _, ce = np.nonzero(edges == -1)  # run ends (exclusive), in the same row-major order
    n = len(rs)
    labels = np.zeros((h, w), np.int32)
    if n == 0:
        return labels, 0, (rs, cs, ce, rs)
    # Run i of the row above touches run j (diagonals included) where cs_i <= ce_j and ce_i >= cs_j.
    # Keys row·(w + 2) + column keep rows apart, so each search stays within the row above.
    span = w + 2
    above = (rs - 1) * span
    lo = np.searchsorted(rs * span + ce, above + cs, side="left")
    hi = np.searchsorted(rs * span + cs, above + ce, side="right")
    counts = np.maximum(hi - lo, 0)
    j = np.repeat(np.arange(n), counts)
    i = np.repeat(lo, counts) + np.arange(len(j)) - np.repeat(np.cumsum(counts) - counts, counts)
    parent = np.arange(n)
    while True:
        low = np.minimum(parent[i], parent[j])
        hooked = parent.copy()
        np.minimum.at(hooked, parent[i], low)
        np.minimum.at(hooked, parent[j], low)
        while True:  # pointer jumping: every run straight to its root
            jumped = hooked[hooked]
            if (jumped == hooked).all():
                break
            hooked = jumped
        if (hooked == parent).all():
            break
        parent = hooked
    # Each component's root is its first run, where parent[r] = r: numbered in their order, from 1.
    ids = np.cumsum(parent == np.arange(n), dtype=np.int32)[parent]
    lengths = ce - cs
    offsets = np.arange(lengths.sum()) - np.repeat(np.cumsum(lengths) - lengths, lengths)
    labels.ravel()[np.repeat(rs * w + cs, lengths) + offsets] = np.repeat(ids, lengths)
    return labels, int(ids.max()), (rs, cs, ce, ids)


def extent_of(mask: np.ndarray) -> tuple[int, int]:
    """(width, height) in px of the bounding box of mask (h, w); (0, 0) when it is empty."""
    if not mask.any():
        return 0, 0
    rows, cols = np.flatnonzero(mask.any(1)), np.flatnonzero(mask.any(0))
    return int(cols[-1] - cols[0]) + 1, int(rows[-1] - rows[0]) + 1


def box_blur(a: np.ndarray, r: int) -> np.ndarray:
    """Mean over a (2r+1)×(2r+1) window (zero outside). (H, W) -> (H, W)."""
    k = 2 * r + 1
    c = np.zeros((a.shape[0] + 2 * r + 1, a.shape[1] + 2 * r + 1), a.dtype)
    c[r + 1 : r + 1 + a.shape[0], r + 1 : r + 1 + a.shape[1]] = a
    c = c.cumsum(0).cumsum(1)
    return (c[k:, k:] - c[:-k, k:] - c[k:, :-k] + c[:-k, :-k]) / (k * k)


def stroke_width(digit: np.ndarray) -> float:
    """Mean stroke width in pixels of a digit (h, w) in [0, 1]: 2·area / perimeter of its ink at
    half the maximum (a band of width t and length L has area tL and perimeter ≈ 2L)."""
    return mask_stroke_width(digit >= 0.5 * float(digit.max()))


def mask_stroke_width(ink: np.ndarray) -> float:
    """stroke_width of the ink mask (h, w) bool: 2·area / perimeter."""
    count = np.count_nonzero
    perimeter = count(ink[1:] != ink[:-1]) + count(ink[:, 1:] != ink[:, :-1])
    perimeter += count(ink[0]) + count(ink[-1]) + count(ink[:, 0]) + count(ink[:, -1])
    return 2.0 * count(ink) / max(perimeter, 1)


def resize(a: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """(h, w) float32 -> size (w', h'): area averaging when shrinking (anti-aliased, as MNIST
    was made); bicubic when enlarging a small image, so it comes out smooth, not as blocks."""
    from PIL import Image

    if size == (a.shape[1], a.shape[0]):
        return a
    resample = Image.Resampling.BOX if size[0] < a.shape[1] else Image.Resampling.BICUBIC
    return np.asarray(Image.fromarray(np.ascontiguousarray(a, np.float32), "F").resize(size, resample))
