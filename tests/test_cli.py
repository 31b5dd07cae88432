"""The CLI end to end on the real MNIST files, plus help texts and user mistakes."""

import csv
import json
import subprocess
import sys

import numpy as np
import pytest
from click.testing import CliRunner
from conftest import assert_figure, run

from mnist_softmax.checkpoint import load_checkpoint
from mnist_softmax.cli import main
from mnist_softmax.config import Config, load_config
from mnist_softmax.state import EPOCH_COLUMNS


def test_default_train_reaches_the_accuracy_bar_and_writes_every_file(trained):
    cwd, result = trained
    run_dir = (cwd / "runs" / "latest").resolve()
    assert run_dir.parent == cwd / "runs" and run_dir.name[:8].isdigit()
    assert sorted(p.name for p in run_dir.iterdir()) == sorted(
        ["model.npz", "metrics.csv", "summary.json", "config.toml", "curves.png", "weights.png"]
    )
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["test_accuracy"] >= 0.925, summary
    assert summary["config"] == Config().to_dict()
    assert f"test accuracy {summary['test_accuracy']:.4f}" in result.output
    assert result.output.count("\nepoch ") + result.output.startswith("epoch ") == 10

    rows = list(csv.DictReader((run_dir / "metrics.csv").open()))
    assert [int(r["epoch"]) for r in rows] == list(range(1, 11)) and tuple(rows[0]) == EPOCH_COLUMNS
    assert float(rows[-1]["val_acc"]) == pytest.approx(summary["val_accuracy"])

    model, cfg, metrics, _ = load_checkpoint(run_dir / "model.npz")
    assert (
        model.W.shape == (10, 784)
        and cfg == Config().to_dict()
        and metrics["test_accuracy"] == summary["test_accuracy"]
    )
    assert load_config(run_dir / "config.toml") == Config()
    assert_figure(run_dir / "curves.png", (1000, 400))
    assert_figure(run_dir / "weights.png", (1000, 560), min_fraction=0.1)


def test_checkpoint_reproduces_the_reported_test_accuracy(trained, mnist):
    cwd, _ = trained
    model, _, metrics, _ = load_checkpoint(cwd / "runs" / "latest" / "model.npz")
    pred = (model.features(mnist.test_images) @ model.W.T + model.b).argmax(1)
    assert np.mean(pred == mnist.test_labels) == metrics["test_accuracy"]


def test_same_seed_same_numbers_different_seed_different(trained, mnist_dir, tmp_path):
    cwd, first = trained
    again = run("train", "--data-dir", mnist_dir, "--out", tmp_path / "again")
    a = json.loads((cwd / "runs" / "latest" / "summary.json").read_text())
    b = json.loads((tmp_path / "again" / "summary.json").read_text())
    assert {k: v for k, v in a.items() if k != "seconds"} == {k: v for k, v in b.items() if k != "seconds"}
    np.testing.assert_array_equal(
        load_checkpoint(cwd / "runs/latest/model.npz")[0].W, load_checkpoint(tmp_path / "again/model.npz")[0].W
    )
    assert "test accuracy" in again.output
    other = run("train", "--data-dir", mnist_dir, "--out", tmp_path / "other", "--seed", "1", "--epochs", "1", "-q")
    assert json.loads((tmp_path / "other" / "summary.json").read_text())["test_loss"] != a["test_loss"]
    assert "epoch" not in other.output


def test_flags_override_the_config_and_are_saved(mnist_dir, tmp_path):
    out = tmp_path / "run"
    run(
        "train",
        "--data-dir",
        mnist_dir,
        "--out",
        out,
        "--epochs",
        2,
        "--lr",
        0.05,
        "--batch-size",
        500,
        "--schedule",
        "step",
        "--val-size",
        1000,
        "--momentum",
        0.5,
        "--weight-decay",
        0,
        "-q",
    )
    cfg = load_config(out / "config.toml")
    assert (cfg.epochs, cfg.lr, cfg.batch_size, cfg.schedule, cfg.val_size, cfg.momentum, cfg.weight_decay) == (
        2,
        0.05,
        500,
        "step",
        1000,
        0.5,
        0.0,
    )
    assert len((out / "metrics.csv").read_text().splitlines()) == 3


def test_download_command_uses_a_mirror(mnist_server, tmp_path):
    _, url = mnist_server
    result = run("download", "--data-dir", tmp_path, "--mirror", f"{url}/good/", "-q")
    assert result.output.count("ok ") == 4 and len(list(tmp_path.iterdir())) == 4


