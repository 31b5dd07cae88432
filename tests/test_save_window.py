"""Nothing lost in the window where a run is saved: signals aimed at each file's write (tests/aim_signal.py),
once and back to back, for pixels and cnn; a save cut short by a crash is completed by --resume; two
runs into one folder; temp files of a helper stopped mid-figure."""

import json
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import run

from mnist_softmax.checkpoint import load_checkpoint
from mnist_softmax.fileio import exclusive
from mnist_softmax.runs import FIGURES, LOCK, OUTPUTS

AIM = Path(__file__).with_name("aim_signal.py")
CODES = {"INT": 130, "TERM": 143}
CNN_SMALL = 'features = "cnn"\nepochs = 1\nval_size = 59000\nschedule = "onecycle"\nlr = 0.05\nbatch_size = 64\n'
CNN_SMALL += 'standardize = "none"\n'


def aimed_train(cwd: Path, aims: str | list[str], *args) -> subprocess.CompletedProcess:
    """`mnist-softmax train ARGS -q` in its own process, with signals sent as AIMS say (TARGET=SIGNALS,
    see aim_signal.py)."""
    aims = [aims] if isinstance(aims, str) else aims
    cmd = [sys.executable, str(AIM), *aims, "--", "train", *map(str, args), "-q"]
    return subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=600)


def _leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.startswith("."))


def _assert_saved_and_finished(run_dir: Path, epochs: int) -> None:
    """Every output of a finished run is there and whole; no temp file or lock is left."""
    assert not _leftovers(run_dir), _leftovers(run_dir)
    checkpoint = load_checkpoint(run_dir / "model.npz")
    summary = json.loads((run_dir / "summary.json").read_text())
    assert not summary["interrupted"] and summary["epochs"] == epochs
    assert summary["test_accuracy"] == checkpoint.metrics["test_accuracy"] > 0.5
    assert len((run_dir / "metrics.csv").read_text().splitlines()) == epochs + 1
    assert (run_dir / "config.toml").read_text().startswith('features = "')


@pytest.mark.parametrize("name", OUTPUTS)
@pytest.mark.parametrize("signals", ["INT", "TERM", "INT,INT"])
def test_a_signal_while_a_finished_run_is_saved_waits_for_the_save(mnist_dir, tmp_path, name, signals):
    done = aimed_train(tmp_path, f"write:{name}={signals}", "--data-dir", mnist_dir, "--out", "runs/a", "--epochs", 2)
    assert done.returncode == CODES[signals.split(",")[0]], done.stderr  # the first signal decides
    run_dir = tmp_path / "runs" / "a"
    assert done.stderr.strip() == (
        f"interrupted while saving the run: runs/a/ holds the model, metrics and summary; "
        f"{', '.join(FIGURES)} not drawn"
    )
    _assert_saved_and_finished(run_dir, 2)
    assert (tmp_path / "runs" / "latest").resolve() == run_dir.resolve()


@pytest.mark.parametrize("name", ["model.npz", "summary.json"])
def test_a_second_signal_while_an_interrupted_runs_save_is_written_waits_for_it(mnist_dir, tmp_path, name):
    """The first Ctrl-C stops training in epoch 3 of 3 (as it is scored); a second, aimed at the save it causes,
    waits for the save, then acts: the message says so, with the command that resumes the run."""
    done = aimed_train(
        tmp_path, ["call:train:evaluate:3=INT", f"write:{name}=INT"], "--data-dir", mnist_dir, "--out", "run",
        "--epochs", 3,
    )  # fmt: skip
    assert done.returncode == 130, done.stderr
    assert done.stderr.strip() == (
        "interrupted while saving the run: run/ holds the model, metrics and summary; curves.png, weights.png "
        f"not drawn; continue with: mnist-softmax train --resume run --data-dir {mnist_dir}"
    )
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary["interrupted"] and summary["epochs"] == 2 and not _leftovers(tmp_path / "run")
    run("train", "--resume", tmp_path / "run", "--data-dir", mnist_dir, "-q")
    _assert_saved_and_finished(tmp_path / "run", 3)


def test_two_ctrl_c_back_to_back_during_an_epoch_print_nothing_but_the_save(mnist_dir, tmp_path):
    done = aimed_train(
        tmp_path, "call:train:sgd_step:300=INT,INT", "--data-dir", mnist_dir, "--out", "run", "--epochs", 5
    )  # 275 steps an epoch: partway through the second
    assert done.returncode == 130
    assert done.stderr.strip().splitlines() == [
        f"interrupted: saved epoch 1/5 to run/; continue with: mnist-softmax train --resume run --data-dir {mnist_dir}"
    ]


