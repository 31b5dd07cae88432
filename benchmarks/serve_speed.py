"""How fast the local page answers: POST /api/predict of a drawing, round trip, beside the same work
done in-process, measured in the same run.

    python benchmarks/serve_speed.py --checkpoint PIXELS.npz --checkpoint CNN.npz [--requests 200]

For each checkpoint, starts `mnist-softmax serve` as a user does (its own process, a free loopback
port), makes a 280×280 canvas PNG of an MNIST test digit drawn black on white (what the page sends
as you draw), and sends it --requests times, one after another, as the page does: the round trip's
median (p50) and 95th percentile (p95). Beside it, in this process, the same work without HTTP
(serve.App.predict: reading the PNG, the predict pipeline, the prediction and the page's
numbers): what the server adds is the difference. No assertions: the target (p95 ≤ 100 ms, so
drawing feels live) is read off the table.

Then live training's cost (POST /api/live, section 9): --frames frames of 5 SGD steps (the page's
default) and of as many as FRAME_SECONDS allows, from zeros: the round trip, the server's own time
for the frame's steps and its validation score, and the answer's size.
"""

from __future__ import annotations

import argparse
import io
import json
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import numpy as np
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parent))
from results import machine, reference_speeds, write_section  # noqa: E402

from mnist_softmax.checkpoint import load_checkpoint  # noqa: E402
from mnist_softmax.data import load_mnist  # noqa: E402
from mnist_softmax.serve import App  # noqa: E402


def canvas_png(digit: np.ndarray) -> bytes:
    """A digit (28, 28) as the page's pad sends it: 280×280, black strokes on white, PNG."""
    big = Image.fromarray(255 - digit).resize((280, 280), Image.Resampling.BILINEAR)
    buf = io.BytesIO()
    big.convert("RGBA").save(buf, format="PNG")
    return buf.getvalue()


def percentiles(seconds: list[float]) -> tuple[float, float]:
    ms = np.array(seconds) * 1000
    return float(np.percentile(ms, 50)), float(np.percentile(ms, 95))


def round_trips(url: str, body: bytes, n: int) -> list[float]:
    times = []
    for _ in range(n):
        request = urllib.request.Request(url + "api/predict?label=7", data=body, method="POST")
        t = time.perf_counter()
        with urllib.request.urlopen(request, timeout=60) as response:
            response.read()
        times.append(time.perf_counter() - t)
    return times


def live_frames(url: str, n: int, steps: int | None) -> tuple[list[float], list[float], int]:
    """n frames of live training from zeros: (round trips s, the server's seconds per frame, bytes of the last)."""
    session = json.loads(urllib.request.urlopen(urllib.request.Request(url + "api/session", b"", method="POST")).read())
    key = session["session"]
    urllib.request.urlopen(urllib.request.Request(url + f"api/live?session={key}&action=start&from=zeros", b""))
    trips, server, size = [], [], 0
    for _ in range(n):
        q = f"api/live?session={key}&action=frame&lr=0.05&batch=200" + (f"&steps={steps}" if steps else "")
        t = time.perf_counter()
        with urllib.request.urlopen(urllib.request.Request(url + q, b"", method="POST"), timeout=60) as response:
            body = response.read()
        trips.append(time.perf_counter() - t)
        answer = json.loads(body)
        server.append(answer["history"][-1]["seconds"])
        size = len(body)
    return trips, server, size


def in_process(checkpoint: Path, body: bytes, n: int) -> list[float]:
    lesson = App(checkpoint, Path("data"))
    times = []
    for _ in range(n):
        t = time.perf_counter()
        lesson.predict(body, 7, None, None)
        times.append(time.perf_counter() - t)
    return times


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--checkpoint", action="append", required=True, help="repeatable")
    ap.add_argument("--data-dir", default="data")
    ap.add_argument("--requests", type=int, default=200)
    ap.add_argument("--frames", type=int, default=100)
    a = ap.parse_args()
    before = reference_speeds()
    mnist = load_mnist(a.data_dir, quiet=True)
    body = canvas_png(mnist.test_images[0])  # a 7
    lines = [
        "| model | POST /api/predict p50 ms | p95 ms | in-process p50 ms | p95 ms | the server adds (p50) ms |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    live = [
        "| model | steps a frame | POST /api/live p50 ms | p95 ms | server's frame p50 ms | p95 ms | answer kB |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    for path in map(Path, a.checkpoint):
        front_end = load_checkpoint(path).model.front_end
        cmd = [sys.executable, "-m", "mnist_softmax", "serve", "--checkpoint", str(path), "--port", "0", "--no-browser"]
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        try:
            url = proc.stdout.readline().split(" at ")[1].split()[0]
            round_trips(url, body, 5)  # warm up
            served = percentiles(round_trips(url, body, a.requests))
            live_frames(url, 3, 5)  # the training set's features, computed once
            for steps in (5, None):
                trips, frame, size = live_frames(url, a.frames, steps)
                (t50, t95), (f50, f95) = percentiles(trips), percentiles(frame)
                how = steps or "as many as 80 ms allow"
                kb = size / 1024
                live.append(f"| {front_end} | {how} | {t50:.1f} | {t95:.1f} | {f50:.1f} | {f95:.1f} | {kb:.0f} |")
                print(live[-1], flush=True)
        finally:
            proc.terminate()
            proc.communicate(timeout=30)
        in_process(path, body, 5)
        local = percentiles(in_process(path, body, a.requests))
        lines.append(
            f"| {front_end} | {served[0]:.1f} | {served[1]:.1f} | {local[0]:.1f} | {local[1]:.1f} | "
            f"{served[0] - local[0]:.1f} |"
        )
        print(lines[-1], flush=True)
    text = "\n".join(
        [
            "## The local page: how fast it answers",
            "",
            f"`python benchmarks/serve_speed.py --requests {a.requests}"
            + " --checkpoint CHECKPOINT" * len(a.checkpoint)
            + "`: a 280×280 canvas PNG of a drawn 7 (MNIST test digit 0), sent one request after another, as the "
            "page sends a drawing; the round trip through `mnist-softmax serve` (its own process, loopback), and "
            "the same work in this process without HTTP (serve.App.predict: the PNG read, predict's pipeline, "
            "the prediction and the page's numbers). Target: p95 ≤ 100 ms.",
            f"Machine: {machine()}; reference speeds {before} at the start, {reference_speeds()} at the end.",
            "",
            *lines,
            "",
            f"Live training (section 9), {a.frames} frames from zeros at lr 0.05, batch 200, after 3 to warm up: "
            "the round trip of each frame, the server's own time for its SGD steps and validation score "
            "(5,000 digits), and the size of its answer (the curves and W's ten rows).",
            "",
            *live,
        ]
    )
    write_section("serve", text)


if __name__ == "__main__":
    main()
