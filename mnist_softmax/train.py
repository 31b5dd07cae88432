"""Mini-batch SGD for the T×N softmax layer, and the pipeline from MNIST arrays to a trained model.

`fit` reads top to bottom: for each epoch, set the learning rates, train one epoch, evaluate on the
validation split, report. The test set is scored once, at the end. There is one epoch loop,
`train_epoch`, whatever trains: it takes a step function from the front end (layer_step for the
softmax layer on fixed features, pixels and conv; cnn.training_step for the network and its layer).
"""

from __future__ import annotations

import contextlib
import math
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import NamedTuple

import numpy as np

from .config import Config
from .data import Mnist, split_indices
from .errors import TrainingDiverged, exit_code
from .features import FRONT_ENDS, fit_standardizer, made_by, mnist_rows, standardize_
from .model import MAX_ABS, N_CLASSES, Model, evaluate, split_features
from .sgd import sgd_step
from .state import TrainResult, TrainState
from .streams import rng_streams


def lr_at(cfg: Config, epoch: int) -> float:
    """Learning rate for 0-based `epoch` under a per-epoch cfg.schedule (constant, step, cosine)."""
    if cfg.schedule == "constant":
        return cfg.lr
    if cfg.schedule == "step":
        return cfg.lr * cfg.lr_gamma ** (epoch // cfg.lr_step_epochs)
    return cfg.lr * 0.5 * (1.0 + math.cos(math.pi * epoch / cfg.epochs))


def one_cycle(total_steps: int, max_lr: float, pct_start: float = 0.3, div: float = 25.0, final_div: float = 1e4):
    """Per-step learning rates (total_steps,) of PyTorch's OneCycleLR (cosine, two phases): from
    max_lr / div up to max_lr over the first pct_start of the steps, then down to max_lr / div / final_div."""
    start, low = max_lr / div, max_lr / div / final_div
    peak = float(pct_start * total_steps) - 1
    lrs = np.empty(total_steps)
    for t in range(total_steps):
        if t <= peak:
            a, b, pct = start, max_lr, t / peak
        else:
            a, b, pct = max_lr, low, (t - peak) / (total_steps - 1 - peak)
        lrs[t] = b + (a - b) / 2 * (math.cos(math.pi * pct) + 1)
    return lrs


def epoch_lrs(cfg: Config, epoch: int, steps: int) -> np.ndarray:
    """The learning rate of each of an epoch's `steps` steps (steps,): one value for the per-epoch
    schedules, a slice of one_cycle over the whole run for "onecycle"."""
    if cfg.schedule == "onecycle":
        return one_cycle(cfg.epochs * steps, cfg.lr)[epoch * steps : (epoch + 1) * steps]
    return np.full(steps, lr_at(cfg, epoch))


def batches(X: np.ndarray, y: np.ndarray, order: np.ndarray, size: int) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """(X[idx], y[idx]) for idx = order[0:size], order[size:2·size], ...

    Each batch is gathered on a second thread while the caller works on the one before: a gather
    of rows scattered over a 172 MB array waits on main memory, and NumPy lets go of the GIL
    meanwhile, so the gather costs the training loop almost nothing (the loop is ~25% faster).
    """

    def gather(start: int) -> tuple[np.ndarray, np.ndarray]:
        idx = order[start : start + size]
        return X[idx], y[idx]

    with ThreadPoolExecutor(1, thread_name_prefix="gather") as pool:
        ahead = pool.submit(gather, 0)
        for start in range(0, len(order), size):
            batch = ahead.result()
            if start + size < len(order):
                ahead = pool.submit(gather, start + size)
            yield batch


class EpochResult(NamedTuple):
    loss: float  # the epoch's mean training loss, each batch measured before its update (not finite: it stopped)
    accuracy: float  # ... and accuracy
    steps: int  # steps taken: all of them, or up to the first whose loss was not finite


# The one step of SGD on a batch, whatever trains: (inputs (B, ...), labels (B,), lr) -> (the batch's
# loss before the update, its logits (B, T)); it updates the parameters in place.
Step = Callable[[np.ndarray, np.ndarray, float], tuple[float, np.ndarray]]


# Overflow shows up as a non-finite loss, reported with advice, rather than as numpy warnings.
@np.errstate(over="ignore", invalid="ignore")
def train_epoch(
    step: Step,
    X: np.ndarray,
    y: np.ndarray,
    order: np.ndarray,
    lrs: float | np.ndarray,
    batch_size: int,
    on_step: Callable[[int, float, int], None] | None = None,
) -> EpochResult:
    """One pass of mini-batch SGD over X (n, ...), y (n,) in the given order (m,): the one epoch
    loop, for the softmax layer alone (layer_step) and for a network trained with it (cnn.training_step).

    Each batch of batch_size rows, gathered on a second thread while the one before trains (batches),
    goes to step(xs, ys, lr) with its learning rate (lrs: one, or one per step). on_step(rows seen,
    their summed loss, how many were right) follows every step (a progress bar). The epoch stops at
    the first non-finite loss: the caller says the run diverged.
    """
    n_steps = -(-len(order) // batch_size)
    lrs = np.broadcast_to(np.asarray(lrs, np.float64), (n_steps,))
    seen, total_loss, correct = 0, 0.0, 0
    # Closed here, on the way out, also when interrupted: not later, by the garbage collector,
    # where an interrupt arriving during its thread's shut-down could only be printed and ignored.
    with contextlib.closing(batches(X, y, order, batch_size)) as stream:
        for k, (xs, ys) in enumerate(stream):
            # A Python float, as the update takes it: lr·v then stays float32, as in PyTorch.
            loss, z = step(xs, ys, float(lrs[k]))
            seen += len(ys)
            total_loss += loss * len(ys)
            correct += int((z.argmax(axis=1) == ys).sum())
            if on_step is not None:
                on_step(seen, total_loss, correct)
            if not math.isfinite(loss):
                return EpochResult(loss, correct / seen, k + 1)
    return EpochResult(total_loss / seen, correct / seen, n_steps)


@contextlib.contextmanager
def layer_step(
    W: np.ndarray, b: np.ndarray, velocity: tuple[np.ndarray, np.ndarray], momentum: float, weight_decay: float
) -> Iterator[Step]:
    """The step that trains the softmax layer W (T, N), b (T,) on fixed features (sgd.sgd_step),
    with BLAS held to one thread while it is used: batch products are too small to gain from more."""
    from threadpoolctl import threadpool_limits

    def step(X: np.ndarray, y: np.ndarray, lr: float) -> tuple[float, np.ndarray]:
        return sgd_step(W, b, velocity, X, y, lr, momentum, weight_decay)

    with threadpool_limits(1, user_api="blas"):
        yield step


def _bounded(params) -> bool:
    return all(np.isfinite(p).all() and np.abs(p).max() <= MAX_ABS for p in params)


def _diverged(what: str, lr: float, cfg: Config):
    suggestion = cfg.lr / 10
    # The decay term alone, W ← W − lr·wd·W with momentum m, overshoots and grows without bound
    # once lr·wd > 2(1 + m): then the suggestion is also a rate below half that bound.
    unstable_decay = lr * cfg.weight_decay > 2 * (1 + cfg.momentum)
    if unstable_decay:
        suggestion = min(suggestion, _one_digit_below((1 + cfg.momentum) / cfg.weight_decay))
    advice = f"try a smaller --lr, e.g. --lr {suggestion:g}"
    if unstable_decay:
        advice = (
            f"lr × weight decay = {lr * cfg.weight_decay:g} is too large for the decay step to be stable; "
            f"{advice}, or a smaller --weight-decay"
        )
    raise TrainingDiverged(f"training diverged ({what}) at lr {lr:g}; {advice}")


def _one_digit_below(x: float) -> float:
    """x rounded down to one significant digit: 3846.2 -> 3000."""
    unit = 10 ** math.floor(math.log10(x))
    return math.floor(x / unit * (1 + 1e-12)) * unit  # 0.3 / 0.1 is 2.9999999999999996


def prepare(
    cfg: Config, mnist: Mnist, streams: dict[str, np.random.Generator], cache_dir: Path | None = None, progress=False
):
    """Split, fit the front end and standardiser on the training split, build all features.

    streams: rng_streams(cfg.seed); this draws from its "split" and "front_end" generators.
    Returns (model with zero weights, (X_train, y_train), (X_val, y_val), (X_test, y_test)).
    """
    fe = FRONT_ENDS[cfg.features]
    if fe.trained:
        raise ValueError(f"front end {fe.name} is trained with the softmax layer: its features are not fixed")
    train_idx, val_idx = split_indices(len(mnist.train_images), cfg.val_size, streams["split"])
    fe_params = fe.fit(mnist.train_images[train_idx], streams["front_end"], cfg)
    rows = mnist_rows(fe, fe_params, mnist, cache_dir, progress, made_by(cfg.to_dict(), fe.name))
    X_train = rows("train", train_idx)
    mean, scale = fit_standardizer(X_train, cfg.standardize, cfg.std_floor)
    model = Model(
        cfg.features,
        fe_params,
        mean,
        scale,
        np.zeros((N_CLASSES, fe.n_features), np.float32),
        np.zeros(N_CLASSES, np.float32),
    )
    y = mnist.train_labels.astype(np.intp)
    X_train = standardize_(X_train, mean, scale)
    val = (standardize_(rows("train", val_idx), mean, scale), y[val_idx])
    test = (standardize_(rows("test", slice(None)), mean, scale), mnist.test_labels.astype(np.intp))
    return model, (X_train, y[train_idx]), val, test


class TrainingInterrupted(KeyboardInterrupt):
    """Ctrl-C (or SIGTERM) during training; .result holds the model and state of the last completed
    epoch, .exit_code the shell's code for the signal (130 or 143)."""

    def __init__(self, result: TrainResult, exit_code: int = 130):
        super().__init__()
        self.result = result
        self.exit_code = exit_code


class _Run(NamedTuple):
    """What the epoch loop needs of a front end: the model, the live parameters and their
    velocities (trained in place), the streams drawn from during epochs, the training rows, the
    step that trains on a batch of them, and the scores of the weights of the moment."""

    model: Model
    params: dict[str, np.ndarray]
    velocity: dict[str, np.ndarray]
    rngs: dict[str, np.random.Generator]
    data: np.ndarray  # (n, ...) the training inputs: features (pixels, conv) or images (cnn)
    labels: np.ndarray  # (n,)
    step: Callable[[], contextlib.AbstractContextManager[Step]]  # a new step for each epoch
    score: Callable[[str], tuple[float, float]]  # "train" | "val" | "test" -> (loss, acc) of the weights now


def _layer_run(cfg: Config, mnist: Mnist, streams, cache_dir, progress) -> _Run:
    """pixels, conv: features built once (prepare), then the softmax layer alone is trained."""
    model, (X, y), (X_val, y_val), (X_test, y_test) = prepare(cfg, mnist, streams, cache_dir, progress)
    params = {"W": model.W, "b": model.b}
    velocity = {name: np.zeros_like(p) for name, p in params.items()}
    data = {"train": (X, y), "val": (X_val, y_val), "test": (X_test, y_test)}

    def step():
        return layer_step(model.W, model.b, (velocity["W"], velocity["b"]), cfg.momentum, cfg.weight_decay)

    return _Run(model, params, velocity, {"order": streams["order"]}, X, y, step, lambda s: _score(model, *data[s]))


def _network_run(cfg: Config, mnist: Mnist, streams, cache_dir, progress) -> _Run:
    """cnn: the front end's weights are trained with W and b, on the images themselves; features
    are the network's maps of the moment, computed as `eval` computes them."""
    from . import cnn
    from .augment import Distortion

    fe = FRONT_ENDS[cfg.features]
    train_idx, val_idx = split_indices(len(mnist.train_images), cfg.val_size, streams["split"])
    params = fe.fit(mnist.train_images[train_idx], streams["front_end"], cfg)  # initial weights, W and b included
    N = fe.n_features
    fe_params = {k: params[k] for k in fe.param_shapes(cfg.to_dict())}
    model = Model(cfg.features, fe_params, np.zeros(N, np.float32), np.ones(N, np.float32), params["W"], params["b"])
    velocity = {name: np.zeros_like(p) for name, p in params.items()}
    images, labels = mnist.train_images[train_idx], mnist.train_labels[train_idx].astype(np.intp)
    idx = {"train": ("train", train_idx), "val": ("train", val_idx), "test": ("test", slice(None))}
    y_all = {"train": mnist.train_labels.astype(np.intp), "test": mnist.test_labels.astype(np.intp)}

    distortion = Distortion(cfg.rotate, cfg.zoom, cfg.shear, cfg.shift) if cfg.rotate or cfg.zoom or cfg.shear else None

    def step():
        return cnn.training_step(
            params, velocity, cfg.momentum, cfg.weight_decay, streams["shift"], cfg.shift, distortion
        )

    def score(split):
        part, rows_idx = idx[split]
        return _score(model, split_features(model, mnist, part, rows_idx), y_all[part][rows_idx])

    rngs = {"order": streams["order"], "shift": streams["shift"]}
    return _Run(model, params, velocity, rngs, images, labels, step, score)


def _epoch(run: _Run, order: np.ndarray, lrs: np.ndarray, batch_size: int, bar: Callable | None, cfg: Config):
    """One epoch of the run (train_epoch with the run's step), then the checks that it did not
    diverge: a finite loss all the way, and weights within ±MAX_ABS. -> (loss, accuracy)."""
    with run.step() as step:
        loss, acc, steps = train_epoch(step, run.data, run.labels, order, lrs, batch_size, bar)
    if not math.isfinite(loss):  # the epoch stopped at the step whose loss it was
        _diverged(f"loss {loss}", float(lrs[steps - 1]), cfg)
    if not _bounded(run.params.values()):
        _diverged(f"weights beyond ±{MAX_ABS:g} by the end of the epoch", float(lrs[-1]), cfg)
    return loss, acc


def _classes(y: np.ndarray) -> int:
    """How many of the classes labels y (n,) hold."""
    return int(np.count_nonzero(np.bincount(y, minlength=N_CLASSES)))


def _score(model: Model, X: np.ndarray, y: np.ndarray) -> tuple[float, float]:
    return evaluate(model.W, model.b, X, y) if len(X) else (math.nan, math.nan)


def _step_bar(total: int, desc: str):
    from tqdm import tqdm  # here only: without a bar, `train` never imports it

    bar = tqdm(total=total, desc=desc, unit="img", unit_scale=True, leave=False)

    def on_step(seen: int, loss_sum: float, correct: int) -> None:
        bar.update(seen - bar.n)
        bar.set_postfix(loss=f"{loss_sum / seen:.4f}", acc=f"{correct / seen:.4f}", refresh=False)

    return bar, on_step


def fit(
    cfg: Config,
    mnist: Mnist,
    on_epoch: Callable[[dict], None] = lambda row: None,
    progress: bool = False,
    cache_dir: Path | None = None,
    resume: TrainState | None = None,
    on_finish: Callable[[], None] = lambda: None,
    check_interrupt: Callable[[], None] = lambda: None,
) -> TrainResult:
    """Train by the recipe in cfg; the same cfg and data give the same result.

    For each epoch: the learning rates, a pass of SGD in a seeded order, the validation score,
    a row of history. The test split is scored once, at the end. The softmax layer alone is
    trained on fixed features (pixels, conv), or with a trained front end's weights (cnn).
    cache_dir, if given, keeps the features of front ends that are slow to compute (conv).
    resume continues from a saved TrainState: features are rebuilt from the seed (deterministic),
    then weights, momentum and the random generators are restored, so the final weights equal
    those of an uninterrupted run. Ctrl-C raises TrainingInterrupted with the last completed epoch.
    on_finish is called once the final scores are in, as the last step that an interrupt can stop:
    the caller's moment to hold signals off until it has saved the result (signals.Shield.hold).
    check_interrupt is called before each epoch and before the final scores: it raises
    KeyboardInterrupt for an interrupt that library code swallowed (signals.Shield.check).
    """
    t0 = time.perf_counter()
    streams = rng_streams(cfg.seed)
    setup = _network_run if FRONT_ENDS[cfg.features].trained else _layer_run
    run = setup(cfg, mnist, streams, cache_dir, progress)
    result = TrainResult(run.model, n_train=len(run.labels), train_classes=_classes(run.labels), config=cfg.to_dict())
    if resume is not None:
        _restore(resume, run.params, run.velocity, run.rngs)
        result.history = list(resume.history)
    result.state = _snapshot(run.params, run.velocity, run.rngs, result.history)
    steps = -(-len(run.labels) // cfg.batch_size)
    try:
        for epoch in range(len(result.history), cfg.epochs):
            check_interrupt()
            t_epoch = time.perf_counter()
            lrs = epoch_lrs(cfg, epoch, steps)
            order = run.rngs["order"].permutation(len(run.labels))
            bar, show = _step_bar(len(order), f"epoch {epoch + 1}/{cfg.epochs}") if progress else (None, None)
            try:
                train_loss, train_acc = _epoch(run, order, lrs, cfg.batch_size, show, cfg)
            finally:
                if bar is not None:
                    bar.close()
            val_loss, val_acc = run.score("val")
            row = {
                "epoch": epoch + 1,
                "lr": float(lrs[0]),
                "train_loss": train_loss,
                "train_acc": train_acc,
                "val_loss": val_loss,
                "val_acc": val_acc,
                "seconds": time.perf_counter() - t_epoch,
            }
            result.history.append(row)
            result.state = _snapshot(run.params, run.velocity, run.rngs, result.history)
            on_epoch(row)
        check_interrupt()
        final = {split: run.score(split) for split in ("train", "val", "test")}
        on_finish()
    except KeyboardInterrupt as e:  # also during the final scoring: the completed epochs are kept
        _restore(result.state, run.params, run.velocity, {})  # undo the unfinished epoch
        result.history = list(result.state.history)
        result.seconds = time.perf_counter() - t0
        raise TrainingInterrupted(result, exit_code(e)) from None
    result.final = final
    result.seconds = time.perf_counter() - t0
    return result


def near_chance_cause(result: TrainResult, lr: float) -> str:
    """What most likely kept a run at chance accuracy: a training split too small to hold every class
    (said plainly, since it is certain), else the learning rate."""
    if result.train_classes and result.train_classes < N_CLASSES:
        n, k = result.n_train, result.train_classes
        return (
            f"its training split holds {n:,} image{'s' * (n != 1)} of {k} class{'es' * (k != 1)} of {N_CLASSES}: "
            "no model learns a class it never sees; hold out fewer images with --val-size"
        )
    return f"look at the learning rate (this run's: --lr {lr:g})"


def _snapshot(params: dict, velocity: dict, rngs: dict[str, np.random.Generator], history: list[dict]) -> TrainState:
    """A copy of where training stands."""
    return TrainState(
        {k: p.copy() for k, p in params.items()},
        {k: v.copy() for k, v in velocity.items()},
        {name: rng.bit_generator.state for name, rng in rngs.items()},
        list(history),
    )


def _restore(state: TrainState, params: dict, velocity: dict, rngs: dict[str, np.random.Generator]) -> None:
    """Put a saved state back into the live parameters, velocities and generators, in place."""
    for name in params:
        params[name][...] = state.params[name]
        velocity[name][...] = state.velocity[name]
    for name, rng in rngs.items():
        rng.bit_generator.state = state.rng_states[name]
