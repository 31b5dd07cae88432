"""Mini-batch SGD with momentum: the update rule, and one step of the softmax layer.

The update is PyTorch's `torch.optim.SGD` (dampening 0, no Nesterov), with weight decay given
per parameter, as with its parameter groups:

    g ← g + weight_decay·p        (L2 on W; the bias gets weight_decay 0)
    v ← momentum·v + g
    p ← p − lr·v

Every parameter that training changes goes through `momentum_update_`; nothing else changes one.
"""

from __future__ import annotations

import numpy as np

from .softmax import layer_grads


def momentum_update_(
    p: np.ndarray, g: np.ndarray, v: np.ndarray, lr: float, momentum: float, weight_decay: float = 0.0
):
    """One momentum-SGD update of parameter p with gradient g, in place on p and its velocity v.

    p, g, v: arrays of one shape. g is not modified.
    """
    if weight_decay:
        g = g + weight_decay * p
    v *= momentum
    v += g
    p -= lr * v


def sgd_step(
    W: np.ndarray,
    b: np.ndarray,
    velocity: tuple[np.ndarray, np.ndarray],
    X: np.ndarray,
    y: np.ndarray,
    lr: float,
    momentum: float,
    weight_decay: float,
) -> tuple[float, np.ndarray]:
    """One step on batch X (B, N), y (B,): gradient of the mean softmax loss, L2 on W only,
    momentum, update of W (T, N), b (T,) and their velocities, in place.

    Returns (the batch's mean softmax loss before the update, its logits (B, T)).
    """
    loss, z, dW, db, _ = layer_grads(W, b, X, y)
    momentum_update_(W, dW, velocity[0], lr, momentum, weight_decay)
    momentum_update_(b, db, velocity[1], lr, momentum, 0.0)
    return loss, z
