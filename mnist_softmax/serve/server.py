"""The HTTP server of `mnist-softmax serve`: connections in, api.respond's answers out.

The standard library's ThreadingHTTPServer (see docs/serve.md for why), HTTP/1.0, one request per
connection, with the guards a server needs even on loopback: each connection is cut REQUEST_SECONDS
after it opened, or after READ_SECONDS in which its client sent nothing (slow or half-open
clients); at most MAX_CONNECTIONS are served at once, the idle ones giving way to a client with a
request ready; bodies over MAX_BODY are refused unread. What a request may ask (Host, Origin, the
routes) is api.py's to say.
"""

from __future__ import annotations

import contextlib
import errno
import http.server
import select
import socket
import sys
import threading
import time

from ..errors import MnistSoftmaxError
from ..images import quiet_pillow_everywhere
from .api import BODY_ROUTES, Request, Response, Site, error_response, json_response, refuse, respond, static_files
from .app import App
from .errors import ApiError

MAX_BODY = 10 * 1024 * 1024  # bytes of an uploaded image
REQUEST_SECONDS = 15.0  # a connection is closed this long after it opened, whatever its client does
READ_SECONDS = 10.0  # ... and when its client sends nothing for this long
MAX_CONNECTIONS = 64
IDLE_SECONDS = 0.5  # with every connection taken, one that has sent nothing for this long is cut first


class Handler(http.server.BaseHTTPRequestHandler):
    """One connection, one request (HTTP/1.0: no keep-alive), answered by api.respond."""

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
        self._answer()

    do_POST = do_HEAD = do_PUT = do_DELETE = do_PATCH = do_OPTIONS = do_GET  # respond says 405 or 404

    def send_error(self, code: int, message: str | None = None, explain: str | None = None) -> None:
        """http.server's own refusals (an unknown method, a malformed request line, headers too long)
        as JSON, with the same headers as every answer."""
        self.close_connection = True
        self._send(error_response(code, message))

    def _answer(self) -> None:
        headers: dict[str, list[str]] = {}
        for name, value in self.headers.items():
            headers.setdefault(name.lower(), []).append(value)
        request = Request(self.command, self.path, headers, alive=self.alive)
        try:
            answer = refuse(self.server.app, request)
            if answer is None:
                if request.target.split("?", 1)[0] in BODY_ROUTES:
                    request = Request(request.method, request.target, headers, self._body(), self.alive)
                answer = respond(self.server.app, request)
        except ApiError as e:  # the body's own refusals (411, 413, 400)
            answer = json_response(e.status, e.body())
        except (ConnectionError, TimeoutError):  # the client has gone: nobody to answer
            self.close_connection = True
            return
        self._send(answer)

    def _body(self) -> bytes:
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
            raise ApiError(413, f"{int(length):,} bytes sent; at most {MAX_BODY:,} are accepted", "too-large",
                           limit=MAX_BODY)  # fmt: skip
        if self.headers.get("Expect", "").lower() == "100-continue" and self.request_version >= "HTTP/1.1":
            # curl asks before sending a body over 1 MB, and waits a second for the go-ahead
            # (http.server gives it only as an HTTP/1.1 server): given here, once the body is wanted.
            self.wfile.write(b"HTTP/1.1 100 Continue\r\n\r\n")
            self.wfile.flush()
        data = self.rfile.read(int(length))
        if len(data) != int(length):
            raise ApiError(400, "the body is shorter than its Content-Length")
        return data

    def _send(self, answer: Response) -> None:
        with contextlib.suppress(OSError):
            self.send_response(answer.status)
            for name, value in answer.headers.items():
                self.send_header(name, value)
            self.send_header("Content-Type", answer.content_type)
            self.send_header("Content-Length", str(len(answer.body)))
            self.send_header("Cache-Control", "no-store")
            self.send_header("X-Content-Type-Options", "nosniff")
            self.send_header("Referrer-Policy", "no-referrer")
            self.send_header("X-Frame-Options", "DENY")
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(answer.body)


class Server(http.server.ThreadingHTTPServer):
    """A thread per connection (daemon threads: a stuck client never holds up the exit), at most
    MAX_CONNECTIONS at once: the idle ones are cut for a client with a request ready, and when none
    is idle, more are answered 503 at once."""

    daemon_threads = True
    allow_reuse_address = True  # a restarted server takes its port back at once
    request_queue_size = 128  # connections waiting to be accepted (socketserver's 5 reset the 6th of a burst)

    def __init__(self, address: tuple[str, int], app: App):
        if ":" in address[0]:
            self.address_family = socket.AF_INET6
        super().__init__(address, Handler)
        quiet_pillow_everywhere()  # images are read on the connections' threads (see images.decode)
        self.app = app
        self.active = threading.BoundedSemaphore(MAX_CONNECTIONS)
        self.waiting: dict[socket.socket, float] = {}  # connections yet to send a request line: when accepted
        self.waiting_lock = threading.Lock()
        host, port = address[0], self.server_address[1]
        everywhere = host in ("0.0.0.0", "::")
        shown_host = f"[{host}]" if ":" in host else host
        self.url = f"http://{'127.0.0.1' if everywhere else shown_host}:{port}/"
        names = {shown_host.lower(), "localhost", "127.0.0.1", "[::1]"}
        # Serving other machines, which name this one by an address (never rebindable: a page
        # elsewhere can only send its own domain name) or by its host name.
        if everywhere:
            names |= {n.lower() for n in _own_names()}
        app.site = Site(port, frozenset(names), everywhere)
        if not app.static:
            app.static = static_files()

    def process_request(self, request, client_address) -> None:
        if not self.active.acquire(blocking=False) and not (self._evict_idle() and self.active.acquire(timeout=1.0)):
            with contextlib.suppress(OSError):
                body = error_response(503, "too many connections at once; try again").body
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


def _own_names() -> set[str]:
    names = {socket.gethostname()}
    with contextlib.suppress(OSError):
        names |= set(socket.gethostbyname_ex(socket.gethostname())[2])
    return names


def make_server(app: App, host: str, port: int) -> Server:
    """The server, bound (port 0: a free one); MnistSoftmaxError when the port is taken."""
    try:
        return Server((host, port), app)
    except OSError as e:
        if e.errno == errno.EADDRINUSE:
            raise MnistSoftmaxError(
                f"port {port} on {host} is taken ({e.strerror}): choose another with --port, or --port 0 for a free one"
            ) from None
        raise MnistSoftmaxError(f"cannot listen on {host}:{port} ({e.strerror or e})") from None


def is_loopback(host: str) -> bool:
    """Whether an address reaches this machine only (127.0.0.0/8, ::1, localhost)."""
    import ipaddress

    try:
        return host == "localhost" or ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def has_display() -> bool:
    """Whether a browser could show a page here: a desktop session (not a bare SSH or CI shell)."""
    import os

    if sys.platform in ("darwin", "win32"):
        return True
    return bool(os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY"))
