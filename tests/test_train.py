"""The training loop on small synthetic data: schedules, determinism, learning, divergence."""

import math
import threading

import numpy as np
import pytest

from mnist_softmax.config import make_config
from mnist_softmax.data import Mnist, split_indices
from mnist_softmax.errors import TrainingDiverged
from mnist_softmax.features import PIXELS, fit_standardizer, flatten, standardize, unflatten
from mnist_softmax.model import evaluate
from mnist_softmax.train import batches, fit, lr_at


def synthetic_mnist(n_train=2000, n_test=500, seed=0) -> Mnist:
    """Digits drawn as a bright 6×6 block at a class-specific spot, plus noise: linearly separable."""
    rng = np.random.default_rng(seed)

    def make(n):
        y = rng.integers(0, 10, n).astype(np.uint8)
        imgs = rng.integers(0, 60, (n, 28, 28)).astype(np.uint8)
        for i, c in enumerate(y):
            r, col = 2 + 5 * (c // 4), 2 + 6 * (c % 4)
            imgs[i, r : r + 6, col : col + 6] = 255
        return imgs, y

    return Mnist(*make(n_train), *make(n_test))


def test_schedules():
    cfg = make_config({"lr": 0.2, "epochs": 4, "schedule": "cosine"})
    assert [lr_at(cfg, e) for e in range(4)] == pytest.approx(
        [0.2, 0.2 * (1 + math.cos(math.pi / 4)) / 2, 0.1, 0.2 * (1 + math.cos(3 * math.pi / 4)) / 2]
    )
    step = make_config({"lr": 1.0, "schedule": "step", "lr_step_epochs": 2, "lr_gamma": 0.5})
    assert [lr_at(step, e) for e in range(5)] == [1.0, 1.0, 0.5, 0.5, 0.25]
    assert lr_at(make_config({"schedule": "constant", "lr": 0.3}), 7) == 0.3


def test_split_is_seeded_disjoint_and_complete():
    a = split_indices(100, 20, np.random.default_rng(7))
    b = split_indices(100, 20, np.random.default_rng(7))
    np.testing.assert_array_equal(a[0], b[0])
    assert len(a[1]) == 20 and not set(a[0]) & set(a[1]) and len(set(a[0]) | set(a[1])) == 100


def test_flatten_round_trip_and_order():
    maps = np.arange(2 * 3 * 4 * 5, dtype=np.float32).reshape(2, 3, 4, 5)
    X = flatten(maps)
    assert X.shape == (2, 60)
    assert X[1, 2 * 20 + 3 * 5 + 4] == maps[1, 2, 3, 4]  # index c*H*W + h*W + w
    np.testing.assert_array_equal(unflatten(X, (3, 4, 5)), maps)


def test_pixel_front_end_scales_to_unit_range():
    imgs = np.array([[[0, 255] + [0] * 26] * 28], np.uint8)
    m = PIXELS.maps(imgs, {})
    assert m.shape == (1, 1, 28, 28) and m.dtype == np.float32 and m.max() == 1.0 and m.min() == 0.0


@pytest.mark.parametrize("mode", ["feature", "global", "none"])
def test_standardizer(mode):
    F = np.random.default_rng(0).normal(3.0, 2.0, (1000, 5)).astype(np.float32)
    mean, scale = fit_standardizer(F, mode, 0.0)
    Z = standardize(F, mean, scale)
    if mode == "none":
        np.testing.assert_array_equal(Z, F)
    else:
        assert abs(Z.mean()) < 1e-4 and Z.std() == pytest.approx(1.0, rel=1e-3)
    assert mean.shape == scale.shape == (5,)


def test_fit_learns_separable_data_and_is_deterministic():
    data = synthetic_mnist()
    cfg = make_config({"epochs": 3, "val_size": 200, "batch_size": 50, "seed": 3})
    rows = []
    r1 = fit(cfg, data, on_epoch=rows.append)
    r2 = fit(cfg, data)
    assert r1.test_acc > 0.99
    assert [r["epoch"] for r in rows] == [1, 2, 3]
    assert rows[-1]["train_loss"] < rows[0]["train_loss"]
    np.testing.assert_array_equal(r1.model.W, r2.model.W)
    assert r1.test_loss == r2.test_loss
    r3 = fit(make_config({"epochs": 3, "val_size": 200, "batch_size": 50, "seed": 4}), data)
    assert not np.array_equal(r1.model.W, r3.model.W)


def test_evaluate_matches_the_math():
    rng = np.random.default_rng(1)
    W, b = rng.normal(size=(10, 6)).astype(np.float32), rng.normal(size=10).astype(np.float32)
    X, y = rng.normal(size=(50, 6)).astype(np.float32), rng.integers(0, 10, 50)
    loss, acc = evaluate(W, b, X, y, chunk=7)
    z = X.astype(np.float64) @ W.T.astype(np.float64) + b  # written out here, independent of the library
    log_p = z - z.max(1, keepdims=True)
    log_p -= np.log(np.exp(log_p).sum(1, keepdims=True))
    assert loss == pytest.approx(-log_p[np.arange(50), y].mean(), rel=1e-5)
    assert acc == np.mean(z.argmax(1) == y)


@pytest.mark.parametrize(
    "lr,weight_decay",
    [
        (1e30, 1e-4),  # decay makes W ← W·(1 − lr·wd): it grows geometrically until it overflows
        (1e38, 0.0),  # no decay: the first step alone puts logits beyond float32
    ],
)
def test_divergence_stops_with_advice(lr, weight_decay):
    cfg = make_config({"epochs": 2, "val_size": 100, "lr": lr, "momentum": 0.0, "weight_decay": weight_decay})
    with pytest.raises(TrainingDiverged, match="smaller --lr") as e:
        fit(cfg, synthetic_mnist(500, 100))
    assert ("smaller --weight-decay" in str(e.value)) == (weight_decay > 0)  # the decay is named when it is the cause
    suggested = float(str(e.value).split("e.g. --lr ")[1].split(",")[0])
    assert suggested <= lr / 10 and suggested * weight_decay <= 1  # itself stable for the decay (bound: 2·(1 + m))


def test_batches_come_in_order_whole_and_the_helper_thread_ends():
    rng = np.random.default_rng(0)
    X, y = rng.standard_normal((1003, 7)).astype(np.float32), rng.integers(0, 10, 1003)
    order = rng.permutation(1003)
    got = list(batches(X, y, order, 100))
    assert [len(ys) for _, ys in got] == [100] * 10 + [3]
    assert np.array_equal(np.concatenate([xs for xs, _ in got]), X[order])
    assert np.array_equal(np.concatenate([ys for _, ys in got]), y[order])

    gen = batches(X, y, order, 100)
    next(gen)
    gen.close()  # a consumer that stops early (an error, Ctrl-C) leaves no thread behind
    assert not [t for t in threading.enumerate() if t.name.startswith("gather")]


def test_a_standardiser_fitted_on_no_rows_is_refused():
    """The mean and spread of no features are not defined: refused, naming F, rather than NaN weights."""
    for mode in ("feature", "global", "none"):
        with pytest.raises(ValueError, match=r"^F must be training features \(n, N\) with n ≥ 1"):
            fit_standardizer(np.zeros((0, 784), np.float32), mode, 0.1)
