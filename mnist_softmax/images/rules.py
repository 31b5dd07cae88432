"""Step 5 of reading an image: where the digit is, and the rules by which an image holds no digit.

The digit grows from the largest mark (8-connected ink at half its level) by the marks near it; its
box is then checked against the refusal rules of the package's docstring (a speck, too thin, a
blot, a line, several marks). Each number a rule compares against is a constant below.
"""

from __future__ import annotations

import numpy as np

from ..errors import ImageError
from .ink import VIEW_SIDE, InkMap
from .toolkit import block_reduce, box_blur, extent_of, label, label_runs, mask_stroke_width, resize

BOX, FIELD, CENTRE = 20, 28, 14.0


RULED_LINE = 0.6  # a mark at least this long (of the image's longer side) and 8× longer than wide is a ruled line


BOX_LEVEL = 0.5  # the box holds ink from this level times (1 − 20/extent): all of it at MNIST's scale, where


# the faint fringe is part of the digit; half the ink's level on a large image, where it is blur
FRINGE = 0.25  # the box reaches this fraction of its size past the marks, for their faint anti-aliased edges


MIN_EXTENT_PX = 3  # the digit's box spans at least this many pixels


MIN_EXTENT_FRACTION = 1 / 20  # ... and this fraction of the image's longer side


MIN_STROKE_AT_20 = 0.3  # px of stroke width once the box's longer side is 20 px (MNIST: ≥ 0.71)


MAX_SOLID, MAX_FILLED = 0.15, 0.9  # a blot is this deep and fills this much of its box (see the docstring)


MAX_WIDTH_OVER_HEIGHT = 3.0  # MNIST: ≤ 2


DIGIT_SIZED, DIGIT_INK = 0.5, 0.2  # a group the size of a digit spans this much of the box, holds this much ink


# Groups of ink apart by these gaps are several digits, not one digit's broken strokes:
SIDE_APART = 0.07  # two digit-sized groups side by side, apart by this much of the box's height ("7 2")


SIDE_LEVEL = 0.05  # ... columns under this share of the median column's ink count as blank (anti-aliasing)


MIN_GAP_PX = 2  # ... and by this many blank columns at least (a pixel's gap in an 8×8 digit is not two)


STACKED_APART = 0.3  # ... one above another, apart by this much of the taller one's height


STACKED_TALL, STACKED_INK = 0.6, 0.15  # ... each this much of the tallest group's height, and of the ink,


ONE_TALL = 2.0  # ... and half the box's width, or, narrower, this many times as tall as wide (a 1 over a 7)


LINE_RATIO, LINES_APART = 3, 0.15  # text: lines this many times wider than tall, apart by this much of their height


