"""The math: worked numbers, identities, stability, and gradients against finite differences."""

import numpy as np
import pytest
from conftest import central_differences

from mnist_softmax.softmax import (
    cross_entropy,
    layer_grads,
    log_softmax,
    logits,
    loss_and_grad,
    predict_proba,
    softmax,
    softmax_loss,
    softmax_loss_grad,
)


def test_softmax_worked_example():
    np.testing.assert_allclose(softmax(np.array([1.0, 2.0, 3.0])), [0.09003057, 0.24472847, 0.66524096], rtol=1e-7)
    np.testing.assert_array_equal(np.round(softmax(np.array([1.0, 2.0, 3.0])), 3), [0.090, 0.245, 0.665])


def test_cross_entropy_worked_example():
    p = np.array([[0.1, 0.15, 0.05, 0.6, 0.1]])
    assert cross_entropy(p, np.array([3])) == pytest.approx(-np.log(0.6), rel=1e-15)  # true class 4 of 5
    assert cross_entropy(p, np.array([3])) == pytest.approx(0.5108256237659907, rel=1e-15)


def test_softmax_rows_are_probabilities():
    z = np.random.default_rng(0).normal(scale=10, size=(50, 10))
    P = softmax(z)
    assert P.shape == (50, 10)
    assert np.all(P > 0) and np.all(P < 1)
    np.testing.assert_allclose(P.sum(axis=1), 1.0, rtol=1e-12)


def test_softmax_is_shift_invariant():
    z = np.random.default_rng(1).normal(size=(4, 10))
    np.testing.assert_allclose(softmax(z), softmax(z + 123.4), rtol=1e-12)


def test_cross_entropy_of_softmax_equals_softmax_loss():
    rng = np.random.default_rng(2)
    z, y = rng.normal(scale=3, size=(64, 10)), rng.integers(0, 10, 64)
    assert cross_entropy(softmax(z), y) == pytest.approx(softmax_loss(z, y), rel=1e-12)
    np.testing.assert_allclose(np.log(softmax(z)), log_softmax(z), rtol=1e-12)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("z", [[1000.0, 1.0], [-1000.0, 0.0], [1e4, -1e4], [-1e4, -1e4]])
def test_extreme_logits_do_not_overflow(dtype, z):
    z = np.array([z], dtype=dtype)
    with np.errstate(over="raise", invalid="raise", divide="raise"):  # underflow to 0 is fine
        P, L = softmax(z), log_softmax(z)
        loss, G = softmax_loss_grad(z, np.array([1]))
    assert P.dtype == dtype and np.all(np.isfinite(P)) and np.all(np.isfinite(L)) and np.isfinite(loss)
    np.testing.assert_allclose(P.sum(), 1.0, rtol=1e-6)
    assert loss == pytest.approx(-L[0, 1], rel=1e-6)
    assert np.all(np.isfinite(G))


def test_loss_from_logits_stays_finite_where_log_of_softmax_does_not():
    z = np.array([[1000.0, 0.0]])
    assert softmax_loss(z, np.array([1])) == pytest.approx(1000.0)
    with np.errstate(divide="ignore"):
        assert np.isinf(-np.log(softmax(z)[0, 1]))  # the naive way


@pytest.mark.parametrize("l2", [0.0, 0.3])
def test_gradient_matches_central_differences(l2):
    rng = np.random.default_rng(3)
    T, N, B = 4, 7, 9
    W, b = rng.normal(size=(T, N)), rng.normal(size=T)
    X, y = rng.normal(size=(B, N)), rng.integers(0, T, B)
    _, dW, db = loss_and_grad(W, b, X, y, l2)
    f = lambda: loss_and_grad(W, b, X, y, l2)[0]  # noqa: E731
    np.testing.assert_allclose(dW, central_differences(f, W).reshape(W.shape), rtol=1e-6, atol=1e-9)
    np.testing.assert_allclose(db, central_differences(f, b), rtol=1e-6, atol=1e-9)


def test_logit_gradient_is_p_minus_onehot_over_batch():
    rng = np.random.default_rng(4)
    z, y = rng.normal(size=(5, 10)), rng.integers(0, 10, 5)
    _, G = softmax_loss_grad(z, y)
    np.testing.assert_allclose(G, (softmax(z) - np.eye(10)[y]) / 5, rtol=1e-12)


