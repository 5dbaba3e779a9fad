"""The fetcher against a real loopback HTTP server: every politeness and hardening rule."""

from __future__ import annotations

import asyncio
import gzip
import socket
import threading
import tracemalloc
import zlib
from collections.abc import Coroutine, Iterator
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from pathlib import Path
from typing import Any, TypeVar

import pytest

from aggregator import fetch
from aggregator.model import FeedState, FetchResult, FetchSettings
from tests.httpserver import LoopbackServer, Request, Response, gzip_bomb

NOW = datetime(2024, 3, 1, 12, 0, tzinfo=UTC)
UA = "aggregator/0.1.0 (+https://github.com/aggregator-project/aggregator)"
RSS = (
    b'<?xml version="1.0" encoding="utf-8"?>\n<rss version="2.0"><channel><title>T</title>'
    b"<item><title>One</title><link>https://example.com/1</link></item></channel></rss>\n"
)
T = TypeVar("T")


def run(coro: Coroutine[Any, Any, T]) -> T:
    return asyncio.run(coro)


def settings(**overrides: Any) -> FetchSettings:
    values: dict[str, Any] = {"user_agent": UA, "timeout": 5.0, "allow_private_networks": True}
    values.update(overrides)
    return FetchSettings(**values)


async def fetch_once(state: FeedState, **overrides: Any) -> FetchResult:
    async with fetch.Fetcher(settings(**overrides)) as fetcher:
        return await fetcher.fetch(state, NOW)


def poll(url: str, **state_fields: Any) -> FetchResult:
    overrides = state_fields.pop("settings", {})
    return run(fetch_once(FeedState(id=7, url=url, **state_fields), **overrides))


@pytest.fixture(autouse=True)
def no_proxy_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("http_proxy", "https_proxy", "all_proxy", "no_proxy"):
        monkeypatch.delenv(name, raising=False)
        monkeypatch.delenv(name.upper(), raising=False)


@pytest.fixture
def server() -> Iterator[LoopbackServer]:
    with LoopbackServer() as srv:
        yield srv


# ---------------------------------------------------------------- conditional GET


def test_etag_304_is_not_modified_and_keeps_validators(server: LoopbackServer) -> None:
    def feed(req: Request, h: object) -> Response:
        if req.headers.get("if-none-match") == '"v1"':
            return Response(304, headers={"ETag": '"v1"'})
        return Response(200, RSS, {"ETag": '"v1"', "Content-Type": "application/rss+xml"})

    server.route("/feed", feed)
    first = poll(server.url("/feed"))
    assert first.failure is None and first.body == RSS and first.etag == '"v1"'
    second = poll(server.url("/feed"), etag=first.etag, body_hash=first.body_hash)
    assert second.not_modified and second.status == 304 and second.body is None
    assert second.etag == '"v1"' and second.body_hash == first.body_hash
    assert server.hits("/feed")[1].headers["if-none-match"] == '"v1"'


def test_last_modified_304_is_not_modified(server: LoopbackServer) -> None:
    stamp = "Wed, 21 Feb 2024 07:28:00 GMT"

    def feed(req: Request, h: object) -> Response:
        if req.headers.get("if-modified-since") == stamp:
            return Response(304)
        return Response(200, RSS, {"Last-Modified": stamp})

    server.route("/feed", feed)
    first = poll(server.url("/feed"))
    assert first.last_modified == stamp and first.body == RSS
    second = poll(server.url("/feed"), last_modified=stamp, body_hash=first.body_hash)
    assert second.not_modified and second.status == 304
    assert second.last_modified == stamp
    assert "if-none-match" not in server.hits("/feed")[1].headers


def test_identical_body_is_not_modified_when_server_ignores_validators(
    server: LoopbackServer,
) -> None:
    server.serve("/feed", RSS, ETag='"always-new"', Content_Type="text/xml")
    first = poll(server.url("/feed"))
    assert first.body_hash == fetch.hashlib.sha256(RSS).hexdigest()
    second = poll(server.url("/feed"), etag='"old"', body_hash=first.body_hash)
    assert second.status == 200 and second.not_modified and second.body is None
    changed = poll(server.url("/feed"), body_hash="0" * 64)
    assert not changed.not_modified and changed.body == RSS


