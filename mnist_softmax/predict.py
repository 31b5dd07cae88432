"""Classify users' image files, and show the computation behind one prediction.

`predict_files` is what `mnist-softmax predict` runs: each file brought into MNIST form
(images.to_mnist) on a pool of worker processes (to_mnist_many), classified by the model, and,
when asked, every number of the computation.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import NamedTuple

import numpy as np

from .errors import ImageError
from .explain import Explanation, explain_features, explain_record
from .images import Prepared, to_mnist_or_error
from .model import Model
from .softmax import check_labels
from .threads import one_blas_thread


class Prediction(NamedTuple):
    """What `predict` found for one image file."""

    path: Path | None  # None: not from a file (a digit drawn on the local page)
    digit: np.ndarray  # (28, 28) uint8: the image in MNIST form, as the model saw it
    inverted: bool  # True when the ink was darker than its background
    probabilities: np.ndarray  # (T,)
    explain: dict | None = None  # explain.explain_record(...), when asked for
    label: int | None = None  # the true digit, when the user gave it
    loss: float | None = None  # softmax loss -log p(label), when a label was given
    explanation: Explanation | None = None  # every number of it (x, z, softmax's steps), computed once

    @property
    def digit_class(self) -> int:
        return int(self.probabilities.argmax())


def predict_files(
    model: Model, paths: Iterable[Path], explain: bool = False, label: int | None = None
) -> Iterator[Prediction | ImageError]:
    """For each image file, in order: its Prediction, or the ImageError saying why it has none.

    With `label`, each Prediction carries the softmax loss for it; with `explain`, every number
    of the computation (explain_numbers).
    """
    if label is not None:
        label = int(check_labels([label], 1, model.W.shape[0])[0])
    paths = [Path(p) for p in paths]
    # Read and normalised in parallel (to_mnist_many, below), in input order; classified here.
    for path, prepared in zip(paths, to_mnist_many(paths), strict=True):
        yield prepared if isinstance(prepared, ImageError) else predict_digit(model, prepared, path, explain, label)


def predict_digit(
    model: Model, prepared: Prepared, path: Path | None = None, explain: bool = False, label: int | None = None
) -> Prediction:
    """The Prediction for one digit already in MNIST form (images.Prepared): what predict_files
    gives for each file, and the local page for each digit drawn or dropped on it. Its features and
    logits are computed once (explain.explain), and every number shown derives from them."""
    return predict_features(model, prepared, model.features(prepared.digit[None])[0], path, explain, label)


def predict_features(
    model: Model, prepared: Prepared, x: np.ndarray, path: Path | None = None, explain=False, label=None
) -> Prediction:
    """predict_digit for a digit whose features x (N,) are known (the page's learning step changes
    the layer, not the front end)."""
    e = explain_features(model, x, label)
    return Prediction(path, prepared.digit, prepared.inverted, e.p, explain_record(model, e) if explain else None,
                      e.label, e.loss, e)  # fmt: skip


def predict_file(model: Model, path: Path, explain: bool = False, label: int | None = None) -> Prediction:
    """The Prediction for one image file; raises ImageError if it cannot be read or holds no digit."""
    result = next(predict_files(model, [path], explain, label))
    if isinstance(result, ImageError):
        raise result
    return result


def save_input_image(folder: Path, prediction: Prediction) -> Path:
    """Write the 28×28 image the model saw to folder/<name>.png, or <name>-2.png, -3, …: never over a
    file (fileio.write_new); the name is the input's stem, made a plain file name (safe_stem)."""
    import io

    from PIL import Image

    from .fileio import write_new

    buf = io.BytesIO()
    Image.fromarray(prediction.digit, "L").save(buf, format="PNG")
    return write_new(folder, safe_stem(prediction.path.stem), ".png", buf.getvalue())


def safe_stem(stem: str) -> str:
    """A name's stem made a plain file name in the folder it is written to: "." and ".." (from inputs
    named "..png" or "...png") would name a folder, so their dots become "_"."""
    return "_" * len(stem) if stem in ("", ".", "..") else stem


# ------------------------------------------------------------------------------ reading many images


