"""The page's JSON API and its files, as one pure function: respond(app, request) -> response.

The HTTP server (server.py) turns each connection's request into a Request and sends back the
Response; tests call `respond` in this process, as they would the server (Client is their test
client, after Datasette's). Every refusal is {"error": "<one line>"} with its status: the same
one-line messages the CLI prints. docs/serve.md lists the routes.
"""

from __future__ import annotations

import contextlib
import http
import ipaddress
import json
import math
import re
import sys
import urllib.parse
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from ..display import json_text
from ..errors import ImageError, MnistSoftmaxError
from ..text import escape_controls
from .app import ApiError, App
from .live import MAX_FRAME_STEPS

MAX_LR, DEFAULT_LR = 100.0, 0.005
MAX_LIVE_LR = 10.0
NUMBER = re.compile(r"[+-]?([0-9]+\.?[0-9]*|\.[0-9]+)([eE][+-]?[0-9]+)?")  # a plain decimal number, ASCII only
WEB = "web"  # the page's files, package data of mnist_softmax
CONTENT_TYPES = {
    ".html": "text/html; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".js": "text/javascript",
    ".json": "application/json",
}
# The page loads nothing from anywhere but this server.
CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' blob: data:; connect-src 'self'; "
    "frame-ancestors 'none'; base-uri 'none'; form-action 'none'"
)


@dataclass(frozen=True)
class Site:
    """The names this server answers to (see allows): set by the server once it has its port."""

    port: int
    names: frozenset[str]  # lower-case host names and addresses (IPv6 in brackets)
    any_address: bool = False  # listening on 0.0.0.0 or ::: other machines name it by an address

    def allows(self, host: str, any_ip: bool = True) -> bool:
        """Whether a Host (or an Origin's host) names this server: one of its names, or with --host
        0.0.0.0 and any_ip, any IP address (which no page elsewhere can rebind to it), and this
        server's port (none for port 80)."""
        name, _, port = host.rpartition(":") if not host.endswith("]") else (host, "", "")
        if not name or port != str(self.port):
            name, port = host, ""
            if self.port != 80:
                return False
        if name in self.names:
            return True
        if self.any_address and any_ip:
            with contextlib.suppress(ValueError):
                ipaddress.ip_address(name.strip("[]"))
                return True
        return False


@dataclass(frozen=True)
class Request:
    """One request as the API takes it: its method, target (path and query), headers (names in
    lower case, each with all its values), body, and whether its client is still there to answer."""

    method: str
    target: str
    headers: Mapping[str, list[str]] = field(default_factory=dict)
    body: bytes = b""
    alive: Callable[[], bool] = lambda: True

    def header(self, name: str) -> str | None:
        values = self.headers.get(name.lower())
        return values[0] if values else None


@dataclass(frozen=True)
class Response:
    status: int
    body: bytes
    content_type: str
    headers: Mapping[str, str] = field(default_factory=dict)

    def json(self):
        return json.loads(self.body)


def respond(app: App, request: Request) -> Response:
    """The answer to one request: the page's files, a route's JSON, or a JSON error. A fault of ours
    is one line on stderr and a 500 with the exception's type, never a traceback to the page."""
    try:
        refused = refuse(app, request)
        if refused is not None:
            return refused
        url = urllib.parse.urlsplit(request.target)
        static = app.static.get(url.path)
        if static is not None:
            return Response(200, static[1], static[0], _page_headers(static[0]))
        try:
            query = urllib.parse.parse_qs(url.query, keep_blank_values=True, max_num_fields=20)
        except ValueError:
            raise ApiError(400, "too many query parameters") from None
        route = ROUTES[(_as_get(request.method), url.path)]
        answer = route(app, request, query)  # a dict, or the JSON bytes a worker made
        return Response(200, answer, "application/json") if isinstance(answer, bytes) else json_response(200, answer)
    except ApiError as e:
        return json_response(e.status, e.body(), {"Allow": e.allow} if e.allow else {})
    except ImageError as e:  # predict's refusal, word for word, and its reason for the page's words
        return json_response(422, {"error": str(e)} | ({"code": e.code, "args": e.args_} if e.code else {}))
    except MnistSoftmaxError as e:
        return json_response(400, {"error": str(e)})
    except (ConnectionError, TimeoutError):
        raise  # the client has gone: nobody to answer
    except Exception as e:  # noqa: BLE001 -- a fault of ours: one line for the user, never a traceback to the page
        print(
            f"serve: {request.method} {escape_controls(request.target[:80])}: {type(e).__name__}: {e}", file=sys.stderr
        )
        return json_response(500, {"error": f"internal error ({type(e).__name__})", "code": "internal", "args": {}})


