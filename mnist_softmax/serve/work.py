"""The heavy part of the page's requests: reading an image, the prediction and the page's numbers,
a learning step, and the answer encoded as JSON. Much of it holds Python's GIL (the image rules'
many small NumPy calls, the JSON encoder), so threads alone would keep it on one core: a Pool runs
it in worker processes, one per core, and the server's threads only read requests, hold the locks
and send the bytes back. Without a pool (tests in one process, and the first requests while the
workers start) the same Work runs in the calling thread.

A worker holds the served model (sent once, when it starts: the very one the server read) and,
once a page asks for a test digit, the MNIST test set. A request brings what is its page's own: W
and b when its learning has moved them, its step counts, and what became of the checkpoint's path.
"""

from __future__ import annotations

import dataclasses
import multiprocessing
import signal
import sys
import threading
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from pathlib import Path

import numpy as np

from ..display import explain_strings, json_text, page_strings, prediction_record
from ..errors import DataError
from ..images import Prepared, prepare, read_image
from ..model import Model
from ..predict import predict_digit, predict_features
from ..text import path_text
from .errors import ApiError
from .page import delta_z, learn_step, page_numbers

Weights = tuple[np.ndarray, np.ndarray] | None  # a page's own W and b, or None: the checkpoint's


class Work:
    """What one request computes, from the served model and the MNIST test set in data_dir."""

    def __init__(self, model: Model, data_dir: Path):
        self.model = model
        self.data_dir = Path(data_dir)
        self._test: tuple[np.ndarray, np.ndarray] | None = None
        self._lock = threading.Lock()

    def test_images(self) -> np.ndarray:
        """The MNIST test images, read when first needed (never downloaded here)."""
        from ..data import load_local

        with self._lock:
            if self._test is None:
                try:
                    self._test = load_local(self.data_dir, ("test",))["test"]
                except DataError as e:
                    raise ApiError(404, str(e), "no-test-set", data_dir=path_text(self.data_dir)) from None
        return self._test[0]

    def digit(self, body: bytes, test_index: int | None) -> Prepared:
        """The digit in MNIST form: an MNIST test image itself, or an uploaded image file's, through
        the pipeline `predict` uses. ImageError when the image is refused."""
        if test_index is not None:
            images = self.test_images()
            if not 0 <= test_index < len(images):
                raise ApiError(400, f"test must be an index of the {len(images)} test images, got {test_index}")
            return Prepared(images[test_index], False, (0.0,), (0, 28, 0, 28))
        if not body:
            raise ApiError(400, "send an image file's bytes as the request body")
        return prepare(*read_image(body))

    def _model(self, weights: Weights) -> Model:
        return self.model if weights is None else dataclasses.replace(self.model, W=weights[0], b=weights[1])

    def predict(self, weights: Weights, body: bytes, label: int | None, test_index: int | None, extra: dict) -> bytes:
        """The record `predict --json --explain [--label Y]` prints for this image (path null), with
        "page": what the page draws (page.page_numbers) and where the digit was found; as JSON."""
        model = self._model(weights)
        prepared = self.digit(body, test_index)
        prediction = predict_digit(model, prepared, None, True, label)
        page = self._page(model, prediction, prepared, extra)
        return json_text(prediction_record(prediction) | {"page": page}).encode()

    def learn(
        self, weights: Weights, body: bytes, label: int, lr: float, test_index: int | None, extra: dict
    ) -> tuple[np.ndarray, np.ndarray, bytes]:
        """One SGD step of the page's softmax layer on this digit (page.learn_step): (W, b after it,
        the answer as JSON: the prediction before and after, and Δz beside its formula)."""
        model = self._model(weights)
        prepared = self.digit(body, test_index)
        first = predict_digit(model, prepared, None, True, label)
        x = first.explanation.x  # the front end does not learn here: the digit's features stay
        after = learn_step(model, x, label, lr)
        second = predict_features(after, prepared, x, None, True, label)
        before = prediction_record(first)
        before["shown"] = explain_strings(before["explain"])
        answer = {
            "before": before,
            "after": prediction_record(second) | {"page": self._page(after, second, prepared, extra)},
            "steps": extra["steps"],
            "lr": lr,
            "delta_z": delta_z(model, x, first.explanation.p, lr, label),
        }
        return after.W, after.b, json_text(answer).encode()

    def _page(self, model: Model, prediction, prepared: Prepared, extra: dict) -> dict:
        page = page_numbers(model, prediction.explanation)
        page["shown"] = explain_strings(prediction_record(prediction)["explain"]) | page_strings(page)
        page |= {"digit": prepared.digit.astype(int).tolist(), "box": list(prepared.box), "size": list(prepared.size)}
        return page | extra


# ---------------------------------------------------------------------------------- worker processes

_WORK: Work | None = None  # in a worker process: its Work


def _start_worker(model: Model, data_dir: str) -> None:
    from threadpoolctl import threadpool_limits

    from ..images import quiet_pillow_everywhere

    global _WORK
    threadpool_limits(1)  # a core each: the pool is the parallelism
    quiet_pillow_everywhere()
    _WORK = Work(model, Path(data_dir))


def _call(method: str, *args):
    return getattr(_WORK, method)(*args)


def _ready() -> bool:
    return _WORK is not None


class Pool:
    """Work in `workers` processes, started in the background: until they answer (or if one dies),
    the work is done in the calling thread instead, so the page never waits for them."""

    def __init__(self, model: Model, data_dir: Path, workers: int):
        self.inline = Work(model, data_dir)
        self.workers = workers
        self.ready = False
        self.broken = False
        context = multiprocessing.get_context("spawn")
        self._executor = ProcessPoolExecutor(workers, context, _start_worker, (model, str(data_dir)))
        # The workers are started by these first tasks, here: with Ctrl-C ignored while they start
        # (they inherit it), so that the terminal's Ctrl-C stops the server alone, which stops them.
        on_main = threading.current_thread() is threading.main_thread()
        before = signal.signal(signal.SIGINT, signal.SIG_IGN) if on_main else None
        try:
            first = [self._executor.submit(_ready) for _ in range(workers)]
        finally:
            if on_main:
                signal.signal(signal.SIGINT, before)
        threading.Thread(target=self._wait_ready, args=(first,), name="serve-pool", daemon=True).start()

    def _wait_ready(self, first) -> None:
        try:
            self.ready = all(f.result() for f in first)
        except Exception as e:  # noqa: BLE001 -- the page keeps working, in the server's threads
            self._broke(e)

    def run(self, method: str, *args):
        """Work.method(*args), in a worker when they are ready."""
        if not self.ready or self.broken:
            return getattr(self.inline, method)(*args)
        try:
            return self._executor.submit(_call, method, *args).result()
        except BrokenProcessPool as e:
            self._broke(e)
            return getattr(self.inline, method)(*args)

    def _broke(self, e: Exception) -> None:
        if not self.broken:
            self.broken = True
            print(f"serve: the worker processes stopped ({type(e).__name__}); working in this one", file=sys.stderr)

    def close(self, wait: float = 10.0) -> None:
        """Stop the workers: queued work is cancelled, and the pool is given up to `wait` s to wind
        down. Not waiting at all raced with the interpreter's exit: Python 3.11's concurrent.futures
        then wakes each pool's manager thread through a pipe that thread may be closing that very
        moment, and prints an "Exception ignored … Bad file descriptor" traceback (1 stop in 30)."""
        done = threading.Thread(target=self._executor.shutdown, kwargs={"cancel_futures": True}, daemon=True)
        done.start()
        done.join(wait)
