"""`mnist-softmax serve`: the lesson on a local page. The server computes, the page draws.

A small HTTP server (the standard library's ThreadingHTTPServer: see docs/serve.md for why) that
serves the page's own files (mnist_softmax/web/, nothing else) and a JSON API under /api/. Every
number the page shows comes from the functions the CLI uses: predict.predict_digit and
display.prediction_record for the prediction (the record `predict --json --explain` prints),
lesson.py for the pictures and the learning step, scoring.score_split for the run's test scores.

Guards, since it is a server even on loopback: the Host header must name this server (no DNS
rebinding), a POST's Origin must be this page's, bodies over MAX_BODY are refused unread, each
connection is cut REQUEST_SECONDS after it opened (slow or half-open clients), at most
MAX_CONNECTIONS are served at once, and the only file a request can write is a new checkpoint
beside the served one ("Save as", fileio.write_new: never over a file).
"""

from __future__ import annotations

import collections
import contextlib
import errno
import http.server
import ipaddress
import json
import math
import re
import secrets
import socket
import sys
import threading
import time
import urllib.parse
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .display import explain_strings, json_text, prediction_record
from .errors import MnistSoftmaxError
from .fileio import remove_stale_temps
from .images import ImageError, Prepared, prepare, quiet_pillow_everywhere, read_image
from .model import Model
from .predict import predict_digit, predict_features
from .text import escape_controls, path_text, shown

MAX_BODY = 10 * 1024 * 1024  # bytes of an uploaded image
REQUEST_SECONDS = 15.0  # a connection is closed this long after it opened, whatever its client does
READ_SECONDS = 10.0  # ... and when its client sends nothing for this long
# Decoding work: images up to SMALL_IMAGE pixels never wait; larger ones share DECODE_BUDGET pixels
# at a time, across all connections, and wait at most DECODE_WAIT seconds for it.
SMALL_IMAGE, DECODE_BUDGET, DECODE_WAIT = 4_000_000, 60_000_000, 10.0
MAX_CONNECTIONS = 64
IDLE_SECONDS = 0.5  # with every connection taken, one that has sent nothing for this long is cut first
MAX_SESSIONS, SESSION_IDLE_SECONDS = 16, 3600.0  # pages with their own learned weights
MAX_LR, DEFAULT_LR = 100.0, 0.005
SAVE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}(?<!\.)")  # the stem of a saved checkpoint
NUMBER = re.compile(r"[+-]?([0-9]+\.?[0-9]*|\.[0-9]+)([eE][+-]?[0-9]+)?")  # a plain decimal number, ASCII only
WEB = "web"  # the page's files, package data of mnist_softmax
CONTENT_TYPES = {".html": "text/html; charset=utf-8", ".css": "text/css; charset=utf-8", ".js": "text/javascript"}
# The page loads nothing from anywhere but this server.
CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' blob: data:; connect-src 'self'; "
    "frame-ancestors 'none'; base-uri 'none'; form-action 'none'"
)


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


class Lesson:
    """What the page's requests act on: the served checkpoint's model, each page's session, and
    (for the run's test scores) the MNIST test set in data_dir, read when first asked for."""

    def __init__(self, checkpoint: Path, data_dir: Path):
        from .checkpoint import read_checkpoint

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
        from .lesson import page_numbers

        with self._turn():
            self.session(session)  # an unknown session is said before any image is read
        prepared = self.digit(body, test_index, alive)
        with self._turn():
            state = self.session(session)
            model = state.model if state else self.model
            prediction = predict_digit(model, prepared, None, True, label)
            record = prediction_record(prediction)
            page = page_numbers(model, prediction.explanation) | {"shown": explain_strings(record["explain"])}
            page["digit"] = prepared.digit.astype(int).tolist()
            page |= {"box": list(prepared.box), "size": list(prepared.size), "steps": state.steps if state else 0}
        return record | {"page": page | {"changed": self.model_info()["changed"]}}

    def learn(
        self, body: bytes, label: int, lr: float, session: str, test_index: int | None, alive=lambda: True
    ) -> dict:
        """One SGD step of the session's softmax layer on this digit (lesson.learn_step): the
        prediction before and after."""
        from .lesson import learn_step, page_numbers

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
            page = page_numbers(state.model, second.explanation) | {"shown": explain_strings(after["explain"])}
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
        from .checkpoint import checkpoint_bytes
        from .fileio import write_new

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
        """(test images (10000, 28, 28) uint8, labels (10000,)) from data_dir, never downloaded here;
        read and verified once (a test digit opened on the page, or a cell, would read them again)."""
        if self._test_set is None:
            self._test_set = self._read_test_set()
        return self._test_set

    def _read_test_set(self):
        from .download import FILES, read_verified
        from .idx import parse_mnist_file

        names = ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")
        found = [read_verified(self.data_dir / n, FILES[n]) for n in names]
        if any(f is None for f in found):
            get = "mnist-softmax download" + (
                "" if self.data_dir == Path("data") else f" --data-dir {shown(self.data_dir)}"
            )
            raise ApiError(404, f"the MNIST test set is not in {shown(self.data_dir)}: `{get}` gets it")
        return tuple(parse_mnist_file(buf, n) for buf, n in zip(found, names, strict=True))

    def confusion(self) -> dict:
        """The checkpoint's test-set scores (computed once) by scoring.score, the function `eval
        --split test` reports: the same accuracy and confusion matrix, to the last digit."""
        from .scoring import score

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


