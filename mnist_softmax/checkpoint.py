"""Self-describing checkpoints: one .npz of plain arrays and strings, loadable with allow_pickle=False.

Keys: format, format_version, front_end, map_shape, n_classes, W (T, N), b (T,), norm_mean (N,),
norm_scale (N,), fe_<name> for each front-end parameter, config_json, metrics_json.
"""

from __future__ import annotations

import json
import zipfile
import zlib
from pathlib import Path
from typing import NamedTuple

import numpy as np

from .errors import CheckpointError, shown
from .features import FRONT_ENDS
from .fileio import atomic_open
from .model import MAX_ABS, MIN_SCALE, N_CLASSES, Model

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

    With `state` (a train.TrainState), it also holds what `train --resume` needs: the momentum
    buffer of each trained parameter (train_v_<name>), the random streams' states
    (train_rng_json) and the epoch history (train_history_json).
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
        arrays |= {f"train_v_{name}": v for name, v in state.velocity.items()}
        arrays |= {
            "train_rng_json": np.array(json.dumps(state.rng_states)),
            "train_history_json": np.array(json.dumps(state.history)),
        }
    with atomic_open(path, "wb") as f:
        np.savez(f, **arrays)


_SMALL = 1 << 20  # the most bytes a scalar, string or JSON member may declare
_STRINGS = ("format", "front_end", "config_json", "metrics_json", "train_rng_json", "train_history_json")
_FLOATS = ("W", "b", "norm_mean", "norm_scale")


def _fail(path: Path, what: str) -> CheckpointError:
    return CheckpointError(f"{shown(path)}: {what}")


def _read_member(zf: zipfile.ZipFile, path: Path, key: str, max_bytes: int) -> np.ndarray:
    """Member `key` of the .npz as an array, read only after its declared size (≤ max_bytes) and its
    .npy header (no objects, no more data than the member holds) were checked. Whatever else goes
    wrong reading it (encryption, an unknown compression, a garbled header) is a CheckpointError."""
    info = zf.getinfo(f"{key}.npy")
    if info.file_size > max_bytes:
        raise _fail(path, f"{key} declares {info.file_size:,} bytes, more than a checkpoint's {key} can hold")
    try:
        return _read_npy(zf, info, path, key)
    except CheckpointError:
        raise
    except Exception as e:  # noqa: BLE001 -- zipfile and numpy raise many kinds for hostile bytes
        raise _fail(path, f"{key} cannot be read ({type(e).__name__}: {e})") from None


def _read_npy(zf: zipfile.ZipFile, info: zipfile.ZipInfo, path: Path, key: str) -> np.ndarray:
    with zf.open(info) as f:
        version = np.lib.format.read_magic(f)
        if version not in ((1, 0), (2, 0)):
            raise _fail(path, f"{key} is not a .npy array of a known version")
        read_header = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
        shape, fortran, dtype = read_header(f)
        if dtype.hasobject:
            raise _fail(path, f"{key} holds Python objects, which are never unpickled")
        n = int(np.prod(shape, dtype=object)) * dtype.itemsize
        if n > info.file_size:
            raise _fail(path, f"{key} claims shape {shape}, more data than it holds")
        data = f.read(n)
    if len(data) != n:
        raise _fail(path, f"{key} is truncated")
    return np.frombuffer(data, dtype).reshape(shape, order="F" if fortran else "C")


def _string(path: Path, key: str, a: np.ndarray) -> str:
    if a.shape != () or a.dtype.kind != "U":
        raise _fail(path, f"{key} must be a string, found {a.dtype} of shape {a.shape}")
    try:
        return str(a)
    except (SystemError, ValueError, UnicodeError):  # code points beyond Unicode
        raise _fail(path, f"{key} must be a string, found invalid characters") from None


def _integer(path: Path, key: str, a: np.ndarray) -> int:
    if a.shape != () or a.dtype.kind not in "iu":
        raise _fail(path, f"{key} must be an integer, found {a.dtype} of shape {a.shape}")
    return int(a)


def _json(path: Path, key: str, text: str, kind: type):
    try:
        value = json.loads(text)
    except (json.JSONDecodeError, RecursionError) as e:
        raise _fail(path, f"{key} is damaged ({e})") from None
    if not isinstance(value, kind):
        raise _fail(path, f"{key} must hold a JSON {'object' if kind is dict else 'list'}")
    return value


