"""Classify prepared digits and show the computation behind one prediction. Pure, given a Model."""

from __future__ import annotations

import numpy as np

from .features import FRONT_ENDS
from .softmax import cross_entropy, logits, predict_proba, softmax, softmax_loss
from .train import Model


def classify(model: Model, digits: np.ndarray) -> np.ndarray:
    """uint8 digits (n, 28, 28) in MNIST form -> probabilities (n, T)."""
    return predict_proba(model.features(digits), model.W, model.b)


def explain_numbers(model: Model, digit: np.ndarray, label: int | None = None) -> dict:
    """Every intermediate number of one prediction, computed with the model's own W, b and features.

    digit (28, 28) uint8 -> dict of plain Python numbers (JSON-ready).
    """
    x = model.features(digit[None])[0]  # (N,)
    # The model's float32 logits, then each step in float64 so the identities shown hold to ~1e-16.
    z = logits(x[None], model.W, model.b)[0].astype(np.float64)  # (T,) = W·x + b
    e = np.exp(z - z.max())
    p = e / e.sum()
    assert np.allclose(p, softmax(z)), "walk-through must agree with softmax()"
    out = {
        "map_shape": list(FRONT_ENDS[model.front_end].map_shape),
        "n_features": int(x.size),
        "x_min": float(x.min()),
        "x_max": float(x.max()),
        "x_mean": float(x.mean()),
        "logits": z.tolist(),
        "exp": e.tolist(),
        "sum": float(e.sum()),
        "probabilities": p.tolist(),
        "argmax": int(p.argmax()),
    }
    if label is not None:
        y = np.array([label])
        out["label"] = int(label)
        out["loss"] = softmax_loss(z[None], y)
        out["cross_entropy"] = cross_entropy(p[None], y)
    return out
