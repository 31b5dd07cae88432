"""Checkpoints: exact round trip without pickle; damaged, foreign and mismatched files refused."""

import json

import numpy as np
import pytest

from mnist_softmax.checkpoint import FORMAT_VERSION, load_checkpoint, save_checkpoint
from mnist_softmax.errors import CheckpointError
from mnist_softmax.model import Model


def _model(N=784, seed=0) -> Model:
    rng = np.random.default_rng(seed)
    f32 = np.float32
    return Model(
        "pixels",
        {},
        rng.random(N).astype(f32),
        rng.random(N).astype(f32) + 0.1,
        rng.normal(size=(10, N)).astype(f32),
        rng.normal(size=10).astype(f32),
    )


def test_round_trip_is_exact_and_pickle_free(tmp_path):
    path = tmp_path / "model.npz"
    m = _model()
    save_checkpoint(path, m, {"lr": 0.1}, {"test_accuracy": 0.9})
    with np.load(path, allow_pickle=False) as z:
        assert int(z["format_version"]) == FORMAT_VERSION and str(z["front_end"]) == "pixels"
        assert all(z[k].dtype != object for k in z.files)
    m2, cfg, metrics, _ = load_checkpoint(path)
    for a in ("mean", "scale", "W", "b"):
        np.testing.assert_array_equal(getattr(m2, a), getattr(m, a))
        assert getattr(m2, a).dtype == np.float32
    assert cfg == {"lr": 0.1} and metrics == {"test_accuracy": 0.9}
    assert [p.name for p in tmp_path.iterdir()] == ["model.npz"]  # no temp file left


def _resave(path, **changes):
    with np.load(path, allow_pickle=False) as z:
        arrays = {k: z[k] for k in z.files}
    arrays.update(changes)
    arrays = {k: v for k, v in arrays.items() if v is not None}
    np.savez(path, **arrays)


@pytest.mark.parametrize(
    "changes,message",
    [
        ({"format_version": np.array(99)}, "format version 99"),
        ({"format": np.array("something-else")}, "not an mnist-softmax checkpoint"),
        ({"W": np.zeros((10, 100), np.float32)}, r"W has shape \(10, 100\)"),
        ({"b": np.zeros(3, np.float32)}, "b has shape"),
        ({"front_end": np.array("resnet")}, "front end 'resnet'"),
        ({"W": None}, "missing W"),
        ({"config_json": np.array("{not json")}, "damaged config"),
        ({"W": np.array([{"evil": 1}] * 10, dtype=object)}, "readable"),
    ],
)
def test_bad_checkpoints_are_refused(tmp_path, changes, message):
    path = tmp_path / "model.npz"
    save_checkpoint(path, _model(), {}, {})
    _resave(path, **changes)
    with pytest.raises(CheckpointError, match=message):
        load_checkpoint(path)


def test_truncated_missing_and_non_npz_files(tmp_path):
    path = tmp_path / "model.npz"
    save_checkpoint(path, _model(), {}, {})
    path.write_bytes(path.read_bytes()[:5000])
    with pytest.raises(CheckpointError, match="not a readable checkpoint"):
        load_checkpoint(path)
    with pytest.raises(CheckpointError, match="not found"):
        load_checkpoint(tmp_path / "missing.npz")
    (tmp_path / "text.npz").write_text(json.dumps({"W": 1}))
    with pytest.raises(CheckpointError, match="not a readable checkpoint") as e:
        load_checkpoint(tmp_path / "text.npz")
    assert "allow_pickle" not in str(e.value) and "never loaded" in str(e.value)  # no advice to unpickle


def test_format_version_1_is_read_for_scoring_but_not_resumed(tmp_path):
    from mnist_softmax.checkpoint import load_train_state
    from mnist_softmax.train import TrainState

    path = tmp_path / "model.npz"
    m = _model()
    state = TrainState(m.W, m.b, (np.zeros_like(m.W), np.zeros_like(m.b)), {"state": 1}, [{"epoch": 1}])
    save_checkpoint(path, m, {"seed": 0}, {}, state)
    assert load_checkpoint(path).format_version == FORMAT_VERSION == 2
    assert load_train_state(path)[1].history == [{"epoch": 1}]
    _resave(path, format_version=np.array(1))
    old = load_checkpoint(path)
    assert old.format_version == 1
    np.testing.assert_array_equal(old.model.W, m.W)
    with pytest.raises(CheckpointError, match="older mnist-softmax .* start a new run"):
        load_train_state(path)
