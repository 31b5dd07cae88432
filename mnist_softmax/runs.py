"""Run folders: a fresh folder per run, the files in it, a lock while a run writes them, and
`runs/latest` pointing at the newest run in runs/ (a run written elsewhere with --out leaves it alone)."""

from __future__ import annotations

import contextlib
import csv
import errno
import io
import json
import math
import os
import time
from collections.abc import Iterator
from pathlib import Path

from .errors import CheckpointError, MnistSoftmaxError
from .fileio import Locked, atomic_write_text, exclusive, is_stale_temp, remove_stale_temps
from .text import shown

RUNS_ROOT = Path("runs")
LATEST = "latest"
OUTPUTS = ("model.npz", "metrics.csv", "summary.json", "config.toml")  # written in this order, model first
FIGURES = ("curves.png", "weights.png")
LOCK = ".train.lock"  # in a run folder while a `train` writes it


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


@contextlib.contextmanager
def claim(run_dir: Path) -> Iterator[None]:
    """Hold run_dir for this process while inside: a second `train` into the same folder is refused
    at once, before it trains (MnistSoftmaxError). Once held, temp files that killed writers left in
    it are removed. The lock file is removed on the way out; one left by a killed run holds nothing."""
    with contextlib.ExitStack() as stack:
        try:
            stack.enter_context(exclusive(run_dir / LOCK, wait=False))
        except Locked:
            raise MnistSoftmaxError(
                f"{shown(run_dir)}/ is being written by another `mnist-softmax train` right now; choose another --out"
            ) from None
        remove_stale_temps(run_dir)
        yield


def holds_files(run_dir: Path) -> bool:
    """Whether run_dir holds anything but a run's lock file and temp files of writers that were
    killed (a run killed as it wrote its first file left nothing to keep)."""
    return run_dir.is_dir() and any(p.name != LOCK and not is_stale_temp(p) for p in run_dir.iterdir())


def remove_if_unused(run_dir: Path) -> None:
    """Remove run_dir if no run wrote anything in it (holds_files) and no other `train` holds it: a
    lock file a signal caught half-made, or temp files of killed writers, do not keep it."""
    if not run_dir.is_dir() or holds_files(run_dir):
        return
    try:
        with exclusive(run_dir / LOCK, wait=False):  # the lock file goes on the way out
            remove_stale_temps(run_dir)
    except Locked:
        return
    run_dir.rmdir()


def in_root(run_dir: Path, root: Path = RUNS_ROOT) -> bool:
    """Whether run_dir is a folder directly in root, the runs that root/latest follows."""
    return run_dir.resolve().parent == root.resolve()


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


def save_outputs(run_dir: Path, result, cfg, root: Path = RUNS_ROOT, only: tuple[str, ...] = OUTPUTS) -> bool:
    """Write the run's files (OUTPUTS: checkpoint, metrics, summary, config), each atomically and the
    checkpoint first, which holds all the others' contents; then, for a run in root, point
    root/latest at it. `only`: write just these of OUTPUTS. Returns False when root/latest is in
    the way (see mark_latest), else True."""
    from .checkpoint import save_checkpoint
    from .config import to_toml

    summary = summary_of(result, cfg)
    writers = {
        "model.npz": lambda path: save_checkpoint(path, result.model, cfg.to_dict(), summary, result.state),
        "metrics.csv": lambda path: write_metrics_csv(path, result.history),
        "summary.json": lambda path: write_json(path, {**summary, "config": cfg.to_dict()}),
        "config.toml": lambda path: atomic_write_text(path, to_toml(cfg)),
    }
    for name in OUTPUTS:
        if name in only:
            writers[name](run_dir / name)
    return mark_latest(run_dir, root) if in_root(run_dir, root) else True


def missing_outputs(run_dir: Path) -> list[str]:
    """The files of OUTPUTS and FIGURES that run_dir lacks."""
    return [name for name in OUTPUTS + FIGURES if not (run_dir / name).is_file()]


def saved_result(run_dir: Path):
    """(TrainResult, Config, finished) of the run saved in run_dir/model.npz, rebuilt from the checkpoint
    alone: weights, training state, history, final scores (none for a run that was interrupted), and
    whether its training finished. CheckpointError if the checkpoint cannot say."""
    from .checkpoint import is_finished, load_run
    from .config import make_config
    from .state import TrainResult

    path = run_dir / "model.npz"
    checkpoint, state = load_run(path)
    cfg = make_config(checkpoint.config, source=f"{shown(path)} config_json")
    metrics = checkpoint.metrics
    finished = is_finished(checkpoint, state)
    final = {}
    if finished:
        for split in ("train", "val", "test"):
            loss, acc = metrics.get(f"{split}_loss"), metrics.get(f"{split}_accuracy")
            if not all(v is None or isinstance(v, int | float) and not isinstance(v, bool) for v in (loss, acc)):
                raise CheckpointError(f"{shown(path)}: metrics_json holds no final {split} scores")
            final[split] = (math.nan if loss is None else loss, math.nan if acc is None else acc)
    seconds = metrics.get("seconds", 0.0)
    seconds = seconds if isinstance(seconds, int | float) and not isinstance(seconds, bool) else 0.0
    result = TrainResult(checkpoint.model, state, list(state.history), final, float(seconds), config=checkpoint.config)
    return result, cfg, finished


def draw_figures(run_dir: Path, result, painter=None) -> None:
    """curves.png and weights.png of a run, drawn by `painter` (a plots.Painter started before
    training) or, without one, here."""
    from . import plots
    from .explain import weight_templates

    model = result.model
    test_acc = result.final["test"][1] if result.final else None
    t = weight_templates(model)
    if model.front_end == "pixels":
        weights = "pixel_weights", {"rows": t.rows, "rare": t.rare, "limit": t.limit}
    else:
        how = None
        if model.front_end == "cnn":  # the first layer's 5×5 kernels, as columns like conv's filters
            filters = model.fe_params["conv1_w"].reshape(len(model.fe_params["conv1_w"]), -1).T
            how = "first layer, trained with W by backpropagation"
        else:
            filters = model.fe_params["filters"]
        weights = "conv_weights", {"filters": filters, "rows": t.rows, "limit": t.limit} | ({"how": how} if how else {})
    jobs = [
        ("curves", run_dir / FIGURES[0], {"history": result.history, "test_acc": test_acc}),
        (weights[0], run_dir / FIGURES[1], weights[1]),
    ]
    (painter.draw if painter is not None else plots.draw)(jobs)
