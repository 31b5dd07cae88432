"""Speed and memory figures for mnist-softmax, printed as a table (no assertions: machines are noisy).

    python benchmarks/bench.py [--data-dir data] [--mirror URL_OR_DIR] [--repeat 3]

Measures, with the data already downloaded:
  - the training loop alone: samples per second of train_epoch on the default recipe (median epoch);
  - whole processes (wall seconds, median of --repeat, and peak RSS): `train` (default config),
    `eval` of the checkpoint it wrote, `predict` on one PNG image, `train --features conv`
    with a cold and with a warm feature cache, and `train --features cnn` once;
  - conv feature extraction alone for all 70,000 images;
  - the peak RSS of the helper process that draws `train`'s figures (plots.Painter).
The processes run in a temporary folder (your runs/ is not touched), reading the data through
symlinks so that the conv feature cache starts empty.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from results import machine, reference_speeds, write_section  # this folder is on sys.path


def run_process(args: list[str], cwd: str | None = None) -> tuple[float, float]:
    """(wall seconds, peak RSS in MB) of a child process; raises if it fails."""
    t = time.perf_counter()
    proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, cwd=cwd)
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - t
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"{' '.join(args)} failed:\n{proc.stderr.read().decode()}")
    return wall, usage.ru_maxrss / 1024


def bench_loop(data_dir: str, mirrors: list[str]) -> dict:
    from mnist_softmax.config import Config
    from mnist_softmax.data import load_mnist
    from mnist_softmax.streams import rng_streams
    from mnist_softmax.train import layer_step, prepare, train_epoch

    t = time.perf_counter()
    mnist = load_mnist(data_dir, mirrors, quiet=True)
    load_s = time.perf_counter() - t
    cfg = Config()
    streams = rng_streams(cfg.seed)
    model, (X, y), _, _ = prepare(cfg, mnist, streams)
    rng = streams["order"]
    W, b = model.W, model.b
    velocity = (np.zeros_like(W), np.zeros_like(b))
    times = []
    with layer_step(W, b, velocity, cfg.momentum, cfg.weight_decay) as step:  # as fit() runs it
        for _ in range(cfg.epochs):
            t = time.perf_counter()
            train_epoch(step, X, y, rng.permutation(len(X)), cfg.lr, cfg.batch_size)
            times.append(time.perf_counter() - t)
    return {"load_s": load_s, "samples_per_s": len(X) / statistics.median(times), "n_train": len(X)}


def bench_conv_extraction(data_dir: str) -> float:
    """Seconds to extract the 64×7×7 conv features of all 70,000 images (front end fitted first)."""
    from mnist_softmax.config import load_config
    from mnist_softmax.data import load_mnist
    from mnist_softmax.features import CONV
    from mnist_softmax.streams import rng_streams

    mnist = load_mnist(data_dir, quiet=True)
    cfg = load_config("conv")
    params = CONV.fit(mnist.train_images[:55000], rng_streams(cfg.seed)["front_end"], cfg)
    images = np.concatenate([mnist.train_images, mnist.test_images])
    t = time.perf_counter()
    CONV.maps(images, params)
    return time.perf_counter() - t


def painter_rss_mb() -> float:
    """Peak RSS of the helper process that draws `train`'s figures, drawing a pixel run's two
    (measured in a child, whose only child is the helper)."""
    code = """
import pathlib, resource, sys, tempfile
import numpy as np
from mnist_softmax.plots import Painter
d = pathlib.Path(tempfile.mkdtemp())
history = [dict(epoch=e, lr=0.1, train_loss=1 / e, train_acc=0.9, val_loss=1 / e, val_acc=0.9) for e in range(1, 11)]
with Painter() as painter:
    painter.draw([("curves", d / "c.png", {"history": history, "test_acc": 0.92}),
                  ("pixel_weights", d / "w.png", {"rows": np.random.default_rng(0).normal(size=(10, 28, 28)),
                                                  "rare": np.zeros((28, 28), bool), "limit": 2.0})])