def test_304_without_validators_is_a_failure(server: LoopbackServer) -> None:
    server.serve("/feed", b"", status=304)
    result = poll(server.url("/feed"))
    assert result.failure is not None and result.failure.kind == "http"
    assert not result.not_modified


# ---------------------------------------------------------------- redirects


def test_301_and_308_chain_sets_permanent_url(server: LoopbackServer) -> None:
    server.serve("/old", b"", status=301, Location="/older-new")
    server.serve("/older-new", b"", status=308, Location=server.url("/new"))
    server.serve("/new", RSS)
    result = poll(server.url("/old"))
    assert result.failure is None and result.body == RSS
    assert result.permanent_url == server.url("/new") == result.final_url
    assert result.requested_url == server.url("/old")


def test_302_does_not_change_the_feed_url(server: LoopbackServer) -> None:
    server.serve("/temp", b"", status=302, Location="/elsewhere")
    server.serve("/elsewhere", RSS)
    result = poll(server.url("/temp"))
    assert result.body == RSS and result.final_url == server.url("/elsewhere")
    assert result.permanent_url is None


@pytest.mark.parametrize("temporary", [302, 303, 307])
def test_one_temporary_hop_in_a_permanent_chain_keeps_the_url(
    server: LoopbackServer, temporary: int
) -> None:
    server.serve("/a", b"", status=301, Location="/b")
    server.serve("/b", b"", status=temporary, Location="/c")
    server.serve("/c", RSS)
    result = poll(server.url("/a"))
    assert result.body == RSS and result.permanent_url is None


def test_permanent_redirect_then_304_still_moves_the_feed(server: LoopbackServer) -> None:
    server.serve("/old", b"", status=301, Location="/new")
    server.serve("/new", b"", status=304)
    result = poll(server.url("/old"), etag='"x"')
    assert result.not_modified and result.permanent_url == server.url("/new")
    assert server.hits("/new")[0].headers["if-none-match"] == '"x"'


def test_redirect_loop_is_a_redirect_failure(server: LoopbackServer) -> None:
    server.serve("/loop-a", b"", status=301, Location="/loop-b")
    server.serve("/loop-b", b"", status=302, Location="/loop-a")
    result = poll(server.url("/loop-a"))
    assert result.failure is not None and result.failure.kind == "redirect"
    assert "loop" in result.failure.message
    assert len(server.hits("/loop-a")) == 1 and result.permanent_url is None


def test_more_than_five_redirects_fail_and_five_succeed(server: LoopbackServer) -> None:
    for i in range(6):
        server.serve(f"/hop{i}", b"", status=301, Location=f"/hop{i + 1}")
    server.serve("/hop6", RSS)
    too_many = poll(server.url("/hop0"))
    assert too_many.failure is not None and too_many.failure.kind == "redirect"
    assert "more than 5 redirects" in too_many.failure.message
    assert not server.hits("/hop6")
    five = poll(server.url("/hop1"))
    assert five.failure is None and five.permanent_url == server.url("/hop6")


def test_one_deadline_covers_the_whole_redirect_chain(server: LoopbackServer) -> None:
    # Five slow hops of 0.6 s each: every hop alone is well inside the 1.5 s timeout, the chain
    # is not. (Each hop used to get its own deadline, so one fetch could hold its slots for
    # timeout x (max_redirects + 1).)
    import time as _time

    def slow_hop(i: int) -> Any:
        def handler(_req: Request, _h: object) -> Response:
            _time.sleep(0.6)
            if i == 5:
                return Response(200, RSS, {"Content-Type": "application/rss+xml"})
            return Response(302, b"", {"Location": f"/slow{i + 1}"})

        return handler

    for i in range(6):
        server.route(f"/slow{i}", slow_hop(i))
    result = poll(server.url("/slow0"), settings={"timeout": 1.5})
    assert result.failure is not None and result.failure.kind == "timeout"
    assert "within 1.5 s" in result.failure.message
    assert not server.hits("/slow5")
    short = poll(server.url("/slow4"), settings={"timeout": 5.0})  # two hops, plenty of time
    assert short.failure is None and short.body == RSS


