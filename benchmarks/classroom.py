"""A classroom on one laptop: many pages drawing at once on one `mnist-softmax serve`.

    python benchmarks/classroom.py --checkpoint PIXELS.npz --checkpoint CNN.npz [--seconds 10]

For each checkpoint, starts the server as a user does (its own process, a free loopback port), and
for 1, 16 and 60 clients, each with a session of its own and a drawing of its own (a 280×280
canvas PNG of an MNIST test digit), measures:

- drawing: each client sends its stroke every 100 ms (as the page does while a pen moves; the next
  one at once if an answer took longer): the round trip's p50 and p95 and the requests answered
  per second;
- flat out: each client sends its next request as soon as the last is answered: the server's
  throughput, and its ratio to one client's (two cores: up to 2×);
- beside a live training: 16 drawing clients while one more page plays live training (frames
  back to back): their round trip.

The clients are threads of two processes of their own (so that their own Python does not slow the
server's), sending raw HTTP/1.0 and reading the answers' bytes. No assertions: the figures go to
RESULTS.md's "classroom" section (target: with 16 clients flat out, ≥ 1.7× one client's throughput).
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from results import machine, reference_speeds, write_section  # noqa: E402
from serve_speed import canvas_png  # noqa: E402

from mnist_softmax.checkpoint import load_checkpoint  # noqa: E402
from mnist_softmax.data import load_mnist  # noqa: E402

PERIOD = 0.1  # a stroke every 100 ms while drawing


def post(port: int, target: str, body: bytes) -> bytes:
    """One POST over its own connection (the server speaks HTTP/1.0): the answer's body."""
    with socket.create_connection(("127.0.0.1", port), timeout=60) as s:
        head = (f"POST {target} HTTP/1.0\r\nHost: 127.0.0.1:{port}\r\nContent-Type: application/octet-stream\r\n"
                f"Content-Length: {len(body)}\r\n\r\n")  # fmt: skip
        s.sendall(head.encode() + body)
        chunks = []
        while chunk := s.recv(1 << 16):
            chunks.append(chunk)
    answer = b"".join(chunks)
    status = answer[9:12]
    if status != b"200":
        raise RuntimeError(f"{target}: {answer[:200]!r}")
    return answer.split(b"\r\n\r\n", 1)[1]


def session(port: int) -> str:
    return json.loads(post(port, "/api/session", b""))["session"]


def client(port: int, body: bytes, paced: bool, until: float, out: list) -> None:
    """Draw until `until`: (start time, round trip) of each request, into out."""
    key = session(port)
    target = f"/api/predict?session={key}&label=7"
    next_at = time.perf_counter()
    while True:
        now = time.perf_counter()
        if paced and now < next_at:
            time.sleep(next_at - now)
        t = time.perf_counter()
        if t >= until:
            return
        post(port, target, body)
        out.append((t, time.perf_counter() - t))
        next_at += PERIOD
        if next_at < time.perf_counter():
            next_at = time.perf_counter()


def live_player(port: int, until: float, out: list) -> None:
    """A page playing live training: frames back to back until `until`."""
    key = session(port)
    post(port, f"/api/live?session={key}&action=start&from=zeros", b"")
    while time.perf_counter() < until:
        t = time.perf_counter()
        post(port, f"/api/live?session={key}&action=frame&lr=0.05&batch=200&steps=5", b"")
        out.append((t, time.perf_counter() - t))


def _process(port: int, bodies: list[bytes], paced: bool, start: float, seconds: float, live: bool, queue) -> None:
    """One client process: a thread per client (and one live player), all starting at `start`."""
    results: list = []
    frames: list = []
    shift = time.time() - time.perf_counter()  # wall clock = perf_counter + shift, in this process
    until = start + seconds - shift
    threads = [threading.Thread(target=client, args=(port, b, paced, until, results)) for b in bodies]
    if live:
        threads.append(threading.Thread(target=live_player, args=(port, until, frames)))
    time.sleep(max(0.0, start - time.time()))
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    queue.put(([(t + shift, d) for t, d in results], [(t + shift, d) for t, d in frames]))


