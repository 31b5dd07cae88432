"""A user's image file -> a 28×28 uint8 digit in MNIST form, the way MNIST itself was made.

MNIST digits are light ink on a black background, scaled so the longer side of the ink's bounding
box is 20 px (anti-aliased), and placed in a 28×28 field with the ink's centre of mass at the centre
(row 14, column 14 on average over the real test set). `to_mnist` reproduces that form:

1. read with Pillow (PNG/JPEG/BMP/GIF/TIFF/WebP, 8-, 16- or 32-bit, grey/RGB/palette/CMYK; first
   frame), turned upright by its EXIF Orientation (phones store their pixels sideways), any
   transparency composited onto a background that contrasts with the ink; a dithered 1-bit scan
   (two colours, 1% of its pixels unlike all four neighbours) read through a 5×5 box blur, which
   gives back the grey its dots stand for;
2. split the pixels into two populations, paper and ink, without assuming a border of paper: on a
   small view (≤ 128 px), brightness along the main colour axis, less the paper's plane (below),
   is thresholded where the two classes are best separated (Otsu's threshold on the histogram of
   the whole view). Which class is the ink: the paper is the class that holds the border (≥ 80%
   of it); when the digit touches the edges so that neither does, the class that closes around
   holes of the other is the ink (a loop: the paper outside a tightly cropped 0 is paper), else
   the class with clearly fewer pixels (≤ 42%); when the two are near even, the paper is the clearly flatter class
   (a page or canvas is one colour, strokes shade into it); failing all that, the darker class;
3. the paper's colour is a plane per channel fitted to the paper class (its interior, away from
   the ink's anti-aliased edges; its brightness then refines the two classes), where the light is
   clearly uneven (a tilt that takes out 30% of the paper's spread), else a constant: a plane
   fitted to slivers of paper between frame-filling strokes would extrapolate wildly. Ink = each
   pixel's step from the paper under it towards the ink's colour, so dark on light and light on
   dark both come out light on dark (the polarity), whatever the colours;
4. remove the background level: subtract the noise floor (median + 6 robust σ of the paper, at
   most 0.3 of the ink's typical level), rescale so the strongest ink is 1;
5. find the digit: the marks are the 8-connected components of the ink at half its typical level;
   the digit grows from the largest by the marks within half its size (or 1/4 of the image)
   that hold 2% of its ink,
   so a broken stroke joins it and dust elsewhere on the page does not widen its box (a mark
   elsewhere the size of a digit is another digit: refused, below);
6. crop to the digit's bounding box (its strokes at half their level, plus the fainter fringe
   a little past them when the image is at MNIST's scale or smaller), scale the longer side to
   20 px keeping the aspect ratio (area averaging when shrinking, so anti-aliased; bicubic when
   enlarging a small image, so an 8×8 or 16×16 digit comes out smooth), thin strokes much bolder
   than MNIST's (a fat brush), paste into 28×28 so the centre of mass sits at (14, 14).

A digit already in MNIST form comes through with the same pixels, up to the stretch to a maximum
of 255 and a one-pixel recentring; except that a stray mark apart from the strokes is left out.

An image is refused with `no digit found (<reason>)` by the first of these rules that it breaks:

- blank: ink and paper differ by less than 0.08 (1 = black against white), or by less than 0.25
  and less than 6 robust σ of the paper's own noise: an empty page, a flat colour, noise only;
- a speck: the digit's strokes (at half the ink's level) span fewer than 3 px, or its largest
  mark spans less than 1/20 of the image's longer side (a 6×6 speck on a 280×280 page, a few
  specks together, one lit pixel in a 28×28 image);
- too thin: scaled so its longer side is 20 px, as MNIST's digits are, its strokes are less than
  0.3 px wide (2·ink / perimeter; MNIST's thinnest: 0.71): a line thinner than 1/67 of its size;
- a blot: at that scale, it fills more than 90% of its box and more than 15% of its ink lies
  deeper inside it than 1/6 of its size (a solid rectangle, specks run together; MNIST's digits
  are that deep at most 18%, fat canvas strokes up to about 31%, but those fill at most about 82%
  of their box: strokes leave room. A round blot fills 79% and is not caught);
- a line: its box is more than 3× wider than tall (MNIST's widest digit is 2×);
- several marks: the ink splits (by its projection on an axis) into groups, two or more of them
  each the size of a digit (half the box across the axis, a fifth of the ink), side by side with
  blank columns between them 0.07 of the box's height wide or more, and 2 px at least ("7 2"; a
  column with under a twentieth of the median column's ink is blank), or one above another (each
  0.6 of the tallest group's height with 0.15 of the ink, and half the box's width or twice as
  tall as wide: a 1) and 0.3 of the taller one's height apart; or into two lines or more one above another (half the box
  wide, three times as wide as tall: text); or a mark too far away to join the digit is itself the size of one
  (half its height, a fifth of its ink: "3     7"). A digit's broken strokes overlap, are small
  or close: 1 of the 10,000 MNIST test digits is refused (a 4 beside a stray stroke) and 7 of
  the 60,000 training digits (a 1 beside dots or a stroke, 3s, a 5 and a 9 in two pieces).

Before all that, an image more than 128 times longer than wide is refused as too narrow.
"""