print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024)
"""
    return float(subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data-dir", default="data")
    ap.add_argument("--mirror", action="append", default=[])
    ap.add_argument("--repeat", type=int, default=3)
    a = ap.parse_args()
    machine_before = reference_speeds()

    cli = [sys.executable, "-m", "mnist_softmax"]
    # In a child, so this process stays small: a child's peak RSS includes its parent's at fork.
    run_process([*cli, "download", "--data-dir", a.data_dir, "-q", *(f"--mirror={m}" for m in a.mirror)])
    src = Path(a.data_dir).resolve()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp) / "data"
        data.mkdir()
        for f in src.iterdir():
            if f.is_file():
                (data / f.name).symlink_to(f)

        def repeat(args: list[str], n: int = a.repeat) -> list[tuple[float, float]]:
            return [run_process(args, cwd=tmp) for _ in range(n)]

        train = [*cli, "train", "--data-dir", str(data), "--quiet"]
        scores = []  # each default config's seed-0 run: test accuracy and loss, from its summary.json

        def score(label: str) -> None:
            summary = json.loads((Path(tmp) / "runs" / "latest" / "summary.json").read_text())
            scores.append((label, summary["test_accuracy"], summary["test_loss"]))

        rows.append(("whole `train` process", repeat(train)))
        score("pixels (configs/pixels.toml)")
        ckpt = f"{tmp}/runs/latest/model.npz"
        rows.append(("whole `eval` process", repeat([*cli, "eval", "--checkpoint", ckpt, "--data-dir", str(data)])))
        from PIL import Image

        digit = np.fromfile(src / "t10k-images-idx3-ubyte", np.uint8, 784, offset=16).reshape(28, 28)
        Image.fromarray(digit).save(f"{tmp}/digit.png")
        rows.append(
            ("whole `predict` process, one image", repeat([*cli, "predict", f"{tmp}/digit.png", "--checkpoint", ckpt]))
        )
        conv = [*train, "--features", "conv"]
        rows.append(("whole `train --features conv`, cold cache", repeat(conv, 1)))
        rows.append(("whole `train --features conv`, warm cache", repeat(conv)))
        score("conv (configs/conv.toml)")
        rows.append(("whole `train --features cnn` (configs/cnn.toml)", repeat([*train, "--features", "cnn"], 1)))
        score("cnn (configs/cnn.toml)")

    loop = bench_loop(a.data_dir, a.mirror)  # last: it holds the dataset in memory
    extraction_s = bench_conv_extraction(a.data_dir)
    lines = [
        "## Whole commands",
        "",
        f"`python benchmarks/bench.py --data-dir DATA --repeat {a.repeat}`, data already downloaded.",
        f"Machine: {machine()}; reference speeds {machine_before} at the start, {reference_speeds()} at the end.",
        "",
        "| measure | value |",
        "| --- | --- |",
        f"| load cached MNIST (verify + parse), s | {loop['load_s']:.3f} |",
        f"| pixel training loop, samples/s (median epoch) | {loop['samples_per_s']:,.0f} |",
        f"| conv feature extraction, 70,000 images, s | {extraction_s:.2f} |",
    ]
    for label, results in rows:
        walls, rss = zip(*results, strict=True)
        lines.append(f"| {label}, s (median of {len(walls)}) | {statistics.median(walls):.2f} |")
        lines.append(f"| {label}, peak RSS MiB | {max(rss):.0f} |")
    lines.append(f"| whole `train`: its figure helper process, peak RSS MiB | {painter_rss_mb():.0f} |")
    lines += [
        "",
        "The whole `train` runs above, seed 0, on the test set:",
        "",
        "| front end | test accuracy | test loss |",
    ]
    lines += ["| --- | --- | --- |", *(f"| {label} | {acc:.4f} | {loss:.4f} |" for label, acc, loss in scores)]
    print("\n".join(lines))
    write_section("bench", "\n".join(lines))


if __name__ == "__main__":
    main()
