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

The layers (convolutions, pooling, bias and ReLU, each forward rule followed by its backward rule)
are in cnn_layers.py; conv1 runs by im2col, conv2 through the Fourier domain. The layers and the
network's loss and gradients are pure functions (inputs never modified) and work in float32 or
float64 alike; train_step (and training_step, the step train.train_epoch takes) update the
parameters in place.
"""

from __future__ import annotations

import contextlib
import functools
import math
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from .augment import Distortion
from .cnn_layers import (
    BN_EPS,
    K,
    Spectrum,
    bias_relu_backward,
    bias_relu_forward,
    bn_relu_backward,
    bn_relu_forward,
    conv_backward,
    conv_forward,
    conv_spectrum,
    fourier_conv_backward,
    fourier_conv_forward,
    maxpool_backward,
    maxpool_forward,
    scale_relu_forward,
)
from .sgd import momentum_update_
from .softmax import layer_grads

Params = dict[str, np.ndarray]

PIXEL_MEAN, PIXEL_STD = 0.1307, 0.3081  # MNIST training pixels in [0, 1], as in PyTorch's example
N_MAPS = (32, 64)
N_CLASSES = 10
PARAM_NAMES = ("conv1_w", "conv1_b", "conv2_w", "conv2_b", "W", "b")
DECAYED = ("conv1_w", "conv2_w", "W")  # weight decay on kernels and W, never on biases (nor batch norm's γ, β)
RUNNING = ("_mean", "_var")  # batch norm's running statistics: kept by training, not by SGD
BN_MOMENTUM = 0.1  # each piece's statistics weigh this much in the running ones (PyTorch's default)
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


# ----------------------------------------------------------------------------------------------
# The network.


def param_shapes(config: dict | None = None) -> dict[str, tuple[int, ...]]:
    """The shapes of the front end's parameters (the conv layers; W and b are the softmax layer's).
    With config["batch_norm"], each conv's bias gives way to batch norm's γ and β (a bias before
    batch norm would be cancelled by it) and its running mean and variance."""
    c1, c2 = N_MAPS
    if config and config.get("batch_norm"):
        bn = lambda k, c: {f"bn{k}_g": (c,), f"bn{k}_b": (c,), f"bn{k}_mean": (c,), f"bn{k}_var": (c,)}  # noqa: E731
        return {"conv1_w": (c1, 1, K, K)} | bn(1, c1) | {"conv2_w": (c2, c1, K, K)} | bn(2, c2)
    return {"conv1_w": (c1, 1, K, K), "conv1_b": (c1,), "conv2_w": (c2, c1, K, K), "conv2_b": (c2,)}


def init_params(
    rng: np.random.Generator, image_size: int = 28, maps: tuple[int, int] = N_MAPS, batch_norm: bool = False
) -> Params:
    """Fresh float32 parameters, PyTorch's default init: every weight and bias of a layer with
    fan-in f drawn from U(-1/√f, 1/√f) (kaiming_uniform with a = √5 for the weights); with
    batch_norm, γ = 1, β = 0, running mean 0 and variance 1 in place of the conv biases.

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
        if batch_norm and name in ("conv1_b", "conv2_b"):
            continue
        bound = 1 / math.sqrt(fan_in)
        params[name] = rng.uniform(-bound, bound, shape).astype(np.float32)
    if batch_norm:
        for k, c in ((1, c1), (2, c2)):
            params |= {f"bn{k}_g": np.ones(c, np.float32), f"bn{k}_b": np.zeros(c, np.float32),
                       f"bn{k}_mean": np.zeros(c, np.float32), f"bn{k}_var": np.ones(c, np.float32)}  # fmt: skip
    return params


def trainable(params: Params) -> list[str]:
    """The parameters SGD updates: all but batch norm's running statistics."""
    return [name for name in params if not name.endswith(RUNNING)]


