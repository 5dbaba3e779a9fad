"""A real loopback HTTP server for tests: routes map a path to a handler function.

A handler gets the request (method, path, headers) and returns a Response, or writes to the
socket itself for slow or broken answers. Every request is recorded so tests can assert on
what the client sent.
"""

from __future__ import annotations

import sys
import threading
import zlib
from collections.abc import Callable, Iterable, Iterator
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


class _QuietServer(ThreadingHTTPServer):
    # socketserver's default listen backlog is 5: a poller opening dozens of connections at
    # once overflows it, and the dropped SYNs look like timeouts that never reach a handler.
    request_queue_size = 128

    def handle_error(self, request: Any, client_address: Any) -> None:
        # A client hanging up (as a fetcher cutting off a huge body does) is not an error.
        if not isinstance(sys.exc_info()[1], ConnectionError):
            super().handle_error(request, client_address)


class LoopbackServer:
    """Serves `routes` on 127.0.0.1 (or another loopback address, `host`) on a free port, in a
    background thread."""

    def __init__(self, host: str = "127.0.0.1") -> None:
        self.routes: dict[str, Handler] = {}
        self.requests: list[Request] = []
        self.stopping = threading.Event()  # set on exit: slow handlers should give up then
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
                    headers = dict(resp.headers)
                    if any(k.lower() == "date" for k in headers):
                        self.send_response_only(resp.status)  # the handler's own Date only
                    else:
                        self.send_response(resp.status)
                    headers.setdefault("Content-Length", str(len(resp.body)))
                    for k, v in headers.items():
                        self.send_header(k, v)
                    self.end_headers()
                    if resp.body:
                        self.wfile.write(resp.body)
                except (BrokenPipeError, ConnectionResetError):
                    pass

        self._server = _QuietServer((host, 0), _Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )

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

    def stream(
        self, path: str, chunks: Callable[[], Iterable[bytes]], status: int = 200, **headers: str
    ) -> None:
        """Serve a body produced piece by piece with chunked transfer encoding (never held in
        memory); stops quietly when the client hangs up."""
        hdrs = {k.replace("_", "-"): v for k, v in headers.items()}

        def handler(req: Request, h: BaseHTTPRequestHandler) -> None:
            h.send_response(status)
            for k, v in hdrs.items():
                h.send_header(k, v)
            h.send_header("Transfer-Encoding", "chunked")
            h.end_headers()
            for chunk in chunks():
                if self.stopping.is_set():
                    return
                if chunk:
                    h.wfile.write(b"%x\r\n%s\r\n" % (len(chunk), chunk))
            h.wfile.write(b"0\r\n\r\n")

        self.routes[path] = handler

    def stall(self, path: str, head: bytes = b"", trickle: float | None = None) -> None:
        """Answer 200 with `head` and then never finish: silent, or one byte every `trickle`
        seconds (which defeats a per-chunk read timeout), until the server stops."""

        def handler(req: Request, h: BaseHTTPRequestHandler) -> None:
            h.send_response(200)
            h.send_header("Content-Type", "application/rss+xml")
            h.send_header("Content-Length", str(len(head) + 10_000_000))
            h.end_headers()
            h.wfile.write(head)
            h.wfile.flush()
            while not self.stopping.wait(trickle if trickle else 60):
                if trickle:
                    h.wfile.write(b" ")
                    h.wfile.flush()

        self.routes[path] = handler

    def hits(self, path: str) -> list[Request]:
        with self._lock:
            return [r for r in self.requests if r.path.split("?")[0] == path]

    def __enter__(self) -> LoopbackServer:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stopping.set()
        self._server.shutdown()
        self._server.server_close()


def gzip_bomb(decoded_size: int, prefix: bytes = b"", fill: bytes = b" ") -> Iterator[bytes]:
    """A valid gzip stream of `prefix` followed by `fill` up to `decoded_size` bytes, produced
    lazily: one compressed block of 1 MiB of fill is made once (a full flush resets the
    compressor, so the block repeats byte for byte) and sent again and again."""
    block_size = 1 << 20
    block_plain = fill * (block_size // len(fill))
    compressor = zlib.compressobj(9, zlib.DEFLATED, -zlib.MAX_WBITS)
    yield b"\x1f\x8b\x08\x00\x00\x00\x00\x00\x02\xff"  # gzip header, no name, no mtime
    first = compressor.compress(prefix) + compressor.flush(zlib.Z_FULL_FLUSH)
    yield first
    block = compressor.compress(block_plain) + compressor.flush(zlib.Z_FULL_FLUSH)
    crc = zlib.crc32(prefix)
    remaining = decoded_size - len(prefix)
    while remaining >= block_size:
        yield block
        crc = zlib.crc32(block_plain, crc)
        remaining -= block_size
    tail = block_plain[:remaining]
    yield compressor.compress(tail) + compressor.flush(zlib.Z_FINISH)
    crc = zlib.crc32(tail, crc)
    yield (crc & 0xFFFFFFFF).to_bytes(4, "little") + (decoded_size & 0xFFFFFFFF).to_bytes(
        4, "little"
    )
