"""Nothing lost: Ctrl-C and SIGTERM at every stage of a run, --out over an existing run, runs/latest."""

import json
import os
import shlex
import signal
import subprocess
import sys

import numpy as np
import pytest
from click.testing import CliRunner
from conftest import interrupt_call, run, signal_training, start_train

import mnist_softmax.train as train_mod
from mnist_softmax.checkpoint import load_checkpoint
from mnist_softmax.cli import main
from mnist_softmax.config import make_config
from mnist_softmax.fileio import remove_stale_temps
from mnist_softmax.runs import FIGURES
from mnist_softmax.train import TrainingInterrupted, fit


def _interrupt_call(monkeypatch, n: int) -> None:
    """Ctrl-C at the n-th call of train.evaluate (2 epochs: calls 1-2 score the validation split
    after each epoch, 3-5 the final train, val and test scores)."""
    interrupt_call(monkeypatch, train_mod, "evaluate", n)


@pytest.mark.parametrize("call", [3, 5])
def test_an_interrupt_while_the_final_scores_are_computed_keeps_every_epoch(monkeypatch, call):
    from test_train import synthetic_mnist

    data = synthetic_mnist(600, 100)
    cfg = make_config({"epochs": 2, "val_size": 100, "batch_size": 50})
    straight = fit(cfg, data)
    with monkeypatch.context() as m:
        _interrupt_call(m, call)
        with pytest.raises(TrainingInterrupted) as e:
            fit(cfg, data)
    partial = e.value.result
    assert len(partial.history) == 2 and not partial.final and e.value.exit_code == 130
    np.testing.assert_array_equal(partial.model.W, straight.model.W)
    resumed = fit(cfg, data, resume=partial.state)  # no epoch left: only the scores
    assert resumed.final == straight.final


def test_ctrl_c_after_the_last_epoch_saves_the_run_with_the_resume_hint(mnist_dir, tmp_path, monkeypatch):
    out = tmp_path / "run"
    with monkeypatch.context() as m:  # undoing the whole monkeypatch would undo the test's own working folder
        _interrupt_call(m, 5)
        result = CliRunner().invoke(
            main, ["train", "--data-dir", str(mnist_dir), "--out", str(out), "--epochs", "2", "-q"]
        )
    assert result.exit_code == 130, result.output
    hint = f"continue with: mnist-softmax train --resume {out} --data-dir {mnist_dir}"
    assert f"saved epoch 2/2 to {out}/; {hint}" in result.stderr
    assert json.loads((out / "summary.json").read_text())["interrupted"]
    run(*shlex.split(hint.removeprefix("continue with: mnist-softmax ")), "-q")  # the hint, as given, is enough
    run("train", "--data-dir", mnist_dir, "--out", tmp_path / "straight", "--epochs", "2", "-q")
    a, b = load_checkpoint(out / "model.npz"), load_checkpoint(tmp_path / "straight" / "model.npz")
    np.testing.assert_array_equal(a.model.W, b.model.W)
    assert a.metrics["test_accuracy"] == b.metrics["test_accuracy"] and not a.metrics["interrupted"]


def test_out_over_an_existing_run_is_refused(trained, mnist_dir, tmp_path):
    cwd, _ = trained
    run_dir = (cwd / "runs" / "latest").resolve()
    before = {p.name: p.stat().st_mtime_ns for p in run_dir.iterdir()}
    result = CliRunner().invoke(main, ["train", "--data-dir", str(mnist_dir), "--out", str(run_dir), "-q"])
    assert result.exit_code == 1 and result.output.count("\n") == 1
    assert f"--out {run_dir} already holds files" in result.output
    assert {p.name: p.stat().st_mtime_ns for p in run_dir.iterdir()} == before
    (tmp_path / "empty").mkdir()  # an empty folder is fine
    run("train", "--data-dir", mnist_dir, "--out", tmp_path / "empty", "--epochs", "1", "-q")


def test_sigterm_saves_the_completed_epochs_and_exits_143(mnist_dir, tmp_path):
    out = tmp_path / "run"
    code, err, summary = signal_training(mnist_dir, out, tmp_path, signal.SIGTERM, 2)
    assert code == 143, err
    assert "continue with: mnist-softmax train --resume" in err and "Traceback" not in err
    assert summary["interrupted"] and 2 <= summary["epochs"] < 40
    assert not [p for p in out.iterdir() if p.name.startswith(".")], "temp files left behind"


