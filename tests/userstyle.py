"""Turn real MNIST test digits into the kind of images users make: drawn, photographed, scanned.

Each maker takes a (28, 28) uint8 MNIST digit (light ink on black), a folder, a name and an rng,
and writes an image file the way a person would produce it: enlarged and moved off centre on a
page, photographed by a phone that stores its pixels sideways, cropped tight to the digit, drawn
with a thick brush on a small canvas, or saved as a tiny 8×8 or 16×16 image; in real ink and paper
colours, with noise, blur and lossy compression. MAKERS holds the digits; NEGATIVES makes images
that hold no digit at all (specks, single pixels, thin lines, blank pages) and take no digit.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image, ImageFilter


def _ink_on_page(digit: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Ink coverage (H, W) float in [0, 1]: the digit enlarged 6–14× and placed off centre on a page."""
    scale = int(rng.integers(6, 15))
    big = Image.fromarray(digit).resize((28 * scale, 28 * scale), Image.Resampling.BILINEAR)
    top, left, bottom, right = (int(v) for v in rng.integers(20, 160, 4))
    page = np.zeros((28 * scale + top + bottom, 28 * scale + left + right), np.float32)
    page[top : top + 28 * scale, left : left + 28 * scale] = np.asarray(big, np.float32) / 255
    return page


def _paint(cover: np.ndarray, paper, ink) -> np.ndarray:
    paper, ink = np.asarray(paper, np.float32), np.asarray(ink, np.float32)
    return paper + (ink - paper) * cover[..., None]


def _noisy_uint8(a: np.ndarray, sigma: float, rng) -> np.ndarray:
    return np.clip(a + rng.normal(0, sigma, a.shape), 0, 255).astype(np.uint8)


def dark_pen_on_white_paper(digit, folder: Path, name: str, rng) -> Path:
    cover = _ink_on_page(digit, rng)
    img = _paint(cover, [rng.uniform(225, 250)], [rng.uniform(10, 60)])[..., 0]
    path = folder / f"{name}.png"
    Image.fromarray(_noisy_uint8(img, 4, rng), "L").save(path)
    return path


def black_strokes_on_transparent(digit, folder: Path, name: str, rng) -> Path:
    cover = _ink_on_page(digit, rng)
    rgba = np.zeros((*cover.shape, 4), np.uint8)
    rgba[..., 3] = np.round(cover * 255).astype(np.uint8)
    path = folder / f"{name}.png"
    Image.fromarray(rgba, "RGBA").save(path)
    return path


def blue_ink_on_cream_paper(digit, folder: Path, name: str, rng) -> Path:
    cover = _ink_on_page(digit, rng)
    img = _paint(cover, [246, 236, 200], [30 + rng.uniform(0, 30), 45, 160 + rng.uniform(0, 40)])
    path = folder / f"{name}.jpg"
    Image.fromarray(_noisy_uint8(img, 3, rng), "RGB").save(path, quality=85)
    return path


def jpeg_photo(digit, folder: Path, name: str, rng) -> Path:
    """A phone photo: uneven light across the page, a little blur, sensor noise, strong JPEG."""
    cover = _ink_on_page(digit, rng)
    h, w = cover.shape
    light = np.linspace(rng.uniform(0.75, 0.9), 1.0, w)[None, :] * np.linspace(0.92, 1.0, h)[:, None]
    img = _paint(cover, [215, 205, 190], [40, 38, 45]) * light[..., None]
    pil = Image.fromarray(_noisy_uint8(img, 6, rng), "RGB").filter(ImageFilter.GaussianBlur(rng.uniform(0.5, 2.0)))
    path = folder / f"{name}.jpg"
    pil.save(path, quality=70)
    return path


def scan_16bit(digit, folder: Path, name: str, rng) -> Path:
    cover = _ink_on_page(digit, rng)
    img = 62000 - (62000 - 4000) * cover + rng.normal(0, 400, cover.shape)
    path = folder / f"{name}.png"
    Image.fromarray(np.clip(img, 0, 65535).astype(np.uint16)).save(path)
    return path


