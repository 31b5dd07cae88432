"""Scores of a model on labelled images: accuracy, loss, confusion matrix, per-class P/R/F1. Pure."""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from .data import split_rows
from .errors import CheckpointError
from .features import made_by
from .model import Model, evaluate, split_features
from .softmax import check_labels, softmax


class Score(NamedTuple):
    accuracy: float
    loss: float  # mean softmax loss
    confusion: np.ndarray  # (T, T) int64, rows: true class, columns: predicted class
    precision: np.ndarray  # (T,)
    recall: np.ndarray  # (T,)
    f1: np.ndarray  # (T,)
    support: np.ndarray  # (T,) int64, true examples per class
    probabilities: np.ndarray  # (n, T)


def confusion_matrix(y_true: np.ndarray, y_pred: np.ndarray, T: int = 10) -> np.ndarray:
    """(n,), (n,) integer labels in [0, T) -> (T, T) counts, rows true class, columns predicted class.
    A label outside the classes is a ValueError naming its argument (-1 would count as class T - 1)."""
    y_true = check_labels(y_true, len(y_true), T, "y_true")
    y_pred = check_labels(y_pred, len(y_true), T, "y_pred", rows="true labels (y_true)")
    return np.bincount(T * y_true.astype(np.intp) + y_pred, minlength=T * T).reshape(T, T)


def per_class(cm: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(precision, recall, f1), each (T,), from a (T, T) confusion matrix; 0 where undefined."""
    tp = np.diag(cm).astype(np.float64)
    predicted, actual = cm.sum(0), cm.sum(1)
    precision = np.divide(tp, predicted, out=np.zeros_like(tp), where=predicted > 0)
    recall = np.divide(tp, actual, out=np.zeros_like(tp), where=actual > 0)
    denom = precision + recall
    f1 = np.divide(2 * precision * recall, denom, out=np.zeros_like(tp), where=denom > 0)
    return precision, recall, f1


def score(W: np.ndarray, b: np.ndarray, X: np.ndarray, y: np.ndarray) -> Score:
    """Score (W, b) on standardised features X (n, N) with labels y (n,).

    Loss and accuracy come from model.evaluate, the function `train` reported them with, so for the
    features of the same split they are equal to the last bit.
    """
    parts = []
    loss, accuracy = evaluate(W, b, X, y, on_logits=lambda z: parts.append(softmax(z)))  # the logits scored
    P = np.concatenate(parts)
    cm = confusion_matrix(y, P.argmax(1), len(b))
    precision, recall, f1 = per_class(cm)
    return Score(accuracy, loss, cm, precision, recall, f1, cm.sum(1), P)


def most_confident_errors(P: np.ndarray, y: np.ndarray, k: int) -> np.ndarray:
    """Indices of up to k wrong predictions, most confident first. P (n, T), y (n,) -> (≤k,)."""
    pred = P.argmax(1)
    wrong = np.flatnonzero(pred != y)
    return wrong[np.argsort(-P[wrong, pred[wrong]], kind="stable")][:k]


class SplitScore(NamedTuple):
    score: Score
    images: np.ndarray  # (n, 28, 28) uint8, the split's images in row order
    labels: np.ndarray  # (n,) uint8


def score_split(
    model: Model, config: dict, mnist, split: str, cache_dir=None, progress: bool = False, format_version: int = 2
) -> SplitScore:
    """Score a trained model on "train", "val" or "test" of MNIST, the rows and features built
    exactly as `train` built them (same split from the seed and size in `config`, same feature
    path and cache), so the loss and accuracy equal what `train` reported, to the last bit."""
    part, idx = split_rows(split, len(mnist.train_images), config["seed"], config["val_size"], format_version)
    images, labels = (a[idx] for a in mnist.part(part))
    if len(labels) == 0:
        raise CheckpointError(f"this model was trained without a {split} split (val_size 0); use --split test")
    X = split_features(model, mnist, part, idx, cache_dir, progress, made_by(config, model.front_end))
    return SplitScore(score(model.W, model.b, X, labels.astype(np.intp)), images, labels)
