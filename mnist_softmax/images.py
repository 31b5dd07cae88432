"""A user's image file -> a 28×28 uint8 digit in MNIST form, the way MNIST itself was made.

MNIST digits are light ink on a black background, scaled so the longer side of the ink's bounding
box is 20 px (anti-aliased), and placed in a 28×28 field with the ink's centre of mass at the centre
(row 14, column 14 on average over the real test set). `to_mnist` reproduces that form:

1. read with Pillow (PNG/JPEG/BMP/GIF/TIFF/WebP, 8- or 16-bit, grey/RGB/palette/CMYK; first frame),
   compositing any transparency onto a background that contrasts with the ink;
2. model the paper as a smooth plane per channel, fitted robustly (ink pixels are outliers), which
   also takes out uneven light across a photographed page;
3. ink = distance of each pixel from the local paper colour, so dark-on-light and light-on-dark both
   come out light-on-dark (the polarity), whatever the ink and paper colours;
4. remove the background level: subtract the noise floor (median + 6 robust σ of the ink), rescale to 1;
5. crop to the ink's bounding box, scale the longer side to 20 px keeping the aspect ratio (area
   averaging when shrinking, so anti-aliased), paste into 28×28 so the centre of mass sits at (14, 14).

A digit already in MNIST form comes through with the same pixels up to a one-pixel recentring.
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import NamedTuple

import numpy as np

from .errors import MnistSoftmaxError

MAX_PIXELS = 50_000_000  # larger images are refused before decoding (decompression bombs)
WORK_SIDE = 1024  # larger images are reduced to about this before the pixel work
IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".pgm", ".ppm"}
BOX, FIELD, CENTRE = 20, 28, 14.0


class ImageError(MnistSoftmaxError):
    """An image that cannot be read or holds no digit."""


class Prepared(NamedTuple):
    digit: np.ndarray  # (28, 28) uint8 in MNIST form
    inverted: bool  # True when the ink was darker than the background
    background: tuple[float, ...]  # per-channel background level in [0, 1]


def read_image(path: str | Path) -> tuple[np.ndarray, np.ndarray | None]:
    """(colour (H, W, C) float32 in [0, 1], alpha (H, W) in [0, 1] or None) of an image file's first frame."""
    from PIL import Image, UnidentifiedImageError

    Image.MAX_IMAGE_PIXELS = MAX_PIXELS
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(path) as im:
                im.seek(0)  # first frame of an animation
                if im.width * im.height > MAX_PIXELS:
                    raise ImageError(f"{path}: image too large ({im.width}×{im.height})")
                if max(im.size) > 2 * WORK_SIDE:
                    im.draft("RGB" if im.mode not in ("L", "I;16") else im.mode, (WORK_SIDE, WORK_SIDE))
                im.load()
                return _to_arrays(im)
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise ImageError(f"{path}: image too large (more than {MAX_PIXELS:,} pixels)") from None
    except UnidentifiedImageError:
        raise ImageError(f"{path}: not an image Pillow can read") from None
    except (OSError, SyntaxError, ValueError) as e:
        raise ImageError(f"{path}: cannot read image ({e})") from None