def crowd(port: int, bodies: list[bytes], paced: bool, seconds: float, live: bool = False) -> tuple[list, list]:
    """Run len(bodies) clients in two processes for `seconds`: ([round trips], [live frames])."""
    queue = multiprocessing.Queue()
    start = time.time() + 1.0  # sessions first, then all begin together
    halves = [bodies[0::2], bodies[1::2]]
    procs = [
        multiprocessing.Process(target=_process, args=(port, half, paced, start, seconds, live and k == 0, queue))
        for k, half in enumerate(halves)
        if half or (live and k == 0)
    ]
    for p in procs:
        p.start()
    got = [queue.get() for _ in procs]
    for p in procs:
        p.join()
    trips = [d for r, _ in got for _, d in r]
    frames = [d for _, f in got for _, d in f]
    return trips, frames


def ms(values: list[float], q: float) -> float:
    return float(np.percentile(np.array(values) * 1000, q)) if values else float("nan")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--checkpoint", action="append", required=True, help="repeatable")
    ap.add_argument("--data-dir", default="data")
    ap.add_argument("--seconds", type=float, default=10.0)
    a = ap.parse_args()
    before = reference_speeds()
    mnist = load_mnist(a.data_dir, quiet=True)
    bodies = [canvas_png(mnist.test_images[i]) for i in range(60)]
    drawing = ["| model | clients | p50 ms | p95 ms | answered / s |", "| --- | --- | --- | --- | --- |"]
    flat = ["| model | clients | answered / s | × one client's | p50 ms | p95 ms |", "|" + " --- |" * 6]
    beside = ["| model | drawing p50 ms | p95 ms | live frame p50 ms | p95 ms |", "| --- | --- | --- | --- | --- |"]
    for path in map(Path, a.checkpoint):
        front_end = load_checkpoint(path).model.front_end
        cmd = [sys.executable, "-m", "mnist_softmax", "serve", "--checkpoint", str(path), "--port", "0", "--no-browser",
               "--data-dir", a.data_dir]  # fmt: skip
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=None, text=True)
        try:
            port = int(proc.stdout.readline().split(" at ")[1].split()[0].rstrip("/").rsplit(":", 1)[1])
            crowd(port, bodies[:4], False, 2.0, live=True)  # warm up: the scores, the live rows
            one = None
            for n in (1, 16, 60):
                trips, _ = crowd(port, bodies[:n], True, a.seconds)
                drawing.append(f"| {front_end} | {n} | {ms(trips, 50):.1f} | {ms(trips, 95):.1f} | "
                               f"{len(trips) / a.seconds:.0f} |")  # fmt: skip
                print(drawing[-1], flush=True)
                trips, _ = crowd(port, bodies[:n], False, a.seconds)
                rate = len(trips) / a.seconds
                one = one or rate
                flat.append(f"| {front_end} | {n} | {rate:.0f} | {rate / one:.2f} | {ms(trips, 50):.1f} | "
                            f"{ms(trips, 95):.1f} |")  # fmt: skip
                print(flat[-1], flush=True)
            trips, frames = crowd(port, bodies[:16], True, a.seconds, live=True)
            beside.append(f"| {front_end} | {ms(trips, 50):.1f} | {ms(trips, 95):.1f} | {ms(frames, 50):.1f} | "
                          f"{ms(frames, 95):.1f} |")  # fmt: skip
            print(beside[-1], flush=True)
        finally:
            proc.terminate()
            proc.communicate(timeout=30)
    text = "\n".join(
        [
            "## A classroom: many pages drawing at once",
            "",
            f"`python benchmarks/classroom.py --seconds {a.seconds:g}"
            + " --checkpoint CHECKPOINT" * len(a.checkpoint)
            + "`: one `mnist-softmax serve` (its own process, loopback); each client a page with a session and a "
            "drawing of its own (a 280×280 canvas PNG of an MNIST test digit), sending POST /api/predict. "
            "Clients are threads of two processes of their own, on the same two cores as the server.",
            f"Machine: {machine()}; reference speeds {before} at the start, {reference_speeds()} at the end.",
            "",
            "Drawing: each client sends a stroke every 100 ms (the next at once if an answer took longer).",
            "",
            *drawing,
            "",
            "Flat out: each client sends its next request as soon as the last is answered; the server's "
            "throughput beside one client's (target: ≥ 1.7× with 16 clients, both cores used).",
            "",
            *flat,
            "",
            "Beside a live training: 16 clients drawing while a 17th page plays live training (frames of 5 "
            "steps back to back, each also scoring 5,000 validation digits).",
            "",
            *beside,
        ]
    )
    write_section("classroom", text)


if __name__ == "__main__":
    main()
