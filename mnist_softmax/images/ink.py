"""Steps 2–4 of reading an image: which pixels are ink and which are paper, and how much ink each holds.

On a small view (at most VIEW_SIDE px), brightness along the main colour axis, less the paper's
plane, is split into two classes by Otsu's threshold; dark_is_ink says which class is the ink. The
paper's colour is a plane per channel fitted to the paper class where the light is clearly uneven,
else a constant. Ink is each pixel's step from the paper under it towards the ink's colour, less
the paper's noise floor: either polarity comes out light on dark. A page with no second population,
or ink too close to the paper, is refused as blank.
"""

from __future__ import annotations

import functools
from typing import NamedTuple

import numpy as np

from ..errors import ImageError
from .toolkit import block_reduce, erode, label_runs, median, median_1d, otsu, robust_sigma, robust_upper

FIT_POINTS = 2000  # planes and medians are estimated from about this many pixels


FLOOR_CAP = 0.3  # the noise floor removed from the ink is at most this fraction of the ink's level


VIEW_SIDE = 128  # the two populations and the marks are found on a view at most this large


# Which class is the ink (see dark_is_ink): the paper holds this much of the border; else the
# ink is the class with at most this share of the pixels; else the paper is the class whose
# spread is under this fraction of the other's.
PAPER_BORDER, INK_SHARE, FLATTER = 0.8, 0.42, 0.5


LOOP_HOLE = 0.02  # ... before the share: a class enclosing this share of the pixels (a loop's hole) is the ink


# The refusal rules (see the module docstring); each number is what its rule compares against.
MIN_CONTRAST = 0.08  # ink and paper colour difference, 1 = black against white


MIN_CONTRAST_SIGMAS = 6.0  # ... and, when it is under NOISE_CONTRAST, in robust σ of the paper's noise


NOISE_CONTRAST = 0.25  # a page's noise is far below this; above it, a small or thin digit's paper may look noisy


