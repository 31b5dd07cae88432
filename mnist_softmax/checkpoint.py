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

from .errors import CheckpointError
from .features import FRONT_ENDS, FrontEnd
from .fileio import atomic_open
from .model import MAX_ABS, MIN_SCALE, N_CLASSES, Model
from .state import EPOCH_COLUMNS, TrainState
from .text import shown

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

    With `state` (a state.TrainState), it also holds what `train --resume` needs: the momentum
    buffer of each trained parameter (train_v_<name>), the random streams' states
    (train_rng_json) and the epoch history (train_history_json).
    """
    with atomic_open(path, "wb") as f:
        _write(f, model, config, metrics, state)


def checkpoint_bytes(model: Model, config: dict, metrics: dict) -> bytes:
    """The bytes of a checkpoint without training state, as save_checkpoint would write them."""
    import io

    buf = io.BytesIO()
    _write(buf, model, config, metrics, None)
    return buf.getvalue()


def _write(f, model: Model, config: dict, metrics: dict, state) -> None:
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


def is_checkpoint(path: str | Path) -> bool:
    """Whether the file at path looks like a checkpoint (an .npz archive with a format_version),
    without reading it: what a writer must not replace by mistake."""
    try:
        with zipfile.ZipFile(path) as z:
            return "format_version.npy" in z.namelist()
    except (OSError, zipfile.BadZipFile):
        return False


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


def _format_version(path: Path, small: dict[str, np.ndarray]) -> int:
    """The format version of a file whose `format` member says it is ours, if this version reads it."""
    if _string(path, "format", small["format"]) != FORMAT:
        raise CheckpointError(f"{shown(path)} is not an mnist-softmax checkpoint")
    version = _integer(path, "format_version", small["format_version"])
    if version not in READABLE_VERSIONS:
        readable = " and ".join(map(str, READABLE_VERSIONS))
        raise _fail(path, f"format version {version}; this mnist-softmax reads versions {readable}")
    return version


def _front_end(path: Path, small: dict[str, np.ndarray]) -> FrontEnd:
    """The front end the checkpoint names, with its class count and map shape checked against it."""
    name = _string(path, "front_end", small["front_end"])
    if name not in FRONT_ENDS:
        raise _fail(path, f"front end {name!r}, which this version does not have")
    fe = FRONT_ENDS[name]
    if _integer(path, "n_classes", small["n_classes"]) != N_CLASSES:
        raise _fail(path, f"n_classes must be {N_CLASSES}")
    map_shape = small["map_shape"]
    if map_shape.ndim != 1 or map_shape.dtype.kind not in "iu" or tuple(map_shape.tolist()) != fe.map_shape:
        raise _fail(path, f"map_shape {map_shape.tolist()} does not match front end {name} {fe.map_shape}")
    return fe


def _config(path: Path, small: dict[str, np.ndarray], fe: FrontEnd) -> dict:
    """config_json as a Config dict: valid as a config file would be, and training this front end."""
    from .config import make_config
    from .errors import ConfigError

    values = _json(path, "config_json", _string(path, "config_json", small["config_json"]), dict)
    try:
        config = make_config(values, source=f"{shown(path)} config_json").to_dict()
    except ConfigError as e:
        raise _fail(path, f"config_json: {e}") from None
    if config["features"] != fe.name:
        raise _fail(path, f"config_json trains features {config['features']!r}, not {fe.name!r}")
    return config


def _array_shapes(path: Path, fe: FrontEnd, config: dict, members: set[str], with_state: bool) -> dict:
    """{member: shape} of every float array to read: the layer, the standardiser, the front end's
    parameters (fe_<name>; members naming no parameter of it are refused) and, with_state, the
    velocity (train_v_<name>) of each parameter training changes."""
    T, N = N_CLASSES, fe.n_features
    fe_shapes = {f"fe_{k}": shape for k, shape in fe.param_shapes(config).items()}
    extra = sorted(k for k in members if k.startswith("fe_") and k not in fe_shapes)
    if extra:
        raise _fail(path, f"{', '.join(extra)} is not a parameter of front end {fe.name}")
    shapes = {"W": (T, N), "b": (T,), "norm_mean": (N,), "norm_scale": (N,)} | fe_shapes
    if with_state:
        shapes |= {f"train_v_{k}": shape for k, shape in _trained_shapes(fe, config).items()}
    return shapes


def _trained_shapes(fe: FrontEnd, config: dict) -> dict[str, tuple[int, ...]]:
    """{name: shape} of the parameters training changes: W and b, and a trained front end's own."""
    return {"W": (N_CLASSES, fe.n_features), "b": (N_CLASSES,)} | (fe.param_shapes(config) if fe.trained else {})


