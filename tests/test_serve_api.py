"""`mnist-softmax serve`'s JSON API, against the real server started as a user starts it (a process
on a free loopback port): the same numbers as `predict --json --explain`, each security rule, each
hostile input, concurrency, the learning step, the run behind the checkpoint, a clean stop."""

import contextlib
import hashlib
import http.client
import io
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
import zlib
from pathlib import Path

import numpy as np
import pytest
from conftest import run
from PIL import Image
from serving import call, cli_record, start_server, stop
from userstyle import MAKERS, NEGATIVES

from mnist_softmax.checkpoint import load_checkpoint


@pytest.fixture(scope="module")
def pixels_checkpoint(trained) -> Path:
    return trained[0] / "runs" / "latest" / "model.npz"


@pytest.fixture(scope="module")
def server(pixels_checkpoint, mnist_dir):
    proc, url = start_server(pixels_checkpoint, mnist_dir)
    yield url
    code, err = stop(proc)
    assert code == 130 and err.strip() == "stopped", err


def user_images(mnist, folder: Path) -> list[tuple[Path, int | None]]:
    """Images of each style predict reads, and some it refuses: (path, true label or None)."""
    rng = np.random.default_rng(19)
    files = []
    for k, make in enumerate(MAKERS.values()):
        if k % 2 == 0:  # every other style: enough kinds, and quick
            i = int(rng.integers(10000))
            files.append((make(mnist.test_images[i], folder, f"{k:02d}", rng), int(mnist.test_labels[i])))
    for style in ("a blank page", "specks on a page"):
        files.append((NEGATIVES[style](folder, style.replace(" ", "-"), rng), None))
    return files


@pytest.mark.parametrize("model", ["pixels", "conv", "cnn"])
def test_predict_answers_exactly_what_the_cli_prints(
    model, pixels_checkpoint, conv_trained, cnn_trained, mnist, tmp_path
):
    """For images of each style predict reads (and ones it refuses): POST /api/predict with the file's
    bytes answers the record `predict --json --explain --label Y` prints (path null), or 422 with
    its refusal word for word; plus the page's pictures."""
    checkpoint = {"pixels": pixels_checkpoint, "conv": conv_trained / "model.npz", "cnn": cnn_trained / "model.npz"}[
        model
    ]
    proc, url = start_server(checkpoint, None)
    try:
        for path, label in user_images(mnist, tmp_path):
            want = cli_record(checkpoint, path, label)
            status, got = call(url, f"/api/predict{'' if label is None else f'?label={label}'}", path.read_bytes())
            if isinstance(want, str):
                assert (status, got["error"]) == (422, want) and set(got) <= {"error", "code", "args"}, path
                continue
            assert status == 200, got
            page = got.pop("page")
            assert got == want | {"path": None}, path
            C, H, W = want["explain"]["map_shape"]
            assert len(page["x"]) == C * H * W and page["cells"] == [H, W] and len(page["digit"]) == 28
            sums = np.sum(page["contributions"], axis=1) + page["bias"]
            np.testing.assert_allclose(sums, want["explain"]["logits"], atol=2e-3)  # W_k ⊙ x, by cell, + b_k = z_k
            np.testing.assert_allclose(page["grad_z"], np.array(want["probabilities"]) - np.eye(10)[label], atol=1e-6)
    finally:
        assert stop(proc)[0] == 130


def test_the_digit_the_page_shows_is_the_one_the_cli_sees(server, pixels_checkpoint, mnist, tmp_path):
    path = MAKERS["phone photo, EXIF orientation 6"](mnist.test_images[3], tmp_path, "photo", np.random.default_rng(1))
    status, got = call(server, "/api/predict", path.read_bytes())
    from mnist_softmax.images import to_mnist

    prepared = to_mnist(path)
    assert (
        status == 200
        and np.array_equal(got["page"]["digit"], prepared.digit)
        and got["page"]["box"] == list(prepared.box)
    )


# ------------------------------------------------------------------------------------------ security


def raw(url: str, request: bytes, wait: float = 30) -> bytes:
    """Send raw bytes to the server; what it answers before closing the connection."""
    port = int(url.rsplit(":", 1)[1].strip("/"))
    with socket.create_connection(("127.0.0.1", port), timeout=wait) as s:
        s.sendall(request)
        chunks = []
        while chunk := s.recv(65536):
            chunks.append(chunk)
    return b"".join(chunks)


@pytest.mark.parametrize(
    "host,allowed",
    [("127.0.0.1:{port}", True), ("localhost:{port}", True), ("LOCALHOST:{port}", True), ("[::1]:{port}", True),
     ("evil.example:{port}", False), ("127.0.0.1", False), ("localhost:1", False), ("", False),
     ("127.0.0.1:{port}.evil.example", False)],
)  # fmt: skip
def test_a_host_header_not_naming_this_server_is_refused(server, host, allowed):
    """DNS rebinding: a page elsewhere that makes its own name point at 127.0.0.1 sends its own name."""
    port = server.rsplit(":", 1)[1].strip("/")
    answer = raw(server, f"GET /api/model HTTP/1.1\r\nHost: {host.format(port=port)}\r\n\r\n".encode())
    status = int(answer.split()[1])
    assert status == (200 if allowed else 403), answer[:200]
    if not allowed:
        assert b'"error": "Host ' in answer


@pytest.mark.parametrize(
    "origin,allowed", [(None, True), ("http://127.0.0.1:{port}", True), ("http://localhost:{port}", True),
                       ("http://evil.example", False), ("null", False), ("http://127.0.0.1:1", False)],
)  # fmt: skip
def test_a_state_changing_request_from_another_origin_is_refused(server, origin, allowed):
    port = server.rsplit(":", 1)[1].strip("/")
    headers = {} if origin is None else {"Origin": origin.format(port=port)}
    status, body = call(server, "/api/session", b"", headers)
    assert status == (200 if allowed else 403), body
    assert ("session" in body) == allowed


