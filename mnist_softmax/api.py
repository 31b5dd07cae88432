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
    """Train by the recipe `config` (load_config's) on `data` (load_mnist's): same config, same result.

    on_epoch(row) is called after each epoch with {"epoch", "lr", "train_loss", "train_acc",
    "val_loss", "val_acc", "seconds"}. -> TrainResult: .model (load_model's .model), .history (the
    rows), .test_acc and .test_loss, .config (the recipe, a dict). Nothing is written to disk:
    `mnist-softmax train` saves runs; export_onnx and score take the result as it is. A Config
    made by hand is checked as a config file is (ConfigError)."""
    from .config import Config, make_config
    from .train import fit as train

    if not isinstance(config, Config):
        raise TypeError(f"config must be a Config (from load_config), not {type(config).__name__}")
    if on_epoch is not None and not callable(on_epoch):
        raise TypeError(f"on_epoch must be a function of one row, not {type(on_epoch).__name__}")
    _check_data(data)
    checked = make_config(config.to_dict(), source="the Config given to fit")  # each key's type and range
    return train(checked, data, on_epoch or (lambda row: None), progress)


def load_model(path: str | os.PathLike = "runs/latest/model.npz") -> Checkpoint:
    """A checkpoint written by `mnist-softmax train` (or saved from the page), every member checked.

    -> Checkpoint: .model (front end, standardiser, W (10, N), b (10,)), .config (the recipe, a
    dict), .metrics (the run's scores). CheckpointError says what is wrong with a bad file."""
    from .checkpoint import load_checkpoint

    return load_checkpoint(path)


def read_digit(image: str | os.PathLike | bytes | Any) -> Prepared:
    """An image brought into MNIST form, as `predict` does: turned upright by its EXIF orientation,
    ink told from paper in either polarity, cropped to the digit, scaled to a 20-pixel box, centred
    by mass in 28×28.

    image: a file's path, its bytes or a file opened in binary mode; a PIL image (any mode: read
    as its file is, a large JPEG within a few grey levels, since a file is decoded at reduced
    scale); or an array (H, W) or (H, W, 1, 3 or 4) of integers 0..255, floats 0..1 or booleans.
    -> Prepared: .digit (28, 28) uint8 (light ink on black), .inverted, .box (row0, row1, col0,
    col1) of the digit in the upright image as read, whose (height, width) is .size (a large
    image is read reduced). ImageError when it holds no digit (blank, a speck, a line, several
    digits), is too large or cannot be read, saying why; TypeError or ValueError for something
    that is not an image."""
    import io

    from .images import prepare, read_image, read_pil_image

    if isinstance(image, memoryview) and (image.ndim > 1 or image.format not in ("B", "b", "c")):
        return prepare(*_image_array(image))  # an array's memory, not a file's bytes
    if isinstance(image, str | os.PathLike | bytes | bytearray | memoryview):
        return prepare(*read_image(image if isinstance(image, str | os.PathLike) else bytes(image)))
    if hasattr(image, "read"):  # an open file
        if isinstance(image, io.TextIOBase) or "b" not in getattr(image, "mode", "b"):
            raise TypeError("an open file must be opened in binary mode ('rb')")
        return prepare(*read_image(image.read()))
    if hasattr(image, "getexif") and hasattr(image, "mode"):  # a PIL image
        return prepare(*read_pil_image(image))
    return prepare(*_image_array(image))


def _image_array(image: Any) -> tuple:
    """An array-like image as (colour (H, W, C) float32 in [0, 1], alpha or None), checked."""
    import numpy as np

    from .images import check_size

    if image is None or isinstance(image, str | int | float | dict):
        raise TypeError(f"an image is a path, bytes, a PIL image or an array, not {type(image).__name__}")
    try:
        a = np.asarray(image)
    except ValueError as e:
        raise ValueError(f"an image array must be rectangular: {e}") from None
    if a.ndim not in (2, 3) or (a.ndim == 3 and a.shape[2] not in (1, 3, 4)):
        raise ValueError(f"an image array is (H, W) or (H, W, 1, 3 or 4), not {a.shape}")
    if a.size == 0:
        raise ValueError(f"an image array holds no pixels: {a.shape}")
    check_size(*a.shape[:2])  # as for a file: the work and memory stay bounded
    if a.dtype.kind == "b":  # a black-and-white image (np.asarray of a PIL "1" image)
        a = a.astype(np.float32)
    elif a.dtype.kind in "ui":
        if a.min() < 0 or a.max() > 255:
            raise ValueError(f"an integer image array holds 0..255, not {a.min()}..{a.max()}")
        a = a.astype(np.float32) / 255
    elif a.dtype.kind == "f":
        if not np.isfinite(a).all() or a.min() < 0 or a.max() > 1:
            raise ValueError("a float image array holds finite values in 0..1 (divide 0..255 pixels by 255)")
    else:
        raise ValueError(f"an image array holds integers 0..255 or floats 0..1, not {a.dtype}")
    colour = a.astype(np.float32) if a.ndim == 3 else a.astype(np.float32)[:, :, None]
    if colour.shape[2] == 4:
        return colour[:, :, :3], colour[:, :, 3]
    return colour, None


