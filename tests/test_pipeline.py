"""End to end: config → store → fetch (file:// and real loopback HTTP) → stories."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from aggregator.store import Store
from tests.conftest import DATA
from tests.httpserver import LoopbackServer, Response

CLI = [sys.executable, "-m", "aggregator"]


def run_cli(config: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*CLI, "--config", str(config), *args], capture_output=True,
                          text=True, timeout=120)


def test_file_feeds_poll_into_stories_and_repoll_adds_nothing(tmp_path: Path, feed_dir: Path) -> None:
    config = tmp_path / "agg.toml"
    config.write_text(f"""
[storage]
database = "agg.db"
[[feeds]]
url = "{feed_dir / 'ledger.xml'}"
title = "Ledger"
[[feeds]]
url = "{(feed_dir / 'courier.xml').as_uri()}"
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


def test_http_feed_uses_conditional_get_on_the_second_poll(tmp_path: Path,
                                                            server: LoopbackServer) -> None:
    body = (DATA / "feeds" / "ledger.xml").read_bytes()

    def ledger(req, _h):  # type: ignore[no-untyped-def]
        if req.headers.get("if-none-match") == '"v1"':
            return Response(304, b"", {"ETag": '"v1"'})
        return Response(200, body, {"ETag": '"v1"', "Content-Type": "application/rss+xml"})

    server.route("/ledger.xml", ledger)
    config = tmp_path / "agg.toml"
    config.write_text(f"""
[storage]
database = "agg.db"
[fetch]
allow_private_networks = true
[[feeds]]
url = "{server.url('/ledger.xml')}"
""")
    assert run_cli(config, "poll").returncode == 0
    second = run_cli(config, "poll", "--all")
    assert second.returncode == 0, second.stderr
    assert "1 not modified" in second.stdout
    hits = server.hits("/ledger.xml")
    assert len(hits) == 2
    assert "if-none-match" not in hits[0].headers
    assert hits[1].headers["if-none-match"] == '"v1"'
    assert hits[1].headers["user-agent"].startswith("aggregator/")
    # Not due yet: a poll without --all asks nothing.
    assert run_cli(config, "poll").returncode == 0
    assert len(server.hits("/ledger.xml")) == 2


def test_broken_feed_marks_the_feed_not_the_cycle(tmp_path: Path, feed_dir: Path,
                                                  server: LoopbackServer) -> None:
    server.serve("/broken.xml", b"<html><body>Oops</body></html>", 500)
    config = tmp_path / "agg.toml"
    config.write_text(f"""
[storage]
database = "agg.db"
[fetch]
allow_private_networks = true
[[feeds]]
url = "{server.url('/broken.xml')}"
[[feeds]]
url = "{feed_dir / 'ledger.xml'}"
""")
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