def _worker_init() -> None:
    """A worker process: one BLAS thread (the workers are one per CPU already: a BLAS pool in each,
    busy-waiting between its small products, made two workers slower than one process), and
    Ctrl-C and SIGTERM left to the parent, which stops the pool (a worker neither prints a
    traceback for them nor runs the parent's SIGTERM handler)."""
    import gc
    import signal

    from threadpoolctl import threadpool_limits

    # The objects inherited from the parent are left out of this process's garbage collections:
    # a collection that walked them would write to their pages and so copy every one of them.
    gc.freeze()
    threadpool_limits(1)  # for the life of the process
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)


def to_mnist_many(paths: Iterable[str | Path], workers: int | None = None) -> Iterator[Prepared | ImageError]:
    """to_mnist for each path, in input order, yielding its Prepared or the ImageError it raised.

    Reads and normalises on `workers` (default: the CPUs this process may use) worker processes
    started by fork. One image, or workers=1, runs here and starts nothing, so
    a one-image `predict` pays no pool start-up. A worker process that dies (killed, or crashed by
    a file) costs nothing already done: the first image not yet read is read again by a process of
    its own (an ImageError naming the signal if that one dies too), then a new pool takes the rest.
    In this process, each image is read with BLAS held to one thread, a process-wide setting given
    back before the image is yielded: two threads reading here at once may leave it at one.
    """
    paths = list(paths)
    if workers is None:
        workers = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    workers = min(workers, len(paths))
    if workers <= 1:
        for path in paths:
            # BLAS's own threads only spin beside products this small: they would take a second
            # core for nothing (the pool's workers are limited to one thread likewise).
            with one_blas_thread():
                result = to_mnist_or_error(path)
            yield result
        return
    from concurrent.futures.process import BrokenProcessPool

    pending = paths
    while pending:
        pool = _pool(min(workers, len(pending)))
        done = 0
        try:
            # Chunks of a few images amortise the hand-over to a process; results keep input order.
            chunk = max(1, min(16, len(pending) // (4 * workers)))
            for result in pool.map(to_mnist_or_error, pending, chunksize=chunk):
                done += 1
                yield result
            pending = []
        except BrokenProcessPool:
            pending = pending[done:]
            yield _alone(pending[0])
            pending = pending[1:]
        finally:  # a reader that stops early (`| head -1`, Ctrl-C) does not wait for the images not yet begun
            pool.shutdown(wait=True, cancel_futures=True)


def _alone(path: str | Path) -> Prepared | ImageError:
    """to_mnist_or_error of one image in a worker process of its own: an ImageError saying how
    that process ended if it dies (a crash such as SIGSEGV is the file's doing; SIGKILL may be
    the out-of-memory killer or someone outside, and the message says which signal it was)."""
    ctx = _fork_context()
    reader, writer = ctx.Pipe(duplex=False)
    proc = ctx.Process(target=_read_into, args=(path, writer), daemon=True)
    proc.start()
    writer.close()
    try:
        return reader.recv()
    except EOFError:
        proc.join()
        code = proc.exitcode
        how = f"killed by {_signal_name(-code)}" if code < 0 else f"it exited with status {code}"
        return ImageError(f"{path}: a worker process died while reading this image ({how})")
    finally:
        reader.close()
        if proc.is_alive():  # Ctrl-C while it reads
            proc.kill()
        proc.join()


def _signal_name(number: int) -> str:
    import signal

    try:
        return signal.Signals(number).name
    except ValueError:  # a real-time signal
        return f"signal {number}"


def _read_into(path: str | Path, connection) -> None:
    """A worker process of _alone: read one image and send the result back."""
    _worker_init()
    connection.send(to_mnist_or_error(path))
    connection.close()


def _pool(workers: int):
    """A pool of `workers` processes started by fork (in milliseconds, with NumPy and Pillow already
    imported) where the platform has it."""
    import concurrent.futures as cf

    return cf.ProcessPoolExecutor(workers, mp_context=_fork_context(), initializer=_worker_init)


def _fork_context():
    """Processes started by fork where the platform has it (in milliseconds, with NumPy and Pillow
    already imported); the platform's default elsewhere."""
    import multiprocessing as mp

    return mp.get_context("fork" if "fork" in mp.get_all_start_methods() else None)
