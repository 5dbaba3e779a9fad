"""End to end: config → store → fetch (file:// and real loopback HTTP) → stories."""

from __future__ import annotations

import asyncio
import sqlite3
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from pathlib import Path
from typing import Any

import pytest

from aggregator import config as config_mod
from aggregator.pipeline import CycleSummary, Poller, utcnow
from aggregator.store import Store
from tests.conftest import DATA
from tests.httpserver import LoopbackServer, Response

CLI = [sys.executable, "-m", "aggregator"]


def loopback_config(tmp_path: Path, *urls: object) -> Path:
    """A config polling `urls` into tmp_path/agg.db, with loopback targets allowed."""
    config = tmp_path / "agg.toml"
    feeds = "".join(f'[[feeds]]\nurl = "{url}"\n' for url in urls)
    config.write_text(
        '[storage]\ndatabase = "agg.db"\n[fetch]\nallow_private_networks = true\n' + feeds
    )
    return config


def run_cli(config: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*CLI, "--config", str(config), *args], capture_output=True, text=True, timeout=120
    )


def test_file_feeds_poll_into_stories_and_repoll_adds_nothing(
    tmp_path: Path, feed_dir: Path
) -> None:
    config = tmp_path / "agg.toml"
    config.write_text(f"""
[storage]
database = "agg.db"
[[feeds]]
url = "{feed_dir / "ledger.xml"}"
title = "Ledger"
[[feeds]]
url = "{(feed_dir / "courier.xml").as_uri()}"
""")
    first = run_cli(config, "poll", "--all")
    assert first.returncode == 0, first.stderr
    assert "entries: 4 new" in first.stdout
    with Store.open(tmp_path / "agg.db") as store:
        counts = store.counts()
        assert counts["entries"] == 4
        # The ferry story is carried by both outlets; the others stand alone.
        ferry = [s for s in store.stories(min_sources=2)]
        assert len(ferry) == 1 and "ferry terminal" in ferry[0]["title"]
        stories_before = counts["stories"]
    second = run_cli(config, "poll", "--all")
    assert second.returncode == 0, second.stderr
    assert "entries: 0 new, 0 updated" in second.stdout
    with Store.open(tmp_path / "agg.db") as store:
        assert store.counts() == {"feeds": 2, "entries": 4, "stories": stories_before}
        assert all(r["story_id"] for r in store.execute("SELECT story_id FROM entries"))


def test_http_feed_uses_conditional_get_on_the_second_poll(
    tmp_path: Path, server: LoopbackServer
) -> None:
    body = (DATA / "feeds" / "ledger.xml").read_bytes()

    def ledger(req, _h):  # type: ignore[no-untyped-def]
        if req.headers.get("if-none-match") == '"v1"':
            return Response(304, b"", {"ETag": '"v1"'})
        return Response(200, body, {"ETag": '"v1"', "Content-Type": "application/rss+xml"})

    server.route("/ledger.xml", ledger)
    config = loopback_config(tmp_path, server.url("/ledger.xml"))
    assert run_cli(config, "poll").returncode == 0
    second = run_cli(config, "poll", "--all")
    assert second.returncode == 0, second.stderr
    assert "1 not modified" in second.stdout
    hits = server.hits("/ledger.xml")
    assert len(hits) == 2
    assert "if-none-match" not in hits[0].headers
    assert hits[1].headers["if-none-match"] == '"v1"'
    assert hits[1].headers["user-agent"].startswith("aggregator/")
    # A manual poll right after asks again, conditionally.
    assert run_cli(config, "poll").returncode == 0
    assert len(server.hits("/ledger.xml")) == 3
    assert server.hits("/ledger.xml")[2].headers["if-none-match"] == '"v1"'


def test_cache_control_max_age_holds_back_a_manual_poll_but_not_poll_all(
    tmp_path: Path, server: LoopbackServer
) -> None:
    body = (DATA / "feeds" / "ledger.xml").read_bytes()
    server.serve("/cached.xml", body, 200, Cache_Control="max-age=3600")
    server.serve("/plain.xml", body.replace(b"ledger-00", b"plain-00"), 200)
    config = loopback_config(tmp_path, server.url("/cached.xml"), server.url("/plain.xml"))
    assert run_cli(config, "poll").returncode == 0
    assert run_cli(config, "poll").returncode == 0
    assert (len(server.hits("/cached.xml")), len(server.hits("/plain.xml"))) == (1, 2)
    assert run_cli(config, "poll", "--all").returncode == 0
    assert len(server.hits("/cached.xml")) == 2


