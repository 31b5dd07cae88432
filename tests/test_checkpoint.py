"""Checkpoints: exact round trip without pickle; damaged, foreign and mismatched files refused."""

import json

import numpy as np
import pytest

from mnist_softmax.checkpoint import FORMAT_VERSION, load_checkpoint, save_checkpoint
from mnist_softmax.config import Config, make_config
from mnist_softmax.errors import CheckpointError
from mnist_softmax.model import Model

CONFIG = Config().to_dict()
ROW = {"epoch": 1, "lr": 0.1, "train_loss": 0.4, "train_acc": 0.9, "val_loss": 0.3, "val_acc": 0.91, "seconds": 0.1}


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
    cfg_in = make_config({"lr": 0.25}).to_dict()
    save_checkpoint(path, m, cfg_in, {"test_accuracy": 0.9})
    with np.load(path, allow_pickle=False) as z:
        assert int(z["format_version"]) == FORMAT_VERSION and str(z["front_end"]) == "pixels"
        assert all(z[k].dtype != object for k in z.files)
    m2, cfg, metrics, _ = load_checkpoint(path)
    for a in ("mean", "scale", "W", "b"):
        np.testing.assert_array_equal(getattr(m2, a), getattr(m, a))
        assert getattr(m2, a).dtype == np.float32
    assert cfg == cfg_in and metrics == {"test_accuracy": 0.9}
    assert [p.name for p in tmp_path.iterdir()] == ["model.npz"]  # no temp file left


def _resave(path, **changes):
    with np.load(path, allow_pickle=False) as z:
        arrays = {k: z[k] for k in z.files}
    arrays.update(changes)
    arrays = {k: v for k, v in arrays.items() if v is not None}
    np.savez(path, **arrays)


def _f32(shape, value=0.5):
    return np.full(shape, value, np.float32)


@pytest.mark.parametrize(
    "changes,message",
    [
        ({"format_version": np.array(99)}, "format version 99"),
        ({"format_version": np.array("2")}, "format_version must be an integer"),
        ({"format": np.array("something-else")}, "not an mnist-softmax checkpoint"),
        ({"format": np.array(7)}, "format must be a string"),
        ({"W": np.zeros((10, 100), np.float32)}, r"W has shape \(10, 100\), expected \(10, 784\)"),
        ({"b": np.zeros(3, np.float32)}, r"b has shape \(3,\)"),
        ({"norm_mean": np.zeros(783, np.float32)}, "norm_mean has shape"),
        ({"W": _f32((10, 784), np.nan)}, "W holds NaN or infinite values"),
        ({"b": np.array([np.inf] * 10, np.float32)}, "b holds NaN or infinite"),
        ({"W": np.zeros((10, 784), np.int8)}, "W must be float32, found int8"),
        ({"W": np.zeros((10, 784), np.complex64)}, "W must be float32, found complex64"),
        ({"norm_scale": np.zeros((10, 784), np.float64)[0, :784]}, "norm_scale must be float32, found float64"),
        ({"norm_scale": _f32(784, 0.0)}, "norm_scale must be at least 1e-06"),
        ({"norm_scale": _f32(784, 1e-45)}, "norm_scale must be at least"),
        ({"W": _f32((10, 784), 3e38)}, r"W holds values beyond ±1e\+09"),
        ({"norm_mean": _f32(784, -3e38)}, "norm_mean holds values beyond"),
        ({"map_shape": np.array(5)}, "map_shape"),
        ({"front_end": np.frombuffer(b"\x00\x00\x11\x00", "<U1").reshape(())}, "front_end must be a string"),
        ({"front_end": np.array("resnet")}, "front end 'resnet'"),
        ({"front_end": np.array(["pixels"])}, "front_end must be a string"),
        ({"n_classes": np.array(11)}, "n_classes must be 10"),
        ({"map_shape": np.array([1, 28, 29])}, "map_shape"),
        ({"W": None}, "missing W"),
        ({"config_json": np.array("{not json")}, "config_json is damaged"),
        ({"config_json": np.array(json.dumps({**CONFIG, "lr": -1.0}))}, "'lr' must be in \\(0, 1e\\+40\\]"),
        ({"config_json": np.array(json.dumps({**CONFIG, "learning_rate": 1}))}, "unknown key .*learning_rate"),
        ({"config_json": np.array(json.dumps({**CONFIG, "features": "conv"}))}, "trains features 'conv'"),
        ({"config_json": np.array("[1, 2]")}, "config_json must hold a JSON object"),
        ({"config_json": np.array(3.5)}, "config_json must be a string"),
        ({"metrics_json": np.array("[]")}, "metrics_json must hold a JSON object"),
        ({"fe_filters": _f32((25, 64))}, "fe_filters is not a parameter of front end pixels"),
        ({"W": np.array([{"evil": 1}] * 10, dtype=object)}, "never unpickled"),
    ],
)
def test_bad_checkpoints_are_refused_naming_what_is_wrong(tmp_path, changes, message):
    path = tmp_path / "model.npz"
    save_checkpoint(path, _model(), CONFIG, {})
    _resave(path, **changes)
    with pytest.raises(CheckpointError, match=message) as e:
        load_checkpoint(path)
    assert "\n" not in str(e.value) and str(path) in str(e.value)


