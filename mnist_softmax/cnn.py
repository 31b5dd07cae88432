"""The `cnn` front end: a small convolutional network trained end to end with the softmax layer, in NumPy.

The network (the 64×7×7 maps of the project's source material):

    image 1×28×28 -> conv 5×5 "same", 32 maps -> max pool 2×2 -> + bias, ReLU     32×14×14
                  -> conv 5×5 "same", 64 maps -> max pool 2×2 -> + bias, ReLU     64×7×7
                  -> flatten, N = 3136 -> the T×N softmax layer (softmax.softmax_loss_grad)

Each conv's bias and ReLU come after its pooling. Max pooling commutes with adding a per-channel
constant and with the (monotone) ReLU, so this is the usual conv -> + bias -> ReLU -> pool, with
those two steps done on a quarter of the values.

Layout. Activations are float arrays (H, W, B, C): row, column, image, channel, C-contiguous, so
(H·W, B·C) and (H·W·B, C) are views of the same memory. Weights keep PyTorch's shapes: conv
(C_out, C_in, 5, 5), softmax layer W (T, N), b (T,).

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

The layers and the network's loss and gradients are pure functions (inputs never modified) and work
in float32 or float64 alike; train_step (and training_step, the step train.train_epoch takes)
update the parameters in place.
"""

from __future__ import annotations

import contextlib
import functools
import math
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import NamedTuple

import numpy as np

from .sgd import momentum_update_
from .softmax import layer_grads

Params = dict[str, np.ndarray]

K = 5  # kernel size; "same" padding K // 2
PIXEL_MEAN, PIXEL_STD = 0.1307, 0.3081  # MNIST training pixels in [0, 1], as in PyTorch's example
N_MAPS = (32, 64)
N_CLASSES = 10
PARAM_NAMES = ("conv1_w", "conv1_b", "conv2_w", "conv2_b", "W", "b")
DECAYED = ("conv1_w", "conv2_w", "W")  # weight decay on kernels and W, never on biases
# Images per piece of a batch that one thread takes through the conv layers, forward and backward,
# in training and in `maps`. Measured, training with batches of 64 on two threads: 13.6 s per epoch
# in pieces of 32, 14.8 in pieces of 16, 16.9 in pieces of 8; `maps` of 10,000 images: 0.99 s in
# pieces of 32, 1.17 s in 16, 1.05 s in 128.
PIECE = 32


# ----------------------------------------------------------------------------------------------
# Layers. Each forward rule is followed by its backward rule.


def to_input(images: np.ndarray, dtype=np.float32) -> np.ndarray:
    """uint8 images (n, 28, 28) -> network input (28, 28, n, 1): pixels / 255, standardised."""
    x = np.multiply(images.transpose(1, 2, 0), dtype(1 / (255 * PIXEL_STD)), dtype=dtype, order="C")
    x -= dtype(PIXEL_MEAN / PIXEL_STD)
    return x[..., None]


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


# ----------------------------------------------------------------------------------------------
# The network.


def param_shapes(config: dict | None = None) -> dict[str, tuple[int, ...]]:
    """The shapes of the front end's parameters (the conv layers; W and b are the softmax layer's)."""
    c1, c2 = N_MAPS
    return {"conv1_w": (c1, 1, K, K), "conv1_b": (c1,), "conv2_w": (c2, c1, K, K), "conv2_b": (c2,)}


