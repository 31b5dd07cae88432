"""The conv front end: exact shapes and flatten order, the folded maths against a direct version,
determinism, the feature cache, checkpoints, and a short end-to-end run on the real data."""

import json
from types import SimpleNamespace

import numpy as np
import pytest
from conftest import assert_figure, run
from PIL import Image

from mnist_softmax import kmeans_conv as conv
from mnist_softmax.checkpoint import load_checkpoint, save_checkpoint
from mnist_softmax.config import load_config
from mnist_softmax.features import CONV, cache_name, flatten, mnist_maps, params_key, unflatten
from mnist_softmax.model import Model

CFG = SimpleNamespace(conv_kernel=5, conv_patches=5000, conv_kmeans_iters=5, conv_whiten_eps=0.1, conv_threshold=0.25)


@pytest.fixture(scope="module")
def params(mnist):
    return conv.fit(mnist.train_images[:5000], np.random.default_rng(0), CFG)


def direct_maps(images, params):
    """The definition, written plainly: normalise each patch, whiten+project, rectify, pool, tent."""
    x = images.astype(np.float64) / 255
    padded = np.pad(x, ((0, 0), (2, 2), (2, 2)))
    out = np.zeros((len(x), 64, 28, 28))
    for r in range(28):
        for c in range(28):
            p = padded[:, r : r + 5, c : c + 5].reshape(len(x), 25)
            p = (p - p.mean(1, keepdims=True)) / np.sqrt(p.var(1, keepdims=True) + conv.PATCH_VAR_EPS)
            resp = p @ params["filters"] - params["offset"] - params["threshold"]
            out[:, :, r, c] = np.maximum(resp, 0)
    pooled = out.reshape(len(x), 64, 7, 4, 7, 4).mean(axis=(3, 5))
    p = np.pad(pooled, ((0, 0), (0, 0), (1, 1), (1, 1)))  # tent [1, 2, 1] / 4 along rows, then columns
    rows = 0.25 * p[:, :, :-2] + 0.5 * p[:, :, 1:-1] + 0.25 * p[:, :, 2:]
    return 0.25 * rows[..., :-2] + 0.5 * rows[..., 1:-1] + 0.25 * rows[..., 2:]


def test_shapes_and_flatten_order(params, mnist):
    M = conv.maps(mnist.test_images[:3], params)
    assert M.shape == (3, 64, 7, 7) and M.dtype == np.float32 and CONV.n_features == 3136
    X = flatten(M)
    assert X.shape == (3, 3136)
    assert X[2, 5 * 49 + 3 * 7 + 6] == M[2, 5, 3, 6]  # (B, 64, 7, 7) -> (B, 3136), index c·49 + h·7 + w
    np.testing.assert_array_equal(unflatten(X, (64, 7, 7)), M)
    assert params["filters"].shape == (25, 64) and params["offset"].shape == (64,)


def test_folded_extraction_equals_the_direct_definition(params, mnist):
    imgs = mnist.test_images[:6]
    np.testing.assert_allclose(conv.maps(imgs, params), direct_maps(imgs, params), rtol=1e-5, atol=1e-5)


def test_one_faint_pixel_is_ink(params, mnist):
    """A patch whose only ink is one pixel of value 1 is normalised like any other, wherever it is."""
    imgs = np.repeat(mnist.test_images[:1], 4, axis=0)
    for i, (r, c) in enumerate([(0, 0), (27, 27), (3, 25), (26, 1)]):
        imgs[i, max(r - 2, 0) : r + 3, max(c - 2, 0) : c + 3] = 0
        imgs[i, r, c] = 1
    imgs = np.concatenate([imgs, np.zeros((1, 28, 28), np.uint8)])  # and a blank page
    np.testing.assert_allclose(conv.maps(imgs, params), direct_maps(imgs, params), rtol=1e-5, atol=1e-5)


def test_each_image_is_independent_of_its_chunk(params, mnist):
    imgs = mnist.test_images[:150]
    together = conv.maps(imgs, params)
    for i in (0, 63, 64, 149):
        np.testing.assert_allclose(conv.maps(imgs[i : i + 1], params)[0], together[i], rtol=1e-5, atol=1e-6)


def test_fit_is_deterministic_per_seed_and_uses_no_labels(mnist):
    imgs = mnist.train_images[:3000]
    a = conv.fit(imgs, np.random.default_rng(5), CFG)
    b = conv.fit(imgs, np.random.default_rng(5), CFG)
    c = conv.fit(imgs, np.random.default_rng(6), CFG)
    for k in a:
        np.testing.assert_array_equal(a[k], b[k])
    assert not np.array_equal(a["filters"], c["filters"])
    np.testing.assert_array_equal(conv.maps(mnist.test_images[:20], a), conv.maps(mnist.test_images[:20], b))