def _to_arrays(im) -> tuple[np.ndarray, np.ndarray | None]:
    """A loaded Pillow image -> (colour (H, W, C) float32 in [0, 1], alpha or None), size ≤ ~WORK_SIDE."""

    if max(im.size) > WORK_SIDE:
        factor = max(1, max(im.size) // WORK_SIDE)
        im = im.reduce(factor) if im.mode not in ("P", "1") else im.convert("RGBA").reduce(factor)
    if im.mode in ("I;16", "I;16B", "I;16L", "I"):
        a = np.asarray(im, dtype=np.float32)
        return (a / (65535.0 if a.max() > 255 else 255.0))[..., None], None
    if im.mode == "F":
        a = np.asarray(im, dtype=np.float32)
        return (a / max(float(a.max()), 1e-12))[..., None], None
    if im.mode == "P" and "transparency" in im.info or im.mode in ("PA", "La"):
        im = im.convert("RGBA")
    elif im.mode == "P":
        im = im.convert("RGB")
    if im.mode in ("RGBA", "LA", "RGBa"):
        a = np.asarray(im, dtype=np.float32) / 255.0
        return a[..., :-1], a[..., -1]
    if im.mode not in ("L", "RGB"):
        im = im.convert("RGB")  # CMYK, YCbCr, 1, LAB, HSV ...
    a = np.asarray(im, dtype=np.float32) / 255.0
    return (a if a.ndim == 3 else a[..., None]), None


def composite(colour: np.ndarray, alpha: np.ndarray | None) -> np.ndarray:
    """Flatten transparency onto a background that contrasts with the visible ink. (H,W,C) -> (H,W,C).

    Dark strokes on a transparent background go onto white, light strokes onto black.
    """
    if alpha is None or alpha.min() >= 1.0:
        return colour
    a = alpha[..., None]
    ink_level = float((colour * a).sum() / max(a.sum() * colour.shape[-1], 1e-12))
    background = 1.0 if ink_level < 0.5 else 0.0
    return colour * a + background * (1.0 - a)


def paper(colour: np.ndarray) -> np.ndarray:
    """The background as a plane a + b·row + c·col per channel, fitted robustly. (H,W,C) -> (H,W,C).

    A plane models the uneven light across a photographed page. Ink is a minority of pixels, so
    it is left out by refitting on the pixels that lie close to the previous fit.
    """
    H, W, C = colour.shape
    step = max(1, max(H, W) // 96)
    rows, cols = np.mgrid[0:H:step, 0:W:step]
    A = np.stack([np.ones(rows.size), rows.ravel() / H, cols.ravel() / W], axis=1)
    values = colour[::step, ::step].reshape(-1, C).astype(np.float64)
    keep = np.ones(len(A), bool)
    for _ in range(3):
        coef = np.linalg.lstsq(A[keep], values[keep], rcond=None)[0]
        resid = np.sqrt(((values - A @ coef) ** 2).sum(1))
        keep = resid <= robust_upper(resid, 3.0)
    r = np.arange(H, dtype=np.float32)[:, None, None] / H
    c = np.arange(W, dtype=np.float32)[None, :, None] / W
    coef = coef.astype(np.float32)
    return np.clip(coef[0] + r * coef[1] + c * coef[2], 0.0, 1.0)


def ink_map(colour: np.ndarray) -> tuple[np.ndarray, tuple[float, ...], bool]:
    """(ink (H, W) in [0, 1], mean background colour, inverted) from a composited image (H, W, C).

    Ink is the distance of each pixel from the local paper colour, scaled by the largest distance
    possible from that colour, so paper is 0 and full-contrast ink is 1, for either polarity.
    """
    bg = paper(colour)
    dist = np.sqrt(((colour - bg) ** 2).sum(-1))
    reach = np.sqrt((np.maximum(bg, 1.0 - bg) ** 2).sum(-1))
    mean_bg = bg.reshape(-1, bg.shape[-1]).mean(0)
    return dist / reach, tuple(float(v) for v in mean_bg), float(mean_bg.mean()) > 0.5


def robust_upper(values: np.ndarray, k: float) -> float:
    """median + k·σ̂, with σ̂ = 1.4826·MAD (the standard deviation, were the values normal);
    unlike mean + k·std, the few large values (ink) barely move it."""
    med = float(np.median(values))
    return med + k * 1.4826 * float(np.median(np.abs(values - med)))


def clean_ink(ink: np.ndarray) -> np.ndarray:
    """Remove the background level: below median + 6·σ̂ (robust_upper) is paper, the brightest
    ink becomes 1."""
    floor = robust_upper(ink, 6.0)
    peak = float(ink.max())
    if peak - floor < 0.1:
        raise ImageError("no ink found (blank image, or too little contrast)")
    return np.clip((ink - floor) / (peak - floor), 0.0, 1.0)


def centre_in_field(box: np.ndarray) -> np.ndarray:
    """Paste a digit (h, w ≤ 28) into a 28×28 field with its centre of mass at (14, 14). -> (28, 28)."""
    h, w = box.shape
    mass = box.sum()
    com_r = (box.sum(1) * np.arange(h)).sum() / mass
    com_c = (box.sum(0) * np.arange(w)).sum() / mass
    top = int(np.clip(round(CENTRE - com_r), 0, FIELD - h))
    left = int(np.clip(round(CENTRE - com_c), 0, FIELD - w))
    field = np.zeros((FIELD, FIELD), np.float32)
    field[top : top + h, left : left + w] = box
    return field


def box_blur(a: np.ndarray, r: int) -> np.ndarray:
    """Mean over a (2r+1)×(2r+1) window (zero outside). (H, W) -> (H, W)."""
    k = 2 * r + 1
    c = np.pad(a, ((r + 1, r), (r + 1, r))).cumsum(0).cumsum(1)
    return (c[k:, k:] - c[:-k, k:] - c[k:, :-k] + c[:-k, :-k]) / (k * k)


def ink_box(ink: np.ndarray) -> tuple[int, int, int, int]:
    """Bounding box (row0, row1, col0, col1), half-open, of the ink in (H, W).

    Ink is looked at on the scale of one pixel of the 28×28 result (about 1/56 of the longer
    side): specks of noise smaller than that are averaged away before the box is found, and the
    box is then shrunk back by the smoothing radius. A 28×28 image is not smoothed at all.
    """
    r = max(ink.shape) // 56
    if r == 0:
        mask = ink > 0
    else:
        mask = box_blur(ink, r) > 0.02
        if not mask.any():
            raise ImageError("no ink found (only scattered specks)")
    rows, cols = np.flatnonzero(mask.any(1)), np.flatnonzero(mask.any(0))
    r0, r1, c0, c1 = rows[0], rows[-1] + 1, cols[0], cols[-1] + 1
    if r:
        r0, r1 = min(r0 + r, r1 - 1), max(r1 - r, r0 + r + 1)
        c0, c1 = min(c0 + r, c1 - 1), max(c1 - r, c0 + r + 1)
    return int(r0), int(r1), int(c0), int(c1)


def normalise_digit(ink: np.ndarray) -> np.ndarray:
    """Crop the ink (H, W) in [0, 1] to its bounding box, scale the longer side to 20 px, centre by mass.

    -> (28, 28) uint8, light ink on black, maximum 255.
    """
    from PIL import Image

    r0, r1, c0, c1 = ink_box(ink)
    crop = ink[r0:r1, c0:c1]
    h, w = crop.shape
    s = BOX / max(h, w)
    size = (max(1, round(w * s)), max(1, round(h * s)))
    if size != (w, h):
        # Shrinking averages each output pixel's area (anti-aliased, as MNIST was made); enlarging interpolates.
        resample = Image.Resampling.BOX if s < 1 else Image.Resampling.BILINEAR
        crop = np.asarray(Image.fromarray(crop.astype(np.float32), "F").resize(size, resample))
    crop = np.clip(crop, 0.0, None)
    crop = crop / max(float(crop.max()), 1e-12)
    return np.round(centre_in_field(crop) * 255).astype(np.uint8)


def to_mnist(path: str | Path) -> Prepared:
    """An image file -> the 28×28 uint8 digit the model sees, plus what was detected about it."""
    colour, alpha = read_image(path)
    ink, background, inverted = ink_map(composite(colour, alpha))
    try:
        digit = normalise_digit(clean_ink(ink))
    except ImageError as e:
        raise ImageError(f"{path}: {e}") from None
    return Prepared(digit, inverted, background)


def image_files(paths: list[Path]) -> list[Path]:
    """Expand folders into their image files (sorted, by suffix); files are kept as given."""
    out = []
    for p in paths:
        if p.is_dir():
            out.extend(sorted(f for f in p.iterdir() if f.suffix.lower() in IMAGE_SUFFIXES and f.is_file()))
        else:
            out.append(p)
    return out
