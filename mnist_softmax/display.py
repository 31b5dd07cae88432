"""Text for the terminal: tables, probability bars, ASCII digits, the softmax walk-through. Pure."""

from __future__ import annotations

import json
import math

import numpy as np

from .scoring import Score
from .text import path_text, shown

_EIGHTHS = " ▏▎▍▌▋▊▉█"
_SHADES = " .:-=+*#%@"


def score_table(s: Score) -> str:
    """Accuracy, loss, per-class precision/recall/F1 and the confusion matrix, aligned."""
    T = len(s.support)
    lines = [f"accuracy {s.accuracy:.4f}   mean softmax loss {s.loss:.4f}   ({int(s.support.sum()):,} images)", ""]
    lines.append("class  precision  recall      f1  support")
    for k in range(T):
        lines.append(f"{k:>5}  {s.precision[k]:>9.4f}  {s.recall[k]:>6.4f}  {s.f1[k]:>6.4f}  {s.support[k]:>7}")
    lines += ["", "confusion matrix (rows: true class, columns: predicted class)"]
    width = max(5, len(str(int(s.confusion.max()))) + 1)
    lines.append("true\\pred" + "".join(f"{k:>{width}}" for k in range(T)))
    for k in range(T):
        lines.append(f"{k:>9}" + "".join(f"{v:>{width}}" for v in s.confusion[k]))
    return "\n".join(lines)