from __future__ import annotations

import contextlib
import functools
import os
import warnings
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import NamedTuple

import numpy as np

from .errors import MnistSoftmaxError

MAX_PIXELS = 50_000_000  # larger images are refused before decoding (decompression bombs)
WORK_SIDE = 1024  # larger images are reduced to about this before the pixel work
FIT_POINTS = 2000  # planes and medians are estimated from about this many pixels
DITHER_BLUR, DITHER_MIN_SIDE = 2, 64  # dithered images this large are read through a 5×5 box blur
DITHERED = 0.01  # ... dithered: this share of the pixels differ from all four neighbours (see _dithered)
FLOOR_CAP = 0.3  # the noise floor removed from the ink is at most this fraction of the ink's level
VIEW_SIDE = 128  # the two populations and the marks are found on a view at most this large
MAX_STROKE, STROKE_TARGET = 3.5, 3.0  # px at the 20-px scale; MNIST: median 2.0, 98th percentile 3.5
RULED_LINE = 0.6  # a mark at least this long (of the image's longer side) and 8× longer than wide is a ruled line
BOX_LEVEL = 0.5  # the box holds ink from this level times (1 − 20/extent): all of it at MNIST's scale, where
# the faint fringe is part of the digit; half the ink's level on a large image, where it is blur
FRINGE = 0.25  # the box reaches this fraction of its size past the marks, for their faint anti-aliased edges
IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".pgm", ".ppm"}
BOX, FIELD, CENTRE = 20, 28, 14.0

# Which class is the ink (see _dark_is_ink): the paper holds this much of the border; else the
# ink is the class with at most this share of the pixels; else the paper is the class whose
# spread is under this fraction of the other's.
PAPER_BORDER, INK_SHARE, FLATTER = 0.8, 0.42, 0.5
LOOP_HOLE = 0.02  # ... before the share: a class enclosing this share of the pixels (a loop's hole) is the ink

# The refusal rules (see the module docstring); each number is what its rule compares against.
MIN_CONTRAST = 0.08  # ink and paper colour difference, 1 = black against white
MIN_CONTRAST_SIGMAS = 6.0  # ... and, when it is under NOISE_CONTRAST, in robust σ of the paper's noise
NOISE_CONTRAST = 0.25  # a page's noise is far below this; above it, a small or thin digit's paper may look noisy
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


class ImageError(MnistSoftmaxError):
    """An image that cannot be read or holds no digit."""


class Prepared(NamedTuple):
    digit: np.ndarray  # (28, 28) uint8 in MNIST form
    inverted: bool  # True when the ink was darker than the background
    background: tuple[float, ...]  # per-channel background level in [0, 1]
    box: tuple[int, int, int, int] = (0, 0, 0, 0)  # the digit's box (row0, row1, col0, col1) in the upright image
    size: tuple[int, int] = (28, 28)  # (height, width) of the upright image the box is in, as read


def read_image(
    source: str | Path | bytes, gate: Callable[[int], contextlib.AbstractContextManager] | None = None
) -> tuple[np.ndarray, np.ndarray | None]:
    """(colour (H, W, C) float32 in [0, 1], alpha (H, W) in [0, 1] or None) of an image's first
    frame, turned upright by its EXIF Orientation. source: a file's path, or the file's bytes.
    ImageError says why it cannot be read, its message naming the path when there is one.
    gate(pixels), if given, is entered once the header is read and held while the pixels are
    decoded and converted: a server's budget of decoding work (it may wait, or raise)."""
    try:
        return _decode(source, gate)
    except ImageError as e:
        raise ImageError(f"{source}: {e}" if isinstance(source, str | Path) else str(e)) from None


@contextlib.contextmanager
def _quiet_pillow():
    """Pillow's own warnings (corrupt EXIF, odd palettes) kept from the user: the image is read, or
    refused with a reason. warnings.catch_warnings changes process-wide state, which is safe in the
    main thread only: a program that reads images on other threads (serve) calls
    quiet_pillow_everywhere once instead."""
    import threading

    if threading.current_thread() is not threading.main_thread():
        yield
        return
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        yield


def quiet_pillow_everywhere() -> None:
    """Ignore the warnings Pillow's own modules issue, in every thread of this process."""
    warnings.filterwarnings("ignore", module=r"PIL(\.|$)")