def _phone_photo(digit, rng) -> Image.Image:
    """A phone photo of a digit on a page, as the viewer shows it (upright): uneven light, blur, noise."""
    cover = _ink_on_page(digit, rng)
    h, w = cover.shape
    light = np.linspace(rng.uniform(0.7, 0.9), 1.0, w)[None, :] * np.linspace(rng.uniform(0.85, 1.0), 1.0, h)[:, None]
    paper = [rng.uniform(200, 235), rng.uniform(195, 225), rng.uniform(180, 215)]
    img = _paint(cover, paper, [rng.uniform(20, 60)] * 3) * light[..., None]
    return Image.fromarray(_noisy_uint8(img, 5, rng), "RGB").filter(ImageFilter.GaussianBlur(rng.uniform(0.5, 1.5)))


def _exif_rotated(orientation: int, stored_as: Image.Transpose):
    def make(digit, folder: Path, name: str, rng) -> Path:
        """The phone keeps the sensor's pixels sideways and records how to turn them in EXIF Orientation."""
        exif = Image.Exif()
        exif[0x0112] = orientation
        path = folder / f"{name}.jpg"
        _phone_photo(digit, rng).transpose(stored_as).save(path, quality=int(rng.integers(75, 92)), exif=exif)
        return path

    return make


def _cover(digit, scale: int) -> np.ndarray:
    """The digit enlarged `scale` times (smoothly), as ink coverage (H, W) float32 in [0, 1]."""
    big = Image.fromarray(digit).resize((28 * scale, 28 * scale), Image.Resampling.BICUBIC)
    return np.clip(np.asarray(big, np.float32) / 255, 0, 1)


def _tight(cover: np.ndarray, level: float = 0.25) -> np.ndarray:
    """Cropped to where the ink reaches `level`: the strokes run into all four edges."""
    rows, cols = np.flatnonzero((cover > level).any(1)), np.flatnonzero((cover > level).any(0))
    return cover[rows[0] : rows[-1] + 1, cols[0] : cols[-1] + 1]


def _save_png_or_jpeg(img: np.ndarray, mode: str, folder: Path, name: str, rng) -> Path:
    if rng.random() < 0.5:
        path = folder / f"{name}.png"
        Image.fromarray(img, mode).save(path)
    else:
        path = folder / f"{name}.jpg"
        Image.fromarray(img, mode).save(path, quality=int(rng.integers(70, 95)))
    return path


def tight_crop(digit, folder: Path, name: str, rng) -> Path:
    """A scan or photo cut down to the digit itself: no margin, the strokes touch the edges."""
    cover = _tight(_cover(digit, int(rng.integers(4, 13))))
    img = _paint(cover, [rng.uniform(215, 250)] * 3, [rng.uniform(15, 70)] * 3)
    return _save_png_or_jpeg(_noisy_uint8(img, 4, rng), "RGB", folder, name, rng)


def light_on_dark_tight_crop(digit, folder: Path, name: str, rng) -> Path:
    """Chalk on a blackboard, or a white digit on a dark screen, cropped to the digit."""
    cover = _tight(_cover(digit, int(rng.integers(4, 13))))
    board = [[35, 45, 40], [25, 55, 40], [20, 25, 45], [15, 15, 15]][int(rng.integers(4))]
    img = _paint(cover, np.add(board, rng.uniform(-10, 10, 3)), [rng.uniform(200, 245)] * 3)
    return _save_png_or_jpeg(_noisy_uint8(img, 5, rng), "RGB", folder, name, rng)


def thick_canvas_strokes(digit, folder: Path, name: str, rng) -> Path:
    """Drawn with a fat brush on a small canvas (a web page, a tablet app): strokes 1–2.5 MNIST
    pixels wider than MNIST's, the digit filling the canvas from top to bottom (30–45% of its
    pixels are ink), in some brush colour on some canvas colour."""
    scale = int(rng.integers(6, 11))
    brush = int(rng.uniform(1, 2.5) * scale) // 2 * 2 + 1  # an odd MaxFilter size
    big = Image.fromarray(digit).resize((28 * scale, 28 * scale), Image.Resampling.BICUBIC)
    cover = _tight(np.asarray(big.filter(ImageFilter.MaxFilter(brush)), np.float32) / 255, 0.5)
    h, w = cover.shape
    side = max(h, w) + int(rng.integers(0, 6))  # a square canvas, the digit touching top and bottom
    top, left = (side - h) // 2, int(rng.integers(0, side - w + 1))
    canvas = np.zeros((side, side), np.float32)
    canvas[top : top + h, left : left + w] = cover
    colours = [  # (canvas, brush)
        ([255, 255, 255], [0, 0, 0]),
        ([255, 255, 255], [20, 60, 220]),
        ([255, 255, 255], [220, 30, 30]),
        ([250, 245, 230], [30, 130, 50]),
        ([0, 0, 0], [255, 255, 255]),
        ([30, 30, 60], [250, 220, 60]),
    ]
    paper, ink = colours[int(rng.integers(len(colours)))]
    img = np.round(_paint(canvas, paper, ink)).astype(np.uint8)
    path = folder / f"{name}.png"
    Image.fromarray(img, "RGB").save(path)
    return path