def _arrays(zf: zipfile.ZipFile, path: Path, members: set[str], shapes: dict) -> dict[str, np.ndarray]:
    """Each member of `shapes` read and checked as finite, bounded float32 of its shape (_floats)."""
    arrays = {}
    for key, shape in shapes.items():
        if key not in members:
            if key.startswith("train_"):
                raise CheckpointError(f"{shown(path)} holds no training state to resume from")
            raise CheckpointError(f"{shown(path)} is not an mnist-softmax checkpoint (missing {key})")
        max_bytes = 4096 + 8 * int(np.prod(shape, dtype=object))  # room for a float64 to be named
        arrays[key] = _floats(path, key, _read_member(zf, path, key, max_bytes), shape)
    if not (arrays["norm_scale"] >= MIN_SCALE).all():
        raise _fail(path, f"norm_scale must be at least {MIN_SCALE:g} (the smallest std_floor)")
    return arrays


def _text_member(zf: zipfile.ZipFile, path: Path, members: set[str], key: str, kind: type):
    """A JSON member (a string) parsed into `kind` (dict or list)."""
    if key not in members:
        raise CheckpointError(f"{shown(path)} holds no training state to resume from")
    return _json(path, key, _string(path, key, _read_member(zf, path, key, _SMALL)), kind)


def _load(path: str | Path, with_state: bool | None) -> tuple[Checkpoint, dict | None]:
    """The checkpoint's validated contents: (Checkpoint, with_state: {"velocity", "rng_states",
    "history"} as stored, else None). with_state None: the state if the file holds one (one
    saved from the page does not). Each step below checks the rule its name says."""
    path = Path(path)
    try:
        with _open(path) as zf:
            members = {name[:-4] for name in zf.namelist() if name.endswith(".npy")}
            missing = [k for k in _REQUIRED if k not in members]
            if missing:
                raise CheckpointError(
                    f"{shown(path)} is not an mnist-softmax checkpoint (missing {', '.join(missing)})"
                )
            small = {k: _read_member(zf, path, k, _SMALL) for k in _REQUIRED if k not in _FLOATS}
            version = _format_version(path, small)
            if with_state is None:  # an older format's state is not read (load_run says so)
                with_state = "train_history_json" in members and version == FORMAT_VERSION
            fe = _front_end(path, small)
            config = _config(path, small, fe)
            metrics = _json(path, "metrics_json", _string(path, "metrics_json", small["metrics_json"]), dict)
            arrays = _arrays(zf, path, members, _array_shapes(path, fe, config, members, with_state))
            state = None
            if with_state:
                state = {
                    "velocity": {k: arrays[f"train_v_{k}"] for k in _trained_shapes(fe, config)},
                    "rng_states": _text_member(zf, path, members, "train_rng_json", dict),
                    "history": _text_member(zf, path, members, "train_history_json", list),
                }
    except (zipfile.BadZipFile, EOFError, ValueError, OSError, zlib.error) as e:
        if isinstance(e, OSError) and e.filename:
            raise
        raise CheckpointError(f"{shown(path)} is not a readable checkpoint ({e})") from None
    fe_params = {k: arrays[f"fe_{k}"] for k in fe.param_shapes(config)}
    model = Model(fe.name, fe_params, arrays["norm_mean"], arrays["norm_scale"], arrays["W"], arrays["b"])
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
    if not isinstance(row, dict) or tuple(row) != EPOCH_COLUMNS or row["epoch"] != epoch:
        return False
    return all(isinstance(v, int | float) and not isinstance(v, bool) for v in row.values())