def _decode(source: str | Path | bytes, gate=None) -> tuple[np.ndarray, np.ndarray | None]:
    """read_image, its errors without the path."""
    import io
    import stat

    from PIL import Image, UnidentifiedImageError

    # Pillow refuses an image of over twice this many pixels from its header; between once and
    # twice it would only warn, so this makes its refusal ours, in every thread alike.
    Image.MAX_IMAGE_PIXELS = MAX_PIXELS // 2
    try:
        if isinstance(source, bytes | bytearray | memoryview):
            source = io.BytesIO(source)
        elif not stat.S_ISREG(os.stat(source).st_mode):  # a FIFO would block the read, a device never end it
            raise ImageError("not a regular file")
        with _quiet_pillow(), Image.open(source) as im:
            im.seek(0)  # first frame of an animation
            _check_not_too_narrow(im.height, im.width)
            if max(im.size) > 2 * WORK_SIDE:
                # A JPEG decodes at 1/2, 1/4 or 1/8 scale for much less work; ask for the
                # smallest that keeps the longer side at 3/4 of WORK_SIDE or more.
                r = 0.75 * WORK_SIDE / max(im.size)
                im.draft("RGB" if im.mode not in ("L", "I;16") else im.mode, (im.width * r, im.height * r))
            with gate(im.width * im.height) if gate is not None else contextlib.nullcontext():
                return _decoded(im)
    except Image.DecompressionBombError:
        raise ImageError(f"image too large (more than {MAX_PIXELS:,} pixels)") from None
    except UnidentifiedImageError:
        raise ImageError("not an image Pillow can read") from None
    except (OSError, SyntaxError, ValueError) as e:
        raise ImageError(f"cannot read image ({e})") from None


def _decoded(im) -> tuple[np.ndarray, np.ndarray | None]:
    """An opened Pillow image's pixels as read_image gives them."""
    from PIL import ImageFilter, ImageOps

    im.load()
    im = _two_colours_flattened(im)
    if _dithered(im):
        # A dithered scan draws grey as scattered dots, which measure as strokes a pixel wide: a
        # box blur gives each place back the grey its dots stand for.
        im = im.convert("L" if im.mode in ("1", "L", "P") else "RGB")
        im = im.filter(ImageFilter.BoxBlur(DITHER_BLUR))
    unsigned = _unsigned_32bit(im)
    # Phones store the sensor's pixels and an Orientation tag saying how to turn them.
    im = ImageOps.exif_transpose(im, in_place=False) if _oriented(im) else im
    return _to_arrays(im, unsigned)


def _dithered(im) -> bool:
    """Whether an 8-bit image of at least DITHER_MIN_SIDE px is dithered: exactly two colours
    (a 1-bit scan), and at least DITHERED of its pixels differ from all four of their neighbours,
    as scattered dots do. A thresholded drawing's strokes are solid, and a one-pixel line's
    pixels have neighbours of their own colour (or, on a diagonal, are a thin chain, far fewer)."""
    if max(im.size) < DITHER_MIN_SIDE or im.mode not in ("1", "L", "P", "RGB"):
        return False
    colours = im.getcolors(2)  # None when there are more than 2
    if colours is None or len(colours) != 2:
        return False
    b = np.asarray(im.convert("L")) > 127
    inner = b[1:-1, 1:-1]
    lonely = (inner != b[:-2, 1:-1]) & (inner != b[2:, 1:-1]) & (inner != b[1:-1, :-2]) & (inner != b[1:-1, 2:])
    return bool(lonely.mean() >= DITHERED)


def _two_colours_flattened(im):
    """An image of exactly two colours with transparency (a dithered scan saved as RGBA, LA or a
    transparent GIF) composited as `composite` would, onto the background that contrasts with its
    ink: the same two colours, opaque, "L" if grey, else "RGB", so that _dithered sees them. Any
    other image as it is."""
    transparent = im.mode in ("RGBA", "LA", "PA") or im.mode == "P" and "transparency" in im.info
    if not transparent or max(im.size) < DITHER_MIN_SIDE:
        return im
    colours = im.getcolors(2)
    if colours is None or len(colours) != 2:
        return im
    from PIL import Image

    rgba = _unit_float(im.convert("RGBA"))
    flat = np.round(composite(rgba[..., :3], rgba[..., 3]) * 255).astype(np.uint8)
    grey = (flat[..., 0] == flat[..., 1]).all() and (flat[..., 1] == flat[..., 2]).all()
    return Image.fromarray(flat[..., 0] if grey else flat)


