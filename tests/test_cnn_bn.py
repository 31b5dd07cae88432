"""The lesson's network at 99.6% (issue 28): batch norm's gradients (central differences, PyTorch),
its running statistics, and the random distortions of training images (seeded, what they say they
are, the digit kept in the field)."""

from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
from conftest import check_gradient, rel_err
from torch_reference import (
    STEPS,
    bn_network_case,
    bn_steps_case,
    each_reference,
    sample_index,
    torch_bn_network,
    torch_bn_steps,
)  # fmt: skip

from mnist_softmax import cnn, cnn_layers
from mnist_softmax.augment import Distortion, distort, random_affine, warp

RTOL = 1e-5


# ---- batch norm ------------------------------------------------------------------------------------


def test_bn_relu_gradients_by_central_differences():
    rng = np.random.default_rng(11)
    x = rng.standard_normal((3, 3, 4, 5))
    g, b = rng.uniform(0.5, 1.5, 5), rng.uniform(-0.3, 0.3, 5)
    R = rng.standard_normal(x.shape)
    a, cache = cnn_layers.bn_relu_forward(x, g, b)
    assert np.all(np.abs(a[a > 0]) > 1e-4)  # no kink of the ReLU within reach of eps
    dx, dg, db = cnn_layers.bn_relu_backward(a, cache, g, R)
    f = lambda: float((cnn_layers.bn_relu_forward(x, g, b)[0] * R).sum())  # noqa: E731
    check_gradient(f, x, dx, rng)
    check_gradient(f, g, dg, rng)
    check_gradient(f, b, db, rng)
    mean, var = cache[2], cache[3]  # the batch's own statistics, per channel
    np.testing.assert_allclose(mean, x.reshape(-1, 5).mean(0), rtol=1e-12)
    np.testing.assert_allclose(var, x.reshape(-1, 5).var(0), rtol=1e-12)


def test_network_with_batch_norm_gradients_by_central_differences():
    rng = np.random.default_rng(12)
    params, x, y = bn_network_case()
    loss, z, grads = cnn.loss_and_grads(params, x, y)
    assert set(grads) == set(cnn.trainable(params)) and "bn1_mean" not in grads
    for name in cnn.trainable(params):
        check_gradient(lambda: cnn.loss_and_grads(params, x, y)[0], params[name], grads[name], rng)


def test_network_with_batch_norm_matches_torch_autograd():
    params, x, y = bn_network_case()
    stats: list = []
    loss, z, grads = cnn.loss_and_grads(params, x, y, stats=stats)
    features, _ = cnn.forward(params, x)  # eval: the running statistics
    z_eval = features @ params["W"].T + params["b"]
    after = {k: v.copy() for k, v in params.items()}
    cnn.update_running(after, stats)
    for ref in each_reference("bn_network", torch_bn_network):
        assert loss == pytest.approx(float(ref["loss"]), rel=RTOL)
        assert rel_err(z, ref["z"]) < RTOL and rel_err(z_eval, ref["z_eval"]) < RTOL
        for name in cnn.trainable(params):
            assert rel_err(grads[name], ref[f"grad_{name}"]) < RTOL, name
        for name in ("bn1_mean", "bn1_var", "bn2_mean", "bn2_var"):
            assert rel_err(after[name], ref[f"running_{name}"]) < RTOL, name


