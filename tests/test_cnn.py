"""The cnn network's maths: every layer's gradient against central differences (float64, tiny
inputs) and against PyTorch autograd, one SGD step against torch.optim.SGD, the schedule against
OneCycleLR, and the inference path's chunking, determinism and purity."""

from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
from conftest import check_gradient, rel_err
from threadpoolctl import threadpool_limits
from torch_reference import (
    ONE_CYCLE,
    STEPS,
    conv_case,
    each_reference,
    network_case,
    sample_index,
    steps_case,
    torch_conv,
    torch_network,
    torch_one_cycle,
    torch_steps,
)  # fmt: skip

from mnist_softmax import cnn, cnn_layers
from mnist_softmax.train import one_cycle, train_epoch

RTOL = 1e-5


def tiny_params(rng, dtype=np.float64):
    """A small network of the same form: 8×8 images, 3 then 4 maps, N = 4·2·2 = 16."""
    return {k: v.astype(dtype) for k, v in cnn.init_params(rng, image_size=8, maps=(3, 4)).items()}


def tiny_batch(rng, n=5, dtype=np.float64):
    return rng.standard_normal((8, 8, n, 1)).astype(dtype), rng.integers(0, 10, n)


# ---- central differences, float64 ----------------------------------------------------------------


def conv_grads(kind: str, x: np.ndarray, w: np.ndarray, dy: np.ndarray):
    """(y, dx, dw) of the conv of that kind ("im2col" or "fourier") at x, w with output gradient dy."""
    if kind == "im2col":
        y, cols = cnn_layers.conv_forward(x, w)
        return (y, *cnn_layers.conv_backward(cols, w, dy))
    spectrum = cnn_layers.conv_spectrum(w, *x.shape[:2])
    y, X = cnn_layers.fourier_conv_forward(x, spectrum)
    return (y, *cnn_layers.fourier_conv_backward(X, spectrum, dy))


# Even and odd heights and widths: the Fourier grid's last column is a Nyquist frequency or not.
SHAPES = [(6, 4, 3, 1), (5, 7, 2, 16), (14, 14, 2, 3)]


@pytest.mark.parametrize("kind", ["im2col", "fourier"])
@pytest.mark.parametrize("shape", SHAPES)
def test_conv_gradients_by_central_differences(kind, shape):
    rng = np.random.default_rng(0)
    x = rng.standard_normal(shape)
    w = rng.standard_normal((5, shape[3], 5, 5))
    R = rng.standard_normal((*shape[:3], 5))
    y, dx, dw = conv_grads(kind, x, w, R)
    f = lambda: float((conv_grads(kind, x, w, R)[0] * R).sum())  # noqa: E731
    check_gradient(f, x, dx, rng)
    check_gradient(f, w, dw, rng)


@pytest.mark.parametrize("shape", SHAPES)
def test_fourier_conv_equals_the_direct_conv_and_leaves_inputs_alone(shape):
    """The convolution theorem on the (H + 2)×(W + 2) grid gives the zero-padded conv exactly: to
    float64 rounding in float64, and within 2e-6 of the largest value in float32."""
    rng = np.random.default_rng(1)
    x = rng.standard_normal(shape)
    w = rng.standard_normal((6, shape[3], 5, 5))
    dy = rng.standard_normal((*shape[:3], 6))
    kept = x.copy(), w.copy(), dy.copy()
    want = conv_grads("im2col", x, w, dy)
    for got, ref in zip(conv_grads("fourier", x, w, dy), want, strict=True):
        assert got.shape == ref.shape and got.dtype == np.float64
        assert rel_err(got, ref) < 1e-12
    for got, ref in zip(conv_grads("fourier", *(a.astype(np.float32) for a in (x, w, dy))), want, strict=True):
        assert got.dtype == np.float32
        assert rel_err(got, ref) < 2e-6
    for a, b in zip((x, w, dy), kept, strict=True):
        np.testing.assert_array_equal(a, b)
    for mat in cnn_layers._fourier(*shape[:2], np.dtype(np.float64)):  # shared between calls, so read-only
        assert not mat.flags.writeable and mat.flags.owndata


