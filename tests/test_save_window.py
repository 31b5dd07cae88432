"""Nothing lost in the window where a run is saved: signals aimed at each file's write (tests/aim_signal.py),
once and back to back, for pixels and cnn; a save cut short by a crash is completed by --resume; two
runs into one folder; temp files of a helper stopped mid-figure."""

import json
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import run, start_train

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


@pytest.mark.parametrize("signals", ["INT,INT", "INT,TERM"])
def test_two_ctrl_c_back_to_back_during_an_epoch_save_the_epochs_and_skip_the_figures(mnist_dir, tmp_path, signals):
    """The second comes while the first is handled (the training loop closing): it waits for the save
    of the completed epoch, then stops the figures. The first signal decides the exit code."""
    done = aimed_train(
        tmp_path, f"call:train:sgd_step:300={signals}", "--data-dir", mnist_dir, "--out", "run", "--epochs", 5
    )  # 275 steps an epoch: partway through the second
    assert done.returncode == 130
    assert done.stderr.strip().splitlines() == [
        "interrupted while saving the run: run/ holds the model, metrics and summary; curves.png, weights.png "
        f"not drawn; continue with: mnist-softmax train --resume run --data-dir {mnist_dir}"
    ]
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary["interrupted"] and summary["epochs"] == 1 and not _leftovers(tmp_path / "run")


def test_an_interrupt_that_library_code_swallowed_stops_the_run_before_the_next_epoch(mnist_dir, tmp_path):
    """A signal whose exception something swallows (numpy's first import of numpy.random, inside a
    Cython module, does) still stops the run: before the first epoch, nothing saved and no folder..."""
    done = aimed_train(tmp_path, "swallow:train:rng_streams:1=TERM", "--data-dir", mnist_dir, "--out", "a")
    assert (done.returncode, done.stderr) == (143, "interrupted before the first epoch finished; nothing saved\n")
    assert not (tmp_path / "a").exists()
    # ...and during the second epoch, which then ends: the two epochs are saved, to be resumed
    aim = "swallow:train:train_epoch:2=INT"
    done = aimed_train(tmp_path, aim, "--data-dir", mnist_dir, "--out", "b", "--epochs", 3)
    assert done.returncode == 130, done.stderr
    assert done.stderr.startswith("interrupted: saved epoch 2/3 to b/; continue with: mnist-softmax train --resume b")
    summary = json.loads((tmp_path / "b" / "summary.json").read_text())
    assert summary["interrupted"] and summary["epochs"] == 2 and not _leftovers(tmp_path / "b")


@pytest.mark.parametrize(
    "aim", ["after:runs:draw_figures:1=INT", "after:training_run:_Session.save:1=INT", "exit=INT,INT", "exit=TERM"]
)
def test_a_signal_once_the_run_is_saved_has_nothing_to_stop(mnist_dir, tmp_path, aim):
    """As the last figure is done, or as the interpreter exits (a held-down Ctrl-C): the run is whole,
    the command says so as usual and exits 0, with no traceback from the interpreter's shutdown."""
    done = aimed_train(tmp_path, aim, "--data-dir", mnist_dir, "--out", "run", "--epochs", 1)
    assert (done.returncode, done.stderr) == (0, "")
    assert done.stdout.startswith("test accuracy ") and "wrote run/" in done.stdout
    _assert_saved_and_finished(tmp_path / "run", 1)
    assert all((tmp_path / "run" / f).is_file() for f in FIGURES)


def test_a_signal_once_an_interrupted_runs_figures_are_drawn_keeps_the_resume_hint(mnist_dir, tmp_path):
    """Interrupted in epoch 2, saved with its figures; a second signal then has nothing to stop."""
    done = aimed_train(
        tmp_path, ["call:train:train_epoch:2=INT", "after:training_run:_Session.save:1=TERM"],
        "--data-dir", mnist_dir, "--out", "run", "--epochs", 3,
    )  # fmt: skip
    assert done.returncode == 130 and done.stderr.splitlines() == [
        f"interrupted: saved epoch 1/3 to run/; continue with: mnist-softmax train --resume run --data-dir {mnist_dir}"
    ]
    assert all((tmp_path / "run" / f).is_file() for f in FIGURES) and not _leftovers(tmp_path / "run")


@pytest.mark.parametrize("aim", ["after:runs:new_run_dir:1=INT", "call:runs:remove_stale_temps:1=TERM"])
def test_a_signal_as_the_run_folder_is_made_and_claimed_leaves_no_folder(mnist_dir, tmp_path, aim):
    """As runs/<stamp>/ is made, or once its lock is taken: nothing was trained, nothing is left."""
    done = aimed_train(tmp_path, aim, "--data-dir", mnist_dir, "--epochs", 1)
    assert (done.returncode, done.stderr) == (CODES[aim.rsplit("=", 1)[1]], "interrupted\n")
    assert not [p for p in (tmp_path / "runs").iterdir()], list((tmp_path / "runs").iterdir())


