"""Accuracy of `predict`'s normalisation on MNIST test digits remade as users' images, and its speed.

    python benchmarks/userstyle_accuracy.py --checkpoint A.npz [--checkpoint B.npz ...] [--n 1000] [--seed 7]

For n random test digits, prints each model's accuracy on the digits themselves, on the digits saved
as PNGs (pass-through), and on each user-style remake from tests/userstyle.py, all read back through
images.to_mnist exactly as `mnist-softmax predict` does: the accuracy, its share of the same model's
accuracy on the same digits untouched, and how many of the images were refused ("no digit found").
Then the images that hold no digit (tests/userstyle.py NEGATIVES), n/4 of each, and the share
refused. Last, the speed of a folder of n user-style images (every style in turn): Pillow decoding
them, predict's pipeline (to_mnist_many) then classify in one process and on worker processes, and
the whole `predict` command in a process of its own, held to one CPU and given all of them (as a user
runs it: the process starts, loads the checkpoint, reads the folder); each the median of --rounds
timings. No assertions: the tests hold the bounds.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict
from pathlib import Path

import numpy as np
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from results import machine, reference_speeds, write_section  # noqa: E402  (this folder is on sys.path)
from userstyle import MAKERS, NEGATIVES  # noqa: E402

from mnist_softmax.checkpoint import load_checkpoint  # noqa: E402
from mnist_softmax.config import load_config  # noqa: E402
from mnist_softmax.data import load_mnist  # noqa: E402
from mnist_softmax.images import ImageError  # noqa: E402
from mnist_softmax.model import classify  # noqa: E402
from mnist_softmax.predict import to_mnist_many  # noqa: E402


def _digits(results, n: int):
    """Prepared-or-error results -> (digits (k, 28, 28), kept indices (k,), refused count)."""
    digits, kept = [], []
    for i, r in enumerate(results):
        if not isinstance(r, ImageError):
            digits.append(r.digit)
            kept.append(i)
    return np.asarray(digits).reshape(-1, 28, 28), np.asarray(kept, int), n - len(kept)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--checkpoint", action="append", help="repeatable [default: runs/latest/model.npz]")
    ap.add_argument("--data-dir", default="data")
    ap.add_argument("--n", type=int, default=1000)
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--rounds", type=int, default=3, help="times each way of reading the folder is timed")
    a = ap.parse_args()
    before = reference_speeds()
    lines: list[str] = []

    def emit(text: str = "") -> None:
        print(text)
        lines.extend(text.split("\n"))

    mnist = load_mnist(a.data_dir, quiet=True)
    paths = a.checkpoint or ["runs/latest/model.npz"]
    checkpoints = [load_checkpoint(p) for p in paths]
    models = [c.model for c in checkpoints]
    rng = np.random.default_rng(a.seed)
    idx = rng.choice(len(mnist.test_labels), a.n, replace=False)
    labels = mnist.test_labels[idx]
    untouched = [float(np.mean(classify(m, mnist.test_images[idx]).argmax(1) == labels)) for m in models]

    def row(name: str, results, ms: float | None) -> str:
        digits, kept, refused = _digits(results, a.n)
        cells = []
        for m, base in zip(models, untouched, strict=True):
            right = int(np.sum(classify(m, digits).argmax(1) == labels[kept])) if len(kept) else 0
            cells.append(f"{right / a.n:.4f} ({right / a.n / base:.1%})")
        time_cell = f"{ms:.1f}" if ms is not None else ""
        return f"| {name:<34} | " + " | ".join(cells) + f" | {refused} | {time_cell} |"

    def save_png(digit, folder, name, rng):
        path = folder / f"{name}.png"
        Image.fromarray(digit).save(path)
        return path

    emit(f"{a.n} MNIST test digits (seed {a.seed}); accuracy (share of the untouched digits' accuracy)\n")
    names = [describe(c.config) for c in checkpoints]
    emit("| images | " + " | ".join(names) + " | refused | ms per image |")
    emit("| --- |" + " --- |" * (len(models) + 2))
    emit(f"| {'the test digits themselves':<34} | " + " | ".join(f"{u:.4f}" for u in untouched) + " | | |")
    with tempfile.TemporaryDirectory() as tmp:
        for style, make in {"MNIST digits saved as PNG": save_png, **MAKERS}.items():
            files = [make(mnist.test_images[i], Path(tmp), f"{style[:4]}{i}", rng) for i in idx]
            t = time.perf_counter()
            results = list(to_mnist_many(files, workers=1))
            ms = (time.perf_counter() - t) / a.n * 1000
            emit(row(style, results, ms))
            for f in files:
                f.unlink()

        emit("\nImages that hold no digit: refused with `no digit found`\n")
        emit("| images | refused | ms per image |")
        emit("| --- | --- | --- |")
        total = refused_all = 0
        n_neg = max(1, a.n // 4)
        for style, make in NEGATIVES.items():
            files = [make(Path(tmp), f"neg{k}", rng) for k in range(n_neg)]
            t = time.perf_counter()
            results = list(to_mnist_many(files, workers=1))
            ms = (time.perf_counter() - t) / n_neg * 1000
            refused = sum(isinstance(r, ImageError) and "no digit found" in str(r) for r in results)
            total, refused_all = total + n_neg, refused_all + refused
            emit(f"| {style:<34} | {refused}/{n_neg} | {ms:.1f} |")
            for f in files:
                f.unlink()
        emit(f"| {'all':<34} | {refused_all}/{total} ({refused_all / total:.1%}) | |")

        folder = Path(tmp) / "folder"
        folder.mkdir()
        makers = list(MAKERS.values())
        files = [makers[k % len(makers)](mnist.test_images[i], folder, f"{k:05d}", rng) for k, i in enumerate(idx)]
        cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
        emit(
            f"\nSpeed: a folder of the {a.n} images above, every style in turn ({len(makers)} styles, "
            f"{_mean_pixels(files) / 1000:.0f} k pixels on average), {cpus} CPUs; each way timed {a.rounds} times, "
            "the median shown. Decoding is Pillow's alone (open and load); to_mnist_many is predict's "
            "pipeline, then classify with the first checkpoint, in this process; the whole command runs in a "
            "process of its own (started, checkpoint loaded, folder read), held to one CPU or given all.\n"
        )
        emit("| how | ms per image | images/s | ÷ decoding | accuracy |")
        emit("| --- | --- | --- | --- | --- |")
        decode = _median_seconds(lambda: _decode_all(files), a.rounds)
        emit(f"| Pillow decodes the files | {decode / a.n * 1000:.2f} | {a.n / decode:.0f} | 1.00 | |")
        single = None
        for how, workers in (("to_mnist_many, one process", 1), (f"to_mnist_many, {cpus} worker processes", cpus)):
            right = []

            def read_and_classify(workers=workers, right=right):
                digits, kept, _ = _digits(list(to_mnist_many(files, workers=workers)), a.n)
                right[:] = [int(np.sum(classify(models[0], digits).argmax(1) == labels[kept]))]

            s = _median_seconds(read_and_classify, a.rounds)
            single = single or s
            faster = f"; {single / s:.2f}× one process" if workers > 1 else ""
            emit(f"| {how} | {s / a.n * 1000:.2f} | {a.n / s:.0f} | {s / decode:.2f}{faster} | {right[0] / a.n:.4f} |")

        # The whole command, as a user runs it: a process that loads the checkpoint and classifies the
        # folder, on one CPU (it then reads in its own process) and on all of them (worker processes).
        cmd = [sys.executable, "-m", "mnist_softmax", "predict", str(folder), "--checkpoint", paths[0], "--json"]
        done = None
        one_cpu = None
        ways = [(f"{cpus} CPUs", None)]
        if hasattr(os, "sched_setaffinity") and cpus > 1:
            ways.insert(0, ("1 CPU", {min(os.sched_getaffinity(0))}))
        for label, allowed in ways:

            def whole(allowed=allowed):
                nonlocal done
                pin = (lambda: os.sched_setaffinity(0, allowed)) if allowed else None
                done = subprocess.run(cmd, capture_output=True, text=True, preexec_fn=pin)

            s = _median_seconds(whole, a.rounds)
            one_cpu = one_cpu or s
            faster = f"; {one_cpu / s:.2f}× on 1 CPU" if allowed is None and len(ways) > 1 else ""
            emit(f"| whole `mnist-softmax predict FOLDER --json` process, {label} | {s / a.n * 1000:.2f} | "
                 f"{a.n / s:.0f} | {s / decode:.2f}{faster} | |")  # fmt: skip

    header = [
        "## predict on users' images",
        "",
        f"`python benchmarks/userstyle_accuracy.py --n {a.n} --seed {a.seed} --rounds {a.rounds}"
        + " --checkpoint CHECKPOINT" * len(paths)
        + "`, checkpoints: "
        + ", ".join(names)
        + ".",
        f"Machine: {machine()}; reference speeds {before} at the start, {reference_speeds()} at the end.",
        "",
    ]
    write_section("userstyle", "\n".join(header + lines))
    if done.returncode not in (0, 1):
        raise SystemExit(f"predict failed:\n{done.stderr}")


def describe(config: dict) -> str:
    """A checkpoint named by what made it: front end, config (the shipped one, or not), seed."""
    features = config["features"]
    shipped = asdict(load_config(features))
    same = all(config.get(k) == v for k, v in shipped.items() if k != "seed")
    return f"{features} ({f'configs/{features}.toml' if same else 'a changed config'}, seed {config['seed']})"


def _decode_all(files) -> None:
    for f in files:
        with Image.open(f) as im:
            im.load()


def _median_seconds(work, rounds: int) -> float:
    times = []
    for _ in range(rounds):
        t = time.perf_counter()
        work()
        times.append(time.perf_counter() - t)
    return float(np.median(times))


def _mean_pixels(files) -> float:
    sizes = []
    for f in files:
        with Image.open(f) as im:
            sizes.append(im.width * im.height)
    return float(np.mean(sizes))


if __name__ == "__main__":
    main()