def test_sigterm_before_the_first_epoch_leaves_no_empty_folder(mnist_dir, tmp_path):
    import time

    out = tmp_path / "run"
    proc = start_train(mnist_dir, out, tmp_path, "--epochs", "2", "--batch-size", "1")  # epochs of seconds
    while not out.exists() and proc.poll() is None:  # the run folder is made just before training starts
        time.sleep(0.01)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 143, err
    assert "interrupted before the first epoch finished; nothing saved" in err or err.strip() == "interrupted"
    assert not out.exists()


def test_temp_files_of_killed_writers_are_removed_later(tmp_path):
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    stale = tmp_path / f".conv-v3-abc.npy.{dead.stdout.strip()}-1a2b3c4d.tmp"
    live = tmp_path / f".conv-v3-abc.npy.{os.getppid()}-1a2b3c4d.tmp"
    other = tmp_path / ".notes.txt"
    for f in (stale, live, other):
        f.write_bytes(b"x")
    assert remove_stale_temps(tmp_path) == [stale]
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([live.name, other.name])


def test_a_real_folder_at_runs_latest_does_not_fail_a_saved_run(mnist_dir, tmp_path):
    (tmp_path / "runs" / "latest").mkdir(parents=True)
    result = run("train", "--data-dir", mnist_dir, "--epochs", "1", "-q")
    assert "runs/latest is not a link that can be replaced" in result.stderr
    run_dirs = [p for p in (tmp_path / "runs").iterdir() if p.name != "latest"]
    assert len(run_dirs) == 1 and (run_dirs[0] / "model.npz").is_file() and (run_dirs[0] / "weights.png").is_file()


def test_ctrl_c_while_the_figures_are_drawn_says_what_was_saved(mnist_dir, tmp_path, monkeypatch):
    import mnist_softmax.runs as runs_mod

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(runs_mod, "draw_figures", interrupted)
    result = CliRunner().invoke(main, ["train", "--data-dir", str(mnist_dir), "--epochs", "1", "-q"])
    assert result.exit_code == 130
    assert "interrupted while drawing the figures" in result.stderr
    assert "curves.png, weights.png not drawn" in result.stderr
    latest = tmp_path / "runs" / "latest"
    assert latest.is_symlink() and (latest / "model.npz").is_file()
    assert not json.loads((latest / "summary.json").read_text())["interrupted"]  # training did finish


def test_ctrl_c_again_while_an_interrupted_runs_figures_are_drawn_keeps_the_resume_hint(
    mnist_dir, tmp_path, monkeypatch
):
    import mnist_softmax.runs as runs_mod

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    out = tmp_path / "run"
    _interrupt_call(monkeypatch, 2)  # after epoch 2 of 3 is scored
    monkeypatch.setattr(runs_mod, "draw_figures", interrupted)
    result = CliRunner().invoke(main, ["train", "--data-dir", str(mnist_dir), "--out", str(out), "--epochs", "3", "-q"])
    assert result.exit_code == 130
    assert "interrupted while drawing the figures" in result.stderr
    assert f"continue with: mnist-softmax train --resume {out} --data-dir {mnist_dir}" in result.stderr
    assert json.loads((out / "summary.json").read_text())["interrupted"]


def test_figures_of_an_earlier_save_are_not_passed_off_as_the_resumed_runs(mnist_dir, tmp_path, monkeypatch):
    """A resumed run whose figures are cut short says they are missing, rather than leave the
    interrupted run's figures (fewer epochs) in place as if they were its own."""
    import mnist_softmax.runs as runs_mod

    out = tmp_path / "run"
    with pytest.MonkeyPatch.context() as m:
        _interrupt_call(m, 2)  # after epoch 2 of 3 is scored: saved with its figures
        CliRunner().invoke(main, ["train", "--data-dir", str(mnist_dir), "--out", str(out), "--epochs", "3", "-q"])
    assert all((out / f).is_file() for f in FIGURES)

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(runs_mod, "draw_figures", interrupted)
    result = CliRunner().invoke(main, ["train", "--resume", str(out), "--data-dir", str(mnist_dir), "-q"])
    assert result.exit_code == 130 and "curves.png, weights.png not drawn" in result.stderr
    assert not any((out / f).exists() for f in FIGURES)


def test_train_and_eval_without_a_validation_split(mnist_dir, tmp_path):
    run("train", "--data-dir", mnist_dir, "--out", tmp_path / "run", "--val-size", "0", "--epochs", "1", "-q")
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary["val_accuracy"] is None and summary["test_accuracy"] > 0.85
    result = CliRunner().invoke(
        main,
        ["eval", "--checkpoint", str(tmp_path / "run" / "model.npz"), "--split", "val", "--data-dir", str(mnist_dir)],
    )
    assert result.exit_code == 1 and result.output.count("\n") == 1 and "without a val split" in result.output