def check_not_too_narrow(H: int, W: int) -> None:
    """ImageError if an image (H, W) is thinner than a block of its view (VIEW_SIDE blocks along its
    longer side): a strip, more than 128 times longer than wide, not a page with a digit on it.
    Checked from a file's header, before decoding, and again for arrays given to prepare."""
    if min(H, W) < max(1, -(-max(H, W) // VIEW_SIDE)):  # an image with no pixels at all included
        raise ImageError(
            f"no digit found (the image is {W}×{H} px: too narrow to hold a digit)", "too-narrow", w=W, h=H
        )


@functools.lru_cache(maxsize=64)
def _plane_design(h: int, w: int, k: int, H: int, W: int, tilt: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """(design matrix, transposed: (3, h·w) of rows 1, row, col at the centres of k×k blocks; its
    mean column (3,)), rows and columns in units of the full image's height and width, so the
    plane's coefficients apply to the full image unchanged. Without tilt, the row and column rows
    are 0 (a constant is fitted); so is the row of an axis the view is one block across. Read-only:
    the same few image sizes come again and again."""
    r = ((np.arange(h) + 0.5) * k - 0.5) / H
    c = ((np.arange(w) + 0.5) * k - 0.5) / W
    At = np.zeros((3, h, w))
    At[0] = 1.0
    # A tilt along an axis the view is one block across would rest on rounding noise alone.
    if tilt and h > 1:
        At[1] = r[:, None]
    if tilt and w > 1:
        At[2] = c
    mean = np.array([1.0, r.mean(), c.mean()]) if tilt else np.array([1.0, 0.0, 0.0])
    At = At.reshape(3, h * w)
    At.flags.writeable = mean.flags.writeable = False
    return At, mean


def fit_plane(At: np.ndarray, V: np.ndarray, rounds: int = 2) -> np.ndarray:
    """Least-squares plane through values V (C, n) at the points At (3, n) (rows 1, row, col),
    refitted `rounds` times without the points more than 3 σ̂ off. -> coefficients (3, C).
    Channel-major, so every reduction runs along contiguous memory."""
    keep = None  # all the points
    for i in range(rounds + 1):
        coef = _least_squares(At, V, keep)
        if i == rounds:
            break
        resid = _distances(V, At, coef)
        close = resid <= robust_upper(resid if keep is None else resid[keep], 3.0) + 1e-6
        keep = close if keep is None else np.logical_and(keep, close, out=keep)
        if np.count_nonzero(keep) < 3:
            keep = None
    return coef


def _least_squares(At: np.ndarray, V: np.ndarray, keep: np.ndarray | None) -> np.ndarray:
    """argmin_x ‖Aᵀ… ‖: the plane coefficients (3, C) through values V (C, n) at the points
    At (3, n) where keep (n,) (None: all), by the normal equations, a 3×3 solve (the columns are
    1, row, col: well conditioned), or lstsq where they are singular."""
    # A copy, not At itself: NumPy sends At @ At.T of one buffer to another BLAS routine, which
    # rounds differently.
    kept = At.copy() if keep is None else At * keep
    try:
        return np.linalg.solve(kept @ At.T, kept @ V.T)
    except np.linalg.LinAlgError:
        chosen = slice(None) if keep is None else keep
        return np.linalg.lstsq(At.T[chosen], V.T[chosen], rcond=None)[0]


def _distances(V: np.ndarray, At: np.ndarray | None, coef: np.ndarray) -> np.ndarray:
    """|V − planeᵀ| per point: the Euclidean length over the C channels. V (C, n) -> (n,).
    At None: a constant, coef's first row."""
    r = V - (coef[0][:, None] if At is None else coef.T @ At)
    return np.abs(r[0]) if len(r) == 1 else np.sqrt(np.einsum("cn,cn->n", r, r))


def fit_paper(At: np.ndarray, values: np.ndarray, keep: np.ndarray | None, points: int = FIT_POINTS) -> np.ndarray:
    """The paper under values (C, n) at the columns of At (3, n), from about `points` of the
    points where keep (n,) (None: all): a plane (fit_plane) where the light is clearly uneven, else
    a constant, the median. -> (3, C).

    A tilt is taken only when it takes out most of the spread (robust σ at least 30% lower than
    around the median): fitted to a few slivers of paper between frame-filling strokes, a plane
    would extrapolate wildly across the ink.
    """
    n = At.shape[1]
    # A plane has three numbers: a couple of thousand points, spread over the image, pin it down.
    if keep is None or np.count_nonzero(keep) < 3:
        chosen = np.arange(0, n, max(1, n // points))
    else:
        chosen = np.flatnonzero(keep)
        chosen = chosen[:: max(1, len(chosen) // points)]
    At, V = np.ascontiguousarray(At[:, chosen]), np.ascontiguousarray(values[:, chosen])  # (3, m), (C, m)
    flat = np.zeros((3, V.shape[0]))
    flat[0] = median(V, axis=1)
    if not At[1:].any():
        return flat
    plane = fit_plane(At, V)
    spread_plane = robust_sigma(_distances(V, At, plane))[1]
    return plane if spread_plane < 0.7 * robust_sigma(_distances(V, None, flat))[1] else flat


class InkMap(NamedTuple):
    level: np.ndarray  # (H, W) float32: each pixel's step towards the ink, less the paper's noise floor
    cover: np.ndarray  # (H, W) float32 in [0, 1]: 1 from the ink's typical level up (for the rules)
    background: tuple[float, ...]  # mean paper colour per channel
    inverted: bool  # the ink is darker than the paper

    def ink(self, box: tuple[int, int, int, int]) -> np.ndarray:
        """The ink in box (row0, row1, col0, col1): 0 at the paper, 1 at the box's strongest ink."""
        r0, r1, c0, c1 = box
        crop = np.maximum(self.level[r0:r1, c0:c1], 0.0)
        return crop / max(float(crop.max()), 1e-12)


def ink_map(colour: np.ndarray) -> InkMap:
    """Separate ink from paper in a composited image (H, W, C) in [0, 1]; see steps 2–4 of the
    module docstring. Raises ImageError("no digit found (blank: ...)") when nothing stands out."""
    H, W, C = colour.shape
    k = max(1, -(-max(H, W) // VIEW_SIDE))
    check_not_too_narrow(H, W)
    view = block_reduce(colour, k) / (k * k)  # (h, w, C): the small view, noise averaged down
    h, w = view.shape[:2]
    # A tiny image has no uneven light to speak of, and too few pixels to fit a tilt.
    At, A_mean = _plane_design(h, w, k, H, W, tilt=max(h, w) >= 24)
    # Channel-major (C, h·w): every reduction over the view's pixels runs along contiguous memory.
    channels = np.ascontiguousarray(view.reshape(-1, C).T, dtype=np.float64)

    axis = _main_axis(channels)  # brightness along it: ink and paper of equal grey still differ
    bright = axis @ channels
    # Uneven light is a plane under everything; taking it off first keeps a dim corner of the
    # page from becoming its own class.
    # A first look: a few hundred points pin a plane down well enough to split the classes.
    resid = bright - fit_paper(At, bright[None], None, FIT_POINTS // 8)[:, 0] @ At
    if resid.max() - resid.min() < 1e-6:
        raise ImageError("no digit found (blank: a single flat colour)", "blank-flat")
    upper = resid > otsu(resid)
    dark_is_ink = _dark_is_ink(upper.reshape(h, w), resid.reshape(h, w))
    paper = upper if dark_is_ink else ~upper
    if paper.all() or not paper.any():
        raise ImageError("no digit found (blank: no second population of pixels)", "blank-one-population")
    # The paper's colour per channel, fitted once, on the paper class away from the ink's
    # anti-aliased edges; its brightness (the same plane, along the axis) then refines the classes.
    inner = erode(paper.reshape(h, w)).ravel()
    coef = fit_paper(At, channels, inner if inner.sum() >= 3 else paper)
    resid = bright - (coef @ axis) @ At
    upper = resid > otsu(resid)
    paper = upper if dark_is_ink else ~upper
    if paper.all() or not paper.any():
        raise ImageError("no digit found (blank: no second population of pixels)", "blank-one-population")
    inner = erode(paper.reshape(h, w)).ravel()
    step = channels - coef.T @ At  # (C, n): each pixel's difference from the paper under it
    ink_points = _thin_out(np.flatnonzero(~paper))
    direction = median(step[:, ink_points], axis=1)
    norm = float(np.linalg.norm(direction))
    if norm < 1e-9:
        raise ImageError("no digit found (blank: ink and paper have the same colour)", "blank-same-colour")
    direction /= norm
    along = direction @ step  # signed step towards the ink, per view pixel
    ink_level = median_1d(along[ink_points])
    # The paper's noise away from the ink: near it, anti-aliased edges would count as noise.
    _, paper_sigma = robust_sigma(_thin_out(along[inner] if inner.sum() >= 16 else along[paper]))
    contrast = ink_level / np.sqrt(C)
    if contrast < MIN_CONTRAST:
        raise ImageError(
            f"no digit found (blank: ink and paper differ by {contrast:.3f}; a digit needs {MIN_CONTRAST})",
            "blank-contrast", contrast=f"{contrast:.3f}", needs=f"{MIN_CONTRAST}",
        )  # fmt: skip
    if contrast < NOISE_CONTRAST and ink_level < MIN_CONTRAST_SIGMAS * paper_sigma:
        raise ImageError(
            f"no digit found (blank: ink and paper differ by {contrast:.3f}, only {ink_level / paper_sigma:.1f} σ "
            f"of the paper's noise; a digit needs {MIN_CONTRAST_SIGMAS:g} σ)",
            "blank-noise", contrast=f"{contrast:.3f}", sigmas=f"{ink_level / paper_sigma:.1f}",
            needs=f"{MIN_CONTRAST_SIGMAS:g}",
        )  # fmt: skip

    # The same at full resolution: the plane's coefficients hold there too (units of H and W).
    d = _minus_plane(_project(colour, direction.astype(np.float32)), coef @ direction)
    stride = max(1, int(np.sqrt(H * W / (4 * FIT_POINTS))))
    sample = d[::stride, ::stride].ravel()
    # Where paper is only slivers between strokes, its sample is mostly anti-aliased edges and
    # its noise looks large: the floor never takes more than FLOOR_CAP of the ink's level.
    paperish = sample[sample < 0.5 * ink_level]
    floor = robust_upper(paperish, 6.0) if paperish.size else 0.0
    floor = min(max(floor, 0.0), FLOOR_CAP * ink_level)
    d -= np.float32(floor)
    cover = _scaled_to_unit(d, max(ink_level - floor, 1e-12))
    mean_bg = A_mean @ coef  # the mean of the paper's plane over the view
    return InkMap(d, cover, tuple(float(v) for v in mean_bg), dark_is_ink)


def _project(colour: np.ndarray, direction: np.ndarray) -> np.ndarray:
    """colour (H, W, C) @ direction (C,) -> (H, W): for one channel a product (NumPy's matmul
    takes an order of magnitude longer over an inner axis of 1); for several, as pixel rows."""
    H, W, C = colour.shape
    if C == 1:
        return np.multiply(colour[..., 0], direction[0])
    return (colour.reshape(H * W, C) @ direction).reshape(H, W)


def _scaled_to_unit(d: np.ndarray, top: float) -> np.ndarray:
    """clip(d / top, 0, 1) as a new float32 array, in two passes over d (H, W)."""
    out = np.divide(d, np.float32(top), dtype=np.float32)
    return np.clip(out, 0.0, 1.0, out=out)


def _main_axis(channels: np.ndarray) -> np.ndarray:
    """The unit direction (C,) along which colours (C, n) vary most, pointing to light (its
    components sum ≥ 0); (1, …, 1)/√C for grey or flat images."""
    C, n = channels.shape
    axis = np.ones(C) / np.sqrt(C)
    if C > 1:
        mean = channels.sum(1) / n
        # Each of the C(C+1)/2 sums of products as a dot product: a (C, n) @ (n, C) product with
        # n in the tens of thousands is an order of magnitude slower in BLAS.
        second = np.empty((C, C))
        for i in range(C):
            for j in range(i + 1):
                second[i, j] = second[j, i] = np.dot(channels[i], channels[j])
        second /= n
        vals, vecs = np.linalg.eigh(second - np.outer(mean, mean))
        if vals[-1] > 1e-12:
            axis = vecs[:, -1] * (1 if vecs[:, -1].sum() >= 0 else -1)
    return axis


def _thin_out(values: np.ndarray) -> np.ndarray:
    """Every so many of values (n, ...), keeping about 2·FIT_POINTS: enough for a median."""
    return values[:: max(1, len(values) // (2 * FIT_POINTS))]


def _minus_plane(d: np.ndarray, coef: np.ndarray) -> np.ndarray:
    """d (H, W) float32 less the plane a + b·row/H + c·col/W of coefficients (3,), in place; returns d."""
    H, W = d.shape
    d -= np.float32(coef[0]) + np.arange(H, dtype=np.float32)[:, None] / H * np.float32(coef[1])
    d -= np.arange(W, dtype=np.float32)[None, :] / W * np.float32(coef[2])
    return d


def _dark_is_ink(upper: np.ndarray, values: np.ndarray) -> bool:
    """Polarity from the two classes of values (h, w) (upper: the brighter class, (h, w) bool).

    The paper is the class that holds the border (≥ 80% of it). When the digit touches the edges
    so that neither does, a class that closes around holes of the other (≥ 2% of the pixels,
    twice the holes the other closes around, if any) is the ink: the paper outside a loop of a 0,
    6, 8 or 9 is paper, however thick the loop; else the ink is the class with clearly fewer
    pixels (≤ 42%); when the two are near even (a tight crop of a 1, a digit filling an 8×8 icon),
    the paper is the class whose values are clearly flatter (robust σ under half the other's: a
    page or a canvas is one colour, strokes shade into it); failing all that, the darker class,
    since pen on paper is the common case.
    """
    border = np.concatenate([upper[0], upper[-1], upper[1:-1, 0], upper[1:-1, -1]])
    bright_border = float(border.mean())
    if bright_border >= PAPER_BORDER or bright_border <= 1 - PAPER_BORDER:
        return bright_border >= PAPER_BORDER
    in_dark, in_bright = _enclosed(upper), _enclosed(~upper)  # of the bright class, of the dark
    if max(in_dark, in_bright) >= LOOP_HOLE and min(in_dark, in_bright) < 0.5 * max(in_dark, in_bright):
        return in_dark > in_bright  # the class around the holes is the ink: a loop (0, 6, 8, 9) is a stroke
    bright_share = float(upper.mean())
    if abs(bright_share - 0.5) >= 0.5 - INK_SHARE:
        return bright_share > 0.5
    bright_sigma, dark_sigma = robust_sigma(values[upper])[1], robust_sigma(values[~upper])[1]
    if min(bright_sigma, dark_sigma) < FLATTER * max(bright_sigma, dark_sigma):
        return bright_sigma < dark_sigma
    return True  # the darker class is the ink


def _enclosed(mask: np.ndarray) -> float:
    """The share of the pixels of mask (h, w) bool that lie in its components touching no edge of the
    image: regions another class closes around (a loop's hole)."""
    labels, n, (rs, cs, ce, ids) = label_runs(mask)
    if n == 0:
        return 0.0
    h, w = mask.shape
    edge = np.zeros(n + 1, bool)
    edge[np.unique(ids[(rs == 0) | (rs == h - 1) | (cs == 0) | (ce == w)])] = True
    return float(np.count_nonzero(~edge[labels] & mask) / mask.size)
