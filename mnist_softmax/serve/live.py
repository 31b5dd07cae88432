"""Live training on the page: the softmax layer trained in the server, a frame at a time, while the page
watches W's rows turn into templates, with the very functions `train` uses (train.train_epoch with
train.layer_step: the same momentum SGD and weight decay; the schedule off, the page's learning rate).

The rows it trains on are the served model's features of the MNIST training split (LiveData, read
through data.py and computed once, for every page): the whole split for pixels, at most
LIVE_BYTES of features for conv and cnn (the layer on the network's fixed features), and a
validation set scored at each frame. A frame is at most FRAME_SECONDS of SGD steps: the page asks
for the next while it plays, and stops asking when paused or gone, so nothing runs unseen.
"""

from __future__ import annotations

import math
import threading
import time
from dataclasses import dataclass, field

import numpy as np

from ..model import Model, evaluate
from ..train import layer_step, train_epoch
from .errors import ApiError

LIVE_BYTES = 256 * 1024 * 1024  # the training rows' features, at most (float32): all 55,000 for pixels
VAL_ROWS = 5000  # at most this many validation rows are scored at each frame
FRAME_SECONDS = 0.08  # the SGD steps of one frame take about this long, at most
MAX_FRAME_STEPS = 400
BLOCK = 8  # steps between looks at the clock
MAX_BATCH, MAX_LR = 4096, 10.0


@dataclass(frozen=True)
class LiveData:
    """The training and validation rows live training uses: standardised features, float32."""

    X: np.ndarray  # (n, N)
    y: np.ndarray  # (n,)
    X_val: np.ndarray  # (m, N)
    y_val: np.ndarray  # (m,)

    @property
    def bytes(self) -> int:
        return self.X.nbytes + self.X_val.nbytes


def live_data(model: Model, config: dict, mnist) -> LiveData:
    """The rows of the run's own training and validation splits (data.split_rows with its seed and
    val_size), at most LIVE_BYTES of training features (the first rows of the split, in order), as
    the model's front end and standardiser give them."""
    from ..data import split_rows

    rows = max(1, LIVE_BYTES // (4 * model.W.shape[1]))
    parts = {}
    for split in ("train", "val"):
        _, idx = split_rows(split, len(mnist.train_images), config["seed"], config["val_size"])
        idx = idx[: rows if split == "train" else VAL_ROWS]
        images, labels = mnist.train_images[idx], mnist.train_labels[idx].astype(np.intp)
        parts[split] = (model.features(images) if len(idx) else np.zeros((0, model.W.shape[1]), np.float32), labels)
    return LiveData(*parts["train"], *parts["val"])


@dataclass
class LiveTraining:
    """One page's live training: its layer (trained in place), momentum, the order of its rows and
    where it is in them, and its curves."""

    W: np.ndarray
    b: np.ndarray
    velocity: tuple[np.ndarray, np.ndarray]
    momentum: float
    weight_decay: float
    rng: np.random.Generator
    order: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int32))
    position: int = 0
    epoch: int = 0
    steps: int = 0
    seen: int = 0
    history: list[dict] = field(default_factory=list)  # one row per frame (the last MAX_HISTORY): steps, seen, ...
    frames: int = 0  # frames trained, all told

    @classmethod
    def start(cls, model: Model, config: dict, from_zeros: bool, seed: int) -> LiveTraining:
        W = np.zeros_like(model.W) if from_zeros else model.W.copy()
        b = np.zeros_like(model.b) if from_zeros else model.b.copy()
        return cls(W, b, (np.zeros_like(W), np.zeros_like(b)), config["momentum"], config["weight_decay"],
                   np.random.default_rng(seed))  # fmt: skip

    def frame(self, data: LiveData, lr: float, batch: int, steps: int | None = None) -> dict:
        """Train for a frame: `steps` SGD steps of `batch` rows at rate lr (at most MAX_FRAME_STEPS),
        fewer if FRAME_SECONDS pass first (at least one block of BLOCK steps is taken); then score
        the validation rows. -> this frame's row of the curves."""
        if not (math.isfinite(lr) and 0 < lr <= MAX_LR):
            raise ApiError(400, f"lr must be a number above 0 and at most {MAX_LR:g}", "bad-lr", limit=MAX_LR)
        if not 1 <= batch <= min(MAX_BATCH, len(data.y)):
            raise ApiError(400, f"batch must be from 1 to {min(MAX_BATCH, len(data.y))}", "bad-batch",
                           limit=min(MAX_BATCH, len(data.y)))  # fmt: skip
        limit = min(steps or MAX_FRAME_STEPS, MAX_FRAME_STEPS)
        start, done, loss_sum, correct = time.perf_counter(), 0, 0.0, 0
        with layer_step(self.W, self.b, self.velocity, self.momentum, self.weight_decay) as step:
            while done < limit and (done == 0 or time.perf_counter() - start < FRAME_SECONDS):
                if self.position >= len(self.order):  # a new epoch: a new order, as train draws one
                    self.order = self.rng.permutation(len(data.y)).astype(np.int32)
                    self.position, self.epoch = 0, self.epoch + 1
                n = min(BLOCK, limit - done, -(-(len(self.order) - self.position) // batch))
                chunk = self.order[self.position : self.position + n * batch]
                loss, acc, taken = train_epoch(step, data.X, data.y, chunk, lr, batch)
                if not math.isfinite(loss):
                    raise ApiError(409, f"training diverged at lr {lr:g}; try a smaller one", "diverged", lr=lr)
                self.position += len(chunk)
                self.steps, self.seen, done = self.steps + taken, self.seen + len(chunk), done + taken
                loss_sum, correct = loss_sum + loss * len(chunk), correct + round(acc * len(chunk))
        rows = done and self.seen - (self.history[-1]["seen"] if self.history else 0)
        val = evaluate(self.W, self.b, data.X_val, data.y_val)[1] if len(data.y_val) else None
        row = {"steps": self.steps, "seen": self.seen, "epoch": self.epoch,
               "loss": loss_sum / rows if rows else None, "accuracy": correct / rows if rows else None,
               "val_accuracy": val, "seconds": time.perf_counter() - start}  # fmt: skip
        self.history.append(row)
        self.frames += 1
        del self.history[:-MAX_HISTORY]
        return row

    def since(self, frame: int) -> list[dict]:
        """The rows of the curves from frame number `frame` on (those still kept): what a page that
        has the first `frame` rows lacks."""
        kept_from = self.frames - len(self.history)
        return self.history[max(0, frame - kept_from) :]


MAX_HISTORY = 2000  # frames kept in a page's curves


class Shared:
    """Something all pages share, computed once, on first use (LiveData, the test set's features),
    each under a lock of its own so that one page's wait holds up no page that does not need it."""

    def __init__(self, make):
        self._make, self._value, self._lock = make, None, threading.Lock()

    def get(self):
        if self._value is None:
            with self._lock:
                if self._value is None:
                    self._value = self._make()
        return self._value

    @property
    def ready(self) -> bool:
        return self._value is not None
