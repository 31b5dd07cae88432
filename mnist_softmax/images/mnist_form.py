"""Step 6, and the whole way: an image -> the 28×28 uint8 digit in MNIST form (prepare, to_mnist).

The digit's box is scaled so its longer side is BOX (20) px, keeping the aspect ratio (area
averaging when shrinking, bicubic when enlarging a small image), strokes much bolder than MNIST's
thinned, and pasted into 28×28 with its centre of mass at (14, 14).
"""

from __future__ import annotations

from pathlib import Path
from typing import NamedTuple

import numpy as np

from ..errors import ImageError
from .decode import composite, read_image
from .ink import ink_map
from .rules import BOX, CENTRE, FIELD, digit_box
from .toolkit import resize, stroke_width

MAX_STROKE, STROKE_TARGET = 3.5, 3.0  # px at the 20-px scale; MNIST: median 2.0, 98th percentile 3.5


class Prepared(NamedTuple):
    digit: np.ndarray  # (28, 28) uint8 in MNIST form
    inverted: bool  # True when the ink was darker than the background
    background: tuple[float, ...]  # per-channel background level in [0, 1]
    box: tuple[int, int, int, int] = (0, 0, 0, 0)  # the digit's box (row0, row1, col0, col1) in the upright image
    size: tuple[int, int] = (28, 28)  # (height, width) of the upright image the box is in, as read


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
    small = np.maximum(resize(crop, size), 0.0)
    width = stroke_width(small)
    if width > MAX_STROKE and size != (w, h):
        from PIL import Image, ImageFilter

        fine = Image.fromarray(np.maximum(resize(crop, (4 * size[0], 4 * size[1])), 0.0), "F")
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
        raise e.named(path) from None


def to_mnist_or_error(path: str | Path) -> Prepared | ImageError:
    try:
        return to_mnist(path)
    except ImageError as e:
        return e
    except (ArithmeticError, LookupError, ValueError, MemoryError) as e:  # pixels no rule above foresaw
        return ImageError(f"{path}: cannot read this image ({type(e).__name__}: {e})", "unreadable")