# ---------------------------------------------------------------------------------- requests


def _param(query: dict, name: str) -> str | None:
    """The one value of a query parameter (None if absent); given twice is a mistake, not a choice."""
    values = query.get(name)
    if not values:
        return None
    if len(values) > 1:
        raise ApiError(400, f"{name} is given {len(values)} times; give it once")
    return values[0]


def _int_param(query: dict, name: str, low: int, high: int, required: bool = False) -> int | None:
    text = _param(query, name)
    if text is None:
        if required:
            raise ApiError(400, f"{name} is required")
        return None
    digits = text[1:] if text[:1] == "-" else text
    if not (0 < len(digits) <= 12 and digits.isascii() and digits.isdigit()) or not low <= int(text) <= high:
        raise ApiError(400, f"{name} must be a whole number from {low} to {high}, got {text[:20]!r}")
    return int(text)


def _lr_param(query: dict) -> float:
    text = _param(query, "lr")
    if text is None:
        return DEFAULT_LR
    lr = float(text) if len(text) <= 32 and NUMBER.fullmatch(text) else math.nan
    if not (math.isfinite(lr) and 0 < lr <= MAX_LR):
        raise ApiError(400, f"lr must be a number above 0 and at most {MAX_LR:g}, got {text[:20]!r}")
    return lr


def _session_param(query: dict, required: bool = True) -> str | None:
    key = _param(query, "session")
    if key is None and required:
        raise ApiError(400, "session is required: POST /api/session gives one")
    return key