def test_maxpool_gradient_by_central_differences():
    rng = np.random.default_rng(1)
    x = rng.standard_normal((4, 6, 3, 2))
    R = rng.standard_normal((2, 3, 3, 2))
    y, arg = cnn_layers.maxpool_forward(x)
    check_gradient(
        lambda: float((cnn_layers.maxpool_forward(x)[0] * R).sum()), x, cnn_layers.maxpool_backward(R, arg), rng
    )


def test_bias_relu_gradients_by_central_differences():
    rng = np.random.default_rng(2)
    x = rng.standard_normal((3, 3, 4, 5))
    x[np.abs(x) < 1e-3] = 0.5  # no kink within reach of eps
    b = np.zeros(5)
    R = rng.standard_normal(x.shape)
    dx, db = cnn_layers.bias_relu_backward(cnn_layers.bias_relu_forward(x, b), R)
    f = lambda: float((cnn_layers.bias_relu_forward(x, b) * R).sum())  # noqa: E731
    check_gradient(f, x, dx, rng)
    check_gradient(f, b, db, rng)


@pytest.mark.parametrize("width", [8, 12])  # square and not: height and width never swap
def test_whole_network_gradients_by_central_differences(width):
    rng = np.random.default_rng(3)
    params = tiny_params(rng)
    params["W"] = rng.uniform(-0.25, 0.25, (10, 4 * 2 * (width // 4)))  # N = 4 maps · 2 · width/4
    x = rng.standard_normal((8, width, 5, 1))
    y = rng.integers(0, 10, 5)
    loss, z, grads = cnn.loss_and_grads(params, x, y)
    assert z.shape == (5, 10) and set(grads) == set(cnn.PARAM_NAMES)
    for name in cnn.PARAM_NAMES:
        assert grads[name].shape == params[name].shape
        check_gradient(lambda: cnn.loss_and_grads(params, x, y)[0], params[name], grads[name], rng)


def test_pieces_and_threads_give_the_gradients_of_the_whole_batch(monkeypatch):
    rng = np.random.default_rng(4)
    params = tiny_params(rng)
    x, y = tiny_batch(rng, n=7)
    loss, z, grads = cnn.loss_and_grads(params, x, y)  # one piece
    monkeypatch.setattr(cnn, "PIECE", 3)  # pieces of 3, 3 and 1 images
    in_pieces = cnn.loss_and_grads(params, x, y)
    with ThreadPoolExecutor(2) as pool:
        threaded = cnn.loss_and_grads(params, x, y, pool)
    assert in_pieces[0] == pytest.approx(loss, rel=1e-12)
    np.testing.assert_allclose(in_pieces[1], z, rtol=1e-12)
    for name in grads:
        np.testing.assert_allclose(in_pieces[2][name], grads[name], rtol=1e-10, atol=1e-14)
    assert threaded[0] == in_pieces[0]  # the same numbers, to the bit, with or without threads
    np.testing.assert_array_equal(threaded[1], in_pieces[1])
    for name in grads:
        np.testing.assert_array_equal(threaded[2][name], in_pieces[2][name])


@pytest.mark.parametrize("n", [1, 2, 16, 33, 64, 65, 100, 4096])
def test_a_batch_is_cut_into_an_even_number_of_pieces_that_cover_it(n):
    pieces = cnn._pieces(n)
    sizes = [p.stop - p.start for p in pieces]
    assert [p.start for p in pieces] == [0, *(p.stop for p in pieces[:-1])] and pieces[-1].stop == n
    assert max(sizes) <= cnn.PIECE and (len(pieces) % 2 == 0 or n == 1)
    assert max(sizes) - min(sizes) <= max(sizes) // 2  # no crumb of a piece for one thread


def test_maxpool_ties_go_to_the_first_input_and_nothing_is_modified():
    x = np.zeros((2, 2, 1, 1))
    x_copy = x.copy()
    y, arg = cnn_layers.maxpool_forward(x)
    dx = cnn_layers.maxpool_backward(np.ones_like(y), arg)
    assert dx[:, :, 0, 0].tolist() == [[1, 0], [0, 0]]
    x = np.array([1.0, 3.0, 3.0, 2.0]).reshape(2, 2, 1, 1)  # tie between (0, 1) and (1, 0)
    dx = cnn_layers.maxpool_backward(np.ones((1, 1, 1, 1)), cnn_layers.maxpool_forward(x)[1])
    assert dx[:, :, 0, 0].tolist() == [[0, 1], [0, 0]]
    x = np.array([0.0, 0.0, 1.0, 1.0]).reshape(2, 2, 1, 1)  # the bottom row wins, a tie within it
    dx = cnn_layers.maxpool_backward(np.ones((1, 1, 1, 1)), cnn_layers.maxpool_forward(x)[1])
    assert dx[:, :, 0, 0].tolist() == [[0, 0], [1, 0]]
    np.testing.assert_array_equal(x_copy, 0)


# ---- PyTorch: recorded (tests/torch_reference.py), and live where it is installed ------------------


@pytest.mark.parametrize("kind", ["im2col", "fourier"])
@pytest.mark.parametrize("channels", [1, 16])
def test_conv_and_pool_match_torch_autograd(kind, channels):
    x, w, R = conv_case(channels)
    y = conv_grads(kind, x, w, np.zeros((8, 6, 3, 7)))[0]
    p, arg = cnn_layers.maxpool_forward(y)
    _, dx, dw = conv_grads(kind, x, w, cnn_layers.maxpool_backward(R, arg))
    for ref in each_reference(f"conv{channels}", lambda torch: torch_conv(torch, channels)):
        assert rel_err(y, ref["y"]) < RTOL
        assert rel_err(p, ref["p"]) < RTOL
        assert rel_err(dx, ref["dx"]) < RTOL
        assert rel_err(dw, ref["dw"]) < RTOL


def test_whole_network_matches_torch_autograd():
    params, x, y = network_case()
    loss, z, grads = cnn.loss_and_grads(params, x, y)
    for ref in each_reference("network", torch_network):
        assert loss == pytest.approx(float(ref["loss"]), rel=RTOL)
        assert rel_err(z, ref["z"]) < RTOL
        for name in cnn.PARAM_NAMES:
            assert rel_err(grads[name], ref[f"grad_{name}"]) < RTOL, name


def test_training_steps_equal_torch_sgd_steps(mnist):
    """Two steps (so momentum counts) of the full-size float32 network on real images, from the same
    weights, against torch.optim.SGD with weight decay on the kernels and W only."""
    params, batches = steps_case(mnist)
    velocities = {k: np.zeros_like(v) for k, v in params.items()}
    losses = []
    with ThreadPoolExecutor(2) as pool:
        for images, y in batches:
            x = cnn.to_input(images)
            loss, _ = cnn.train_step(params, velocities, x, y.astype(np.intp), *STEPS.values(), pool)
            losses.append(loss)
    for ref in each_reference("steps", lambda torch: torch_steps(torch, mnist)):
        np.testing.assert_allclose(losses, ref["losses"], rtol=1e-5)
        for name in cnn.PARAM_NAMES:
            idx = sample_index(params[name].shape)
            assert params[name].dtype == np.float32
            assert rel_err(params[name].reshape(-1)[idx], ref[f"param_{name}"]) < 1e-5, name
            assert rel_err(velocities[name].reshape(-1)[idx], ref[f"momentum_{name}"]) < 1e-4, name


def test_one_cycle_equals_torch_one_cycle_lr():
    """Every step's learning rate: the peak at 30% of the steps, the cosine on either side."""
    for ref in each_reference("one_cycle", lambda torch: {"lrs": torch_one_cycle(torch)}):
        np.testing.assert_allclose(one_cycle(ONE_CYCLE["total_steps"], ONE_CYCLE["max_lr"]), ref["lrs"], rtol=1e-12)


# ---- the inference path, training epochs, purity ---------------------------------------------------


def test_maps_shape_chunking_and_agreement_with_forward(mnist, monkeypatch):
    params = cnn.init_params(np.random.default_rng(8))
    images = mnist.test_images[:300]
    M = cnn.maps(images, params)
    assert M.shape == (300, 64, 7, 7) and M.dtype == np.float32
    features, _ = cnn.forward(params, cnn.to_input(images))
    np.testing.assert_allclose(M.reshape(300, -1), features, rtol=1e-6, atol=1e-6)
    for threads in (1, 2):  # whatever BLAS threads the caller has, the same maps to the bit
        with threadpool_limits(threads, user_api="blas"):
            np.testing.assert_array_equal(cnn.maps(images, params), M)
    monkeypatch.setattr(cnn, "PIECE", 7)  # many pieces, a short one last
    np.testing.assert_allclose(cnn.maps(images, params), M, rtol=1e-6, atol=1e-6)
    np.testing.assert_array_equal(cnn.maps(images[5:6], params)[0], cnn.maps(images[5:6], params)[0])


def test_init_params_is_pytorch_default_and_seeded():
    a = cnn.init_params(np.random.default_rng(0))
    b = cnn.init_params(np.random.default_rng(0))
    shapes = {"conv1_w": (32, 1, 5, 5), "conv1_b": (32,), "conv2_w": (64, 32, 5, 5), "conv2_b": (64,)}
    shapes |= {"W": (10, 3136), "b": (10,)}
    for name, shape in shapes.items():
        assert a[name].shape == shape and a[name].dtype == np.float32
        np.testing.assert_array_equal(a[name], b[name])
    assert 0.19 < np.abs(a["conv1_w"]).max() <= 1 / 5  # U(-1/√25, 1/√25)
    assert 0.034 < np.abs(a["conv2_w"]).max() <= 1 / np.sqrt(800)


def test_shift_images(mnist):
    images = mnist.test_images[:50]
    same = cnn.shift_images(images, 0, np.random.default_rng(0))
    np.testing.assert_array_equal(same, images)
    moved = cnn.shift_images(images, 2, np.random.default_rng(0))
    again = cnn.shift_images(images, 2, np.random.default_rng(0))
    np.testing.assert_array_equal(moved, again)
    assert moved.shape == images.shape and moved.dtype == np.uint8
    # every image is its original moved by at most 2 px, and most do move
    diffs = 0
    for img, m in zip(images, moved, strict=True):
        padded = np.pad(img, 2)
        hits = [(dy, dx) for dy in range(5) for dx in range(5) if (padded[dy : dy + 28, dx : dx + 28] == m).all()]
        assert hits
        diffs += (2, 2) not in hits
    assert diffs > 30


def test_training_is_deterministic_learns_and_leaves_inputs_alone(mnist):
    images, labels = mnist.train_images[:512], mnist.train_labels[:512].astype(np.intp)
    kept = images.copy(), labels.copy()
    order = np.random.default_rng(0).permutation(512)

    def run():
        params = cnn.init_params(np.random.default_rng(0))
        velocities = {k: np.zeros_like(v) for k, v in params.items()}
        lrs = one_cycle(2 * 8, 0.05)
        for e in range(2):
            with cnn.training_step(params, velocities, 0.9, 5e-4, np.random.default_rng(e), max_shift=2) as step:
                out = train_epoch(step, images, labels, order, lrs[8 * e : 8 * e + 8], 64)[:2]
        return params, out

    (p1, (loss1, acc1)), (p2, (loss2, acc2)) = run(), run()
    for name in p1:
        np.testing.assert_array_equal(p1[name], p2[name])
    assert (loss1, acc1) == (loss2, acc2)
    assert acc1 > 0.6 and loss1 < 1.5
    np.testing.assert_array_equal(images, kept[0])
    np.testing.assert_array_equal(labels, kept[1])
    np.testing.assert_array_equal(order, np.random.default_rng(0).permutation(512))


def test_a_diverging_epoch_stops_at_its_first_non_finite_loss(mnist):
    images, labels = mnist.train_images[:640], mnist.train_labels[:640].astype(np.intp)
    params = cnn.init_params(np.random.default_rng(0))
    velocities = {k: np.zeros_like(v) for k, v in params.items()}
    steps = []
    with cnn.training_step(params, velocities, 0.9, 0.0) as step:
        loss, _, taken = train_epoch(step, images, labels, np.arange(640), 1e6, 64, on_step=lambda *s: steps.append(s))
    assert not np.isfinite(loss) and len(steps) == taken < 10


def test_pure_functions_do_not_modify_their_inputs():
    rng = np.random.default_rng(9)
    params = tiny_params(rng)
    x, y = tiny_batch(rng)
    kept = {k: v.copy() for k, v in params.items()}, x.copy(), y.copy()
    with ThreadPoolExecutor(2) as pool:
        cnn.loss_and_grads(params, x, y, pool)
    for name in params:
        np.testing.assert_array_equal(params[name], kept[0][name])
    np.testing.assert_array_equal(x, kept[1])
    np.testing.assert_array_equal(y, kept[2])
