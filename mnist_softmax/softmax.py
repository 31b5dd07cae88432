"""The math of a softmax classifier: pure NumPy functions, no I/O, inputs never modified.

Notation used in every docstring:
    B  batch size, N  feature length (784 for pixels, 3136 for conv), T  number of classes (10).
    X  (B, N) features, y  (B,) integer labels in [0, T), W  (T, N) weights, b  (T,) bias.

logits = X @ W.T + b is the row-wise form of the column form  z = W·x + b.
"""

from __future__ import annotations

import operator
from typing import NamedTuple

import numpy as np


def logits(X: np.ndarray, W: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Class scores. X (B, N), W (T, N), b (T,) -> (B, T)."""
    return X @ W.T + b


class SoftmaxSteps(NamedTuple):
    """The steps of softmax(z), each as computed: what `predict --explain` and the page show."""

    shifted: np.ndarray  # (..., T) z − max z
    exp: np.ndarray  # (..., T) exp(z − max z), the largest exactly 1
    total: np.ndarray  # (..., 1) their sum
    p: np.ndarray  # (..., T) exp / total: the probabilities


def softmax_steps(z: np.ndarray) -> SoftmaxSteps:
    """softmax(z) step by step. z (..., T) -> SoftmaxSteps, each array in z's dtype.

    The row max is subtracted first: softmax is unchanged by a shift, and exp then never overflows.
    """
    shifted = z - z.max(axis=-1, keepdims=True)
    e = np.exp(shifted)
    total = e.sum(axis=-1, keepdims=True)
    return SoftmaxSteps(shifted, e, total, e / total)


def softmax(z: np.ndarray) -> np.ndarray:
    """Probabilities along the last axis. z (..., T) -> (..., T), each row in (0, 1) summing to 1:
    the last of softmax_steps."""
    return softmax_steps(z).p


def log_softmax(z: np.ndarray) -> np.ndarray:
    """log softmax(z) along the last axis, via log-sum-exp. z (..., T) -> (..., T).

    Computed as (z - max) - log(sum(exp(z - max))), never as log(softmax(z)), which gives -inf for
    probabilities that underflow to zero.
    """
    shifted = z - z.max(axis=-1, keepdims=True)
    return shifted - np.log(np.exp(shifted).sum(axis=-1, keepdims=True))


def check_labels(y, n_rows: int, T: int, name: str = "labels", rows: str = "rows of logits (or probabilities)"):
    """y as an integer array (n_rows,) of classes in [0, T), or ValueError naming the argument
    (`name`): a label of -1 would otherwise index class T - 1 and give its loss without a word."""
    y = np.asarray(y)
    if y.dtype.kind not in "iu" or y.ndim != 1:
        raise ValueError(f"{name} must be a 1-D array of integers, not {y.dtype} of shape {y.shape}")
    if len(y) != n_rows:
        raise ValueError(f"{n_rows} {rows} but {len(y)} {name}")
    if len(y) and (y.min() < 0 or y.max() >= T):
        raise ValueError(f"{name} must be classes in [0, {T}), found {int(y.min())}..{int(y.max())}")
    return y


def _check_batch(z: np.ndarray, name: str = "z") -> None:
    """ValueError for a batch of no rows: its mean loss is 0/0, which NumPy would give as NaN with a warning."""
    if len(z) == 0:
        raise ValueError(f"{name} holds no rows: the mean loss of an empty batch is not defined")


def softmax_loss(z: np.ndarray, y: np.ndarray) -> float:
    """Mean softmax loss, -log p(true class), straight from logits. z (B, T), y (B,) -> scalar.

    Finite for any finite logits (log-sum-exp), however small the probability of the true class.
    An empty batch is refused (ValueError): its mean is not defined.
    """
    _check_batch(z)
    y = check_labels(y, len(z), z.shape[-1])
    return float(-log_softmax(z)[np.arange(len(y)), y].mean()) + 0.0  # + 0.0: a loss of 0 is 0, never −0


def cross_entropy(P: np.ndarray, y: np.ndarray) -> float:
    """Mean cross entropy of given probabilities against integer labels. P (B, T), y (B,) -> scalar.

    Equals softmax_loss(z, y) when P = softmax(z). P must hold probabilities, not logits. A true
    class whose probability underflowed to 0 gives inf (what -log 0 is), without a warning.
    """
    _check_batch(P, "P")
    y = check_labels(y, len(P), P.shape[-1])
    with np.errstate(divide="ignore"):
        return float(-np.log(P[np.arange(len(y)), y]).mean()) + 0.0


def softmax_loss_grad(z: np.ndarray, y: np.ndarray, batch_size: int | None = None) -> tuple[float, np.ndarray]:
    """Mean softmax loss and its gradient with respect to the logits. z (B, T), y (B,) -> (loss, (B, T)).

    dL/dz = (P - Y) / B with P = softmax(z) and Y the one-hot labels. With batch_size, the rows
    are part of a batch of that size: the loss is their sum over batch_size and G = (P - Y) /
    batch_size, so the parts of a batch add up to the batch's loss and give its G on their rows.
    The work is done on a (T, B) copy, where every per-sample reduction runs along contiguous rows
    (for T = 10, 1.7× faster than along rows of 10); G is returned as a (B, T) view of it, so G.T is
    contiguous for G.T @ X.
    """
    y = check_labels(y, len(z), z.shape[-1])
    if batch_size is None:
        _check_batch(z)
    else:
        batch_size = operator.index(batch_size)  # an integer, not 7.5 or nan
        if batch_size < max(len(y), 1):
            raise ValueError(f"batch_size {batch_size} is less than the {len(y)} rows given, or than 1")
    B = len(y) if batch_size is None else batch_size
    cols = np.arange(len(y))
    zt = np.array(z.T, order="C")
    zt -= np.maximum.reduce(zt, axis=0)
    true = zt[y, cols]
    np.exp(zt, out=zt)
    s = np.add.reduce(zt, axis=0)
    loss = float((np.log(s).sum(dtype=np.float64) - true.sum(dtype=np.float64)) / B)
    zt /= s * zt.dtype.type(B)
    zt[y, cols] -= zt.dtype.type(1 / B)
    return loss, zt.T


class LayerGrads(NamedTuple):
    """The softmax layer's forward and backward pass on a batch (see layer_grads)."""

    loss: float  # mean softmax loss
    z: np.ndarray  # (B, T) logits
    dW: np.ndarray  # (T, N)
    db: np.ndarray  # (T,)
    G: np.ndarray  # (B, T) dL/dz = (P - Y) / B; a layer below gets dL/dX = G @ W


def layer_grads(
    W: np.ndarray, b: np.ndarray, X: np.ndarray, y: np.ndarray, batch_size: int | None = None
) -> LayerGrads:
    """The softmax layer's forward and backward pass on a batch: the one home of its gradient.

    W (T, N), b (T,), X (B, N), y (B,) -> (mean softmax loss, logits z (B, T), dW (T, N), db (T,), G (B, T)).
    With P = softmax(z) and Y the one-hot labels, G = dL/dz = (P - Y) / B, dW = Gᵀ X, db = Σ_B G.
    batch_size: the rows are part of a batch of that size (see softmax_loss_grad); the returned
    loss, dW and db are then their part of the batch's, to be summed over the parts.
    """
    z = logits(X, W, b)
    loss, G = softmax_loss_grad(z, y, batch_size)
    return LayerGrads(loss, z, G.T @ X, G.sum(axis=0), G)


def loss_and_grad(
    W: np.ndarray, b: np.ndarray, X: np.ndarray, y: np.ndarray, l2: float = 0.0
) -> tuple[float, np.ndarray, np.ndarray]:
    """The training objective, softmax loss + l2/2·||W||² (b is not penalised), and its gradient.

    W (T, N), b (T,), X (B, N), y (B,) -> (loss, dW (T, N), db (T,)). The gradient of the penalty,
    l2·W, is what sgd.momentum_update_ adds as weight decay.
    """
    loss, _, dW, db, _ = layer_grads(W, b, X, y)
    return loss + 0.5 * l2 * float(np.sum(W * W)), dW + l2 * W, db


def predict_proba(X: np.ndarray, W: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Class probabilities. X (B, N), W (T, N), b (T,) -> (B, T)."""
    return softmax(logits(X, W, b))
