"""A real loopback HTTP server for tests: routes map a path to a handler function.

A handler gets the request (method, path, headers) and returns a Response, or writes to the
socket itself for slow or broken answers. Every request is recorded so tests can assert on
what the client sent.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


@dataclass
class Request:
    method: str
    path: str
    headers: dict[str, str]


@dataclass
class Response:
    status: int = 200
    body: bytes = b""
    headers: dict[str, str] = field(default_factory=dict)


Handler = Callable[[Request, BaseHTTPRequestHandler], Response | None]


class LoopbackServer:
    """Serves `routes` on 127.0.0.1 on a free port, in a background thread."""

    def __init__(self) -> None:
        self.routes: dict[str, Handler] = {}
        self.requests: list[Request] = []
        self._lock = threading.Lock()
        server_self = self

        class _Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
                pass

            def do_GET(self) -> None:  # noqa: N802
                req = Request("GET", self.path, {k.lower(): v for k, v in self.headers.items()})
                with server_self._lock:
                    server_self.requests.append(req)
                handler = server_self.routes.get(self.path.split("?")[0])
                if handler is None:
                    resp: Response | None = Response(404, b"not found")
                else:
                    try:
                        resp = handler(req, self)
                    except (BrokenPipeError, ConnectionResetError):
                        return
                if resp is None:  # the handler answered on the socket itself
                    return
                try:
                    self.send_response(resp.status)
                    headers = dict(resp.headers)
                    headers.setdefault("Content-Length", str(len(resp.body)))
                    for k, v in headers.items():
                        self.send_header(k, v)
                    self.end_headers()
                    if resp.body:
                        self.wfile.write(resp.body)
                except (BrokenPipeError, ConnectionResetError):
                    pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def base_url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    def url(self, path: str) -> str:
        return self.base_url + path

    def route(self, path: str, handler: Handler) -> None:
        self.routes[path] = handler

    def serve(self, path: str, body: bytes, status: int = 200, **headers: str) -> None:
        """Serve a fixed answer at `path`."""
        hdrs = {k.replace("_", "-"): v for k, v in headers.items()}
        self.routes[path] = lambda req, h: Response(status, body, dict(hdrs))

    def hits(self, path: str) -> list[Request]:
        with self._lock:
            return [r for r in self.requests if r.path.split("?")[0] == path]

    def __enter__(self) -> LoopbackServer:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()
