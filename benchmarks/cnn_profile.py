"""Where a cnn training step's time goes: each layer's forward and backward rule timed alone.

    python benchmarks/cnn_profile.py --data-dir data [--batches 200] [--no-batch-norm]

One piece of 32 real training images (what one of the two threads takes through the network), with
the default recipe's network (batch norm; --no-batch-norm: the quick recipe's biases), its rules
called one by one as cnn.forward and cnn.backward call them, each timed over --batches repetitions
on one thread with a one-thread BLAS: milliseconds per piece and their share. Beside it, the parts
of a step outside the pieces (the distortion of 64 images, conv2's spectrum, the SGD update of
every parameter), and whole steps of 64 as training takes them (train_step on two threads). No
assertions: the table goes to RESULTS.md's "cnn-profile" section, and docs/cnn.md discusses it.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from results import machine, reference_speeds, write_section  # noqa: E402

from mnist_softmax import cnn, cnn_layers  # noqa: E402
from mnist_softmax.augment import Distortion, distort  # noqa: E402
from mnist_softmax.softmax import layer_grads  # noqa: E402


def timed(f, n: int) -> float:
    """Median milliseconds of f() over n calls, after 3."""
    for _ in range(3):
        f()
    times = []
    for _ in range(n):
        t = time.perf_counter()
        f()
        times.append(time.perf_counter() - t)
    return float(np.median(times)) * 1000


def stages(params: dict, images: np.ndarray, y: np.ndarray, n: int) -> list[tuple[str, float]]:
    """(stage, ms) of one piece through the network, forward then backward, rule by rule."""
    out: list[tuple[str, float]] = []

    def add(name: str, f):
        out.append((name, timed(f, n)))
        return f()

    act = "batch norm {} + ReLU" if "bn1_g" in params else "bias {} + ReLU"
    x = add("to_input (pixels standardised)", lambda: cnn.to_input(images))
    y1, cols1 = add("conv1 forward (im2col, 1 → 32)", lambda: cnn_layers.conv_forward(x, params["conv1_w"]))
    p1, arg1 = add("pool1 forward", lambda: cnn_layers.maxpool_forward(y1))
    a1, c1 = add(act.format(1) + " forward", lambda: cnn._activate(params, 1, p1, True))
    spectrum = cnn.conv2_spectrum(params, 28, 28)
    y2, X2 = add("conv2 forward (Fourier, 32 → 64)", lambda: cnn_layers.fourier_conv_forward(a1, spectrum))
    p2, arg2 = add("pool2 forward", lambda: cnn_layers.maxpool_forward(y2))
    a2, c2 = add(act.format(2) + " forward", lambda: cnn._activate(params, 2, p2, True))
    features = np.ascontiguousarray(a2.transpose(2, 3, 0, 1)).reshape(len(images), -1)
    top = add("softmax layer, forward and backward", lambda: layer_grads(params["W"], params["b"], features, y, 64))
    d_features = add("dL/d features (G·W)", lambda: top.G @ params["W"])
    da2 = d_features.reshape(len(images), 64, 7, 7).transpose(2, 3, 0, 1)
    grads: dict = {}
    dp2 = add(act.format(2) + " backward", lambda: cnn._deactivate(params, 2, a2, c2, da2, grads))
    dy2 = add("pool2 backward", lambda: cnn_layers.maxpool_backward(dp2, arg2))
    da1, _ = add("conv2 backward (Fourier: dx, dw)", lambda: cnn_layers.fourier_conv_backward(X2, spectrum, dy2))
    dp1 = add(act.format(1) + " backward", lambda: cnn._deactivate(params, 1, a1, c1, da1, grads))
    dy1 = add("pool1 backward", lambda: cnn_layers.maxpool_backward(dp1, arg1))
    add("conv1 backward (dw only)", lambda: cnn_layers.conv_backward(cols1, params["conv1_w"], dy1, input_grad=False))
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data-dir", default="data")
    ap.add_argument("--batches", type=int, default=200)
    ap.add_argument("--no-batch-norm", action="store_true")
    a = ap.parse_args()
    from concurrent.futures import ThreadPoolExecutor

    from threadpoolctl import threadpool_limits

    from mnist_softmax.data import load_mnist
    from mnist_softmax.sgd import momentum_update_

    before = reference_speeds()
    cnn.keep_freed_memory()  # as training does: freed blocks reused, not faulted in again at every call
    mnist = load_mnist(a.data_dir, quiet=True)
    params = cnn.init_params(np.random.default_rng(0), batch_norm=not a.no_batch_norm)
    images, y = mnist.train_images[:64], mnist.train_labels[:64].astype(np.intp)
    with threadpool_limits(1, user_api="blas"):
        piece = stages(params, images[: cnn.PIECE], y[: cnn.PIECE], a.batches)
        rng = np.random.default_rng(0)
        d = Distortion(10, 0.1, 5, 2)
        velocities = {k: np.zeros_like(v) for k, v in params.items()}
        grads = {k: np.zeros_like(v) for k, v in params.items()}

        def update():
            for name in cnn.trainable(params):
                momentum_update_(params[name], grads[name], velocities[name], 0.0, 0.9, 0.0)

        outside = [
            ("distortion of 64 images (augment.distort)", timed(lambda: distort(images, d, rng), a.batches)),
            ("conv2's spectrum (once a step)", timed(lambda: cnn.conv2_spectrum(params, 28, 28), a.batches)),
            ("SGD update of every parameter", timed(update, a.batches)),
        ]
        x = cnn.to_input(images)
        with ThreadPoolExecutor(2) as pool:
            step = timed(lambda: cnn.train_step(params, velocities, x, y, 0.0, 0.9, 0.0, pool), a.batches)
    total = sum(ms for _, ms in piece)
    recipe = "quick recipe" if a.no_batch_norm else "default recipe"
    lines = [
        "## Where a cnn training step's time goes",
        "",
        f"`python benchmarks/cnn_profile.py --batches {a.batches}{' --no-batch-norm' if a.no_batch_norm else ''}`: "
        f"one piece of {cnn.PIECE} training images through the {recipe}'s network, each rule timed alone on one "
        "thread with a one-thread BLAS (median ms of "
        f"{a.batches}); then the parts of a step outside the pieces, and whole steps of 64 on two threads.",
        f"Machine: {machine()}; reference speeds {before} at the start, {reference_speeds()} at the end.",
        "",
        "| stage (one piece of 32) | ms | share |",
        "| --- | --- | --- |",
        *[f"| {name} | {ms:.3f} | {ms / total:.0%} |" for name, ms in piece],
        f"| **the piece, forward and backward** | **{total:.2f}** | 100% |",
        "",
        "| outside the pieces (a step of 64) | ms |",
        "| --- | --- |",
        *[f"| {name} | {ms:.3f} |" for name, ms in outside],
        f"| **a whole step of 64 (train_step, two threads, the distortion not included)** | **{step:.2f}** |",
        "",
        f"An epoch of 55,000 images is {55_000 // 64 + 1} steps: {(55_000 / 64) * (step + outside[0][1]) / 1000:.1f} s "
        "at these figures, distortion included.",
    ]
    print("\n".join(lines))
    write_section("cnn-profile", "\n".join(lines))


if __name__ == "__main__":
    main()
