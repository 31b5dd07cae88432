"""PNG figures. matplotlib is imported here only, lazily, with the Agg canvas (no display needed).

`train` draws its figures through a Painter: a helper process started before training that imports
matplotlib (~0.6 s) on the core the single-threaded training loop leaves free. Importing it on a
thread instead gains nothing: the import holds the GIL that the training loop needs.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np

from .fileio import atomic_open, remove_stale_temps


def _figure(width: float, height: float, layout: str | None = None):
    """A figure without pyplot (no GUI backend needed). Fixed grids use explicit margins: the
    "constrained" layout engine costs ~0.15 s a figure, which matters on `train`'s 3-second path."""
    from matplotlib.figure import Figure

    return Figure(figsize=(width, height), dpi=100, layout=layout)


def _save(fig, path: Path) -> None:
    import warnings

    with atomic_open(path, "wb") as f, warnings.catch_warnings():
        # A character the font lacks (a file name in Chinese, say) is drawn as a box; matplotlib's
        # warning about it, which quotes the character raw, is not the user's business.
        warnings.filterwarnings("ignore", message="Glyph .* missing from", category=UserWarning)
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


def plot_pixel_weights(path: Path, rows: np.ndarray, rare: np.ndarray, limit: float) -> None:
    """The 10 rows of W as 28×28 templates (explain.weight_templates: W / scale, the weight of each
    raw pixel value), on one shared symmetric colour scale with its colour bar: red pixels are
    evidence for the digit, blue against; rare (28, 28) pixels, which the training set almost never
    inks, are grey. rows (10, 28, 28); limit: where colours saturate."""
    tiles = _diverging(rows, np.full(len(rows), limit))
    tiles[:, rare] = RARE_GREY
    fig = _figure(10, 5.6)
    ax = fig.add_axes((0.02, 0.25, 0.96, 0.64))
    _show_tiles(ax, tiles, cols=5, gap=4, labels=[str(d) for d in range(len(rows))])
    _colour_bar(fig, (0.3, 0.15, 0.4, 0.03), limit, "weight per unit of raw pixel value (W / scale)")
    fig.suptitle("the rows of W (10 × 784) as 28×28 templates: red is evidence for the digit, blue against")
    fig.text(0.5, 0.015, f"one colour scale for all ten, saturating at ±{limit:.3g} (the 99th percentile); grey: "
             "pixels the training set almost never inks", ha="center", fontsize=9, color="0.3")  # fmt: skip
    _save(fig, path)


RARE_GREY = (0.85, 0.85, 0.85, 1.0)


def _colour_bar(fig, rect: tuple[float, float, float, float], limit: float, label: str) -> None:
    """A horizontal colour bar from −limit (blue) through 0 (white) to +limit (red), at rect."""
    from matplotlib import colormaps
    from matplotlib.cm import ScalarMappable
    from matplotlib.colors import Normalize

    bar = ScalarMappable(Normalize(-limit, limit), colormaps["RdBu_r"])
    fig.colorbar(bar, cax=fig.add_axes(rect), orientation="horizontal", label=label)


def _diverging(V: np.ndarray, lims: np.ndarray) -> np.ndarray:
    """Images V (n, h, w) -> RGBA (n, h, w, 4), red positive, blue negative, each image scaled to
    ±its lims (n,) entry (0 counts as 1), beyond which colours saturate."""
    from matplotlib import colormaps

    lims = np.where(lims == 0, 1.0, lims)
    return colormaps["RdBu_r"](np.clip(0.5 + 0.5 * V / lims[:, None, None], 0, 1))


