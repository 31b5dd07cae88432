"""PNG figures. matplotlib is imported here only, lazily, with the Agg canvas (no display needed)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from .fileio import atomic_open


def _figure(width: float, height: float):
    from matplotlib.figure import Figure  # Figure + savefig needs no pyplot and no GUI backend

    return Figure(figsize=(width, height), dpi=100, layout="constrained")


def _save(fig, path: Path) -> None:
    with atomic_open(path, "wb") as f:
        fig.savefig(f, format="png")


def plot_curves(path: Path, history: list[dict], test_acc: float) -> None:
    """Loss and accuracy against epoch, train and validation, with the final test accuracy marked."""
    epochs = [r["epoch"] for r in history]
    fig = _figure(10, 4)
    ax_loss, ax_acc = fig.subplots(1, 2)
    for ax, key, title in ((ax_loss, "loss", "softmax loss"), (ax_acc, "acc", "accuracy")):
        ax.plot(epochs, [r[f"train_{key}"] for r in history], "o-", label="train")
        ax.plot(epochs, [r[f"val_{key}"] for r in history], "s-", label="validation")
        ax.set_xlabel("epoch")
        ax.set_title(title)
        ax.grid(alpha=0.3)
    ax_acc.axhline(test_acc, color="tab:red", ls="--", lw=1, label=f"test {test_acc:.2%}")
    ax_acc.plot([epochs[-1]], [test_acc], "*", color="tab:red", ms=12)
    for ax in (ax_loss, ax_acc):
        ax.legend()
    _save(fig, path)


def plot_pixel_weights(path: Path, W: np.ndarray) -> None:
    """The 10 rows of W (10, 784) as 28×28 images: red pixels are evidence for the class, blue against.

    W acts on standardised pixels; W / scale (weight per raw pixel value) would be dominated by the
    rarely inked border pixels, whose std is tiny. The colour limit is each row's 99th percentile
    of |w|, so a few extreme weights do not wash out the picture.
    """
    V = W.reshape(-1, 28, 28)
    fig = _figure(10, 4.4)
    axes = fig.subplots(2, 5)
    for digit, ax in enumerate(axes.flat):
        lim = float(np.percentile(np.abs(V[digit]), 99)) or 1.0
        ax.imshow(V[digit], cmap="RdBu_r", vmin=-lim, vmax=lim)
        ax.set_title(str(digit))
        ax.set_axis_off()
    fig.suptitle("rows of W (on standardised pixels) as 28×28 images: red is evidence for the digit, blue against")
    _save(fig, path)