def test_malformed_requests_and_other_methods_get_json_errors_too(server):
    """What http.server itself refuses (an unknown method, a garbled request line) is JSON as well;
    two Host headers, or two Content-Lengths, are refused (they could disagree)."""
    port = server.rsplit(":", 1)[1].strip("/")
    host = f"Host: 127.0.0.1:{port}\r\n"
    for request, status in [
        (f"PUT /api/model HTTP/1.1\r\n{host}\r\n", 405),
        (f"OPTIONS /api/learn HTTP/1.1\r\n{host}\r\n", 405),
        (f"DELETE / HTTP/1.1\r\n{host}\r\n", 405),
        (f"POST /static/app.js HTTP/1.1\r\n{host}Content-Length: 0\r\n\r\n", 405),
        (f"HEAD /nowhere HTTP/1.1\r\n{host}\r\n", 404),
        (f"BREW /api/model HTTP/1.1\r\n{host}\r\n", 501),
        (f"GET / HTTP/A.B\r\n{host}\r\n", 400),
        (f"GET /api/model HTTP/1.1\r\n{host}Host: evil.example:{port}\r\n\r\n", 400),
        (f"POST /api/session HTTP/1.1\r\n{host}Content-Length: 0\r\nContent-Length: 5\r\n\r\n", 400),
        (f"GET /api/model HTTP/1.1\r\n{host}" + "X-Filler: y\r\n" * 150 + "\r\n", 431),
    ]:
        answer = raw(server, request.encode())
        head, _, body = answer.partition(b"\r\n\r\n")
        assert head.startswith(f"HTTP/1.0 {status} ".encode()), (request[:40], answer[:200])
        assert b"Content-Type: application/json" in head and b"X-Content-Type-Options: nosniff" in head
        assert request.startswith("HEAD") or list(json.loads(body)) == ["error"]
    for path in ("/", "/api/model"):  # HEAD wherever GET: its headers, no body
        head = raw(server, f"HEAD {path} HTTP/1.1\r\n{host}\r\n".encode())
        assert head.startswith(b"HTTP/1.0 200 ") and head.endswith(b"\r\n\r\n"), head[:100]
    put = raw(server, f"PUT /api/model HTTP/1.1\r\n{host}\r\n".encode()).decode()
    assert "\r\nAllow: GET, HEAD\r\n" in put and "/api/model takes GET or HEAD, not PUT" in put
    get = raw(server, f"GET /api/learn HTTP/1.1\r\n{host}\r\n".encode()).decode()
    assert "\r\nAllow: POST\r\n" in get and "/api/learn takes POST, not GET" in get


def test_a_client_that_asks_before_sending_its_body_is_told_to_go_on(server):
    """curl sends `Expect: 100-continue` with a body over 1 MB and waits a second for the go-ahead;
    a body that would be refused gets its refusal instead, and is never sent."""
    port = server.rsplit(":", 1)[1].strip("/")
    png = _png(np.zeros((28, 28), np.uint8))
    head = f"POST /api/predict HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nExpect: 100-continue\r\n"
    with socket.create_connection(("127.0.0.1", int(port)), timeout=10) as s:
        s.sendall(f"{head}Content-Length: {len(png)}\r\n\r\n".encode())
        assert s.recv(100) == b"HTTP/1.1 100 Continue\r\n\r\n"
        s.sendall(png)
        answer = b"".join(iter(lambda: s.recv(65536), b""))
    assert answer.startswith(b"HTTP/1.0 422 ") and b"no digit found" in answer
    refused = raw(server, f"{head}Content-Length: 20000000\r\n\r\n".encode())
    assert refused.startswith(b"HTTP/1.0 413 ") and b"100 Continue" not in refused


def test_a_body_over_10_mb_is_refused_unread(server):
    """The server answers 413 from the headers alone: the client has sent none of its 20 MB."""
    port = server.rsplit(":", 1)[1].strip("/")
    answer = raw(
        server, f"POST /api/predict HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nContent-Length: 20000000\r\n\r\n".encode()
    )
    assert answer.startswith(b"HTTP/1.0 413 ") and b"at most 10,485,760 are accepted" in answer


