"""`mnist-softmax eval`: the numbers train reported, exactly; tables, JSON, figures, mistakes."""

import json

import numpy as np
import pytest
from click.testing import CliRunner
from conftest import assert_figure, run

from mnist_softmax.cli import main
from mnist_softmax.scoring import confusion_matrix, most_confident_errors, per_class


def test_confusion_and_per_class_by_hand():
    cm = confusion_matrix(np.array([0, 0, 1, 2, 2, 2]), np.array([0, 1, 1, 2, 2, 0]), 3)
    assert cm.tolist() == [[1, 1, 0], [0, 1, 0], [1, 0, 2]]
    p, r, f = per_class(cm)
    np.testing.assert_allclose(p, [0.5, 0.5, 1.0])
    np.testing.assert_allclose(r, [0.5, 1.0, 2 / 3])
    np.testing.assert_allclose(f, [0.5, 2 / 3, 0.8])
    p, r, f = per_class(np.array([[0, 0], [0, 3]]))  # class 0 never seen nor predicted
    assert p[0] == r[0] == f[0] == 0.0


def test_most_confident_errors_order():
    P = np.array([[0.9, 0.1], [0.2, 0.8], [0.6, 0.4], [0.3, 0.7]])
    y = np.array([1, 1, 1, 0])
    assert most_confident_errors(P, y, 5).tolist() == [0, 3, 2]


@pytest.mark.parametrize("split", ["test", "val", "train"])
def test_eval_equals_what_train_reported_exactly(trained, mnist_dir, split):
    cwd, _ = trained
    summary = json.loads((cwd / "runs/latest/summary.json").read_text())
    out = json.loads(
        run(
            "eval", "--checkpoint", cwd / "runs/latest/model.npz", "--split", split, "--data-dir", mnist_dir, "--json"
        ).output
    )
    assert out["accuracy"] == summary[f"{split}_accuracy"]
    assert out["loss"] == summary[f"{split}_loss"]
    assert out["n"] == {"test": 10000, "val": 5000, "train": 55000}[split]
    cm = np.array(out["confusion"])
    assert cm.sum() == out["n"] and np.trace(cm) == round(out["accuracy"] * out["n"])
    assert [c["support"] for c in out["per_class"]] == cm.sum(1).tolist()


def test_eval_table_defaults_to_latest_and_writes_figures(trained, mnist_dir, monkeypatch, tmp_path):
    cwd, _ = trained
    monkeypatch.chdir(cwd)
    out = run("eval", "--data-dir", mnist_dir, "--out", tmp_path / "report").output
    summary = json.loads((cwd / "runs/latest/summary.json").read_text())
    assert f"accuracy {summary['test_accuracy']:.4f}" in out
    assert "true\\pred" in out and "precision" in out
    matrix_rows = [line for line in out.splitlines() if line[:9].strip().isdigit() and len(line.split()) == 11]
    assert len(matrix_rows) == 10 and len({len(r) for r in matrix_rows}) == 1  # aligned
    assert_figure(tmp_path / "report" / "confusion.png", min_fraction=0.01)
    assert_figure(tmp_path / "report" / "errors.png", drawn="dark", min_fraction=0.03)


def test_eval_without_any_run_says_what_to_do(tmp_path, monkeypatch, mnist_dir):
    monkeypatch.chdir(tmp_path)
    result = CliRunner().invoke(main, ["eval", "--data-dir", str(mnist_dir)])
    assert result.exit_code == 1 and "run `mnist-softmax train` first" in result.output


def test_eval_refuses_a_broken_checkpoint(tmp_path, mnist_dir):
    bad = tmp_path / "model.npz"
    bad.write_bytes(b"PK\x03\x04 this is not a zip")
    result = CliRunner().invoke(main, ["eval", "--checkpoint", str(bad), "--data-dir", str(mnist_dir)])
    assert result.exit_code == 1 and result.output.count("\n") == 1 and "not a readable checkpoint" in result.output


