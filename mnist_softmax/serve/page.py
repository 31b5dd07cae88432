"""The numbers behind the local page's pictures, and its learning step. Pure: no I/O.

predict.predict_digit makes the prediction itself, the very record `predict --json --explain`
prints, from one explain.Explanation (the features and logits of the digit, computed once);
`page_numbers` adds what the page draws beside it from that same Explanation, and `learn_step`
takes its step with the function training uses (softmax.layer_grads, sgd.momentum_update_).
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np

from ..display import number
from ..explain import Explanation
from ..model import Model
from ..sgd import momentum_update_
from ..softmax import layer_grads


def page_numbers(model: Model, e: Explanation) -> dict:
    """What the page draws for one digit, from its Explanation e, JSON-ready:

    x         the N-vector fed to W (the standardised features; for conv and cnn the 64 maps of
              7×7, flattened in C order: x[c·49 + h·7 + w] is map c at (h, w))
    cells     [H, W] of the grid the pictures below are drawn on (28×28 for pixels, 7×7 otherwise)
    contributions  (T, H·W): where each class's score comes from, W_k ⊙ x summed over the maps at
              each cell of the grid; with b_k they add up to the logit z_k
    bias      b (T,)
    and with a label y, the gradient of its softmax loss (B = 1), from the explanation's p:
    grad_z    dL/dz = p − onehot(y) (T,)
    grad_W    dL/dW = (p − onehot(y)) xᵀ, summed over the maps at each cell (T, H·W)
    """
    C, H, W = model.front.map_shape
    contributions = per_cell(model.W * e.x, C)
    x_cells = per_cell(e.x[None], C)[0]
    out = {
        "x": compact(e.x),
        "x_cells": compact(x_cells),
        "cells": [H, W],
        "contributions": compact(contributions),
        "bias": model.b.tolist(),
        "wx": (e.z - model.b).tolist(),  # W_k·x, the sum of each class's contributions
        # Each figure's one scale, so that its pictures compare: the largest |value| in it.
        "x_limit": _limit(e.x),
        "x_cells_limit": _limit(x_cells),
        "contributions_limit": _limit(contributions),
    }
    if e.label is not None:
        grad_z = e.p - np.eye(len(e.p))[e.label]
        grad_W = per_cell(np.outer(grad_z, e.x), C)
        out |= {"grad_z": grad_z.tolist(), "grad_W": compact(grad_W), "grad_limit": _limit(grad_W)}
        out["grad_row_max"] = np.abs(grad_W).max(axis=1).tolist()
    return out


def _limit(a: np.ndarray) -> float:
    """A figure's shared colour scale: its largest |value| (1 where all are 0)."""
    top = float(np.abs(a).max()) if a.size else 0.0
    return top if top > 0 else 1.0


def per_cell(a: np.ndarray, maps: int) -> np.ndarray:
    """(T, C·H·W) -> (T, H·W): each class's values summed over the C maps at each cell."""
    return a.reshape(len(a), maps, -1).sum(axis=1)


def compact(a: np.ndarray, digits: int = 5) -> list:
    """a (n,) or (rows, n) as lists of floats, each row rounded to about `digits` significant digits
    of its own largest value: enough to draw and to read off, at a fraction of the JSON of full
    float64 reprs (a row of tiny values keeps its digits: it is not rounded to the others' scale)."""
    a = np.asarray(a, np.float64)
    if a.ndim == 2:
        return [compact(row, digits) for row in a]
    top = float(np.abs(a).max()) if a.size else 0.0
    decimals = digits - 1 - math.floor(math.log10(top)) if top > 0 and math.isfinite(top) else digits
    return np.round(a, max(0, decimals)).tolist()


def learn_step(model: Model, x: np.ndarray, label: int, lr: float) -> Model:
    """The model after one step of plain SGD (sgd.momentum_update_ with no momentum, no weight
    decay) on the softmax layer, for one digit's features x (N,) and its true label: W and b move
    by −lr · dL/dW and −lr · dL/db (softmax.layer_grads, as in training). The front end and the
    standardiser stay as they are, and so do the digit's features."""
    top = layer_grads(model.W, model.b, x[None], np.array([label]))
    W, b = model.W.copy(), model.b.copy()
    momentum_update_(W, top.dW, np.zeros_like(W), lr, 0.0)
    momentum_update_(b, top.db, np.zeros_like(b), lr, 0.0)
    return dataclasses.replace(model, W=W, b=b)


def delta_z(model: Model, x: np.ndarray, p: np.ndarray, lr: float, label: int) -> dict:
    """What one learning step does to the logits, beside the lesson's formula for it: with x fixed,
    W ← W − lr·(p − y)xᵀ and b ← b − lr·(p − y) move z = W·x + b by Δz = −lr·(‖x‖² + 1)·(p − y).
    "measured" is (W' − W)·x + (b' − b) of the very step (page.learn_step) taken in float64 on the
    model's weights: the float32 weights the page keeps round W' by about 1e-7 of each weight, which
    would blur the last digit shown. Both to the same decimals: three significant digits of the
    largest change."""
    x = x.astype(np.float64)
    wide = dataclasses.replace(model, W=model.W.astype(np.float64), b=model.b.astype(np.float64))
    moved = learn_step(wide, x, label, lr)
    measured = (moved.W - wide.W) @ x + (moved.b - wide.b)
    formula = -lr * (float(x @ x) + 1) * (p - np.eye(len(p))[label])
    top = float(np.abs(formula).max())
    decimals = min(10, max(3, 2 - int(np.floor(np.log10(top))) if top > 0 else 3))
    same = lambda v: f"{v:.{decimals}f}".replace(f"-{0:.{decimals}f}", f"{0:.{decimals}f}")  # noqa: E731
    return {
        "x_norm2": number(float(x @ x)),
        "factor": number(lr * (float(x @ x) + 1)),
        "measured": [same(v) for v in measured],
        "formula": [same(v) for v in formula],
    }