@pytest.mark.parametrize("figure", FIGURES)
@pytest.mark.parametrize("helper", ["figure", "slow-figure"])
def test_a_signal_while_a_figure_is_written_leaves_no_temp_file(mnist_dir, tmp_path, figure, helper):
    """A quick helper finishes the figure it is on (Python waits 0.25 s for a child on Ctrl-C); a slow
    one is stopped mid-write, and its temp file removed. Either way the message names what is missing."""
    done = aimed_train(tmp_path, f"{helper}:{figure}=INT", "--data-dir", mnist_dir, "--out", "run", "--epochs", 1)
    assert done.returncode == 130, done.stderr
    missing = [f for f in FIGURES if not (tmp_path / "run" / f).is_file()]
    assert done.stderr.strip() == "interrupted while drawing the figures: run/ holds the model, metrics and summary" + (
        f"; {', '.join(missing)} not drawn" if missing else ""
    )
    if helper == "slow-figure":
        assert figure in missing
    _assert_saved_and_finished(tmp_path / "run", 1)


def test_the_cnn_run_survives_signals_while_it_is_saved(mnist_dir, tmp_path):
    (tmp_path / "cnn.toml").write_text(CNN_SMALL)
    done = aimed_train(
        tmp_path, "write:model.npz=INT,TERM", "--data-dir", mnist_dir, "--config", "cnn.toml", "--out", "runs/c"
    )
    assert done.returncode == 130, done.stderr  # the first of the two decides
    assert "interrupted while saving the run: runs/c/ holds the model" in done.stderr
    _assert_saved_and_finished(tmp_path / "runs" / "c", 1)
    assert set(load_checkpoint(tmp_path / "runs" / "c" / "model.npz").model.fe_params) >= {"conv1_w", "conv2_w"}


@pytest.mark.parametrize("name", OUTPUTS[1:])
def test_a_save_cut_short_by_a_crash_is_completed_by_resume(mnist_dir, tmp_path, name):
    """SIGKILL (a crash, a power cut) while a file after the checkpoint is written: the folder lacks
    it and what follows; `--resume` writes them from the checkpoint, removes the dead writer's temp
    file, and points runs/latest at the run."""
    done = aimed_train(tmp_path, f"write:{name}=KILL", "--data-dir", mnist_dir, "--out", "runs/k", "--epochs", 2)
    assert done.returncode == -signal.SIGKILL
    run_dir = tmp_path / "runs" / "k"
    lost = [f for f in OUTPUTS + FIGURES if not (run_dir / f).is_file()]
    assert name in lost and "model.npz" not in lost and _leftovers(run_dir)  # its temp file, and the lock
    result = run("train", "--resume", run_dir, "--data-dir", mnist_dir)
    assert f"had finished training; wrote what its folder lacked: {', '.join(lost)}" in result.output
    _assert_saved_and_finished(run_dir, 2)
    assert (run_dir / "curves.png").is_file() and (tmp_path / "runs" / "latest").resolve() == run_dir.resolve()
    refused = run("train", "--resume", run_dir, "--data-dir", mnist_dir, ok=False)
    assert refused.exit_code == 1 and "is a finished run (2 epochs); nothing to resume" in refused.output


def test_a_second_run_into_the_same_folder_is_refused_before_it_trains(mnist_dir, tmp_path):
    out = tmp_path / "same"
    out.mkdir()
    with exclusive(out / LOCK, wait=False):  # as a first `train --out same` holds it while it runs
        refused = run("train", "--data-dir", mnist_dir, "--out", out, "-q", ok=False)
        assert refused.exit_code == 1 and refused.output.count("\n") == 1
        assert f"{out}/ is being written by another `mnist-softmax train` right now" in refused.output
        assert [p.name for p in out.iterdir()] == [LOCK]
    started = [
        subprocess.Popen(
            [sys.executable, "-m", "mnist_softmax", "train", "--data-dir", str(mnist_dir), "--out", "both", "-q"],
            cwd=tmp_path,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )  # fmt: skip
        for _ in range(2)
    ]
    outcomes = sorted((p.wait(timeout=600), p.stderr.read()) for p in started)
    for p in started:
        p.stdout.close()
        p.stderr.close()
    assert [code for code, _ in outcomes] == [0, 1], outcomes
    assert "being written by another" in outcomes[1][1] or "already holds files" in outcomes[1][1]
    _assert_saved_and_finished(tmp_path / "both", 10)


def test_runs_latest_follows_runs_in_runs_only(mnist_dir, tmp_path):
    """runs/latest points at the newest run in ./runs/; a run written elsewhere with --out leaves it alone."""
    run("train", "--data-dir", mnist_dir, "--epochs", 1, "-q")
    latest = tmp_path / "runs" / "latest"
    first = latest.resolve()
    run("train", "--data-dir", mnist_dir, "--epochs", 1, "--out", tmp_path / "elsewhere", "-q")
    assert latest.resolve() == first
    run("train", "--data-dir", mnist_dir, "--epochs", 1, "--out", "runs/named", "-q")
    assert latest.resolve() == (tmp_path / "runs" / "named").resolve()
    np.testing.assert_array_equal(
        load_checkpoint(latest / "model.npz").model.W, load_checkpoint(tmp_path / "elsewhere" / "model.npz").model.W
    )
