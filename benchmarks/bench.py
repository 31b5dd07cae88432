"""Speed and memory figures for mnist-softmax, printed as a table (no assertions: machines are noisy).

    python benchmarks/bench.py [--data-dir data] [--mirror URL_OR_DIR] [--repeat 3]

Measures, with the data already downloaded:
  - the training loop alone: samples per second of train_epoch on the default recipe (median epoch);
  - the whole `mnist-softmax train` process (default config): wall seconds (median) and peak RSS.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time

import numpy as np


def run_process(args: list[str]) -> tuple[float, float]:
    """(wall seconds, peak RSS in MB) of a child process; raises if it fails."""
    t = time.perf_counter()
    proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - t
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"{' '.join(args)} failed:\n{proc.stderr.read().decode()}")
    return wall, usage.ru_maxrss / 1024


def bench_loop(data_dir: str, mirrors: list[str]) -> dict:
    from mnist_softmax.config import Config
    from mnist_softmax.data import load_mnist
    from mnist_softmax.train import prepare, train_epoch

    t = time.perf_counter()
    mnist = load_mnist(data_dir, mirrors, quiet=True)
    load_s = time.perf_counter() - t
    cfg = Config()
    rng = np.random.default_rng(cfg.seed)
    model, (X, y), _, _ = prepare(cfg, mnist, rng)
    W, b = model.W, model.b
    velocity = (np.zeros_like(W), np.zeros_like(b))
    times = []
    for _ in range(cfg.epochs):
        t = time.perf_counter()
        train_epoch(W, b, velocity, X, y, cfg.lr, cfg, rng)
        times.append(time.perf_counter() - t)
    return {"load_s": load_s, "samples_per_s": len(X) / statistics.median(times), "n_train": len(X)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data-dir", default="data")
    ap.add_argument("--mirror", action="append", default=[])
    ap.add_argument("--repeat", type=int, default=3)
    a = ap.parse_args()

    loop = bench_loop(a.data_dir, a.mirror)
    cli = [sys.executable, "-m", "mnist_softmax", "train", "--data-dir", a.data_dir, "--quiet"]
    with tempfile.TemporaryDirectory() as tmp:
        runs = [run_process([*cli, "--out", f"{tmp}/r{i}"]) for i in range(a.repeat)]
    walls, rss = zip(*runs, strict=True)

    print(f"machine: {os.cpu_count()} cores, numpy {np.__version__}, python {sys.version.split()[0]}")
    print(f"{'measure':<42}{'value':>14}")
    print(f"{'load cached MNIST (verify + parse), s':<42}{loop['load_s']:>14.3f}")
    print(f"{'training loop, samples/s (median epoch)':<42}{loop['samples_per_s']:>14,.0f}")
    label = f"whole `train` process, s (median of {a.repeat})"
    print(f"{label:<42}{statistics.median(walls):>14.2f}")
    print(f"{'whole `train` process, peak RSS MB':<42}{max(rss):>14.0f}")


if __name__ == "__main__":
    main()