def test_zca_whitens_and_kmeans_finds_unit_directions():
    rng = np.random.default_rng(0)
    X = rng.normal(size=(20000, 4)) @ np.array([[3, 1, 0, 0], [0, 1, 0, 0], [0, 0, 2, 0], [0, 0, 0, 0.5]])
    mean, Z = conv.zca(X, 1e-9)
    np.testing.assert_allclose(np.cov((X - mean) @ Z, rowvar=False), np.eye(4), atol=1e-6)
    dirs = np.eye(3)
    pts = np.repeat(dirs, 500, axis=0) * rng.uniform(0.5, 2, (1500, 1)) + rng.normal(0, 0.01, (1500, 3))
    D = conv.spherical_kmeans(pts, 3, 10, np.random.default_rng(1))
    np.testing.assert_allclose(np.linalg.norm(D, axis=1), 1.0, rtol=1e-9)
    assert sorted(np.abs(D).argmax(1).tolist()) == [0, 1, 2]
    assert np.abs(D).max(1).min() > 0.99


def test_feature_cache_is_written_once_reused_and_keyed_by_params(params, mnist, tmp_path):
    small = type(mnist)(
        mnist.train_images[:200], mnist.train_labels[:200], mnist.test_images[:50], mnist.test_labels[:50]
    )
    F_train, F_test = mnist_maps(CONV, params, small, tmp_path)
    stem = f"conv-v{conv.VERSION}-{params_key(CONV, params)}"
    assert sorted(f.name for f in tmp_path.iterdir()) == [f"{stem}.json", f"{stem}.npy"]
    spy = CONV._replace(maps=lambda *a, **k: pytest.fail("features were computed again"))
    G_train, G_test = mnist_maps(spy, params, small, tmp_path)
    assert isinstance(G_train, np.memmap)
    np.testing.assert_array_equal(G_train, F_train)
    np.testing.assert_array_equal(G_test, F_test)
    other = dict(params, threshold=np.array(0.5, np.float32))
    assert params_key(CONV, other) != params_key(CONV, params)


def test_cache_files_of_older_extraction_versions_are_removed(params, mnist, tmp_path):
    small = type(mnist)(
        mnist.train_images[:100], mnist.train_labels[:100], mnist.test_images[:20], mnist.test_labels[:20]
    )
    other_seed = f"conv-v{conv.VERSION}-0123456789abcdef.npy"  # same version, other settings: kept
    outdated = ["conv-0123456789abcdef.npy", f"conv-v{conv.VERSION - 1}-0123456789abcdef.npy"]
    for name in [other_seed, *outdated, "notes.txt"]:
        (tmp_path / name).write_bytes(b"x")
    mnist_maps(CONV, params, small, tmp_path)
    current = cache_name(CONV, params)
    assert sorted(f.name for f in tmp_path.iterdir()) == sorted(
        [other_seed, current, current.replace(".npy", ".json"), "notes.txt"]
    )


@pytest.mark.parametrize("damage", ["truncated", "rows zeroed", "test row changed", "sidecar missing"])
def test_damaged_feature_cache_is_recomputed(params, mnist, tmp_path, damage):
    small = type(mnist)(
        mnist.train_images[:100], mnist.train_labels[:100], mnist.test_images[:20], mnist.test_labels[:20]
    )
    F_train, F_test = mnist_maps(CONV, params, small, tmp_path)
    path = tmp_path / cache_name(CONV, params)
    data = bytearray(path.read_bytes())
    if damage == "truncated":
        del data[1000:]
    elif damage == "rows zeroed":
        data[-20 * 3136 * 4 - 50 * 3136 * 4 : -20 * 3136 * 4] = bytes(50 * 3136 * 4)  # 50 train rows
    elif damage == "test row changed":
        data[-100] ^= 0x40
    else:
        path.with_suffix(".json").unlink()
    path.write_bytes(bytes(data))
    G_train, G_test = mnist_maps(CONV, params, small, tmp_path)
    np.testing.assert_array_equal(G_train, F_train)
    np.testing.assert_array_equal(G_test, F_test)
    if damage == "sidecar missing":  # recomputed, so written again with its sidecar
        assert path.with_suffix(".json").is_file()
    else:
        assert path.read_bytes() != bytes(data), "the damaged file was replaced"
    H_train, _ = mnist_maps(CONV._replace(maps=lambda *a, **k: pytest.fail("not trusted")), params, small, tmp_path)
    np.testing.assert_array_equal(H_train, F_train)


