"""Accuracy of `predict`'s normalisation on MNIST test digits remade as users' images.

    python benchmarks/userstyle_accuracy.py --checkpoint A.npz [--checkpoint B.npz ...] [--n 1000] [--seed 7]

For n random test digits, prints each model's accuracy on the digits themselves, on the digits saved
as PNGs (pass-through), and on each user-style remake from tests/userstyle.py, all read back through
images.to_mnist exactly as `mnist-softmax predict` does.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from userstyle import MAKERS  # noqa: E402

from mnist_softmax.checkpoint import load_checkpoint  # noqa: E402
from mnist_softmax.data import load_mnist  # noqa: E402
from mnist_softmax.images import to_mnist  # noqa: E402
from mnist_softmax.model import classify  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--checkpoint", action="append", help="repeatable [default: runs/latest/model.npz]")
    ap.add_argument("--data-dir", default="data")
    ap.add_argument("--n", type=int, default=1000)
    ap.add_argument("--seed", type=int, default=7)
    a = ap.parse_args()

    mnist = load_mnist(a.data_dir, quiet=True)
    paths = a.checkpoint or ["runs/latest/model.npz"]
    models = [load_checkpoint(p)[0] for p in paths]
    rng = np.random.default_rng(a.seed)
    idx = rng.choice(len(mnist.test_labels), a.n, replace=False)
    labels = mnist.test_labels[idx]

    def row(name: str, digits, ms: str = "") -> str:
        accs = [float(np.mean(classify(m, np.asarray(digits)).argmax(1) == labels)) for m in models]
        return f"| {name:<32} | " + " | ".join(f"{acc:.4f}" for acc in accs) + f" | {ms} |"

    def save_png(digit, folder, name, rng):
        path = folder / f"{name}.png"
        Image.fromarray(digit).save(path)
        return path

    print(f"{a.n} MNIST test digits (seed {a.seed})")
    print(
        "| images | "
        + " | ".join(f"{m.front_end} ({p})" for m, p in zip(models, paths, strict=True))
        + " | ms per image |"
    )
    print("| --- |" + " --- |" * (len(models) + 1))
    print(row("the test digits themselves", mnist.test_images[idx]))
    with tempfile.TemporaryDirectory() as tmp:
        for style, make in {"MNIST digits saved as PNG": save_png, **MAKERS}.items():
            t = time.perf_counter()
            digits = [to_mnist(make(mnist.test_images[i], Path(tmp), f"{style[:4]}{i}", rng)).digit for i in idx]
            ms = (time.perf_counter() - t) / a.n * 1000
            print(row(style, digits, f"{ms:.1f}"), flush=True)


if __name__ == "__main__":
    main()