def _show_tiles(ax, tiles: np.ndarray, cols: int, gap: int, labels: list[str] | None = None) -> None:
    """Show RGBA tiles (n, h, w, 4) on one axes as a grid of `cols` columns on white, each labelled
    above if labels are given. One image on one axes: an axes per tile costs ~20 ms each to draw."""
    n, h, w, _ = tiles.shape
    rows = -(-n // cols)
    mosaic = np.ones((rows * (h + gap) - gap, cols * (w + gap) - gap, 4))
    for i, tile in enumerate(tiles):
        r, c = divmod(i, cols)
        mosaic[r * (h + gap) : r * (h + gap) + h, c * (w + gap) : c * (w + gap) + w] = tile
    ax.imshow(mosaic, interpolation="nearest")
    for i, label in enumerate(labels or []):
        r, c = divmod(i, cols)
        ax.text(c * (w + gap) + (w - 1) / 2, r * (h + gap) - 0.7, label, ha="center", va="bottom", fontsize=12)
    ax.set_axis_off()


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
    ax.set_title(title, parse_math=False)  # it holds a path: `$` in it is shown, not read as math
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


def plot_conv_weights(
    path: Path,
    filters: np.ndarray,
    rows: np.ndarray,
    limit: float,
    how: str = "whitened k-means centroids, no labels used",
) -> None:
    """Top: the learned k×k filters (of the first layer). Bottom: each class's weights over the 7×7
    grid (explain.weight_templates: W / scale summed over the maps at each cell) on one shared
    symmetric scale with its colour bar: where on the page the layer finds evidence for the class.

    filters (k·k, F); rows (T, 7, 7); limit: where colours saturate. `how` says how the filters were learned.
    """
    k = int(round(np.sqrt(filters.shape[0])))
    n_filters = filters.shape[1]
    F = filters.T.reshape(n_filters, k, k)
    filter_tiles = _diverging(F, np.abs(F).reshape(n_filters, -1).max(axis=1))
    fig = _figure(10, 9.0)
    _show_tiles(fig.add_axes((0.01, 0.62, 0.98, 0.32)), filter_tiles, cols=16, gap=1)
    fig.text(0.5, 0.955, f"the {n_filters} learned {k}×{k} filters ({how}), each on its own scale", ha="center")
    _show_tiles(
        fig.add_axes((0.1, 0.12, 0.8, 0.42)), _diverging(rows, np.full(len(rows), limit)), cols=5, gap=1,
        labels=[str(t) for t in range(len(rows))],
    )  # fmt: skip
    fig.text(0.5, 0.57, "each class's weights over the 7×7 grid, summed over the maps (W / scale): red is "
             "evidence for the digit, blue against", ha="center")  # fmt: skip
    _colour_bar(fig, (0.3, 0.06, 0.4, 0.02), limit, f"one scale for all ten, saturating at ±{limit:.3g}")
    _save(fig, path)


# The figures a Painter can draw: those of a run folder.
FIGURES = {"curves": plot_curves, "pixel_weights": plot_pixel_weights, "conv_weights": plot_conv_weights}
Job = tuple[str, Path, dict]  # (name in FIGURES, PNG path, keyword arguments)


def encode_jobs(jobs: list[Job]) -> bytes:
    """Jobs as .npz bytes (no pickle): arrays as members, everything else in one JSON member."""
    arrays: dict[str, np.ndarray] = {}
    spec = []
    for name, path, kwargs in jobs:
        plain = {}
        for key, value in kwargs.items():
            if isinstance(value, np.ndarray):
                plain[key] = {"array": f"a{len(arrays)}"}
                arrays[f"a{len(arrays)}"] = value
            else:
                plain[key] = value
        spec.append([name, str(path), plain])
    buf = io.BytesIO()
    np.savez(buf, jobs=np.array(json.dumps(spec)), **arrays)
    return buf.getvalue()


def decode_jobs(data: bytes) -> list[Job]:
    """The inverse of encode_jobs."""
    with np.load(io.BytesIO(data), allow_pickle=False) as z:
        arrays = {k: z[k] for k in z.files}
    jobs = []
    for name, path, plain in json.loads(str(arrays["jobs"])):
        kwargs = {k: arrays[v["array"]] if isinstance(v, dict) and "array" in v else v for k, v in plain.items()}
        jobs.append((name, Path(path), kwargs))
    return jobs


def draw(jobs: list[Job]) -> None:
    """Draw each job's figure in this process."""
    for name, path, kwargs in jobs:
        FIGURES[name](path, **kwargs)


class Painter:
    """Draws figures in a helper process that imported matplotlib while this one trained.

    Single use: start it early, then call draw() once; leaving the `with` block stops an unused
    helper. If the helper cannot start or fails, draw() draws in this process instead, so the
    figures, or the real error (a full disk, say), come out either way.
    """

    def __init__(self, command: list[str] | None = None):
        self._proc = None
        command = command or [sys.executable, "-m", "mnist_softmax.plots"]
        if not command[0]:  # an embedded interpreter may not know its executable: draw here
            return
        # The helper imports this very package, from wherever this process imported it.
        paths = [str(Path(__file__).parents[1]), os.environ.get("PYTHONPATH", "")]
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in paths if p)}
        # stdout is a pipe the helper never writes to, so communicate() returns when the helper's
        # exit closes it. Without one it polls the process in sleeps of up to 50 ms, which made
        # train wait 0-50 ms (25 on average) longer than the drawing took.
        with contextlib.suppress(OSError):  # cannot start: draw() draws here
            self._proc = subprocess.Popen(
                command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, env=env
            )

    def draw(self, jobs: list[Job], timeout: float = 120) -> None:
        proc, self._proc = self._proc, None
        if proc is not None:
            try:
                proc.communicate(encode_jobs(jobs), timeout=timeout)
            except (OSError, subprocess.TimeoutExpired):  # gone, or stuck: draw here instead
                pass
            finally:  # also when interrupted: a helper stopped mid-figure leaves no temp file behind
                if proc.returncode != 0:
                    _stop(proc)
                    for folder in {Path(path).parent for _, path, _ in jobs}:
                        remove_stale_temps(folder)
            if proc.returncode == 0:
                return
        draw(jobs)

    def __enter__(self) -> Painter:
        return self

    def __exit__(self, *exc) -> None:
        proc, self._proc = self._proc, None
        if proc is not None:  # never asked to draw (the run failed first): nothing of its to wait for
            _stop(proc)


def _stop(proc: subprocess.Popen) -> None:
    """Kill the helper, reap it and close our ends of its pipes."""
    with proc:  # Popen's exit closes the pipes and waits
        proc.kill()


def _helper() -> int:
    """The Painter's process: import matplotlib, then draw the jobs read from stdin (none: exit)."""
    # Ctrl-C (sent to the whole process group) and SIGTERM are for the trainer, which saves its run
    # and stops this helper itself, cleaning up after it.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    import matplotlib.backends.backend_agg  # noqa: F401
    import matplotlib.figure  # noqa: F401

    data = sys.stdin.buffer.read()
    if not data:
        return 0
    try:
        draw(decode_jobs(data))
    except Exception:  # noqa: BLE001 -- the trainer draws again itself and reports the real error
        return 1
    return 0


if __name__ == "__main__":
    code = _helper()
    # Skip the interpreter's teardown, ~0.2 s with matplotlib loaded, which the trainer would wait
    # for: every figure is written, fsynced and renamed into place by now.
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)
