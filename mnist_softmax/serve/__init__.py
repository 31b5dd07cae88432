"""`mnist-softmax serve`: the lesson on a local page. The server computes, the page draws.

- app.py: what the requests act upon: the checkpoint (read once, at start), each page's session,
  what all pages share (the run's test scores, live training's rows), the budget of image decoding;
- work.py: the heavy part of a request (an image read, predicted, the page's numbers, a learning
  step, the JSON), in worker processes so that it uses every core;
- sessions.py, live.py: the pages' sessions, and live training a frame at a time;
- api.py: the JSON API and the page's files as one pure function, respond(app, request);
- server.py: the HTTP server that turns connections into requests, with its guards;
- page.py: the numbers behind the page's pictures, its learning step and the lesson's examples;
- mnist_softmax/web/: the page itself (HTML, CSS, JavaScript modules, word tables), which only draws.
"""

import os

from .api import Client, Request, Response, respond
from .app import App
from .server import has_display, is_loopback, make_server

__all__ = [
    "App", "Client", "Request", "Response", "has_display", "is_loopback", "make_server", "respond", "serve_workers",
]  # fmt: skip

MAX_WORKERS = 4  # each holds the model and, once asked for a test digit, the test set (about 70 MB)


def serve_workers() -> int:
    """Worker processes for the page's requests: one per core, at most MAX_WORKERS; none on one core."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    return min(cores, MAX_WORKERS) if cores > 1 else 0
