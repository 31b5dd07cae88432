"""The SGD update against an independent reference and against torch.optim.SGD.

Every one-line slip in the update shows here as a mismatch: weight decay with the wrong sign or on
the bias, a sample dropped, momentum or the learning rate ignored, a frozen bias.
"""

import numpy as np
import pytest
from conftest import optional_peer
from torch_reference import SGD, recorded, sgd_case, sgd_problem, torch_sgd

from mnist_softmax.config import make_config
from mnist_softmax.sgd import momentum_update_, sgd_step
from mnist_softmax.train import layer_step, train_epoch

LR, MOMENTUM, WD, BATCH = 0.3, 0.9, 0.05, 16


def reference_epoch(W, b, vW, vb, X, y, order, lr, momentum, wd, batch):
    """Plain momentum SGD on the mean softmax loss + wd/2·||W||², written out independently."""
    for s in range(0, len(order), batch):
        x, t = X[order[s : s + batch]], y[order[s : s + batch]]
        z = x @ W.T + b
        p = np.exp(z - z.max(axis=1, keepdims=True))
        p /= p.sum(axis=1, keepdims=True)
        p[np.arange(len(t)), t] -= 1.0  # dL/dz = (P - Y) / B
        vW = momentum * vW + (p.T @ x) / len(t) + wd * W
        vb = momentum * vb + p.sum(axis=0) / len(t)
        W, b = W - lr * vW, b - lr * vb
    return W, b, vW, vb


def test_one_epoch_equals_an_independent_reference():
    X, y, W, b, vW, vb, order = sgd_problem()
    expected = reference_epoch(W, b, vW, vb, X, y, order, LR, MOMENTUM, WD, BATCH)
    velocity = (vW.copy(), vb.copy())
    W_, b_ = W.copy(), b.copy()
    with layer_step(W_, b_, velocity, MOMENTUM, WD) as step:
        loss, acc, steps = train_epoch(step, X, y, order, LR, BATCH)
    assert steps == -(-len(order) // BATCH)
    for got, want in zip((W_, b_, *velocity), expected, strict=True):
        np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-9)
    assert np.isfinite(loss) and 0 <= acc <= 1


def test_one_epoch_equals_torch_sgd_with_the_same_parameter_groups():
    X, y, W, b, _, _, order = sgd_case()
    velocity = (np.zeros_like(W), np.zeros_like(b))  # torch starts its momentum buffers at the first gradient
    with layer_step(W, b, velocity, SGD["momentum"], SGD["weight_decay"]) as step:
        train_epoch(step, X, y, order, SGD["lr"], SGD["batch"])
    references = [recorded("sgd")]
    torch = optional_peer("torch")
    if torch is not None:
        references.append(torch_sgd(torch))
    for ref in references:
        np.testing.assert_allclose(W, ref["W"], rtol=1e-6, atol=1e-9)
        np.testing.assert_allclose(b, ref["b"], rtol=1e-6, atol=1e-9)
        np.testing.assert_allclose(velocity[0], ref["vW"], rtol=1e-6, atol=1e-9)
        np.testing.assert_allclose(velocity[1], ref["vb"], rtol=1e-6, atol=1e-9)


def test_momentum_update_by_hand_and_gradient_untouched():
    p, g, v = np.array([1.0, -2.0]), np.array([0.5, 0.25]), np.array([0.1, 0.0])
    g_copy = g.copy()
    momentum_update_(p, g, v, lr=0.1, momentum=0.5, weight_decay=0.2)
    # v = 0.5·v + g + 0.2·p = [0.05 + 0.5 + 0.2, 0 + 0.25 - 0.4]; p = p - 0.1·v
    np.testing.assert_allclose(v, [0.75, -0.15], rtol=1e-15)
    np.testing.assert_allclose(p, [0.925, -1.985], rtol=1e-15)
    np.testing.assert_array_equal(g, g_copy)


def test_sgd_step_returns_the_loss_and_logits_before_its_update():
    X, y, W, b, vW, vb, _ = sgd_problem(2, n=8)
    z_before = X @ W.T + b
    loss, z = sgd_step(W, b, (vW, vb), X, y, LR, MOMENTUM, WD)
    np.testing.assert_allclose(z, z_before, rtol=1e-12)
    zs = z_before - z_before.max(1, keepdims=True)
    assert loss == pytest.approx(float(np.mean(np.log(np.exp(zs).sum(1)) - zs[np.arange(8), y])), rel=1e-12)
    assert not np.allclose(X @ W.T + b, z_before)  # the weights did move


def test_fit_follows_the_schedule_and_the_batch_order_stream():
    from test_train import synthetic_mnist

    from mnist_softmax.streams import rng_streams
    from mnist_softmax.train import fit, prepare

    data = synthetic_mnist(700, 100)
    cfg = make_config(
        {"epochs": 3, "val_size": 100, "batch_size": 64, "lr": 0.2, "schedule": "step", "lr_step_epochs": 1}
        | {"lr_gamma": 0.3, "momentum": 0.8, "weight_decay": 0.01, "seed": 9}
    )
    result = fit(cfg, data)
    streams = rng_streams(cfg.seed)
    _, (X, y), _, _ = prepare(cfg, data, streams)
    X = X.astype(np.float64)
    W, b = np.zeros((10, X.shape[1])), np.zeros(10)
    vW, vb = np.zeros_like(W), np.zeros_like(b)
    for epoch, lr in enumerate([0.2, 0.06, 0.018]):
        order = streams["order"].permutation(len(X))
        W, b, vW, vb = reference_epoch(W, b, vW, vb, X, y, order, lr, 0.8, 0.01, 64)
        assert result.history[epoch]["lr"] == pytest.approx(lr)
    np.testing.assert_allclose(result.model.W, W, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(result.model.b, b, rtol=1e-4, atol=1e-5)
