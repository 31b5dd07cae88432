"""PNG figures. matplotlib is imported here only, lazily, with the Agg canvas (no display needed)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from .fileio import atomic_open

_preloading = None


def preload() -> None:
    """Start importing matplotlib on a background thread (~0.5 s), once, so that it overlaps with
    the training that comes before the plots instead of adding to the run's time."""
    global _preloading
    if _preloading is None:
        import threading

        def load() -> None:
            import matplotlib.backends.backend_agg  # noqa: F401
            import matplotlib.figure  # noqa: F401

        _preloading = threading.Thread(target=load, name="preload-matplotlib", daemon=True)
        _preloading.start()


def _figure(width: float, height: float, layout: str | None = None):
    """A figure without pyplot (no GUI backend needed). Fixed grids use explicit margins: the
    "constrained" layout engine costs ~0.15 s a figure, which matters on `train`'s 3-second path."""
    from matplotlib.figure import Figure

    return Figure(figsize=(width, height), dpi=100, layout=layout)


def _save(fig, path: Path) -> None:
    with atomic_open(path, "wb") as f:
        fig.savefig(f, format="png")


def plot_curves(path: Path, history: list[dict], test_acc: float | None) -> None:
    """Loss and accuracy against epoch, train and validation, with the final test accuracy marked."""
    epochs = [r["epoch"] for r in history]
    fig = _figure(10, 4)
    fig.subplots_adjust(left=0.07, right=0.98, bottom=0.12, top=0.92, wspace=0.22)
    ax_loss, ax_acc = fig.subplots(1, 2)
    for ax, key, title in ((ax_loss, "loss", "softmax loss"), (ax_acc, "acc", "accuracy")):
        ax.plot(epochs, [r[f"train_{key}"] for r in history], "o-", label="train")
        ax.plot(epochs, [r[f"val_{key}"] for r in history], "s-", label="validation")
        ax.set_xlabel("epoch")
        ax.set_title(title)
        ax.grid(alpha=0.3)
    if test_acc is not None:  # None: an interrupted run, never scored on the test set
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
    fig.subplots_adjust(left=0.02, right=0.98, bottom=0.02, top=0.85, wspace=0.1, hspace=0.2)
    axes = fig.subplots(2, 5)
    for digit, ax in enumerate(axes.flat):
        lim = float(np.percentile(np.abs(V[digit]), 99)) or 1.0
        ax.imshow(V[digit], cmap="RdBu_r", vmin=-lim, vmax=lim)
        ax.set_title(str(digit))
        ax.set_axis_off()
    fig.suptitle("rows of W (on standardised pixels) as 28×28 images: red is evidence for the digit, blue against")
    _save(fig, path)


def plot_confusion(path: Path, cm: np.ndarray, title: str) -> None:
    """The (T, T) confusion matrix as a heat map with every count written in its cell."""
    T = len(cm)
    fig = _figure(7, 6.2)
    fig.subplots_adjust(left=0.1, right=0.98, bottom=0.09, top=0.93)
    ax = fig.subplots()
    shown = np.log1p(cm)  # the diagonal would otherwise wash out every error
    ax.imshow(shown, cmap="Blues")
    for i in range(T):
        for j in range(T):
            dark = shown[i, j] > 0.6 * shown.max()
            ax.text(j, i, str(cm[i, j]), ha="center", va="center", fontsize=8, color="white" if dark else "black")
    ax.set_xticks(range(T))
    ax.set_yticks(range(T))
    ax.set_xlabel("predicted class")
    ax.set_ylabel("true class")
    ax.set_title(title)
    _save(fig, path)


def plot_errors(path: Path, images: np.ndarray, labels: np.ndarray, P: np.ndarray, idx: np.ndarray) -> None:
    """A grid of the images at `idx` (the most confidently wrong), each titled true / predicted (p)."""
    cols = 8
    rows = max(1, -(-len(idx) // cols))
    fig = _figure(cols * 1.3, rows * 1.55 + 0.4, layout="constrained")
    axes = np.atleast_1d(fig.subplots(rows, cols)).ravel()
    for ax in axes:
        ax.set_axis_off()
    for ax, i in zip(axes, idx, strict=False):
        pred = int(P[i].argmax())
        ax.imshow(images[i], cmap="gray_r", vmin=0, vmax=255)
        ax.set_title(f"true {labels[i]} → {pred}\np = {P[i, pred]:.2f}", fontsize=8)
    fig.suptitle("most confidently wrong predictions")
    _save(fig, path)


def plot_conv_weights(path: Path, filters: np.ndarray, W: np.ndarray, map_shape: tuple[int, int, int]) -> None:
    """Top: the 64 learned k×k filters. Bottom: each class's weight energy over the 7×7 grid.

    filters (k·k, C); W (T, C·H·W). Energy of class t at cell (h, w) is Σ_c W[t, c, h, w]²: where
    on the page the class looks for evidence.
    """
    C, H, Wd = map_shape
    k = int(round(np.sqrt(filters.shape[0])))
    energy = (W.reshape(len(W), C, H, Wd) ** 2).sum(axis=1)
    fig = _figure(10, 8.5, layout="constrained")
    top, bottom = fig.subfigures(2, 1, height_ratios=[1.45, 1])
    axes = top.subplots(4, 16)
    for j, ax in enumerate(axes.flat):
        f = filters[:, j].reshape(k, k)
        lim = float(np.abs(f).max()) or 1.0
        ax.imshow(f, cmap="RdBu_r", vmin=-lim, vmax=lim)
        ax.set_axis_off()
    top.suptitle(f"the {C} learned {k}×{k} filters (whitened k-means centroids, no labels used)")
    axes = bottom.subplots(2, 5)
    for t, ax in enumerate(axes.flat):
        ax.imshow(energy[t], cmap="magma")
        ax.set_title(str(t))
        ax.set_axis_off()
    bottom.suptitle(f"weight energy per class over the {H}×{Wd} grid (Σ over the {C} maps of W²)")
    _save(fig, path)
