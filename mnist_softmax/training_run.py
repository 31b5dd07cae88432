"""What `mnist-softmax train` does with a run folder: make and runs.claim it, train into it, save it whole
whatever signals come, draw its figures; and complete the folder of a run whose save was cut short.

Signals (signals.Shield): the first Ctrl-C or SIGTERM interrupts the training; the completed epochs
are then saved, with the command that resumes them, and later signals wait until the save is done.
A signal while the figures are drawn leaves a complete run without them, and the message says so.
Messages go through `log` (stderr in the CLI); a run stopped by a signal ends in errors.Stopped,
whose code is the signal's (130, 143). The folder rules themselves are in runs.py, called through
the module, so that tests can aim signals at them.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from pathlib import Path

from . import runs
from .config import Config
from .errors import MnistSoftmaxError, Stopped, exit_code
from .state import TrainResult, TrainState
from .text import shown

Log = Callable[[str], None]


def out_taken(out: Path) -> MnistSoftmaxError:
    return MnistSoftmaxError(f"--out {shown(out)} already holds files; runs are never overwritten: choose a new folder")


def train_run(
    cfg: Config,
    state: TrainState | None,
    load_data: Callable[[], object],
    out: Path | None,
    resume: Path | None,
    cache_dir: Path,
    resume_flags: str,
    on_epoch: Callable[[dict], None],
    report: Callable[[TrainResult, Path], None],
    log: Log,
    progress: bool = False,
) -> None:
    """Train the run by cfg (or continue `resume`, from state) into its folder, save it, and call
    report(result, run folder) with signals held (a signal then has nothing left to stop, and is
    dropped). The folder is `resume`, `out`, or a new runs/<timestamp>; a folder this made and could
    not fill is removed. load_data() gives the MNIST arrays (a download, perhaps), under the shield
    already. resume_flags: the --data-dir and --mirror flags a later command needs."""
    from .plots import Painter
    from .signals import Shield

    if out is not None and runs.holds_files(out):
        raise out_taken(out)
    # Shield: the first Ctrl-C or SIGTERM interrupts, later ones wait until the run is saved.
    # Painter: imports matplotlib in a helper process while this one trains.
    with Shield() as shield, Painter() as painter:
        mnist = load_data()
        created = resume is None and (out is None or not out.exists())
        shield.hold()  # until the folder is made and claimed: a signal then finds it, to remove it if empty
        run_dir = resume or out or runs.new_run_dir()
        try:
            run_dir.mkdir(parents=True, exist_ok=True)
            with runs.claim(run_dir):  # a second train into this folder is refused, before it trains
                shield.release()
                if resume is None and runs.holds_files(run_dir):  # another run filled it since the check above
                    raise out_taken(run_dir)
                hint = f"mnist-softmax train --resume {shown(run_dir)}{resume_flags}"
                session = _Session(run_dir, cfg, shield, painter, hint, log)
                result = session.train_and_save(mnist, state, cache_dir, on_epoch, progress)
        except BaseException:
            if created:  # a folder this run made and could not fill goes again; one the user made stays
                with contextlib.suppress(OSError):  # best effort: never hides the error that stopped the run
                    runs.remove_if_unused(run_dir)
            raise
        report(result, run_dir)  # saved, with signals held: one now has nothing left to stop, and is dropped


class _Session:
    """One run being trained into its folder: the choreography of training, saving and drawing."""

    def __init__(self, run_dir: Path, cfg: Config, shield, painter, hint: str, log: Log):
        self.run_dir, self.cfg, self.shield, self.painter, self.hint, self.log = (
            run_dir,
            cfg,
            shield,
            painter,
            hint,
            log,
        )

    def train_and_save(self, mnist, state, cache_dir: Path, on_epoch, progress: bool) -> TrainResult:
        """Train (train.fit) and save the run, or, when interrupted, save its completed epochs with
        the command that resumes it and stop with the signal's code."""
        from .train import TrainingInterrupted, fit

        shield = self.shield
        try:
            result = fit(
                self.cfg, mnist, on_epoch, progress, cache_dir, state,
                on_finish=shield.hold, check_interrupt=shield.check,
            )  # fmt: skip
        except TrainingInterrupted as e:  # the shield holds later signals from here until the run is saved
            if not e.result.history:
                self.log("interrupted before the first epoch finished; nothing saved")
                raise Stopped(e.exit_code) from None
            self.save(e.result, interrupted=e.exit_code)  # returns holding signals
            saved = f"saved epoch {len(e.result.history)}/{self.cfg.epochs} to {shown(self.run_dir)}/"
            self.log(f"interrupted: {saved}; continue with: {self.hint}")
            raise Stopped(e.exit_code) from None
        self.save(result)
        return result

    def save(self, result: TrainResult, interrupted: int | None = None) -> None:
        """Write the run (runs.save_outputs, which points runs/latest at a run in runs/) with signals
        held, so no signal cuts the save short; then draw its figures. A signal that came during the
        save acts once it is complete; one while the figures are drawn leaves a complete run without
        them. Either way the message says what was saved, and for a run that was itself interrupted,
        the command that resumes it, and the exit code is that of the signal that interrupted it
        (`interrupted`). One that comes once every figure is drawn has nothing left to stop: this
        returns with signals held, so none cuts short the message that follows."""
        self.shield.hold()
        self._write(result)
        when = "saving the run"
        try:
            self.shield.release()  # a signal that came during the save acts now, everything saved
            when = "drawing the figures"
            runs.draw_figures(self.run_dir, result, self.painter)
            self.shield.hold()  # all drawn: a signal now has nothing left to stop
        except KeyboardInterrupt as e:
            missing = [f for f in runs.FIGURES if not (self.run_dir / f).exists()]
            if when == "drawing the figures" and not missing:  # it came as the last one was done: nothing to stop
                return
            self.log(
                f"interrupted while {when}: {shown(self.run_dir)}/ holds the model, metrics and summary"
                + (f"; {', '.join(missing)} not drawn" if missing else "")
                + (f"; continue with: {self.hint}" if interrupted else "")
            )
            raise Stopped(interrupted or exit_code(e)) from None

    def _write(self, result: TrainResult) -> None:
        """The run's files (runs.save_outputs); a failure after model.npz is written says that the
        checkpoint, which holds everything else, is safe and how to complete the folder from it."""
        try:
            latest_ok = runs.save_outputs(self.run_dir, result, self.cfg)
        except OSError as e:  # a full disk, say: if the checkpoint is written, it holds everything else
            if not e.filename or Path(e.filename).name == "model.npz" or not (self.run_dir / "model.npz").is_file():
                raise
            raise MnistSoftmaxError(
                f"{e.strerror or e}: {shown(e.filename)}; the run itself is saved in {shown(self.run_dir)}/model.npz: "
                f"once this is fixed, `{self.hint}` takes it from there"
            ) from None
        # An earlier save's figures (a resumed run's) show fewer epochs: drawn afresh, or said missing.
        for name in runs.FIGURES:
            (self.run_dir / name).unlink(missing_ok=True)
        if not latest_ok:
            self.log("note: runs/latest is not a link that can be replaced (a real folder?); it was left as it is")


def complete_saved_run(run_dir: Path) -> tuple[TrainResult, Config, list[str]] | None:
    """`train --resume` of a run whose training finished but whose folder lacks files (its save was
    cut short: a crash, a full disk): write them from its model.npz, which holds them all. (result,
    config, the files written), or None, and nothing done, for any other run."""
    missing = runs.missing_outputs(run_dir)
    if "model.npz" in missing or not missing:
        return None
    result, cfg, finished = runs.saved_result(run_dir)
    if not finished:
        return None
    with runs.claim(run_dir):
        runs.save_outputs(run_dir, result, cfg, only=tuple(m for m in missing if m in runs.OUTPUTS))
        if any(m in runs.FIGURES for m in missing):
            runs.draw_figures(run_dir, result)
    return result, cfg, missing
