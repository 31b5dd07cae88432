"""HTTP sessions for downloads (requests and urllib3) that cut a stalled server off.

urllib3's Retry retries refused connections and HTTP 408/429/5xx, with backoff; a timeout is not
retried (a silent server would cost another timeout each time). A Stall watches each request from
a thread of its own and shuts the session's sockets when the headers, or the next 64 kB of the
body, take longer than the stall limit: a server that trickles a byte every few seconds never trips
the socket's read timeout, which only bounds each read.
"""

from __future__ import annotations

import contextlib
import functools
import time

from . import __version__

CHUNK = 1 << 16  # bytes of a body read at a time; the stall limit is per chunk
TRANSIENT_STATUS = (408, 429, *range(500, 600))
STALL_SECONDS = 60.0  # no 64 kB chunk (or no complete headers) for this long: cut off (a trickling server)
SLOW_NOTICE_SECONDS = 10.0  # ... and after this long, the user is told which source is slow


class Unreachable(ValueError):
    """No answer from a source at all (refused, unknown host, timed out): it is skipped for the other files."""


class Slow(Unreachable):
    """A source that stopped sending (no chunk for the stall limit): asking it again, for this file or
    another, would cost another stall limit, so it is skipped for the rest of the command."""


class Sockets(list):
    """The sockets of a session's connections (watched_adapter), and whether a Stall has cut them
    off: then a new connection (urllib3 retrying what the cut broke) is refused with CutOff."""

    cut = False


class CutOff(Exception):
    """A connection opened after its session was cut off. Not an OSError, so urllib3 does not retry it."""


class Stall:
    """Cuts a request off when its headers have not all come, or no body chunk has, for `seconds`.
    A server that trickles a byte every few seconds never trips the read timeout, which only bounds
    each socket read; this shuts the session's sockets from a watcher thread, so the blocked read
    returns and the fault is seen. Once `answered()`, `notice()` is called once, from the watcher,
    when no chunk has come for `notice_after` seconds."""

    def __init__(self, sockets: Sockets, seconds: float, notice=lambda: None, notice_after: float | None = None):
        import threading

        self.sockets = sockets
        self.seconds = seconds
        self.notice = notice
        self.notice_after = SLOW_NOTICE_SECONDS if notice_after is None else notice_after
        self.last = time.monotonic()
        self.fired = self.fired_answered = False
        self.has_answered = False
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._watch, name="download-stall", daemon=True)

    def __enter__(self) -> Stall:
        self.sockets.cut = False
        self._thread.start()
        return self

    def answered(self) -> None:
        self.has_answered = True
        self.progress()

    def progress(self) -> None:
        self.last = time.monotonic()

    def _watch(self) -> None:
        import socket

        noticed = False
        while not self._done.wait(min(1.0, self.seconds / 4, self.notice_after / 2)):
            quiet_for = time.monotonic() - self.last
            if self.has_answered and not noticed and self.notice_after < quiet_for < self.seconds:
                noticed = True
                with contextlib.suppress(Exception):  # a message must never stop the watch
                    self.notice()
            if quiet_for > self.seconds:
                self.fired, self.fired_answered = True, self.has_answered
                self.sockets.cut = True  # first: the retry of what the shutdown breaks connects no more
                for sock in list(self.sockets):
                    with contextlib.suppress(OSError):
                        sock.shutdown(socket.SHUT_RDWR)
                return

    def __exit__(self, *exc) -> None:
        self._done.set()
        if self._thread.is_alive():
            self._thread.join()

    def cut_off(self) -> Slow:
        """The fault, once the watch has fired."""
        if self.fired_answered:
            return Slow(f"too slow: no {CHUNK // 1024} kB in {self.seconds:g} s")
        return Slow(f"too slow: no complete answer in {self.seconds:g} s")