def test_redirect_to_a_non_http_scheme_fails(server: LoopbackServer) -> None:
    server.serve("/sneaky", b"", status=302, Location="file:///etc/passwd")
    result = poll(server.url("/sneaky"))
    assert result.failure is not None and result.failure.kind == "redirect"


# ---------------------------------------------------------------- status policy


def test_410_gone_retires_feed(server: LoopbackServer) -> None:
    server.serve("/gone", b"gone", status=410)
    result = poll(server.url("/gone"))
    assert result.failure is not None and result.failure.kind == "gone"
    assert result.failure.status == 410


@pytest.mark.parametrize("status", [404, 500, 502])
def test_error_statuses_are_http_failures(server: LoopbackServer, status: int) -> None:
    server.serve("/bad", b"nope", status=status)
    result = poll(server.url("/bad"))
    assert result.failure is not None
    assert (result.failure.kind, result.failure.status) == ("http", status)
    assert str(status) in result.failure.message and result.retry_after is None


def test_429_retry_after_seconds_is_reported(server: LoopbackServer) -> None:
    server.serve("/busy", b"", status=429, Retry_After="3600")
    result = poll(server.url("/busy"))
    assert result.failure is not None and result.failure.status == 429
    assert result.retry_after == NOW + timedelta(seconds=3600)


def test_503_retry_after_http_date_is_reported(server: LoopbackServer) -> None:
    when = NOW + timedelta(hours=5)
    server.serve("/down", b"", status=503, Retry_After=format_datetime(when, usegmt=True))
    result = poll(server.url("/down"))
    assert result.failure is not None and result.failure.status == 503
    assert result.retry_after == when


def test_connection_refused_is_a_network_failure() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    result = poll(f"http://127.0.0.1:{port}/feed")
    assert result.failure is not None and result.failure.kind == "network"


# ---------------------------------------------------------------- caching hints


def test_cache_control_max_age_is_reported(server: LoopbackServer) -> None:
    server.serve("/feed", RSS, Cache_Control="public, max-age=7200")
    assert poll(server.url("/feed")).max_age == 7200


def test_expires_is_reported_relative_to_the_server_date(server: LoopbackServer) -> None:
    date = datetime(2024, 3, 1, 9, 0, tzinfo=UTC)  # server clock three hours behind ours
    server.serve(
        "/feed",
        RSS,
        Date=format_datetime(date, usegmt=True),
        Expires=format_datetime(date + timedelta(minutes=90), usegmt=True),
    )
    assert poll(server.url("/feed")).max_age == 90 * 60


def test_max_age_wins_over_expires_and_age_is_subtracted() -> None:
    headers = {
        "cache-control": "max-age=600",
        "age": "100",
        "expires": "Thu, 01 Jan 2099 0:0:0 GMT",
    }
    assert fetch.parse_max_age(headers, NOW) == 500
    assert fetch.parse_max_age({"cache-control": "no-cache"}, NOW) is None
    assert fetch.parse_max_age({"expires": "0"}, NOW) is None


# ---------------------------------------------------------------- caps


def test_huge_declared_body_is_cut_at_the_cap(server: LoopbackServer) -> None:
    server.serve("/huge", RSS + b" " * 300_000)
    result = poll(server.url("/huge"), settings={"max_body_bytes": 100_000})
    assert result.failure is not None and result.failure.kind == "too_large"
    assert result.body is None


def test_huge_streamed_body_is_cut_at_the_cap(server: LoopbackServer) -> None:
    sent: list[int] = []

    def chunks() -> Iterator[bytes]:
        yield RSS
        for _ in range(4096):  # 256 MiB if nobody stopped us
            sent.append(1)
            yield b" " * 65536

    server.stream("/huge", chunks, Content_Type="application/rss+xml")
    result = poll(server.url("/huge"), settings={"max_body_bytes": 1_000_000})
    assert result.failure is not None and result.failure.kind == "too_large"
    assert len(sent) < 4096