def test_broken_feed_marks_the_feed_not_the_cycle(
    tmp_path: Path, feed_dir: Path, server: LoopbackServer
) -> None:
    server.serve("/broken.xml", b"<html><body>Oops</body></html>", 500)
    config = loopback_config(tmp_path, server.url("/broken.xml"), feed_dir / "ledger.xml")
    result = run_cli(config, "poll", "--all")
    assert result.returncode == 0, result.stderr
    assert "1 failed" in result.stdout and "entries: 2 new" in result.stdout
    listing = run_cli(config, "feeds")
    assert listing.returncode == 0
    assert "failing" in listing.stdout and "500" in listing.stdout


def test_bad_config_exits_2_and_writes_nothing(tmp_path: Path) -> None:
    config = tmp_path / "agg.toml"
    config.write_text('[storage]\ndatabase = "agg.db"\n[[feeds]]\nurl = "gopher://x"\n')
    result = run_cli(config, "poll")
    assert result.returncode == 2
    assert "feeds[0].url" in result.stderr and str(config) in result.stderr
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "agg.db").exists()


def test_second_poll_is_conditional_and_skips_gone_throttled_and_moved(
    tmp_path: Path, server: LoopbackServer
) -> None:
    body = (DATA / "feeds" / "ledger.xml").read_bytes()
    other = (DATA / "feeds" / "courier.xml").read_bytes()

    def etag(req, _h):  # type: ignore[no-untyped-def]
        if req.headers.get("if-none-match") == '"e1"':
            return Response(304, b"", {"ETag": '"e1"'})
        return Response(200, body, {"ETag": '"e1"'})

    server.route("/etag.xml", etag)
    server.serve("/gone.xml", b"gone", 410)
    server.serve("/busy.xml", b"slow down", 429, Retry_After="3600")
    server.serve("/old.xml", b"", 301, Location=server.url("/new.xml"))
    server.serve("/new.xml", other, 200)
    server.serve("/temp.xml", b"", 302, Location=server.url("/target.xml"))
    server.serve("/target.xml", body.replace(b"ledger-00", b"target-00"), 200)
    config = loopback_config(
        tmp_path,
        *(server.url(p) for p in ("/etag.xml", "/gone.xml", "/busy.xml", "/old.xml", "/temp.xml")),
    )
    assert run_cli(config, "poll").returncode == 0
    second = run_cli(config, "poll")
    assert second.returncode == 0, second.stderr
    assert [len(server.hits(p)) for p in ("/gone.xml", "/busy.xml", "/old.xml")] == [1, 1, 1]
    assert len(server.hits("/new.xml")) == 2 and len(server.hits("/temp.xml")) == 2
    assert server.hits("/etag.xml")[1].headers["if-none-match"] == '"e1"'
    # --all never overrides a binding Retry-After or a retirement.
    assert run_cli(config, "poll", "--all").returncode == 0
    assert [len(server.hits(p)) for p in ("/gone.xml", "/busy.xml")] == [1, 1]
    with Store.open(tmp_path / "agg.db") as store:
        urls = {r["config_url"]: r for r in store.feed_rows()}
        assert urls[server.url("/old.xml")]["url"] == server.url("/new.xml")
        assert urls[server.url("/temp.xml")]["url"] == server.url("/temp.xml")
        assert urls[server.url("/gone.xml")]["retired_at"] is not None
        assert urls[server.url("/busy.xml")]["error_kind"] == "http"
    # The config still names the old URL: syncing does not add it again.
    listing = run_cli(config, "feeds", "--json")
    assert listing.stdout.count("\n") == 5