class Handler(http.server.BaseHTTPRequestHandler):
    """One connection, one request (HTTP/1.0: no keep-alive), answered by the routes below."""

    server_version = "mnist-softmax"
    sys_version = ""
    default_request_version = "HTTP/1.0"  # so a refusal of a garbled request line has its headers too
    timeout = READ_SECONDS  # per read from the client; REQUEST_SECONDS bounds the whole connection

    def setup(self) -> None:
        super().setup()
        self._deadline = threading.Timer(REQUEST_SECONDS, self._cut)
        self._deadline.daemon = True
        self._deadline.start()

    def finish(self) -> None:
        self._deadline.cancel()
        with contextlib.suppress(OSError):
            super().finish()

    def alive(self) -> bool:
        """Whether the client is still there to be answered: its connection neither closed by it nor
        cut by the deadline (a read would end at once with nothing)."""
        import select

        try:
            poll = select.poll()
            poll.register(self.connection, select.POLLIN)
            if not poll.poll(0):
                return True  # nothing to read: waiting for its answer
            return self.connection.recv(1, socket.MSG_PEEK) != b""  # readable: data, or the end
        except OSError:
            return False

    def _cut(self) -> None:
        with contextlib.suppress(OSError):
            self.connection.shutdown(socket.SHUT_RDWR)

    def parse_request(self) -> bool:
        self.server.began(self.connection)  # the request line has come: this connection is working
        return super().parse_request()

    def log_message(self, format, *args) -> None:  # quiet: the page's requests are not the user's business
        pass

    def do_GET(self) -> None:
        self._answer("GET")

    def do_POST(self) -> None:
        self._answer("POST")

    def do_HEAD(self) -> None:
        self._answer("HEAD")

    do_PUT = do_DELETE = do_PATCH = do_OPTIONS = lambda self: self._answer(self.command)  # noqa: E731 -- 405 or 404

    def send_error(self, code: int, message: str | None = None, explain: str | None = None) -> None:
        """http.server's own refusals (an unknown method, a malformed request line, headers too long)
        as JSON, with the same headers as every answer."""
        self.close_connection = True
        self._send(code, *_json({"error": message or http.HTTPStatus(code).phrase}))

    def _answer(self, method: str) -> None:
        try:
            self._check_headers()
            if method == "POST":
                self._check_origin()
            url = urllib.parse.urlsplit(self.path)
            route = ROUTES.get(("GET" if method == "HEAD" else method, url.path))  # HEAD: GET's headers
            if route is None:
                static = self.server.static.get(url.path)
                if static is not None and method in ("GET", "HEAD"):
                    self._send(200, static[1], static[0])
                    return
                takes = ["GET", "HEAD"] if static is not None else sorted(m for m, path in ROUTES if path == url.path)
                if "GET" in takes and "HEAD" not in takes:
                    takes.append("HEAD")
                if takes:
                    raise ApiError(405, f"{url.path} takes {' or '.join(takes)}, not {method}", ", ".join(takes))
                raise ApiError(404, f"no such page or API: {method} {url.path[:80]}")
            try:
                query = urllib.parse.parse_qs(url.query, keep_blank_values=True, max_num_fields=20)
            except ValueError:
                raise ApiError(400, "too many query parameters") from None
            self._send(200, *_json(route(self, query)))
        except ApiError as e:
            self._send(e.status, *_json({"error": str(e)}), **({"Allow": e.allow} if e.allow else {}))
        except ImageError as e:
            self._send(422, *_json({"error": str(e)}))
        except MnistSoftmaxError as e:
            self._send(400, *_json({"error": str(e)}))
        except (ConnectionError, TimeoutError):
            self.close_connection = True
        except Exception as e:  # noqa: BLE001 -- a fault of ours: one line for the user, never a traceback to the page
            print(f"serve: {self.command} {escape_controls(self.path[:80])}: {type(e).__name__}: {e}", file=sys.stderr)
            self._send(500, *_json({"error": f"internal error ({type(e).__name__})"}))

    def _check_headers(self) -> None:
        """One Host, naming this server; at most one Content-Length (two could disagree)."""
        hosts = self.headers.get_all("Host") or []
        if len(hosts) != 1 or len(self.headers.get_all("Content-Length") or []) > 1:
            raise ApiError(400, "a request has one Host header and at most one Content-Length")
        host = hosts[0].lower()
        if not self.server.allows(host):
            raise ApiError(403, f"Host {host[:80]!r} is not this server (open the page at {self.server.url})")

    def _check_origin(self) -> None:
        """A POST from a page has the page's Origin: this server's own (one of its names, or, serving
        other machines, the very address the request was sent to). Any other IP address with the
        right port is another machine's page, not this one."""
        origin = self.headers.get("Origin")
        if origin is None:
            return
        host = origin.lower().removeprefix("http://") if origin.lower().startswith("http://") else None
        ours = host is not None and (
            self.server.allows(host, any_ip=False) or self.server.any_address and host == self.headers["Host"].lower()
        )
        if not ours:
            raise ApiError(403, f"requests from {origin[:80]!r} are not accepted: only this page's own")

    def body(self) -> bytes:
        """The request's body, read only if Content-Length announces at most MAX_BODY bytes."""
        length = self.headers.get("Content-Length")
        if self.headers.get("Transfer-Encoding"):
            raise ApiError(411, "send the body with a Content-Length, not chunked")
        if length is None:
            return b""
        if not (0 < len(length) <= 12 and length.isascii() and length.isdigit()):
            raise ApiError(400, "Content-Length is not a number")
        if int(length) > MAX_BODY:
            self.close_connection = True
            raise ApiError(413, f"{int(length):,} bytes sent; at most {MAX_BODY:,} are accepted")
        if self.headers.get("Expect", "").lower() == "100-continue" and self.request_version >= "HTTP/1.1":
            # curl asks before sending a body over 1 MB, and waits a second for the go-ahead
            # (http.server gives it only as an HTTP/1.1 server): given here, once the body is wanted.
            self.wfile.write(b"HTTP/1.1 100 Continue\r\n\r\n")
            self.wfile.flush()
        data = self.rfile.read(int(length))
        if len(data) != int(length):
            raise ApiError(400, "the body is shorter than its Content-Length")
        return data

    def _send(self, status: int, body: bytes, content_type: str, **headers: str) -> None:
        with contextlib.suppress(OSError):
            self.send_response(status)
            for name, value in headers.items():
                self.send_header(name, value)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            self.send_header("Cache-Control", "no-store")
            self.send_header("X-Content-Type-Options", "nosniff")
            self.send_header("Referrer-Policy", "no-referrer")
            self.send_header("X-Frame-Options", "DENY")
            if content_type.startswith("text/html"):
                self.send_header("Content-Security-Policy", CSP)
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(body)