def test_training_steps_with_batch_norm_equal_torch_sgd_steps(mnist):
    """Two float32 steps of the full-size network with batch norm, on real digits, against
    torch.optim.SGD and BatchNorm2d: the losses, every parameter, the running statistics, and an
    eval pass with them."""
    params, batches = bn_steps_case(mnist)
    velocities = {k: np.zeros_like(v) for k, v in params.items()}
    losses = []
    with ThreadPoolExecutor(2) as pool:
        for images, y in batches:  # 16 images: one piece, whose statistics are the batch's
            loss, _ = cnn.train_step(params, velocities, cnn.to_input(images), y.astype(np.intp), *STEPS.values(), pool)
            losses.append(loss)
    z_eval = cnn.maps(mnist.test_images[:8], params).reshape(8, -1) @ params["W"].T + params["b"]
    for ref in each_reference("bn_steps", lambda torch: torch_bn_steps(torch, mnist)):
        np.testing.assert_allclose(losses, ref["losses"], rtol=1e-5)
        for name, p in params.items():
            idx = sample_index(p.shape)
            assert p.dtype == np.float32 and rel_err(p.reshape(-1)[idx], ref[f"param_{name}"]) < 2e-5, name
        assert rel_err(z_eval, ref["z_eval"]) < 1e-4


def test_each_piece_is_normalised_by_its_own_statistics_and_counted_in_order(monkeypatch):
    """A batch cut into pieces: batch norm uses each piece's statistics ("ghost" batch norm), and
    the running statistics take them one piece after another, as BatchNorm2d would if the pieces
    went through it in turn."""
    params, x, y = bn_network_case()
    monkeypatch.setattr(cnn, "PIECE", 3)
    stats: list = []
    cnn.loss_and_grads(params, x, y, stats=stats)  # 6 images: pieces of 3 and 3
    assert len(stats) == 2
    for s, piece in zip((slice(0, 3), slice(3, 6)), stats, strict=True):
        _, cache = cnn.forward(params, x[:, :, s], train=True)  # the piece alone
        for k, bn in enumerate(cache[7:]):
            np.testing.assert_array_equal(piece[k][0], bn[2])  # its mean
            np.testing.assert_array_equal(piece[k][1], bn[3])  # its variance
    running = {k: v.copy() for k, v in params.items()}
    cnn.update_running(running, stats)
    want = params["bn2_mean"].copy()
    for piece in stats:
        want = 0.9 * want + 0.1 * piece[1][0]
    np.testing.assert_allclose(running["bn2_mean"], want, rtol=1e-12)
    n = stats[0][1][2]
    want_var = params["bn2_var"].copy()
    for piece in stats:
        want_var = 0.9 * want_var + 0.1 * piece[1][1] * n / (n - 1)
    np.testing.assert_allclose(running["bn2_var"], want_var, rtol=1e-12)


def test_eval_folds_batch_norm_into_a_scale_and_a_shift():
    params, x, _ = bn_network_case()
    p = np.random.default_rng(0).standard_normal((2, 2, 3, 4))
    scale, shift = cnn.bn_affine(params, 2)
    want = np.maximum(
        params["bn2_g"] * (p - params["bn2_mean"]) / np.sqrt(params["bn2_var"] + 1e-5) + params["bn2_b"], 0
    )
    np.testing.assert_allclose(cnn_layers.scale_relu_forward(p, scale, shift), want, rtol=1e-12)


def test_batch_norm_parameters_and_their_shapes():
    params = cnn.init_params(np.random.default_rng(0), batch_norm=True)
    shapes = cnn.param_shapes({"batch_norm": True})
    assert {k: v.shape for k, v in params.items() if k in shapes} == shapes
    assert "conv1_b" not in params and "conv2_b" not in params  # batch norm's β takes the bias's place
    assert set(params) - set(shapes) == {"W", "b"}
    assert cnn.trainable(params) == [k for k in params if not k.endswith(("_mean", "_var"))]
    plain = cnn.init_params(np.random.default_rng(0))
    np.testing.assert_array_equal(plain["conv1_w"], cnn.init_params(np.random.default_rng(0))["conv1_w"])


# ---- the distortions ---------------------------------------------------------------------------


def test_a_seed_gives_the_same_distorted_images(mnist):
    images = mnist.train_images[:64]
    d = Distortion(rotate=10, scale=0.1, shear=5, shift=2)
    a = distort(images, d, np.random.default_rng(3))
    b = distort(images, d, np.random.default_rng(3))
    c = distort(images, d, np.random.default_rng(4))
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c) and a.dtype == np.float32 and a.shape == images.shape
    assert a.min() >= 0 and a.max() <= 255  # bilinear: within the input's range
    np.testing.assert_array_equal(images, mnist.train_images[:64])  # inputs untouched


