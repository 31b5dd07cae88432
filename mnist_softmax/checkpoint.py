"""Self-describing checkpoints: one .npz of plain arrays and strings, loadable with allow_pickle=False.

Keys: format, format_version, front_end, map_shape, n_classes, W (T, N), b (T,), norm_mean (N,),
norm_scale (N,), fe_<name> for each front-end parameter, config_json, metrics_json.
"""

from __future__ import annotations

import json
import zipfile
from pathlib import Path
from typing import NamedTuple

import numpy as np

from .errors import CheckpointError
from .features import FRONT_ENDS
from .fileio import atomic_open
from .model import N_CLASSES, Model

FORMAT = "mnist-softmax"
# 2: the split, front-end fitting and batch order draw from separate streams (split.rng_streams);
#    train_rng_json is the batch-order stream's state. 1: all three drew from one default_rng(seed).
FORMAT_VERSION = 2
READABLE_VERSIONS = (1, 2)
_REQUIRED = (
    "format",
    "format_version",
    "front_end",
    "map_shape",
    "n_classes",
    "W",
    "b",
    "norm_mean",
    "norm_scale",
    "config_json",
    "metrics_json",
)


class Checkpoint(NamedTuple):
    model: Model
    config: dict  # the Config that trained it, as a dict
    metrics: dict  # the run's summary numbers
    format_version: int


def save_checkpoint(path: str | Path, model: Model, config: dict, metrics: dict, state=None) -> None:
    """Write the checkpoint atomically: readers see the old file or the complete new one.

    With `state` (a train.TrainState), it also holds what `train --resume` needs: momentum buffers, the random
    generator's state and the epoch history (train_vW, train_vb, train_rng_json, train_history_json).
    """
    arrays = {
        "format": np.array(FORMAT),
        "format_version": np.array(FORMAT_VERSION),
        "front_end": np.array(model.front_end),
        "map_shape": np.array(FRONT_ENDS[model.front_end].map_shape),
        "n_classes": np.array(N_CLASSES),
        "W": model.W,
        "b": model.b,
        "norm_mean": model.mean,
        "norm_scale": model.scale,
        "config_json": np.array(json.dumps(config)),
        "metrics_json": np.array(json.dumps(metrics)),
        **{f"fe_{k}": v for k, v in model.fe_params.items()},
    }
    if state is not None:
        arrays |= {
            "train_vW": state.velocity[0],
            "train_vb": state.velocity[1],
            "train_rng_json": np.array(json.dumps(state.rng_state)),
            "train_history_json": np.array(json.dumps(state.history)),
        }
    with atomic_open(path, "wb") as f:
        np.savez(f, **arrays)


def load_checkpoint(path: str | Path) -> Checkpoint:
    """(model, config dict, metrics dict, format version) from a checkpoint written by save_checkpoint.

    Raises CheckpointError for a missing, truncated, foreign, pickled, wrong-version or
    shape-inconsistent file. Never unpickles anything.
    """
    path = Path(path)
    try:
        with np.load(path, allow_pickle=False) as z:
            missing = [k for k in _REQUIRED if k not in z.files]
            if missing:
                raise CheckpointError(f"{path} is not an mnist-softmax checkpoint (missing {', '.join(missing)})")
            arrays = {k: z[k] for k in z.files}
    except FileNotFoundError:
        raise CheckpointError(f"checkpoint not found: {path}") from None
    except (zipfile.BadZipFile, ValueError, OSError, EOFError) as e:
        # NumPy's own message for these suggests loading with pickle; a checkpoint never needs it.
        why = "not an .npz file, or it holds pickled objects, which are never loaded" if "pickle" in str(e) else e
        raise CheckpointError(f"{path} is not a readable checkpoint ({why})") from None
    if str(arrays["format"]) != FORMAT:
        raise CheckpointError(f"{path} is not an mnist-softmax checkpoint")
    version = int(arrays["format_version"])
    if version not in READABLE_VERSIONS:
        readable = " and ".join(map(str, READABLE_VERSIONS))
        raise CheckpointError(f"{path} has format version {version}; this mnist-softmax reads versions {readable}")
    front_end = str(arrays["front_end"])
    if front_end not in FRONT_ENDS:
        raise CheckpointError(f"{path} uses front end {front_end!r}, which this version does not have")
    fe = FRONT_ENDS[front_end]
    T, N = int(arrays["n_classes"]), fe.n_features
    shapes = {"W": (T, N), "b": (T,), "norm_mean": (N,), "norm_scale": (N,)}
    for key, shape in shapes.items():
        if arrays[key].shape != shape:
            raise CheckpointError(f"{path}: {key} has shape {arrays[key].shape}, expected {shape}")
    if tuple(arrays["map_shape"]) != fe.map_shape or T != N_CLASSES:
        raise CheckpointError(f"{path}: feature map {tuple(arrays['map_shape'])} or class count {T} does not match")
    try:
        config, metrics = json.loads(str(arrays["config_json"])), json.loads(str(arrays["metrics_json"]))
    except json.JSONDecodeError as e:
        raise CheckpointError(f"{path}: damaged config or metrics ({e})") from None
    fe_params = {k[3:]: v for k, v in arrays.items() if k.startswith("fe_")}
    model = Model(front_end, fe_params, arrays["norm_mean"], arrays["norm_scale"], arrays["W"], arrays["b"])
    return Checkpoint(model, config, metrics, version)


def load_train_state(path: str | Path):
    """(config dict, train.TrainState) from a checkpoint that holds training state, for `train --resume`."""
    from .train import TrainState  # only here: inference never imports the trainer

    model, config, _, version = load_checkpoint(path)
    if version != FORMAT_VERSION:
        raise CheckpointError(
            f"{path} was written by an older mnist-softmax (format version {version}), whose random streams "
            "this version does not continue; start a new run instead of --resume"
        )
    with np.load(path, allow_pickle=False) as z:
        keys = ("train_vW", "train_vb", "train_rng_json", "train_history_json")
        if not all(k in z.files for k in keys):
            raise CheckpointError(f"{path} holds no training state to resume from")
        vW, vb = z["train_vW"], z["train_vb"]
        try:
            rng_state, history = json.loads(str(z["train_rng_json"])), json.loads(str(z["train_history_json"]))
        except json.JSONDecodeError as e:
            raise CheckpointError(f"{path}: damaged training state ({e})") from None
    if vW.shape != model.W.shape or vb.shape != model.b.shape:
        raise CheckpointError(f"{path}: training state does not match the weights' shapes")
    return config, TrainState(model.W, model.b, (vW, vb), rng_state, history)
