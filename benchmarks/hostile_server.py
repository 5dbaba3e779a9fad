"""A hostile (and a few polite) feed server for the fetcher's outside check.

Serves, on a loopback port it prints, one feed per behaviour a poller must survive:

  /etag.xml            ETag; answers 304 to a matching If-None-Match
  /last-modified.xml   Last-Modified; answers 304 to a matching If-Modified-Since
  /moved.xml           301 to /new-home.xml (the stored URL should follow)
  /temporary.xml       302 to /temporary-target.xml (the stored URL should not follow)
  /gone.xml            410 Gone (never to be requested again)
  /throttled.xml       429 with Retry-After: 3600 (not to be requested again within the hour)
  /error.xml           500
  /huge.xml            a 200 MB body, streamed without Content-Length
  /bomb.xml            a 1 GiB gzip bomb (about 1 MB on the wire), generated while sending
  /stall.xml           headers and a few bytes, then one byte a second for 120 s
  /loop.xml            a redirect loop (/loop.xml -> /loop-b.xml -> /loop.xml)
  /bad-etag.xml        a feed whose ETag and Last-Modified hold a non-ASCII byte (0xE9)
  /odd-retry.xml       503 with "Retry-After: ²" (superscript two: isdigit() but not int())

Every request is appended to a JSON-lines log twice: on arrival
({"event": "request", time, path, user_agent, accept_encoding, if_none_match,
if_modified_since}) and when the answer ends or the client hangs up
({"event": "done", time, path, status, bytes_sent, seconds}). Count requests by "request" lines.

    python benchmarks/hostile_server.py --log /tmp/hostile.jsonl --feeds-toml /tmp/feeds.toml

Stop it with Ctrl-C or SIGTERM.
"""

from __future__ import annotations

import argparse
import json
import signal
import sys
import threading
import time
import zlib
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

ETAG = '"hostile-etag-v1"'
LAST_MODIFIED = "Mon, 01 Jan 2024 00:00:00 GMT"
MB = 1_000_000
HUGE_BYTES = 200 * MB
BOMB_BYTES = 1 << 30
STALL_SECONDS = 120


def rss(title: str, items: int = 3) -> bytes:
    entries = "".join(
        f"<item><title>{title} entry {i}</title><link>https://example.com/{title}/{i}</link>"
        f"<guid>https://example.com/{title}/{i}</guid>"
        f"<pubDate>Mon, 0{i + 1} Jan 2024 10:00:00 GMT</pubDate>"
        f"<description>Entry {i} of the {title} feed.</description></item>"
        for i in range(items)
    )
    return (
        '<?xml version="1.0" encoding="utf-8"?>\n<rss version="2.0"><channel>'
        f"<title>{title}</title><link>https://example.com/{title}</link>"
        f"<description>hostile server: {title}</description>{entries}</channel></rss>\n"
    ).encode()


def huge_body() -> Iterator[bytes]:
    head = rss("huge", 1).split(b"</channel>")[0]
    yield head
    sent = len(head)
    filler = b"<item><title>padding</title><description>" + b"x" * 65000 + b"</description></item>"
    while sent < HUGE_BYTES:
        piece = filler[: HUGE_BYTES - sent]
        yield piece
        sent += len(piece)


def gzip_bomb(decoded_size: int, prefix: bytes) -> Iterator[bytes]:
    """A valid gzip stream of `prefix` then spaces up to decoded_size, made lazily: after a
    full flush the compressor's state is reset, so one compressed 1 MiB block repeats exactly."""
    block_plain = b" " * (1 << 20)
    compressor = zlib.compressobj(9, zlib.DEFLATED, -zlib.MAX_WBITS)
    yield b"\x1f\x8b\x08\x00\x00\x00\x00\x00\x02\xff"
    yield compressor.compress(prefix) + compressor.flush(zlib.Z_FULL_FLUSH)
    block = compressor.compress(block_plain) + compressor.flush(zlib.Z_FULL_FLUSH)
    crc = zlib.crc32(prefix)
    remaining = decoded_size - len(prefix)
    while remaining >= len(block_plain):
        yield block
        crc = zlib.crc32(block_plain, crc)
        remaining -= len(block_plain)
    tail = block_plain[:remaining]
    yield compressor.compress(tail) + compressor.flush(zlib.Z_FINISH)
    crc = zlib.crc32(tail, crc)
    yield crc.to_bytes(4, "little") + (decoded_size & 0xFFFFFFFF).to_bytes(4, "little")