def _check_not_too_narrow(H: int, W: int) -> None:
    """ImageError if an image (H, W) is thinner than a block of its view (VIEW_SIDE blocks along its
    longer side): a strip, more than 128 times longer than wide, not a page with a digit on it.
    Checked from a file's header, before decoding, and again for arrays given to prepare."""
    if min(H, W) < -(-max(H, W) // VIEW_SIDE):
        raise ImageError(f"no digit found (the image is {W}×{H} px: too narrow to hold a digit)")


def _oriented(im) -> bool:
    """Whether the image's EXIF Orientation asks for it to be turned (exif_transpose copies the
    pixels even when it does not)."""
    try:
        return im.getexif().get(0x0112, 1) not in (1, None)
    except Exception:  # noqa: BLE001 -- a corrupt EXIF block: the pixels are read as they are stored
        return False


def _unsigned_32bit(im) -> bool:
    """Whether a 32-bit integer TIFF holds unsigned samples, which Pillow hands over as int32
    (values from 2**31 up come out negative)."""
    tags = getattr(im, "tag_v2", None)
    if im.mode != "I" or tags is None:
        return False
    fmt = tags.get(339, 1)  # SampleFormat: 1 unsigned (the default), 2 signed
    bits = tags.get(258, 8)
    fmt = fmt[0] if isinstance(fmt, tuple) else fmt
    bits = bits[0] if isinstance(bits, tuple) else bits
    return fmt == 1 and bits == 32


def _to_arrays(im, unsigned_32bit: bool = False) -> tuple[np.ndarray, np.ndarray | None]:
    """A loaded Pillow image -> (colour (H, W, C) float32 in [0, 1], alpha or None), size ≤ ~WORK_SIDE."""

    if max(im.size) > 1.5 * WORK_SIDE:
        factor = round(max(im.size) / WORK_SIDE)
        if im.mode in ("P", "1"):
            im = im.convert("RGBA")
        elif im.mode.startswith("I;16"):  # reduce() knows 32-bit integers, not 16-bit ones
            im = im.convert("I")
        im = im.reduce(factor)
    if im.mode.startswith("I"):
        a = np.asarray(im)
        a = a.view(np.uint32) if unsigned_32bit and a.dtype == np.int32 else a
        return _integer_scale(a)[..., None], None
    if im.mode == "F":
        a = np.asarray(im, dtype=np.float32)
        finite = np.isfinite(a)
        if not finite.any():
            raise ValueError("no pixel holds a finite value")
        if not finite.all():  # NaN or ±inf samples: the nearest end of the finite values
            a = np.where(finite, a, np.where(a > 0, a[finite].max(), a[finite].min())).astype(np.float32)
        lo, hi = float(a.min()), float(a.max())
        if lo < 0 or hi > 1:  # floats outside [0, 1]: no white point is known, so stretch (in float64:
            a = ((a.astype(np.float64) - lo) / max(hi - lo, 1e-12)).astype(np.float32)  # float32 overflows at ±3.4e38)
        return a[..., None], None
    if im.mode == "P" and "transparency" in im.info or im.mode in ("PA", "La"):
        im = im.convert("RGBA")
    elif im.mode == "P":
        im = im.convert("RGB")
    if im.mode in ("RGBA", "LA"):  # Pillow parts colour and alpha in a fraction of NumPy's time
        colour = _unit_float(im.convert(im.mode[:-1]))
        return (colour if colour.ndim == 3 else colour[..., None]), _unit_float(im.getchannel("A"))
    if im.mode == "RGBa":
        a = _unit_float(im)
        return np.ascontiguousarray(a[..., :-1]), np.ascontiguousarray(a[..., -1])
    if im.mode not in ("L", "RGB"):
        im = im.convert("RGB")  # CMYK, YCbCr, 1, LAB, HSV ...
    a = _unit_float(im)
    return (a if a.ndim == 3 else a[..., None]), None


def _unit_float(im) -> np.ndarray:
    """An 8-bit Pillow image as float32 in [0, 1], (H, W) or (H, W, bands), in one pass over the
    pixels (np.asarray(im, dtype=float32) / 255 takes ~6× the time)."""
    return np.multiply(np.asarray(im), np.float32(1 / 255), dtype=np.float32)


def _integer_scale(a: np.ndarray) -> np.ndarray:
    """Integer samples (H, W) -> float32 in [0, 1], white being the top of the smallest 2**n − 1 range
    (n ≥ 8) that holds them: 255 for 8-bit data in a wide container, 4095 for a 12-bit scan, 65535
    for 16-bit, 2**32 − 1 for 32-bit. Signed samples below zero are shifted up first."""
    lo, hi = int(a.min()), int(a.max())
    shift = min(lo, 0)  # signed samples below zero: shifted up
    top = 2.0 ** max(8, int(np.ceil(np.log2(hi - shift + 1)))) - 1
    if shift:
        a = np.subtract(a, shift, dtype=np.float64)
    return np.multiply(a, np.float32(1 / top), dtype=np.float32)


def composite(colour: np.ndarray, alpha: np.ndarray | None) -> np.ndarray:
    """Flatten transparency onto a background that contrasts with the visible ink. (H,W,C) -> (H,W,C).

    Dark strokes on a transparent background go onto white, light strokes onto black.
    """
    if alpha is None or alpha.min() >= 1.0:
        return colour
    C = colour.shape[-1]
    # The visible ink's mean level: Σ alpha·colour over Σ alpha, as one product (alpha (n,) by (n, C)).
    ink_level = float((alpha.reshape(-1) @ colour.reshape(-1, C)).sum() / max(float(alpha.sum()) * C, 1e-12))
    # alpha repeated per channel: a product broadcast over C would run C elements at a time.
    a = np.repeat(alpha[..., None], C, axis=2) if C > 1 else alpha[..., None]
    if ink_level >= 0.5:  # light strokes onto black: colour·alpha
        return colour * a
    out = colour - np.float32(1.0)  # dark strokes onto white: 1 + (colour − 1)·alpha
    out *= a
    out += np.float32(1.0)
    return out


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


def _median_1d(v: np.ndarray, in_place: bool = False) -> float:
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
    med = _median_1d(values)
    deviations = np.subtract(values, med)
    return med, 1.4826 * _median_1d(np.abs(deviations, out=deviations), in_place=True)


def robust_upper(values: np.ndarray, k: float) -> float:
    """median + k·σ̂ (see robust_sigma)."""
    med, sigma = robust_sigma(values)
    return med + k * sigma


def otsu(values: np.ndarray, bins: int = 128) -> float:
    """The threshold that best separates values (n,) into two classes (Otsu: the largest
    between-class variance). Values above it form the upper class."""
    lo, hi = float(values.min()), float(values.max())
    hist, edges = _histogram(values, bins, lo, hi)
    p = hist / max(len(values), 1)  # every value is counted
    centres = (edges[:-1] + edges[1:]) / 2
    share = p * centres
    w0 = p.cumsum()[:-1]
    m0 = share.cumsum()[:-1]
    total = float(share.sum())
    with np.errstate(divide="ignore", invalid="ignore"):
        between = (total * w0 - m0) ** 2 / (w0 * (1 - w0))
    return float(edges[1 + int(np.nanargmax(between))]) if np.isfinite(between).any() else hi


def _histogram(values: np.ndarray, bins: int, lo: float, hi: float) -> tuple[np.ndarray, np.ndarray]:
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
    _check_not_too_narrow(H, W)
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
        raise ImageError("no digit found (blank: a single flat colour)")
    upper = resid > otsu(resid)
    dark_is_ink = _dark_is_ink(upper.reshape(h, w), resid.reshape(h, w))
    paper = upper if dark_is_ink else ~upper
    if paper.all() or not paper.any():
        raise ImageError("no digit found (blank: no second population of pixels)")
    # The paper's colour per channel, fitted once, on the paper class away from the ink's
    # anti-aliased edges; its brightness (the same plane, along the axis) then refines the classes.
    inner = _erode(paper.reshape(h, w)).ravel()
    coef = fit_paper(At, channels, inner if inner.sum() >= 3 else paper)
    resid = bright - (coef @ axis) @ At
    upper = resid > otsu(resid)
    paper = upper if dark_is_ink else ~upper
    if paper.all() or not paper.any():
        raise ImageError("no digit found (blank: no second population of pixels)")
    inner = _erode(paper.reshape(h, w)).ravel()
    step = channels - coef.T @ At  # (C, n): each pixel's difference from the paper under it
    ink_points = _thin_out(np.flatnonzero(~paper))
    direction = median(step[:, ink_points], axis=1)
    norm = float(np.linalg.norm(direction))
    if norm < 1e-9:
        raise ImageError("no digit found (blank: ink and paper have the same colour)")
    direction /= norm
    along = direction @ step  # signed step towards the ink, per view pixel
    ink_level = _median_1d(along[ink_points])
    # The paper's noise away from the ink: near it, anti-aliased edges would count as noise.
    _, paper_sigma = robust_sigma(_thin_out(along[inner] if inner.sum() >= 16 else along[paper]))
    contrast = ink_level / np.sqrt(C)
    if contrast < MIN_CONTRAST:
        raise ImageError(
            f"no digit found (blank: ink and paper differ by {contrast:.3f}; a digit needs {MIN_CONTRAST})"
        )
    if contrast < NOISE_CONTRAST and ink_level < MIN_CONTRAST_SIGMAS * paper_sigma:
        raise ImageError(
            f"no digit found (blank: ink and paper differ by {contrast:.3f}, only {ink_level / paper_sigma:.1f} σ "
            f"of the paper's noise; a digit needs {MIN_CONTRAST_SIGMAS:g} σ)"
        )

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


def _erode(mask: np.ndarray) -> np.ndarray:
    """Pixels of mask (h, w) whose 8 neighbours are all in it too (outside counts as in): a 3×3
    square, as a row of 3 then a column of 3."""
    rows = mask.copy()
    rows[:, 1:] &= mask[:, :-1]
    rows[:, :-1] &= mask[:, 1:]
    out = rows.copy()
    out[1:] &= rows[:-1]
    out[:-1] &= rows[1:]
    return out


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
    labels, n, (rs, cs, ce, ids) = _label_runs(mask)
    if n == 0:
        return 0.0
    h, w = mask.shape
    edge = np.zeros(n + 1, bool)
    edge[np.unique(ids[(rs == 0) | (rs == h - 1) | (cs == 0) | (ce == w)])] = True
    return float(np.count_nonzero(~edge[labels] & mask) / mask.size)


def label(mask: np.ndarray) -> tuple[np.ndarray, int]:
    """8-connected components of mask (h, w) bool -> (labels (h, w) int32, 0 outside; count),
    numbered in the order of each component's first pixel (row-major).

    Runs of set pixels in each row are joined to the runs they touch in the row above: the pairs
    are found for all rows at once (two sorted searches), then joined by repeated hooking of each
    run to the smallest run index it is connected to, with pointer jumping, until nothing changes.
    """
    labels, count, _ = _label_runs(mask)
    return labels, count


def _label_runs(mask: np.ndarray) -> tuple[np.ndarray, int, tuple[np.ndarray, ...]]:
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
    labels, n, (rs, cs, ce, ids) = _label_runs(marks)
    if n == 0:
        raise ImageError("no digit found (blank: no mark reaches half the ink's level)")
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
            "crop the image to one digit)"
        )
    mine = labels[b0:b1, d0:d1] > 0
    if not every_mark:
        mine &= kept[labels[b0:b1, d0:d1] - 1]
    several = _several_marks(mine, mass[b0:b1, d0:d1])
    if several:
        raise ImageError(f"no digit found (several marks: {several}; crop the image to one digit)")
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


