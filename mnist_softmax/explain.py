"""Every number of one prediction, computed once per digit: the features x and the logits
z = W·x + b by the model's own float32 arithmetic (what classify and eval compute), then the steps
of softmax and the loss in float64 from z, so that the identities shown (p sums to 1, the cross
entropy of p equals the softmax loss) hold to the last printed digit. `predict`, `predict --explain`
and its JSON, and the local page all show these numbers (display.py formats them). Pure.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from .model import Model
from .softmax import SoftmaxSteps, check_labels, cross_entropy, logits, softmax_loss, softmax_steps


class Explanation(NamedTuple):
    """One digit's way through the layer."""

    x: np.ndarray  # (N,) float32: the standardised features, the layer's input
    z: np.ndarray  # (T,) float64: the logits W·x + b as the model computes them (in float32)
    steps: SoftmaxSteps  # softmax(z) step by step, in float64
    label: int | None  # the true class, when given
    loss: float | None  # the softmax loss −log p_label, from the logits (log-sum-exp)
    cross_entropy: float | None  # the cross entropy of p against the label: the same number, from p

    @property
    def p(self) -> np.ndarray:
        """(T,) the probabilities."""
        return self.steps.p


def explain(model: Model, digit: np.ndarray, label: int | None = None) -> Explanation:
    """The Explanation of one digit (28, 28) uint8 in MNIST form, with the loss for `label` if given."""
    return explain_features(model, model.features(digit[None])[0], label)


def explain_features(model: Model, x: np.ndarray, label: int | None = None) -> Explanation:
    """The Explanation of features x (N,) already computed (the page's learning step reuses them)."""
    if label is not None:
        label = int(check_labels([label], 1, model.W.shape[0], "label")[0])
    z = logits(x[None], model.W, model.b)[0].astype(np.float64)
    steps = softmax_steps(z)
    loss = ce = None
    if label is not None:
        y = np.array([label])
        loss, ce = softmax_loss(z[None], y), cross_entropy(steps.p[None], y)
    return Explanation(x, z, steps, label, loss, ce)


def explain_record(model: Model, e: Explanation) -> dict:
    """The numbers `predict --json --explain` prints under "explain", JSON-ready (plain Python)."""
    x = e.x
    out = {
        "map_shape": list(model.front.map_shape),
        "n_features": int(x.size),
        "standardised": bool(np.any(model.mean != 0) or np.any(model.scale != 1)),
        "x_min": float(x.min()),
        "x_max": float(x.max()),
        "x_mean": float(x.mean()),
        "logits": e.z.tolist(),
        "exp": e.steps.exp.tolist(),
        "sum": float(e.steps.total[0]),
        "probabilities": e.p.tolist(),
        "argmax": int(e.p.argmax()),
    }
    if e.label is not None:
        out |= {"label": e.label, "loss": e.loss, "cross_entropy": e.cross_entropy}
    return out


# The pixels a learner is shown greyed in W's rows: on average they hold under this much ink (of a
# full 1.0) in the training images, so their weights rest on a handful of digits.
RARE_INK = 0.01


class Templates(NamedTuple):
    """W's rows as the weights act on raw features: W / scale, summed over the maps at each cell of
    the grid (28×28 for pixels, 7×7 otherwise), on one shared symmetric colour scale."""

    rows: np.ndarray  # (T, H, W) float64
    rare: np.ndarray  # (H, W) bool: cells whose features are almost never on in training (greyed)
    limit: float  # the scale's end: |value| at which a colour saturates, the 99th percentile of |rows|


def weight_templates(model: Model, W: np.ndarray | None = None) -> Templates:
    """What training found in W (T, N) (the model's own by default; a change of it, ΔW, likewise):
    the weight of each raw feature for each class, W / scale (since W·x = (W/scale)·(f − mean) for the
    standardised x of features f), summed over the maps at each cell. For pixels these are the ten
    templates the layer matches a digit against; the cells where the training set almost never has
    ink are marked rare, and the scale ignores them."""
    C, H, Wd = model.front.map_shape
    W = model.W if W is None else W
    rows = (W / model.scale).reshape(len(W), C, H * Wd).sum(axis=1).reshape(len(W), H, Wd).astype(np.float64)
    rare = np.zeros((H, Wd), bool)
    if C == 1 and model.mean.any():  # pixels: their mean over the training images is in the standardiser
        rare = model.mean.reshape(H, Wd) < RARE_INK
    kept = np.abs(rows[:, ~rare])
    limit = float(np.percentile(kept, 99)) if kept.size and kept.max() > 0 else 1.0
    return Templates(rows, rare, limit)