def _conv_model(k=5):
    rng = np.random.default_rng(1)
    params = {"filters": _f32((k * k, 64)), "offset": _f32(64), "threshold": np.array(0.25, np.float32)}
    return Model(
        "conv", params, _f32(3136, 0.0), _f32(3136, 1.0), rng.normal(size=(10, 3136)).astype(np.float32), _f32(10)
    )


@pytest.mark.parametrize(
    "changes,message",
    [
        ({"fe_filters": None}, "missing fe_filters"),
        ({"fe_filters": _f32((49, 64))}, r"fe_filters has shape \(49, 64\), expected \(25, 64\)"),
        ({"fe_threshold": np.array(np.nan, np.float32)}, "fe_threshold holds NaN"),
        ({"fe_offset": np.zeros(64, np.float64)}, "fe_offset must be float32"),
        ({"fe_extra": _f32(3)}, "fe_extra is not a parameter of front end conv"),
    ],
)
def test_front_end_parameters_must_fit_their_front_end(tmp_path, changes, message):
    path = tmp_path / "model.npz"
    save_checkpoint(path, _conv_model(), make_config({"features": "conv"}).to_dict(), {})
    assert load_checkpoint(path).model.fe_params["filters"].shape == (25, 64)
    _resave(path, **changes)
    with pytest.raises(CheckpointError, match=message):
        load_checkpoint(path)


def _npy(arr) -> bytes:
    import io

    buf = io.BytesIO()
    np.lib.format.write_array(buf, arr, allow_pickle=False)
    return buf.getvalue()


def test_declared_sizes_are_checked_before_anything_is_decompressed(tmp_path):
    import zipfile

    path = tmp_path / "model.npz"
    save_checkpoint(path, _model(), CONFIG, {})
    with np.load(path) as z:
        members = {k: z[k] for k in z.files}
    bomb = _npy(np.zeros((10, 784 * 100), np.float32))  # 3 MB of zeros, a few kB deflated
    with zipfile.ZipFile(path, "w") as zf:
        for k, v in members.items():
            if k != "W":
                zf.writestr(f"{k}.npy", _npy(v))
        zf.writestr("W.npy", bomb, compress_type=zipfile.ZIP_DEFLATED)
    assert path.stat().st_size < 100_000
    with pytest.raises(CheckpointError, match="W declares 3,136,128 bytes"):
        load_checkpoint(path)


