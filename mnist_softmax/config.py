"""The training recipe: one frozen dataclass, read from configs/*.toml, overridden by CLI flags.

Precedence: dataclass defaults < the config file < flags. Unknown keys, wrong types and
out-of-range values are rejected with a ConfigError naming the key, before any work starts.
"""

from __future__ import annotations

import dataclasses
import math
import tomllib
from dataclasses import dataclass, fields
from importlib import resources
from pathlib import Path
from typing import Any

from .errors import ConfigError
from .features import FRONT_ENDS
from .text import shown

FEATURE_NAMES = tuple(FRONT_ENDS)  # the front ends a recipe can choose: "pixels", "conv", "cnn"
SCHEDULES = ("constant", "step", "cosine", "onecycle")
STANDARDIZE = ("feature", "global", "none")


@dataclass(frozen=True)
class Config:
    features: str = "pixels"  # front end: "pixels" (N = 784), "conv" or "cnn" (N = 64*7*7 = 3136)
    epochs: int = 10
    batch_size: int = 200
    lr: float = 0.1  # the first epoch's rate (per-epoch schedules), or the peak of "onecycle"
    momentum: float = 0.9
    weight_decay: float = 1e-4  # L2 on W and a trained front end's kernels (never on biases)
    schedule: str = "cosine"  # learning rate: constant, step, cosine (per epoch) or onecycle (per step)
    lr_step_epochs: int = 4  # schedule = "step": multiply by lr_gamma every this many epochs
    lr_gamma: float = 0.1
    val_size: int = 5000  # held out from the 60,000 training images, seeded
    seed: int = 0
    standardize: str = "feature"  # per-feature mean/std, one global mean/std, or none
    std_floor: float = 0.3  # added to each std, so near-constant features (rarely inked pixels) are not blown up
    # conv front end only (features = "conv"): 64 k×k filters learned from patches, without labels
    conv_kernel: int = 5
    conv_patches: int = 100_000  # training patches with ink used to learn the filters
    conv_kmeans_iters: int = 10
    conv_whiten_eps: float = 0.1  # ZCA regulariser
    conv_threshold: float = 0.25  # soft threshold of the rectifier, max(0, r - t)
    # cnn front end only (features = "cnn"): the network is trained with W, on images shifted at random
    shift: int = 0  # each training image moved by up to this many pixels, rows and columns, every epoch
    rotate: float = 0.0  # ... and, when any of these three is set, turned by up to this many degrees,
    zoom: float = 0.0  # scaled by up to this fraction (0.1: 90% to 110%), sheared by up to `shear`
    shear: float = 0.0  # degrees, and moved by up to `shift` px: an affine map of its own (augment.py)
    batch_norm: bool = False  # batch norm after each conv's pooling, before its ReLU, in place of its bias

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


_CHOICES = {"features": FEATURE_NAMES, "schedule": SCHEDULES, "standardize": STANDARDIZE}
# Every numeric key's range: what the code can honour, checked before any work starts.
# (low, high, low allowed, high allowed)
RANGES: dict[str, tuple[float, float, bool, bool]] = {
    "epochs": (1, 10_000, True, True),
    "batch_size": (1, 60_000, True, True),
    "lr": (0, 1e40, False, True),  # huge rates are allowed: they diverge, and training says so
    "momentum": (0, 1, True, False),
    "weight_decay": (0, 1, True, True),  # beyond 1 the penalty, not the data, decides every weight
    "lr_step_epochs": (1, 10_000, True, True),
    "lr_gamma": (0, 1, False, True),
    "val_size": (0, 59_999, True, True),  # the training split keeps at least one image
    "seed": (0, 2**63 - 1, True, True),
    "std_floor": (1e-6, 1e3, True, True),  # 0 would divide features that never vary by zero (model.MIN_SCALE)
    "conv_kernel": (3, 15, True, True),  # odd as well; 1×1 patches have no contrast to normalise
    "conv_patches": (1_000, 300_000, True, True),  # fitting 15×15 filters on 300k patches peaks near 2 GB
    "conv_kmeans_iters": (1, 100, True, True),  # 300k patches: ~0.8 s an iteration
    "conv_whiten_eps": (0, 10, False, True),
    "conv_threshold": (0, 10, True, True),
    "shift": (0, 4, True, True),
    "rotate": (0, 45, True, True),
    "zoom": (0, 0.5, True, True),
    "shear": (0, 45, True, True),
}
CNN_ONLY = ("shift", "rotate", "zoom", "shear", "batch_norm")  # settings of the network's training