def test_eval_equals_train_whatever_the_blas_thread_count(mnist_dir, tmp_path):
    """A product split over two BLAS threads can round differently from one thread: seed 3 did."""
    import os
    import subprocess
    import sys

    run("train", "--data-dir", mnist_dir, "--out", tmp_path / "run", "--seed", 3, "--epochs", 1, "-q")
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    for threads in ("1", "2"):
        out = subprocess.run(
            [sys.executable, "-m", "mnist_softmax", "eval", "--checkpoint", str(tmp_path / "run" / "model.npz")]
            + ["--data-dir", str(mnist_dir), "--json"],
            capture_output=True,
            text=True,
            env={**os.environ, "OPENBLAS_NUM_THREADS": threads, "OMP_NUM_THREADS": threads},
            check=True,
        )
        record = json.loads(out.stdout)
        assert (record["loss"], record["accuracy"]) == (summary["test_loss"], summary["test_accuracy"]), threads


def test_a_path_that_looks_like_math_is_shown_literally_in_the_report(trained, mnist_dir, tmp_path):
    """`$…$` in a path went into the figure's title as matplotlib mathtext: a traceback, an empty
    report folder and no scores. The scores come first, and the title shows the path as it is."""
    import shutil

    cwd, _ = trained
    odd = tmp_path / "runs" / "a$x^$" / "model.npz"
    odd.parent.mkdir(parents=True)
    shutil.copy(cwd / "runs/latest/model.npz", odd)
    result = run("eval", "--checkpoint", odd, "--data-dir", mnist_dir, "--out", tmp_path / "report")
    summary = json.loads((cwd / "runs/latest/summary.json").read_text())
    assert f"accuracy {summary['test_accuracy']:.4f}" in result.output and "Traceback" not in result.output
    assert_figure(tmp_path / "report" / "confusion.png", min_fraction=0.01)
    assert (tmp_path / "report" / "errors.png").is_file()


@pytest.mark.parametrize("bad", [12, -1])
def test_confusion_matrix_refuses_a_label_outside_the_classes(bad):
    """-1 would be counted as class 9 and 12 would overflow into the next row: refused, naming the argument."""
    with pytest.raises(ValueError, match=r"^y_true must be classes in \[0, 10\)"):
        confusion_matrix(np.array([0, bad]), np.array([0, 1]))
    with pytest.raises(ValueError, match=r"^y_pred must be classes in \[0, 10\)"):
        confusion_matrix(np.array([0, 1]), np.array([0, bad]))
    with pytest.raises(ValueError, match="^2 true labels .y_true. but 3 y_pred"):
        confusion_matrix(np.array([0, 1]), np.array([0, 1, 2]))


def test_evaluate_refuses_no_examples():
    from mnist_softmax.model import evaluate

    with pytest.raises(ValueError, match="^X holds no rows"):
        evaluate(
            np.zeros((10, 4), np.float32), np.zeros(10, np.float32), np.zeros((0, 4), np.float32), np.zeros(0, int)
        )


def test_a_checkpoint_path_with_control_characters_or_chinese_leaves_stderr_clean(trained, mnist_dir, tmp_path):
    """matplotlib warned of each glyph its font lacks, quoting the character raw (an escape sequence
    reached the terminal): the figure is drawn, the title escapes control characters, stderr is empty."""
    import shutil
    import subprocess
    import sys

    cwd, _ = trained
    odd = tmp_path / "m\x1b[31m模型\x07.npz"
    shutil.copy(cwd / "runs/latest/model.npz", odd)
    args = ["eval", "--checkpoint", str(odd), "--data-dir", str(mnist_dir), "--out", str(tmp_path / "report")]
    done = subprocess.run([sys.executable, "-m", "mnist_softmax", *args], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0 and done.stderr == "", done.stderr
    assert "\x1b" not in done.stdout and "\\x1b[31m模型\\x07.npz" in done.stdout
    assert_figure(tmp_path / "report" / "confusion.png", min_fraction=0.01)