def test_only_the_pages_own_files_are_served(server):
    port = server.rsplit(":", 1)[1].strip("/")
    for path in ("/static/../serve.py", "/static/%2e%2e/serve.py", "/static/../../../../etc/passwd", "/etc/passwd",
                 "/static/", "/static", "/api/../static/app.js", "/STATIC/app.js", "/static/app.js/"):  # fmt: skip
        answer = raw(server, f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n\r\n".encode())
        assert answer.startswith(b"HTTP/1.0 404 "), (path, answer[:100])
    page = raw(server, f"GET / HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n\r\n".encode())
    assert page.startswith(b"HTTP/1.0 200 ") and b"Content-Security-Policy: default-src 'self'" in page


def _png(a: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(a).save(buf, format="PNG")
    return buf.getvalue()


def _png_claiming(width: int, height: int) -> bytes:
    """A PNG whose header claims width×height 8-bit grey pixels, with one tiny IDAT: a bomb's header."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return len(data).to_bytes(4, "big") + kind + data + zlib.crc32(kind + data).to_bytes(4, "big")

    ihdr = width.to_bytes(4, "big") + height.to_bytes(4, "big") + bytes([8, 0, 0, 0, 0])
    return (
        b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 100)) + chunk(b"IEND", b"")
    )


def test_hostile_input_is_one_json_error_each_and_the_server_keeps_serving(server):
    rng = np.random.default_rng(2)
    status, session = call(server, "/api/session", b"")
    key = session["session"]
    cases = [
        ("/api/predict", rng.bytes(5000), 422, "not an image Pillow can read"),
        ("/api/predict", b"", 400, "send an image file's bytes"),
        ("/api/predict", _png_claiming(30000, 30000), 422, "image too large"),  # 900 M pixels: refused from its header
        ("/api/predict", _png(np.full((1, 100000), 200, np.uint8)), 422, "too narrow to hold a digit"),
        ("/api/predict?label=11", b"x", 400, "label must be a whole number from 0 to 9, got '11'"),
        ("/api/predict?label=-1", b"x", 400, "label must be"),
        ("/api/predict?label=seven", b"x", 400, "label must be"),
        ("/api/predict?test=10000", b"", 400, "test must be an index"),
        (f"/api/learn?session={key}&label=3&lr=nan", b"x", 400, "lr must be a number above 0"),
        (f"/api/learn?session={key}&label=3&lr=-1", b"x", 400, "lr must be a number above 0"),
        (f"/api/learn?session={key}&label=3&lr=1e9", b"x", 400, "at most 100"),
        (f"/api/learn?session={key}&lr=0.1", b"x", 400, "label is required"),
        ("/api/learn?session=nope&label=3", b"x", 404, "session has expired"),
        ("/api/learn?label=3", b"x", 400, "session is required"),
        (f"/api/save?session={key}", b"{not json", 400, "the body must be JSON"),
        (f"/api/save?session={key}", b'{"name": 3}', 400, "name is a string"),
        (f"/api/save?session={key}", b'{"name": "../evil"}', 400, "a name is 1 to 64 ASCII letters"),
        (f"/api/save?session={key}", b"{}", 409, "no learning step taken"),
        (f"/api/save?session={key}", b'{"name": "-rf"}', 400, "a name is"),
        (f"/api/save?session={key}", '{"name": "été"}'.encode(), 400, "ASCII"),
        ("/api/nowhere", b"", 404, "no such page or API"),
        ("/api/predict?label=%D9%A3", b"x", 400, "label must be a whole number"),  # an Arabic-Indic 3
        ("/api/predict?label=3&label=4", b"x", 400, "label is given 2 times"),
        ("/api/cell?true=%C2%B2&predicted=5", None, 400, "true must be a whole number"),  # a superscript 2
        ("/api/cell?true=" + "9" * 5000 + "&predicted=5", None, 400, "true must be a whole number"),
        ("/api/model?" + "&".join(f"x{i}=1" for i in range(30)), None, 400, "too many query parameters"),
        (f"/api/learn?session={key}&label=3&lr=", b"x", 400, "lr must be a number"),
        (f"/api/learn?session={key}&label=3&lr=1_0", b"x", 400, "lr must be a number"),
        (f"/api/learn?session={key}&label=3&lr=%EF%BC%91", b"x", 400, "lr must be a number"),  # a full-width 1
        ("/api/model", b"", 405, "/api/model takes GET or HEAD, not POST"),
    ]
    for path, body, want_status, message in cases:
        got_status, got = call(server, path, body, method="GET" if body is None else "POST")
        assert got_status == want_status and message in got["error"], (path, got_status, got)
        assert set(got) <= {"error", "code", "args"} and "Traceback" not in got["error"]
    assert call(server, "/api/model")[0] == 200  # still serving


def test_twenty_clients_at_once_are_all_answered_right(server, pixels_checkpoint, mnist):
    from mnist_softmax.model import classify

    model = load_checkpoint(pixels_checkpoint).model
    results = {}

    def client(k: int) -> None:
        results[k] = call(server, "/api/predict", _png(mnist.test_images[k]))

    threads = [threading.Thread(target=client, args=(k,)) for k in range(20)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for k in range(20):
        status, got = results[k]
        assert status == 200, got
        digit = np.array(got["page"]["digit"], np.uint8)
        assert got["prediction"] == int(classify(model, digit[None]).argmax())
        z = (model.features(digit[None]) @ model.W.T + model.b)[0].astype(np.float64)  # the model's logits
        p = np.exp(z - z.max()) / np.exp(z - z.max()).sum()  # softmax, written out, in float64
        np.testing.assert_allclose(got["probabilities"], p, rtol=1e-12)
        np.testing.assert_allclose(got["probabilities"], classify(model, digit[None])[0], rtol=2e-6)  # float32
    assert len({json.dumps(results[k][1]["probabilities"]) for k in range(20)}) == 20  # each its own answer


def test_a_silent_client_never_blocks_the_others(server):
    """A client that connects and sends nothing, and one that trickles its request: others are
    answered all the while."""
    port = int(server.rsplit(":", 1)[1].strip("/"))
    silent = socket.create_connection(("127.0.0.1", port))
    trickle = socket.create_connection(("127.0.0.1", port))
    try:
        trickle.sendall(b"POST /api/predict HTTP/1.1\r\nHost: 127.0.0.1")
        for _ in range(5):
            assert call(server, "/api/model")[0] == 200
            trickle.sendall(b" ")
    finally:
        silent.close()
        trickle.close()


def test_idle_connections_give_way_to_a_client_with_a_request_ready(server):
    """Seventy connections from one process that send nothing take every slot (64); from then on a
    client with a request ready is answered, each time, by cutting the idle connections that have
    waited longest, rather than refused 503 (on loopback all clients share one address)."""
    port = int(server.rsplit(":", 1)[1].strip("/"))
    idle = [socket.create_connection(("127.0.0.1", port)) for _ in range(70)]
    try:
        time.sleep(0.6)  # the idle ones are idle "for a while" (serve.IDLE_SECONDS)
        answered = [call(server, "/api/model")[0] for _ in range(30)]
        assert answered == [200] * 30
    finally:
        for s in idle:
            s.close()


# ------------------------------------------------------------------------------------------ learning


def test_learning_steps_raise_the_true_class_and_stay_on_their_page(server, pixels_checkpoint, mnist, tmp_path):
    before_file = hashlib.sha256(pixels_checkpoint.read_bytes()).hexdigest()
    image = _png(mnist.test_images[8])  # a 5 the model reads as something else, or weakly
    _, first = call(server, "/api/session", b"")
    _, second = call(server, "/api/session", b"")
    label = 5
    _, start = call(server, f"/api/predict?label={label}&session={first['session']}", image)
    p = start["probabilities"][label]
    for step in (1, 2, 3):
        status, learned = call(server, f"/api/learn?session={first['session']}&label={label}&lr=0.001", image)
        assert status == 200 and learned["steps"] == step
        assert learned["before"]["probabilities"][label] == pytest.approx(p)
        assert learned["after"]["probabilities"][label] > p
        p = learned["after"]["probabilities"][label]
    _, again = call(server, f"/api/predict?label={label}&session={first['session']}", image)
    assert again["probabilities"][label] == pytest.approx(p) and again["page"]["steps"] == 3
    _, other = call(server, f"/api/predict?label={label}&session={second['session']}", image)
    _, plain = call(server, f"/api/predict?label={label}", image)
    assert other["probabilities"] == plain["probabilities"] == start["probabilities"]  # another tab: its own weights

    status, saved = call(server, f"/api/save?session={first['session']}", b'{"name": "my-model"}')
    assert status == 200 and saved["name"] == "my-model.npz" and saved["steps"] == 3
    status, saved2 = call(server, f"/api/save?session={first['session']}", b'{"name": "my-model"}')
    assert saved2["name"] == "my-model-2.npz"  # never over a file
    written = load_checkpoint(Path(saved["saved"]))
    assert written.metrics["learned_on_page"] == {"from": "model.npz", "steps": 3}
    cli = cli_record(Path(saved["saved"]), _saved_png(tmp_path, image), label)
    assert cli["probabilities"][label] == pytest.approx(p, rel=1e-6)  # the saved model is the page's
    assert hashlib.sha256(pixels_checkpoint.read_bytes()).hexdigest() == before_file  # the served file untouched

    assert call(server, f"/api/reset?session={first['session']}", b"")[1] == {"steps": 0}
    _, reset = call(server, f"/api/predict?label={label}&session={first['session']}", image)
    assert reset["probabilities"] == start["probabilities"]
    for path in (Path(saved["saved"]), Path(saved2["saved"])):
        path.unlink()


def _saved_png(folder: Path, data: bytes) -> Path:
    (folder / "digit.png").write_bytes(data)
    return folder / "digit.png"


def test_sessions_are_bounded_in_number(server):
    from mnist_softmax.serve.sessions import MAX_SESSIONS

    keys = [call(server, "/api/session", b"")[1]["session"] for _ in range(MAX_SESSIONS + 1)]
    assert call(server, f"/api/reset?session={keys[0]}", b"")[0] == 404  # the oldest page gave way
    assert call(server, f"/api/reset?session={keys[-1]}", b"")[0] == 200


# ------------------------------------------------------------------------------------------ the run


def test_the_run_behind_the_checkpoint(server, pixels_checkpoint, mnist_dir, mnist):
    status, info = call(server, "/api/run")
    summary = json.loads((pixels_checkpoint.parent / "summary.json").read_text())
    assert status == 200 and len(info["history"]) == summary["epochs"] == 10
    assert info["metrics"]["test_accuracy"] == summary["test_accuracy"]
    status, scores = call(server, "/api/confusion")
    evaluated = json.loads(run("eval", "--checkpoint", pixels_checkpoint, "--data-dir", mnist_dir, "--json").stdout)
    assert (
        status == 200 and scores["confusion"] == evaluated["confusion"] and scores["accuracy"] == evaluated["accuracy"]
    )
    status, cell = call(server, "/api/cell?true=4&predicted=9&limit=5")
    assert (
        status == 200 and cell["count"] == evaluated["confusion"][4][9] and len(cell["digits"]) == min(5, cell["count"])
    )
    for d in cell["digits"]:
        assert d["digit"] == mnist.test_images[d["index"]].tolist() and mnist.test_labels[d["index"]] == 4
        status, got = call(server, f"/api/predict?test={d['index']}", b"")
        assert got["prediction"] == 9 and got["page"]["digit"] == d["digit"]


def test_without_the_test_set_the_run_scores_say_how_to_get_it(pixels_checkpoint, tmp_path):
    proc, url = start_server(pixels_checkpoint, tmp_path / "empty")
    try:
        status, body = call(url, "/api/confusion")
        assert status == 404 and f"`mnist-softmax download --data-dir {tmp_path / 'empty'}` gets it" in body["error"]
    finally:
        stop(proc)


def test_the_run_is_read_from_the_served_checkpoint_itself(pixels_checkpoint, mnist, tmp_path):
    """A copy under another name and folder still shows its run; an interrupted run says it was never
    scored; a checkpoint saved from the page (no training state) says it holds no history; saving
    from a checkpoint whose name is not a plain name gives a plain default name."""
    import shutil

    odd = tmp_path / "my model (copy).npz"
    shutil.copy(pixels_checkpoint, odd)
    proc, url = start_server(odd, None)
    try:
        status, body = call(url, "/api/run")
        assert status == 200 and len(body["history"]) == 10 and body["summary"].startswith("10 epochs of pixels; test")
        _, session = call(url, "/api/session", b"")
        assert (
            call(url, f"/api/learn?session={session['session']}&label=3&lr=0.001", _png(mnist.test_images[0]))[0] == 200
        )
        status, saved = call(url, f"/api/save?session={session['session']}", b"")
        assert status == 200 and saved["name"] == "my-model--copy-learned.npz"
    finally:
        stop(proc)
    proc, url = start_server(Path(saved["saved"]), None)
    try:
        status, body = call(url, "/api/run")
        assert status == 404 and "holds no training history" in body["error"]
    finally:
        stop(proc)
    from dataclasses import replace

    from mnist_softmax.checkpoint import load_run, save_checkpoint

    checkpoint, state = load_run(pixels_checkpoint)
    interrupted = tmp_path / "interrupted" / "model.npz"
    interrupted.parent.mkdir()
    metrics = {**checkpoint.metrics, "interrupted": True, "test_accuracy": None, "epochs": 3}
    save_checkpoint(
        interrupted, checkpoint.model, checkpoint.config, metrics, replace(state, history=state.history[:3])
    )
    proc, url = start_server(interrupted, None)
    try:
        status, body = call(url, "/api/run")
        assert (
            status == 200
            and body["summary"] == "3 epochs of pixels of the 10 planned: interrupted, never scored on the test set."
        )
    finally:
        stop(proc)


# ------------------------------------------------------------------------------------------ the process


@pytest.mark.parametrize("sig,code", [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_a_signal_stops_it_cleanly_and_frees_the_port(pixels_checkpoint, sig, code):
    proc, url = start_server(pixels_checkpoint, None)
    port = int(url.rsplit(":", 1)[1].strip("/"))
    assert call(url, "/api/model")[0] == 200
    assert stop(proc, sig) == (code, "stopped\n")
    with socket.socket() as s:  # free again, for a server (which binds as this one did: connections it
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # closed may linger in TIME_WAIT)
        s.bind(("127.0.0.1", port))
        s.listen()


@pytest.mark.parametrize("signals", ["INT", "TERM"])
def test_a_signal_during_save_as_lets_the_save_finish(pixels_checkpoint, mnist_dir, tmp_path, signals):
    """The signal comes as the new checkpoint's temp file is made (tests/aim_signal.py): the server
    stops once the save is complete, and leaves no temp file; the original is untouched."""
    folder = tmp_path / "ck"
    folder.mkdir()
    checkpoint = folder / "model.npz"
    checkpoint.write_bytes(pixels_checkpoint.read_bytes())
    (folder / ".model-old.npz.999999999-1a2b3c4d.tmp").write_bytes(b"x")  # a killed server's: removed at start
    aim = [sys.executable, str(Path(__file__).with_name("aim_signal.py")), f"slow-write:model-learned.npz={signals}"]
    aim += ["--"]  # the write goes on for 1 s after the signal: the server waits for it
    cmd = [*aim, "serve", "--checkpoint", str(checkpoint), "--port", "0", "--no-browser", "--data-dir", str(mnist_dir)]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    url = proc.stdout.readline().split(" at ")[1].split()[0]
    key = call(url, "/api/session", b"")[1]["session"]
    assert call(url, f"/api/learn?session={key}&label=3&test=0", b"")[0] == 200
    with contextlib.suppress(urllib.error.URLError, ConnectionError, http.client.HTTPException):
        call(url, f"/api/save?session={key}", b"{}")  # the server stops as it answers, or before
    _, err = proc.communicate(timeout=30)
    assert (proc.returncode, err) == ({"INT": 130, "TERM": 143}[signals], "stopped\n")
    assert sorted(p.name for p in folder.iterdir()) == ["model-learned.npz", "model.npz"]
    assert load_checkpoint(folder / "model-learned.npz").metrics["learned_on_page"]["steps"] == 1
    assert checkpoint.read_bytes() == pixels_checkpoint.read_bytes()


def test_a_stopping_server_starts_no_save_and_lets_one_under_way_finish(pixels_checkpoint, tmp_path):
    """Unit (serve.App): once close() has begun, a "Save as" waiting for its page's lock is not
    started (503), nor is any later one; and only a killed server's checkpoint temp files are
    cleared at start."""
    from mnist_softmax.serve import App

    folder = tmp_path / "ck"
    folder.mkdir()
    (folder / "model.npz").write_bytes(pixels_checkpoint.read_bytes())
    dead = "999999999-1a2b3c4d"
    (folder / f".model-old.npz.{dead}.tmp").write_bytes(b"x")
    (folder / f".notes.txt.{dead}.tmp").write_bytes(b"x")  # not a checkpoint: not serve's to remove
    lesson = App(folder / "model.npz", tmp_path)
    assert sorted(p.name for p in folder.iterdir()) == [f".notes.txt.{dead}.tmp", "model.npz"]
    key = lesson.new_session()
    session = lesson.session(key)
    session.steps = 1  # as after a learning step: something to save
    session.lock.acquire()  # this page's step under way
    waiting = []
    thread = threading.Thread(target=lambda: waiting.append(_refusal(lambda: lesson.save(key, "late"))))
    thread.start()
    closer = threading.Thread(target=lesson.close, args=(5.0,))
    closer.start()
    while not lesson.closing:
        time.sleep(0.001)
    session.lock.release()  # done: the waiting save gets its turn, and is refused
    thread.join(5)
    closer.join(5)
    assert waiting == [(503, "the server is stopping")] and not closer.is_alive()
    assert _refusal(lambda: lesson.save(key, "later")) == (503, "the server is stopping")
    assert sorted(p.name for p in folder.iterdir()) == [f".notes.txt.{dead}.tmp", "model.npz"]  # nothing written


def _refusal(call_it):
    from mnist_softmax.serve.app import ApiError

    try:
        call_it()
    except ApiError as e:
        return e.status, str(e)
    return None


def _children(pid: int) -> set[int]:
    return {int(c) for c in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()}


def _workers_ready(url: str) -> dict:
    deadline = time.monotonic() + 60
    while not (info := call(url, "/api/model")[1])["workers_ready"]:
        assert time.monotonic() < deadline, info
        time.sleep(0.1)
    return info


def test_predictions_run_in_worker_processes_and_answer_as_in_this_one(pixels_checkpoint, mnist_dir, mnist):
    """The server reads images and predicts in a worker process per core (serve/work.py): its answers
    are the ones the same App gives computing in this process, key for key."""
    from mnist_softmax.serve import App, serve_workers
    from mnist_softmax.serve.api import Client, Site

    proc, url = start_server(pixels_checkpoint, mnist_dir)
    try:
        info = _workers_ready(url)
        assert info["workers"] == serve_workers() >= 2 and len(_children(proc.pid)) >= info["workers"]
        here = App(pixels_checkpoint, mnist_dir)
        here.site = Site(8000, frozenset({"127.0.0.1"}))
        client = Client(here)
        for i in range(5):
            image = _png(mnist.test_images[i])
            got = call(url, f"/api/predict?label={i}", image)[1]
            assert got == client.post(f"/api/predict?label={i}", image).json()
        assert call(url, "/api/predict?test=3&label=0", b"")[1] == client.post("/api/predict?test=3&label=0").json()
        key = call(url, "/api/session", b"")[1]["session"]
        learned = call(url, f"/api/learn?session={key}&label=4&lr=0.01", _png(mnist.test_images[0]))[1]
        assert learned["steps"] == 1 and learned["delta_z"]["measured"] == learned["delta_z"]["formula"]
        again = call(url, f"/api/predict?session={key}&label=4", _png(mnist.test_images[0]))[1]
        assert again["probabilities"] == learned["after"]["probabilities"]  # the page's own weights, sent along
        assert call(url, "/api/predict", b"not an image")[0] == 422
    finally:
        stop(proc)


def test_a_ctrl_c_at_the_terminal_stops_the_server_and_its_workers(pixels_checkpoint):
    """The terminal's Ctrl-C goes to the whole process group: the workers ignore it (no traceback of
    theirs), the server stops them and says "stopped" alone."""
    proc, url = start_server(pixels_checkpoint, None, start_new_session=True)
    _workers_ready(url)
    workers = _children(proc.pid)
    os.killpg(proc.pid, signal.SIGINT)
    _, err = proc.communicate(timeout=30)
    assert (proc.returncode, err) == (130, "stopped\n")
    deadline = time.monotonic() + 10
    while any(Path(f"/proc/{w}").exists() for w in workers) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not any(Path(f"/proc/{w}").exists() for w in workers)


def test_a_ctrl_c_ignored_when_it_started_stays_ignored(pixels_checkpoint):
    """Started as a shell script's background job (SIGINT ignored), it is not stopped by a Ctrl-C
    meant for the script, as train is not; SIGTERM stops it."""
    proc, url = start_server(pixels_checkpoint, None, preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_IGN))
    proc.send_signal(signal.SIGINT)
    time.sleep(0.5)
    assert call(url, "/api/model")[0] == 200 and proc.poll() is None
    assert stop(proc, signal.SIGTERM) == (143, "stopped\n")


def test_a_taken_port_is_one_clear_error(pixels_checkpoint):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        command = ["serve", "--checkpoint", str(pixels_checkpoint), "--port", str(port), "--no-browser"]
        done = subprocess.run(
            [sys.executable, "-m", "mnist_softmax", *command], capture_output=True, text=True, timeout=60
        )
    assert done.returncode == 1 and done.stdout == ""
    assert done.stderr == (
        f"Error: port {port} on 127.0.0.1 is taken (Address already in use): "
        "choose another with --port, or --port 0 for a free one\n"
    )


def test_listening_beyond_this_machine_warns_and_takes_requests_by_address(pixels_checkpoint):
    """With --host 0.0.0.0 other machines name this one by an address (or its host name): those Host
    headers are accepted, a domain name is still refused (DNS rebinding)."""
    proc, url = start_server(pixels_checkpoint, None, "--host", "0.0.0.0")
    port = url.rsplit(":", 1)[1].strip("/")
    try:
        for host, status in [("192.0.2.7", 200), ("[2001:db8::7]", 200), (socket.gethostname(), 200),
                             ("attacker.example", 403), ("127.1", 403)]:  # fmt: skip
            answer = raw(url, f"GET /api/model HTTP/1.1\r\nHost: {host}:{port}\r\n\r\n".encode())
            assert answer.startswith(f"HTTP/1.0 {status} ".encode()), (host, answer[:120])
    finally:
        code, err = stop(proc)
    assert err.startswith("warning: listening on 0.0.0.0: anyone who can reach this machine can use the page")
    proc, url = start_server(pixels_checkpoint, None, "--host", "127.0.0.2")  # loopback too: no warning
    assert stop(proc) == (130, "stopped\n")
    done = subprocess.run([sys.executable, "-m", "mnist_softmax", "serve", "--checkpoint", str(pixels_checkpoint),
                           "--no-browser", "--host", " "], capture_output=True, text=True, timeout=60)  # fmt: skip
    assert done.returncode == 2 and "--host is empty" in done.stderr


def test_serving_other_machines_a_post_is_taken_only_from_this_servers_own_page(pixels_checkpoint):
    """With --host 0.0.0.0 any IP address may name this server in Host, but an Origin of another IP
    address with the same port is another machine's page: 403. The page's own Origin (the address
    the request was sent to, or a name of this server) is taken."""
    proc, url = start_server(pixels_checkpoint, None, "--host", "0.0.0.0")
    port = url.rsplit(":", 1)[1].strip("/")
    try:
        for host, origin, status in [
            ("192.0.2.7", "http://192.0.2.7", 200),
            ("192.0.2.7", "http://127.0.0.1", 200),
            ("192.0.2.7", "http://192.0.2.9", 403),
            ("192.0.2.7", "http://10.1.2.3", 403),
            ("127.0.0.1", "http://[2001:db8::7]", 403),
            ("[2001:db8::7]", "http://[2001:db8::7]", 200),
            ("192.0.2.7", "http://attacker.example", 403),
        ]:
            request = f"POST /api/session HTTP/1.1\r\nHost: {host}:{port}\r\nOrigin: {origin}:{port}\r\n"
            answer = raw(url, (request + "Content-Length: 0\r\n\r\n").encode())
            assert answer.startswith(f"HTTP/1.0 {status} ".encode()), (host, origin, answer[:160])
    finally:
        stop(proc)


def test_serve_without_a_trained_model_says_what_to_do(tmp_path):
    done = subprocess.run([sys.executable, "-m", "mnist_softmax", "serve", "--no-browser"], capture_output=True,
                          text=True, cwd=tmp_path, timeout=60)  # fmt: skip
    assert done.returncode == 1 and "run `mnist-softmax train` first" in done.stderr and done.stderr.count("\n") == 1


def test_slow_and_half_open_clients_are_cut_off(pixels_checkpoint, monkeypatch):
    """In-process, with short limits: a client that stops sending is cut off after the read
    timeout, one that trickles its request after the connection's deadline."""
    import select

    from mnist_softmax.serve import App, make_server
    from mnist_softmax.serve import server as serve_mod

    monkeypatch.setattr(serve_mod, "REQUEST_SECONDS", 1.5)
    monkeypatch.setattr(serve_mod.Handler, "timeout", 0.5)
    server = make_server(App(pixels_checkpoint, Path("data")), "127.0.0.1", 0)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    port = server.server_address[1]
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=10) as silent:
            assert silent.recv(100) == b""  # closed by the server, having been sent nothing
        with socket.create_connection(("127.0.0.1", port), timeout=10) as trickle:
            closed = False
            for _ in range(100):  # a byte every 0.1 s: never half a second without one
                try:
                    trickle.sendall(b"X")
                except OSError:
                    closed = True
                    break
                if select.select([trickle], [], [], 0.1)[0]:
                    closed = trickle.recv(100) == b""
                    break
            assert closed, "a trickling client was never cut off"
    finally:
        server.shutdown()
        server.server_close()


