"""Shared fixtures: tiny IDX files built here, and the real MNIST files served over loopback HTTP.

The real files come from ../shared/mnist (override with $MNIST_SOFTMAX_TEST_DATA). They are served
by a local HTTP server so the real download path (requests, streaming, checksum, rename) runs.
"""

from __future__ import annotations

import gzip
import http.server
import os
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from hypothesis import settings
from hypothesis.configuration import set_hypothesis_home_dir

ROOT = Path(__file__).resolve().parents[1]
SHARED_MNIST = Path(os.environ.get("MNIST_SOFTMAX_TEST_DATA", ROOT.parent / "shared" / "mnist"))

# Hypothesis keeps no example database, and its other files go to a temp folder: nothing is
# written into the checkout (see pytest_sessionfinish).
settings.register_profile("no-database", database=None)
settings.load_profile("no-database")
HYPOTHESIS_HOME = tempfile.mkdtemp(prefix="mnist-softmax-hypothesis-")
set_hypothesis_home_dir(HYPOTHESIS_HOME)

# ------------------------------------------------------------------------------ the checkout stays as it was

# Made by installing and by Python itself, not by the tests: .ci/run's venv, pip's egg-info, bytecode.
_NOT_WATCHED = {".git", ".venv", "__pycache__", "build"}


def checkout_state(root: Path = ROOT) -> dict[str, tuple]:
    """{path relative to root: (kind, size, mtime_ns or link target)} of everything in the checkout
    but what installing and Python write (_NOT_WATCHED, *.egg-info)."""
    state = {}
    for folder, dirs, files in os.walk(root):
        dirs[:] = [d for d in dirs if d not in _NOT_WATCHED and not d.endswith(".egg-info")]
        for name in dirs + files:
            path = Path(folder) / name
            st = path.lstat()
            what = os.readlink(path) if path.is_symlink() else st.st_mtime_ns
            state[str(path.relative_to(root))] = ("link" if path.is_symlink() else st.st_mode >> 12, st.st_size, what)
    return state


def pytest_sessionstart(session):
    session.config._checkout_before = checkout_state()
    # The commands under test keep a signal they were started with ignored (a background job in a
    # shell script); tests that send Ctrl-C or SIGTERM need them not ignored, even when the tests
    # themselves run as such a job. (Handlers set here are reset for child processes on exec.)
    if signal.getsignal(signal.SIGINT) == signal.SIG_IGN:
        signal.signal(signal.SIGINT, signal.default_int_handler)
    if signal.getsignal(signal.SIGTERM) == signal.SIG_IGN:
        signal.signal(signal.SIGTERM, signal.SIG_DFL)


def pytest_sessionfinish(session, exitstatus):
    """Tests write only into their temp folders: a run that changed the checkout fails, naming what changed."""
    import shutil

    shutil.rmtree(HYPOTHESIS_HOME, ignore_errors=True)
    before = getattr(session.config, "_checkout_before", None)
    if before is None:
        return
    after = checkout_state()
    changed = sorted(k for k in before.keys() | after.keys() if before.get(k) != after.get(k))
    if changed:
        reporter = session.config.pluginmanager.get_plugin("terminalreporter")
        message = "the tests changed the checkout (they must write only into temp folders): " + ", ".join(changed[:20])
        if reporter is not None:
            reporter.ensure_newline()
            reporter.write_line(f"FAILED {message}", red=True, bold=True)
        session.exitstatus = pytest.ExitCode.TESTS_FAILED


REQUIRE_PEERS = "MNIST_SOFTMAX_REQUIRE_PEERS"  # "1": the PyTorch cross-checks must run (.ci/run sets it)


def optional_peer(module: str = "torch"):
    """The peer library for a live cross-check beside a recorded one (tests/torch_reference.py): the
    module where it is installed, else None; with $MNIST_SOFTMAX_REQUIRE_PEERS=1 (CI) it must be."""
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError as e:
        if os.environ.get(REQUIRE_PEERS) == "1":
            pytest.fail(f"{module} is required here (${REQUIRE_PEERS}=1) but cannot be imported: {e}")
        return None