class Log:
    def __init__(self, path: Path) -> None:
        self._handle = path.open("a", encoding="utf-8")
        self._lock = threading.Lock()

    def write(self, record: dict[str, Any]) -> None:
        with self._lock:
            self._handle.write(json.dumps(record) + "\n")
            self._handle.flush()


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "hostile/1"
    log: Log  # set on the class by main()

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
        pass

    def do_GET(self) -> None:  # noqa: N802
        path = self.path.split("?")[0]
        self._status = 0
        self._sent = 0
        started = time.time()
        # Logged on arrival, so a request still stalled when the server stops is counted.
        self.log.write(
            {
                "event": "request",
                "time": round(started, 3),
                "path": path,
                "user_agent": self.headers.get("User-Agent"),
                "accept_encoding": self.headers.get("Accept-Encoding"),
                "if_none_match": self.headers.get("If-None-Match"),
                "if_modified_since": self.headers.get("If-Modified-Since"),
            }
        )
        route = ROUTES.get(path)
        try:
            if route is None:
                self.fixed(404, b"no such feed\n", "text/plain")
            else:
                route(self)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the client hung up: exactly what a poller should do to most of these
        finally:
            self.log.write(
                {
                    "event": "done",
                    "time": round(time.time(), 3),
                    "path": path,
                    "status": self._status,
                    "bytes_sent": self._sent,
                    "seconds": round(time.time() - started, 3),
                }
            )

    # -- answers ----------------------------------------------------------------------------

    def head(self, status: int, headers: dict[str, str]) -> None:
        self._status = status
        self.send_response(status)
        for name, value in headers.items():
            self.send_header(name, value)
        self.end_headers()

    def fixed(
        self, status: int, body: bytes, ctype: str = "application/rss+xml", **extra: str
    ) -> None:
        headers = {"Content-Type": ctype, "Content-Length": str(len(body))}
        headers.update({k.replace("_", "-"): v for k, v in extra.items()})
        self.head(status, headers)
        self.wfile.write(body)
        self._sent += len(body)

    def redirect(self, status: int, location: str) -> None:
        self.fixed(status, b"", "text/plain", Location=location)

    def chunked(self, chunks: Iterator[bytes], **extra: str) -> None:
        headers = {"Content-Type": "application/rss+xml", "Transfer-Encoding": "chunked"}
        headers.update({k.replace("_", "-"): v for k, v in extra.items()})
        self.head(200, headers)
        for chunk in chunks:
            if chunk:
                self.wfile.write(b"%x\r\n%s\r\n" % (len(chunk), chunk))
                self._sent += len(chunk)
        self.wfile.write(b"0\r\n\r\n")


def etag(h: Handler) -> None:
    if h.headers.get("If-None-Match") == ETAG:
        h.fixed(304, b"", ETag=ETAG)
    else:
        h.fixed(200, rss("etag"), ETag=ETAG)


def last_modified(h: Handler) -> None:
    if h.headers.get("If-Modified-Since") == LAST_MODIFIED:
        h.fixed(304, b"", Last_Modified=LAST_MODIFIED)
    else:
        h.fixed(200, rss("last-modified"), Last_Modified=LAST_MODIFIED)


def stall(h: Handler) -> None:
    h.head(200, {"Content-Type": "application/rss+xml", "Content-Length": str(10 * MB)})
    start = rss("stall")[:64]
    h.wfile.write(start)
    h.wfile.flush()
    h._sent += len(start)
    deadline = time.monotonic() + STALL_SECONDS
    while time.monotonic() < deadline:  # one byte a second defeats a per-chunk read timeout
        time.sleep(1)
        h.wfile.write(b" ")
        h.wfile.flush()
        h._sent += 1


ROUTES: dict[str, Callable[[Handler], None]] = {
    "/etag.xml": etag,
    "/last-modified.xml": last_modified,
    "/moved.xml": lambda h: h.redirect(301, "/new-home.xml"),
    "/new-home.xml": lambda h: h.fixed(200, rss("new-home")),
    "/temporary.xml": lambda h: h.redirect(302, "/temporary-target.xml"),
    "/temporary-target.xml": lambda h: h.fixed(200, rss("temporary-target")),
    "/gone.xml": lambda h: h.fixed(410, b"gone\n", "text/plain"),
    "/throttled.xml": lambda h: h.fixed(429, b"slow down\n", "text/plain", Retry_After="3600"),
    "/error.xml": lambda h: h.fixed(500, b"internal error\n", "text/plain"),
    "/huge.xml": lambda h: h.chunked(huge_body()),
    "/bomb.xml": lambda h: h.chunked(
        gzip_bomb(BOMB_BYTES, rss("bomb", 1).split(b"</channel>")[0]), Content_Encoding="gzip"
    ),
    "/stall.xml": stall,
    "/loop.xml": lambda h: h.redirect(301, "/loop-b.xml"),
    "/loop-b.xml": lambda h: h.redirect(301, "/loop.xml"),
    # http.server sends header values as Latin-1: "\xe9" leaves as the byte 0xE9.
    "/bad-etag.xml": lambda h: h.fixed(
        200, rss("bad-etag"), ETag='"caf\xe9"', Last_Modified="Tue, 3 D\xe9c 2026"
    ),
    "/odd-retry.xml": lambda h: h.fixed(503, b"busy\n", "text/plain", Retry_After="\xb2"),
}
FEEDS = [
    "/etag.xml",
    "/last-modified.xml",
    "/moved.xml",
    "/temporary.xml",
    "/gone.xml",
    "/throttled.xml",
    "/error.xml",
    "/huge.xml",
    "/bomb.xml",
    "/stall.xml",
    "/loop.xml",
    "/bad-etag.xml",
    "/odd-retry.xml",
]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0, help="0 picks a free port")
    parser.add_argument("--log", type=Path, default=Path("hostile-requests.jsonl"))
    parser.add_argument(
        "--feeds-toml", type=Path, help="also write a [[feeds]] list for the config here"
    )
    args = parser.parse_args(argv)

    Handler.log = Log(args.log)
    server = ThreadingHTTPServer((args.host, args.port), Handler)
    server.daemon_threads = True
    host, port = server.server_address[:2]
    base = f"http://{host}:{port}"
    if args.feeds_toml:
        args.feeds_toml.write_text("".join(f'[[feeds]]\nurl = "{base}{p}"\n\n' for p in FEEDS))
    print(f"hostile feed server on {base} (log: {args.log})", flush=True)
    for path in FEEDS:
        print(f"{base}{path}", flush=True)
    signal.signal(signal.SIGTERM, lambda *_: threading.Thread(target=server.shutdown).start())
    try:
        server.serve_forever(poll_interval=0.2)
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