def test_the_page_serves_the_checkpoint_it_read_at_start_whatever_happens_to_its_path(
    pixels_checkpoint, conv_trained, mnist, tmp_path
):
    """Started on runs/latest/model.npz: a new run that moves runs/latest, or a file written over the
    old one, changes nothing the page shows (model, history, metrics all from the one reading at start)
    and "Save as" still writes beside the file it read; the page is told the path changed."""
    import os
    import shutil

    runs = tmp_path / "runs"
    for name, source in (("a", pixels_checkpoint.parent), ("b", conv_trained)):
        shutil.copytree(source, runs / name)
    (runs / "latest").symlink_to("a")
    served = runs / "latest" / "model.npz"
    proc, url = start_server(served, None)
    try:
        image = _png(mnist.test_images[0])
        before = {path: call(url, path)[1] for path in ("/api/run", "/api/model")}
        first = call(url, "/api/predict?label=7", image)[1]
        assert before["/api/model"]["changed"] is None and first["page"]["changed"] is None
        (runs / "latest").unlink()
        (runs / "latest").symlink_to("b")  # a new `train` finished
        assert call(url, "/api/run")[1] == before["/api/run"]
        model = call(url, "/api/model")[1]
        changed = model["changed"]
        assert model["front_end"] == "pixels" and changed["text"].startswith(f"{served} now leads to {runs / 'b'}")
        assert (
            changed["kind"] == "moved"
            and changed["path"] == str(served)
            and changed["now"] == str(runs / "b" / "model.npz")
        )
        again = call(url, "/api/predict?label=7", image)[1]
        assert again["probabilities"] == first["probabilities"] and again["page"]["changed"] == model["changed"]
        key = call(url, "/api/session", b"")[1]["session"]
        assert call(url, f"/api/learn?session={key}&label=7&lr=0.001", image)[0] == 200
        status, saved = call(url, f"/api/save?session={key}", b'{"name": "taught"}')
        assert status == 200 and Path(saved["saved"]) == (runs / "a" / "taught.npz").resolve()
        assert not (runs / "b" / "taught.npz").exists()
        (runs / "latest").unlink()
        (runs / "latest").symlink_to("a")
        tmp = runs / "a" / ".replacement"
        shutil.copy(conv_trained / "model.npz", tmp)
        os.replace(tmp, runs / "a" / "model.npz")  # written over, as an atomic save does
        assert call(url, "/api/run")[1] == before["/api/run"]
        assert call(url, "/api/model")[1]["changed"]["text"].startswith(f"{served} was replaced or changed")
    finally:
        stop(proc)


