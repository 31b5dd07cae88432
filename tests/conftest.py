"""Shared fixtures: tiny IDX files built here, and the real MNIST files served over loopback HTTP.

The real files come from ../shared/mnist (override with $MNIST_SOFTMAX_TEST_DATA). They are served
by a local HTTP server so the real download path (requests, streaming, checksum, rename) runs.
"""

from __future__ import annotations

import http.server
import os
import struct
import threading
from pathlib import Path

import numpy as np
import pytest

SHARED_MNIST = Path(os.environ.get("MNIST_SOFTMAX_TEST_DATA", Path(__file__).resolve().parents[2] / "shared" / "mnist"))


def idx_bytes(arr: np.ndarray, code: int = 0x08) -> bytes:
    """An IDX file for `arr` (uint8 unless `code` says otherwise)."""
    header = bytes([0, 0, code, arr.ndim]) + struct.pack(f">{arr.ndim}I", *arr.shape)
    return header + arr.astype(arr.dtype.newbyteorder(">")).tobytes()


class _Handler(http.server.SimpleHTTPRequestHandler):
    """Serves SHARED_MNIST under /good/, and misbehaves on purpose under other prefixes."""

    def log_message(self, *args):  # keep test output clean
        pass

    def do_GET(self):
        prefix, _, rest = self.path.lstrip("/").partition("/")
        self.server.hits.append(self.path)
        if prefix == "good":
            self.path = "/" + rest
            return super().do_GET()
        if prefix == "html":
            body = b"<!doctype html><html><body>Sign in to continue</body></html>"
            self.send_response(200)
            self.send_header("Content-Type", "text/html; charset=utf-8")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
            return None
        if prefix.isdigit():
            return self.send_error(int(prefix))
        return self.send_error(404)


@pytest.fixture(scope="session")
def mnist_server():
    """Base URL of a loopback HTTP server; `<url>/good/` is a working MNIST mirror."""
    if not SHARED_MNIST.is_dir():
        pytest.fail(f"real MNIST files not found at {SHARED_MNIST}; set MNIST_SOFTMAX_TEST_DATA")

    def handler(*args, **kwargs):
        return _Handler(*args, directory=str(SHARED_MNIST), **kwargs)

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    server.hits = []
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server, f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


@pytest.fixture(scope="session")
def mnist_dir(mnist_server, tmp_path_factory) -> Path:
    """A data folder holding the real MNIST files, fetched once per session over loopback HTTP."""
    from mnist_softmax.data import FILES, fetch_file

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


@pytest.fixture(scope="session")
def conv_trained(mnist_dir, tmp_path_factory):
    """A short conv run on the real data (2 epochs, 20k patches): its run folder."""
    d = tmp_path_factory.mktemp("conv")
    cfg = d / "conv_small.toml"
    cfg.write_text('features = "conv"\nepochs = 2\nconv_patches = 20000\n')
    run("train", "--config", cfg, "--data-dir", mnist_dir, "--out", d / "run", "-q")
    return d / "run"
