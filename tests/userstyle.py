"""Turn real MNIST test digits into the kind of images users make: drawn, photographed, scanned.

Each maker takes a (28, 28) uint8 MNIST digit (light ink on black), a folder, a name and an rng,
and writes an image file the way a person would produce it, with the digit enlarged, moved off
centre on a larger page, in real ink and paper colours, with noise, blur and lossy compression.
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


MAKERS = {
    "dark pen on white paper": dark_pen_on_white_paper,
    "black strokes on transparent": black_strokes_on_transparent,
    "blue ink on cream paper (JPEG)": blue_ink_on_cream_paper,
    "JPEG photo": jpeg_photo,
    "16-bit scan": scan_16bit,
}