def test_a_failed_run_keeps_the_real_error_and_the_users_own_folder(mnist_dir, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    result = CliRunner().invoke(main, ["train", "--data-dir", str(mnist_dir), "--out", ".", "--lr", "1e38", "-q"])
    assert result.exit_code == 1 and result.output.count("\n") == 1 and "training diverged" in result.output
    mine = tmp_path / "mine"
    mine.mkdir()
    result = CliRunner().invoke(main, ["train", "--data-dir", str(mnist_dir), "--out", str(mine), "--lr", "1e38"])
    assert "training diverged" in result.output and mine.is_dir()  # made by the user: not removed
    result = CliRunner().invoke(main, ["train", "--data-dir", str(mnist_dir), "--out", "fresh", "--lr", "1e38"])
    assert "training diverged" in result.output and not (tmp_path / "fresh").exists()  # made by the run: removed


def test_resuming_a_finished_run_is_refused(trained, mnist_dir):
    cwd, _ = trained
    run_dir = (cwd / "runs" / "latest").resolve()
    before = (run_dir / "model.npz").stat().st_mtime_ns
    result = CliRunner().invoke(main, ["train", "--resume", str(run_dir), "--data-dir", str(mnist_dir)])
    assert result.exit_code == 1 and "is a finished run (10 epochs); nothing to resume" in result.output
    assert (run_dir / "model.npz").stat().st_mtime_ns == before


def test_the_shield_keeps_an_ignored_signal_ignored_and_drops_signals_left_waiting():
    """Unit: a signal ignored on entry stays ignored; one that waits (held) when the shield is left
    came after the work it guarded, and is dropped; the handlers from before are back."""
    import time

    from mnist_softmax.signals import Shield

    before = signal.getsignal(signal.SIGINT)
    try:
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        with Shield():
            assert signal.getsignal(signal.SIGINT) == signal.SIG_IGN
            os.kill(os.getpid(), signal.SIGINT)  # nothing happens
            assert signal.getsignal(signal.SIGTERM) != signal.SIG_DFL  # SIGTERM is the shield's
        signal.signal(signal.SIGINT, before)
        with Shield() as shield:
            shield.hold()
            os.kill(os.getpid(), signal.SIGINT)
            time.sleep(0.01)
            assert shield.waiting == [signal.SIGINT]
        assert signal.getsignal(signal.SIGINT) is before and shield.waiting == []
    finally:
        signal.signal(signal.SIGINT, before)


def test_the_shield_raises_again_an_interrupt_that_was_swallowed():
    """Unit: check() does nothing until a signal interrupted; then it raises that interrupt again,
    for work that went on only because something swallowed the first exception."""
    import time

    from mnist_softmax.errors import Terminated
    from mnist_softmax.signals import Shield

    with Shield() as shield:
        shield.check()
        try:
            os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(5)  # cut short by the handler
        except KeyboardInterrupt:  # swallowed, as library code might
            pass
        with pytest.raises(Terminated):
            shield.check()


def test_a_folder_only_a_half_made_lock_holds_is_removed(tmp_path):
    """remove_if_unused: a lock file no process holds and a dead writer's temp file keep nothing; a
    file a run wrote, or a lock another train holds, keeps the folder."""
    from mnist_softmax.fileio import exclusive
    from mnist_softmax.runs import LOCK, remove_if_unused

    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    (run_dir / LOCK).write_bytes(b"")
    (run_dir / f".model.npz.{dead.stdout.strip()}-1a2b3c4d.tmp").write_bytes(b"x")
    with exclusive(run_dir / LOCK, wait=False):  # another train holds it (a lock is per open file)
        held = subprocess.run(
            [sys.executable, "-c", f"from mnist_softmax.runs import remove_if_unused; from pathlib import Path; "
             f"remove_if_unused(Path({str(run_dir)!r}))"], capture_output=True, text=True,
        )  # fmt: skip
        assert held.returncode == 0, held.stderr
        assert run_dir.is_dir()
    (run_dir / LOCK).write_bytes(b"")
    (run_dir / "metrics.csv").write_text("epoch\n")
    remove_if_unused(run_dir)
    assert run_dir.is_dir()
    (run_dir / "metrics.csv").unlink()
    remove_if_unused(run_dir)
    assert not run_dir.exists()
