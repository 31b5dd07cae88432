"""The figures, and the Painter that draws `train`'s figures in a helper process."""

import math
import sys

import numpy as np
from conftest import assert_figure
from PIL import Image

from mnist_softmax import plots

HISTORY = [
    {"epoch": e, "train_loss": 1 / e, "val_loss": math.nan, "train_acc": 0.9, "val_acc": math.nan} for e in (1, 2, 3)
]


def _jobs(folder, rng):
    W = rng.standard_normal((10, 784)).astype(np.float32)
    return [
        ("curves", folder / "curves.png", {"history": HISTORY, "test_acc": 0.93}),
        ("pixel_weights", folder / "weights.png", {"W": W}),
    ]


def _pixels(path):
    with Image.open(path) as im:
        return np.asarray(im.convert("RGBA"))


def test_jobs_survive_the_trip_to_the_helper(tmp_path):
    jobs = _jobs(tmp_path, np.random.default_rng(0))
    back = plots.decode_jobs(plots.encode_jobs(jobs))
    assert [(n, p) for n, p, _ in back] == [(n, p) for n, p, _ in jobs]
    assert back[0][2]["test_acc"] == 0.93 and math.isnan(back[0][2]["history"][0]["val_loss"])
    assert back[0][2]["history"][2]["train_loss"] == 1 / 3
    assert np.array_equal(back[1][2]["W"], jobs[1][2]["W"]) and back[1][2]["W"].dtype == np.float32


def test_painter_draws_what_this_process_draws(tmp_path):
    here, there = tmp_path / "here", tmp_path / "there"
    here.mkdir()
    there.mkdir()
    plots.draw(_jobs(here, np.random.default_rng(1)))
    with plots.Painter() as painter:
        proc = painter._proc
        painter.draw(_jobs(there, np.random.default_rng(1)))
    assert proc.returncode == 0  # drawn by the helper, not by the fallback
    for name in ("curves.png", "weights.png"):
        assert np.array_equal(_pixels(here / name), _pixels(there / name))
    assert sorted(p.name for p in there.iterdir()) == ["curves.png", "weights.png"]  # no temp files left


def test_a_failing_helper_falls_back_to_drawing_here(tmp_path):
    broken = [sys.executable, "-c", "import sys; sys.stdin.buffer.read(); sys.exit(3)"]
    with plots.Painter(broken) as painter:
        painter.draw(_jobs(tmp_path, np.random.default_rng(2)))
    with plots.Painter(["/nonexistent/python"]) as painter:  # cannot even start
        painter.draw(_jobs(tmp_path, np.random.default_rng(2)))
    with plots.Painter([""]) as painter:  # no known executable (embedded interpreter)
        painter.draw(_jobs(tmp_path, np.random.default_rng(2)))
    stuck = [sys.executable, "-c", "import time; time.sleep(60)"]
    with plots.Painter(stuck) as painter:
        proc = painter._proc
        painter.draw(_jobs(tmp_path, np.random.default_rng(2)), timeout=1)
    assert proc.returncode is not None  # killed, not left behind
    assert proc.stdin.closed and proc.stdout.closed  # and no pipe of it left open here
    assert_figure(tmp_path / "curves.png", (1000, 400))
    assert_figure(tmp_path / "weights.png", (1000, 440), min_fraction=0.1)


def test_an_unused_helper_is_stopped(tmp_path):
    with plots.Painter() as painter:
        proc = painter._proc
    assert proc.returncode is not None and not list(tmp_path.iterdir())
    assert proc.stdin.closed and proc.stdout.closed