def _json(obj: dict) -> tuple[bytes, str]:
    return json_text(obj).encode(), "application/json"


def _predict(handler: Handler, query: dict) -> dict:
    label = _int_param(query, "label", 0, 9)
    test = _int_param(query, "test", 0, 10**9)
    return handler.server.lesson.predict(handler.body(), label, _session_param(query, False), test, handler.alive)


def _learn(handler: Handler, query: dict) -> dict:
    label = _int_param(query, "label", 0, 9, required=True)
    test = _int_param(query, "test", 0, 10**9)
    lesson = handler.server.lesson
    return lesson.learn(handler.body(), label, _lr_param(query), _session_param(query), test, handler.alive)


def _save(handler: Handler, query: dict) -> dict:
    body = handler.body()
    try:
        request = json.loads(body) if body else {}
    except (ValueError, RecursionError):
        raise ApiError(400, 'the body must be JSON, such as {"name": "my-model"}') from None
    if not isinstance(request, dict) or not isinstance(request.get("name", ""), str):
        raise ApiError(400, "the body must be a JSON object whose name is a string")
    return handler.server.lesson.save(_session_param(query), request.get("name") or None)


def _cell(handler: Handler, query: dict) -> dict:
    true = _int_param(query, "true", 0, 9, required=True)
    predicted = _int_param(query, "predicted", 0, 9, required=True)
    return handler.server.lesson.cell(true, predicted, _int_param(query, "limit", 1, 500) or 60)


ROUTES: dict[tuple[str, str], Callable[[Handler, dict], dict]] = {
    ("GET", "/api/model"): lambda h, q: h.server.lesson.model_info(),
    ("GET", "/api/run"): lambda h, q: h.server.lesson.run(),
    ("GET", "/api/confusion"): lambda h, q: h.server.lesson.confusion(),
    ("GET", "/api/cell"): _cell,
    ("POST", "/api/session"): lambda h, q: {"session": h.server.lesson.new_session()},
    ("POST", "/api/predict"): _predict,
    ("POST", "/api/learn"): _learn,
    ("POST", "/api/reset"): lambda h, q: h.server.lesson.reset(_session_param(q)),
    ("POST", "/api/save"): _save,
}
_PATHS = {path for _, path in ROUTES}


