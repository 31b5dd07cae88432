"""Run folders: a fresh folder per run, the files in it, and `runs/latest` pointing at the newest."""

from __future__ import annotations

import csv
import errno
import io
import json
import os
import time
from pathlib import Path

from .errors import CheckpointError
from .fileio import atomic_write_text

RUNS_ROOT = Path("runs")
LATEST = "latest"


def new_run_dir(root: Path = RUNS_ROOT) -> Path:
    """Create and return root/<YYYYmmdd-HHMMSS>[-k], never reusing an existing folder.

    mkdir is atomic, so two runs started in the same second get different folders.
    """
    root.mkdir(parents=True, exist_ok=True)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    for k in range(1, 10_000):
        path = root / (stamp if k == 1 else f"{stamp}-{k}")
        try:
            path.mkdir()
            return path
        except FileExistsError:
            continue
    raise OSError(f"could not create a new run folder in {root}")


def mark_latest(run_dir: Path, root: Path = RUNS_ROOT) -> bool:
    """Point root/latest at run_dir, replacing the old link atomically. False (and nothing changed)
    when root/latest is not a link this can replace, a real folder say: the run is saved either way."""
    latest = root / LATEST
    if latest.exists() and not latest.is_symlink():
        return False
    root.mkdir(parents=True, exist_ok=True)
    target = os.path.relpath(run_dir.resolve(), root.resolve())
    tmp = root / f".{LATEST}.{os.getpid()}.tmp"
    try:
        tmp.unlink(missing_ok=True)
        tmp.symlink_to(target, target_is_directory=True)
        os.replace(tmp, latest)
    except OSError as e:
        tmp.unlink(missing_ok=True)
        if e.errno in (errno.EISDIR, errno.ENOTEMPTY, errno.EEXIST):
            return False
        raise OSError(e.errno, e.strerror, str(latest)) from None
    return True


def latest_checkpoint(root: Path = RUNS_ROOT) -> Path:
    """root/latest/model.npz, or CheckpointError telling the user how to get one."""
    path = root / LATEST / "model.npz"
    if not path.is_file():
        raise CheckpointError(f"no trained model at {path}; run `mnist-softmax train` first or pass --checkpoint PATH")
    return path


def write_metrics_csv(path: Path, rows: list[dict]) -> None:
    buf = io.StringIO()
    if rows:
        w = csv.DictWriter(buf, fieldnames=list(rows[0]), lineterminator="\n")
        w.writeheader()
        w.writerows(rows)
    atomic_write_text(path, buf.getvalue())


def write_json(path: Path, obj: dict) -> None:
    atomic_write_text(path, json.dumps(obj, indent=2) + "\n")


def _number(x):
    """x, or None where it is NaN (no validation split): JSON has no NaN."""
    return None if x is None or x != x else x


def summary_of(result, cfg) -> dict:
    """The final model's numbers on each split (what `eval --split` recomputes exactly), and more.

    metrics.csv's train columns are running averages during each epoch; these are not. An
    interrupted run has no final numbers (None) and says how many epochs it completed.
    """
    out = {}
    for split in ("test", "val", "train"):
        loss, acc = result.final.get(split, (None, None))
        out[f"{split}_accuracy"], out[f"{split}_loss"] = _number(acc), _number(loss)
    return {
        **out,
        "epochs": len(result.history),
        "epochs_planned": cfg.epochs,
        "interrupted": not result.final,
        "seconds": result.seconds,
        "features": cfg.features,
        "n_features": int(result.model.W.shape[1]),
    }


def save_outputs(run_dir: Path, result, cfg, root: Path = RUNS_ROOT) -> bool:
    """Write the run's files (checkpoint, metrics, summary, config), each atomically, then point
    root/latest at it. Returns whether root/latest could be pointed at it (see mark_latest)."""
    from .checkpoint import save_checkpoint
    from .config import to_toml

    summary = summary_of(result, cfg)
    save_checkpoint(run_dir / "model.npz", result.model, cfg.to_dict(), summary, result.state)
    write_metrics_csv(run_dir / "metrics.csv", result.history)
    write_json(run_dir / "summary.json", {**summary, "config": cfg.to_dict()})
    atomic_write_text(run_dir / "config.toml", to_toml(cfg))
    return mark_latest(run_dir, root)


FIGURES = ("curves.png", "weights.png")


def draw_figures(run_dir: Path, result, painter=None) -> None:
    """curves.png and weights.png of a run, drawn by `painter` (a plots.Painter started before
    training) or, without one, here."""
    from . import plots

    model = result.model
    test_acc = result.final["test"][1] if result.final else None
    shape = model.front.map_shape
    if model.front_end == "pixels":
        weights = "pixel_weights", {"W": model.W}
    elif model.front_end == "cnn":  # the first layer's 5×5 kernels, as columns like conv's filters
        kernels = model.fe_params["conv1_w"].reshape(len(model.fe_params["conv1_w"]), -1).T
        how = "first layer, trained with W by backpropagation"
        weights = "conv_weights", {"filters": kernels, "W": model.W, "map_shape": shape, "how": how}
    else:
        weights = "conv_weights", {"filters": model.fe_params["filters"], "W": model.W, "map_shape": shape}
    jobs = [
        ("curves", run_dir / FIGURES[0], {"history": result.history, "test_acc": test_acc}),
        (weights[0], run_dir / FIGURES[1], weights[1]),
    ]
    (painter.draw if painter is not None else plots.draw)(jobs)
