"""A user's image file -> a 28×28 uint8 digit in MNIST form, the way MNIST itself was made.

The steps below live in the modules of this package: decode.py (1), ink.py (2–4), rules.py (5 and
the refusal rules), mnist_form.py (6, and prepare/to_mnist, the whole way); toolkit.py holds the
small image operations they share. What predict imports is re-exported here.

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

from ..errors import ImageError
from .decode import (
    IMAGE_SUFFIXES,
    MAX_PIXELS,
    check_size,
    composite,
    image_files,
    quiet_pillow_everywhere,
    read_image,
    read_pil_image,
)
from .ink import InkMap, ink_map
from .mnist_form import Prepared, centre_in_field, normalise_digit, prepare, to_mnist, to_mnist_or_error
from .rules import digit_box
from .toolkit import box_blur, label, stroke_width

__all__ = [
    "IMAGE_SUFFIXES",
    "MAX_PIXELS",
    "ImageError",
    "InkMap",
    "Prepared",
    "box_blur",
    "centre_in_field",
    "check_size",
    "composite",
    "digit_box",
    "image_files",
    "ink_map",
    "label",
    "normalise_digit",
    "prepare",
    "quiet_pillow_everywhere",
    "read_image",
    "read_pil_image",
    "stroke_width",
    "to_mnist",
    "to_mnist_or_error",
]