def _activate(params: Params, k: int, p: np.ndarray, train: bool) -> tuple[np.ndarray, tuple | None]:
    """Conv k's pooled maps p (..., C) -> its activations: + bias and ReLU, or with batch norm,
    normalised by this batch's statistics (train; the cache bn_relu_backward needs) or by the
    running ones (bn_affine)."""
    if f"bn{k}_g" not in params:
        return bias_relu_forward(p, params[f"conv{k}_b"]), None
    if train:
        return bn_relu_forward(p, params[f"bn{k}_g"], params[f"bn{k}_b"])
    return scale_relu_forward(p, *bn_affine(params, k)), None


def bn_affine(params: Params, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Batch norm k with its running statistics, as a per-channel scale and shift:
    γ·(x − mean)/√(var + ε) + β = x·scale + shift."""
    g, mean, var = params[f"bn{k}_g"], params[f"bn{k}_mean"], params[f"bn{k}_var"]
    scale = (g / np.sqrt(var + BN_EPS)).astype(g.dtype)
    return scale, (params[f"bn{k}_b"] - mean * scale).astype(g.dtype)


def forward(
    params: Params, x: np.ndarray, spectrum: Spectrum | None = None, train: bool = False
) -> tuple[np.ndarray, tuple]:
    """Input x (H, W, B, 1) -> (features (B, N) with N = 64·(H/4)·(W/4) in the C order of (64, H/4, W/4),
    cache for backward). spectrum: conv2's kernel transformed (conv_spectrum), if already made.
    train: batch norm (if the network has it) uses this batch's statistics, as in training;
    otherwise its running statistics, as at eval and predict."""
    y1, cols1 = conv_forward(x, params["conv1_w"])
    p1, arg1 = maxpool_forward(y1)
    a1, bn1 = _activate(params, 1, p1, train)
    if spectrum is None:
        spectrum = conv2_spectrum(params, *x.shape[:2])
    y2, X2 = fourier_conv_forward(a1, spectrum)
    p2, arg2 = maxpool_forward(y2)
    a2, bn2 = _activate(params, 2, p2, train)
    features = np.ascontiguousarray(a2.transpose(2, 3, 0, 1)).reshape(a2.shape[2], -1)
    return features, (cols1, arg1, a1, X2, spectrum, arg2, a2, bn1, bn2)


def _deactivate(params: Params, k: int, a: np.ndarray, cache: tuple | None, da: np.ndarray, grads: Params):
    """The gradient through _activate (training): d loss / d pooled maps; the bias's or batch norm's
    γ and β gradients into grads."""
    if cache is None:
        dp, grads[f"conv{k}_b"] = bias_relu_backward(a, da)
        return dp
    dp, grads[f"bn{k}_g"], grads[f"bn{k}_b"] = bn_relu_backward(a, cache, params[f"bn{k}_g"], da)
    return dp


def backward(params: Params, cache: tuple, d_features: np.ndarray) -> Params:
    """Gradients of the conv layers' parameters from d loss / d features (B, N) and forward's cache."""
    cols1, arg1, a1, X2, spectrum, arg2, a2, bn1, bn2 = cache
    h, w, B, C = a2.shape
    grads: Params = {}
    da2 = d_features.reshape(B, C, h, w).transpose(2, 3, 0, 1)
    dp2 = _deactivate(params, 2, a2, bn2, da2, grads)
    da1, grads["conv2_w"] = fourier_conv_backward(X2, spectrum, maxpool_backward(dp2, arg2))
    dp1 = _deactivate(params, 1, a1, bn1, da1, grads)
    _, grads["conv1_w"] = conv_backward(cols1, params["conv1_w"], maxpool_backward(dp1, arg1), input_grad=False)
    return grads


def update_running(params: Params, stats: list[tuple]) -> None:
    """Batch norm's running statistics, after a step: each piece's (mean, biased variance, values
    per channel) per layer, in piece order, as PyTorch's BatchNorm2d updates them at each forward:
    running = (1 − m)·running + m·batch, the variance unbiased."""
    for piece in stats:
        for k, (mean, var, n) in enumerate(piece, start=1):
            params[f"bn{k}_mean"] *= 1 - BN_MOMENTUM
            params[f"bn{k}_mean"] += BN_MOMENTUM * mean
            params[f"bn{k}_var"] *= 1 - BN_MOMENTUM
            params[f"bn{k}_var"] += (BN_MOMENTUM * n / max(n - 1, 1)) * var


def conv2_spectrum(params: Params, height: int, width: int) -> Spectrum:
    """conv2's kernel transformed for input images of height × width, whose conv2 sees
    (height/2)×(width/2) maps."""
    return conv_spectrum(params["conv2_w"], height // 2, width // 2)


def _known_spectrum(params: Params, height: int, width: int) -> Spectrum:
    """conv2_spectrum, remembered by the kernel's contents (a digest of its bytes: training updates
    the array in place, so its identity says nothing): a model predicting one image at a time
    transforms its kernel once, not at every image."""
    import hashlib

    w = np.ascontiguousarray(params["conv2_w"])
    key = (w.shape, w.dtype.str, height, width, hashlib.blake2b(w.tobytes(), digest_size=16).digest())
    found = _SPECTRA.get(key)
    if found is None:
        found = _SPECTRA[key] = conv2_spectrum(params, height, width)
        while len(_SPECTRA) > 4:
            del _SPECTRA[next(iter(_SPECTRA))]
    return found


_SPECTRA: dict = {}


def _quiet(f, *args):
    """f(*args) without NumPy's overflow warnings (np.errstate is per thread): a diverging run is
    reported by the trainer, with advice, from the non-finite loss."""
    with np.errstate(over="ignore", invalid="ignore"):
        return f(*args)


def _piece_loss_and_grads(
    params: Params, spectrum: Spectrum, x: np.ndarray, y: np.ndarray, batch_size: int
) -> tuple[float, np.ndarray, Params, tuple]:
    """loss_and_grads of one piece of a batch of batch_size images, as its part of the batch's:
    the piece's forward pass, the softmax layer on its rows, its backward pass."""
    features, cache = forward(params, x, spectrum, train=True)
    # Each sample's dL/dz depends on its own logits only: the layer on a piece's rows gives the
    # batch's G on those rows, and the piece's part of the batch's loss, dW and db. (Batch norm's
    # statistics are the piece's own: "ghost" batch norm over PIECE images.)
    top = layer_grads(params["W"], params["b"], features, y, batch_size)  # the project's softmax layer
    grads = backward(params, cache, top.G @ params["W"])
    grads["W"], grads["b"] = top.dW, top.db
    stats = tuple((bn[2], bn[3], bn[0].size // bn[0].shape[-1]) for bn in cache[7:] if bn is not None)
    return top.loss, top.z, grads, stats


def _pieces(n: int) -> list[slice]:
    """A batch of n images cut into an even number of pieces of at most PIECE images, as equal as
    they can be, so that two threads get the same work: 64 -> 32 + 32, 33 -> 17 + 16, 100 -> 4 × 25."""
    count = -(-n // PIECE)
    count += count % 2 if n > 1 else 0
    size = -(-n // count)
    return [slice(s, min(s + size, n)) for s in range(0, n, size)]


def loss_and_grads(
    params: Params,
    x: np.ndarray,
    y: np.ndarray,
    pool: ThreadPoolExecutor | None = None,
    stats: list | None = None,
    spectrum: Spectrum | None = None,
) -> tuple[float, np.ndarray, Params]:
    """Mean softmax loss of the whole network and its gradient for every parameter.

    x (H, W, B, 1) input (see to_input), y (B,) labels -> (loss, logits z (B, T), grads with the
    keys and shapes of params). The batch goes through the network in pieces (_pieces), each
    forward and backward on one thread (on the threads of pool if one is given: the same numbers
    either way), so a piece's arrays are still in cache for its backward pass; the pieces' losses
    and gradients are summed in piece order. With batch norm, each piece's statistics are appended
    to `stats` (for update_running). spectrum: conv2_spectrum of params, if already made.
    """
    B = x.shape[2]
    pieces = _pieces(B)
    run = map if pool is None else pool.map
    if spectrum is None:
        spectrum = conv2_spectrum(params, x.shape[0], x.shape[1])
    parts = run(lambda s: _quiet(_piece_loss_and_grads, params, spectrum, x[:, :, s], y[s], B), pieces)
    loss, first_logits, grads, first_stats = next(parts)
    logits, seen = [first_logits], [first_stats]
    for part_loss, part_logits, part, part_stats in parts:  # summed as they come, in piece order
        loss += part_loss
        logits.append(part_logits)
        seen.append(part_stats)
        for name in grads:
            grads[name] += part[name]
    if stats is not None and seen[0]:
        stats.extend(seen)
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
    spectrum: Spectrum | None = None,
) -> tuple[float, np.ndarray]:
    """One momentum-SGD step on batch x (H, W, B, 1), y (B,): every parameter through
    sgd.momentum_update_, weight decay on conv kernels and W only; batch norm's running statistics
    after it. Updates params and velocities in place; returns (the batch's loss before the update,
    its logits (B, T))."""
    stats: list = []
    loss, z, grads = loss_and_grads(params, x, y, pool, stats, spectrum)
    for name in trainable(params):
        decay = weight_decay if name in DECAYED else 0.0
        momentum_update_(params[name], grads[name], velocities[name], lr, momentum, decay)
    update_running(params, stats)
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
    distortion: Distortion | None = None,
) -> Iterator[Callable[[np.ndarray, np.ndarray, float], tuple[float, np.ndarray]]]:
    """The step that trains the whole network on a batch, for train.train_epoch: step(images uint8
    (B, 28, 28), labels (B,), lr) -> (the batch's loss before the update, its logits (B, T)),
    updating params and velocities in place (train_step). Each batch's images are first distorted
    at random, drawing from rng: by their own affine maps (augment.distort, with `distortion`),
    or else shifted by whole pixels (shift_images, up to max_shift).

    While it is used, two threads, each with a one-thread BLAS, share the pieces of every batch: the
    layers' elementwise work is split over both cores too, not only the matrix products.
    """
    from threadpoolctl import threadpool_limits

    from .augment import distort

    keep_freed_memory()

    def inputs(images: np.ndarray) -> np.ndarray:
        if distortion is not None:
            return to_input(distort(images, distortion, rng))
        return to_input(images if max_shift == 0 else shift_images(images, max_shift, rng))

    def step(images: np.ndarray, y: np.ndarray, lr: float) -> tuple[float, np.ndarray]:
        # The batch's distortion on one of the pool's threads while conv2's kernel is transformed
        # here: the two parts of a step that precede its pieces, at once.
        x = pool.submit(inputs, images)
        spectrum = conv2_spectrum(params, *images.shape[1:])
        return train_step(params, velocities, x.result(), y, lr, momentum, weight_decay, pool, spectrum)

    with threadpool_limits(1, user_api="blas"), ThreadPoolExecutor(2) as pool:
        yield step


def maps(images: np.ndarray, params: Params, progress: bool = False) -> np.ndarray:
    """uint8 images (n, 28, 28) -> float32 feature maps (n, 64, 7, 7), the input of the softmax layer.

    PIECE images at a time on two threads (BLAS held to one thread each), so memory stays bounded.
    """
    from .threads import one_blas_thread

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
    with one_blas_thread():
        spectrum = _known_spectrum(params, *images.shape[1:])
        if n <= PIECE:  # one piece (a page's digit): no threads to start
            bar(work(spectrum, 0))
        else:
            with ThreadPoolExecutor(2) as pool:
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