def _several_marks(mask: np.ndarray, mass: np.ndarray) -> str:
    """Why the marks kept for a digit (mask (h, w) bool on the view, cropped to their box; their
    ink per pixel, mass (h, w)) hold more than one digit, or "". The ink is split into bands by
    its projection on each axis; a digit's broken strokes overlap (the bar of a 5 lies above its
    body, a 4's crossbar reaches its stroke), are small, or are close. It is several digits when,
    - side by side, two bands or more each span DIGIT_SIZED of the box's height and hold
      DIGIT_INK of its ink, with a gap of blank columns at least SIDE_APART of the box's height
      and MIN_GAP_PX wide ("7 2");
    - one above another, two such bands span DIGIT_SIZED of its width and 0.3 of its height,
      STACKED_APART of the taller one's height apart (a 7 over a 2), or two or more are lines:
      half its width, LINE_RATIO times as wide as tall, each with a twentieth of its ink,
      LINES_APART of a line's height apart (text).
    """
    height, width = mask.shape
    ink = np.where(mask, mass, 0.0)
    total = float(ink.sum())
    bands = _bands(ink.sum(0), SIDE_LEVEL)  # digits side by side have blank columns between them
    sized = [
        (a, b) for a, b in bands
        if _extent(mask[:, a:b])[1] >= DIGIT_SIZED * height and ink[:, a:b].sum() >= DIGIT_INK * total
    ]  # fmt: skip
    if len(sized) >= 2 and _widest_gap(bands, sized) >= max(MIN_GAP_PX, SIDE_APART * height):
        return f"{len(sized)} groups of ink side by side, each the size of a digit"
    bands = _bands(ink.sum(1))
    if len(bands) < 2:
        return ""
    spans = [((a, b), b - a, _extent(mask[a:b])[0], float(ink[a:b].sum())) for a, b in bands]
    lines = [band for band, h, w, m in spans
             if w >= DIGIT_SIZED * width and w >= LINE_RATIO * h and m >= DIGIT_INK / 4 * total]  # fmt: skip
    if len(lines) >= 2 and _widest_gap(bands, lines) >= LINES_APART * float(np.median([b - a for a, b in lines])):
        return f"{len(lines)} lines of ink one above another"
    # One above another, a digit is STACKED_TALL of the tallest group's height with STACKED_INK of the
    # ink, and half the box's width or a narrow digit's shape (a 1: ONE_TALL times as tall as wide).
    tallest = max(h for band, h, w, m in spans)
    stacked = [
        band
        for band, h, w, m in spans
        if h >= STACKED_TALL * tallest and m >= STACKED_INK * total and (w >= DIGIT_SIZED * width or h >= ONE_TALL * w)
    ]
    if len(stacked) >= 2 and _widest_gap(bands, stacked) >= STACKED_APART * max(b - a for a, b in stacked):
        return f"{len(stacked)} groups of ink one above another, each the size of a digit"
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
    sw, sh = _extent(strokes)
    lw, lh = _extent(largest)
    if max(sh, sw) < MIN_EXTENT_PX or max(lh, lw) < MIN_EXTENT_FRACTION * side:
        raise ImageError(
            f"no digit found (a speck: the largest mark spans {lw}×{lh} px, under 1/20 of the image's {side} px)"
            if max(sh, sw) >= MIN_EXTENT_PX
            else f"no digit found (a speck: the ink spans {sw}×{sh} px, under {MIN_EXTENT_PX} px)"
        )
    h, w = cover.shape
    extent = max(h, w)
    # Both measured as MNIST's digits were: at the 20-px scale.
    at20 = np.clip(_resize(cover, (max(1, round(w * BOX / extent)), max(1, round(h * BOX / extent)))), 0, 1)
    half = 0.5 * float(cover.max())
    width = _mask_stroke_width(strokes if half == 0.5 else cover >= half) * BOX / extent
    if width < MIN_STROKE_AT_20:
        raise ImageError(
            f"no digit found (too thin: its strokes are {width:.2f} px wide at MNIST's 20-px scale, "
            f"a digit's at least {MIN_STROKE_AT_20:g}; MNIST's thinnest are 0.71)"
        )
    mask20 = at20 >= 0.5
    solid, filled = _solid_fraction(mask20, BOX), np.count_nonzero(mask20) / mask20.size
    if solid > MAX_SOLID and filled > MAX_FILLED:
        raise ImageError(
            f"no digit found (a blot: it fills {filled:.0%} of its box and {solid:.0%} of its ink lies deeper "
            f"inside it than 1/6 of its size; a digit's strokes leave room)"
        )
    if w > MAX_WIDTH_OVER_HEIGHT * h:
        raise ImageError(f"no digit found (a line: the ink is {w / h:.1f}× wider than tall, a digit at most 2×)")


