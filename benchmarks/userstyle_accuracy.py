"""Accuracy of `predict`'s normalisation on MNIST test digits remade as users' images, and its speed.

    python benchmarks/userstyle_accuracy.py --checkpoint A.npz [--checkpoint B.npz ...] [--n 1000] [--seed 7]

For n random test digits, prints each model's accuracy on the digits themselves, on the digits saved
as PNGs (pass-through), and on each user-style remake from tests/userstyle.py, all read back through
images.to_mnist exactly as `mnist-softmax predict` does: the accuracy, its share of the same model's
accuracy on the same digits untouched, and how many of the images were refused ("no digit found").
Then the images that hold no digit (tests/userstyle.py NEGATIVES), n/4 of each, and the share
refused. Last, the speed of a folder of n user-style images of about 300×300 px (JPEG and PNG):
to_mnist one after another, and to_mnist_many on threads and on processes, each followed by
classify with the first checkpoint. No assertions: the tests hold the bounds.
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
from PIL import Image, ImageFilter

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from results import machine, reference_speeds, write_section  # noqa: E402  (this folder is on sys.path)
from userstyle import MAKERS, NEGATIVES  # noqa: E402

from mnist_softmax.checkpoint import load_checkpoint  # noqa: E402
from mnist_softmax.config import load_config  # noqa: E402
from mnist_softmax.data import load_mnist  # noqa: E402
from mnist_softmax.images import ImageError, to_mnist, to_mnist_many  # noqa: E402
from mnist_softmax.model import classify  # noqa: E402


def page_300(digit, folder: Path, name: str, rng) -> Path:
    """A user-style image of about 300×300 px: the digit 7–9× on a page, in one of a few ink and
    paper colours, noise and a little blur; JPEG or PNG."""
    scale = int(rng.integers(7, 10))
    big = np.asarray(Image.fromarray(digit).resize((28 * scale,) * 2, Image.Resampling.BILINEAR), np.float32) / 255
    side = int(rng.integers(280, 321))
    top, left = (int(v) for v in rng.integers(0, side - 28 * scale + 1, 2))
    cover = np.zeros((side, side), np.float32)
    cover[top : top + 28 * scale, left : left + 28 * scale] = big
    colours = [([240] * 3, [25] * 3), ([246, 236, 200], [40, 45, 170]), ([235] * 3, [110] * 3), ([20] * 3, [235] * 3)]
    paper, ink = colours[int(rng.integers(len(colours)))]
    img = np.float32(paper) + (np.float32(ink) - np.float32(paper)) * cover[..., None]
    img = np.clip(img + rng.normal(0, 4, img.shape), 0, 255).astype(np.uint8)
    pil = Image.fromarray(img, "RGB").filter(ImageFilter.GaussianBlur(0.7))
    if rng.random() < 0.5:
        path = folder / f"{name}.jpg"
        pil.save(path, quality=85)
    else:
        path = folder / f"{name}.png"
        pil.save(path)
    return path


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
        files = [page_300(mnist.test_images[i], folder, f"{k:05d}", rng) for k, i in enumerate(idx)]
        cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
        emit(f"\nA folder of {a.n} user-style images of about 300×300 px (half JPEG, half PNG), {cpus} CPUs:")
        emit("to_mnist (or to_mnist_many) then classify with the first checkpoint\n")
        emit("| how | images/s | ms per image | accuracy |")
        emit("| --- | --- | --- | --- |")
        for how, run in (
            ("to_mnist, one after another", lambda: [_or_error(f) for f in files]),
            ("to_mnist_many, threads", lambda: list(to_mnist_many(files, executor="threads"))),
            ("to_mnist_many, processes", lambda: list(to_mnist_many(files, executor="processes"))),
        ):
            t = time.perf_counter()
            digits, kept, refused = _digits(run(), a.n)
            right = int(np.sum(classify(models[0], digits).argmax(1) == labels[kept]))
            s = time.perf_counter() - t
            emit(f"| {how} | {a.n / s:.0f} | {s / a.n * 1000:.1f} | {right / a.n:.4f} |")

        # The whole command, as a user runs it: a process that loads the checkpoint and classifies the folder.
        cmd = [sys.executable, "-m", "mnist_softmax", "predict", str(folder), "--checkpoint", paths[0], "--json"]
        t = time.perf_counter()
        done = subprocess.run(cmd, capture_output=True, text=True)
        s = time.perf_counter() - t
        emit(f"| whole `mnist-softmax predict FOLDER --json` process | {a.n / s:.0f} | {s / a.n * 1000:.1f} | |")

    header = [
        "## predict on users' images",
        "",
        f"`python benchmarks/userstyle_accuracy.py --n {a.n} --seed {a.seed}"
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


def _or_error(path):
    try:
        return to_mnist(path)
    except ImageError as e:
        return e


if __name__ == "__main__":
    main()