def weight_numbers(model: Model, base: Model | None = None) -> dict:
    """What the page draws of W itself (explain.weight_templates): its shape, its rows as the
    weights act on raw features, on one shared symmetric scale, the cells greyed as rarely inked;
    and with `base`, the model the page started from, each row's change ΔW on a scale of its own."""
    from ..explain import weight_templates

    T, N = model.W.shape
    t = weight_templates(model)
    out = {
        "shape": [T, N],
        "cells": list(t.rows.shape[1:]),
        "rows": compact(t.rows.reshape(T, -1)),
        "rare": t.rare.ravel().tolist(),
        "limit": t.limit,
        "shown": {"limit": number(t.limit)},
    }
    if base is not None and not np.array_equal(model.W, base.W):
        d = weight_templates(model, model.W - base.W)
        moved = np.abs(d.rows).reshape(T, -1).max(axis=1)
        out["delta"] = {"rows": compact(d.rows.reshape(T, -1)), "limit": float(max(moved.max(), 1e-30)),
                        "moved": [number(v) for v in moved]}  # fmt: skip
        out["delta"]["shown"] = {"limit": number(out["delta"]["limit"])}
    return out


# The lesson's worked examples (its own numbers): logits [1, 2, 3]; five classes whose true class is
# the fourth (index 3), and a p that is right, one wrong but close, one absurd.
LESSON_LOGITS = (1.0, 2.0, 3.0)
LESSON_LABEL = 3
LESSON_PS = {
    "right": (0.1, 0.15, 0.05, 0.6, 0.1),
    "close": (0.1, 0.15, 0.05, 0.3, 0.4),
    "absurd": (0.1, 0.6, 0.05, 0.1, 0.15),
}
MAX_LOGITS, MAX_LOGIT = 20, 1e6


def softmax_numbers(z: tuple[float, ...] | np.ndarray) -> dict:
    """softmax(z) step by step, as the page's editor shows it: with the max subtracted (softmax.
    softmax_steps, the one softmax), and without (exp(z) straight: for [1000, 1001, 1002] it
    overflows to inf, and inf / inf is nan), each number as display.number prints it."""
    from ..softmax import softmax_steps

    z = np.asarray(z, np.float64)
    steps = softmax_steps(z)
    with np.errstate(over="ignore", invalid="ignore"):
        naive = np.exp(z)
        naive_p = naive / naive.sum()
    show = lambda a: [number(v) for v in np.ravel(a)]  # noqa: E731
    return {
        "z": show(z),
        "max": number(z.max()),
        "shifted": show(steps.shifted),
        "exp": show(steps.exp),
        "sum": number(float(steps.total[0]), 6),
        "p": show(steps.p),
        "p_sum": number(float(steps.p.sum()), 6),
        "naive": {"exp": show(naive), "sum": number(float(naive.sum()), 6), "p": show(naive_p)},
    }


def parse_logits(text: str) -> tuple[float, ...]:
    """A comma-separated logits vector as the page's editor takes it: 2 to MAX_LOGITS plain decimal
    numbers, each within ±MAX_LOGIT. ValueError says what is wrong."""
    import re

    parts = [p.strip() for p in text.split(",")]
    if not 2 <= len(parts) <= MAX_LOGITS:
        raise ValueError(f"give 2 to {MAX_LOGITS} numbers separated by commas")
    values = []
    for p in parts:
        if not re.fullmatch(r"[+-]?([0-9]+\.?[0-9]*|\.[0-9]+)([eE][+-]?[0-9]+)?", p) or abs(float(p)) > MAX_LOGIT:
            raise ValueError(f"{p[:20]!r} is not a number within ±{MAX_LOGIT:g}")
        values.append(float(p))
    return tuple(values)


def lesson_numbers() -> dict:
    """The lesson's worked examples, computed by the project's own functions: softmax of [1, 2, 3];
    the softmax loss −log p of the true class for three p vectors (right, wrong but close, absurd);
    the cross entropy of softmax([1, 2, 3]) against class 2 beside the softmax loss of [1, 2, 3]."""
    from ..softmax import cross_entropy, softmax, softmax_loss

    losses = {}
    for name, p in LESSON_PS.items():
        loss = cross_entropy(np.array([p]), np.array([LESSON_LABEL]))
        losses[name] = {"p": [number(v) for v in p], "p_true": number(p[LESSON_LABEL]), "loss": number(loss)}
    z = np.array([LESSON_LOGITS])
    p = softmax(z)[0]
    onehot = np.eye(len(p))[2]
    return {
        "softmax": softmax_numbers(LESSON_LOGITS),
        "gradient": {
            "label": 2,
            "p": [number(v) for v in p],
            "onehot": [number(v) for v in onehot],
            "grad": [number(v) for v in p - onehot],
        },  # fmt: skip
        "label": LESSON_LABEL,
        "losses": losses,
        "cross_entropy": {
            "z": [number(v) for v in LESSON_LOGITS],
            "label": 2,
            "softmax_loss": number(softmax_loss(z, np.array([2])), 6),
            "cross_entropy": number(cross_entropy(softmax(z), np.array([2])), 6),
        },
    }
