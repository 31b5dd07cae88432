"""The Python API: the lesson's steps as a few functions, the ones the CLI itself calls. docs/api.md.

    import mnist_softmax as ms

    data = ms.load_mnist("data")                          # downloaded and verified where needed
    result = ms.fit(ms.load_config("pixels"), data)       # train; a callback per epoch if wanted
    checkpoint = ms.load_model("runs/latest/model.npz")   # or a run's checkpoint
    digit = ms.read_digit("my-seven.jpg")                 # a path, bytes, a PIL image or an array
    p = ms.classify(checkpoint, digit, label=7)           # probabilities, and every number behind them
    s = ms.score(checkpoint, "test", data)                # accuracy, loss, confusion matrix
    ms.export_onnx(checkpoint, "model.onnx")              # the model for elsewhere (the export extra)

Nothing else in the package is promised to stay as it is.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # names for the annotations only: importing the package imports none of this
    from .checkpoint import Checkpoint
    from .config import Config
    from .data import Mnist
    from .images import Prepared
    from .predict import Prediction
    from .scoring import Score
    from .train import TrainResult

__all__ = ["Config", "classify", "export_onnx", "fit", "load_config", "load_mnist", "load_model", "read_digit", "score"]


def load_mnist(data_dir: str | os.PathLike = "data", quiet: bool = True) -> Mnist:
    """MNIST's four arrays from data_dir, downloaded (from the official mirrors, or those in
    $MNIST_SOFTMAX_MIRROR) and checksum-verified first where needed.

    -> Mnist(train_images uint8 (60000, 28, 28), train_labels (60000,), test_images (10000, 28, 28),
    test_labels (10000,)). quiet=False shows the download's progress."""
    from .data import load_mnist as load

    return load(data_dir, quiet=quiet)


def load_config(name_or_path: str | os.PathLike = "pixels", **overrides: Any) -> Config:
    """A training recipe: a shipped config by name ("pixels", "conv", "cnn", "cnn-quick") or a TOML
    file, with keyword overrides (epochs=5, lr=0.05, …); unknown keys and bad values raise ConfigError."""
    from .config import load_config as load

    return load(name_or_path, overrides)


def fit(
    config: Config, data: Mnist, on_epoch: Callable[[dict], None] | None = None, progress: bool = False
) -> TrainResult:
    """Train by the recipe `config` on `data` (load_mnist): same config, same result.

    on_epoch(row) is called after each epoch with {"epoch", "lr", "train_loss", "train_acc",
    "val_loss", "val_acc", "seconds"}. -> TrainResult: .model (load_model's .model), .history (the
    rows), .test_acc and .test_loss. Nothing is written to disk: `mnist-softmax train` saves runs."""
    from .train import fit as train

    return train(config, data, on_epoch or (lambda row: None), progress)


def load_model(path: str | os.PathLike = "runs/latest/model.npz") -> Checkpoint:
    """A checkpoint written by `mnist-softmax train` (or saved from the page), every member checked.

    -> Checkpoint: .model (front end, standardiser, W (10, N), b (10,)), .config (the recipe, a
    dict), .metrics (the run's scores). CheckpointError says what is wrong with a bad file."""
    from .checkpoint import load_checkpoint

    return load_checkpoint(path)


def read_digit(image: str | os.PathLike | bytes | Any) -> Prepared:
    """An image brought into MNIST form, as `predict` does: ink told from paper in either polarity,
    cropped to the digit, scaled to a 20-pixel box, centred by mass in 28×28.

    image: a file's path or bytes, a PIL image, or an array (H, W) or (H, W, 3 or 4) of 0..255
    integers or 0..1 floats. -> Prepared: .digit (28, 28) uint8 (light ink on black), .inverted,
    .box (where the digit was found). ImageError when it holds no digit (blank, a speck, a line,
    several digits), saying why."""
    import numpy as np

    from .images import prepare, read_image

    if isinstance(image, str | os.PathLike | bytes | bytearray):
        return prepare(*read_image(image if not isinstance(image, bytearray) else bytes(image)))
    if hasattr(image, "save") and hasattr(image, "mode"):  # a PIL image: as its PNG bytes, so EXIF and modes count
        import io

        buf = io.BytesIO()
        image.save(buf, format="PNG")
        return prepare(*read_image(buf.getvalue()))
    a = np.asarray(image)
    if a.ndim not in (2, 3) or (a.ndim == 3 and a.shape[2] not in (1, 3, 4)):
        raise ValueError(f"an image array is (H, W) or (H, W, 1, 3 or 4), not {a.shape}")
    if a.dtype.kind in "ui":
        a = a.astype(np.float32) / 255
    elif a.dtype.kind != "f":
        raise ValueError(f"an image array holds integers 0..255 or floats 0..1, not {a.dtype}")
    a = a.astype(np.float32)
    colour = a if a.ndim == 3 else a[:, :, None]
    alpha = None
    if colour.shape[2] == 4:
        colour, alpha = colour[:, :, :3], colour[:, :, 3]
    return prepare(colour, alpha)


def classify(model: Checkpoint | Any, digit: Prepared | Any, label: int | None = None) -> Prediction:
    """The model's answer for one digit: its probabilities, and every number behind them.

    model: load_model's Checkpoint (or its .model); digit: read_digit's result, or anything
    read_digit takes. -> Prediction: .probabilities (10,), .digit_class, .digit (28, 28) as the
    model saw it, .explanation (x, z = W·x + b, z − max z, exp, their sum, p) and, with label,
    .loss = −log p[label]."""
    from .images import Prepared
    from .predict import predict_digit

    m = getattr(model, "model", model)
    prepared = digit if isinstance(digit, Prepared) else read_digit(digit)
    return predict_digit(m, prepared, None, True, label)


def score(
    model: Checkpoint | TrainResult | Any, split: str = "test", data: Mnist | None = None, data_dir: str = "data"
) -> Score:
    """A model scored on the "test" split, or (a checkpoint, whose recipe says how its data was
    split) on the "val" or "train" split it was trained with, rebuilt from its seed: what
    `mnist-softmax eval` reports, to the last digit.

    model: load_model's Checkpoint, fit's TrainResult or a bare model (test only). data: load_mnist's
    arrays (else read from data_dir). -> Score: .accuracy, .loss, .confusion (10, 10: rows true,
    columns predicted), .precision, .recall, .f1 (10,), .probabilities (n, 10)."""
    from .scoring import score_split

    config = getattr(model, "config", None)
    if config is None and split != "test":
        raise ValueError(f"the {split} split is rebuilt from the recipe's seed: give load_model's checkpoint")
    config = config or {"seed": 0, "val_size": 0}
    version = getattr(model, "format_version", 2)
    cache = None  # conv's features of a split, kept in data_dir/cache when read from there
    if data is None:
        data, cache = load_mnist(data_dir), Path(data_dir) / "cache"
    return score_split(getattr(model, "model", model), config, data, split, cache, False, version).score


def export_onnx(checkpoint: Checkpoint, path: str | os.PathLike) -> Path:
    """The checkpoint as an ONNX file (`pip install 'mnist-softmax[export]'`): input "digits"
    (batch, 1, 28, 28) floats 0..1 in MNIST form, outputs "logits" and "probabilities". docs/export.md."""
    from .export import export_onnx as export

    return export(checkpoint, path)


def __dir__() -> list[str]:
    return __all__


# Config is a class, not a function: resolved when first asked for, so `import mnist_softmax` stays light.
def __getattr__(name: str):
    if name == "Config":
        from .config import Config

        return Config
    raise AttributeError(name)
