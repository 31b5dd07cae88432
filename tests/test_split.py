"""Seeds and splits: independent random streams per purpose, and the split rebuilt from the seed alone."""

import numpy as np
import pytest

from mnist_softmax.config import FEATURE_NAMES, make_config
from mnist_softmax.data import Mnist, split_indices, split_rows
from mnist_softmax.features import FRONT_ENDS
from mnist_softmax.streams import STREAMS, rng_streams
from mnist_softmax.train import fit, prepare


def test_streams_are_reproducible_and_independent():
    a, b = rng_streams(3), rng_streams(3)
    assert list(a) == list(STREAMS)
    draws = {name: a[name].random(4) for name in STREAMS}
    for name in STREAMS:
        np.testing.assert_array_equal(b[name].random(4), draws[name])
    assert len({tuple(v) for v in draws.values()}) == len(STREAMS)  # no two streams alike
    assert not np.array_equal(rng_streams(4)["split"].random(4), draws["split"])


def test_the_split_does_not_move_when_other_streams_draw_more():
    """Drawing more from the front-end stream (say, more conv patches) leaves split and order alone."""
    s1, s2 = rng_streams(0), rng_streams(0)
    s2["front_end"].random(10_000)
    np.testing.assert_array_equal(split_indices(100, 10, s1["split"])[1], split_indices(100, 10, s2["split"])[1])
    np.testing.assert_array_equal(s1["order"].permutation(50), s2["order"].permutation(50))


def test_split_rows_finds_the_split_training_used():
    from test_train import synthetic_mnist

    data = synthetic_mnist(600, 50)
    cfg = make_config({"val_size": 100, "seed": 5})
    model, (X, _), (X_val, _), _ = prepare(cfg, data, rng_streams(cfg.seed))
    part, val_idx = split_rows("val", 600, 5, 100)
    _, train_idx = split_rows("train", 600, 5, 100)
    assert part == "train" and len(val_idx) == 100 and len(train_idx) == 500
    assert not set(val_idx) & set(train_idx)
    np.testing.assert_array_equal(model.features(data.train_images[val_idx]), X_val)
    assert split_rows("test", 600, 5, 100) == ("test", slice(None))


def test_format_version_1_split_is_the_first_draw_of_default_rng():
    _, val_idx = split_rows("val", 1000, 7, 50, format_version=1)
    np.testing.assert_array_equal(val_idx, np.sort(np.random.default_rng(7).permutation(1000)[:50]))
    assert not np.array_equal(val_idx, split_rows("val", 1000, 7, 50)[1])


def test_unknown_split_or_part_names_are_refused():
    with pytest.raises(ValueError, match="unknown split"):
        split_rows("validation", 100, 0, 10)
    mnist = Mnist(*(np.zeros((1, 28, 28), np.uint8), np.zeros(1, np.uint8)) * 2)
    with pytest.raises(ValueError, match="not 'val'"):
        mnist.part("val")


def test_every_front_end_has_a_shipped_config_that_trains_it():
    from mnist_softmax.config import load_config

    assert FEATURE_NAMES == ("pixels", "conv", "cnn")
    for name in FRONT_ENDS:
        assert load_config(name).features == name


def test_training_without_a_validation_split():
    from test_train import synthetic_mnist

    result = fit(make_config({"epochs": 1, "val_size": 0, "batch_size": 50}), synthetic_mnist(300, 50))
    assert np.isnan(result.history[0]["val_loss"]) and result.test_acc > 0.5


@pytest.mark.parametrize("val_size", [10, 20, -3])
def test_a_split_that_would_leave_no_training_row_or_overlap_is_refused(val_size):
    with pytest.raises(ValueError, match=r"val_size must be in \[0, 10\)"):
        split_indices(10, val_size, np.random.default_rng(0))
    train, val = split_indices(10, 9, np.random.default_rng(0))
    assert len(train) == 1 and sorted([*train, *val]) == list(range(10))
