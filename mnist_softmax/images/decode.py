"""Step 1 of reading an image: a file (or its bytes) -> its pixels as floats in [0, 1], upright.

Pillow reads PNG/JPEG/BMP/GIF/TIFF/WebP, 8-, 16- or 32-bit, grey/RGB/palette/CMYK (the first
frame), turned upright by its EXIF Orientation (phones store their pixels sideways). A dithered
1-bit scan (two colours, 1% of its pixels unlike all four neighbours) is read through a 5×5 box
blur, which gives back the grey its dots stand for. Transparency is composited onto a background
that contrasts with the ink (composite). Images over MAX_PIXELS are refused from their header
(decompression bombs); very large ones are reduced to about WORK_SIDE before the pixel work.
"""

from __future__ import annotations

import contextlib
import os
import warnings
from collections.abc import Callable
from pathlib import Path

import numpy as np

from ..errors import ImageError
from .ink import check_not_too_narrow

MAX_PIXELS = 50_000_000  # larger images are refused before decoding (decompression bombs)


WORK_SIDE = 1024  # larger images are reduced to about this before the pixel work


DITHER_BLUR, DITHER_MIN_SIDE = 2, 64  # dithered images this large are read through a 5×5 box blur


DITHERED = 0.01  # ... dithered: this share of the pixels differ from all four neighbours (see dithered)


IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".pgm", ".ppm"}


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
        raise (e.named(source) if isinstance(source, str | Path) else e) from None


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
            raise ImageError("not a regular file", "not-a-file")
        with _quiet_pillow(), Image.open(source) as im:
            im.seek(0)  # first frame of an animation
            check_not_too_narrow(im.height, im.width)
            _draft(im)
            with gate(im.width * im.height) if gate is not None else contextlib.nullcontext():
                return _decoded(im)
    except Image.DecompressionBombError:
        raise _too_many_pixels() from None
    except UnidentifiedImageError:
        raise ImageError("not an image Pillow can read", "not-an-image") from None
    except (OSError, SyntaxError, ValueError) as e:
        raise ImageError(f"cannot read image ({e})", "unreadable") from None


def check_size(H: int, W: int) -> None:
    """The size rules a file meets from its header, for pixels that come without one (a PIL image,
    an array): not too narrow to hold a digit, and at most MAX_PIXELS. ImageError otherwise."""
    check_not_too_narrow(H, W)
    if H * W > MAX_PIXELS:
        raise _too_many_pixels()


def _too_many_pixels() -> ImageError:
    return ImageError(f"image too large (more than {MAX_PIXELS:,} pixels)", "too-many-pixels", limit=MAX_PIXELS)


def read_pil_image(im) -> tuple[np.ndarray, np.ndarray | None]:
    """read_image for an image already opened by Pillow (any mode; its current frame), turned
    upright by its EXIF Orientation as a file would be. The image itself is left as it was."""
    try:
        check_size(im.height, im.width)
        with _quiet_pillow():
            return _decoded(_drafted(im))
    except (OSError, SyntaxError, ValueError) as e:
        raise ImageError(f"cannot read image ({e})", "unreadable") from None