def test_no_distortion_and_whole_pixel_shifts_are_exact(mnist):
    images = mnist.train_images[:8]
    A, t = np.tile(np.eye(2), (8, 1, 1)), np.zeros((8, 2))
    np.testing.assert_array_equal(warp(images, A, t), images)
    t[:, 0], t[:, 1] = 3, -2  # 3 rows down, 2 columns left, zeros coming in
    want = np.zeros((8, 28, 28), np.float32)
    want[:, 3:, :26] = images[:, :25, 2:]
    np.testing.assert_array_equal(warp(images, A, t), want)
    t[:, 0] = 40  # off the image altogether
    assert warp(images, A, t).max() == 0


def _centre_of_mass(images: np.ndarray) -> np.ndarray:
    mass = images.sum((1, 2))
    return np.stack([images.sum(2) @ np.arange(28), images.sum(1) @ np.arange(28)], 1) / mass[:, None]


def test_a_distortion_moves_the_digits_mass_as_its_map_says_and_keeps_it_in_the_field(mnist):
    """Under p ↦ A(p − c) + c + t, a digit's centre of mass m goes to A(m − c) + c + t (to the
    bilinear sampling's rounding), and its ink to det A times as much: the digit is moved, not
    cut (but for the rare one that reaches the edge). MNIST's digits are centred, so with shifts of
    2 px their mass stays within 4 px of the field's centre."""
    images = mnist.train_images[:500].astype(np.float32)
    d = Distortion(rotate=10, scale=0.1, shear=5, shift=2)
    A, t = random_affine(len(images), d, np.random.default_rng(5))
    out = warp(images, A, t)
    c = np.array([13.5, 13.5])
    before, after = _centre_of_mass(images), _centre_of_mass(out)
    predicted = np.einsum("nij,nj->ni", A, before - c) + c + t
    error = np.linalg.norm(after - predicted, axis=1)
    # (a few digits reach the field's edge: turned, enlarged and moved, a corner of stroke is cut)
    assert np.median(error) < 0.05 and np.percentile(error, 99) < 0.35 and error.max() < 1.0
    ink = out.sum((1, 2)) / images.sum((1, 2)) / np.linalg.det(A)
    assert np.median(np.abs(ink - 1)) < 0.01 and np.percentile(np.abs(ink - 1), 99) < 0.05
    # Within its bounds: no farther from the centre than the map can take it (its largest stretch
    # of the old distance, plus the shift), and for MNIST's centred digits within 4 px.
    stretch = np.linalg.norm(A, 2, axis=(1, 2))
    bound = stretch * np.linalg.norm(before - c, axis=1) + np.linalg.norm(t, axis=1)
    assert np.all(np.linalg.norm(after - c, axis=1) <= bound + error + 1e-6)
    assert np.linalg.norm(after - c, axis=1).max() < 4


def test_random_affine_draws_within_its_limits():
    d = Distortion(rotate=10, scale=0.1, shear=5, shift=2)
    A, t = random_affine(2000, d, np.random.default_rng(6))
    assert np.abs(t).max() <= 2 and np.abs(t).max() > 1.9
    det = np.linalg.det(A)  # rotation and shear keep areas: det A = scale²
    assert det.min() >= 0.9**2 - 1e-9 and det.max() <= 1.1**2 + 1e-9
    angle = np.degrees(np.arctan2(A[:, 1, 0], A[:, 0, 0]))  # the first column: rotation · scale
    assert np.abs(angle).max() <= 10 + 1e-9 and np.abs(angle).max() > 9.5
    zero = random_affine(5, Distortion(), np.random.default_rng(6))
    np.testing.assert_array_equal(zero[0], np.tile(np.eye(2), (5, 1, 1)))