def test_gzip_bomb_is_cut_while_streaming_with_small_memory(server: LoopbackServer) -> None:
    decoded = 1 << 30  # 1 GiB once inflated
    server.stream(
        "/bomb",
        lambda: gzip_bomb(decoded, prefix=RSS[:60]),
        Content_Type="application/rss+xml",
        Content_Encoding="gzip",
    )
    tracemalloc.start()
    try:
        result = poll(server.url("/bomb"), settings={"max_body_bytes": 2_000_000})
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert result.failure is not None and result.failure.kind == "too_large"
    assert peak < 12_000_000, f"peak traced memory {peak} bytes"


def test_stall_trickling_bytes_is_cut_at_the_total_deadline(server: LoopbackServer) -> None:
    server.stall("/trickle", head=RSS[:50], trickle=0.05)
    result = poll(server.url("/trickle"), settings={"timeout": 0.6})
    assert result.failure is not None and result.failure.kind == "timeout"
    assert "0.6 s" in result.failure.message


def test_silent_stall_is_a_timeout(server: LoopbackServer) -> None:
    server.stall("/silent")
    result = poll(server.url("/silent"), settings={"timeout": 0.4})
    assert result.failure is not None and result.failure.kind == "timeout"


# ---------------------------------------------------------------- what the client sends


def test_user_agent_accept_and_accept_encoding_are_sent(server: LoopbackServer) -> None:
    server.serve("/feed", RSS)
    poll(server.url("/feed"))
    sent = server.hits("/feed")[0].headers
    assert sent["user-agent"] == UA
    codings = [c.strip() for c in sent["accept-encoding"].split(",")]
    assert codings[:2] == ["gzip", "deflate"] and "br" in codings and "zstd" in codings
    assert "application/rss+xml" in sent["accept"]


def test_response_headers_are_lower_case_and_decoded_body_drops_content_encoding(
    server: LoopbackServer,
) -> None:
    server.serve("/gz", gzip.compress(RSS), Content_Encoding="gzip", X_Custom="yes")
    result = poll(server.url("/gz"))
    assert result.body == RSS
    assert result.headers["x-custom"] == "yes"
    assert "content-encoding" not in result.headers and "content-length" not in result.headers


@pytest.mark.parametrize("coding", ["gzip", "deflate", "raw-deflate", "br", "zstd"])
def test_compressed_bodies_are_decoded(server: LoopbackServer, coding: str) -> None:
    import brotli
    import zstandard

    # several MiB decoded, so the bounded-output loops of each decoder run many times
    items = b"".join(b"<item><title>%d</title></item>" % i for i in range(150_000))
    body = RSS.replace(b"</channel>", items + b"</channel>")
    encoded = {
        "gzip": lambda: gzip.compress(body),
        "deflate": lambda: zlib.compress(body),
        "raw-deflate": lambda: zlib.compress(body, wbits=-15),
        "br": lambda: brotli.compress(body, quality=4),
        "zstd": lambda: zstandard.ZstdCompressor().compress(body),
    }[coding]()
    server.serve("/c", encoded, Content_Encoding=coding.removeprefix("raw-"))
    result = poll(server.url("/c"))
    assert result.failure is None and result.body == body


def test_corrupt_gzip_is_a_failure(server: LoopbackServer) -> None:
    server.serve("/c", b"\x1f\x8b\x08\x00garbage-not-gzip" * 10, Content_Encoding="gzip")
    result = poll(server.url("/c"))
    assert result.failure is not None and "corrupt" in result.failure.message


# ---------------------------------------------------------------- concurrency limits


class InFlight:
    """Counts requests the server is answering at once. Each handler waits until `target`
    are in flight (or a generous limit passes), so a broken limit shows up as a higher peak
    instead of depending on timing."""

    def __init__(self, target: int) -> None:
        self.target = target
        self.now = 0
        self.peak = 0
        self._cond = threading.Condition()

    def handler(self, req: Request, h: object) -> Response:
        with self._cond:
            self.now += 1
            self.peak = max(self.peak, self.now)
            self._cond.notify_all()
            self._cond.wait_for(lambda: self.now >= self.target, timeout=3)
        threading.Event().wait(0.05)  # let any request the limit failed to hold arrive
        with self._cond:
            self.now -= 1
        return Response(200, RSS)