def test_long_history_feed_reads_each_stored_entry_at_most_once_while_clustering(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # 300 items an hour apart span far more than the 72 h clustering window, so the window
    # grows with almost every entry; it must grow by the new slice, not reload all it holds.
    items = "".join(
        f"<item><title>Item {i} about topic {i * 7919 % 1009}</title>"
        f"<link>https://example.com/history/{i}</link>"
        f"<pubDate>{format_datetime(datetime(2025, 1, 1, tzinfo=UTC) - timedelta(hours=i), usegmt=True)}"
        "</pubDate></item>"
        for i in range(300)
    )
    feed = tmp_path / "history.xml"
    feed.write_text(
        '<?xml version="1.0"?><rss version="2.0"><channel><title>History</title>'
        f"<link>https://example.com/</link>{items}</channel></rss>"
    )
    config = config_mod.parse(
        {"storage": {"database": "agg.db"}, "feeds": [{"url": feed.as_uri()}]},
        tmp_path / "agg.toml",
    )
    read: list[int] = []
    with Store.open(config.database) as store:
        store.sync_feeds(config.feeds, utcnow())
        window_entries = store.window_entries

        def counting(since: datetime, until: datetime, **bounds: bool) -> list[Any]:
            rows = window_entries(since, until, **bounds)
            read.append(len(rows))
            return rows

        monkeypatch.setattr(store, "window_entries", counting)

        async def poll() -> CycleSummary:
            async with Poller(config, store, workers=1) as poller:
                return await poller.run_cycle(mode="all")

        summary = asyncio.run(poll())
        assert summary.new_entries == 300
        assert (
            store.execute("SELECT count(*) FROM entries WHERE story_id IS NULL").fetchone()[0] == 0
        )
    assert sum(read) <= 300, f"{sum(read)} rows read over {len(read)} window loads"


def test_a_feed_cannot_take_over_an_outlets_story_headline(
    tmp_path: Path, server: LoopbackServer
) -> None:
    """An outlet's article, and two other feeds linking the very same URL: one back-dated to
    1976, one a day earlier than the outlet. Neither may become the story's headline."""
    now = utcnow()
    outlet = server.base_url.replace("127.0.0.1", "localhost")
    article = f"{outlet}/news/bridge-reopens"

    def rss(title: str, published: datetime) -> bytes:
        return (
            f'<?xml version="1.0"?><rss version="2.0"><channel><title>x</title><item>'
            f"<guid>{title[:12]}</guid><title>{title}</title><link>{article}</link>"
            f"<description>{title}. The harbour bridge reopened on Monday after repairs "
            f"that took eleven weeks.</description>"
            f"<pubDate>{format_datetime(published)}</pubDate></item></channel></rss>"
        ).encode()

    server.serve(
        "/outlet.xml",
        rss("Harbour bridge reopens after eleven weeks of repairs", now - timedelta(hours=1)),
        Content_Type="application/rss+xml",
    )
    server.serve(
        "/ancient.xml",
        rss("CHEAP PILLS click here", datetime(1976, 1, 1, tzinfo=UTC)),
        Content_Type="application/rss+xml",
    )
    server.serve(
        "/earlier.xml",
        rss("Sponsored: win a cruise today", now - timedelta(hours=30)),
        Content_Type="application/rss+xml",
    )
    config = loopback_config(
        tmp_path, f"{outlet}/outlet.xml", server.url("/ancient.xml"), server.url("/earlier.xml")
    )
    assert run_cli(config, "poll", "--all").returncode == 0
    with Store.open(tmp_path / "agg.db") as store:
        rows = {
            r["title"][:12]: r
            for r in store.execute(
                "SELECT e.id, e.title, e.story_id, s.title AS headline FROM entries e"
                " JOIN stories s ON s.id = e.story_id"
            )
        }
    bridge, pills, cruise = rows["Harbour brid"], rows["CHEAP PILLS "], rows["Sponsored: w"]
    assert pills["story_id"] != bridge["story_id"], "a 1976 date is outside every window"
    assert cruise["story_id"] == bridge["story_id"], "the same URL within the window joins"
    assert bridge["headline"].startswith("Harbour bridge reopens")
    explained = run_cli(config, "explain", str(cruise["id"]))
    assert explained.returncode == 0, explained.stderr
    assert f"shows the headline of entry {bridge['id']}" in explained.stdout
    assert "its own feed's domain (localhost)" in explained.stdout


def test_poll_with_urls_polls_just_those_feeds_now(tmp_path: Path, server: LoopbackServer) -> None:
    body = (DATA / "feeds" / "ledger.xml").read_bytes()
    server.serve("/a.xml", body, Content_Type="application/rss+xml")
    server.serve("/b.xml", body.replace(b"ledger", b"bledger"), Content_Type="application/rss+xml")
    server.serve("/broken.xml", b"oops", status=500)
    server.serve("/busy.xml", b"later", status=429, Retry_After="3600")
    urls = [server.url(p) for p in ("/a.xml", "/b.xml", "/broken.xml", "/busy.xml")]
    config = loopback_config(tmp_path, *urls)
    assert run_cli(config, "poll", "--all").returncode == 0
    hits = {p: len(server.hits(p)) for p in ("/a.xml", "/b.xml", "/broken.xml", "/busy.xml")}
    # One feed, right now, though it was just polled; a feed in error backoff too.
    done = run_cli(config, "poll", urls[0], urls[2])
    assert done.returncode == 0, done.stderr
    assert len(server.hits("/a.xml")) == hits["/a.xml"] + 1
    assert len(server.hits("/broken.xml")) == hits["/broken.xml"] + 1
    assert len(server.hits("/b.xml")) == hits["/b.xml"]
    # A Retry-After is still binding, and says so.
    held = run_cli(config, "poll", urls[3])
    assert held.returncode == 0 and len(server.hits("/busy.xml")) == hits["/busy.xml"]
    assert "held by the server's Retry-After" in held.stderr
    unknown = run_cli(config, "poll", server.url("/nope.xml"))
    assert unknown.returncode == 1 and "no feed with URL" in unknown.stderr


def _one_item_rss(guid: str, link: str, title: str, summary: str, published: datetime) -> str:
    return (
        '<?xml version="1.0"?><rss version="2.0"><channel><title>feed</title><item>'
        f"<guid>{guid}</guid><title>{title}</title><link>{link}</link>"
        f"<description>{summary}</description><pubDate>{format_datetime(published)}</pubDate>"
        "</item></channel></rss>"
    )


def test_an_entry_retitled_to_another_happening_moves_to_that_story(tmp_path: Path) -> None:
    """A live page that keeps its URL and guid while it moves on to the next happening leaves
    the story it reported first and joins the one it reports now."""
    now = utcnow()
    ferry = (
        "Fire at the Kelvin ferry terminal shuts Portmarrow harbour",
        "A fire at the Kelvin ferry terminal shut Portmarrow harbour on Tuesday; crews from"
        " three stations fought the blaze at the Kelvin terminal.",
    )
    quota = (
        "Supreme court upholds the Drummore fishing quota ruling",
        "The supreme court upheld the Drummore fishing quota ruling on Tuesday, rejecting the"
        " trawler owners' appeal against the Drummore quota.",
    )
    feeds = {
        "harbour": ("h-1", "https://harbour.example/fire", *ferry),
        "courts": ("c-1", "https://courts.example/quota", *quota),
        "ticker": ("t-live", "https://ticker.example/live", *ferry),
    }
    for name, (guid, link, title, summary) in feeds.items():
        (tmp_path / f"{name}.xml").write_text(
            _one_item_rss(guid, link, title, summary, now - timedelta(hours=2))
        )
    config = tmp_path / "agg.toml"
    config.write_text(
        '[storage]\ndatabase = "agg.db"\n'
        + "".join(f'[[feeds]]\nurl = "{tmp_path / name}.xml"\n' for name in feeds)
    )

    def story_of() -> dict[str, int]:
        with sqlite3.connect(tmp_path / "agg.db") as conn:
            return dict(conn.execute("SELECT guid, story_id FROM entries"))

    assert run_cli(config, "poll", "--all").returncode == 0
    first = story_of()
    assert first["t-live"] == first["h-1"] != first["c-1"], first
    # The ticker moves on: same guid and URL, the court ruling now, in other words.
    (tmp_path / "ticker.xml").write_text(
        _one_item_rss(
            "t-live",
            "https://ticker.example/live",
            "Drummore fishing quota ruling upheld by the supreme court",
            "Trawler owners lost their appeal: the supreme court upheld the Drummore fishing"
            " quota ruling.",
            now - timedelta(hours=1),
        )
    )
    polled = run_cli(config, "poll", "--all")
    assert polled.returncode == 0, polled.stderr
    assert "1 updated" in polled.stdout
    second = story_of()
    assert second["t-live"] == second["c-1"] != second["h-1"], second
    assert second["h-1"] == first["h-1"], "the ferry story keeps its own member"
    with sqlite3.connect(tmp_path / "agg.db") as conn:
        counts = dict(conn.execute("SELECT id, member_count FROM stories"))
    assert counts[second["h-1"]] == 1 and counts[second["c-1"]] == 2, counts
