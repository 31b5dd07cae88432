"""`mnist-softmax serve`: the lesson on a local page. The server computes, the page draws.

- app.py: what the requests act upon: the checkpoint (read once, at start), each page's session,
  the run's test scores, the budget of image decoding;
- api.py: the JSON API and the page's files as one pure function, respond(app, request);
- server.py: the HTTP server that turns connections into requests, with its guards;
- page.py: the numbers behind the page's pictures, and its learning step;
- mnist_softmax/web/: the page itself (HTML, CSS, a few JavaScript modules), which only draws.
"""

from .api import Client, Request, Response, respond
from .app import App
from .server import has_display, make_server

__all__ = ["App", "Client", "Request", "Response", "has_display", "make_server", "respond"]