def test_huge_uploads_wait_their_turn_and_are_dropped_when_their_client_is_gone(pixels_checkpoint, mnist, monkeypatch):
    """In-process, with the budget scaled down (images over 1 MP share 4 MP at a time; each decode
    of one made 0.3 s slower): twelve uploads of a 3-MP image whose clients hang up at once are not
    all decoded; twelve whose clients wait take turns, while the page's own small drawing is
    answered at once, before most of them."""
    from mnist_softmax.images import decode as images_mod
    from mnist_softmax.serve import App, make_server
    from mnist_softmax.serve import app as serve_mod

    monkeypatch.setattr(serve_mod, "SMALL_IMAGE", 1_000_000)
    monkeypatch.setattr(serve_mod, "DECODE_BUDGET", 4_000_000)
    decoded, real = [], images_mod._decoded

    def slow(im):
        if im.width * im.height > 1_000_000:
            decoded.append(im.size)
            time.sleep(0.3)
        return real(im)

    monkeypatch.setattr(images_mod, "_decoded", slow)
    server = make_server(App(pixels_checkpoint, Path("data")), "127.0.0.1", 0)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    port = server.server_address[1]
    big = np.full((1500, 2000), 250, np.uint8)
    big[500:1000, 900:1000] = 20  # a 1
    huge, small = _png(big), _png(255 - np.pad(mnist.test_images[0], 126))
    request = f"POST /api/predict HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nContent-Length: {len(huge)}\r\n\r\n".encode()
    try:
        for _ in range(12):  # sent, and gone
            with socket.create_connection(("127.0.0.1", port)) as s:
                s.sendall(request + huge)
        time.sleep(1.0)
        while server.app.budget.in_use:
            time.sleep(0.05)
        assert len(decoded) <= 2, len(decoded)

        done = []

        def client(kind: str, body: bytes) -> None:
            status, _ = call(f"http://127.0.0.1:{port}", "/api/predict", body)
            done.append((kind, status))

        threads = [threading.Thread(target=client, args=("huge", huge)) for _ in range(12)]
        for t in threads:
            t.start()
        time.sleep(0.2)
        client("small", small)
        for t in threads:
            t.join()
        assert ("small", 200) in done and done.index(("small", 200)) <= 2, done
        assert sorted(done) == sorted([("huge", 200)] * 12 + [("small", 200)]), done
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture
def client(pixels_checkpoint, tmp_path):
    """The API answered in this process (api.respond), on a copy of the pixels checkpoint."""
    import shutil

    from mnist_softmax.serve import App, Client
    from mnist_softmax.serve.api import Site

    shutil.copy(pixels_checkpoint, tmp_path / "model.npz")
    app = App(tmp_path / "model.npz", tmp_path)
    app.site = Site(8000, frozenset({"127.0.0.1", "localhost"}))
    return Client(app)