def _small(side: int):
    def make(digit, folder: Path, name: str, rng) -> Path:
        """A tiny digit image (an icon, a dataset such as UCI's 8×8 digits): the digit's square
        area shrunk to side×side and saved at that size, either polarity."""
        digit = np.pad(digit, 8)  # room for a square box around a digit near the edge
        rows, cols = np.flatnonzero(digit.any(1)), np.flatnonzero(digit.any(0))
        r, c = (rows[0] + rows[-1] + 1) / 2, (cols[0] + cols[-1] + 1) / 2
        half = max(rows[-1] + 1 - rows[0], cols[-1] + 1 - cols[0]) / 2 + rng.uniform(0, 1.5)
        box = (c - half, r - half, c + half, r + half)
        small = np.asarray(Image.fromarray(digit).resize((side, side), Image.Resampling.BOX, box=box))
        if rng.random() < 0.5:
            small = 255 - small
        path = folder / f"{name}.png"
        Image.fromarray(small, "L").save(path)
        return path

    return make


def pixelated_16(digit, folder: Path, name: str, rng) -> Path:
    """A 16×16 digit someone enlarged for viewing: blown up 6–16× with hard pixel edges, as JPEG."""
    path = _small(16)(digit, folder, name, rng)
    with Image.open(path) as im:
        big = im.resize((16 * int(rng.integers(6, 17)),) * 2, Image.Resampling.NEAREST)
    path.unlink()
    path = folder / f"{name}.jpg"
    big.convert("RGB").save(path, quality=90)
    return path


MAKERS = {
    "dark pen on white paper": dark_pen_on_white_paper,
    "black strokes on transparent": black_strokes_on_transparent,
    "blue ink on cream paper (JPEG)": blue_ink_on_cream_paper,
    "JPEG photo": jpeg_photo,
    "16-bit scan": scan_16bit,
    "phone photo, EXIF orientation 6": _exif_rotated(6, Image.Transpose.ROTATE_90),
    "phone photo, EXIF orientation 8": _exif_rotated(8, Image.Transpose.ROTATE_270),
    "tight crop touching the edges": tight_crop,
    "light on dark, tight crop": light_on_dark_tight_crop,
    "thick canvas strokes": thick_canvas_strokes,
    "16×16 saved small": _small(16),
    "16×16 enlarged, pixelated": pixelated_16,
    "8×8 saved small": _small(8),
}
NEW_STYLES = list(MAKERS)[5:]  # those of issue 12

# What the tests hold each style to, on 120 digits: the pixel model keeps KEEP of its accuracy on
# the same digits untouched, less MARGIN (3.6 digits of 120: a sample's luck, not a failure);
# the 8×8 style, which has lost most of a digit's detail, reaches the absolute SMALL_8x8 bounds.
KEEP, MARGIN = 0.95, 0.03
SMALL_8x8 = {"pixels": 0.60, "conv": 0.85}


# Images holding no digit: each takes (folder, name, rng) and writes one.


def _page(rng, h=None, w=None) -> np.ndarray:
    """An empty page (H, W, 3) float: paper colour, a little uneven light."""
    h = h or int(rng.integers(200, 420))
    w = w or int(rng.integers(200, 420))
    light = np.linspace(rng.uniform(0.85, 1.0), 1.0, w)[None, :] * np.ones((h, 1))
    return np.array([rng.uniform(215, 250)] * 3) * light[..., None]


def _save_page(img: np.ndarray, folder: Path, name: str, rng) -> Path:
    return _save_png_or_jpeg(_noisy_uint8(img, 3, rng), "RGB", folder, name, rng)


def specks(folder: Path, name: str, rng) -> Path:
    """One to three dark specks, 1–8 px across (dust, a pen touch), on an empty page."""
    img = _page(rng)
    h, w = img.shape[:2]
    for _ in range(int(rng.integers(1, 4))):
        s = int(rng.integers(1, 9))
        r, c = int(rng.integers(0, h - s)), int(rng.integers(0, w - s))
        img[r : r + s, c : c + s] = rng.uniform(20, 80)
    return _save_page(img, folder, name, rng)