class Server(http.server.ThreadingHTTPServer):
    """A thread per connection (daemon threads: a stuck client never holds up the exit), at most
    MAX_CONNECTIONS at once: more are answered 503 at once."""

    daemon_threads = True
    allow_reuse_address = True  # a restarted server takes its port back at once
    request_queue_size = 128  # connections waiting to be accepted (socketserver's 5 reset the 6th of a burst)

    def __init__(self, address: tuple[str, int], lesson: Lesson):
        if ":" in address[0]:
            self.address_family = socket.AF_INET6
        super().__init__(address, Handler)
        quiet_pillow_everywhere()  # images are read on the connections' threads (see images._quiet_pillow)
        self.lesson = lesson
        self.static = _static_files()
        self.active = threading.BoundedSemaphore(MAX_CONNECTIONS)
        self.waiting: dict[socket.socket, float] = {}  # connections yet to send a request line: when accepted
        self.waiting_lock = threading.Lock()
        host, port = address[0], self.server_address[1]
        everywhere = host in ("0.0.0.0", "::")
        shown_host = f"[{host}]" if ":" in host else host
        self.url = f"http://{'127.0.0.1' if everywhere else shown_host}:{port}/"
        self.port = port
        self.names = {shown_host.lower(), "localhost", "127.0.0.1", "[::1]"}
        # Serving other machines, which name this one by an address (never rebindable: a page
        # elsewhere can only send its own domain name) or by its host name.
        self.any_address = everywhere
        if everywhere:
            self.names |= {n.lower() for n in _own_names()}

    def allows(self, host: str, any_ip: bool = True) -> bool:
        """Whether a Host (or an Origin's host) names this server: one of its names, or with --host
        0.0.0.0 and any_ip, any IP address (which no page elsewhere can rebind to it), and this
        server's port (none for port 80)."""
        name, _, port = host.rpartition(":") if not host.endswith("]") else (host, "", "")
        if not name or port != str(self.port):
            name, port = host, ""
            if self.port != 80:
                return False
        if name in self.names:
            return True
        if self.any_address and any_ip:
            with contextlib.suppress(ValueError):
                ipaddress.ip_address(name.strip("[]"))
                return True
        return False

    def process_request(self, request, client_address) -> None:
        if not self.active.acquire(blocking=False) and not (self._evict_idle() and self.active.acquire(timeout=1.0)):
            with contextlib.suppress(OSError):
                body = json_text({"error": "too many connections at once; try again"}).encode()
                request.sendall(b"HTTP/1.0 503 Service Unavailable\r\nContent-Type: application/json\r\n"
                                + f"Content-Length: {len(body)}\r\n\r\n".encode() + body)  # fmt: skip
            self.shutdown_request(request)
            return
        with self.waiting_lock:
            self.waiting[request] = time.monotonic()
        super().process_request(request, client_address)

    def process_request_thread(self, request, client_address) -> None:
        try:
            super().process_request_thread(request, client_address)
        finally:
            self.began(request)
            self.active.release()

    def began(self, request) -> None:
        """The connection's request line has come (or the connection is over): it is not idle."""
        with self.waiting_lock:
            self.waiting.pop(request, None)

    def _evict_idle(self) -> bool:
        """With every slot taken, cut the connections that have sent no request line for IDLE_SECONDS
        and hold no bytes unread, oldest first, so that a client with a request ready is served:
        whoever holds them (on loopback every client shares one address) only waits. True if one was cut."""
        import select

        now = time.monotonic()
        with self.waiting_lock:
            idle = sorted((t, sock) for sock, t in self.waiting.items() if now - t >= IDLE_SECONDS)
        cut = False
        for _, sock in idle[: max(1, len(idle) // 4)]:  # a quarter at a time, so a burst finds room
            with contextlib.suppress(OSError, ValueError):
                poll = select.poll()
                poll.register(sock, select.POLLIN)
                if not poll.poll(0):  # nothing unread: idle, not a request arriving
                    sock.shutdown(socket.SHUT_RDWR)
                    cut = True
        return cut

    def handle_error(self, request, client_address) -> None:  # a client gone away is not an error
        if not isinstance(sys.exc_info()[1], OSError):
            super().handle_error(request, client_address)


def _signature(path: Path) -> tuple[int, ...]:
    """What changes when a file is replaced or rewritten: its device, inode, size and mtime."""
    st = path.stat()
    return st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns


def _default_stem(checkpoint: Path) -> str:
    """<checkpoint's name>-learned, with anything but ASCII letters, digits, '-', '_' and '.' made '-'."""
    stem = re.sub(r"[^A-Za-z0-9_.-]", "-", checkpoint.stem).strip(".-") or "model"
    return f"{stem[:50]}-learned"


def _own_names() -> set[str]:
    names = {socket.gethostname()}
    with contextlib.suppress(OSError):
        names |= set(socket.gethostbyname_ex(socket.gethostname())[2])
    return names


def _static_files() -> dict[str, tuple[str, bytes]]:
    """{URL path: (content type, bytes)} of the page's files, read once: only these are served."""
    from importlib import resources

    files = {}
    for item in resources.files("mnist_softmax").joinpath(WEB).iterdir():
        suffix = Path(item.name).suffix
        if item.is_file() and suffix in CONTENT_TYPES:
            files[f"/static/{item.name}"] = (CONTENT_TYPES[suffix], item.read_bytes())
    files["/"] = files["/static/index.html"]
    return files


def make_server(lesson: Lesson, host: str, port: int) -> Server:
    """The server, bound (port 0: a free one); MnistSoftmaxError when the port is taken."""
    try:
        return Server((host, port), lesson)
    except OSError as e:
        if e.errno == errno.EADDRINUSE:
            raise MnistSoftmaxError(
                f"port {port} on {host} is taken ({e.strerror}): choose another with --port, or --port 0 for a free one"
            ) from None
        raise MnistSoftmaxError(f"cannot listen on {host}:{port} ({e.strerror or e})") from None


def has_display() -> bool:
    """Whether a browser could show a page here: a desktop session (not a bare SSH or CI shell)."""
    import os

    if sys.platform in ("darwin", "win32"):
        return True
    return bool(os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY"))
