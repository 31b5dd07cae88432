"""What the page's requests act upon: the checkpoint served (read once, at start), each page's session,
the things all pages share (the run's test scores, the features live training and the test score
use), and the budget of image decoding. Every number it answers comes from the functions the CLI
uses: predict.predict_digit and display.prediction_record for the prediction (the record
`predict --json --explain` prints), page.py for the pictures, the learning step and the lesson's
worked examples, live.py for live training (train's own loop), scoring.score for the run's scores.

Many pages at once: nothing holds a lock while it computes but a page's own session (a learning
step, a frame of live training, "Save as"), so one page's work never waits behind another's; what
all pages share is computed once, the run's scores in the background from the start.
"""

from __future__ import annotations

import contextlib
import dataclasses
import re
import threading
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

from ..display import number
from ..errors import DataError
from ..fileio import remove_stale_temps
from ..model import Model, evaluate
from ..text import path_text, shown
from .errors import ApiError
from .live import LiveTraining, Shared, live_data
from .sessions import Session, Sessions
from .work import Pool, Work

# Decoding work: images up to SMALL_IMAGE pixels never wait; larger ones share DECODE_BUDGET pixels
# at a time, across all connections, and wait at most DECODE_WAIT seconds for it.
SMALL_IMAGE, DECODE_BUDGET, DECODE_WAIT = 4_000_000, 60_000_000, 10.0
SAVE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}(?<!\.)")  # the stem of a saved checkpoint

__all__ = ["SMALL_IMAGE", "DECODE_BUDGET", "DECODE_WAIT", "ApiError", "App", "DecodeBudget"]


class DecodeBudget:
    """The pixels of large images being decoded at once, in all connections together: one client's
    uploads of huge images wait their turn (or get 503) and cannot starve the others, whose small
    images (the page's own drawing) never wait. A waiting image whose client has gone is dropped."""

    def __init__(self, pixels: int):
        self.pixels = pixels
        self.in_use = 0
        self.turn = threading.Condition()

    @contextlib.contextmanager
    def hold(self, pixels: int, alive: Callable[[], bool]):
        """Held while an image of `pixels` is decoded. Over SMALL_IMAGE, it waits until the budget
        has room (or nothing else is decoding), checking that its client is still there."""
        if pixels <= SMALL_IMAGE:
            yield
            return
        with self.turn:
            deadline = time.monotonic() + DECODE_WAIT
            while self.in_use and self.in_use + pixels > self.pixels:
                if not alive():
                    raise ConnectionAbortedError("the client went away")
                if time.monotonic() > deadline:
                    raise ApiError(503, "busy reading other large images; try again, or send a smaller image", "busy")
                self.turn.wait(0.1)
            if not alive():
                raise ConnectionAbortedError("the client went away")
            self.in_use += pixels
        try:
            yield
        finally:
            with self.turn:
                self.in_use -= pixels
                self.turn.notify_all()


class Background:
    """A value all pages share, computed once on a thread of its own from start(): result() is None
    until it is ready; an error it met is raised to every caller, as an ApiError."""

    def __init__(self, make: Callable[[], object]):
        self._make, self._value, self._error, self._thread = make, None, None, None
        self._lock = threading.Lock()

    def start(self) -> Background:
        with self._lock:
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="serve-background", daemon=True)
                self._thread.start()
        return self

    def _run(self) -> None:
        try:
            self._value = self._make()
        except ApiError as e:
            self._error = e
        except Exception as e:  # noqa: BLE001 -- said to every page that asks, never lost on a thread
            self._error = ApiError(500, f"internal error ({type(e).__name__}: {e})")

    def result(self):
        self.start()
        if self._error is not None:
            raise self._error
        return self._value

    def wait(self, timeout: float | None = None):
        self.start()
        self._thread.join(timeout)
        return self.result()


