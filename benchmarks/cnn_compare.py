"""The `cnn` network in NumPy (mnist_softmax.cnn) against PyTorch on the identical network and recipe.

    pip install -e '.[bench]'          # torch==2.13.0 (CPU), never a runtime dependency
    python benchmarks/cnn_compare.py --data-dir data [--rounds 3] [--epochs 1] [--steps 0] [--max-shift 0]
        [--batch-norm --rotate 10 --zoom 0.1 --shear 5 --max-shift 2]     # the default recipe's network

Both contenders train conv 5×5 (32) -> max pool -> conv 5×5 (64) -> max pool -> 10×3136 softmax
layer from the same initial weights (cnn.init_params, --seed), on the same 55,000 training images
(the project's seeded split), in the same batch order, with the same per-step learning rates
(train.one_cycle), momentum, and weight decay on the kernels and W only (PyTorch: parameter groups),
and the same random shifts if --max-shift > 0. With --batch-norm, both have batch norm after each
conv's pooling, before its ReLU, each piece of 32 images normalised by its own statistics in
training (PyTorch: F.batch_norm on each piece, running statistics with momentum 0.1). With
--rotate, --zoom or --shear, each batch's images are distorted by the same random affine maps
(augment.random_affine, seeded alike), each tool with its own means: ours augment.warp in NumPy,
PyTorch's affine_grid and grid_sample (bilinear, zeros outside), then the same standardisation.
PyTorch uses its default 2 threads; ours splits each batch over two threads with a one-thread BLAS
each.

Each contender runs in its own process, in alternating order for --rounds rounds; printed: median
seconds per epoch (training only; with --steps N only the first N steps are timed, scaled to a whole
epoch), the fastest run of each, images/s, achieved GFLOP/s (flops_per_image below: forward, and
backward without the input image's gradient), test accuracy after the last epoch, peak RSS, and a
large float32 sgemm's GFLOP/s (BLAS with 2 threads and with 1) before and after the contenders in
the same run. Each contender's process also times a 2000² sgemm (2 threads) just before it trains:
on a shared machine, a low figure there marks a run slowed by other work. GFLOP/s are given two
ways: the network's work counted as direct convolutions (flops_per_image, the same for both), and
for mnist-softmax the operations it performs (flops_performed: its conv2 goes through the Fourier
domain, about a quarter of the direct work). No assertions.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time

import numpy as np
from results import machine, matmul_gflops, write_section  # this folder is on sys.path when run as a script

from mnist_softmax.augment import random_affine

CONTENDERS = ("mnist-softmax", "pytorch")
VAL_SIZE = 5000


def flops_per_image(c1: int = 32, c2: int = 64, k: int = 5, n_classes: int = 10) -> int:
    """Multiply-adds × 2 of one training image, the convolutions counted as direct ones: forward,
    then backward (weight gradients of every layer, input gradients of all but the first)."""
    conv1 = 2 * 28 * 28 * c1 * k * k
    conv2 = 2 * 14 * 14 * c2 * c1 * k * k
    fc = 2 * c2 * 7 * 7 * n_classes
    return conv1 + conv2 + fc + (conv1 + 2 * conv2 + 2 * fc)


def flops_performed(batch: int, piece: int, c1: int = 32, c2: int = 64, k: int = 5, n_classes: int = 10) -> float:
    """Multiply-adds × 2 that mnist_softmax.cnn performs per training image: conv1 direct (im2col),
    conv2 through the Fourier domain (cnn.fourier_conv_forward/backward): four transforms (x and dy
    to spectra, y and dx back, each one axis at a time), three per-frequency products (y, dx, the
    cross-spectrum), the kernel's spectrum once per batch and its gradient's taps once per piece."""
    side = 14
    grid, half = side + 2, (side + 2) // 2 + 1  # the Fourier grid's rows; frequencies per row
    freqs = grid * half
    # One transform of one channel of one image: along the rows, (2·grid, side) @ (side, side);
    # then along the columns, for each of the grid's rows, (2·half, 2·side) @ (2·side, 1). The
    # inverse costs the same. Each channel of conv2's input and output is transformed twice
    # (x and dx; y and dy).
    one = 2 * (2 * grid * side * side + grid * 2 * half * 2 * side)
    transforms = 2 * (c1 + c2) * one
    products = 3 * 8 * freqs * c1 * c2
    per_weights = 4 * freqs * k * k * c1 * c2 * (-(-batch // piece) + 1) / batch
    conv1 = 2 * 28 * 28 * c1 * k * k
    fc = 2 * c2 * 7 * 7 * n_classes
    return 2 * conv1 + transforms + products + per_weights + 3 * fc


def _data(data_dir: str, seed: int):
    from mnist_softmax.data import load_mnist, split_indices

    mnist = load_mnist(data_dir, quiet=True)
    train_idx, _ = split_indices(len(mnist.train_images), VAL_SIZE, np.random.default_rng(seed))
    y = mnist.train_labels.astype(np.intp)
    return mnist.train_images[train_idx], y[train_idx], mnist.test_images, mnist.test_labels.astype(np.intp)


def _recipe(a, n: int) -> tuple[np.ndarray, list[np.ndarray]]:
    """Per-step learning rates of the whole run and each epoch's batch order, seeded."""
    from mnist_softmax.train import one_cycle

    steps = -(-n // a.batch_size)
    rng = np.random.default_rng(a.seed + 1)
    orders = [rng.permutation(n)[: a.steps * a.batch_size or None] for _ in range(a.epochs)]
    return one_cycle(a.epochs * steps, a.lr), orders


def work_ours(a) -> dict:
    from mnist_softmax import cnn
    from mnist_softmax.train import train_epoch

    X, y, X_test, y_test = _data(a.data_dir, a.seed)
    lrs, orders = _recipe(a, len(X))
    params = cnn.init_params(np.random.default_rng(a.seed), batch_norm=a.batch_norm)
    velocities = {k: np.zeros_like(v) for k, v in params.items()}
    shift_rng = np.random.default_rng(a.seed + 2)
    distortion = _distortion(a)
    steps = len(lrs) // a.epochs
    epochs = []
    per_epoch = len(X) / len(orders[0])  # --steps: time part of an epoch, report it scaled up
    for e, order in enumerate(orders):
        epoch_lrs = lrs[e * steps :][: -(-len(order) // a.batch_size)]
        t = time.perf_counter()
        with cnn.training_step(
            params, velocities, a.momentum, a.weight_decay, shift_rng, a.max_shift, distortion
        ) as step:
            loss, acc, _ = train_epoch(step, X, y, order, epoch_lrs, a.batch_size)
        seconds = (time.perf_counter() - t) * per_epoch
        F = cnn.maps(X_test, params).reshape(len(X_test), -1)
        test_acc = float(((F @ params["W"].T + params["b"]).argmax(1) == y_test).mean())
        epochs.append({"seconds": seconds, "train_loss": loss, "train_acc": acc, "test_acc": test_acc})
    return {"epochs": epochs}


def work_torch(a) -> dict:
    import torch
    import torch.nn.functional as F

    from mnist_softmax import cnn

    X, y, X_test, y_test = _data(a.data_dir, a.seed)
    lrs, orders = _recipe(a, len(X))
    init = cnn.init_params(np.random.default_rng(a.seed), batch_norm=a.batch_norm)
    p = {k: torch.from_numpy(v).requires_grad_(not k.endswith(cnn.RUNNING)) for k, v in init.items()}
    trained = cnn.trainable(init)
    groups = [
        {"params": [p[k] for k in cnn.DECAYED], "weight_decay": a.weight_decay},
        {"params": [p[k] for k in trained if k not in cnn.DECAYED], "weight_decay": 0.0},
    ]
    opt = torch.optim.SGD(groups, lr=a.lr, momentum=a.momentum)
    training = True

    def layer(h, k):  # conv -> pool -> + bias or batch norm -> ReLU, as cnn.forward
        if a.batch_norm:  # in training, each piece of the batch by its own statistics, as ours
            h = F.max_pool2d(F.conv2d(h, p[f"conv{k}_w"], padding=2), 2)
            bn = (p[f"bn{k}_mean"], p[f"bn{k}_var"], p[f"bn{k}_g"], p[f"bn{k}_b"], training, 0.1, 1e-5)
            pieces = cnn._pieces(h.shape[0]) if training else [slice(None)]
            return F.relu(torch.cat([F.batch_norm(h[s], *bn) for s in pieces]))
        return F.max_pool2d(F.relu(F.conv2d(h, p[f"conv{k}_w"], p[f"conv{k}_b"], padding=2)), 2)

    def net(x):
        return layer(layer(x, 1), 2).flatten(1) @ p["W"].T + p["b"]

    def tensor(images):  # the same input as cnn.to_input, as (n, 1, 28, 28)
        return torch.from_numpy(np.ascontiguousarray(cnn.to_input(images)[..., 0].transpose(2, 0, 1))[:, None])

    distortion = _distortion(a)
    raw = torch.from_numpy(X.astype(np.float32))[:, None]  # pixels 0..255, for grid_sample's zeros outside

    def distorted(idx):
        A, t = random_affine(len(idx), distortion, shift_rng)
        grid = F.affine_grid(torch.from_numpy(_theta(A, t, 28)), (len(idx), 1, 28, 28), align_corners=True)
        images = F.grid_sample(raw[idx], grid, mode="bilinear", padding_mode="zeros", align_corners=True)
        return (images / 255 - cnn.PIXEL_MEAN) / cnn.PIXEL_STD

    Xt, yt, shift_rng = tensor(X), torch.from_numpy(y), np.random.default_rng(a.seed + 2)
    epochs, step = [], 0
    per_epoch = len(X) / len(orders[0])
    for e, order in enumerate(orders):
        step = e * (len(lrs) // a.epochs)
        t = time.perf_counter()
        total, correct = 0.0, 0
        for s in range(0, len(order), a.batch_size):
            idx = order[s : s + a.batch_size]
            if distortion is not None:
                xb = distorted(torch.from_numpy(idx))
            else:
                xb = tensor(cnn.shift_images(X[idx], a.max_shift, shift_rng)) if a.max_shift else Xt[idx]
            for g in opt.param_groups:
                g["lr"] = float(lrs[step])
            z = net(xb)
            loss = F.cross_entropy(z, yt[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            step += 1
            total += float(loss) * len(idx)
            correct += int((z.argmax(1) == yt[idx]).sum())
        seconds = (time.perf_counter() - t) * per_epoch
        training = False
        with torch.no_grad():
            z_test = torch.cat([net(tensor(X_test[i : i + 1000])) for i in range(0, len(X_test), 1000)])
            test_acc = float((z_test.argmax(1).numpy() == y_test).mean())
        epochs.append({"seconds": seconds, "train_loss": total / len(order), "train_acc": correct / len(order),
                       "test_acc": test_acc, "threads": torch.get_num_threads()})  # fmt: skip
        training = True
    return {"epochs": epochs}


def _distortion(a):
    from mnist_softmax.augment import Distortion

    return Distortion(a.rotate, a.zoom, a.shear, a.max_shift) if a.rotate or a.zoom or a.shear else None


def _theta(A: np.ndarray, t: np.ndarray, size: int) -> np.ndarray:
    """augment's maps (A, t), in (row, column) pixels about the centre, as affine_grid's θ (n, 2, 3):
    output (x, y) in [-1, 1] (align_corners) -> the input point it reads, A⁻¹(p − c − t) + c."""
    c = (size - 1) / 2
    swap = np.array([[0, 1], [1, 0]])
    inv = swap @ np.linalg.inv(A) @ swap  # in (x, y) = (column, row) terms
    theta = np.empty((len(A), 2, 3), np.float32)
    theta[:, :, :2] = inv
    theta[:, :, 2] = -np.einsum("nij,nj->ni", inv, t[:, ::-1] / c)
    return theta


WORKERS = {"mnist-softmax": work_ours, "pytorch": work_torch}


def run_worker(name: str, argv: list[str]) -> dict:
    """One contender in a child process: its result and its own peak RSS."""
    out = subprocess.run(
        [sys.executable, __file__, "--worker", name, *argv], capture_output=True, text=True, check=False
    )
    if out.returncode:
        raise SystemExit(f"{name} failed:\n{out.stderr}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def sgemm_reference() -> str:
    from threadpoolctl import threadpool_limits

    two = matmul_gflops(4000, reps=3)
    with threadpool_limits(1, user_api="blas"):
        one = matmul_gflops(2000, reps=3)
    return f"sgemm {two:.0f} GFLOP/s (4000², 2 threads), {one:.0f} GFLOP/s (2000², 1 thread)"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data-dir", default="data")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--contenders", default=",".join(CONTENDERS))
    ap.add_argument("--epochs", type=int, default=1, help="epochs per run (one-cycle over all of them)")
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--lr", type=float, default=0.05, help="one-cycle peak")
    ap.add_argument("--momentum", type=float, default=0.9)
    ap.add_argument("--weight-decay", type=float, default=5e-4)
    ap.add_argument("--max-shift", type=int, default=0)
    ap.add_argument("--batch-norm", action="store_true", help="batch norm after each conv's pooling")
    ap.add_argument("--rotate", type=float, default=0.0, help="random affine distortions: degrees")
    ap.add_argument("--zoom", type=float, default=0.0, help="... scale, as a fraction")
    ap.add_argument("--shear", type=float, default=0.0, help="... degrees")
    ap.add_argument("--steps", type=int, default=0, help="time only this many steps of each epoch (0: all)")
    ap.add_argument("--seed", type=int, default=0, help="split, initial weights, batch order, shifts")
    ap.add_argument("--worker", choices=CONTENDERS, help=argparse.SUPPRESS)
    a = ap.parse_args()
    skip = ("worker", "rounds", "contenders", "batch_norm")
    argv = [f"--{k.replace('_', '-')}={v}" for k, v in vars(a).items() if k not in skip]
    argv += ["--batch-norm"] * a.batch_norm

    if a.worker:  # child: train, report JSON with its own peak RSS
        import resource

        sgemm = matmul_gflops(2000, reps=3)  # this run's reference, just before it
        result = WORKERS[a.worker](a)
        result["sgemm"] = sgemm
        result["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        print(json.dumps(result))
        return

    names = a.contenders.split(",")
    before = sgemm_reference()
    print(f"before: {before}", flush=True)
    results: dict[str, list[dict]] = {name: [] for name in names}
    for r in range(a.rounds):
        for name in names if r % 2 == 0 else names[::-1]:  # A B, then B A, ...
            res = run_worker(name, argv)
            results[name].append(res)
            per_epoch = " ".join(f"{e['seconds']:.1f}s/{e['test_acc']:.4f}" for e in res["epochs"])
            print(
                f"round {r + 1}: {name:13s} sgemm {res['sgemm']:3.0f} GFLOP/s; epochs (s/test acc) {per_epoch}",
                flush=True,
            )
    after = sgemm_reference()
    print(f"after:  {after}")

    from mnist_softmax.cnn import PIECE

    fpi = flops_per_image()
    done = flops_performed(a.batch_size, min(PIECE, a.batch_size))
    lines = [
        "## The cnn network against PyTorch",
        "",
        f"`python benchmarks/cnn_compare.py --data-dir DATA --rounds {a.rounds} --epochs {a.epochs} --steps {a.steps}"
        f" --max-shift {a.max_shift}"
        + (" --batch-norm" if a.batch_norm else "")
        + (f" --rotate {a.rotate:g} --zoom {a.zoom:g} --shear {a.shear:g}" if _distortion(a) else "")
        + "`: the identical network, initial weights, batch order and per-step learning"
        f" rates; {a.epochs} epoch(s) of 55,000 images, batch {a.batch_size}, one-cycle to lr {a.lr}; each tool in"
        f" its own process, medians of {a.rounds} alternating rounds"
        + (f", the first {a.steps} steps of each epoch timed and scaled to the whole epoch" if a.steps else "")
        + f"; {fpi / 1e6:.1f} MFLOP per training image counted as direct convolutions (GFLOP/s column);"
        f" mnist-softmax's conv2 goes through the Fourier domain and performs {done / 1e6:.1f} MFLOP per"
        " image instead (performed GFLOP/s; PyTorch's own algorithm is not counted).",
        f"Machine: {machine()}; {before} before, {after} after.",
        "",
        "| tool | s/epoch | images/s | GFLOP/s | performed GFLOP/s | final test acc | peak RSS MiB | time ÷ pytorch"
        " | fastest: s, ÷ |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    med = {k: statistics.median(e["seconds"] for r in v for e in r["epochs"]) for k, v in results.items()}
    best = {k: min(e["seconds"] for r in v for e in r["epochs"]) for k, v in results.items()}
    for name, runs in results.items():
        ips = 55_000 / med[name]
        ratio = f"{med[name] / med['pytorch']:.2f}" if "pytorch" in med else "-"
        fastest = f"{best[name]:.2f}, " + (f"{best[name] / best['pytorch']:.2f}" if "pytorch" in best else "-")
        lines.append(
            f"| {name} | {med[name]:.2f} | {ips:,.0f} | {ips * fpi / 1e9:.0f} | "
            + (f"{ips * done / 1e9:.0f} | " if name == "mnist-softmax" else "- | ")
            + f"{statistics.median(r['epochs'][-1]['test_acc'] for r in runs):.4f} | "
            f"{max(r['peak_rss_mb'] for r in runs):.0f} | {ratio} | {fastest} |"
        )
    print("\n".join(lines))
    write_section("cnn", "\n".join(lines))


if __name__ == "__main__":
    main()