def _extent(mask: np.ndarray) -> tuple[int, int]:
    """(width, height) in px of the bounding box of mask (h, w); (0, 0) when it is empty."""
    if not mask.any():
        return 0, 0
    rows, cols = np.flatnonzero(mask.any(1)), np.flatnonzero(mask.any(0))
    return int(cols[-1] - cols[0]) + 1, int(rows[-1] - rows[0]) + 1


def _solid_fraction(mask: np.ndarray, extent: int) -> float:
    """Fraction of mask (h, w) that survives erosion by a square of side extent/3 (+1): the pixels
    deeper inside the ink than a sixth of the mark's size. -> float in [0, 1]."""
    r = max(1, round(extent / 6))
    if mask.sum() == 0 or min(mask.shape) <= 2 * r:
        return 0.0
    inside = box_blur(mask.astype(np.float32), r) > 1 - 1e-4
    return float(inside.sum() / mask.sum())


def centre_in_field(box: np.ndarray) -> np.ndarray:
    """Paste a digit (h, w ≤ 28) into a 28×28 field with its centre of mass at (14, 14). -> (28, 28)."""
    h, w = box.shape
    mass = box.sum()
    com_r = (box.sum(1) * np.arange(h)).sum() / mass
    com_c = (box.sum(0) * np.arange(w)).sum() / mass
    top = min(max(round(CENTRE - com_r), 0), FIELD - h)
    left = min(max(round(CENTRE - com_c), 0), FIELD - w)
    field = np.zeros((FIELD, FIELD), np.float32)
    field[top : top + h, left : left + w] = box
    return field


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
    return _mask_stroke_width(digit >= 0.5 * float(digit.max()))


