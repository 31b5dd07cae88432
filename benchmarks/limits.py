"""The known limits of `predict`'s reading, each with its measured rate.

    python benchmarks/limits.py [--checkpoint runs/latest/model.npz] [--data-dir data] [--n 200] [--seed 3]

Each limit is made from MNIST test digits (tests/userstyle.py) and read through images.prepare, as
`predict` reads a file; the model then classifies what was read. Measured:
- MNIST's own 70,000 digits, as they are (light on black, 28×28): how many are refused;
- two digits one above another (a 1 over another digit, or any two) and side by side, at gaps
  around the thresholds of the "several marks" rule: how many are read as one digit, and how many
  of those with p > 0.9;
- a 0, 6, 8 or 9 cropped to touch all four edges, dark on light and light on dark: wrong polarity;
- a short typed word ("go", "it", ...) in Pillow's own font: read as a digit;
- a digit on ruled notebook paper whose lines run through its strokes: the answer changed;
- a photographed page framed by a darker desk: the answer changed;
- a solid round blot: classified rather than refused;
- a digit under 1/20 of a large photo's longer side: refused as a speck.
No assertions: the tests hold the rules at their thresholds; this says how often each limit bites.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from results import machine, write_section  # noqa: E402  (this folder is on sys.path)
from userstyle import digit_cover, side_by_side_pair, stacked_pair  # noqa: E402

from mnist_softmax.checkpoint import load_checkpoint  # noqa: E402
from mnist_softmax.data import load_mnist  # noqa: E402
from mnist_softmax.images import ImageError, prepare  # noqa: E402
from mnist_softmax.model import classify  # noqa: E402

WORDS = ("go", "it", "no", "ok", "at", "be", "us", "hi", "on", "up")


def read(page: np.ndarray, inverted: bool | None = None):
    """A grey page (H, W) in [0, 1] -> its Prepared, or None when refused."""
    try:
        return prepare(np.asarray(page, np.float32)[..., None], None)
    except ImageError:
        return None


def mnist_refusals(mnist) -> tuple[int, int]:
    """(test digits refused of 10,000, training digits refused of 60,000), read as they are."""
    counts = []
    for images in (mnist.test_images, mnist.train_images):
        counts.append(sum(read(d.astype(np.float32) / 255) is None for d in images))
    return counts[0], counts[1]


def one_digit_rate(model, pages) -> tuple[int, int, int]:
    """(pages, read as one digit, of those with p > 0.9)."""
    digits = [r.digit for r in map(read, pages) if r is not None]
    confident = int((classify(model, np.array(digits)).max(1) > 0.9).sum()) if digits else 0
    return len(pages), len(digits), confident


def pairs(model, mnist, rng, n: int) -> list[tuple[str, float, tuple[int, int, int]]]:
    ones, others = np.flatnonzero(mnist.test_labels == 1), np.flatnonzero(mnist.test_labels != 1)
    pick = mnist.test_images
    rows = []
    for gap in (0.2, 0.3, 0.35, 0.4, 0.6):
        pages = [stacked_pair(pick[rng.choice(ones)], pick[rng.choice(others)], gap) for _ in range(n)]
        rows.append(("a 1 over another digit", gap, one_digit_rate(model, pages)))
        pages = [stacked_pair(pick[rng.integers(10000)], pick[rng.integers(10000)], gap) for _ in range(n)]
        rows.append(("any digit over another", gap, one_digit_rate(model, pages)))
    for gap in (0.03, 0.05, 0.07, 0.1, 0.2):
        pages = [side_by_side_pair(pick[rng.integers(10000)], pick[rng.integers(10000)], gap) for _ in range(n)]
        rows.append(("two digits side by side", gap, one_digit_rate(model, pages)))
    return rows


def loops_wrong_polarity(mnist, n: int) -> tuple[int, int]:
    """(loops read, of them with the polarity wrong): 0, 6, 8, 9 cropped where their ink reaches 0.5,
    so each touches all four edges, dark on light and light on dark."""
    loops = np.flatnonzero(np.isin(mnist.test_labels, (0, 6, 8, 9)))[: n // 2]
    wrong = total = 0
    for i in loops:
        cover = digit_cover(mnist.test_images[i], 8)
        rows, cols = np.flatnonzero((cover > 0.5).any(1)), np.flatnonzero((cover > 0.5).any(0))
        cover = cover[rows[0] : rows[-1] + 1, cols[0] : cols[-1] + 1]
        for dark in (True, False):
            got = read(0.92 - 0.8 * cover if dark else 0.12 + 0.8 * cover)
            total += 1
            wrong += got is None or got.inverted is not dark
    return total, wrong


def words_read_as_digits(rng, n: int) -> tuple[int, int]:
    """(typed words, read as a digit)."""
    read_as_digit = 0
    for k in range(n):
        size = int(rng.integers(24, 97))
        font = ImageFont.load_default(size=size)
        page = Image.new("L", (size * 4, size * 2), 245)
        ImageDraw.Draw(page).text((size // 2, size // 3), WORDS[k % len(WORDS)], font=font, fill=20)
        read_as_digit += read(np.asarray(page, np.float32) / 255) is not None
    return n, read_as_digit


def _answer(model, page) -> int | None:
    got = read(page)
    return None if got is None else int(classify(model, got.digit[None]).argmax())


def ruled_lines_change(model, mnist, rng, n: int) -> tuple[int, int]:
    """(digits, answers changed) on ruled paper: lines 1 px, every 0.3–0.5 of the digit's height,
    running through it, beside the same digit on plain paper."""
    changed = 0
    for i in rng.choice(10000, n, replace=False):
        cover = np.pad(digit_cover(mnist.test_images[i]), 60)
        plain = 0.95 - 0.85 * cover
        ruled = plain.copy()
        step = int(rng.uniform(0.3, 0.5) * (len(cover) - 120))
        ruled[int(rng.integers(0, step)) :: step] -= 0.45
        changed += _answer(model, plain) != _answer(model, np.clip(ruled, 0, 1))
    return n, changed


def desk_frame_change(model, mnist, rng, n: int) -> tuple[int, int]:
    """(photos, answers changed): the page with its digit, photographed with a darker desk around it
    (the page 60–85% of the photo), beside the page alone."""
    changed = 0
    for i in rng.choice(10000, n, replace=False):
        page = 0.95 - 0.85 * np.pad(digit_cover(mnist.test_images[i]), 80)
        share = rng.uniform(0.6, 0.85)
        h, w = (round(s / share) for s in page.shape)
        photo = np.full((h, w), rng.uniform(0.1, 0.4), np.float32)
        r, c = (h - page.shape[0]) // 2, (w - page.shape[1]) // 2
        photo[r : r + page.shape[0], c : c + page.shape[1]] = page
        changed += _answer(model, page) != _answer(model, photo)
    return n, changed


def blots_classified(rng, n: int) -> tuple[int, int]:
    """(solid round blots, classified rather than refused)."""
    classified = 0
    for _ in range(n):
        side, radius = int(rng.integers(200, 400)), rng.uniform(20, 80)
        yy, xx = np.mgrid[:side, :side]
        blot = np.hypot(yy - side / 2, xx - side / 2) <= radius
        classified += read(np.where(blot, 0.1, 0.95)) is not None
    return n, classified


def small_digits_refused(mnist, rng, n: int) -> tuple[int, int]:
    """(digits under 1/20 of a 2000-px photo's longer side (80 px tall), refused as a speck)."""
    refused = 0
    for i in rng.choice(10000, n, replace=False):
        cover = np.asarray(Image.fromarray(mnist.test_images[i]).resize((90, 90)), np.float32) / 255
        photo = np.full((1500, 2000), 0.95, np.float32)
        photo[700:790, 900:990] -= 0.85 * cover
        refused += read(photo) is None
    return n, refused


def _share(k: int, n: int) -> str:
    return f"{k}/{n} ({k / n:.0%})"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--checkpoint", default="runs/latest/model.npz")
    ap.add_argument("--data-dir", default="data")
    ap.add_argument("--n", type=int, default=200, help="images of each kind")
    ap.add_argument("--seed", type=int, default=3)
    a = ap.parse_args()
    model = load_checkpoint(a.checkpoint).model
    mnist = load_mnist(a.data_dir, quiet=True)
    rng = np.random.default_rng(a.seed)
    t0 = time.perf_counter()
    test_refused, train_refused = mnist_refusals(mnist)
    lines = [
        "## predict's known limits, measured",
        "",
        f"`python benchmarks/limits.py --n {a.n} --seed {a.seed}` with the {model.front_end} model "
        f"({a.checkpoint}); {machine()}. Each kind made from MNIST test digits as tests/userstyle.py makes "
        "them, read as `predict` reads a file.",
        "",
        f"- MNIST's own digits refused: {test_refused} of the 10,000 test digits, {train_refused} of the "
        "60,000 training digits.",
        "",
        "| two digits | gap (of the taller one's height) | read as one digit | of those, p > 0.9 |",
        "| --- | --- | --- | --- |",
    ]
    for kind, gap, (n, one, confident) in pairs(model, mnist, rng, a.n):
        lines.append(f"| {kind} | {gap:g} | {_share(one, n)} | {_share(confident, one) if one else '–'} |")
    lines += ["", "| other limit | measured |", "| --- | --- |"]
    others = [
        ("a 0, 6, 8 or 9 touching all four edges: polarity wrong", loops_wrong_polarity(mnist, a.n)),
        ("a typed two-letter word: read as a digit", words_read_as_digits(rng, a.n)),
        ("ruled lines through the strokes: answer changed", ruled_lines_change(model, mnist, rng, a.n)),
        ("a darker desk around the photographed page: answer changed", desk_frame_change(model, mnist, rng, a.n)),
        ("a solid round blot: classified, not refused", blots_classified(rng, a.n)),
        ("a digit 1/22 of a 2000-px photo: refused as a speck", small_digits_refused(mnist, rng, a.n // 4)),
    ]
    lines += [f"| {what} | {_share(k, n)} |" for what, (n, k) in others]
    lines += ["", f"({time.perf_counter() - t0:.0f} s in all)"]
    text = "\n".join(lines)
    print(text)
    write_section("limits", text)


if __name__ == "__main__":
    main()