def finite_json(value):
    """value (dicts, lists, numbers, strings) with every non-finite float replaced by the string
    "Infinity", "-Infinity" or "NaN": JSON has no such numbers, and these strings are what
    JavaScript's Number() and Python's float() read back as them."""
    if isinstance(value, float) and not math.isfinite(value):
        return "NaN" if value != value else ("Infinity" if value > 0 else "-Infinity")
    if isinstance(value, dict):
        return {k: finite_json(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [finite_json(v) for v in value]
    return value


def json_text(record: dict) -> str:
    """One line of strict JSON (RFC 8259) for a record: non-finite numbers as finite_json writes them."""
    try:
        return json.dumps(record, allow_nan=False)  # the common case: every number finite, no copy made
    except ValueError:
        return json.dumps(finite_json(record), allow_nan=False)


def score_record(s: Score) -> dict:
    """The score as a JSON-ready dict: accuracy, loss, n, per_class (precision/recall/f1/support), confusion."""
    keys = ("precision", "recall", "f1", "support")
    per = [{"class": k, **{key: getattr(s, key)[k].item() for key in keys}} for k in range(len(s.support))]
    n = int(s.support.sum())
    return {"n": n, "accuracy": s.accuracy, "loss": s.loss, "per_class": per, "confusion": s.confusion.tolist()}


def prediction_record(pred, top_k: int | None = None) -> dict:
    """A predict.Prediction as a JSON-ready dict (one line of `predict --json`)."""
    p, k = pred.probabilities, pred.digit_class
    record = {
        "path": None if pred.path is None else path_text(pred.path),
        "prediction": k,
        "probability": float(p[k]),
        "probabilities": p.tolist(),
        "inverted": pred.inverted,
    }
    if top_k:
        record["top_k"] = [[int(c), float(p[c])] for c in np.argsort(-p, kind="stable")[:top_k]]
    if pred.label is not None:
        record["label"], record["loss"] = pred.label, pred.loss
    if pred.explain:
        record["explain"] = pred.explain
    return record


def prediction_text(pred, top_k: int | None = None, show_input: bool = False) -> str:
    """A predict.Prediction for the terminal: the answer, the probability bars, the digit, the walk-through."""
    k = pred.digit_class
    polarity = "dark ink on light, inverted" if pred.inverted else "light ink on dark"
    lines = [
        f"{shown(pred.path)}: {k}  (p = {number(pred.probabilities[k])}; {polarity})",
        probability_bars(pred.probabilities, top_k),
    ]
    if pred.label is not None and not pred.explain:  # --explain shows the loss in its walk-through
        y = pred.label
        p_y, loss = number(pred.probabilities[y], 6), number(pred.loss, 6)
        lines.append(f"  softmax loss for label {y}: −log p_{y} = −log {p_y} = {loss}")
    if show_input or pred.explain:
        lines.append(ascii_digit(pred.digit))
    if pred.explain:
        lines.append(explain_text(pred.explain))
    return "\n".join(lines)


def bar(p: float, width: int = 30) -> str:
    """A horizontal bar of `width` characters for p in [0, 1], in eighth-character steps."""
    eighths = int(round(p * width * 8))
    full, part = divmod(eighths, 8)
    return ("█" * full + (_EIGHTHS[part] if part else "")).ljust(width)


def probability_bars(p: np.ndarray, top_k: int | None = None) -> str:
    """One line per class, most probable first when top_k is given; else in class order."""
    order = np.argsort(-p, kind="stable")[:top_k] if top_k else range(len(p))
    return "\n".join(f"  {k} │{bar(float(p[k]))} {number(p[k])}" for k in order)


def ascii_digit(img: np.ndarray) -> str:
    """A (28, 28) uint8 image as 28 lines of shaded characters, two per pixel (terminal cells are tall)."""
    idx = (img.astype(np.int32) * (len(_SHADES) - 1) + 127) // 255
    return "\n".join("".join(_SHADES[v] * 2 for v in row) for row in idx)


def number(v: float, decimals: int = 4) -> str:
    """v as the walk-through and the page print it: to `decimals` decimals, keeping what matters to
    read the softmax. A value that is not zero never shows as 0 (2.8e-5 is 2.800e-05, not 0.0000),
    and one that is not ±1 never shows as ±1 (0.99997 is 0.99997, not 1.0000): more decimals then,
    as many as tell it apart (at most 12; within 1e-12 of 1, float64's rounding, it is 1)."""
    v = float(v)
    if v == 0 or not math.isfinite(v):
        return "0" if v == 0 else f"{v}"
    text = f"{v:.{decimals}f}"
    if float(text) == 0:
        return f"{v:.3e}"
    while abs(float(text)) == 1 and abs(abs(v) - 1) > 1e-12 and decimals < 12:  # (float rounding is not a digit)
        decimals += 1
        text = f"{v:.{decimals}f}"
    return text


def page_strings(page: dict) -> dict:
    """The page's own numbers (page.page_numbers) as it shows them: each bias b_k and W_k·x, each
    figure's scale, and with a label each dL/dz_k and the largest |dL/dW| of each row. The page prints
    these strings; it formats no number itself."""
    out = {"bias": [number(v) for v in page["bias"]], "wx": [number(v) for v in page["wx"]]}
    for key in ("x_limit", "x_cells_limit", "contributions_limit", "grad_limit"):
        if key in page:
            out[key] = number(page[key])
    if "grad_z" in page:
        out["grad_z"] = [number(v) for v in page["grad_z"]]
        out["grad_row_max"] = [number(v) for v in page["grad_row_max"]]
    return out


def explain_strings(e: dict) -> dict:
    """The numbers of one prediction's walk-through (explain.explain_record) as `predict --explain`
    prints them, digit for digit (display.number): the text of each, for the walk-through and for
    the local page, which shows these very strings."""
    z = e["logits"]
    top = max(z)
    out = {
        "x_min": number(e["x_min"]),
        "x_max": number(e["x_max"]),
        "x_mean": number(e["x_mean"]),
        "logits": [number(v) for v in z],
        "shifted": [number(v - top) for v in z],  # z − max z, the exponent of each exp
        "exp": [number(v) for v in e["exp"]],
        "sum": number(e["sum"], 6),
        "probabilities": [number(v) for v in e["probabilities"]],
        "probability_sum": number(sum(e["probabilities"]), 6),
    }
    if "label" in e:
        y = e["label"]
        out |= {
            "p_label": number(e["probabilities"][y], 6),
            "loss": number(e["loss"], 6),
            "loss_short": number(e["loss"]),
            "cross_entropy": number(e["cross_entropy"], 6),
            "cross_entropy_note": "(the same number)"
            if math.isfinite(e["cross_entropy"])
            else f"(p_{y} underflowed to 0 in float64: −log 0; the loss from the logits above is the figure)",
        }
    return out


def _vec(texts: list[str]) -> str:
    return "[" + ", ".join(texts) + "]"


def explain_text(e: dict) -> str:
    """The computation for one image, step by step, from the numbers in `explain_numbers`."""
    C, H, W = e["map_shape"]
    s = explain_strings(e)
    k = e["argmax"]
    lines = [
        f"1. feature map: {C}×{H}×{W}, flattened (C order) to an N-vector x, N = {e['n_features']};"
        + (" standardised: x = (features − mean) / scale." if e["standardised"] else " not standardised."),
        f"   x: min {s['x_min']}, max {s['x_max']}, mean {s['x_mean']}",
        f"2. logits z = W·x + b, W is {len(e['logits'])}×{e['n_features']}:",
        f"   z = {_vec(s['logits'])}",
        f"3. subtract the max (z_{k} = {s['logits'][k]}) and exponentiate:",
        f"   exp(z − max z) = {_vec(s['exp'])}",
        f"   sum = {s['sum']}",
        "4. probabilities p = exp(z − max z) / sum:",
        f"   p = {_vec(s['probabilities'])}   (sum {s['probability_sum']})",
        f"5. prediction: argmax p = {k} with p = {s['probabilities'][k]}",
    ]
    if "label" in e:
        y = e["label"]
        lines += [
            f"6. softmax loss for label {y}: −log p_{y} = −log {s['p_label']} = {s['loss']}",
            f"   cross entropy of p against label {y}: {s['cross_entropy']} {s['cross_entropy_note']}",
        ]
    return "\n".join(lines)
