"""Random distortions of training images, in NumPy: each image of a batch turned, scaled, sheared and
moved by its own random affine map, every epoch anew (Simard et al. 2003: distorted copies teach a
network what the digits' variations look like). Pure functions: the random numbers come from the
generator passed in (the run's "shift" stream), so a seed gives the same images and a resumed run
the same as an uninterrupted one. A batch at a time: no distorted copy of the data set is held.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Distortion:
    """The largest distortion drawn, each uniform in [-limit, limit]: rotation and shear in
    degrees, scale as a fraction (0.1: 90% to 110%), shift in pixels (rows and columns apart)."""

    rotate: float = 0.0
    scale: float = 0.0
    shear: float = 0.0
    shift: float = 0.0

    @property
    def any(self) -> bool:
        return bool(self.rotate or self.scale or self.shear or self.shift)


def random_affine(n: int, d: Distortion, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """n random maps: (A (n, 2, 2), t (n, 2)) taking a point p (row, column) about the image's centre
    c to A·(p − c) + c + t. A = rotation · shear · scale. Draws, in this order, n angles, n scales,
    n shears and n (row, column) shifts from rng, whatever the limits (0 draws 0)."""
    angle = np.radians(rng.uniform(-d.rotate, d.rotate, n))
    scale = 1 + rng.uniform(-d.scale, d.scale, n)
    shear = np.tan(np.radians(rng.uniform(-d.shear, d.shear, n)))
    t = rng.uniform(-d.shift, d.shift, (n, 2))
    cos, sin = np.cos(angle), np.sin(angle)
    # rotation [[cos, -sin], [sin, cos]] · shear [[1, shear], [0, 1]] · scale s, in (row, column) terms
    A = np.empty((n, 2, 2))
    A[:, 0, 0] = cos * scale
    A[:, 0, 1] = (cos * shear - sin) * scale
    A[:, 1, 0] = sin * scale
    A[:, 1, 1] = (sin * shear + cos) * scale
    return A, t


def warp(images: np.ndarray, A: np.ndarray, t: np.ndarray) -> np.ndarray:
    """Images (n, H, W) under the maps (A, t) of random_affine, by bilinear interpolation, with 0
    (MNIST's background) outside the image -> float32 (n, H, W), values within the input's range.
    Each output pixel p takes the input at A⁻¹·(p − c − t) + c."""
    n, H, W = images.shape
    inv = np.linalg.inv(A).astype(np.float32)  # (n, 2, 2)
    # q = A⁻¹·(p − c − t) + c, one coordinate at a time, for every pixel p of every image
    dr = np.arange(H, dtype=np.float32)[None, :, None] - ((H - 1) / 2 + t[:, 0]).astype(np.float32)[:, None, None]
    dc = np.arange(W, dtype=np.float32)[None, None, :] - ((W - 1) / 2 + t[:, 1]).astype(np.float32)[:, None, None]
    y = inv[:, 0, 0, None, None] * dr + inv[:, 0, 1, None, None] * dc + np.float32((H - 1) / 2 + 1)
    x = inv[:, 1, 0, None, None] * dr + inv[:, 1, 1, None, None] * dc + np.float32((W - 1) / 2 + 1)
    # On a frame of zeros one pixel wide (hence the + 1): a source point off the image reads 0 from it.
    Hp, Wp = H + 2, W + 2
    padded = np.zeros((n, Hp, Wp), np.float32)
    padded[:, 1:-1, 1:-1] = images
    y = np.clip(y, 0, H + 1, out=y)
    x = np.clip(x, 0, W + 1, out=x)
    y0, x0 = np.minimum(np.floor(y), H), np.minimum(np.floor(x), W)  # the last frame row: weight 1 on it
    wy, wx = y - y0, x - x0
    base = y0.astype(np.intp) * Wp + x0.astype(np.intp)
    base += (np.arange(n) * (Hp * Wp))[:, None, None]
    flat = padded.ravel()
    top = flat[base]
    top += wx * (flat[base + 1] - top)
    bottom = flat[base + Wp]
    bottom += wx * (flat[base + Wp + 1] - bottom)
    top += wy * (bottom - top)
    return top


def distort(images: np.ndarray, d: Distortion, rng: np.random.Generator) -> np.ndarray:
    """Each image (n, H, W) under its own random affine map (random_affine, warp) -> float32 (n, H, W)."""
    return warp(images, *random_affine(len(images), d, rng))