class App:
    """What the page's requests act on: the served checkpoint's model, each page's session, and
    the MNIST test and training sets in data_dir (never downloaded here), read when first needed."""

    def __init__(self, checkpoint: Path, data_dir: Path, static: dict[str, tuple[str, bytes]] | None = None):
        from ..checkpoint import read_checkpoint

        # The file as it is now, found through any link (runs/latest): everything the page shows
        # comes from this one reading of it, and "Save as" writes beside it, whatever happens to
        # the path afterwards (a new `train` moves runs/latest; a file replaced is not reread).
        self.path = Path(checkpoint)
        self.real = self.path.resolve()
        self.signature = _signature(self.real)
        self.checkpoint, self.state = read_checkpoint(self.real)
        self.data_dir = Path(data_dir)
        self.sessions = Sessions(self.model)
        self.budget = DecodeBudget(DECODE_BUDGET)
        self.static = static or {}  # the page's files: {URL path: (content type, bytes)}
        self.site = None  # api.Site: the names the server answers to, set once it has its port
        self.test_set = Shared(lambda: self._local("test"))
        self.test_features = Shared(lambda: self.model.features(self.test_set.get()[0]))
        self.scores = Background(self._score_checkpoint)  # started by start(), or the first to ask
        self.live_data = Shared(lambda: live_data(self.model, self.checkpoint.config, _Parts(self._local("train"))))
        self.work = Work(self.model, self.data_dir)
        self.pool: Pool | None = None  # worker processes, from start(workers)
        self.closing = False
        self._saving = 0  # "Save as" under way
        self._saved = threading.Condition()
        # Temp files of a "Save as" (checkpoints) that a killed server left unfinished; nothing else.
        remove_stale_temps(self.real.parent, ".*.npz.*")

    def start(self, workers: int = 0) -> App:
        """Begin what all pages will want, in the background: the run's scores on the test set, and
        `workers` processes for the heavy part of each request (work.Pool; 0: in the server's threads)."""
        self.scores.start()
        if workers and self.pool is None:
            self.pool = Pool(self.model, self.data_dir, workers)
        return self

    @property
    def model(self) -> Model:
        return self.checkpoint.model

    def close(self, wait: float = 30.0) -> None:
        """Let a "Save as" under way finish (at most `wait` s), and start no other (503): a stopped
        server leaves no half-written file."""
        self.closing = True
        if self.pool is not None:
            self.pool.close()
        with self._saved:
            self._saved.wait_for(lambda: self._saving == 0, timeout=wait)

    def changed(self) -> dict | None:
        """What happened to the served checkpoint's path since the server read it, if anything: the
        page keeps showing (and saving beside) what was read at start, and says so."""
        try:
            now = self.path.resolve()
            if now != self.real:
                return {"kind": "moved", "path": path_text(self.path), "now": path_text(now),
                        "text": f"{shown(self.path)} now leads to {shown(now)}"}  # fmt: skip
            if _signature(now) != self.signature:
                return {
                    "kind": "replaced",
                    "path": path_text(self.path),
                    "text": f"{shown(self.path)} was replaced or changed",
                }
        except OSError:
            return {"kind": "gone", "path": path_text(self.path), "text": f"{shown(self.path)} is gone"}
        return None

    def _local(self, part: str):
        from ..data import load_local

        try:
            return load_local(self.data_dir, (part,))[part]
        except DataError as e:
            raise ApiError(404, str(e), "no-test-set" if part == "test" else "no-training-set",
                           data_dir=path_text(self.data_dir)) from None  # fmt: skip

    # ------------------------------------------------------------------------------ sessions

    def new_session(self) -> str:
        return self.sessions.new()

    def session(self, key: str | None) -> Session | None:
        return self.sessions.get(key)

    # ------------------------------------------------------------------------------ one digit

    def _run(self, method: str, *args):
        """work.Work.method(*args): in the worker processes when there are, else in this thread."""
        return self.pool.run(method, *args) if self.pool is not None else getattr(self.work, method)(*args)

    def _own(self, state: Session | None) -> tuple[tuple | None, dict]:
        """What a request brings of its page: its W and b (None: the checkpoint's), its step counts,
        and what became of the checkpoint's path. A Model is never changed, only replaced."""
        extra = {"steps": state.steps if state else 0, "live_steps": state.live_steps if state else 0}
        model = state.model if state else self.model
        weights = None if model is self.model else (model.W, model.b)
        return weights, extra | {"changed": self.changed()}

    @contextlib.contextmanager
    def _decoding(self, body: bytes, test_index: int | None, alive: Callable[[], bool]):
        """Held while an image is read: its turn in the decoding budget (for its size, from its
        header), and none at all for a client that is gone (ConnectionAbortedError)."""
        from ..images.decode import image_pixels

        pixels = image_pixels(body) if body and test_index is None else 0
        with self.budget.hold(pixels, alive):
            if not alive():
                raise ConnectionAbortedError("the client went away")
            yield

    def predict(
        self, body: bytes, label: int | None, session: str | None, test_index: int | None, alive=lambda: True
    ) -> bytes:
        """The record `predict --json --explain [--label Y]` prints for this image (path null), with
        "page": what the page draws (work.Work.predict); as JSON."""
        state = self.session(session)  # an unknown session is said before any image is read
        weights, extra = self._own(state)
        with self._decoding(body, test_index, alive):
            return self._run("predict", weights, body, label, test_index, extra)

    def learn(
        self, body: bytes, label: int, lr: float, session: str, test_index: int | None, alive=lambda: True
    ) -> bytes:
        """One SGD step of the session's softmax layer on this digit (work.Work.learn): the
        prediction before and after, as JSON."""
        state = self.session(session)
        with self._decoding(body, test_index, alive), state.lock:  # this page's own: a step at a time
            weights, extra = self._own(state)
            extra["steps"] = state.steps + 1
            W, b, answer = self._run("learn", weights, body, label, lr, test_index, extra)
            state.model = dataclasses.replace(self.model, W=W, b=b)
            state.steps += 1
        return answer

    def reset(self, session: str) -> dict:
        state = self.session(session)
        with state.lock:
            state.model, state.steps, state.live, state.live_steps = self.model, 0, None, 0
        return {"steps": 0}

    # ------------------------------------------------------------------------------ W, live training, scores

    def weights(self, session: str | None) -> dict:
        """W as the page draws it (page.weight_numbers), the session's, with its change since the checkpoint."""
        from .page import weight_numbers

        state = self.session(session)
        model = state.model if state else self.model
        return weight_numbers(model, self.model if state else None)

    def live(
        self, session: str, action: str, lr: float, batch: int, start_from: str, steps: int | None, since: int = 0
    ) -> dict:
        """Live training of the session's layer: "start" (from "zeros" or the "checkpoint"), then a
        "frame" at a time (live.LiveTraining.frame), each answered with W and the rows of its curves
        from frame `since` on (the page has the ones before)."""
        from .page import weight_numbers

        state = self.session(session)
        data = self.live_data.get()
        with state.lock:
            if action == "start" or state.live is None:
                seed = self.checkpoint.config["seed"]
                state.live = LiveTraining.start(self.model, self.checkpoint.config, start_from == "zeros", seed)
                state.model = dataclasses.replace(self.model, W=state.live.W.copy(), b=state.live.b.copy())
                state.live_steps = 0
            if action == "frame":
                live = state.live
                live.frame(data, lr, batch, steps)
                state.model = dataclasses.replace(self.model, W=live.W.copy(), b=live.b.copy())
                state.live_steps = live.steps
            history, epoch, seen, frames = state.live.since(since), state.live.epoch, state.live.seen, state.live.frames
            model = state.model
        last = state.live.history[-1] if state.live.history else {}
        return {
            "steps": state.live_steps,
            "epoch": epoch,
            "seen": seen,
            "rows": len(data.y),
            "val_rows": len(data.y_val),
            "frames": frames,
            "history": history,
            "val_accuracy": last.get("val_accuracy"),
            "shown": {"val_accuracy": number(last["val_accuracy"]) if last.get("val_accuracy") is not None else ""},
            "weights": weight_numbers(model),
        }

    def score(self, session: str | None) -> dict:
        """The test-set accuracy and mean loss of the session's layer (model.evaluate, what `eval`
        reports for a checkpoint saved from it), beside the served checkpoint's."""
        state = self.session(session)
        model = state.model if state else self.model
        images, labels = self.test_set.get()
        loss, accuracy = evaluate(model.W, model.b, self.test_features.get(), labels.astype(np.intp))
        base = self.scores.wait()[0]
        return {
            "accuracy": accuracy,
            "loss": loss,
            "steps": state.steps if state else 0,
            "live_steps": state.live_steps if state else 0,
            "checkpoint": {"accuracy": base.accuracy, "loss": base.loss},
            "shown": {
                "accuracy": f"{accuracy:.4f}",
                "loss": f"{loss:.4f}",
                "checkpoint_accuracy": f"{base.accuracy:.4f}",
                "checkpoint_loss": f"{base.loss:.4f}",
            },  # fmt: skip
        }

    # ------------------------------------------------------------------------------ saving

    def save(self, session: str, name: str | None) -> dict:
        """Write the session's model as a new checkpoint beside the served one, never over a file."""
        from ..checkpoint import checkpoint_bytes
        from ..fileio import write_new

        if name is not None:
            name = name.removesuffix(".npz")
            if not SAVE_NAME.fullmatch(name):
                raise ApiError(400, "a name is 1 to 64 ASCII letters, digits, '-', '_' or '.', from a letter or digit",
                               "bad-name")  # fmt: skip
        stem = name or _default_stem(self.real)
        state = self.session(session)
        with state.lock, self._saving_one():
            if not state.changed:
                raise ApiError(409, "no learning step taken on this page yet: nothing new to save", "nothing-to-save")
            learned = {"from": self.real.name, "steps": state.steps} | (
                {"live_steps": state.live_steps} if state.live_steps else {}
            )
            metrics = self.checkpoint.metrics | {"learned_on_page": learned}
            data = checkpoint_bytes(state.model, self.checkpoint.config, metrics)
            try:
                written = write_new(self.real.parent, stem, ".npz", data)
            except OSError as e:
                raise ApiError(500, f"could not save in {shown(self.real.parent)} ({e.strerror or e})", "save-failed",
                               folder=path_text(self.real.parent)) from None  # fmt: skip
        return {"saved": path_text(written), "name": written.name, "steps": state.steps, "live_steps": state.live_steps}

    @contextlib.contextmanager
    def _saving_one(self):
        with self._saved:
            if self.closing:
                raise ApiError(503, "the server is stopping", "stopping")
            self._saving += 1
        try:
            yield
        finally:
            with self._saved:
                self._saving -= 1
                self._saved.notify_all()

    # ------------------------------------------------------------------------------ the run

    def model_info(self) -> dict:
        m, cfg = self.model, self.checkpoint.config
        return {
            "checkpoint": path_text(self.path),
            "file": path_text(self.real),  # what was read at start, and where "Save as" writes
            "changed": self.changed(),
            "front_end": m.front_end,
            "map_shape": list(m.front.map_shape),
            "n_features": int(m.W.shape[1]),
            "classes": int(m.W.shape[0]),
            "lr": cfg["lr"],
            "momentum": cfg["momentum"],
            "weight_decay": cfg["weight_decay"],
            "batch_size": cfg["batch_size"],
            "data_dir": path_text(self.data_dir),
            # the processes that read images and predict (work.Pool), and whether they have started
            "workers": self.pool.workers if self.pool else 0,
            "workers_ready": bool(self.pool and self.pool.ready and not self.pool.broken),
        }

    def run(self) -> dict:
        """The run behind the served checkpoint: its per-epoch history as train saved it in the
        checkpoint, its final scores (none for a run that was interrupted), and what to say of it."""
        state = self.state
        if state is None:  # a checkpoint without training state (one saved from the page, say)
            raise ApiError(404, f"{shown(self.path)} holds no training history", "no-history")
        metrics, planned = self.checkpoint.metrics, self.checkpoint.config["epochs"]
        accuracy = metrics.get("test_accuracy")
        done = f"{state.epochs_done} epoch{'s' * (state.epochs_done != 1)} of {self.model.front_end}"
        scored = isinstance(accuracy, int | float) and not metrics.get("interrupted")
        line = f"{done}; test accuracy {accuracy:.4f}." if scored else (
            f"{done} of the {planned} planned: interrupted, never scored on the test set.")  # fmt: skip
        about = {"epochs": state.epochs_done, "planned": planned, "front_end": self.model.front_end,
                 "test_accuracy": f"{accuracy:.4f}" if scored else None}  # fmt: skip
        return {"history": state.history, "metrics": metrics, "summary": line, "about": about}

    def _score_checkpoint(self):
        from ..scoring import score

        _, labels = self.test_set.get()
        labels = labels.astype(np.intp)
        return score(self.model.W, self.model.b, self.test_features.get(), labels), labels

    def confusion(self) -> dict:
        """The checkpoint's test-set scores (computed once, in the background from the start) by
        scoring.score, the function `eval --split test` reports: the same accuracy and confusion
        matrix, to the last digit. {"ready": false} until they are."""
        found = self.scores.result()
        if found is None:
            return {"ready": False}
        scores, labels = found
        return {
            "ready": True,
            "confusion": scores.confusion.tolist(),
            "accuracy": scores.accuracy,
            "loss": scores.loss,
            "n": len(labels),
            "shown": {"accuracy": f"{scores.accuracy:.4f}", "loss": f"{scores.loss:.4f}"},  # as eval prints them
        }

    def examples(self) -> dict:
        """One test digit of each class (the first of it in the test set), for the page's examples:
        a way to bring a digit in from the keyboard."""
        images, labels = self.test_set.get()
        first = [int(np.flatnonzero(labels == k)[0]) for k in range(10)]
        digits = [{"label": k, "index": i, "digit": images[i].astype(int).tolist()} for k, i in enumerate(first)]
        return {"digits": digits}

    def cell(self, true: int, predicted: int, limit: int) -> dict:
        """The test digits of one cell of the confusion matrix (at most `limit`), by index."""
        found = self.scores.wait()
        images, _ = self.test_set.get()
        scores, labels = found
        idx = np.flatnonzero((labels == true) & (scores.probabilities.argmax(1) == predicted))
        return {
            "true": true,
            "predicted": predicted,
            "count": len(idx),
            "digits": [{"index": int(i), "digit": images[i].astype(int).tolist()} for i in idx[:limit]],
        }


class _Parts:
    """The MNIST training part as live.live_data takes it."""

    def __init__(self, train):
        self.train_images, self.train_labels = train


def _signature(path: Path) -> tuple[int, ...]:
    """What changes when a file is replaced or rewritten: its device, inode, size and mtime."""
    st = path.stat()
    return st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns


def _default_stem(checkpoint: Path) -> str:
    """<checkpoint's name>-learned, with anything but ASCII letters, digits, '-', '_' and '.' made '-'."""
    stem = re.sub(r"[^A-Za-z0-9_.-]", "-", checkpoint.stem).strip(".-") or "model"
    return f"{stem[:50]}-learned"