def test_parts_of_a_batch_add_up_to_the_batch():
    """With batch_size, the layer on some rows of a batch gives the batch's G on those rows and
    their part of its loss, dW and db (cnn sends a batch through the network in pieces)."""
    rng = np.random.default_rng(5)
    W, b = rng.standard_normal((10, 6)), rng.standard_normal(10)
    X, y = rng.standard_normal((7, 6)), rng.integers(0, 10, 7)
    whole = layer_grads(W, b, X, y)
    parts = [layer_grads(W, b, X[s], y[s], batch_size=7) for s in (slice(0, 3), slice(3, 7))]
    assert sum(p.loss for p in parts) == pytest.approx(whole.loss, rel=1e-14)
    np.testing.assert_allclose(np.concatenate([p.G for p in parts]), whole.G, rtol=1e-14)
    np.testing.assert_allclose(parts[0].dW + parts[1].dW, whole.dW, rtol=1e-12, atol=1e-15)
    np.testing.assert_allclose(parts[0].db + parts[1].db, whole.db, rtol=1e-12, atol=1e-15)
    with pytest.raises(ValueError, match="less than the 7 rows"):
        layer_grads(W, b, X, y, batch_size=6)
    for not_a_size in (7.5, float("nan"), float("inf")):
        with pytest.raises(TypeError):
            layer_grads(W, b, X, y, batch_size=not_a_size)
    with pytest.raises(ValueError, match="7 rows of logits .*but 3 labels"):
        softmax_loss_grad(logits(X, W, b), y[:3])


def test_inputs_are_not_modified():
    rng = np.random.default_rng(5)
    W, b, X, y = rng.normal(size=(10, 6)), rng.normal(size=10), rng.normal(size=(8, 6)), rng.integers(0, 10, 8)
    copies = [a.copy() for a in (W, b, X, y)]
    z = logits(X, W, b)
    z_copy = z.copy()
    loss_and_grad(W, b, X, y, 0.1)
    softmax(z), log_softmax(z), softmax_loss_grad(z, y), predict_proba(X, W, b)
    for a, c in zip((W, b, X, y), copies, strict=True):
        np.testing.assert_array_equal(a, c)
    np.testing.assert_array_equal(z, z_copy)


def test_shapes_and_logits_are_w_x_plus_b():
    rng = np.random.default_rng(6)
    W, b, X = rng.normal(size=(10, 784)), rng.normal(size=10), rng.normal(size=(3, 784))
    z = logits(X, W, b)
    assert z.shape == (3, 10)
    np.testing.assert_allclose(z[1], W @ X[1] + b, rtol=1e-12)  # column form z = W·x + b
    assert predict_proba(X, W, b).shape == (3, 10)


@pytest.mark.parametrize("y", [[-1], [10], [0.0], [[1]], [True]])
def test_labels_outside_the_classes_are_refused_not_wrapped(y):
    """Label -1 would index class 9 (NumPy counts from the end) and give its loss without a word."""
    z, P = np.zeros((1, 10)), np.full((1, 10), 0.1)
    for f in (lambda: softmax_loss(z, y), lambda: cross_entropy(P, y), lambda: softmax_loss_grad(z, y)):
        with pytest.raises(ValueError, match="labels must be"):
            f()


def test_cross_entropy_of_a_zero_probability_is_inf_without_a_warning():
    import warnings

    P = np.array([[1.0, 0.0]])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert cross_entropy(P, np.array([1])) == np.inf
    z = np.array([[0.0, -2000.0]])  # the same probabilities, from logits: the loss is the exact figure
    assert softmax(z)[0, 1] == 0.0 and softmax_loss(z, np.array([1])) == 2000.0


def test_a_certain_answer_has_a_loss_of_zero_not_minus_zero():
    """−log 1 is −0.0 in floating point; a loss is printed and saved, and "-0.0000" would be a lie."""
    import math

    z, P, y = np.array([[0.0, -2000.0]]), np.array([[1.0, 0.0]]), np.array([0])
    for loss in (softmax_loss(z, y), cross_entropy(P, y)):
        assert loss == 0.0 and math.copysign(1.0, loss) == 1.0


def test_an_empty_batch_is_refused_naming_the_argument():
    """The mean loss of no rows is 0/0: refused in words, not NaN with a RuntimeWarning."""
    import warnings

    empty = np.zeros((0, 10), np.float32)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        for f, name in ((softmax_loss, "z"), (cross_entropy, "P"), (softmax_loss_grad, "z")):
            with pytest.raises(ValueError, match=f"^{name} holds no rows"):
                f(empty, np.zeros(0, np.intp))
        with pytest.raises(ValueError, match="^z holds no rows"):
            layer_grads(
                np.zeros((10, 4), np.float32),
                np.zeros(10, np.float32),
                np.zeros((0, 4), np.float32),
                np.zeros(0, np.intp),
            )
