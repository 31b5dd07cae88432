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
    out = {
        "x": compact(e.x),
        "cells": [H, W],
        "contributions": compact(per_cell(model.W * e.x, C)),
        "bias": model.b.tolist(),
    }
    if e.label is not None:
        grad_z = e.p - np.eye(len(e.p))[e.label]
        out["grad_z"] = grad_z.tolist()
        out["grad_W"] = compact(per_cell(np.outer(grad_z, e.x), C))
    return out


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
