"""What the serve tests share: the server started as a user starts it (a process on a free
loopback port), requests to it, the CLI's answer to compare with, and a browser tab on the page
(Debian's Chromium driven by Playwright: skipped where missing, saying how to get it; mandatory
under CI, $MNIST_SOFTMAX_REQUIRE_BROWSER=1, set by .ci/run)."""

import json
import math
import os
import shutil
import signal
import subprocess
import sys
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from conftest import run


def start_server(checkpoint: Path, data_dir: Path | None, *extra, **popen) -> tuple[subprocess.Popen, str]:
    """`mnist-softmax serve --port 0 --no-browser` as its own process: (process, its URL, from the line it prints)."""
    cmd = [sys.executable, "-m", "mnist_softmax", "serve", "--checkpoint", str(checkpoint), "--port", "0"]
    cmd += ["--no-browser", *(["--data-dir", str(data_dir)] if data_dir else []), *extra]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, **popen)
    line = proc.stdout.readline()
    if not line.startswith(f"serving {checkpoint} at http://"):
        proc.kill()
        pytest.fail(f"serve did not start: {line}{proc.communicate(timeout=30)[1]}")
    return proc, line.split(" at ")[1].split()[0]


def stop(proc: subprocess.Popen, sig=signal.SIGINT) -> tuple[int, str]:
    proc.send_signal(sig)
    _, err = proc.communicate(timeout=30)
    return proc.returncode, err


def call(url: str, path: str, body: bytes | None = None, headers: dict | None = None, method: str | None = None):
    """(status, JSON body) of a request to the server."""
    request = urllib.request.Request(url.rstrip("/") + path, data=body, headers=headers or {}, method=method)
    try:
        with urllib.request.urlopen(request, timeout=60) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())


def cli_record(checkpoint: Path, image: Path, label: int | None = None) -> dict | str:
    """What `mnist-softmax predict IMAGE --json --explain [--label Y]` prints: the record, or the refusal."""
    args = ["predict", image, "--checkpoint", checkpoint, "--json", "--explain"] + (
        ["--label", label] if label is not None else []
    )
    result = run(*args, ok=False)
    if result.exit_code:
        message = result.stderr.strip()
        assert message.startswith(f"error: {image}: "), message
        return message.removeprefix(f"error: {image}: ")
    return json.loads(result.stdout)


CHROMIUM = os.environ.get("MNIST_SOFTMAX_CHROMIUM", "/usr/bin/chromium")
REQUIRE = "MNIST_SOFTMAX_REQUIRE_BROWSER"
ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
        "--disable-sync", "--no-first-run", "--disable-dev-shm-usage"]  # fmt: skip


def need_browser():
    """Playwright's sync API, or a skip saying how to enable the browser tests (a failure under CI)."""
    missing = []
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        missing.append("Playwright for Python (pip install -e '.[test]')")
    if not shutil.which(CHROMIUM) and not os.path.exists(CHROMIUM):
        missing.append(f"Chromium at {CHROMIUM} (apt-get install chromium, or set $MNIST_SOFTMAX_CHROMIUM)")
    if missing:
        message = "browser tests need " + " and ".join(missing)
        if os.environ.get(REQUIRE) == "1":
            pytest.fail(f"{message} (required here: ${REQUIRE}=1)")
        pytest.skip(message)
    return sync_playwright


class Page:
    """A browser tab on the page, collecting console errors and uncaught exceptions."""

    def __init__(self, browser, url, tmp_path):
        self.tab = browser.new_page(viewport={"width": 1200, "height": 900})
        self.errors = []
        self.tab.on("console", lambda m: self.errors.append(m.text) if m.type == "error" else None)
        self.tab.on("pageerror", lambda e: self.errors.append(str(e)))
        self.tmp_path = tmp_path
        self.refusals_expected = False
        self.tab.goto(url)
        self.tab.wait_for_function("() => document.getElementById('model-info').textContent.length > 0")

    def testid(self, name):
        return self.tab.get_by_test_id(name)

    def text(self, name) -> str:
        return self.testid(name).text_content()

    def draw(self, strokes) -> None:
        """Mouse strokes on the pad: each a list of (x, y) in pad pixels (0..280)."""
        self.testid("canvas").scroll_into_view_if_needed()
        box = self.testid("canvas").bounding_box()
        scale = box["width"] / 280
        for stroke in strokes:
            x, y = stroke[0]
            self.tab.mouse.move(box["x"] + x * scale, box["y"] + y * scale)
            self.tab.mouse.down()
            for x, y in stroke[1:]:
                self.tab.mouse.move(box["x"] + x * scale, box["y"] + y * scale, steps=3)
            self.tab.mouse.up()

    def settled(self, expected_prediction=None) -> None:
        """Wait until the page shows an answer (or a refusal) for what it last sent."""
        self.tab.wait_for_function(
            "() => document.getElementById('status').textContent === '' && "
            "(document.getElementById('prediction').textContent !== '–' || !document.getElementById('error').hidden)"
        )
        if expected_prediction is not None:
            self.tab.wait_for_function(
                f"() => document.getElementById('prediction').textContent === '{expected_prediction}'", timeout=10000
            )

    def shot(self, name):
        path = self.tmp_path / f"{name}.png"
        self.tab.screenshot(path=path, full_page=True)
        assert path.stat().st_size > 20000
        return path

    def close(self):
        # Chromium logs every HTTP error status of a fetch; a refused image's 422 is the API's answer,
        # which the page shows, not a fault of the page.
        expected = "Failed to load resource: the server responded with a status of 422 (Unprocessable Entity)"
        assert [e for e in self.errors if e != expected or not self.refusals_expected] == [], self.errors
        self.tab.close()


ONE = [[(150, 40), (145, 100), (140, 170), (136, 240)]]
ZERO = [[(140 + 62 * math.sin(t * math.pi / 20), 140 - 96 * math.cos(t * math.pi / 20)) for t in range(41)]]