def _history(path: Path, history: list, epochs: int) -> list[dict]:
    """train_history_json: one row per completed epoch, as train.fit writes them, no more than the run's epochs."""
    if len(history) > epochs or not all(_epoch_row(row, i + 1) for i, row in enumerate(history)):
        raise CheckpointError(f"{shown(path)}: train_history_json does not fit the run's {epochs} epochs")
    return history


def _same_form(value, template) -> bool:
    """Whether value has template's form: dicts with the same keys and values of the same form,
    integers where it has integers (not floats, not booleans), the same strings."""
    if isinstance(template, dict):
        return (
            isinstance(value, dict)
            and value.keys() == template.keys()
            and all(_same_form(value[k], template[k]) for k in template)
        )
    if isinstance(template, bool) or not isinstance(template, int):
        return value == template
    return isinstance(value, int) and not isinstance(value, bool)


def _rng_states(path: Path, rng_states: dict, needed: set[str]) -> dict[str, dict]:
    """train_rng_json: the state of each stream in `needed`, each exactly of the form NumPy's
    default generator gives (a float where an integer belongs is refused, not rounded)."""
    from .streams import STREAMS

    if set(rng_states) != needed or not needed <= set(STREAMS):
        raise CheckpointError(f"{shown(path)}: train_rng_json must hold the streams {', '.join(sorted(needed))}")
    template = np.random.default_rng(0).bit_generator.state
    for name, one in rng_states.items():
        why = "not of the form of a PCG64 state"
        if _same_form(one, template):
            try:
                np.random.default_rng().bit_generator.state = one
                continue
            except (TypeError, ValueError, KeyError, OverflowError) as e:
                why = str(e)
        raise CheckpointError(f"{shown(path)}: train_rng_json is not a random generator's state ({name}: {why})")
    return rng_states


def is_finished(checkpoint: Checkpoint, state: TrainState) -> bool:
    """Whether the run trained every epoch it planned and was scored (not interrupted)."""
    return state.epochs_done == checkpoint.config["epochs"] and checkpoint.metrics.get("interrupted") is False


def load_run(path: str | Path) -> tuple[Checkpoint, TrainState]:
    """The checkpoint and the training state it holds (state.TrainState), each member validated:
    what `train --resume` continues, or completes the folder of when the run had finished."""
    checkpoint, state = read_checkpoint(path)
    if checkpoint.format_version != FORMAT_VERSION:
        raise CheckpointError(
            f"{shown(path)} was written by an older mnist-softmax (format version {checkpoint.format_version}), whose "
            "random streams this version does not continue; start a new run instead of --resume"
        )
    if state is None:
        raise CheckpointError(f"{shown(path)} holds no training state to resume from")
    return checkpoint, state


def read_checkpoint(path: str | Path) -> tuple[Checkpoint, TrainState | None]:
    """The checkpoint and, if it holds one (a run's does, one saved from the page does not; an older
    format's is not read), its training state, validated as load_run validates it: all from one
    opening of the file."""
    checkpoint, stored = _load(path, with_state=None)
    if stored is None:
        return checkpoint, None
    path = Path(path)
    model, config = checkpoint.model, checkpoint.config
    history = _history(path, stored["history"], config["epochs"])
    fe = FRONT_ENDS[model.front_end]
    rng_states = _rng_states(path, stored["rng_states"], {"order", "shift"} if fe.trained else {"order"})
    params = {"W": model.W, "b": model.b} | {k: model.fe_params[k] for k in stored["velocity"] if k not in ("W", "b")}
    return checkpoint, TrainState(params, stored["velocity"], rng_states, history)


def load_train_state(path: str | Path) -> tuple[dict, TrainState]:
    """(config dict, state.TrainState) from a checkpoint that holds training state, for `train --resume`;
    CheckpointError for a run that finished (nothing to resume)."""
    checkpoint, state = load_run(path)
    if is_finished(checkpoint, state):
        epochs = checkpoint.config["epochs"]
        raise CheckpointError(f"{shown(path)} is a finished run ({epochs} epochs); nothing to resume")
    return checkpoint.config, state