def test_per_host_limit_is_honoured(server: LoopbackServer) -> None:
    counter = InFlight(target=2)
    server.route("/feed", counter.handler)

    async def many() -> list[FetchResult]:
        async with fetch.Fetcher(settings(per_host=2, concurrency=20)) as fetcher:
            states = [FeedState(id=i, url=server.url(f"/feed?n={i}")) for i in range(6)]
            return await asyncio.gather(*(fetcher.fetch(s, NOW) for s in states))

    results = run(many())
    assert all(r.failure is None for r in results)
    assert counter.peak == 2


def test_global_limit_is_honoured(server: LoopbackServer) -> None:
    counter = InFlight(target=2)
    server.route("/feed", counter.handler)

    async def many() -> list[FetchResult]:
        async with fetch.Fetcher(settings(per_host=10, concurrency=2)) as fetcher:
            states = [FeedState(id=i, url=server.url(f"/feed?n={i}")) for i in range(6)]
            return await asyncio.gather(*(fetcher.fetch(s, NOW) for s in states))

    results = run(many())
    assert all(r.failure is None for r in results)
    assert counter.peak == 2


# ---------------------------------------------------------------- SSRF guard


def test_loopback_is_refused_by_default(server: LoopbackServer) -> None:
    server.serve("/feed", RSS)
    result = poll(server.url("/feed"), settings={"allow_private_networks": False})
    assert result.failure is not None and result.failure.kind == "blocked"
    assert "127.0.0.1" in result.failure.message
    assert "allow_private_networks" in result.failure.message
    assert not server.hits("/feed")


def test_loopback_name_is_refused_at_connect_time(server: LoopbackServer) -> None:
    server.serve("/feed", RSS)
    port = server.base_url.rsplit(":", 1)[1]
    result = poll(f"http://localhost:{port}/feed", settings={"allow_private_networks": False})
    assert result.failure is not None and result.failure.kind == "blocked"
    assert "loopback" in result.failure.message
    assert not server.hits("/feed")


def test_loopback_is_allowed_with_allow_private_networks(server: LoopbackServer) -> None:
    server.serve("/feed", RSS)
    port = server.base_url.rsplit(":", 1)[1]
    for host in ("127.0.0.1", "localhost"):
        result = poll(f"http://{host}:{port}/feed", settings={"allow_private_networks": True})
        assert result.failure is None and result.body == RSS


@pytest.mark.parametrize(
    ("address", "refused"),
    [
        ("127.0.0.1", True),
        ("10.1.2.3", True),
        ("172.16.0.1", True),
        ("192.168.1.1", True),
        ("169.254.169.254", True),
        ("100.64.0.1", True),
        ("224.0.0.1", True),
        ("0.0.0.0", True),
        ("240.0.0.1", True),
        ("::1", True),
        ("fe80::1", True),
        ("fd00::1", True),
        ("::ffff:127.0.0.1", True),
        ("2002:7f00:1::", True),
        ("93.184.216.34", False),
        ("2606:4700:4700::1111", False),
    ],
)
def test_address_refusal_covers_non_public_ranges(address: str, refused: bool) -> None:
    assert (fetch.address_refusal(address) is not None) is refused