def network_reason(e: Exception) -> str:
    """What a requests network error means, in a few words."""
    import requests

    text = str(e).lower()
    if isinstance(e, requests.Timeout) or "timed out" in text or "timeout" in text:
        return "network error: no answer in time"
    if "refused" in text:
        return "network error: connection refused"
    if "name or service not known" in text or "nodename nor servname" in text or "name resolution" in text:
        return "network error: host not found"
    return f"network error: {type(e).__name__}"


def read_timed_out(e: Exception) -> bool:
    """Whether a requests error is the socket's read timeout (requests wraps urllib3's
    ReadTimeoutError in a ConnectionError once the body is streaming)."""
    import requests
    from urllib3.exceptions import ReadTimeoutError

    return isinstance(e, requests.ReadTimeout) or any(isinstance(a, ReadTimeoutError) for a in e.args)


@functools.cache
def retry_class():
    """urllib3's Retry, except that a timeout is not retried: a server that did not take the
    connection, or took the request and then said nothing, for the whole timeout would cost another
    timeout each time it was asked."""
    from urllib3.exceptions import ConnectTimeoutError, NewConnectionError, ReadTimeoutError
    from urllib3.util.retry import Retry

    class NoRetryOnSilence(Retry):
        def increment(self, method=None, url=None, response=None, error=None, _pool=None, _stacktrace=None):
            timed_out = isinstance(error, ConnectTimeoutError) and not isinstance(error, NewConnectionError)
            if timed_out or isinstance(error, ReadTimeoutError):  # (a refused connection is a NewConnectionError)
                raise error.with_traceback(_stacktrace)
            return super().increment(method, url, response, error, _pool, _stacktrace)

    return NoRetryOnSilence


def watched_adapter(retry, sockets: Sockets):
    """requests' HTTPAdapter whose connections add their socket to `sockets` once connected, so a
    Stall can cut off a server that trickles even its headers; once it has, they raise CutOff."""
    from requests.adapters import HTTPAdapter
    from urllib3.connection import HTTPConnection, HTTPSConnection
    from urllib3.connectionpool import HTTPConnectionPool, HTTPSConnectionPool

    def watched(pool_class, connection_class):
        class Connection(connection_class):
            def connect(self):
                if sockets.cut:
                    raise CutOff
                super().connect()
                sockets.append(self.sock)

        return type(pool_class.__name__, (pool_class,), {"ConnectionCls": Connection})

    pools = {
        "http": watched(HTTPConnectionPool, HTTPConnection),
        "https": watched(HTTPSConnectionPool, HTTPSConnection),
    }

    class Adapter(HTTPAdapter):
        def init_poolmanager(self, *args, **kwargs):
            super().init_poolmanager(*args, **kwargs)
            self.poolmanager.pool_classes_by_scheme = pools

        def proxy_manager_for(self, proxy, **kwargs):
            manager = super().proxy_manager_for(proxy, **kwargs)
            manager.pool_classes_by_scheme = pools
            return manager

    return Adapter(max_retries=retry)


def session(retries: int, backoff: float, sockets: Sockets):
    """A requests session whose urllib3 Retry handles faults before a response: refused or reset
    connections and HTTP 408/429/5xx, each at most `retries` times, waiting backoff·2^k seconds
    (urllib3's schedule: no wait before the first retry). A timeout is not retried (see
    retry_class), and a server's Retry-After is not obeyed, so no server can make a download wait
    longer than that. Its connections' sockets are added to `sockets` (see watched_adapter)."""
    import requests

    retry = retry_class()(
        total=retries,
        status_forcelist=TRANSIENT_STATUS,
        allowed_methods=frozenset({"GET"}),
        backoff_factor=backoff,
        raise_on_status=False,  # the last answer comes back, and says which status it was
        respect_retry_after_header=False,
    )
    session = requests.Session()
    adapter = watched_adapter(retry, sockets)
    for scheme in ("http://", "https://"):
        session.mount(scheme, adapter)
    session.headers["User-Agent"] = f"mnist-softmax/{__version__} (+https://pypi.org/project/requests)"
    return session