@pytest.mark.parametrize("size,refused", [((1 << 20) - 200, False), ((1 << 20) + 1, True)])
def test_a_text_member_may_declare_at_most_a_megabyte(tmp_path, size, refused):
    """A JSON member (metrics_json) is read only when its .npy declares at most 1 MiB: the limit by its
    value, just under and just over (a longer string deflates to a few kB, and would be read whole)."""
    import json
    import zipfile

    path = tmp_path / "model.npz"
    save_checkpoint(path, _model(), CONFIG, {})
    with np.load(path) as z:
        members = {k: z[k] for k in z.files}
    filler = "x" * 10
    text = json.dumps({"note": filler})
    npy = _npy(np.array(text))
    pad = -(-(size - len(npy)) // 4)  # a str of n characters is 4·n bytes in .npy (UTF-32)
    npy = _npy(np.array(json.dumps({"note": filler + "x" * pad})))
    assert (len(npy) > 1 << 20) == refused and abs(len(npy) - size) < 256
    with zipfile.ZipFile(path, "w") as zf:
        for k, v in members.items():
            if k != "metrics_json":
                zf.writestr(f"{k}.npy", _npy(v))
        zf.writestr("metrics_json.npy", npy, compress_type=zipfile.ZIP_DEFLATED)
    if refused:
        with pytest.raises(CheckpointError, match=f"metrics_json declares {len(npy):,} bytes, more than"):
            load_checkpoint(path)
    else:
        assert len(load_checkpoint(path).metrics["note"]) > 250_000


def test_members_this_version_does_not_know_are_never_read(tmp_path):
    import zipfile

    path = tmp_path / "model.npz"
    save_checkpoint(path, _model(), CONFIG, {})
    with zipfile.ZipFile(path, "a") as zf:
        info = zipfile.ZipInfo("notes.npy")
        info.compress_type = zipfile.ZIP_DEFLATED
        zf.writestr(info, _npy(np.zeros(1_000_000, np.float32)))
    data = bytearray(path.read_bytes())
    start = data.index(b"notes.npy") + len(b"notes.npy")
    data[start + 10 : start + 40] = bytes(30)  # break its deflate stream: reading it would fail
    path.write_bytes(bytes(data))
    assert load_checkpoint(path).model.W.shape == (10, 784)


def test_a_fifo_or_a_renamed_npy_is_refused_at_once(tmp_path):
    import os

    fifo = tmp_path / "model.npz"
    os.mkfifo(fifo)
    with pytest.raises(CheckpointError, match="not a regular file"):
        load_checkpoint(fifo)  # opening it would wait for a writer forever
    np.save(tmp_path / "w.npy", np.zeros((10, 784), np.float32))
    (tmp_path / "w.npy").rename(tmp_path / "w.npz")
    with pytest.raises(CheckpointError, match="not a readable checkpoint"):
        load_checkpoint(tmp_path / "w.npz")


def test_a_truncated_checkpoint_leaves_no_file_open(tmp_path):
    import subprocess
    import sys

    path = tmp_path / "model.npz"
    save_checkpoint(path, _model(), CONFIG, {})
    path.write_bytes(path.read_bytes()[:5000])
    code = (
        "from mnist_softmax.checkpoint import load_checkpoint\n"
        "from mnist_softmax.errors import CheckpointError\n"
        f"try:\n    load_checkpoint({str(path)!r})\nexcept CheckpointError as e:\n    print('refused')\n"
    )
    out = subprocess.run([sys.executable, "-X", "dev", "-c", code], capture_output=True, text=True)
    assert out.stdout.strip() == "refused" and "ResourceWarning" not in out.stderr, out.stderr


def test_truncated_missing_and_non_npz_files(tmp_path):
    path = tmp_path / "model.npz"
    save_checkpoint(path, _model(), CONFIG, {})
    path.write_bytes(path.read_bytes()[:5000])
    with pytest.raises(CheckpointError, match="not a readable checkpoint"):
        load_checkpoint(path)
    with pytest.raises(CheckpointError, match="not found"):
        load_checkpoint(tmp_path / "missing.npz")
    (tmp_path / "text.npz").write_text(json.dumps({"W": 1}))
    with pytest.raises(CheckpointError, match="not a readable checkpoint") as e:
        load_checkpoint(tmp_path / "text.npz")
    assert "allow_pickle" not in str(e.value) and "not an .npz file" in str(e.value)  # no advice to unpickle


def test_format_version_1_is_read_for_scoring_but_not_resumed(tmp_path):
    from mnist_softmax.checkpoint import load_train_state
    from mnist_softmax.state import TrainState

    path = tmp_path / "model.npz"
    m = _model()
    rng_states = {"order": np.random.default_rng(0).bit_generator.state}
    velocity = {"W": np.zeros_like(m.W), "b": np.zeros_like(m.b)}
    state = TrainState({"W": m.W, "b": m.b}, velocity, rng_states, [ROW])
    save_checkpoint(path, m, CONFIG, {}, state)
    assert load_checkpoint(path).format_version == FORMAT_VERSION == 2
    assert load_train_state(path)[1].history == [ROW]
    _resave(path, format_version=np.array(1))
    old = load_checkpoint(path)
    assert old.format_version == 1
    np.testing.assert_array_equal(old.model.W, m.W)
    with pytest.raises(CheckpointError, match="older mnist-softmax .* start a new run"):
        load_train_state(path)


def _rng_state(**changes) -> dict:
    """A PCG64 state as NumPy gives it, with `changes` made."""
    return np.random.default_rng(0).bit_generator.state | changes


@pytest.mark.parametrize(
    "changes,message",
    [
        ({"train_rng_json": np.array('{"order": {"bit_generator": "MT19937"}}')}, "not a random generator's state"),
        ({"train_rng_json": np.array('{"order": 3}')}, "not a random generator's state"),
        ({"train_rng_json": np.array("{}")}, "must hold the streams order"),
        ({"train_rng_json": np.array(json.dumps({"split": np.random.default_rng(0).bit_generator.state}))}, "order"),
        ({"train_rng_json": np.array("[]")}, "train_rng_json must hold a JSON object"),
        ({"train_history_json": np.array(json.dumps([ROW | {"epoch": e} for e in range(1, 12)]))}, "the run's 10"),
        ({"train_history_json": np.array("[1, 2]")}, "does not fit"),
        ({"train_history_json": np.array("[{}]")}, "does not fit"),
        ({"train_history_json": np.array(json.dumps([ROW | {"train_loss": "x"}]))}, "does not fit"),
        ({"train_history_json": np.array(json.dumps([ROW | {"lr": {"a": 1}}]))}, "does not fit"),
        ({"train_history_json": np.array(json.dumps([ROW | {"epoch": 2}]))}, "does not fit"),
        (
            {
                "train_rng_json": np.array(
                    '{"order": {"bit_generator": "PCG64", "state": {"state": -1, "inc": 1}, '
                    '"has_uint32": 0, "uinteger": 0}}'
                )
            },
            "not a random generator's state",
        ),
        *(
            ({"train_rng_json": np.array(json.dumps({"order": changed}))}, "not of the form of a PCG64 state")
            for changed in (  # a float, a boolean, a string where an integer belongs; a key more or less
                _rng_state(has_uint32=0.0),
                _rng_state(uinteger=True),
                _rng_state(state={"state": "1", "inc": 1}),
                _rng_state(state={"state": 1.0, "inc": 1}),
                _rng_state(extra=1),
                {k: v for k, v in _rng_state().items() if k != "uinteger"},
                _rng_state(bit_generator="MT19937"),
            )
        ),
        ({"train_v_W": _f32((10, 784), np.nan)}, "train_v_W holds NaN"),
        ({"train_v_W": _f32((10, 783))}, "train_v_W has shape"),
        ({"train_v_b": None}, "holds no training state"),
    ],
)
def test_training_state_is_validated_before_a_resume(tmp_path, changes, message):
    from mnist_softmax.checkpoint import load_train_state
    from mnist_softmax.state import TrainState

    path = tmp_path / "model.npz"
    m = _model()
    rng_states = {"order": np.random.default_rng(0).bit_generator.state}
    state = TrainState({"W": m.W, "b": m.b}, {"W": m.W * 0, "b": m.b * 0}, rng_states, [ROW])
    save_checkpoint(path, m, CONFIG, {}, state)
    _resave(path, **changes)
    with pytest.raises(CheckpointError, match=message):
        load_train_state(path)
    load_checkpoint(path)  # scoring needs none of it


def test_eval_refuses_nan_weights_instead_of_scoring_them(tmp_path):
    from click.testing import CliRunner

    from mnist_softmax.cli import main

    path = tmp_path / "model.npz"
    save_checkpoint(path, _model(), CONFIG, {})
    _resave(path, W=_f32((10, 784), np.nan))
    result = CliRunner().invoke(main, ["eval", "--checkpoint", str(path), "--data-dir", str(tmp_path / "none")])
    assert result.exit_code == 1 and result.output.count("\n") == 1 and "W holds NaN" in result.output


def test_zip_and_npy_quirks_are_one_line_errors(tmp_path):
    """An encrypted member, an unknown compression method, a garbled .npy header: each a CheckpointError."""
    import zipfile

    good = tmp_path / "good.npz"
    save_checkpoint(good, _model(), CONFIG, {})
    data = good.read_bytes()
    name = b"W.npy"
    cases = {}
    flags = bytearray(data)  # the encryption bit in every local and central header of W.npy
    for sig, off in ((b"PK\x03\x04", 6), (b"PK\x01\x02", 8)):
        start = 0
        while (i := flags.find(sig, start)) >= 0:
            name_at = i + (30 if sig == b"PK\x03\x04" else 46)
            if flags[name_at : name_at + len(name)] == name:
                flags[i + off] |= 1
            start = i + 4
    cases["encrypted"] = bytes(flags)
    method = bytearray(data)
    for sig, off in ((b"PK\x03\x04", 8), (b"PK\x01\x02", 10)):
        start = 0
        while (i := method.find(sig, start)) >= 0:
            name_at = i + (30 if sig == b"PK\x03\x04" else 46)
            if method[name_at : name_at + len(name)] == name:
                method[i + off] = 98
            start = i + 4
    cases["method 98"] = bytes(method)
    with np.load(good) as z:
        members = {k: z[k] for k in z.files}
    garbled = tmp_path / "garbled.npz"
    with zipfile.ZipFile(garbled, "w") as zf:
        for k, v in members.items():
            raw = _npy(v)
            if k == "W":
                raw = raw[:10] + b"{{{{" + raw[14:]
            zf.writestr(f"{k}.npy", raw)
    cases["garbled header"] = garbled.read_bytes()
    for label, blob in cases.items():
        path = tmp_path / f"{label}.npz"
        path.write_bytes(blob)
        with pytest.raises(CheckpointError) as e:
            load_checkpoint(path)
        assert "\n" not in str(e.value), label