def init_params(rng: np.random.Generator, image_size: int = 28, maps: tuple[int, int] = N_MAPS) -> Params:
    """Fresh float32 parameters, PyTorch's default init: every weight and bias of a layer with
    fan-in f drawn from U(-1/√f, 1/√f) (kaiming_uniform with a = √5 for the weights).

    -> {conv1_w (32, 1, 5, 5), conv1_b (32,), conv2_w (64, 32, 5, 5), conv2_b (64,), W (10, 3136),
    b (10,)}; image_size and maps shrink the network for tests (N = maps[1]·(image_size/4)²).
    """
    c1, c2 = maps
    n = c2 * (image_size // 4) ** 2
    shapes = {
        "conv1_w": ((c1, 1, K, K), K * K),
        "conv1_b": ((c1,), K * K),
        "conv2_w": ((c2, c1, K, K), c1 * K * K),
        "conv2_b": ((c2,), c1 * K * K),
        "W": ((N_CLASSES, n), n),
        "b": ((N_CLASSES,), n),
    }
    params = {}
    for name, (shape, fan_in) in shapes.items():
        bound = 1 / math.sqrt(fan_in)
        params[name] = rng.uniform(-bound, bound, shape).astype(np.float32)
    return params


def forward(params: Params, x: np.ndarray, spectrum: Spectrum | None = None) -> tuple[np.ndarray, tuple]:
    """Input x (H, W, B, 1) -> (features (B, N) with N = 64·(H/4)·(W/4) in the C order of (64, H/4, W/4),
    cache for backward). spectrum: conv2's kernel transformed (conv_spectrum), if already made."""
    y1, cols1 = conv_forward(x, params["conv1_w"])
    p1, arg1 = maxpool_forward(y1)
    a1 = bias_relu_forward(p1, params["conv1_b"])
    if spectrum is None:
        spectrum = conv2_spectrum(params, *x.shape[:2])
    y2, X2 = fourier_conv_forward(a1, spectrum)
    p2, arg2 = maxpool_forward(y2)
    a2 = bias_relu_forward(p2, params["conv2_b"])
    features = np.ascontiguousarray(a2.transpose(2, 3, 0, 1)).reshape(a2.shape[2], -1)
    return features, (cols1, arg1, a1, X2, spectrum, arg2, a2)


def backward(params: Params, cache: tuple, d_features: np.ndarray) -> Params:
    """Gradients of the conv layers' parameters from d loss / d features (B, N) and forward's cache."""
    cols1, arg1, a1, X2, spectrum, arg2, a2 = cache
    h, w, B, C = a2.shape
    da2 = d_features.reshape(B, C, h, w).transpose(2, 3, 0, 1)
    dp2, db2 = bias_relu_backward(a2, da2)
    da1, dw2 = fourier_conv_backward(X2, spectrum, maxpool_backward(dp2, arg2))
    dp1, db1 = bias_relu_backward(a1, da1)
    _, dw1 = conv_backward(cols1, params["conv1_w"], maxpool_backward(dp1, arg1), input_grad=False)
    return {"conv1_w": dw1, "conv1_b": db1, "conv2_w": dw2, "conv2_b": db2}


def conv2_spectrum(params: Params, height: int, width: int) -> Spectrum:
    """conv2's kernel transformed for input images of height × width, whose conv2 sees
    (height/2)×(width/2) maps."""
    return conv_spectrum(params["conv2_w"], height // 2, width // 2)


def _quiet(f, *args):
    """f(*args) without NumPy's overflow warnings (np.errstate is per thread): a diverging run is
    reported by the trainer, with advice, from the non-finite loss."""
    with np.errstate(over="ignore", invalid="ignore"):
        return f(*args)


def _piece_loss_and_grads(
    params: Params, spectrum: Spectrum, x: np.ndarray, y: np.ndarray, batch_size: int
) -> tuple[float, np.ndarray, Params]:
    """loss_and_grads of one piece of a batch of batch_size images, as its part of the batch's:
    the piece's forward pass, the softmax layer on its rows, its backward pass."""
    features, cache = forward(params, x, spectrum)
    # Each sample's dL/dz depends on its own logits only: the layer on a piece's rows gives the
    # batch's G on those rows, and the piece's part of the batch's loss, dW and db.
    top = layer_grads(params["W"], params["b"], features, y, batch_size)  # the project's softmax layer
    grads = backward(params, cache, top.G @ params["W"])
    grads["W"], grads["b"] = top.dW, top.db
    return top.loss, top.z, grads


def _pieces(n: int) -> list[slice]:
    """A batch of n images cut into an even number of pieces of at most PIECE images, as equal as
    they can be, so that two threads get the same work: 64 -> 32 + 32, 33 -> 17 + 16, 100 -> 4 × 25."""
    count = -(-n // PIECE)
    count += count % 2 if n > 1 else 0
    size = -(-n // count)
    return [slice(s, min(s + size, n)) for s in range(0, n, size)]


def loss_and_grads(
    params: Params, x: np.ndarray, y: np.ndarray, pool: ThreadPoolExecutor | None = None
) -> tuple[float, np.ndarray, Params]:
    """Mean softmax loss of the whole network and its gradient for every parameter.

    x (H, W, B, 1) input (see to_input), y (B,) labels -> (loss, logits z (B, T), grads with the
    keys and shapes of params). The batch goes through the network in pieces (_pieces), each
    forward and backward on one thread (on the threads of pool if one is given: the same numbers
    either way), so a piece's arrays are still in cache for its backward pass; the pieces' losses
    and gradients are summed in piece order.
    """
    B = x.shape[2]
    pieces = _pieces(B)
    run = map if pool is None else pool.map
    spectrum = conv2_spectrum(params, x.shape[0], x.shape[1])
    parts = run(lambda s: _quiet(_piece_loss_and_grads, params, spectrum, x[:, :, s], y[s], B), pieces)
    loss, first_logits, grads = next(parts)
    logits = [first_logits]
    for part_loss, part_logits, part in parts:  # summed as they come, in piece order
        loss += part_loss
        logits.append(part_logits)
        for name in grads:
            grads[name] += part[name]
    return loss, np.concatenate(logits) if len(logits) > 1 else logits[0], grads


def train_step(
    params: Params,
    velocities: Params,
    x: np.ndarray,
    y: np.ndarray,
    lr: float,
    momentum: float,
    weight_decay: float,
    pool: ThreadPoolExecutor | None = None,
) -> tuple[float, np.ndarray]:
    """One momentum-SGD step on batch x (H, W, B, 1), y (B,): every parameter through
    sgd.momentum_update_, weight decay on conv kernels and W only. Updates params and velocities
    in place; returns (the batch's loss before the update, its logits (B, T))."""
    loss, z, grads = loss_and_grads(params, x, y, pool)
    for name in PARAM_NAMES:
        decay = weight_decay if name in DECAYED else 0.0
        momentum_update_(params[name], grads[name], velocities[name], lr, momentum, decay)
    return loss, z


def shift_images(images: np.ndarray, max_shift: int, rng: np.random.Generator) -> np.ndarray:
    """Each image (n, 28, 28) moved by its own random (dy, dx), each uniform in [-max_shift, max_shift],
    filled with 0 (background) -> new (n, 28, 28) array."""
    n, H, W = images.shape
    s = max_shift
    padded = np.pad(images, ((0, 0), (s, s), (s, s)))
    dy, dx = rng.integers(0, 2 * s + 1, (2, n))
    rows = dy[:, None] + np.arange(H)  # (n, H)
    cols = dx[:, None] + np.arange(W)
    return padded[np.arange(n)[:, None, None], rows[:, :, None], cols[:, None, :]]


@contextlib.contextmanager
def training_step(
    params: Params,
    velocities: Params,
    momentum: float,
    weight_decay: float,
    rng: np.random.Generator | None = None,
    max_shift: int = 0,
) -> Iterator[Callable[[np.ndarray, np.ndarray, float], tuple[float, np.ndarray]]]:
    """The step that trains the whole network on a batch, for train.train_epoch: step(images uint8
    (B, 28, 28), labels (B,), lr) -> (the batch's loss before the update, its logits (B, T)),
    updating params and velocities in place (train_step). With max_shift > 0 each batch's images
    are shifted at random first (shift_images, drawing from rng).

    While it is used, two threads, each with a one-thread BLAS, share the pieces of every batch: the
    layers' elementwise work is split over both cores too, not only the matrix products.
    """
    from threadpoolctl import threadpool_limits

    keep_freed_memory()

    def step(images: np.ndarray, y: np.ndarray, lr: float) -> tuple[float, np.ndarray]:
        batch = images if max_shift == 0 else shift_images(images, max_shift, rng)
        return train_step(params, velocities, to_input(batch), y, lr, momentum, weight_decay, pool)

    with threadpool_limits(1, user_api="blas"), ThreadPoolExecutor(2) as pool:
        yield step


def maps(images: np.ndarray, params: Params, progress: bool = False) -> np.ndarray:
    """uint8 images (n, 28, 28) -> float32 feature maps (n, 64, 7, 7), the input of the softmax layer.

    PIECE images at a time on two threads (BLAS held to one thread each), so memory stays bounded.
    """
    from threadpoolctl import threadpool_limits

    keep_freed_memory()
    n = len(images)
    out = np.empty((n, params["conv2_w"].shape[0], 7, 7), np.float32)

    def work(spectrum: Spectrum, s: int) -> int:
        f, _ = forward(params, to_input(images[s : s + PIECE]), spectrum)
        out[s : s + len(f)] = f.reshape(len(f), *out.shape[1:])
        return len(f)

    bar = _bar(n, progress)
    # The spectrum too is made with a one-thread BLAS, as in training: the maps then do not depend
    # on how many threads the caller's BLAS has.
    with threadpool_limits(1, user_api="blas"), ThreadPoolExecutor(2) as pool:
        spectrum = conv2_spectrum(params, *images.shape[1:])
        for done in pool.map(functools.partial(work, spectrum), range(0, n, PIECE)):
            bar(done)
    bar(0, close=True)
    return out


def keep_freed_memory() -> None:
    """Ask glibc's malloc to keep freed memory for reuse (elsewhere: nothing happens).

    Every training step allocates and frees tens of MB in blocks of a few MB. By default glibc hands
    such memory back to the kernel and the next step faults it in again, page by page: measured
    with batches of 64, ~6,000 page faults (25 MB) and 10-13 ms of kernel time per step, beside
    ~50 ms of user time; with this, none. Blocks up to 32 MB then come from the heap, which is no
    longer trimmed, so the process keeps what it freed for the next step.
    """
    import ctypes

    M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3  # from glibc's malloc.h
    try:
        libc = ctypes.CDLL("libc.so.6")
        libc.mallopt(M_MMAP_THRESHOLD, 32 << 20)
        libc.mallopt(M_TRIM_THRESHOLD, 1 << 30)
    except (OSError, AttributeError):
        pass


def _bar(total: int, progress: bool) -> Callable:
    if not progress:
        return lambda m, close=False: None
    from tqdm import tqdm

    bar = tqdm(total=total, desc="cnn features", unit="img", leave=False)
    return lambda m, close=False: bar.close() if close else bar.update(m)
