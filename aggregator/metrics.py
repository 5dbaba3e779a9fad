"""Health for operators: Prometheus text metrics and /healthz over HTTP, for `run --metrics`.

The only home of `prometheus_client`. The daemon reports each dispatch and cycle here
(`Metrics.dispatch_started`, `dispatch_finished`); what the database holds (feeds by state,
entries, stories, file size) is read when scraped, through a read-only connection of the
scraping thread, so a scrape never waits for the poller nor blocks it.
"""

from __future__ import annotations

import ipaddress
import socket
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, make_wsgi_app
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from .store import database_counts

__all__ = ["Metrics", "parse_address"]

_FEED_STATES = ("ok", "never polled", "failing", "retired", "inactive")


def parse_address(text: str, *, allow_remote: bool = False) -> tuple[str, int]:
    """HOST:PORT (`[::1]:9464` for IPv6) to listen on; ValueError with the reason. Only a
    loopback address unless `allow_remote`: metrics name every feed's state to whoever asks."""
    host, sep, port_text = text.rpartition(":")
    if not sep or not port_text.isascii() or not port_text.isdigit():
        raise ValueError(f"must be HOST:PORT, got {text!r}")
    host = host[1:-1] if host.startswith("[") and host.endswith("]") else host
    port = int(port_text)
    if not 0 < port < 65536:
        raise ValueError(f"port must be 1-65535, got {port}")
    if host == "localhost":
        host = "127.0.0.1"
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        raise ValueError(f"host must be an IP address, got {host!r}") from None
    if not address.is_loopback and not allow_remote:
        raise ValueError(
            f"{host} is not a loopback address; pass --metrics-remote to serve"
            " metrics beyond this machine"
        )
    return host, port


class _Quiet(WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 (the base's name)
        pass  # scrapes every 15 s would fill the journal


class _V6Server(WSGIServer):
    address_family = socket.AF_INET6


class _DatabaseCollector(Collector):
    """Gauges read from the database at scrape time."""

    def __init__(self, database: Callable[[], Path]) -> None:
        self._database = database

    def collect(self) -> Iterator[GaugeMetricFamily]:
        try:
            counts = database_counts(self._database())
        except OSError:
            return
        feeds = GaugeMetricFamily(
            "aggregator_feeds", "Feeds by state (the feed_health view)", labels=["state"]
        )
        for state in _FEED_STATES:
            feeds.add_metric([state], counts["feeds"].get(state, 0))
        yield feeds
        yield GaugeMetricFamily("aggregator_entries", "Entries stored", value=counts["entries"])
        yield GaugeMetricFamily("aggregator_stories", "Stories stored", value=counts["stories"])
        yield GaugeMetricFamily(
            "aggregator_database_bytes",
            "Size of the database file with its WAL",
            value=counts["bytes"],
        )


class Metrics:
    """The daemon's metrics and health, served by `start` until `close`."""

    def __init__(self, database: Callable[[], Path], horizon: float) -> None:
        self.registry = CollectorRegistry()
        self.horizon = horizon  # the dispatch interval
        self._fetches = Counter(
            "aggregator_fetches",
            "Feed fetch outcomes by kind",
            ["outcome", "kind"],
            registry=self.registry,
        )
        self._new = Counter(
            "aggregator_new_entries", "New entries stored since start", registry=self.registry
        )
        self._cycle = Histogram(
            "aggregator_cycle_duration_seconds",
            "Duration of poll cycles that polled feeds",
            buckets=(0.5, 1, 2, 5, 10, 30, 60, 120, 300, 600, 1800),
            registry=self.registry,
        )
        self._last_ok = Gauge(
            "aggregator_last_successful_cycle_timestamp_seconds",
            "Unix time the last poll cycle finished without error",
            registry=self.registry,
        )
        self.registry.register(_DatabaseCollector(database))
        self._lock = threading.Lock()
        self._started_at = time.monotonic()
        self._dispatch_started: float | None = None
        self._last_dispatch = self._started_at
        self._last_duration = 0.0
        self._server: WSGIServer | None = None
        self._thread: threading.Thread | None = None

    # -- what the daemon reports -----------------------------------------------------------

    def dispatch_started(self) -> None:
        with self._lock:
            self._dispatch_started = time.monotonic()

    def dispatch_finished(
        self,
        *,
        polled: bool,
        ok: bool,
        fetched: int = 0,
        not_modified: int = 0,
        failures: Iterable[str] = (),
        new_entries: int = 0,
    ) -> None:
        """A dispatch ended: `polled` when feeds were due, `ok` when it ran to the end;
        `failures`: the failure kind of each failed feed."""
        now = time.monotonic()
        with self._lock:
            started, self._dispatch_started = self._dispatch_started, None
            self._last_dispatch = now
            if started is not None:
                self._last_duration = now - started
        if polled and started is not None:
            self._cycle.observe(now - started)
        if fetched:
            self._fetches.labels("fetched", "").inc(fetched)
        if not_modified:
            self._fetches.labels("not_modified", "").inc(not_modified)
        for kind in failures:
            self._fetches.labels("failed", kind).inc()
        if new_entries:
            self._new.inc(new_entries)
        if ok:
            self._last_ok.set_to_current_time()

    def health(self) -> tuple[bool, str]:
        """Healthy while the last dispatch ended (or the running one began) less than twice
        the horizon ago: the dispatch interval, or the last dispatch's duration if longer."""
        now = time.monotonic()
        with self._lock:
            horizon = max(self.horizon, self._last_duration)
            since = now - (self._dispatch_started or self._last_dispatch)
            running = self._dispatch_started is not None
        if since < 2 * horizon:
            return (
                True,
                f"ok: {'a poll cycle running for' if running else 'last dispatch'}"
                f" {since:.1f} s{'' if running else ' ago'}",
            )
        what = "the poll cycle has run for" if running else "no dispatch for"
        return False, f"stalled: {what} {since:.1f} s (limit {2 * horizon:.1f} s)"

    # -- serving ---------------------------------------------------------------------------

    def _app(self) -> Callable[..., Iterable[bytes]]:
        metrics_app = make_wsgi_app(self.registry)

        def app(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
            path = environ.get("PATH_INFO", "")
            if path == "/healthz":
                ok, why = self.health()
                start_response(
                    "200 OK" if ok else "503 Service Unavailable",
                    [("Content-Type", "text/plain; charset=utf-8")],
                )
                return [why.encode() + b"\n"]
            if path in ("/metrics", "/"):
                return metrics_app(environ, start_response)  # type: ignore[no-any-return]
            start_response("404 Not Found", [("Content-Type", "text/plain; charset=utf-8")])
            return [b"not found: try /metrics or /healthz\n"]

        return app

    def start(self, host: str, port: int) -> tuple[str, int]:
        """Serve on host:port in a background thread; returns the address bound (port 0
        picks a free one). OSError when the address cannot be bound."""
        server_class = _V6Server if ":" in host else WSGIServer
        self._server = make_server(
            host, port, self._app(), server_class=server_class, handler_class=_Quiet
        )
        self._thread = threading.Thread(
            target=self._server.serve_forever, name="metrics", daemon=True
        )
        self._thread.start()
        bound = self._server.server_address
        return str(bound[0]), int(bound[1])

    def close(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