def digit_box(inkmap: InkMap) -> tuple[int, int, int, int]:
    """The digit's bounding box (row0, row1, col0, col1), half-open, in the ink map (H, W), or
    ImageError("no digit found (...)") by the rules of the module docstring."""
    cover = inkmap.cover
    H, W = cover.shape
    k = max(1, -(-max(H, W) // VIEW_SIDE))
    # A block holds a mark if any of its pixels is ink at half its typical level, so a thin line
    # survives the reduction; its ink is the blocks' sum.
    marks = block_reduce(cover, k, np.maximum) >= 0.5
    mass = block_reduce(cover, k)
    labels, n, (rs, cs, ce, ids) = label_runs(marks)
    if n == 0:
        raise ImageError("no digit found (blank: no mark reaches half the ink's level)", "blank-faint")
    per = np.bincount(labels.ravel(), weights=mass.ravel(), minlength=n + 1)[1:]
    # Each mark's box, from its runs (far fewer than its pixels).
    ids = ids - 1
    r0 = np.full(n, 1 << 30)
    c0 = np.full(n, 1 << 30)
    r1 = np.zeros(n, int)
    c1 = np.zeros(n, int)
    np.minimum.at(r0, ids, rs)
    np.minimum.at(c0, ids, cs)
    np.maximum.at(r1, ids, rs + 1)
    np.maximum.at(c1, ids, ce)
    # The digit grows from its largest mark by the marks near it (within half its size), so a
    # broken stroke joins it and dust or a second mark elsewhere on the page does not.
    main = int(per.argmax())
    kept = np.zeros(n, bool)
    kept[main] = True
    # A ruled line of the paper (a margin, a notebook's lines) is long, thin and spans most of
    # the page: it is not part of the digit even where it passes close to it.
    long_side, short_side = np.maximum(r1 - r0, c1 - c0), np.minimum(r1 - r0, c1 - c0)
    ruled = (long_side >= RULED_LINE * max(marks.shape)) & (long_side >= 8 * short_side)
    candidates = (per >= 0.02 * per[main]) & ~ruled
    while True:
        b0, b1, d0, d1 = r0[kept].min(), r1[kept].max(), c0[kept].min(), c1[kept].max()
        reach = max(0.5 * max(b1 - b0, d1 - d0), 0.25 * max(marks.shape))
        near = (r0 < b1 + reach) & (r1 > b0 - reach) & (c0 < d1 + reach) & (c1 > d0 - reach)
        grown = kept | (near & candidates)
        if (grown == kept).all():
            break
        kept = grown
    # The box in full-resolution pixels: the kept blocks with a margin for the strokes' faint,
    # anti-aliased fringe, then tightened to the ink inside. (The view leaves out the last rows
    # and columns short of a whole block; a box reaching the view's edge reaches the image's.)
    R0, R1 = int(r0[kept].min()) * k, int(r1[kept].max()) * k
    C0, C1 = int(c0[kept].min()) * k, int(c1[kept].max()) * k
    R1, C1 = (H if marks.shape[0] * k == R1 else R1), (W if marks.shape[1] * k == C1 else C1)
    extent = max(R1 - R0, C1 - C0)
    margin = max(2 * k, round(FRINGE * extent))
    R0, R1, C0, C1 = max(0, R0 - margin), min(H, R1 + margin), max(0, C0 - margin), min(W, C1 + margin)
    level = BOX_LEVEL * min(max(1 - BOX / extent, 0.0), 1.0)
    # Marks left out of the digit stay out of its box, also where they fall inside its margin:
    # the view's blocks of other marks, at full resolution over the box (none past the view's edge).
    region = cover[R0:R1, C0:C1] > level
    every_mark = bool(kept.all())  # then no other mark is left out of the box or of `mine` below
    if not every_mark:
        others = (labels > 0) & ~kept[labels - 1]
        rows, cols = np.arange(R0, R1) // k, np.arange(C0, C1) // k
        inside = (rows < others.shape[0])[:, None] & (cols < others.shape[1])[None, :]
        region &= ~(others[np.minimum(rows, others.shape[0] - 1)][:, np.minimum(cols, others.shape[1] - 1)] & inside)
    rr, cc = np.flatnonzero(region.any(1)), np.flatnonzero(region.any(0))
    box = (R0 + int(rr[0]), R0 + int(rr[-1]) + 1, C0 + int(cc[0]), C0 + int(cc[-1]) + 1)
    largest = cover[r0[main] * k : (r1[main] + 1) * k, c0[main] * k : (c1[main] + 1) * k] >= 0.5
    if max(largest.shape) < 3 * MIN_EXTENT_FRACTION * max(H, W):
        # Near the speck limit, marks a block apart count as two, as they do at full resolution.
        labels_full, m = label(largest)
        if m > 1:
            largest = labels_full == 1 + int(np.bincount(labels_full.ravel())[1:].argmax())
    _check_digit(cover[box[0] : box[1], box[2] : box[3]], largest, max(H, W))
    b0, b1, d0, d1 = r0[kept].min(), r1[kept].max(), c0[kept].min(), c1[kept].max()
    # A mark left out is dust or a stray stroke; one the size of a digit is another digit ("3   7").
    apart = ~kept & ~ruled & (r1 - r0 >= DIGIT_SIZED * (b1 - b0)) & (per >= DIGIT_INK * per[kept].sum())
    if apart.any():
        raise ImageError(
            f"no digit found (several marks: {1 + int(apart.sum())} marks the size of a digit, apart; "
            "crop the image to one digit)", "several-apart", n=1 + int(apart.sum()),
        )  # fmt: skip
    mine = labels[b0:b1, d0:d1] > 0
    if not every_mark:
        mine &= kept[labels[b0:b1, d0:d1] - 1]
    several = several_marks(mine, mass[b0:b1, d0:d1])
    if several:
        raise ImageError(f"no digit found (several marks: {several}; crop the image to one digit)", several.code,
                         **several.args_)  # fmt: skip
    return box


def _bands(profile: np.ndarray, share: float = 0.1) -> list[tuple[int, int]]:
    """The runs [start, end) of a projection profile (n,) of ink that stand out: above `share` of
    its median over the rows (or columns) with ink (a tenth: a few pixels of a descender do not
    join two lines of text; 0: any ink)."""
    level = share * float(np.median(profile[profile > 0]))
    above = np.zeros(len(profile) + 2, np.int8)
    above[1:-1] = profile > level
    edges = np.subtract(above[1:], above[:-1])
    return list(zip(np.flatnonzero(edges == 1).tolist(), np.flatnonzero(edges == -1).tolist(), strict=True))


class Reason(str):
    """Why an image holds no single digit, as text, with its kind and numbers (for ImageError's
    code and args)."""

    def __new__(cls, text: str, code: str, **args):
        reason = super().__new__(cls, text)
        reason.code, reason.args_ = code, args
        return reason


def several_marks(mask: np.ndarray, mass: np.ndarray) -> str:
    """Why the marks kept for a digit (mask (h, w) bool on the view, cropped to their box; their
    ink per pixel, mass (h, w)) hold more than one digit, or "". The ink is split into bands by
    its projection on each axis; a digit's broken strokes overlap (the bar of a 5 lies above its
    body, a 4's crossbar reaches its stroke), are small, or are close. It is several digits when,
    - side by side, two bands or more each span DIGIT_SIZED of the box's height and hold
      DIGIT_INK of its ink, with a gap of blank columns at least SIDE_APART of the box's height
      and MIN_GAP_PX wide ("7 2");
    - one above another, two or more are lines: half its width, LINE_RATIO times as wide as tall,
      each with a twentieth of its ink, LINES_APART of a line's height apart (text); or two bands
      each STACKED_TALL of the tallest one's height with STACKED_INK of the ink, and half the box's
      width or ONE_TALL times as tall as wide (a 1), STACKED_APART of the taller one's height apart
      (a 7 over a 2, a 1 over a 7).
    """
    ink = np.where(mask, mass, 0.0)
    side = _side_by_side(mask, ink)
    if side:
        return side
    rows = [((a, b), b - a, extent_of(mask[a:b])[0], float(ink[a:b].sum())) for a, b in _bands(ink.sum(1))]
    return _lines_of_text(rows, mask.shape[1], float(ink.sum())) or _stacked(rows, mask.shape[1], float(ink.sum()))


def _side_by_side(mask: np.ndarray, ink: np.ndarray) -> str:
    """several_marks' rule for digits side by side ("7 2"): ink (h, w) of the mask's marks."""
    height = mask.shape[0]
    total = float(ink.sum())
    bands = _bands(ink.sum(0), SIDE_LEVEL)  # digits side by side have blank columns between them
    sized = [
        (a, b) for a, b in bands
        if extent_of(mask[:, a:b])[1] >= DIGIT_SIZED * height and ink[:, a:b].sum() >= DIGIT_INK * total
    ]  # fmt: skip
    if len(sized) >= 2 and _widest_gap(bands, sized) >= max(MIN_GAP_PX, SIDE_APART * height):
        return Reason(
            f"{len(sized)} groups of ink side by side, each the size of a digit", "several-side", n=len(sized)
        )
    return ""


def _lines_of_text(rows: list, width: int, total: float) -> str:
    """several_marks' rule for text: rows [((start, end), height, width, ink)], the bands one above another."""
    lines = [band for band, h, w, m in rows
             if w >= DIGIT_SIZED * width and w >= LINE_RATIO * h and m >= DIGIT_INK / 4 * total]  # fmt: skip
    bands = [band for band, *_ in rows]
    if len(lines) >= 2 and _widest_gap(bands, lines) >= LINES_APART * float(np.median([b - a for a, b in lines])):
        return Reason(f"{len(lines)} lines of ink one above another", "several-lines", n=len(lines))
    return ""


def _stacked(rows: list, width: int, total: float) -> str:
    """several_marks' rule for digits one above another (a 7 over a 2, a 1 over a 7): rows as in _lines_of_text."""
    if len(rows) < 2:
        return ""
    tallest = max(h for _, h, _, _ in rows)
    stacked = [
        band
        for band, h, w, m in rows
        if h >= STACKED_TALL * tallest and m >= STACKED_INK * total and (w >= DIGIT_SIZED * width or h >= ONE_TALL * w)
    ]
    bands = [band for band, *_ in rows]
    if len(stacked) >= 2 and _widest_gap(bands, stacked) >= STACKED_APART * max(b - a for a, b in stacked):
        return Reason(f"{len(stacked)} groups of ink one above another, each the size of a digit", "several-stacked",
                      n=len(stacked))  # fmt: skip
    return ""


def _widest_gap(bands: list[tuple[int, int]], groups: list[tuple[int, int]]) -> int:
    """The widest gap between consecutive bands [start, end) that lies between the first and the
    last of `groups` (some of the bands): a speck beside a digit does not make its gap count."""
    lo, hi = groups[0][1], groups[-1][0]
    return max((b[0] - a[1] for a, b in zip(bands, bands[1:], strict=False) if lo <= a[1] and b[0] <= hi), default=0)


def _check_digit(cover: np.ndarray, largest: np.ndarray, side: int) -> None:
    """Raise ImageError("no digit found (...)") unless the ink cover (h, w) of a digit's box, whose
    largest mark is `largest` (h', w') bool, in an image whose longer side is `side` px, passes the
    rules of the module docstring."""
    # Extents are those of the strokes proper (ink at half its level or more): a JPEG's ringing
    # around a speck can fill a whole 16×16 block pair just above the floor.
    strokes = cover >= 0.5
    sw, sh = extent_of(strokes)
    lw, lh = extent_of(largest)
    if max(sh, sw) < MIN_EXTENT_PX or max(lh, lw) < MIN_EXTENT_FRACTION * side:
        if max(sh, sw) >= MIN_EXTENT_PX:
            raise ImageError(
                f"no digit found (a speck: the largest mark spans {lw}×{lh} px, under 1/20 of the image's {side} px)",
                "speck-small", w=lw, h=lh, side=side,
            )  # fmt: skip
        raise ImageError(f"no digit found (a speck: the ink spans {sw}×{sh} px, under {MIN_EXTENT_PX} px)", "speck",
                         w=sw, h=sh, limit=MIN_EXTENT_PX)  # fmt: skip
    h, w = cover.shape
    extent = max(h, w)
    # Both measured as MNIST's digits were: at the 20-px scale.
    at20 = np.clip(resize(cover, (max(1, round(w * BOX / extent)), max(1, round(h * BOX / extent)))), 0, 1)
    half = 0.5 * float(cover.max())
    width = mask_stroke_width(strokes if half == 0.5 else cover >= half) * BOX / extent
    if width < MIN_STROKE_AT_20:
        raise ImageError(
            f"no digit found (too thin: its strokes are {width:.2f} px wide at MNIST's 20-px scale, "
            f"a digit's at least {MIN_STROKE_AT_20:g}; MNIST's thinnest are 0.71)",
            "too-thin", width=f"{width:.2f}", needs=f"{MIN_STROKE_AT_20:g}",
        )  # fmt: skip
    mask20 = at20 >= 0.5
    solid, filled = _solid_fraction(mask20, BOX), np.count_nonzero(mask20) / mask20.size
    if solid > MAX_SOLID and filled > MAX_FILLED:
        raise ImageError(
            f"no digit found (a blot: it fills {filled:.0%} of its box and {solid:.0%} of its ink lies deeper "
            f"inside it than 1/6 of its size; a digit's strokes leave room)",
            "blot", filled=f"{filled:.0%}", solid=f"{solid:.0%}",
        )  # fmt: skip
    if w > MAX_WIDTH_OVER_HEIGHT * h:
        raise ImageError(f"no digit found (a line: the ink is {w / h:.1f}× wider than tall, a digit at most 2×)",
                         "line", ratio=f"{w / h:.1f}")  # fmt: skip


def _solid_fraction(mask: np.ndarray, extent: int) -> float:
    """Fraction of mask (h, w) that survives erosion by a square of side extent/3 (+1): the pixels
    deeper inside the ink than a sixth of the mark's size. -> float in [0, 1]."""
    r = max(1, round(extent / 6))
    if mask.sum() == 0 or min(mask.shape) <= 2 * r:
        return 0.0
    inside = box_blur(mask.astype(np.float32), r) > 1 - 1e-4
    return float(inside.sum() / mask.sum())
