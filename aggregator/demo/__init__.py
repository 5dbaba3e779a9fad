"""`aggregator demo`: bundled sample feeds served on loopback, polled twice, top stories shown.

The sample feeds in `feeds/` are written for this project: eight invented outlets in English,
French and German over three days, with a wire story republished by several outlets, the same
events written independently, and hard negatives. `manifest.json` says how each is served.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import threading
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from importlib import resources
from typing import Any
from urllib.parse import urlsplit

from aggregator.config import Config
from aggregator.errors import AggregatorError
from aggregator.model import utcnow
from aggregator.pipeline import CycleSummary, Poller
from aggregator.store import Store

LAST_MODIFIED = "Wed, 30 Oct 2024 23:00:00 GMT"


@dataclass
class Outlet:
    slug: str
    file: str
    poll2_file: str | None
    content_type: str
    behaviour: str


@dataclass
class DemoServer:
    """Serves the sample feeds; `phase` 2 switches changing feeds to their second version."""

    outlets: dict[str, Outlet]
    port: int
    phase: int = 1
    log: list[tuple[int, str, int]] = field(default_factory=list)  # (phase, path, status)

    def body(self, outlet: Outlet) -> bytes:
        name = outlet.poll2_file if self.phase == 2 and outlet.poll2_file else outlet.file
        return resources.files(__package__).joinpath(name).read_bytes()

    def answer(self, path: str, headers: Any) -> tuple[int, dict[str, str], bytes]:
        slug = path.rsplit("/", 1)[-1].split(".")[0]
        outlet = self.outlets.get(slug)
        if outlet is None:
            return 404, {"Content-Type": "text/plain"}, b"no such feed\n"
        body = self.body(outlet)
        hdrs = {"Content-Type": outlet.content_type}
        if outlet.behaviour == "etag":
            etag = '"' + hashlib.sha256(body).hexdigest()[:16] + '"'
            hdrs["ETag"] = etag
            if headers.get("If-None-Match") == etag:
                return 304, {"ETag": etag}, b""
        elif outlet.behaviour == "last-modified":
            hdrs["Last-Modified"] = LAST_MODIFIED
            if headers.get("If-Modified-Since") == LAST_MODIFIED:
                return 304, {"Last-Modified": LAST_MODIFIED}, b""
        return 200, hdrs, body

    def start(self) -> ThreadingHTTPServer:
        demo = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
                pass

            def do_GET(self) -> None:  # noqa: N802
                status, hdrs, body = demo.answer(self.path, self.headers)
                demo.log.append((demo.phase, self.path, status))
                self.send_response(status)
                for k, v in hdrs.items():
                    self.send_header(k, v)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

        try:
            server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        except OSError as exc:
            raise AggregatorError(
                f"cannot serve the demo feeds on 127.0.0.1:{self.port}: {exc.strerror}; "
                "pass --port to use another port"
            ) from None
        server.daemon_threads = True
        threading.Thread(target=server.serve_forever, daemon=True).start()
        return server


def load_outlets() -> dict[str, Outlet]:
    manifest = json.loads(resources.files(__package__).joinpath("manifest.json").read_text())
    outlets = manifest["outlets"] if isinstance(manifest, dict) else manifest
    return {
        o["slug"]: Outlet(
            o["slug"], o["file"], o.get("poll2_file"), o["content_type"], o["behaviour"]
        )
        for o in outlets
    }


def run_demo(config: Config, *, port: int | None, echo: Callable[[str], None]) -> None:
    """The main job on bundled data: two polls, clustering, a digest, the top stories."""
    outlets = load_outlets()
    http_feeds = [f for f in config.feeds if f.url.startswith("http")]
    if port is None:
        port = urlsplit(http_feeds[0].url).port or 80 if http_feeds else 8765
    if port != (urlsplit(http_feeds[0].url).port if http_feeds else port):
        config = _with_port(config, port)
    for suffix in ("", "-wal", "-shm"):  # each demo starts from an empty database
        config.database.with_name(config.database.name + suffix).unlink(missing_ok=True)
    server = DemoServer(outlets, port)
    httpd = server.start()
    try:
        with Store.open(config.database) as store:
            store.sync_feeds(config.feeds, utcnow())
            echo(f"Serving {len(outlets)} sample feeds on http://127.0.0.1:{port}/")
            first = _poll(config, store)
            echo(f"poll 1: {first.line()}")
            server.phase = 2
            second = _poll(config, store)
            statuses = Counter(s for phase, _p, s in server.log if phase == 2)
            echo(f"poll 2: {second.line()}")
            echo(
                f"        server answered {statuses.get(304, 0)} x 304 Not Modified, "
                f"{statuses.get(200, 0)} x 200 (unchanged bodies are skipped by hash)"
            )
            from aggregator.digests import write_digests

            for path in write_digests(config, store, utcnow()):
                echo(f"digest written: {path}")
            _print_top(store, echo)
            echo(
                f"\nDatabase: {config.database}  (try: sqlite3 {config.database} "
                "'select * from story_overview limit 5')"
            )
    finally:
        httpd.shutdown()
        httpd.server_close()


def _poll(config: Config, store: Store) -> CycleSummary:
    async def go() -> CycleSummary:
        async with Poller(config, store) as poller:
            return await poller.run_cycle(poll_all=True)

    return asyncio.run(go())


def _print_top(store: Store, echo: Callable[[str], None]) -> None:
    top = store.stories(min_sources=2, limit=10)
    echo(f"\nTop stories carried by several outlets ({len(top)} shown):")
    for s in top:
        echo(f"\n* {s['title']}")
        echo(f"  {s['feed_count']} outlets, {s['member_count']} reports, story {s['id']}")
        for m in store.story_members(s["id"]):
            echo(f"    - {m['outlet']}: {m['title']}  [{m['match_rule']}]")


def _with_port(config: Config, port: int) -> Config:
    from dataclasses import replace

    feeds = []
    for f in config.feeds:
        parts = urlsplit(f.url)
        if parts.hostname in ("127.0.0.1", "localhost"):
            f = replace(f, url=parts._replace(netloc=f"127.0.0.1:{port}").geturl())
        feeds.append(f)
    return replace(config, feeds=tuple(feeds))