def refuse(app: App, request: Request) -> Response | None:
    """The refusal a request's head earns before its body is read (a foreign Host or Origin, no such
    path, a method the path does not take), or None: the server reads the body only then."""
    try:
        _check_headers(app.site, request)
        if request.method == "POST":
            _check_origin(app.site, request)
        path = urllib.parse.urlsplit(request.target).path
        if (_as_get(request.method), path) in ROUTES or path in app.static and request.method in ("GET", "HEAD"):
            return None
        takes = ["GET", "HEAD"] if path in app.static else sorted(m for m, p in ROUTES if p == path)
        if "GET" in takes and "HEAD" not in takes:
            takes.append("HEAD")
        if takes:
            raise ApiError(405, f"{path} takes {' or '.join(takes)}, not {request.method}", allow=", ".join(takes))
        raise ApiError(404, f"no such page or API: {request.method} {path[:80]}")
    except ApiError as e:
        return json_response(e.status, e.body(), {"Allow": e.allow} if e.allow else {})


def _as_get(method: str) -> str:
    return "GET" if method == "HEAD" else method  # HEAD: GET's headers


def json_response(status: int, obj: dict, headers: Mapping[str, str] | None = None) -> Response:
    return Response(status, json_text(obj).encode(), "application/json", dict(headers or {}))


def error_response(status: int, message: str | None = None) -> Response:
    """A refusal with only a status to go by (the HTTP layer's own: a malformed request line)."""
    return json_response(status, {"error": message or http.HTTPStatus(status).phrase})


def _page_headers(content_type: str) -> dict[str, str]:
    return {"Content-Security-Policy": CSP} if content_type.startswith("text/html") else {}


def _check_headers(site: Site, request: Request) -> None:
    """One Host, naming this server; at most one Content-Length (two could disagree)."""
    hosts = request.headers.get("host", [])
    if len(hosts) != 1 or len(request.headers.get("content-length", [])) > 1:
        raise ApiError(400, "a request has one Host header and at most one Content-Length")
    host = hosts[0].lower()
    if not site.allows(host):
        raise ApiError(403, f"Host {host[:80]!r} is not this server (open the page at http://{_url_host(site)}/)")


def _url_host(site: Site) -> str:
    return f"127.0.0.1:{site.port}" if site.any_address or "127.0.0.1" in site.names else f"localhost:{site.port}"


def _check_origin(site: Site, request: Request) -> None:
    """A POST from a page has the page's Origin: this server's own (one of its names, or, serving
    other machines, the very address the request was sent to). Any other IP address with the
    right port is another machine's page, not this one."""
    origin = request.header("origin")
    if origin is None:
        return
    host = origin.lower().removeprefix("http://") if origin.lower().startswith("http://") else None
    ours = host is not None and (
        site.allows(host, any_ip=False) or site.any_address and host == (request.header("host") or "").lower()
    )
    if not ours:
        raise ApiError(403, f"requests from {origin[:80]!r} are not accepted: only this page's own")


# ---------------------------------------------------------------------------------- parameters


def _param(query: dict, name: str) -> str | None:
    """The one value of a query parameter (None if absent); given twice is a mistake, not a choice."""
    values = query.get(name)
    if not values:
        return None
    if len(values) > 1:
        raise ApiError(400, f"{name} is given {len(values)} times; give it once")
    return values[0]


def _int_param(query: dict, name: str, low: int, high: int, required: bool = False) -> int | None:
    text = _param(query, name)
    if text is None:
        if required:
            raise ApiError(400, f"{name} is required")
        return None
    digits = text[1:] if text[:1] == "-" else text
    if not (0 < len(digits) <= 12 and digits.isascii() and digits.isdigit()) or not low <= int(text) <= high:
        raise ApiError(400, f"{name} must be a whole number from {low} to {high}, got {text[:20]!r}", "bad-number",
                       name=name, low=low, high=high)  # fmt: skip
    return int(text)


def _lr_param(query: dict, limit: float = MAX_LR) -> float:
    text = _param(query, "lr")
    if text is None:
        return DEFAULT_LR
    lr = float(text) if len(text) <= 32 and NUMBER.fullmatch(text) else math.nan
    if not (math.isfinite(lr) and 0 < lr <= limit):
        raise ApiError(400, f"lr must be a number above 0 and at most {limit:g}, got {text[:20]!r}", "bad-lr",
                       limit=limit)  # fmt: skip
    return lr


def _session_param(query: dict, required: bool = True) -> str | None:
    key = _param(query, "session")
    if key is None and required:
        raise ApiError(400, "session is required: POST /api/session gives one")
    return key


# ---------------------------------------------------------------------------------- routes


def _predict(app: App, request: Request, query: dict) -> dict:
    label = _int_param(query, "label", 0, 9)
    test = _int_param(query, "test", 0, 10**9)
    return app.predict(request.body, label, _session_param(query, False), test, request.alive)


