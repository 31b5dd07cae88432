"""What the page's requests act upon: the checkpoint served (read once, at start), each page's
session of learning steps, the run's test scores, and the budget of image decoding they all share.
Every number it answers comes from the functions the CLI uses: predict.predict_digit and
display.prediction_record for the prediction (the record `predict --json --explain` prints),
page.py for the pictures and the learning step, scoring.score for the run's test scores.
"""

from __future__ import annotations

import collections
import contextlib
import re
import secrets
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..display import explain_strings, page_strings, prediction_record
from ..errors import DataError, MnistSoftmaxError
from ..fileio import remove_stale_temps
from ..images import Prepared, prepare, read_image
from ..model import Model
from ..predict import predict_digit, predict_features
from ..text import path_text, shown

# Decoding work: images up to SMALL_IMAGE pixels never wait; larger ones share DECODE_BUDGET pixels
# at a time, across all connections, and wait at most DECODE_WAIT seconds for it.
SMALL_IMAGE, DECODE_BUDGET, DECODE_WAIT = 4_000_000, 60_000_000, 10.0
MAX_SESSIONS, SESSION_IDLE_SECONDS = 16, 3600.0  # pages with their own learned weights
SAVE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}(?<!\.)")  # the stem of a saved checkpoint


class ApiError(MnistSoftmaxError):
    """A request the API refuses: its HTTP status and the one-line message sent as {"error": ...};
    for 405, the methods the path takes (the Allow header)."""

    def __init__(self, status: int, message: str, allow: str | None = None):
        super().__init__(message)
        self.status = status
        self.allow = allow


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
                    raise ApiError(503, "busy reading other large images; try again, or send a smaller image")
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


@dataclass
class Session:
    """One page's own weights: the checkpoint's, after the learning steps taken on that page."""

    model: Model
    steps: int = 0
    used: float = 0.0


