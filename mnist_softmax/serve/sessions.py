"""The pages' sessions: each page's own softmax layer (the checkpoint's, after the learning steps and
the live training done on that page), bounded in number and in memory, each with a lock of its own.

A session holds W and b (T×N), and while it trains live the momentum buffers and the order of its
rows: at most about 4·(T·N)·4 bytes plus 4 bytes a training row (live.py), 0.5 MB for cnn. The
registry keeps at most MAX_SESSIONS; past that the page least recently used gives way, and a page
idle for SESSION_IDLE_SECONDS is forgotten (its next request says so, and it starts afresh).
"""

from __future__ import annotations

import collections
import secrets
import threading
import time
from dataclasses import dataclass, field

from ..model import Model
from .errors import ApiError

MAX_SESSIONS, SESSION_IDLE_SECONDS = 200, 3600.0


@dataclass
class Session:
    """One page's own weights: the checkpoint's, after the learning steps and live training taken
    on that page. `lock` guards everything here; computing with a copy of `model` needs no lock."""

    model: Model
    steps: int = 0  # learning steps on one digit
    live: object | None = None  # live.LiveTraining, while the page trains live
    live_steps: int = 0  # SGD steps of live training, since the checkpoint's weights
    used: float = 0.0
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    @property
    def changed(self) -> bool:
        """Whether the page has moved the weights from the checkpoint's."""
        return self.steps > 0 or self.live_steps > 0


class Sessions:
    """The registry: {key: Session}, least recently used first; its own lock guards only the dict."""

    def __init__(self, model: Model, limit: int = MAX_SESSIONS, idle: float = SESSION_IDLE_SECONDS):
        self.model, self.limit, self.idle = model, limit, idle
        self._all: collections.OrderedDict[str, Session] = collections.OrderedDict()
        self._lock = threading.Lock()

    def new(self) -> str:
        with self._lock:
            self._forget_idle()
            while len(self._all) >= self.limit:
                self._all.popitem(last=False)  # the page least recently used
            key = secrets.token_urlsafe(16)
            self._all[key] = Session(self.model, used=time.monotonic())
            return key

    def get(self, key: str | None) -> Session | None:
        """The session of that key (None: the checkpoint's own weights); ApiError 404 if unknown or expired."""
        if key is None:
            return None
        with self._lock:
            self._forget_idle()
            found = self._all.get(key)
            if found is None:
                raise ApiError(404, "this page's session has expired (or never was): reload the page", "expired")
            found.used = time.monotonic()
            self._all.move_to_end(key)
            return found

    def __len__(self) -> int:
        return len(self._all)

    def _forget_idle(self) -> None:
        now = time.monotonic()
        for key in [k for k, s in self._all.items() if now - s.used > self.idle]:
            del self._all[key]