def _floats(path: Path, key: str, a: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    if a.dtype != np.float32:
        raise _fail(path, f"{key} must be float32, found {a.dtype}")
    if a.shape != shape:
        raise _fail(path, f"{key} has shape {a.shape}, expected {shape}")
    if not np.isfinite(a).all():
        raise _fail(path, f"{key} holds NaN or infinite values")
    if a.size and np.abs(a).max() > MAX_ABS:
        raise _fail(path, f"{key} holds values beyond ±{MAX_ABS:g}, which no training here produces")
    return np.array(a)  # writable, aligned, ours


def _open(path: Path) -> zipfile.ZipFile:
    import stat

    try:
        if not stat.S_ISREG(path.stat().st_mode):
            raise CheckpointError(f"{shown(path)} is not a regular file")
        return zipfile.ZipFile(path)
    except FileNotFoundError:
        raise CheckpointError(f"checkpoint not found: {path}") from None
    except (zipfile.BadZipFile, EOFError, ValueError) as e:
        raise CheckpointError(f"{shown(path)} is not a readable checkpoint (not an .npz file: {e})") from None


def _load(path: str | Path, with_state: bool):
    """The checkpoint's validated contents: (Checkpoint, {train_* key: value} or None)."""
    path = Path(path)
    from .config import make_config
    from .errors import ConfigError

    try:
        with _open(path) as zf:
            members = {name[:-4] for name in zf.namelist() if name.endswith(".npy")}
            missing = [k for k in _REQUIRED if k not in members]
            if missing:
                raise CheckpointError(
                    f"{shown(path)} is not an mnist-softmax checkpoint (missing {', '.join(missing)})"
                )
            small = {k: _read_member(zf, path, k, _SMALL) for k in _REQUIRED if k not in _FLOATS}
            if _string(path, "format", small["format"]) != FORMAT:
                raise CheckpointError(f"{shown(path)} is not an mnist-softmax checkpoint")
            version = _integer(path, "format_version", small["format_version"])
            if version not in READABLE_VERSIONS:
                readable = " and ".join(map(str, READABLE_VERSIONS))
                raise _fail(path, f"format version {version}; this mnist-softmax reads versions {readable}")
            front_end = _string(path, "front_end", small["front_end"])
            if front_end not in FRONT_ENDS:
                raise _fail(path, f"front end {front_end!r}, which this version does not have")
            fe = FRONT_ENDS[front_end]
            if _integer(path, "n_classes", small["n_classes"]) != N_CLASSES:
                raise _fail(path, f"n_classes must be {N_CLASSES}")
            map_shape = small["map_shape"]
            if map_shape.ndim != 1 or map_shape.dtype.kind not in "iu" or tuple(map_shape.tolist()) != fe.map_shape:
                raise _fail(path, f"map_shape {map_shape.tolist()} does not match front end {front_end} {fe.map_shape}")
            values = _json(path, "config_json", _string(path, "config_json", small["config_json"]), dict)
            try:
                config = make_config(values, source=f"{shown(path)} config_json").to_dict()
            except ConfigError as e:
                raise _fail(path, f"config_json: {e}") from None
            if config["features"] != front_end:
                raise _fail(path, f"config_json trains features {config['features']!r}, not {front_end!r}")
            metrics = _json(path, "metrics_json", _string(path, "metrics_json", small["metrics_json"]), dict)

            T, N = N_CLASSES, fe.n_features
            shapes = {"W": (T, N), "b": (T,), "norm_mean": (N,), "norm_scale": (N,)}
            fe_shapes = {f"fe_{k}": shape for k, shape in fe.param_shapes(config).items()}
            extra = sorted(k for k in members if k.startswith("fe_") and k not in fe_shapes)
            if extra:
                raise _fail(path, f"{', '.join(extra)} is not a parameter of front end {front_end}")
            trained = {"W": (T, N), "b": (T,)} | (
                {k: fe_shapes[f"fe_{k}"] for k in fe.param_shapes(config)} if fe.trained else {}
            )
            if with_state:
                state_keys = [f"train_v_{k}" for k in trained] + ["train_rng_json", "train_history_json"]
                if not all(k in members for k in state_keys):
                    raise CheckpointError(f"{shown(path)} holds no training state to resume from")
                shapes |= {f"train_v_{k}": shape for k, shape in trained.items()}
            arrays = {}
            for key, shape in (shapes | fe_shapes).items():
                if key not in members:
                    raise CheckpointError(f"{shown(path)} is not an mnist-softmax checkpoint (missing {key})")
                max_bytes = 4096 + 8 * int(np.prod(shape, dtype=object))  # room for a float64 to be named
                arrays[key] = _floats(path, key, _read_member(zf, path, key, max_bytes), shape)
            state = None
            if with_state:
                rng = _json(
                    path,
                    "train_rng_json",
                    _string(path, "train_rng_json", _read_member(zf, path, "train_rng_json", _SMALL)),
                    dict,
                )
                history = _json(
                    path,
                    "train_history_json",
                    _string(path, "train_history_json", _read_member(zf, path, "train_history_json", _SMALL)),
                    list,
                )
                velocity = {k: arrays[f"train_v_{k}"] for k in trained}
                state = {"velocity": velocity, "rng_states": rng, "history": history, "trained": list(trained)}
    except (zipfile.BadZipFile, EOFError, ValueError, OSError, zlib.error) as e:
        if isinstance(e, OSError) and e.filename:
            raise
        raise CheckpointError(f"{shown(path)} is not a readable checkpoint ({e})") from None
    if not (arrays["norm_scale"] >= MIN_SCALE).all():
        raise _fail(path, f"norm_scale must be at least {MIN_SCALE:g} (the smallest std_floor)")
    fe_params = {k[3:]: arrays[k] for k in fe_shapes}
    model = Model(front_end, fe_params, arrays["norm_mean"], arrays["norm_scale"], arrays["W"], arrays["b"])
    return Checkpoint(model, config, metrics, version), state


def load_checkpoint(path: str | Path) -> Checkpoint:
    """(model, config dict, metrics dict, format version) from a checkpoint written by save_checkpoint.

    Every member is validated before use and a CheckpointError names what is wrong: a missing,
    truncated, foreign, pickled or wrong-version file; weights that are not finite float32 of the
    right shapes; front-end parameters that do not fit the front end; a config that would not
    pass as a config file. Each member's declared size is checked before it is read, members
    this version does not know are never read, and nothing is ever unpickled.
    """
    return _load(path, with_state=False)[0]


def _epoch_row(row, epoch: int) -> bool:
    """Whether a history row is what train.fit writes for this epoch: its columns, numbers in each."""
    from .train import EPOCH_COLUMNS

    if not isinstance(row, dict) or tuple(row) != EPOCH_COLUMNS or row["epoch"] != epoch:
        return False
    return all(isinstance(v, int | float) and not isinstance(v, bool) for v in row.values())


def load_train_state(path: str | Path):
    """(config dict, train.TrainState) from a checkpoint that holds training state, for `train --resume`."""
    from .train import TrainState  # only here: inference never imports the trainer

    checkpoint, state = _load(path, with_state=True)
    if checkpoint.format_version != FORMAT_VERSION:
        raise CheckpointError(
            f"{shown(path)} was written by an older mnist-softmax (format version {checkpoint.format_version}), whose "
            "random streams this version does not continue; start a new run instead of --resume"
        )
    model, config = checkpoint.model, checkpoint.config
    history = state["history"]
    if len(history) > config["epochs"] or not all(_epoch_row(row, i + 1) for i, row in enumerate(history)):
        raise CheckpointError(f"{shown(path)}: train_history_json does not fit the run's {config['epochs']} epochs")
    if len(history) == config["epochs"] and checkpoint.metrics.get("interrupted") is False:
        raise CheckpointError(f"{shown(path)} is a finished run ({config['epochs']} epochs); nothing to resume")
    rng_states = state["rng_states"]
    try:
        for one in rng_states.values():
            np.random.default_rng().bit_generator.state = one
    except (TypeError, ValueError, KeyError, OverflowError) as e:
        raise CheckpointError(f"{shown(path)}: train_rng_json is not a random generator's state ({e})") from None
    from .split import STREAMS

    needed = {"order", "shift"} if FRONT_ENDS[model.front_end].trained else {"order"}  # what train.fit draws from
    if set(rng_states) != needed or not needed <= set(STREAMS):
        raise CheckpointError(f"{shown(path)}: train_rng_json must hold the streams {', '.join(sorted(needed))}")
    params = {"W": model.W, "b": model.b} | {k: model.fe_params[k] for k in state["trained"] if k not in ("W", "b")}
    return config, TrainState(params, state["velocity"], rng_states, history)