def served_file(name: str) -> Path:
    """The file the test server sends for NAME.gz: the gzipped copy, or else the raw IDX file
    (so a folder filled by `mnist-softmax download` works as $MNIST_SOFTMAX_TEST_DATA too)."""
    path = SHARED_MNIST / name
    return path if path.is_file() or not name.endswith(".gz") else SHARED_MNIST / name[:-3]


def idx_bytes(arr: np.ndarray, code: int = 0x08) -> bytes:
    """An IDX file for `arr` (uint8 unless `code` says otherwise)."""
    header = bytes([0, 0, code, arr.ndim]) + struct.pack(f">{arr.ndim}I", *arr.shape)
    return header + arr.astype(arr.dtype.newbyteorder(">")).tobytes()


class _Handler(http.server.BaseHTTPRequestHandler):
    """Serves SHARED_MNIST/<file> under /<mode>/<file>, well or badly on purpose, by mode:

    good      200, or 206 for a Range request (resumable)     norange  200 always, Range ignored
    flaky     first request per file: half the body, then a connection reset; later like good
    reset     half the body, then a connection reset            short    half the body, clean close
    stall     headers, then nothing for 3 s                     html     a 200 HTML page
    wronggz   valid gzip of the wrong bytes                     notgz    bytes that are not gzip
    endless   200 without a length, then bytes until the client hangs up (at most 64 MB)
    biglength 200 announcing a 600 MB body                    slow      good, but waits 0.3 s first
    trickle   200 with the right length, then a byte every 0.2 s (for 20 s at most)
    silent    reads the request, then answers nothing for 3 s and hangs up
    halfsilent  200 with the right length, half the body, then nothing for 5 s (Range ignored)
    headtrickle  a status line, then its headers a byte every 0.2 s (for 20 s at most)
    <number>  that HTTP status
    """

    protocol_version = "HTTP/1.1"

    def log_message(self, *args):  # keep test output clean
        pass

    def _head(self, status, length, extra=()):
        self.send_response(status)
        self.send_header("Content-Type", "application/octet-stream")
        self.send_header("Content-Length", str(length))
        for k, v in extra:
            self.send_header(k, v)
        self.end_headers()

    def _reset(self):
        self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        self.close_connection = True

    def do_GET(self):
        mode, _, name = self.path.lstrip("/").partition("/")
        rng = self.headers.get("Range")
        self.server.hits.append((mode, name, rng))
        self.server.authorizations.append(self.headers.get("Authorization"))
        path = served_file(name)
        if mode.isdigit():
            return self.send_error(int(mode))
        if mode == "html":
            body = b"<!doctype html><html><body>Sign in to continue</body></html>"
            self.send_response(200)
            self.send_header("Content-Type", "text/html; charset=utf-8")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            return self.wfile.write(body)
        if mode == "endless":
            self.send_response(200)
            self.send_header("Content-Type", "application/octet-stream")
            self.end_headers()
            self.close_connection = True
            head = b"\x00\x00\x08\x01" + bytes(65532)  # looks like IDX, and never ends
            for _ in range(1024):
                self.wfile.write(head)
            return None
        if mode == "biglength":
            self._head(200, 600_000_000)
            self.wfile.write(b"\x1f\x8b" + bytes(65534))
            self.close_connection = True
            return None
        if mode == "silent":
            time.sleep(3)
            self.close_connection = True
            return None
        if mode == "headtrickle":
            self.close_connection = True
            self.wfile.write(b"HTTP/1.1 200 OK\r\n")
            for _ in range(100):
                self.wfile.write(b"X")
                self.wfile.flush()
                time.sleep(0.2)
            return None
        if mode == "trickle":
            data = path.read_bytes()
            self._head(200, len(data))
            self.close_connection = True
            for i in range(100):
                self.wfile.write(data[i : i + 1])
                self.wfile.flush()
                time.sleep(0.2)
            return None
        if mode == "slow":
            time.sleep(0.3)
            mode = "good"
        if not path.is_file():
            return self.send_error(404)
        data = path.read_bytes()
        if mode == "wronggz":
            data = gzip.compress(data[: len(data) // 2])
        elif mode == "notgz":
            data = bytes(range(256)) * 40
        if mode == "flaky":
            first = self.server.flaky_seen.setdefault(name, 0) == 0
            self.server.flaky_seen[name] += 1
            mode = "reset" if first else "good"
        if mode in ("reset", "short"):
            self._head(200, len(data))
            self.wfile.write(data[: len(data) // 2])
            self.wfile.flush()
            if mode == "reset":
                self._reset()
            self.close_connection = True
            return None
        if mode == "halfsilent":
            self._head(200, len(data))
            self.wfile.write(data[: len(data) // 2])
            self.wfile.flush()
            time.sleep(5)
            self.close_connection = True
            return None
        if mode == "stall":
            self._head(200, len(data))
            self.wfile.flush()
            time.sleep(3)
            self.close_connection = True
            return None
        if mode == "good" and rng and rng.startswith("bytes=") and rng.endswith("-"):
            start = int(rng[6:-1])
            if start >= len(data):
                return self.send_error(416)
            self._head(206, len(data) - start, [("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")])
            return self.wfile.write(data[start:])
        self._head(200, len(data))
        return self.wfile.write(data)


class _QuietServer(http.server.ThreadingHTTPServer):
    """Clients here close and reset connections on purpose; socketserver would print each such
    error's traceback to sys.stderr, which CliRunner captures into the output under test."""

    daemon_threads = True

    def handle_error(self, request, client_address):
        if not isinstance(sys.exc_info()[1], ConnectionError):
            super().handle_error(request, client_address)


def _start_mirror() -> _QuietServer:
    """A loopback HTTP server of ../shared/mnist, serving on a thread of its own."""
    if not SHARED_MNIST.is_dir():
        pytest.fail(f"real MNIST files not found at {SHARED_MNIST}; set MNIST_SOFTMAX_TEST_DATA")
    server = _QuietServer(("127.0.0.1", 0), _Handler)
    server.hits = []
    server.authorizations = []  # each request's Authorization header (None without one)
    server.flaky_seen = {}
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


@pytest.fixture(scope="session")
def mnist_server():
    """Base URL of a loopback HTTP server; `<url>/good/` is a working MNIST mirror."""
    server = _start_mirror()
    yield server, f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


@pytest.fixture(scope="session")
def mnist_dir(mnist_server, tmp_path_factory) -> Path:
    """A data folder holding the real MNIST files, fetched once per session over loopback HTTP."""
    from mnist_softmax.download import FILES, fetch_file

    _, url = mnist_server
    d = tmp_path_factory.mktemp("data")
    for name in FILES:
        fetch_file(name, d, [f"{url}/good/"], quiet=True)
    return d


@pytest.fixture(scope="session")
def mnist(mnist_dir):
    from mnist_softmax.data import load_mnist

    return load_mnist(mnist_dir, quiet=True)


@pytest.fixture(autouse=True)
def _no_env_mirror(monkeypatch):
    monkeypatch.delenv("MNIST_SOFTMAX_MIRROR", raising=False)


@pytest.fixture(autouse=True)
def _own_working_dir(tmp_path, monkeypatch):
    """Each test runs in its own folder, so `runs/latest` of the checkout is never touched."""
    monkeypatch.chdir(tmp_path)


def run(*args, ok=True):
    """Invoke the CLI in-process; with ok=True, fail with its output unless it exited 0."""
    from click.testing import CliRunner

    from mnist_softmax.cli import main

    result = CliRunner().invoke(main, [str(a) for a in args])
    if ok:
        assert result.exit_code == 0, result.output + repr(result.exception)
    return result


@pytest.fixture(scope="session")
def trained(mnist_dir, tmp_path_factory):
    """One default `train` run on the real data, from a fresh folder: (that folder, CliRunner result)."""
    cwd = tmp_path_factory.mktemp("work")
    old = os.getcwd()
    os.chdir(cwd)
    try:
        result = run("train", "--data-dir", mnist_dir)
    finally:
        os.chdir(old)
    return cwd, result


def _short_run(mnist_dir, tmp_path_factory, name: str, config: str) -> Path:
    """A run of `config` (TOML text) on the real data, in a folder of its own: its run folder."""
    d = tmp_path_factory.mktemp(name)
    (d / f"{name}.toml").write_text(config)
    old = os.getcwd()
    os.chdir(d)  # session fixtures start before the per-test working folder
    try:
        run("train", "--config", d / f"{name}.toml", "--data-dir", mnist_dir, "--out", d / "run", "-q")
    finally:
        os.chdir(old)
    return d / "run"


@pytest.fixture(scope="session")
def conv_trained(mnist_dir, tmp_path_factory):
    """A short conv run on the real data (2 epochs, 20k patches): its run folder."""
    return _short_run(mnist_dir, tmp_path_factory, "conv", 'features = "conv"\nepochs = 2\nconv_patches = 20000\n')


@pytest.fixture(scope="session")
def cnn_trained(mnist_dir, tmp_path_factory):
    """A small cnn run on the real data (2 epochs of 1,000 images) of the shipped recipe's network:
    batch norm, distorted training images. Its run folder."""
    config = (
        'features = "cnn"\nepochs = 2\nval_size = 59000\nbatch_size = 64\nstandardize = "none"\n'
        "batch_norm = true\nshift = 2\nrotate = 10.0\nzoom = 0.1\nshear = 5.0\n"
    )
    return _short_run(mnist_dir, tmp_path_factory, "cnn", config)


def assert_figure(path, size=None, drawn="colour", min_fraction=0.005):
    """A PNG of `size` whose plot area (the middle 60% × 80%) holds a real drawing, not only
    axes and labels: colour (a pixel whose channels differ by > 60) or, for grey figures, dark
    pixels, in at least min_fraction of it. A blank figure with titled, gridded axes has no colour
    and under 0.6% dark pixels."""
    from PIL import Image

    with Image.open(path) as im:
        assert im.format == "PNG", path
        if size is not None:
            assert im.size == size, (path, im.size)
        rgb = np.asarray(im.convert("RGB")).astype(np.int16)
    h, w, _ = rgb.shape
    area = rgb[h // 5 : 4 * h // 5, w // 10 : 9 * w // 10]
    hit = (area.max(-1) - area.min(-1) > 60) if drawn == "colour" else (area.max(-1) < 100)
    assert hit.mean() >= min_fraction, f"{path}: only {hit.mean():.4f} of the plot area is drawn"


def rel_err(a, b) -> float:
    """The largest difference between a and b, relative to b's largest magnitude."""
    return float(np.abs(a - b).max() / max(np.abs(b).max(), 1e-12))


def check_gradient(f, a: np.ndarray, analytic: np.ndarray, rng, n: int = 40, rtol: float = 1e-5) -> None:
    """Assert that analytic, the gradient of scalar f() with respect to a, equals central
    differences at n random entries of a, within rtol relative to its largest value there."""
    idx = rng.choice(a.size, min(n, a.size), replace=False)
    assert rel_err(analytic.reshape(-1)[idx], central_differences(f, a, idx)) < rtol


def central_differences(f, a: np.ndarray, idx=None, eps: float = 1e-6) -> np.ndarray:
    """Central differences (f(a + eps) - f(a - eps)) / 2eps of scalar f() with respect to the entries
    idx (flat indices; all by default) of the contiguous array a, which is changed in place and
    restored. -> (len(idx),)"""
    flat = a.reshape(-1)
    assert np.shares_memory(flat, a), "a must be contiguous: its entries are changed in place"
    out = []
    for i in range(a.size) if idx is None else idx:
        old = flat[i]
        flat[i] = old + eps
        up = f()
        flat[i] = old - eps
        down = f()
        flat[i] = old
        out.append((up - down) / (2 * eps))
    return np.array(out)


def interrupt_call(monkeypatch, module, name: str, n: int, exc=KeyboardInterrupt) -> None:
    """Make the n-th call of module.name raise `exc` (Ctrl-C by default); the calls before it run."""
    real, calls = getattr(module, name), {"n": 0}

    def interrupting(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == n:
            raise exc
        return real(*args, **kwargs)

    monkeypatch.setattr(module, name, interrupting)


def start_train(mnist_dir, out, cwd, *extra) -> subprocess.Popen:
    """`mnist-softmax train --data-dir MNIST_DIR --out OUT EXTRA...` as its own process, output piped."""
    cmd = [sys.executable, "-m", "mnist_softmax", "train", "--data-dir", str(mnist_dir), "--out", str(out), *extra]
    return subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=cwd)


def signal_training(mnist_dir, out, cwd, sig, after_epoch: int) -> tuple[int, str, dict]:
    """Start a 40-epoch `train`, send `sig` once epoch `after_epoch` is printed; (exit code, stderr,
    the run's summary.json)."""
    import json

    proc = start_train(mnist_dir, out, cwd, "--epochs", "40")
    for line in proc.stdout:
        if line.startswith(f"epoch {after_epoch:>3}"):
            proc.send_signal(sig)
            break
    _, err = proc.communicate(timeout=60)
    return (
        proc.returncode,
        err,
        json.loads((out / "summary.json").read_text()) if (out / "summary.json").is_file() else {},
    )


# ------------------------------------------------------------------------------ the page in a browser


@pytest.fixture(scope="module")
def browser():
    """Debian's Chromium, driven by Playwright (serving.need_browser: skipped where missing, unless required)."""
    from serving import ARGS, CHROMIUM, need_browser

    sync_playwright = need_browser()
    with sync_playwright() as p:
        chromium = p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        yield chromium
        chromium.close()


@pytest.fixture(scope="module")
def pixels_server(trained, mnist_dir):
    """`mnist-softmax serve` on the pixels run's checkpoint: (checkpoint, URL)."""
    from serving import start_server, stop

    checkpoint = trained[0] / "runs" / "latest" / "model.npz"
    proc, url = start_server(checkpoint, mnist_dir)
    yield checkpoint, url
    stop(proc)


@pytest.fixture
def page(browser, pixels_server, tmp_path):
    """A tab on the pixels server's page, checked for console errors when closed."""
    from serving import Page

    opened = Page(browser, pixels_server[1], tmp_path)
    yield opened
    opened.close()


# ------------------------------------------------------------------------------ the lesson's notebook


class _NotebookData:
    """A notebook (nbmake runs notebooks/*.ipynb, each in a kernel of its own) gets the real MNIST
    files as users do, downloaded and verified, from a loopback mirror of ../shared/mnist, into a
    temporary data folder ($MNIST_SOFTMAX_MIRROR, $MNIST_SOFTMAX_DATA): never into the checkout.

    A plugin, not this file's own hooks: a conftest's runtest hooks see only the items under its
    folder, and the notebooks live beside tests/, not in it."""

    server = None
    data = ""

    def pytest_runtest_setup(self, item):
        if type(item).__name__ != "NotebookItem":
            return
        if self.server is None:
            self.server = _start_mirror()
        self.data = tempfile.mkdtemp(prefix="notebook-data-")
        os.environ["MNIST_SOFTMAX_MIRROR"] = f"http://127.0.0.1:{self.server.server_address[1]}/good/"
        os.environ["MNIST_SOFTMAX_DATA"] = self.data

    def pytest_runtest_teardown(self, item):
        if type(item).__name__ == "NotebookItem":
            import shutil

            os.environ.pop("MNIST_SOFTMAX_MIRROR", None)
            os.environ.pop("MNIST_SOFTMAX_DATA", None)
            shutil.rmtree(self.data, ignore_errors=True)


def pytest_configure(config):
    config.pluginmanager.register(_NotebookData(), "mnist-softmax-notebook-data")
