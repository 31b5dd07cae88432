"""Classify users' image files, and show the computation behind one prediction.

`predict_files` is what `mnist-softmax predict` runs: each file brought into MNIST form
(images.to_mnist), classified by the model, and, when asked, every number of the computation.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import NamedTuple

import numpy as np

from .images import ImageError, Prepared, to_mnist_many
from .model import Model
from .softmax import check_labels, cross_entropy, logits, softmax, softmax_loss


def explain_numbers(model: Model, digit: np.ndarray, label: int | None = None) -> dict:
    """Every intermediate number of one prediction, computed with the model's own W, b and features.

    digit (28, 28) uint8 -> dict of plain Python numbers (JSON-ready).
    """
    x = model.features(digit[None])[0]  # (N,)
    # The model's float32 logits, then each step in float64 so the identities shown hold to ~1e-16.
    z = logits(x[None], model.W, model.b)[0].astype(np.float64)  # (T,) = W·x + b
    e = np.exp(z - z.max())
    p = e / e.sum()
    out = {
        "map_shape": list(model.front.map_shape),
        "n_features": int(x.size),
        "standardised": bool(np.any(model.mean != 0) or np.any(model.scale != 1)),
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


class Prediction(NamedTuple):
    """What `predict` found for one image file."""

    path: Path | None  # None: not from a file (a digit drawn on the local page)
    digit: np.ndarray  # (28, 28) uint8: the image in MNIST form, as the model saw it
    inverted: bool  # True when the ink was darker than its background
    probabilities: np.ndarray  # (T,)
    explain: dict | None = None  # explain_numbers(...), when asked for
    label: int | None = None  # the true digit, when the user gave it
    loss: float | None = None  # softmax loss -log p(label), when a label was given

    @property
    def digit_class(self) -> int:
        return int(self.probabilities.argmax())


def predict_files(
    model: Model, paths: Iterable[Path], explain: bool = False, label: int | None = None
) -> Iterator[Prediction | ImageError]:
    """For each image file, in order: its Prediction, or the ImageError saying why it has none.

    With `label`, each Prediction carries the softmax loss for it; with `explain`, every number
    of the computation (explain_numbers).
    """
    if label is not None:
        label = int(check_labels([label], 1, model.W.shape[0])[0])
    paths = [Path(p) for p in paths]
    # Read and normalised in parallel (images.to_mnist_many), in input order; classified here.
    for path, prepared in zip(paths, to_mnist_many(paths), strict=True):
        yield prepared if isinstance(prepared, ImageError) else predict_digit(model, prepared, path, explain, label)


def predict_digit(
    model: Model, prepared: Prepared, path: Path | None = None, explain: bool = False, label: int | None = None
) -> Prediction:
    """The Prediction for one digit already in MNIST form (images.Prepared): what predict_files
    gives for each file, and the local page for each digit drawn or dropped on it."""
    if label is not None:
        label = int(check_labels([label], 1, model.W.shape[0])[0])
    z = logits(model.features(prepared.digit[None]), model.W, model.b)
    p = softmax(z)[0]
    loss = softmax_loss(z, np.array([label])) if label is not None else None
    numbers = explain_numbers(model, prepared.digit, label) if explain else None
    return Prediction(path, prepared.digit, prepared.inverted, p, numbers, label, loss)


def predict_file(model: Model, path: Path, explain: bool = False, label: int | None = None) -> Prediction:
    """The Prediction for one image file; raises ImageError if it cannot be read or holds no digit."""
    result = next(predict_files(model, [path], explain, label))
    if isinstance(result, ImageError):
        raise result
    return result
