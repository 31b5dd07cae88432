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
    rows = rng.standard_normal((10, 28, 28))
    rare = np.zeros((28, 28), bool)
    rare[:3] = True
    return [
        ("curves", folder / "curves.png", {"history": HISTORY, "test_acc": 0.93}),
        ("pixel_weights", folder / "weights.png", {"rows": rows, "rare": rare, "limit": 2.0}),
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
    assert np.array_equal(back[1][2]["rows"], jobs[1][2]["rows"]) and back[1][2]["rare"].dtype == bool
    assert back[1][2]["limit"] == 2.0


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
    assert_figure(tmp_path / "weights.png", (1000, 560), min_fraction=0.1)


def test_an_unused_helper_is_stopped(tmp_path):
    with plots.Painter() as painter:
        proc = painter._proc
    assert proc.returncode is not None and not list(tmp_path.iterdir())
    assert proc.stdin.closed and proc.stdout.closed


def test_the_weights_share_one_colour_scale_shown_by_a_colour_bar(tmp_path):
    """Every row on the one scale the colour bar shows: a row of the figure runs from full blue to
    full red under the pictures; rare pixels are grey, not white (which would read as a weight of 0)."""
    rows = np.zeros((10, 28, 28))
    rows[0, 10:18, 10:18] = 5.0  # far beyond the limit: saturated red, as -5 is saturated blue
    rows[1, 10:18, 10:18] = -5.0
    rare = np.zeros((28, 28), bool)
    rare[:4] = True
    plots.plot_pixel_weights(tmp_path / "w.png", rows, rare, 1.0)
    rgb = _pixels(tmp_path / "w.png")[..., :3].astype(int)
    bar_row = rgb[int(rgb.shape[0] * (1 - 0.165))]  # through the colour bar
    reds, blues = (bar_row[:, 0] > 150) & (bar_row[:, 2] < 80), (bar_row[:, 2] > 120) & (bar_row[:, 0] < 40)
    assert reds.sum() > 20 and blues.sum() > 20 and np.flatnonzero(blues).max() < np.flatnonzero(reds).min()
    saturated_red, saturated_blue, grey = (103, 0, 31), (5, 48, 97), (217, 217, 217)
    for colour in (saturated_red, saturated_blue, grey):  # in the pictures: the bar's ends, and grey
        assert (np.abs(rgb - colour).sum(-1) < 12).sum() > 100, colour