def _learn(app: App, request: Request, query: dict) -> dict:
    label = _int_param(query, "label", 0, 9, required=True)
    test = _int_param(query, "test", 0, 10**9)
    return app.learn(request.body, label, _lr_param(query), _session_param(query), test, request.alive)


def _save(app: App, request: Request, query: dict) -> dict:
    try:
        body = json.loads(request.body) if request.body else {}
    except (ValueError, RecursionError):
        raise ApiError(400, 'the body must be JSON, such as {"name": "my-model"}') from None
    if not isinstance(body, dict) or not isinstance(body.get("name", ""), str):
        raise ApiError(400, "the body must be a JSON object whose name is a string")
    return app.save(_session_param(query), body.get("name") or None)


def _live(app: App, request: Request, query: dict) -> dict:
    action = _param(query, "action") or "frame"
    if action not in ("start", "frame", "state"):
        raise ApiError(400, f"action must be start, frame or state, got {action[:20]!r}")
    start_from = _param(query, "from") or "zeros"
    if start_from not in ("zeros", "checkpoint"):
        raise ApiError(400, f"from must be zeros or checkpoint, got {start_from[:20]!r}")
    batch = _int_param(query, "batch", 1, 4096) or app.checkpoint.config["batch_size"]
    steps = _int_param(query, "steps", 1, MAX_FRAME_STEPS)
    since = _int_param(query, "since", 0, 10**9) or 0
    return app.live(_session_param(query), action, _lr_param(query, MAX_LIVE_LR), batch, start_from, steps, since)


def _softmax(app: App, request: Request, query: dict) -> dict:
    from .page import parse_logits, softmax_numbers

    try:
        return softmax_numbers(parse_logits(_param(query, "z") or ""))
    except ValueError as e:
        raise ApiError(400, f"z: {e}", "bad-logits") from None


def _cell(app: App, request: Request, query: dict) -> dict:
    true = _int_param(query, "true", 0, 9, required=True)
    predicted = _int_param(query, "predicted", 0, 9, required=True)
    return app.cell(true, predicted, _int_param(query, "limit", 1, 500) or 60)


ROUTES: dict[tuple[str, str], Callable[[App, Request, dict], dict]] = {
    ("GET", "/api/model"): lambda app, r, q: app.model_info(),
    ("GET", "/api/run"): lambda app, r, q: app.run(),
    ("GET", "/api/confusion"): lambda app, r, q: app.confusion(),
    ("GET", "/api/cell"): _cell,
    ("POST", "/api/session"): lambda app, r, q: {"session": app.new_session()},
    ("POST", "/api/predict"): _predict,
    ("POST", "/api/learn"): _learn,
    ("POST", "/api/reset"): lambda app, r, q: app.reset(_session_param(q)),
    ("POST", "/api/save"): _save,
    ("GET", "/api/weights"): lambda app, r, q: app.weights(_session_param(q, False)),
    ("POST", "/api/live"): _live,
    ("GET", "/api/score"): lambda app, r, q: app.score(_session_param(q, False)),
    ("GET", "/api/lesson"): lambda app, r, q: _lesson(),
    ("GET", "/api/softmax"): _softmax,
    ("GET", "/api/examples"): lambda app, r, q: app.examples(),
}


def _lesson() -> dict:
    from .page import lesson_numbers

    return lesson_numbers()


BODY_ROUTES = {"/api/predict", "/api/learn", "/api/save"}  # the routes that read a request's body


def static_files() -> dict[str, tuple[str, bytes]]:
    """{URL path: (content type, bytes)} of the page's files, read once: only these are served."""
    from importlib import resources

    files = {}
    for item in resources.files("mnist_softmax").joinpath(WEB).iterdir():
        suffix = Path(item.name).suffix
        if item.is_file() and suffix in CONTENT_TYPES:
            files[f"/static/{item.name}"] = (CONTENT_TYPES[suffix], item.read_bytes())
    files["/"] = files["/static/index.html"]
    return files


class Client:
    """Requests answered by `respond` in this process, as the server answers them: the tests' client.
    Host is this site's own unless given."""

    def __init__(self, app: App):
        self.app = app

    def request(self, method: str, target: str, body: bytes = b"", headers: dict | None = None) -> Response:
        head = {"host": [f"127.0.0.1:{self.app.site.port}"]} | {k.lower(): [v] for k, v in (headers or {}).items()}
        return respond(self.app, Request(method, target, head, body))

    def get(self, target: str, **kw) -> Response:
        return self.request("GET", target, **kw)

    def post(self, target: str, body: bytes = b"", **kw) -> Response:
        return self.request("POST", target, body, **kw)