def _mask_stroke_width(ink: np.ndarray) -> float:
    """stroke_width of the ink mask (h, w) bool: 2·area / perimeter."""
    count = np.count_nonzero
    perimeter = count(ink[1:] != ink[:-1]) + count(ink[:, 1:] != ink[:, :-1])
    perimeter += count(ink[0]) + count(ink[-1]) + count(ink[:, 0]) + count(ink[:, -1])
    return 2.0 * count(ink) / max(perimeter, 1)


def _resize(a: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """(h, w) float32 -> size (w', h'): area averaging when shrinking (anti-aliased, as MNIST
    was made); bicubic when enlarging a small image, so it comes out smooth, not as blocks."""
    from PIL import Image

    if size == (a.shape[1], a.shape[0]):
        return a
    resample = Image.Resampling.BOX if size[0] < a.shape[1] else Image.Resampling.BICUBIC
    return np.asarray(Image.fromarray(np.ascontiguousarray(a, np.float32), "F").resize(size, resample))


def normalise_digit(crop: np.ndarray) -> np.ndarray:
    """The ink of a digit's box (h, w) in [0, 1], scaled so its longer side is 20 px and centred
    by mass in 28×28.

    Strokes bolder than nearly all of MNIST's (a fat brush on a small canvas: wider than
    MAX_STROKE px at the 20-px scale, as 1.8% of MNIST's digits are) are thinned to
    STROKE_TARGET px by an erosion at four times the output's resolution; an image already at
    that scale (MNIST form) is left as it is. -> (28, 28) uint8, light ink on black, max 255.
    """
    h, w = crop.shape
    s = BOX / max(h, w)
    size = (max(1, round(w * s)), max(1, round(h * s)))
    small = np.maximum(_resize(crop, size), 0.0)
    width = stroke_width(small)
    if width > MAX_STROKE and size != (w, h):
        from PIL import Image, ImageFilter

        fine = Image.fromarray(np.maximum(_resize(crop, (4 * size[0], 4 * size[1])), 0.0), "F")
        r = round((width - STROKE_TARGET) / 2 * 4)
        thinned = fine.filter(ImageFilter.MinFilter(2 * r + 1)) if r > 0 else fine
        small = np.maximum(np.asarray(thinned.resize(size, Image.Resampling.BOX)), 0.0)
    small = small / max(float(small.max()), 1e-12)
    return np.round(centre_in_field(small) * 255).astype(np.uint8)


def prepare(colour: np.ndarray, alpha: np.ndarray | None) -> Prepared:
    """Pixels of one image (see read_image) -> its digit in MNIST form, or ImageError without a path.
    colour (H, W, C) and alpha (H, W) must be finite (ValueError naming the argument otherwise)."""
    for name, a in (("colour", colour), ("alpha", alpha)):
        if a is not None and not np.isfinite(a).all():
            raise ValueError(f"{name} holds NaN or infinite values; pixels must be finite, in [0, 1]")
    inkmap = ink_map(composite(colour, alpha))
    box = digit_box(inkmap)
    return Prepared(normalise_digit(inkmap.ink(box)), inkmap.inverted, inkmap.background, box, colour.shape[:2])


def to_mnist(path: str | Path) -> Prepared:
    """An image file -> the 28×28 uint8 digit the model sees, plus what was detected about it."""
    colour, alpha = read_image(path)
    try:
        return prepare(colour, alpha)
    except ImageError as e:
        raise ImageError(f"{path}: {e}") from None


def _to_mnist_or_error(path: str | Path) -> Prepared | ImageError:
    try:
        return to_mnist(path)
    except ImageError as e:
        return e
    except (ArithmeticError, LookupError, ValueError, MemoryError) as e:  # pixels no rule above foresaw
        return ImageError(f"{path}: cannot read this image ({type(e).__name__}: {e})")


@functools.cache
def _blas():
    """This process's BLAS thread pools, found once (a ThreadpoolController's limits cost
    microseconds; finding the libraries, milliseconds)."""
    from threadpoolctl import ThreadpoolController

    return ThreadpoolController()


def _worker_init() -> None:
    """A worker process: one BLAS thread (the workers are one per CPU already: a BLAS pool in each,
    busy-waiting between its small products, made two workers slower than one process), and
    Ctrl-C and SIGTERM left to the parent, which stops the pool (a worker neither prints a
    traceback for them nor runs the parent's SIGTERM handler)."""
    import gc
    import signal

    from threadpoolctl import threadpool_limits

    # The objects inherited from the parent are left out of this process's garbage collections:
    # a collection that walked them would write to their pages and so copy every one of them.
    gc.freeze()
    threadpool_limits(1)  # for the life of the process
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)


