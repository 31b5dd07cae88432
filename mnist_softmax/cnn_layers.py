"""The layers of the cnn front end (cnn.py), each forward rule followed by its backward rule. Pure
functions on float arrays (H, W, B, C): row, column, image, channel; float32 or float64 alike.

Two ways to compute a 5×5 "same" convolution, each where it is fastest:
- conv1 (one input channel): im2col, all 25 shifted copies of the image in one matrix, one product.
- conv2 (32 -> 64 maps on 14×14): by the convolution theorem. On a grid of (H + 2)×(W + 2) the
  circular correlation with a 5×5 kernel equals the zero-padded one at every output pixel (what
  wraps around lands on the two zero rows and columns), and it is a product, frequency by frequency,
  of the image's and the kernel's discrete Fourier transforms. The transforms are matrix products
  with DFT matrices, one image axis at a time, that read and write only the H×W pixels (16 × 9 =
  144 frequencies of the real half spectrum); at each frequency the conv is a complex
  (B, C) @ (C, C_out) product, done as one real product. For this layer that is under a quarter of
  the direct conv's floating-point work (14 against 60 MFLOP per image, forward and backward):
  0.16 ms per image on one core (measured); float32 results agree with the direct conv within
  ~1e-6 of the largest value. The gradients are the same kind of product: see fourier_conv_backward.
"""

from __future__ import annotations

import functools
from typing import NamedTuple

import numpy as np

K = 5  # kernel size; "same" padding K // 2


def _all_shifts(x: np.ndarray) -> np.ndarray:
    """x (H, W, B, C) -> im2col's (K·K·C, H·W·B): row (kh·K + kw)·C + c is channel c of x padded by
    K // 2, at row i + kh and column j + kw for output pixel (i, j). Shift-major, so each of the K·K
    copies moves whole image rows (W·B values when C = 1), not K values at a time."""
    H, W, B, C = x.shape
    p = K // 2
    padded = np.zeros((C, H + 2 * p, W + 2 * p, B), x.dtype)
    padded[:, p : p + H, p : p + W] = x.transpose(3, 0, 1, 2)
    cols = np.empty((K, K, C, H, W, B), x.dtype)
    for kh in range(K):
        for kw in range(K):
            cols[kh, kw] = padded[:, kh : kh + H, kw : kw + W]
    return cols.reshape(K * K * C, H * W * B)