def _drafted(im):
    """A large JPEG already decoded, reduced by the factor _draft would have decoded its file at
    (1/2, 1/4 or 1/8, as Pillow's JpegImageFile.draft picks it), so the rules see about the pixels
    they see in its file. Any other image as it is."""
    if getattr(im, "format", None) != "JPEG" or max(im.size) <= 2 * WORK_SIDE:
        return im
    r = 0.75 * WORK_SIDE / max(im.size)
    scale = min(im.width // (im.width * r), im.height // (im.height * r))
    factor = next(f for f in (8, 4, 2, 1) if scale >= f)
    return im.reduce(factor) if factor > 1 else im


def _draft(im) -> None:
    """A JPEG decodes at 1/2, 1/4 or 1/8 scale for much less work: ask for the smallest that keeps
    the longer side at 3/4 of WORK_SIDE or more (other formats ignore it)."""
    if max(im.size) > 2 * WORK_SIDE:
        r = 0.75 * WORK_SIDE / max(im.size)
        im.draft("RGB" if im.mode not in ("L", "I;16") else im.mode, (im.width * r, im.height * r))


def image_pixels(data: bytes) -> int:
    """The pixels read_image would decode for an image file's bytes, from its header alone (after
    a JPEG's draft): what a server's decoding budget is held for while another process decodes it.
    0 when the header cannot be read (read_image then says why)."""
    import io

    from PIL import Image

    try:
        with _quiet_pillow(), Image.open(io.BytesIO(data)) as im:
            im.seek(0)
            _draft(im)
            return im.width * im.height
    except Exception:  # noqa: BLE001 -- any failure is read_image's to report, with its reason
        return 0


def _decoded(im) -> tuple[np.ndarray, np.ndarray | None]:
    """An opened Pillow image's pixels as read_image gives them."""
    from PIL import ImageFilter, ImageOps

    im.load()
    im = _two_colours_flattened(im)
    if dithered(im):
        # A dithered scan draws grey as scattered dots, which measure as strokes a pixel wide: a
        # box blur gives each place back the grey its dots stand for.
        im = im.convert("L" if im.mode in ("1", "L", "P") else "RGB")
        im = im.filter(ImageFilter.BoxBlur(DITHER_BLUR))
    unsigned = _unsigned_32bit(im)
    # Phones store the sensor's pixels and an Orientation tag saying how to turn them.
    im = ImageOps.exif_transpose(im, in_place=False) if _oriented(im) else im
    return _to_arrays(im, unsigned)


def dithered(im) -> bool:
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
    ink: the same two colours, opaque, "L" if grey, else "RGB", so that dithered sees them. Any
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
    im = _reduced(im)
    if im.mode.startswith("I"):
        a = np.asarray(im)
        a = a.view(np.uint32) if unsigned_32bit and a.dtype == np.int32 else a
        return _integer_scale(a)[..., None], None
    if im.mode == "F":
        return _float_scale(np.asarray(im, dtype=np.float32))[..., None], None
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


def _reduced(im):
    """An image over 1.5·WORK_SIDE on its longer side reduced by a whole factor to about WORK_SIDE."""
    if max(im.size) <= 1.5 * WORK_SIDE:
        return im
    factor = round(max(im.size) / WORK_SIDE)
    if im.mode in ("P", "1"):
        im = im.convert("RGBA")
    elif im.mode.startswith("I;16"):  # reduce() knows 32-bit integers, not 16-bit ones
        im = im.convert("I")
    return im.reduce(factor)


def _float_scale(a: np.ndarray) -> np.ndarray:
    """Float samples (H, W) -> float32 in [0, 1]: non-finite ones set to the nearest end of the finite
    values; values outside [0, 1] stretched to it (no white point is known for them)."""
    finite = np.isfinite(a)
    if not finite.any():
        raise ValueError("no pixel holds a finite value")
    if not finite.all():  # NaN or ±inf samples: the nearest end of the finite values
        a = np.where(finite, a, np.where(a > 0, a[finite].max(), a[finite].min())).astype(np.float32)
    lo, hi = float(a.min()), float(a.max())
    if lo < 0 or hi > 1:  # stretched in float64: float32 overflows at ±3.4e38
        a = ((a.astype(np.float64) - lo) / max(hi - lo, 1e-12)).astype(np.float32)
    return a


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


def image_files(paths: list[Path]) -> list[Path]:
    """Expand folders into their image files (sorted, by suffix); files are kept as given."""
    out = []
    for p in paths:
        if p.is_dir():
            out.extend(sorted(f for f in p.iterdir() if f.suffix.lower() in IMAGE_SUFFIXES and f.is_file()))
        else:
            out.append(p)
    return out
