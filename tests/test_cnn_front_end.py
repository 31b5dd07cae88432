"""`--features cnn`: the network trained with the softmax layer, as a front end like the others.

Fast: a few hundred real digits through `fit`, and one CLI run on 1,000 training images. The
full-accuracy run is a benchmark (benchmarks/cnn_compare.py, README), not a test.
"""

import json

import numpy as np
import pytest
from conftest import assert_figure, interrupt_call, run
from PIL import Image

import mnist_softmax.cnn as cnn_mod
import mnist_softmax.train as train_mod
from mnist_softmax.checkpoint import load_checkpoint, load_train_state
from mnist_softmax.config import load_config
from mnist_softmax.data import Mnist
from mnist_softmax.errors import ConfigError
from mnist_softmax.runs import save_outputs
from mnist_softmax.train import TrainingInterrupted, fit

SMALL = {"epochs": 3, "val_size": 128, "batch_size": 64}


@pytest.fixture(scope="module")
def small(mnist):
    return Mnist(mnist.train_images[:640], mnist.train_labels[:640], mnist.test_images[:300], mnist.test_labels[:300])


def _cfg(**extra):
    return load_config("cnn", SMALL | extra)


def test_cnn_config_is_shipped_and_needs_no_standardiser():
    cfg = load_config("cnn")
    assert (cfg.features, cfg.schedule, cfg.standardize, cfg.batch_size) == ("cnn", "onecycle", "none", 64)
    assert cfg.epochs == 15
    assert (cfg.batch_norm, cfg.shift, cfg.rotate, cfg.zoom, cfg.shear) == (True, 2, 10.0, 0.1, 5.0)
    assert load_config(None, {"features": "cnn"}) == cfg
    quick = load_config("cnn-quick")  # the short lesson: whole-pixel shifts, no batch norm
    assert (quick.epochs, quick.batch_norm, quick.shift) == (6, False, 2)
    assert (quick.rotate, quick.zoom, quick.shear) == (0, 0, 0)
    with pytest.raises(ConfigError, match="'standardize' must be none for features cnn"):
        load_config("cnn", {"standardize": "feature"})


def test_fit_trains_the_network_and_the_same_seed_gives_the_same_weights(small):
    a, b = fit(_cfg(), small), fit(_cfg(), small)
    assert a.test_acc >= 0.75, a.final  # 512 images, 3 epochs: far above chance (0.1)
    for name in ("conv1_w", "bn2_g", "bn2_var"):
        np.testing.assert_array_equal(a.model.fe_params[name], b.model.fe_params[name])
    np.testing.assert_array_equal(a.model.W, b.model.W)
    assert a.final == b.final and [r["lr"] for r in a.history] == [r["lr"] for r in b.history]
    c = fit(_cfg(seed=1), small)
    assert not np.array_equal(a.model.W, c.model.W)
    init = cnn_mod.init_params(np.random.default_rng(0), batch_norm=True)
    assert not np.array_equal(a.model.fe_params["conv1_w"], init["conv1_w"])  # the front end was trained
    assert not np.array_equal(a.model.fe_params["bn1_mean"], init["bn1_mean"])  # and its running statistics kept


def test_interrupt_and_resume_give_the_uninterrupted_weights_bit_for_bit(small, monkeypatch, tmp_path):
    straight = fit(_cfg(), small)
    with monkeypatch.context() as m:
        interrupt_call(m, train_mod, "train_epoch", 2)
        with pytest.raises(TrainingInterrupted) as e:
            fit(_cfg(), small)
    partial = e.value.result
    assert len(partial.history) == 1
    save_outputs(tmp_path, partial, _cfg(), root=tmp_path / "runs")  # through the checkpoint, as --resume is
    config, state = load_train_state(tmp_path / "model.npz")
    bn = {f"bn{k}_{p}" for k in (1, 2) for p in ("g", "b", "mean", "var")}
    assert set(state.params) == {"conv1_w", "conv2_w", "W", "b"} | bn
    assert set(state.rng_states) == {"order", "shift"}
    resumed = fit(_cfg(), small, resume=state)
    for name, p in straight.model.fe_params.items():
        np.testing.assert_array_equal(resumed.model.fe_params[name], p)
    np.testing.assert_array_equal(resumed.model.W, straight.model.W)
    assert resumed.final == straight.final


def test_shift_is_refused_where_features_are_fixed():
    with pytest.raises(ConfigError, match="'shift' works only with features cnn"):
        load_config("cnn", {"features": "pixels", "standardize": "feature"})
    assert load_config("cnn", {"batch_size": 60000}).batch_size == 60000  # pieces bound the memory, not the batch


def test_a_large_batch_holds_only_a_piece_at_a_time():
    """Each piece goes forward and backward before the next starts, and its gradients are summed as
    they come: a batch of 2,048 images needs about the memory of a few pieces, not of the batch."""
    import tracemalloc

    rng = np.random.default_rng(0)
    params = cnn_mod.init_params(rng)
    x = cnn_mod.to_input(rng.integers(0, 256, (2048, 28, 28), dtype=np.uint8))
    y = rng.integers(0, 10, 2048)
    tracemalloc.start()
    cnn_mod.loss_and_grads(params, x, y)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert peak < 60e6, f"{peak / 1e6:.0f} MB"  # the pieces' activations held together would be ~600 MB


def test_a_diverging_network_stops_with_advice_at_the_step_it_failed(small):
    from mnist_softmax.errors import TrainingDiverged

    with pytest.raises(TrainingDiverged, match="training diverged .* at lr 1e\\+30") as e:
        fit(_cfg(lr=1e30, schedule="constant", weight_decay=0.0, epochs=1), small)
    assert "smaller --lr" in str(e.value)


def test_cli_run_eval_and_predict(mnist_dir, mnist, tmp_path):
    out = tmp_path / "run"
    run(
        "train",
        "--features",
        "cnn",
        "--epochs",
        1,
        "--val-size",
        59000,
        "--shift",
        1,
        "--data-dir",
        mnist_dir,
        "--out",
        out,
        "-q",
    )
    summary = json.loads((out / "summary.json").read_text())
    assert summary["features"] == "cnn" and summary["n_features"] == 3136 and summary["test_accuracy"] > 0.5
    assert summary["config"]["shift"] == 1  # the flag, over configs/cnn.toml's 2
    for split in ("test", "train"):
        got = json.loads(
            run("eval", "--checkpoint", out / "model.npz", "--split", split, "--data-dir", mnist_dir, "--json").output
        )
        assert (got["accuracy"], got["loss"]) == (summary[f"{split}_accuracy"], summary[f"{split}_loss"])
    assert_figure(out / "weights.png", (1000, 900), min_fraction=0.05)
    assert_figure(out / "curves.png", (1000, 400), min_fraction=0.0005)  # one epoch: a point per curve
    model = load_checkpoint(out / "model.npz").model
    assert model.fe_params["conv1_w"].shape == (32, 1, 5, 5) and model.W.shape == (10, 3136)
    img = tmp_path / "d.png"
    Image.fromarray(mnist.test_images[0]).save(img)
    text = run("predict", img, "--checkpoint", out / "model.npz", "--explain", "--label", 7).output
    assert "64×7×7" in text and "N = 3136" in text and "W is 10×3136" in text
    assert "not standardised." in text  # the cnn's maps go to W as they are
