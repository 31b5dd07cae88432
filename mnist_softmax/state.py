"""Where a training run stands: what `train` produces, what a checkpoint stores and `--resume` reads.

Plain data, no behaviour: the trainer (train.py) fills it in, storage (checkpoint.py, runs.py)
writes and reads it, and neither imports the other.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from .model import Model

# One row of a run's history per completed epoch (metrics.csv), in this order.
EPOCH_COLUMNS = ("epoch", "lr", "train_loss", "train_acc", "val_loss", "val_acc", "seconds")


@dataclass
class TrainState:
    """Where training stands after a completed epoch: enough to continue it exactly."""

    params: dict[str, np.ndarray]  # every parameter training changes: "W", "b" (and a trained front end's)
    velocity: dict[str, np.ndarray]  # the momentum buffer of each, by the same names
    rng_states: dict[str, dict]  # bit_generator.state of each stream drawn from during epochs ("order")
    history: list[dict]

    @property
    def epochs_done(self) -> int:
        return len(self.history)


@dataclass
class TrainResult:
    model: Model
    state: TrainState | None = None
    history: list[dict] = field(default_factory=list)  # one row per epoch (see EPOCH_COLUMNS)
    # (loss, accuracy) of the final weights on each split, exactly what `eval --split` recomputes
    final: dict[str, tuple[float, float]] = field(default_factory=dict)
    seconds: float = 0.0
    n_train: int = 0  # images in the training split
    train_classes: int = 0  # classes they hold examples of
    config: dict = field(default_factory=dict)  # the recipe that trained it (Config.to_dict())

    @property
    def test_acc(self) -> float:
        return self.final["test"][1]

    @property
    def test_loss(self) -> float:
        return self.final["test"][0]