class App:
    """What the page's requests act on: the served checkpoint's model, each page's session, and
    (for the run's test scores) the MNIST test set in data_dir, read when first asked for."""

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
        self.sessions: collections.OrderedDict[str, Session] = collections.OrderedDict()
        self.lock = threading.Lock()  # one computation at a time: two cores, and Pillow's warnings state
        self._scores = None
        self._test_set = None  # test_set(), once read
        self.budget = DecodeBudget(DECODE_BUDGET)
        self.closing = False
        self.static = static or {}  # the page's files: {URL path: (content type, bytes)}
        self.site = None  # api.Site: the names the server answers to, set once it has its port
        # Temp files of a "Save as" (checkpoints) that a killed server left unfinished; nothing else.
        remove_stale_temps(self.real.parent, ".*.npz.*")

    def changed(self) -> str | None:
        """What happened to the served checkpoint's path since the server read it, if anything: the
        page keeps showing (and saving beside) what was read at start, and says so."""
        try:
            now = self.path.resolve()
            if now != self.real:
                return f"{shown(self.path)} now leads to {shown(now)}"
            if _signature(now) != self.signature:
                return f"{shown(self.path)} was replaced or changed"
        except OSError:
            return f"{shown(self.path)} is gone"
        return None

    @contextlib.contextmanager
    def _turn(self):
        """The lock for one computation, unless the server is stopping (ApiError 503)."""
        with self.lock:
            if self.closing:
                raise ApiError(503, "the server is stopping")
            yield

    def close(self, wait: float = 30.0) -> None:
        """Let the computation or "Save as" under way finish (at most `wait` s), and start no other
        (those waiting their turn are answered 503): a stopped server leaves no half-written file."""
        self.closing = True
        if self.lock.acquire(timeout=wait):  # the computation under way is done; none starts after
            self.lock.release()

    @property
    def model(self) -> Model:
        return self.checkpoint.model

    # ------------------------------------------------------------------------------ sessions

    def new_session(self) -> str:
        with self._turn():
            self._forget_idle()
            while len(self.sessions) >= MAX_SESSIONS:
                self.sessions.popitem(last=False)  # the page least recently used
            key = secrets.token_urlsafe(16)
            self.sessions[key] = Session(self.model, used=time.monotonic())
            return key

    def session(self, key: str | None) -> Session | None:
        """The session of that key (None: the checkpoint's own weights); ApiError 404 if unknown or expired."""
        if key is None:
            return None
        self._forget_idle()
        found = self.sessions.get(key)
        if found is None:
            raise ApiError(404, "this page's session has expired (or never was): reload the page")
        found.used = time.monotonic()
        self.sessions.move_to_end(key)
        return found

    def _forget_idle(self) -> None:
        now = time.monotonic()
        for key in [k for k, s in self.sessions.items() if now - s.used > SESSION_IDLE_SECONDS]:
            del self.sessions[key]

    # ------------------------------------------------------------------------------ the lesson

    def digit(self, body: bytes, test_index: int | None, alive: Callable[[], bool] = lambda: True) -> Prepared:
        """The digit in MNIST form: an MNIST test image itself, or an uploaded image file's, through
        the pipeline `predict` uses. ImageError when the image is refused. Large images take their
        turn in the decoding budget, and none is decoded for a client that is gone (alive() false:
        ConnectionAbortedError). Runs outside the lock: reading one page's image holds up no other."""
        if test_index is not None:
            images, _ = self.test_set()
            if not 0 <= test_index < len(images):
                raise ApiError(400, f"test must be an index of the {len(images)} test images, got {test_index}")
            return Prepared(images[test_index], False, (0.0,), (0, 28, 0, 28))
        if not body:
            raise ApiError(400, "send an image file's bytes as the request body")
        colour, alpha = read_image(body, gate=lambda pixels: self.budget.hold(pixels, alive))
        if not alive():
            raise ConnectionAbortedError("the client went away")
        return prepare(colour, alpha)

    def predict(
        self, body: bytes, label: int | None, session: str | None, test_index: int | None, alive=lambda: True
    ) -> dict:
        """The record `predict --json --explain [--label Y]` prints for this image (path null), with
        "page": what the page draws (lesson.page_numbers) and where the digit was found."""
        from .page import page_numbers

        with self._turn():
            self.session(session)  # an unknown session is said before any image is read
        prepared = self.digit(body, test_index, alive)
        with self._turn():
            state = self.session(session)
            model = state.model if state else self.model
            prediction = predict_digit(model, prepared, None, True, label)
            record = prediction_record(prediction)
            page = page_numbers(model, prediction.explanation)
            page["shown"] = explain_strings(record["explain"]) | page_strings(page)
            page["digit"] = prepared.digit.astype(int).tolist()
            page |= {"box": list(prepared.box), "size": list(prepared.size), "steps": state.steps if state else 0}
        return record | {"page": page | {"changed": self.model_info()["changed"]}}

    def learn(
        self, body: bytes, label: int, lr: float, session: str, test_index: int | None, alive=lambda: True
    ) -> dict:
        """One SGD step of the session's softmax layer on this digit (lesson.learn_step): the
        prediction before and after."""
        from .page import learn_step, page_numbers

        with self._turn():
            self.session(session)  # an unknown session is said before any image is read
        prepared = self.digit(body, test_index, alive)
        with self._turn():
            state = self.session(session)
            first = predict_digit(state.model, prepared, None, True, label)
            x = first.explanation.x  # the front end does not learn here: the digit's features stay
            before = prediction_record(first)
            state.model = learn_step(state.model, x, label, lr)
            state.steps += 1
            second = predict_features(state.model, prepared, x, None, True, label)
            after = prediction_record(second)
            page = page_numbers(state.model, second.explanation)
            page["shown"] = explain_strings(after["explain"]) | page_strings(page)
            page["digit"] = prepared.digit.astype(int).tolist()
            page |= {"box": list(prepared.box), "size": list(prepared.size), "steps": state.steps}
            page["changed"] = self.model_info()["changed"]
            before["shown"] = explain_strings(before["explain"])
        return {"before": before, "after": after | {"page": page}, "steps": state.steps, "lr": lr}

    def reset(self, session: str) -> dict:
        with self._turn():
            state = self.session(session)
            state.model, state.steps = self.model, 0
        return {"steps": 0}

    def save(self, session: str, name: str | None) -> dict:
        """Write the session's model as a new checkpoint beside the served one, never over a file."""
        from ..checkpoint import checkpoint_bytes
        from ..fileio import write_new

        if name is not None:
            name = name.removesuffix(".npz")
            if not SAVE_NAME.fullmatch(name):
                raise ApiError(400, "a name is 1 to 64 ASCII letters, digits, '-', '_' or '.', from a letter or digit")
        stem = name or _default_stem(self.real)
        with self._turn():
            state = self.session(session)
            if state.steps == 0:
                raise ApiError(409, "no learning step taken on this page yet: nothing new to save")
            metrics = self.checkpoint.metrics | {"learned_on_page": {"from": self.real.name, "steps": state.steps}}
            data = checkpoint_bytes(state.model, self.checkpoint.config, metrics)
            try:
                written = write_new(self.real.parent, stem, ".npz", data)
            except OSError as e:
                raise ApiError(500, f"could not save in {shown(self.real.parent)} ({e.strerror or e})") from None
        return {"saved": path_text(written), "name": written.name, "steps": state.steps}

    # ------------------------------------------------------------------------------ the run

    def model_info(self) -> dict:
        m, cfg = self.model, self.checkpoint.config
        changed = self.changed()
        return {
            "checkpoint": path_text(self.path),
            "file": path_text(self.real),  # what was read at start, and where "Save as" writes
            "changed": changed and f"{changed} since this server read it: the page shows the model as read then",
            "front_end": m.front_end,
            "map_shape": list(m.front.map_shape),
            "n_features": int(m.W.shape[1]),
            "classes": int(m.W.shape[0]),
            "lr": cfg["lr"],
            "data_dir": path_text(self.data_dir),
        }

    def run(self) -> dict:
        """The run behind the served checkpoint: its per-epoch history as train saved it in the
        checkpoint, its final scores (none for a run that was interrupted), and a line that says so."""
        state = self.state
        if state is None:  # a checkpoint without training state (one saved from the page, say)
            raise ApiError(404, f"{shown(self.path)} holds no training history")
        metrics, planned = self.checkpoint.metrics, self.checkpoint.config["epochs"]
        accuracy = metrics.get("test_accuracy")
        done = f"{state.epochs_done} epoch{'s' * (state.epochs_done != 1)} of {self.model.front_end}"
        if isinstance(accuracy, int | float) and not metrics.get("interrupted"):
            line = f"{done}; test accuracy {accuracy:.4f}."
        else:
            line = f"{done} of the {planned} planned: interrupted, never scored on the test set."
        return {"history": state.history, "metrics": metrics, "summary": line}

    def test_set(self):
        """(test images (10000, 28, 28) uint8, labels (10000,)) from data_dir (data.load_test_set),
        never downloaded here; read and verified once."""
        if self._test_set is None:
            from ..data import load_test_set

            try:
                self._test_set = load_test_set(self.data_dir)
            except DataError as e:
                raise ApiError(404, str(e)) from None
        return self._test_set

    def confusion(self) -> dict:
        """The checkpoint's test-set scores (computed once) by scoring.score, the function `eval
        --split test` reports: the same accuracy and confusion matrix, to the last digit."""
        from ..scoring import score

        with self._turn():
            if self._scores is None:
                images, labels = self.test_set()
                labels = labels.astype(np.intp)
                self._scores = score(self.model.W, self.model.b, self.model.features(images), labels), labels
            scores, labels = self._scores
        return {
            "confusion": scores.confusion.tolist(),
            "accuracy": scores.accuracy,
            "loss": scores.loss,
            "n": len(labels),
            "shown": f"accuracy {scores.accuracy:.4f}, mean softmax loss {scores.loss:.4f}",  # as eval prints them
        }

    def cell(self, true: int, predicted: int, limit: int) -> dict:
        """The test digits of one cell of the confusion matrix (at most `limit`), by index."""
        self.confusion()
        images, _ = self.test_set()
        scores, labels = self._scores
        idx = np.flatnonzero((labels == true) & (scores.probabilities.argmax(1) == predicted))
        shown_idx = idx[:limit]
        return {
            "true": true,
            "predicted": predicted,
            "count": len(idx),
            "digits": [{"index": int(i), "digit": images[i].astype(int).tolist()} for i in shown_idx],
        }


def _signature(path: Path) -> tuple[int, ...]:
    """What changes when a file is replaced or rewritten: its device, inode, size and mtime."""
    st = path.stat()
    return st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns


def _default_stem(checkpoint: Path) -> str:
    """<checkpoint's name>-learned, with anything but ASCII letters, digits, '-', '_' and '.' made '-'."""
    stem = re.sub(r"[^A-Za-z0-9_.-]", "-", checkpoint.stem).strip(".-") or "model"
    return f"{stem[:50]}-learned"
