"""A trained classifier: everything inference needs, and the two numbers every command reports.

Model holds the front end's name and parameters, the standardiser and the T×N softmax layer;
`evaluate` is the one function that computes a mean loss and an accuracy, so `train`, `eval` and
the benchmarks agree to the last bit; `classify` turns MNIST-form digits into probabilities.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass

import numpy as np

from .features import FRONT_ENDS, FrontEnd, Params, features, mnist_rows, standardize_
from .softmax import logits, predict_proba, softmax_loss

N_CLASSES = 10
# Trained values stay far inside this; beyond it a product of weights and features could overflow
# float32 (3.4e38) and turn a score into NaN. Training stops as diverged before it keeps such
# weights, and checkpoints holding them are refused.
MAX_ABS = 1e9
MIN_SCALE = 1e-6  # the smallest std_floor: standardised features stay within ±MAX_ABS / MIN_SCALE


@dataclass
class Model:
    """Front end, standardiser, W, b: an image in, probabilities out."""

    front_end: str  # a key of features.FRONT_ENDS
    fe_params: Params
    mean: np.ndarray  # (N,) float32
    scale: np.ndarray  # (N,) float32
    W: np.ndarray  # (T, N) float32
    b: np.ndarray  # (T,) float32

    @property
    def front(self) -> FrontEnd:
        return FRONT_ENDS[self.front_end]

    def features(self, images: np.ndarray) -> np.ndarray:
        """uint8 images (n, 28, 28) -> standardised float32 features (n, N)."""
        return features(images, self.front, self.fe_params, self.mean, self.scale)


def split_features(
    model: Model, mnist, part: str, idx, cache_dir=None, progress: bool = False, about: dict | None = None
) -> np.ndarray:
    """Standardised features (n, N) of rows idx of part "train" or "test" of MNIST, by the path
    both `train`'s final scores and `eval` take (features.mnist_rows, then the standardiser), so
    their numbers agree to the last bit."""
    rows = mnist_rows(model.front, model.fe_params, mnist, cache_dir, progress, about)
    return standardize_(rows(part, idx), model.mean, model.scale)


def classify(model: Model, digits: np.ndarray) -> np.ndarray:
    """uint8 digits (n, 28, 28) in MNIST form -> probabilities (n, T)."""
    return predict_proba(model.features(digits), model.W, model.b)


def logit_chunks(W: np.ndarray, b: np.ndarray, X: np.ndarray, chunk: int = 8192) -> Iterator[np.ndarray]:
    """The logits of X (n, N) as (≤chunk, T) blocks, each computed with one BLAS thread.

    The same X gives the same bits whatever the machine's thread count: a product split over
    several threads can round differently, and `eval` must equal what `train` reported.
    """
    from .threads import one_blas_thread

    with one_blas_thread():
        for i in range(0, len(X), chunk):
            yield logits(X[i : i + chunk], W, b)


def evaluate(
    W: np.ndarray,
    b: np.ndarray,
    X: np.ndarray,
    y: np.ndarray,
    chunk: int = 8192,
    on_logits: Callable[[np.ndarray], None] | None = None,
) -> tuple[float, float]:
    """Mean softmax loss and accuracy of (W, b) on X (n, N), y (n,), n > 0 (ValueError for none).
    Chunked to bound memory; on_logits(z), if given, sees each chunk's logits (≤chunk, T) as they are
    scored (scoring.score keeps their probabilities: the logits are computed once)."""
    if len(X) == 0:
        raise ValueError("X holds no rows: the mean loss and accuracy of no examples are not defined")
    total_loss = 0.0
    correct = 0
    for i, z in zip(range(0, len(X), chunk), logit_chunks(W, b, X, chunk), strict=True):
        total_loss += softmax_loss(z, y[i : i + chunk]) * len(z)
        correct += int((z.argmax(axis=1) == y[i : i + chunk]).sum())
        if on_logits is not None:
            on_logits(z)
    return total_loss / len(X), correct / len(X)