@pytest.mark.parametrize(
    "args,code,message",
    [
        (["train", "--lr", "0"], 1, "'lr' must be in (0, 1e+40], got 0.0"),
        (["train", "--epochs", "0"], 1, "'epochs' must be in [1, 10000], got 0"),
        (["train", "--config", "nope.toml"], 1, "config file not found: nope.toml"),
        (["train", "--features", "resnet"], 2, "Invalid value for '--features'"),
        (["train", "--batch-size", "ten"], 2, "'ten' is not a valid integer"),
    ],
)
def test_user_mistakes_give_one_line_and_an_exit_code(args, code, message, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    result = CliRunner().invoke(main, args)
    assert result.exit_code == code and message in result.output
    assert "Traceback" not in result.output
    if code == 1:
        assert result.output.count("\n") == 1 and result.output.startswith("Error: ")
    assert not (tmp_path / "runs").exists()


@pytest.mark.parametrize(
    "args",
    [
        ["train", "--data-dir", ""],
        ["train", "--out", " "],
        ["train", "--resume", ""],
        ["eval", "--checkpoint", ""],
        ["eval", "--out", ""],
        ["predict", ""],
        ["predict", "x.png", "--save-input", ""],
        ["download", "--data-dir", ""],
    ],
)
def test_an_empty_path_is_refused_not_read_as_the_current_folder(args, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    result = CliRunner().invoke(main, args)
    option = next((a for a in args if a.startswith("--")), "a path")
    assert result.exit_code == 2 and result.output == f"Error: {option} is empty; give a file or folder name\n"
    assert list(tmp_path.iterdir()) == []


def test_unknown_config_key_is_named(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "c.toml").write_text("lr = 0.1\nbatchsize = 10\n")
    result = CliRunner().invoke(main, ["train", "--config", "c.toml"])
    assert result.exit_code == 1 and "unknown key in c.toml: batchsize" in result.output


def test_every_command_is_documented_with_an_example():
    for name, cmd in main.commands.items():
        help_text = run(name, "--help").output
        assert cmd.help and "Example" in help_text, name
    assert "[default: 0.9, from the config]" in " ".join(run("train", "--help").output.split())


def test_console_script_runs_as_a_module():
    out = subprocess.run([sys.executable, "-m", "mnist_softmax", "--version"], capture_output=True, text=True)
    assert out.returncode == 0 and "mnist-softmax" in out.stdout


def test_quiet_train_leaves_matplotlib_to_its_helper_and_never_imports_tqdm(mnist_dir, tmp_path):
    """The trainer's figures come from the Painter's helper process; matplotlib would cost the
    training loop its import (GIL) and tqdm its import time, so neither is loaded here."""
    code = (
        "import sys\nfrom mnist_softmax.cli import main\n"
        f"main(['train', '--data-dir', {str(mnist_dir)!r}, '--epochs', '1', '-q', '--out', 'run'],"
        " standalone_mode=False)\n"
        "print(sorted(m for m in ('matplotlib', 'tqdm') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=tmp_path)
    assert out.stdout.strip().splitlines()[-1] == "[]"
    assert {p.name for p in (tmp_path / "run").iterdir()} >= {"curves.png", "weights.png"}


def test_train_help_gives_each_front_ends_default_where_their_configs_differ():
    text = " ".join(run("train", "--help").output.split())
    assert "Mini-batch size. [default: from the config: 200 for pixels, 200 for conv, 64 for cnn]" in text
    assert "[default: from the config: 10 for pixels, 15 for conv, 15 for cnn]" in text
    assert "SGD momentum. [default: 0.9, from the config]" in text


def test_shift_is_a_cnn_flag(mnist_dir):
    result = CliRunner().invoke(main, ["train", "--shift", "2", "--data-dir", str(mnist_dir), "-q"])
    assert result.exit_code == 1 and result.output.count("\n") == 1
    assert "'shift' works only with features cnn" in result.output


def test_a_run_that_learned_nothing_is_reported_with_a_warning(mnist_dir, tmp_path, monkeypatch):
    import mnist_softmax.train as train_mod

    good = run("train", "--data-dir", mnist_dir, "--out", tmp_path / "good", "--epochs", "1", "-q")
    assert "warning" not in good.stderr
    monkeypatch.setattr(train_mod, "evaluate", lambda *a, **k: (2.3026, 0.098))  # a network gone dead
    result = run("train", "--data-dir", mnist_dir, "--out", tmp_path / "run", "--epochs", "1", "--lr", "5", "-q")
    assert "warning: test accuracy 0.0980 is near chance (0.1)" in result.stderr and "--lr 5" in result.stderr


def test_a_run_near_chance_for_want_of_classes_says_so_not_the_learning_rate(mnist_dir, tmp_path):
    """One training image (all but one held out): the cause is plain, and the warning names it."""
    result = run("train", "--data-dir", mnist_dir, "--out", tmp_path / "run", "--epochs", "1", "--val-size", "59999")
    assert "warning: test accuracy 0." in result.stderr and "near chance" in result.stderr
    assert "its training split holds 1 image of 1 class of 10" in result.stderr and "--val-size" in result.stderr
    assert "--lr" not in result.stderr