def conv_forward(x: np.ndarray, w: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """5×5 "same" convolution (cross-correlation, zero padding 2, stride 1, no bias) by im2col.

    x (H, W, B, C), w (O, C, K, K) -> (y (H, W, B, O), cols), where y[i, j, b, o] =
    Σ_{c, kh, kw} w[o, c, kh, kw] · x_padded[i + kh, j + kw, b, c]. cols (K·K·C, H·W·B), all K·K
    shifts of x, is what conv_backward needs.
    """
    H, W, B, C = x.shape
    cols = _all_shifts(x)
    y = cols.T @ w.transpose(2, 3, 1, 0).reshape(K * K * C, -1)  # rows of w: [kh, kw, c]
    return y.reshape(H, W, B, -1), cols


def conv_backward(
    cols: np.ndarray, w: np.ndarray, dy: np.ndarray, input_grad: bool = True
) -> tuple[np.ndarray | None, np.ndarray]:
    """Gradients of conv_forward. cols from conv_forward, w (O, C, K, K), dy (H, W, B, O)
    -> (dx (H, W, B, C), or None without input_grad; dw (O, C, K, K)).

    dw[o, c, kh, kw] = Σ dy[i, j, b, o] · x_padded[i + kh, j + kw, b, c]: the product of the shifted
    input with dy. dx is the "same" convolution of dy with the kernel flipped in both axes and its
    channel axes swapped (the network never needs conv1's dx; the tests use this as the direct
    reference for the Fourier conv).
    """
    H, W, B, n_out = dy.shape
    C = w.shape[1]
    dw = (cols @ dy.reshape(H * W * B, n_out)).reshape(K, K, C, n_out).transpose(3, 2, 0, 1)
    dx = conv_forward(dy, w.transpose(1, 0, 2, 3)[:, :, ::-1, ::-1])[0] if input_grad else None
    return dx, np.ascontiguousarray(dw)


class Fourier(NamedTuple):
    """Real matrices of the discrete Fourier transform for a conv on H×W images (see _fourier), one
    axis at a time. F = (H + 2)·((W + 2) // 2 + 1) frequencies (u, v); "(a, re/im)" is an axis a
    with each entry's real and imaginary part, in that order."""

    rows: np.ndarray  # (2(H + 2), H): real image rows h -> (u, re/im)
    columns: np.ndarray  # (2Fv, 2W): (re/im, w) -> (v, re/im), Fv = (W + 2) // 2 + 1
    columns_back: np.ndarray  # (2W, 2Fv): (v, re/im) -> (re/im, w), the inverse's weights included
    rows_back: np.ndarray  # (H, 2(H + 2)): (u, re/im) -> real image rows h
    kernel: np.ndarray  # (2F, K·K): kernel (kh, kw) -> the spectrum it multiplies by
    kernel_grad: np.ndarray  # (K·K, 2F): cross-spectrum -> gradient at each kernel tap


@functools.lru_cache(maxsize=8)
def _fourier(H: int, W: int, dtype: np.dtype) -> Fourier:
    """The DFT matrices for H×W images, on the (H + 2)×(W + 2) grid, in dtype (read-only, cached).

    Frequencies (u, v), u < H + 2, v ≤ (W + 2) // 2 (a real image's spectrum is Hermitian, so the
    other half is redundant). With α = 2π·u·h/(H + 2) and β = 2π·v·w/(W + 2) at pixel (h, w):
        X[u, v] = Σ_h e^{-iα} Σ_w x[h, w] e^{-iβ}          (rows first: real in, complex out)
        x[h, w] = Re Σ_u e^{iα} Σ_v c_v X[u, v] e^{iβ} / ((H + 2)(W + 2))
    c_v = 2 for the frequencies whose mirror image is left out, 1 for v = 0 and the Nyquist column.
    A kernel tap (kh, kw) sits at offset (kh - 2, kw - 2): a correlation multiplies X[u, v] by
    Σ w[kh, kw] e^{+iφ}, φ = 2π(u·(kh - 2)/(H + 2) + v·(kw - 2)/(W + 2)).
    """
    Nh, Nw = H + K // 2, W + K // 2  # enough zero rows and columns that nothing wraps onto an output
    Fv = Nw // 2 + 1
    c = np.where((np.arange(Fv) == 0) | (2 * np.arange(Fv) == Nw), 1.0, 2.0)
    alpha = 2 * np.pi * np.outer(np.arange(Nh), np.arange(H)) / Nh  # (Nh, H)
    beta = 2 * np.pi * np.outer(np.arange(Fv), np.arange(W)) / Nw  # (Fv, W)
    cos, sin = np.cos(beta), np.sin(beta)
    # Multiplying (re, im) by e^{-iβ} or c_v·e^{+iβ}: a 2×2 real block per (v, w), axes (v, out, in, w).
    columns = np.stack([np.stack([cos, sin], 1), np.stack([-sin, cos], 1)], 1)
    back = c[:, None, None, None] * np.stack([np.stack([cos, -sin], 1), np.stack([sin, cos], 1)], 1)
    rows = np.stack([np.cos(alpha), -np.sin(alpha)], 1).reshape(2 * Nh, H)  # e^{-iα} on a real row

    u = np.arange(Nh)[:, None, None, None]
    v = np.arange(Fv)[None, :, None, None]
    offsets = np.arange(K) - K // 2
    phi = 2 * np.pi * (u * offsets[:, None] / Nh + v * offsets / Nw)  # (Nh, Fv, K, K)
    taps = np.stack([np.cos(phi), np.sin(phi)], axis=2).reshape(-1, K * K)  # (u, v, re/im) x (kh, kw)
    weights = (c / (Nh * Nw))[None, :, None, None]
    taps_back = np.stack([weights * np.cos(phi), -weights * np.sin(phi)], axis=2).reshape(-1, K * K).T
    mats = [
        rows,
        columns.reshape(2 * Fv, 2 * W),  # (v, out) x (in, w)
        back.transpose(1, 3, 0, 2).reshape(2 * W, 2 * Fv),  # (out, w) x (v, in)
        rows.T / (Nh * Nw),  # Re(e^{iα}·Z) = cos α·Re Z - sin α·Im Z, for each image row h
        taps,
        taps_back,
    ]
    out = []
    for mat in mats:
        mat = np.array(mat, dtype=dtype, order="C")  # its own memory, so read-only means read-only
        mat.flags.writeable = False
        out.append(mat)
    return Fourier(*out)


class Spectrum(NamedTuple):
    """A conv kernel w (O, C, K, K) in the frequency domain, laid out for the two products:
    forward (F, C, 2·O) = [Re | Im] of Ŵ per frequency; backward (F, O, 2·C) = [Re | Im] of Ŵᴴ."""

    forward: np.ndarray
    backward: np.ndarray


def conv_spectrum(w: np.ndarray, H: int, W: int) -> Spectrum:
    """The transform of kernel w (O, C, K, K) for images of H×W, computed once per weight update
    and shared by every piece of a batch."""
    n_out, C = w.shape[:2]
    dft = _fourier(H, W, w.dtype)
    s = (dft.kernel @ w.transpose(2, 3, 1, 0).reshape(K * K, C * n_out)).reshape(-1, 2, C, n_out)
    forward = np.ascontiguousarray(s.transpose(0, 2, 1, 3))
    backward = np.empty((len(s), n_out, 2, C), w.dtype)
    backward[:, :, 0] = s[:, 0].transpose(0, 2, 1)
    np.negative(s[:, 1].transpose(0, 2, 1), out=backward[:, :, 1])  # the conjugate transpose
    return Spectrum(forward.reshape(len(s), C, 2 * n_out), backward.reshape(len(s), n_out, 2 * C))


def _complex_product(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Per frequency, complex A (B, C) @ complex Bm (C, O), from a (F, 2B, C) = [Re A; Im A] and
    b (F, C, 2O) = [Re Bm | Im Bm] -> (F, 2B, O) = [Re; Im] of the product: one real product
    [Re A; Im A] @ [Re Bm | Im Bm] has the four real products as its four blocks."""
    n, rows, half = len(a), a.shape[1] // 2, b.shape[2] // 2
    p = a @ b
    out = np.empty((n, 2, rows, half), p.dtype)
    np.subtract(p[:, :rows, :half], p[:, rows:, half:], out=out[:, 0])
    np.add(p[:, :rows, half:], p[:, rows:, :half], out=out[:, 1])
    return out.reshape(n, 2 * rows, half)


def _to_freq(dft: Fourier, x: np.ndarray) -> np.ndarray:
    """x (H, W, B, C) -> its half spectrum (F, 2B, C): per frequency (u, v), [Re; Im] rows. Along the
    image rows first (one product), then along the columns (one product per u)."""
    H, W, B, C = x.shape
    A = dft.rows @ x.reshape(H, W * B * C)  # (u, re/im) x (w, b, c)
    return np.matmul(dft.columns, A.reshape(-1, 2 * W, B * C)).reshape(-1, 2 * B, C)


def _to_pixels(dft: Fourier, Y: np.ndarray) -> np.ndarray:
    """The inverse of _to_freq: half spectrum Y (F, 2B, C) -> (H, W, B, C)."""
    B, C = Y.shape[1] // 2, Y.shape[2]
    H, W = dft.rows_back.shape[0], dft.columns_back.shape[0] // 2
    Z = np.matmul(dft.columns_back, Y.reshape(-1, dft.columns.shape[0], B * C))  # (u, re/im, w, b, c)
    return (dft.rows_back @ Z.reshape(-1, W * B * C)).reshape(H, W, B, C)


def fourier_conv_forward(x: np.ndarray, spectrum: Spectrum) -> tuple[np.ndarray, np.ndarray]:
    """The same convolution as conv_forward, through the Fourier domain (see the module's docstring).

    x (H, W, B, C), spectrum = conv_spectrum(w, H, W) -> (y (H, W, B, O), X (F, 2B, C) the input's
    spectrum, which fourier_conv_backward needs).
    """
    H, W, B, C = x.shape
    dft = _fourier(H, W, x.dtype)
    X = _to_freq(dft, x)
    return _to_pixels(dft, _complex_product(X, spectrum.forward)), X


def fourier_conv_backward(X: np.ndarray, spectrum: Spectrum, dy: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Gradients of fourier_conv_forward. X from it, dy (H, W, B, O) -> (dx (H, W, B, C), dw (O, C, K, K)).

    In the frequency domain, with Ŷ the transform of dy: dx's transform is Ŷ Ŵᴴ (the correlation's
    adjoint is the convolution), and dw at tap (kh, kw) is the cross-correlation Σ dy[p]·x[p + offset],
    whose transform is Σ_b X̂ conj(Ŷ), taken back to the 25 offsets only.
    """
    H, W, B, n_out = dy.shape
    C = X.shape[2]
    dft = _fourier(H, W, dy.dtype)
    DY = _to_freq(dft, dy)
    dx = _to_pixels(dft, _complex_product(DY, spectrum.backward))
    # Σ_b X̂ conj(Ŷ) per channel pair: real part Re X̂ᵀ Re Ŷ + Im X̂ᵀ Im Ŷ, imaginary part
    # Im X̂ᵀ Re Ŷ - Re X̂ᵀ Im Ŷ; one real product of [[Re X̂, Im X̂], [Im X̂, -Re X̂]]ᵀ with [Re Ŷ; Im Ŷ].
    XX = np.empty((len(X), 2 * B, 2 * C), X.dtype)
    XX[:, :, :C] = X
    XX[:, :B, C:] = X[:, B:]
    np.negative(X[:, :B], out=XX[:, B:, C:])
    cross = XX.transpose(0, 2, 1) @ DY  # (F, 2C, O) = [Re; Im] of the cross-spectrum
    dw = dft.kernel_grad @ cross.reshape(2 * len(X), C * n_out)
    return dx, np.ascontiguousarray(dw.reshape(K, K, C, n_out).transpose(3, 2, 0, 1))


def maxpool_forward(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """2×2 max pooling, stride 2. x (H, W, B, C), H and W even -> (y (H/2, W/2, B, C), arg).

    arg (H/2, W/2, B, C) uint8 says which of the window's four inputs is the max, 2·row + column;
    of equal values the first in that order wins, as in PyTorch (constant background gives ties).
    """
    H, W, B, C = x.shape
    v = x.reshape(H // 2, 2, W // 2, 2, B, C)
    a, b, c, d = v[:, 0, :, 0], v[:, 0, :, 1], v[:, 1, :, 0], v[:, 1, :, 1]
    top, bottom = np.maximum(a, b), np.maximum(c, d)
    low = bottom > top
    # arg = 2·low + (d > c if low else b > a), in boolean passes: np.where or a masked np.copyto
    # takes ~30 times as long on these arrays.
    right = (low & (d > c)) | (~low & (b > a))
    arg = low.view(np.uint8) * np.uint8(2)
    arg += right.view(np.uint8)
    return np.maximum(top, bottom, out=top), arg


def maxpool_backward(dy: np.ndarray, arg: np.ndarray) -> np.ndarray:
    """Gradient of maxpool_forward: dy (H/2, W/2, B, C), arg from it -> dx (H, W, B, C), dy routed
    to each window's max, zero elsewhere."""
    h, w, B, C = dy.shape
    dx = np.empty((2 * h, 2 * w, B, C), dy.dtype)
    v = dx.reshape(h, 2, w, 2, B, C)
    for k in range(4):
        np.multiply(dy, arg == k, out=v[:, k // 2, :, k % 2])
    return dx


def bias_relu_forward(x: np.ndarray, b: np.ndarray) -> np.ndarray:
    """max(x + b, 0), x (..., C), b (C,) -> (..., C)."""
    y = x + b
    return np.maximum(y, 0, out=y)


def bias_relu_backward(y: np.ndarray, dy: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Gradients of bias_relu_forward from its output y (..., C) and dy (..., C) -> (dx (..., C), db (C,)).
    The ReLU's derivative at 0 is taken as 0, as in PyTorch."""
    dx = dy * (y > 0)
    rows = dx.reshape(-1, dx.shape[-1])
    return dx, np.ones(len(rows), dx.dtype) @ rows  # a product: sum(axis=0) takes 7 times as long


# Batch norm (cnn.py: after each conv's pooling, before its ReLU), with the ReLU: a = max(γ·x̂ + β, 0),
# x̂ = (x − μ)/√(σ² + ε) per channel, μ and σ² the batch's (training) or the running ones (eval).
BN_EPS = 1e-5  # PyTorch's


def bn_relu_forward(x: np.ndarray, gamma: np.ndarray, beta: np.ndarray) -> tuple[np.ndarray, tuple]:
    """Training: batch norm over all but the channel axis of x (..., C), then ReLU -> (a (..., C),
    cache (x̂, 1/√(σ² + ε), μ, σ²)): μ and σ² (biased) are this batch's, per channel."""
    rows = x.reshape(-1, x.shape[-1])
    n = len(rows)
    ones = np.ones(n, x.dtype)
    mean = ones @ rows / n  # products: sum(axis=0) takes several times as long
    centred = x - mean
    var = ones @ (centred * centred).reshape(n, -1) / n
    inv_std = (1 / np.sqrt(var + BN_EPS)).astype(x.dtype)
    x_hat = centred
    x_hat *= inv_std
    a = x_hat * gamma
    a += beta
    np.maximum(a, 0, out=a)
    return a, (x_hat, inv_std, mean, var)


def bn_relu_backward(a: np.ndarray, cache: tuple, gamma: np.ndarray, da: np.ndarray):
    """Gradients of bn_relu_forward: its output a, cache, γ (C,) and da (..., C) -> (dx (..., C),
    dγ (C,), dβ (C,)). With g = da·[a > 0] (the ReLU's), dβ = Σ g, dγ = Σ g·x̂, and
    dx = γ/√(σ² + ε) · (g − dβ/n − x̂·dγ/n): the batch's mean and variance depend on every x."""
    x_hat, inv_std = cache[0], cache[1]
    g = da * (a > 0)
    C = g.shape[-1]
    n = g.size // C
    ones = np.ones(n, g.dtype)
    dbeta = ones @ g.reshape(n, C)
    dgamma = ones @ (g * x_hat).reshape(n, C)
    dx = g - dbeta / n
    dx -= x_hat * (dgamma / n)
    dx *= gamma * inv_std
    return dx, dgamma, dbeta


def scale_relu_forward(x: np.ndarray, scale: np.ndarray, shift: np.ndarray) -> np.ndarray:
    """Eval: max(x·scale + shift, 0) per channel, x (..., C): batch norm with running statistics
    folded into one scale and shift (cnn.bn_affine)."""
    y = x * scale
    y += shift
    return np.maximum(y, 0, out=y)