def _check_type(key: str, value: Any, want: type) -> Any:
    if want is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if type(value) is not want:
        raise ConfigError(f"config key '{key}' must be {want.__name__}, got {type(value).__name__} {value!r}")
    return value


def _number(v: float) -> str:
    return str(v) if isinstance(v, int) else f"{v:g}"


def _interval(low: float, high: float, low_in: bool, high_in: bool) -> str:
    return f"{'[' if low_in else '('}{_number(low)}, {_number(high)}{']' if high_in else ')'}"


def validate(cfg: Config) -> Config:
    """Range checks that no type can express; returns cfg unchanged or raises ConfigError."""
    for key, allowed in _CHOICES.items():
        if getattr(cfg, key) not in allowed:
            raise ConfigError(f"config key '{key}' must be one of {', '.join(allowed)}, got {getattr(cfg, key)!r}")
    for key, (low, high, low_in, high_in) in RANGES.items():
        v = getattr(cfg, key)
        above = v >= low if low_in else v > low
        below = v <= high if high_in else v < high
        if not (math.isfinite(v) and above and below):
            raise ConfigError(f"config key '{key}' must be in {_interval(low, high, low_in, high_in)}, got {v!r}")
    if cfg.conv_kernel % 2 == 0:
        raise ConfigError(f"config key 'conv_kernel' must be odd, got {cfg.conv_kernel}")
    for key in CNN_ONLY:
        if cfg.features != "cnn" and getattr(cfg, key):
            raise ConfigError(
                f"config key '{key}' works only with features cnn (features are fixed for {cfg.features})"
            )
    if cfg.features == "cnn" and cfg.standardize != "none":
        # The maps change as the network learns: no standardiser fitted beforehand would fit them.
        raise ConfigError(f"config key 'standardize' must be none for features cnn, got {cfg.standardize!r}")
    return cfg


def make_config(values: dict[str, Any], base: Config | None = None, source: str = "config") -> Config:
    """A Config from `base` with `values` applied, every key and type checked."""
    types = {f.name: type(getattr(Config(), f.name)) for f in fields(Config)}
    unknown = sorted(set(values) - set(types))
    if unknown:
        raise ConfigError(
            f"unknown key{'s' if len(unknown) > 1 else ''} in {shown(source)}: {', '.join(unknown)} "
            f"(known: {', '.join(types)})"
        )
    checked = {k: _check_type(k, v, types[k]) for k, v in values.items()}
    return validate(dataclasses.replace(base or Config(), **checked))


def shipped_config(name: str) -> Path | None:
    """Path of a config shipped with the package (configs/NAME.toml), or None."""
    path = resources.files("mnist_softmax.configs").joinpath(f"{name}.toml")
    return Path(str(path)) if path.is_file() else None


def load_config(path_or_name: str | Path | None = None, overrides: dict[str, Any] | None = None) -> Config:
    """Read a config file (a path, or the name of a shipped config such as "conv"), apply overrides.

    With no file, the shipped config for the chosen front end is used: pixels.toml unless
    overrides say features = "conv" (conv.toml) or "cnn" (cnn.toml).
    """
    overrides = {k: v for k, v in (overrides or {}).items() if v is not None}
    if path_or_name is None:
        path_or_name = overrides.get("features", "pixels")
    path = Path(path_or_name)
    if not path.is_file():
        shipped = shipped_config(str(path_or_name)) if path.suffix == "" else None
        if shipped is None:
            raise ConfigError(f"config file not found: {path_or_name}")
        path = shipped
    try:
        values = tomllib.loads(path.read_text(encoding="utf-8"))
    except RecursionError:
        raise ConfigError(f"{shown(path)} is nested too deeply to be a config") from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as e:
        raise ConfigError(f"{shown(path)} is not valid TOML: {e}") from None
    cfg = make_config(values, source=str(path))
    return make_config(overrides, base=cfg, source="flags")


def to_toml(cfg: Config) -> str:
    """The config as TOML that load_config reads back to an equal Config."""
    lines = []
    for key, value in cfg.to_dict().items():
        if isinstance(value, bool):
            lines.append(f"{key} = {'true' if value else 'false'}")
        elif isinstance(value, str):
            lines.append(f'{key} = "{value}"')
        elif isinstance(value, float):
            lines.append(f"{key} = {value!r}")
        else:
            lines.append(f"{key} = {value}")
    return "\n".join(lines) + "\n"