def to_mnist_many(
    paths: Iterable[str | Path], workers: int | None = None, executor: str = "processes"
) -> Iterator[Prepared | ImageError]:
    """to_mnist for each path, in input order, yielding its Prepared or the ImageError it raised.

    Reads and normalises on `workers` (default: the CPUs this process may use) worker processes,
    or threads with executor="threads". One image, or workers=1, runs here and starts nothing, so
    a one-image `predict` pays no pool start-up. A worker process that dies (killed, or crashed by
    a file) costs nothing already done: the first image not yet read is read again by a process of
    its own (an ImageError naming the signal if that one dies too), then a new pool takes the rest.
    In this process, each image is read with BLAS held to one thread, a process-wide setting given
    back before the image is yielded: two threads reading here at once may leave it at one.
    """
    paths = list(paths)
    if workers is None:
        workers = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    workers = min(workers, len(paths))
    if workers <= 1:
        for path in paths:
            # BLAS's own threads only spin beside products this small: they would take a second
            # core for nothing (the pool's workers are limited to one thread likewise).
            with _blas().limit(limits=1, user_api="blas"):
                result = _to_mnist_or_error(path)
            yield result
        return
    from concurrent.futures.process import BrokenProcessPool

    pending = paths
    while pending:
        pool = _pool(executor, min(workers, len(pending)))
        done = 0
        try:
            # Chunks of a few images amortise the hand-over to a process; results keep input order.
            chunk = max(1, min(16, len(pending) // (4 * workers)))
            for result in pool.map(_to_mnist_or_error, pending, chunksize=chunk):
                done += 1
                yield result
            pending = []
        except BrokenProcessPool:
            pending = pending[done:]
            yield _alone(pending[0])
            pending = pending[1:]
        finally:  # a reader that stops early (`| head -1`, Ctrl-C) does not wait for the images not yet begun
            pool.shutdown(wait=True, cancel_futures=True)


def _alone(path: str | Path) -> Prepared | ImageError:
    """_to_mnist_or_error of one image in a worker process of its own: an ImageError saying how
    that process ended if it dies (a crash such as SIGSEGV is the file's doing; SIGKILL may be
    the out-of-memory killer or someone outside, and the message says which signal it was)."""
    ctx = _fork_context()
    reader, writer = ctx.Pipe(duplex=False)
    proc = ctx.Process(target=_read_into, args=(path, writer), daemon=True)
    proc.start()
    writer.close()
    try:
        return reader.recv()
    except EOFError:
        proc.join()
        code = proc.exitcode
        how = f"killed by {_signal_name(-code)}" if code < 0 else f"it exited with status {code}"
        return ImageError(f"{path}: a worker process died while reading this image ({how})")
    finally:
        reader.close()
        if proc.is_alive():  # Ctrl-C while it reads
            proc.kill()
        proc.join()


def _signal_name(number: int) -> str:
    import signal

    try:
        return signal.Signals(number).name
    except ValueError:  # a real-time signal
        return f"signal {number}"


def _read_into(path: str | Path, connection) -> None:
    """A worker process of _alone: read one image and send the result back."""
    _worker_init()
    connection.send(_to_mnist_or_error(path))
    connection.close()


def _pool(executor: str, workers: int):
    """A pool of `workers` threads, or of processes started by fork (in milliseconds, with NumPy and
    Pillow already imported) where the platform has it."""
    import concurrent.futures as cf

    if executor == "threads":
        return cf.ThreadPoolExecutor(workers)
    return cf.ProcessPoolExecutor(workers, mp_context=_fork_context(), initializer=_worker_init)


def _fork_context():
    """Processes started by fork where the platform has it (in milliseconds, with NumPy and Pillow
    already imported); the platform's default elsewhere."""
    import multiprocessing as mp

    return mp.get_context("fork" if "fork" in mp.get_all_start_methods() else None)


def image_files(paths: list[Path]) -> list[Path]:
    """Expand folders into their image files (sorted, by suffix); files are kept as given."""
    out = []
    for p in paths:
        if p.is_dir():
            out.extend(sorted(f for f in p.iterdir() if f.suffix.lower() in IMAGE_SUFFIXES and f.is_file()))
        else:
            out.append(p)
    return out