@pytest.mark.parametrize("aim", ["import:numpy=INT", "import:numpy=TERM", "import:click=INT", "import:click=TERM"])
def test_a_signal_during_the_commands_own_imports_is_one_word_and_the_shells_code(mnist_dir, tmp_path, aim):
    """Ctrl-C or SIGTERM in the first half second (the imports, before any work): `interrupted` and
    130 or 143, never a traceback from inside an import, nor a silent death by the signal."""
    done = aimed_train(tmp_path, aim, "--data-dir", mnist_dir, "--epochs", 1)
    assert (done.returncode, done.stderr) == (CODES[aim.rsplit("=", 1)[1]], "interrupted\n")
    assert not (tmp_path / "runs").exists()


def test_a_signal_ignored_when_train_started_stays_ignored(mnist_dir, tmp_path):
    """A shell script's background job starts with SIGINT ignored: a Ctrl-C meant for the script
    does not stop the training (as Python itself leaves SIGINT); SIGTERM still does."""

    def ignore_sigint():
        signal.signal(signal.SIGINT, signal.SIG_IGN)

    cmd = [sys.executable, "-m", "mnist_softmax", "train", "--data-dir", str(mnist_dir), "--out", "run"]
    proc = subprocess.Popen([*cmd, "--epochs", "3"], cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, preexec_fn=ignore_sigint)  # fmt: skip
    assert proc.stdout.readline().startswith("epoch   1")
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=300)
    assert (proc.returncode, err) == (0, ""), err
    _assert_saved_and_finished(tmp_path / "run", 3)


@pytest.mark.parametrize("figure", FIGURES)
@pytest.mark.parametrize("helper", ["figure", "slow-figure"])
def test_a_signal_while_a_figure_is_written_leaves_no_temp_file(mnist_dir, tmp_path, figure, helper):
    """A quick helper finishes the figure it is on (Python waits 0.25 s for a child on Ctrl-C); a slow
    one is stopped mid-write, and its temp file removed. The message names what is missing; when
    nothing is, the run is whole and the command ends as usual."""
    done = aimed_train(tmp_path, f"{helper}:{figure}=INT", "--data-dir", mnist_dir, "--out", "run", "--epochs", 1)
    missing = [f for f in FIGURES if not (tmp_path / "run" / f).is_file()]
    if missing:
        assert done.returncode == 130, done.stderr
        assert done.stderr.strip() == (
            f"interrupted while drawing the figures: run/ holds the model, metrics and summary; "
            f"{', '.join(missing)} not drawn"
        )
    else:
        assert (done.returncode, done.stderr) == (0, "") and done.stdout.startswith("test accuracy")
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


def test_a_run_killed_as_it_wrote_its_first_file_leaves_a_folder_that_can_be_used_again(mnist_dir, tmp_path):
    """SIGKILL while model.npz is written: only the dead writer's temp file and the lock are left,
    which hold nothing; the same --out trains into the folder, and they are gone."""
    done = aimed_train(tmp_path, "write:model.npz=KILL", "--data-dir", mnist_dir, "--out", "k", "--epochs", 1)
    assert done.returncode == -signal.SIGKILL and _leftovers(tmp_path / "k")
    assert not list((tmp_path / "k").glob("[!.]*"))  # no file of the run's own
    run("train", "--data-dir", mnist_dir, "--out", tmp_path / "k", "--epochs", 1, "-q")
    _assert_saved_and_finished(tmp_path / "k", 1)


def test_a_second_run_into_the_same_folder_is_refused_before_it_trains(mnist_dir, tmp_path):
    out = tmp_path / "same"
    out.mkdir()
    with exclusive(out / LOCK, wait=False):  # as a first `train --out same` holds it while it runs
        refused = run("train", "--data-dir", mnist_dir, "--out", out, "-q", ok=False)
        assert refused.exit_code == 1 and refused.output.count("\n") == 1
        assert f"{out}/ is being written by another `mnist-softmax train` right now" in refused.output
        assert [p.name for p in out.iterdir()] == [LOCK]
    # Two processes: the second starts while the first trains (its first epoch printed), and is refused.
    first = start_train(mnist_dir, "both", tmp_path)
    assert first.stdout.readline().startswith("epoch   1")
    second = start_train(mnist_dir, "both", tmp_path, "-q")
    second_out, second_err = second.communicate(timeout=120)
    first_out, first_err = first.communicate(timeout=600)
    assert first.returncode == 0 and first_err == "", first_err
    assert second.returncode == 1 and second_out == ""
    want = "Error: both/ is being written by another `mnist-softmax train` right now; choose another --out\n"
    assert second_err == want
    _assert_saved_and_finished(tmp_path / "both", 10)


def test_runs_latest_follows_runs_in_runs_only(mnist_dir, tmp_path):
    """runs/latest points at the newest run in ./runs/; a run written elsewhere with --out leaves it alone."""
    run("train", "--data-dir", mnist_dir, "--epochs", 1, "-q")
    latest = tmp_path / "runs" / "latest"
    first = latest.resolve()
    run("train", "--data-dir", mnist_dir, "--epochs", 1, "--out", tmp_path / "elsewhere", "-q")
    assert latest.resolve() == first
    assert sorted(p.name for p in (tmp_path / "runs").iterdir()) == sorted([first.name, "latest"])
    assert not (tmp_path / "elsewhere" / "latest").exists() and not (tmp_path / "latest").exists()
    run("train", "--data-dir", mnist_dir, "--epochs", 1, "--out", "runs/named", "-q")
    assert latest.resolve() == (tmp_path / "runs" / "named").resolve() != first