@pytest.mark.parametrize(
    "name,saved",
    [("a" * 64, "a" * 64 + ".npz"), ("a" * 64 + ".npz", "a" * 64 + ".npz"), ("a" * 65, None), ("ends-in.", None),
     ("x.npz", "x.npz"), ("9lives", "9lives.npz"), ("-rf", None), (".hidden", None), ("two..dots", "two..dots.npz")],
)  # fmt: skip
def test_save_as_names_are_1_to_64_characters_from_a_letter_or_digit_not_ending_in_a_dot(client, name, saved):
    """The limits docs/serve.md states, by their values: 64 characters taken, 65 refused, a trailing
    "." refused (".npz" itself is dropped first); in-process, through api.respond."""
    key = client.post("/api/session").json()["session"]
    assert (
        client.post(f"/api/learn?session={key}&label=7", _png(np.pad(np.eye(20, dtype=np.uint8) * 255, 4))).status
        == 200
    )
    answer = client.post(f"/api/save?session={key}", json.dumps({"name": name}).encode())
    if saved is None:
        assert answer.status == 400 and answer.json()["error"].startswith("a name is 1 to 64 ASCII letters")
    else:
        assert answer.status == 200 and answer.json()["name"] == saved


@pytest.mark.parametrize("model,n", [("pixels", 3000), ("cnn", 300)])
def test_predict_explain_and_the_page_print_the_same_strings_for_every_digit(
    model, n, pixels_checkpoint, cnn_trained, mnist, tmp_path
):
    """For a sample of test digits saved as PNGs: the strings `predict --json --explain --label Y`
    makes of its numbers (display.explain_strings: z, z − max z, exp, their sum, p, the loss, the
    cross entropy) are those the page shows, one by one, and so are the probabilities."""
    import shutil

    from mnist_softmax.display import explain_strings
    from mnist_softmax.serve import App, Client
    from mnist_softmax.serve.api import Site

    checkpoint = pixels_checkpoint if model == "pixels" else cnn_trained / "model.npz"
    shutil.copy(checkpoint, tmp_path / "model.npz")
    app = App(tmp_path / "model.npz", tmp_path)
    app.site = Site(8000, frozenset({"127.0.0.1"}))
    client = Client(app)
    rng = np.random.default_rng(25)
    sample = rng.choice(10000, n, replace=False)
    for label in range(10):
        folder = tmp_path / f"label-{label}"
        folder.mkdir()
        for i in sample[mnist.test_labels[sample] == label]:
            Image.fromarray(mnist.test_images[i]).save(folder / f"{i:05d}.png")
        out = run("predict", folder, "--checkpoint", checkpoint, "--json", "--explain", "--label", label).stdout
        pages = {}
        for line in out.splitlines():
            cli = json.loads(line)
            page = client.post(f"/api/predict?label={label}", Path(cli["path"]).read_bytes()).json()
            strings = explain_strings(cli["explain"])
            assert {k: page["page"]["shown"][k] for k in strings} == strings, cli["path"]
            assert page["probabilities"] == cli["probabilities"] and page["prediction"] == cli["prediction"]
            pages[cli["path"]] = page["page"]["shown"]
        # The text output too: each image's probability bars and walk-through print the page's strings.
        text = run("predict", folder, "--checkpoint", checkpoint, "--explain", "--label", label).stdout
        blocks = [b for b in ("\n" + text).split(f"\n{folder}/") if b]
        assert len(blocks) == len(pages)
        for block in blocks:
            name, _, rest = block.partition(":")
            shown = pages[str(folder / name)]
            bars = [line.rsplit(" ", 1)[1] for line in rest.splitlines() if line.startswith("  ") and "│" in line]
            assert bars == shown["probabilities"], name
            for key in ("logits", "exp", "probabilities"):
                assert "[" + ", ".join(shown[key]) + "]" in rest, (name, key)
            assert f"= {shown['loss']}" in rest and shown["sum"] in rest