def test_proxy_from_environment_is_used(
    server: LoopbackServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A proxy gets the absolute URL as the request target; our loopback server plays proxy.
    server.serve("http://feeds.example.test/feed", RSS)
    monkeypatch.setenv("HTTP_PROXY", server.base_url)
    result = poll("http://feeds.example.test/feed")
    assert result.failure is None and result.body == RSS
    assert server.hits("http://feeds.example.test/feed")


def test_every_redirect_hop_is_checked_even_through_a_proxy(
    server: LoopbackServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The proxy is the operator's (allowed on loopback); the hop it is asked to reach is not.
    server.serve("http://93.184.216.34/feed", b"", status=302, Location="http://10.0.0.5/feed")
    monkeypatch.setenv("HTTP_PROXY", server.base_url)
    result = poll("http://93.184.216.34/feed", settings={"allow_private_networks": False})
    assert result.failure is not None and result.failure.kind == "blocked"
    assert "10.0.0.5" in result.failure.message
    assert len(server.requests) == 1


def test_no_proxy_entries_bypass_the_proxy(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HTTPS_PROXY", "proxy.internal:3128")
    monkeypatch.setenv("NO_PROXY", "localhost,.corp.example,10.0.0.1")
    patterns = fetch.environment_proxies()
    assert patterns["https://"] == "http://proxy.internal:3128"
    assert patterns["all://localhost"] is None
    assert patterns["all://*.corp.example"] is None
    assert patterns["all://10.0.0.1"] is None
    monkeypatch.setenv("NO_PROXY", "*")
    assert fetch.environment_proxies() == {}


# ---------------------------------------------------------------- not a feed


@pytest.mark.parametrize(
    ("body", "content_type", "hint"),
    [
        (b"\x89PNG\r\n\x1a\n" + b"\0" * 100, "image/png", "image/png"),
        (b"%PDF-1.7 ...", "application/pdf", "application/pdf"),
        (b"<!DOCTYPE html><html><head><title>Blog</title></head></html>", "text/html", "HTML"),
        (b"\x89PNG\r\n\x1a\n" + b"\0" * 100, "application/octet-stream", "binary"),
        (b"Service temporarily unavailable, try later", "text/plain", "does not look like"),
        (b"   \n ", "application/rss+xml", "empty"),
    ],
)
def test_bodies_that_cannot_be_feeds_are_refused(
    server: LoopbackServer, body: bytes, content_type: str, hint: str
) -> None:
    server.serve("/x", body, Content_Type=content_type)
    result = poll(server.url("/x"))
    assert result.failure is not None and result.failure.kind == "not_a_feed"
    assert hint in result.failure.message


@pytest.mark.parametrize(
    ("body", "content_type"),
    [
        (RSS, "text/html; charset=utf-8"),
        (RSS, "text/plain"),
        (RSS, "application/octet-stream"),
        (b'\xef\xbb\xbf{"version": "https://jsonfeed.org/version/1.1", "items": []}', ""),
        (b'<?xml version="1.0"?>\n<feed xmlns="http://www.w3.org/2005/Atom"/>', "text/html"),
        ('<?xml version="1.0" encoding="utf-16"?><rss/>'.encode("utf-16"), "text/xml"),
    ],
)
def test_real_feeds_with_odd_content_types_are_accepted(
    server: LoopbackServer, body: bytes, content_type: str
) -> None:
    server.serve("/x", body, Content_Type=content_type)
    result = poll(server.url("/x"))
    assert result.failure is None and result.body == body


# ---------------------------------------------------------------- local files


def test_file_url_and_plain_path_are_read(tmp_path: Path) -> None:
    feed = tmp_path / "my feed.xml"
    feed.write_bytes(RSS)
    by_url = poll(feed.as_uri())
    by_path = poll(str(feed))
    assert by_url.body == RSS == by_path.body and by_url.failure is None
    assert by_url.body_hash == by_path.body_hash
    again = poll(feed.as_uri(), body_hash=by_url.body_hash)
    assert again.not_modified and again.body is None


def test_file_larger_than_the_cap_is_too_large(tmp_path: Path) -> None:
    feed = tmp_path / "big.xml"
    feed.write_bytes(RSS + b" " * 5000)
    result = poll(str(feed), settings={"max_body_bytes": 1000})
    assert result.failure is not None and result.failure.kind == "too_large"


def test_missing_file_is_a_failure_not_an_exception(tmp_path: Path) -> None:
    result = poll((tmp_path / "absent.xml").as_uri())
    assert result.failure is not None and "absent.xml" in result.failure.message


def test_unsupported_scheme_is_a_failure() -> None:
    result = poll("ftp://example.com/feed.xml")
    assert result.failure is not None and "ftp" in result.failure.message