def single_pixel(folder: Path, name: str, rng) -> Path:
    """One lit pixel in a 28×28 image (or one dark pixel on white)."""
    img = np.zeros((28, 28), np.uint8)
    img[int(rng.integers(28)), int(rng.integers(28))] = int(rng.integers(128, 256))
    if rng.random() < 0.5:
        img = 255 - img
    path = folder / f"{name}.png"
    Image.fromarray(img, "L").save(path)
    return path


def thin_line(folder: Path, name: str, rng) -> Path:
    """A one-pixel pencil line (a ruled line, a stray stroke) across most of an empty page, at any angle."""
    side = int(rng.integers(240, 420))
    img = Image.fromarray(np.zeros((side, side), np.uint8))
    from PIL import ImageDraw

    length = rng.uniform(0.6, 0.9) * side
    angle = rng.uniform(0, np.pi)
    cx, cy = side / 2 + rng.uniform(-0.1, 0.1) * side, side / 2 + rng.uniform(-0.1, 0.1) * side
    dx, dy = np.cos(angle) * length / 2, np.sin(angle) * length / 2
    ImageDraw.Draw(img).line([(cx - dx, cy - dy), (cx + dx, cy + dy)], fill=255, width=1)
    cover = np.asarray(img.filter(ImageFilter.GaussianBlur(0.4)), np.float32) / 255
    page = _page(rng, side, side)
    return _save_page(page + (rng.uniform(40, 90) - page) * cover[..., None], folder, name, rng)


def blank_page(folder: Path, name: str, rng) -> Path:
    """Nothing on it: a photographed empty page (uneven light, noise, JPEG) or a flat canvas."""
    if rng.random() < 0.3:
        path = folder / f"{name}.png"
        colour = tuple(int(v) for v in rng.integers(0, 256, 3))
        Image.new("RGB", (int(rng.integers(8, 400)),) * 2, colour).save(path)
        return path
    return _save_page(_page(rng), folder, name, rng)


NEGATIVES = {
    "specks on a page": specks,
    "a single pixel": single_pixel,
    "a thin line": thin_line,
    "a blank page": blank_page,
}


# Known limits: images that `predict` reads wrongly at a measured rate (benchmarks/limits.py).
# Each takes MNIST digits (uint8 (28, 28)) and an rng and returns a grey page (H, W) float32 in [0, 1],
# dark ink on light paper, for images.prepare.


def digit_cover(digit: np.ndarray, scale: int = 6) -> np.ndarray:
    """The digit enlarged `scale` times (bicubic), cropped to its ink: coverage (h, w) in [0, 1]."""
    c = _cover(digit, scale)
    rows, cols = np.flatnonzero((c > 0.2).any(1)), np.flatnonzero((c > 0.2).any(0))
    return c[rows[0] : rows[-1] + 1, cols[0] : cols[-1] + 1]


def _on_paper(cover: np.ndarray) -> np.ndarray:
    return 0.95 - 0.85 * cover


def stacked_pair(top: np.ndarray, bottom: np.ndarray, gap: float) -> np.ndarray:
    """Two digits one above the other, centred, `gap` of the taller one's height apart, on a margin."""
    a, b = digit_cover(top), digit_cover(bottom)
    g, width = round(gap * max(len(a), len(b))), max(a.shape[1], b.shape[1])
    page = np.zeros((120 + len(a) + g + len(b), 120 + width), np.float32)
    for cover, r in ((a, 60), (b, 60 + len(a) + g)):
        c = 60 + (width - cover.shape[1]) // 2
        page[r : r + len(cover), c : c + cover.shape[1]] = cover
    return _on_paper(page)


def side_by_side_pair(left: np.ndarray, right: np.ndarray, gap: float) -> np.ndarray:
    """Two digits side by side, centred in height, `gap` of the taller one's height apart, on a margin."""
    a, b = digit_cover(left), digit_cover(right)
    height = max(len(a), len(b))
    g = round(gap * height)
    page = np.zeros((120 + height, 120 + a.shape[1] + g + b.shape[1]), np.float32)
    for cover, c in ((a, 60), (b, 60 + a.shape[1] + g)):
        r = 60 + (height - len(cover)) // 2
        page[r : r + len(cover), c : c + cover.shape[1]] = cover
    return _on_paper(page)