def test_an_unwritable_cache_costs_nothing_but_the_cache(params, mnist, tmp_path):
    small = type(mnist)(
        mnist.train_images[:50], mnist.train_labels[:50], mnist.test_images[:10], mnist.test_labels[:10]
    )
    (tmp_path / "file").write_text("not a folder")
    F_train, F_test = mnist_maps(CONV, params, small, tmp_path / "file" / "cache")
    np.testing.assert_array_equal(F_test, conv.maps(small.test_images, params).reshape(10, -1))


def test_cache_command_lists_and_clears(params, mnist, tmp_path):
    small = type(mnist)(
        mnist.train_images[:50], mnist.train_labels[:50], mnist.test_images[:10], mnist.test_labels[:10]
    )
    mnist_maps(CONV, params, small, tmp_path / "cache", about={"seed": 4, "conv_kernel": 5})
    (tmp_path / "cache" / ".conv-v3-x.npy.1234abcd.tmp").write_bytes(b"left by a killed run")
    out = run("cache", "--data-dir", tmp_path).output.splitlines()
    size = sum(f.stat().st_size for f in (tmp_path / "cache").glob("conv-*"))
    assert len(out) == 2 and cache_name(CONV, params) in out[0] and "seed 4, conv_kernel 5" in out[0]
    assert f"{size / 1e6:,.1f} MB" in out[0] and out[1].startswith("1 cached feature file,")
    assert run("cache", "--data-dir", tmp_path, "--clear").output.startswith("removed 3 files")
    assert list((tmp_path / "cache").iterdir()) == []
    assert run("cache", "--data-dir", tmp_path / "none").output.startswith("0 cached feature files, 0.0 MB")


def test_cache_command_survives_odd_files_and_removes_what_killed_runs_left(tmp_path):
    import os
    import subprocess
    import sys

    folder = tmp_path / "cache"
    folder.mkdir()
    (folder / "gone.npy").symlink_to(tmp_path / "nowhere.npy")
    (folder / "x.npy").write_bytes(b"not really")
    os.mkfifo(folder / "x.json")  # reading it would wait forever
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    (folder / f".conv-v3-abc.npy.{dead.stdout.strip()}-0badf00d.tmp").write_bytes(bytes(1000))
    out = run("cache", "--data-dir", tmp_path).output.splitlines()
    assert out[0] == "removed 1 temp file left by runs that were killed"
    assert "x.npy" in out[1] and "unknown origin" in out[1] and out[2].startswith("1 cached feature file")


def test_conv_checkpoint_round_trip(params, mnist, tmp_path):
    rng = np.random.default_rng(0)
    f32 = np.float32
    m = Model(
        "conv",
        params,
        rng.random(3136).astype(f32),
        rng.random(3136).astype(f32) + 0.1,
        rng.normal(size=(10, 3136)).astype(f32),
        rng.normal(size=10).astype(f32),
    )
    save_checkpoint(tmp_path / "m.npz", m, load_config("conv").to_dict(), {})
    m2 = load_checkpoint(tmp_path / "m.npz").model
    assert m2.front_end == "conv" and set(m2.fe_params) == set(params)
    np.testing.assert_array_equal(m2.features(mnist.test_images[:5]), m.features(mnist.test_images[:5]))


def test_short_conv_run_end_to_end(conv_trained, mnist_dir, mnist, tmp_path):
    summary = json.loads((conv_trained / "summary.json").read_text())
    assert summary["features"] == "conv" and summary["n_features"] == 3136
    assert summary["test_accuracy"] >= 0.98, summary  # 2 epochs; the default 15 reach ≥ 0.988
    assert load_config(conv_trained / "config.toml").features == "conv"
    assert_figure(conv_trained / "weights.png", (1000, 900), min_fraction=0.1)
    out = json.loads(run("eval", "--checkpoint", conv_trained / "model.npz", "--data-dir", mnist_dir, "--json").output)
    assert out["accuracy"] == summary["test_accuracy"] and out["loss"] == summary["test_loss"]

    img = tmp_path / "d.png"
    Image.fromarray(mnist.test_images[0]).save(img)
    text = run("predict", img, "--checkpoint", conv_trained / "model.npz", "--explain", "--label", "7").output
    assert text.startswith(f"{img}: 7") and "64×7×7" in text and "N = 3136" in text and "W is 10×3136" in text


def test_conv_config_is_shipped_and_complete():
    cfg = load_config("conv")
    assert cfg.features == "conv" and cfg.epochs == 15
    assert load_config(None, {"features": "conv"}) == cfg  # --features conv picks conv.toml