def classify(model: Checkpoint | Any, digit: Prepared | Any, label: int | None = None) -> Prediction:
    """The model's answer for one digit: its probabilities, and every number behind them.

    model: load_model's Checkpoint, fit's TrainResult or their .model; digit: read_digit's result,
    or anything read_digit takes. label: the true class, an int 0..9, if known. -> Prediction:
    .probabilities (10,), .digit_class, .digit (28, 28) as the model saw it, .explanation (x,
    z = W·x + b, z − max z, exp, their sum, p) and, with label, .loss = −log p[label]."""
    import numbers

    from .images import Prepared
    from .predict import predict_digit

    m = _as_checkpoint(model).model
    T = len(m.b)
    if label is not None and (isinstance(label, bool) or not isinstance(label, numbers.Integral) or not 0 <= label < T):
        raise ValueError(f"label must be an int in 0..{T - 1}, not {label!r}")
    prepared = digit if isinstance(digit, Prepared) else read_digit(digit)
    return predict_digit(m, prepared, None, True, None if label is None else int(label))


def score(
    model: Checkpoint | TrainResult | Any, split: str = "test", data: Mnist | None = None, data_dir: str = "data"
) -> Score:
    """A model scored on the "test" split, or on the "val" or "train" split it was trained with
    (rebuilt from its recipe's seed): what `mnist-softmax eval` reports, to the last digit.

    model: load_model's Checkpoint (or a checkpoint's path), fit's TrainResult, or a bare model
    (test only). data: load_mnist's arrays (else read from data_dir). -> Score: .accuracy, .loss,
    .confusion (10, 10: rows true, columns predicted), .precision, .recall, .f1 (10,),
    .probabilities (n, 10)."""
    from .scoring import score_split

    if split not in ("train", "val", "test"):
        raise ValueError(f"split must be 'train', 'val' or 'test', not {split!r}")
    checkpoint = _as_checkpoint(model)
    if not checkpoint.config and split != "test":
        raise ValueError(
            f"the {split} split is rebuilt from the recipe's seed: give load_model's checkpoint or fit's result"
        )
    if split == "val" and checkpoint.config.get("val_size") == 0:
        raise ValueError("this model was trained with no validation split (val_size = 0): score 'test' or 'train'")
    config = checkpoint.config or {"seed": 0, "val_size": 0}
    cache = None  # conv's features of a split, kept in data_dir/cache when read from there
    if data is None:
        data, cache = load_mnist(data_dir), Path(data_dir) / "cache"
    _check_data(data)
    return score_split(checkpoint.model, config, data, split, cache, False, checkpoint.format_version).score


def export_onnx(model: Checkpoint | TrainResult, path: str | os.PathLike) -> Path:
    """The model as an ONNX file (`pip install 'mnist-softmax[export]'`): input "digits"
    (batch, 1, 28, 28) floats 0..1 in MNIST form, outputs "logits" and "probabilities", the recipe
    and test accuracy in its metadata. model: load_model's Checkpoint (or a checkpoint's path) or
    fit's TrainResult. Written atomically; never onto the checkpoint it came from. docs/export.md."""
    from .export import export_onnx as export

    source = model if isinstance(model, str | os.PathLike) else None
    return export(_as_checkpoint(model, whole=True), path, source)


def _as_checkpoint(model: Any, whole: bool = False) -> Checkpoint:
    """A Checkpoint from what the API's functions take: a Checkpoint, a checkpoint's path, fit's
    TrainResult or (unless whole: a model with its recipe and scores is needed) a bare model."""
    from .checkpoint import FORMAT_VERSION, Checkpoint
    from .model import Model
    from .state import TrainResult

    if isinstance(model, Checkpoint):
        return model
    if isinstance(model, str | os.PathLike):
        return load_model(model)
    if isinstance(model, TrainResult):  # with the metrics `mnist-softmax train` would save for it
        from .config import make_config
        from .runs import summary_of

        return Checkpoint(model.model, model.config, summary_of(model, make_config(model.config)), FORMAT_VERSION)
    if isinstance(model, Model) and not whole:
        return Checkpoint(model, {}, {}, FORMAT_VERSION)
    wanted = "load_model's checkpoint or fit's result" + ("" if whole else " (or its .model)")
    raise TypeError(f"model must be {wanted}, not {type(model).__name__}")


def _check_data(data: Any) -> None:
    if not all(hasattr(data, a) for a in ("train_images", "train_labels", "test_images", "test_labels")):
        raise TypeError(f"data must be load_mnist's arrays, not {type(data).__name__}")


def __dir__() -> list[str]:
    return __all__


# Config is a class, not a function: resolved when first asked for, so `import mnist_softmax` stays light.
def __getattr__(name: str):
    if name == "Config":
        from .config import Config

        return Config
    raise AttributeError(name)
