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

from .cnn_layers import (
    K,
    Spectrum,
    bias_relu_backward,
    bias_relu_forward,
    conv_backward,
    conv_forward,
    conv_spectrum,
    fourier_conv_backward,
    fourier_conv_forward,
    maxpool_backward,
    maxpool_forward,
)
from .sgd import momentum_update_
from .softmax import layer_grads

Params = dict[str, np.ndarray]

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
