"""`feeds add` and `feeds remove`: subscriptions managed without editing TOML by hand, through
real processes, real files, a real loopback server and a real daemon."""

from __future__ import annotations

import signal
import sqlite3
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from aggregator import config as config_mod
from aggregator.store import DaemonPid
from tests.feedgen import write_feeds
from tests.httpserver import LoopbackServer
from tests.test_service import Daemon, NotifyListener, daemon_env, write_service_config

CLI = [sys.executable, "-m", "aggregator"]
FEED = b"""<?xml version="1.0"?><rss version="2.0"><channel><title>Harbour</title>
<link>http://harbour.example/</link><description>d</description>
<item><guid>h1</guid><title>Ferry timetable changes on Monday</title>
<link>http://harbour.example/1</link><pubDate>Mon, 28 Oct 2024 08:00:00 GMT</pubDate></item>
</channel></rss>"""
MAIN = (
    "# my aggregator, with comments that must stay\n\n[storage]\n"
    'database = "agg.db"  # beside this file\n\n[fetch]\nallow_private_networks = true\n'
)


@pytest.fixture
def listener() -> Iterator[NotifyListener]:
    """Plays systemd's notify socket for the daemon test."""
    lst = NotifyListener()
    yield lst
    lst.close()


def cli(config: Path, *args: str, code: int = 0) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(
        [*CLI, "--config", str(config), *args], capture_output=True, text=True, timeout=120
    )
    assert result.returncode == code, (result.stdout, result.stderr)
    assert "Traceback" not in result.stderr, result.stderr
    return result


def harbour(tmp_path: Path, server: LoopbackServer) -> tuple[Path, str]:
    """The main config (no feeds yet) and the URL of a feed the loopback server serves."""
    server.serve("/harbour.xml", FEED, **{"Content-Type": "application/rss+xml"})
    config = tmp_path / "aggregator.toml"
    config.write_text(MAIN)
    return config, server.url("/harbour.xml")


def test_feeds_add_writes_an_included_feeds_file_and_the_feed_is_polled(
    tmp_path: Path, server: LoopbackServer
) -> None:
    config, url = harbour(tmp_path, server)

    out = cli(config, "feeds", "add", url, "--tag", "local", "--tag", "sea", "--title", "Harbour")
    target = tmp_path / "feeds.d" / "subscriptions.toml"
    assert f"subscribed to {url} (in {target})" in out.stdout
    assert 'added include "feeds.d/subscriptions.toml"' in out.stdout
    assert "systemctl reload aggregator" in out.stdout  # no daemon runs: say how to tell it
    # The main config only gains the include line: every comment and line stays.
    assert config.read_text() == (
        "# my aggregator, with comments that must stay\n\n"
        'include = ["feeds.d/subscriptions.toml"]\n' + MAIN.split("\n\n", 1)[1]
    )
    (feed,) = config_mod.load(config).feeds
    assert (feed.url, feed.title, feed.tags) == (url, "Harbour", ("local", "sea"))

    assert "entries: 1 new" in cli(config, "poll").stdout
    # One request from `feeds add` (does the URL serve a feed?), one from the poll.
    assert len(server.hits("/harbour.xml")) == 2

    # A second feed goes into the same file; the include is not added twice.
    second = server.url("/quay.xml")
    out = cli(config, "feeds", "add", second, "--no-discover")
    assert "added include" not in out.stdout
    assert [f.url for f in config_mod.load(config).feeds] == [url, second]
    assert config.read_text().count("include") == 1


def test_feeds_add_refuses_a_duplicate_and_a_bad_url_and_changes_nothing(tmp_path: Path) -> None:
    config = tmp_path / "aggregator.toml"
    config.write_text(MAIN + '\n[[feeds]]\nurl = "https://news.example/feed"\n')
    before = config.read_text()

    dup = cli(config, "feeds", "add", "https://news.example/feed", code=1)
    assert "already subscribed to https://news.example/feed" in dup.stderr
    bad = cli(config, "feeds", "add", "ftp://news.example/feed", code=2)
    assert "URL" in bad.stderr and "scheme 'ftp'" in bad.stderr
    empty_tag = cli(config, "feeds", "add", "https://other.example/feed", "--tag", " ", code=2)
    assert "tags" in empty_tag.stderr  # the config's own check names the key
    assert config.read_text() == before
    assert not (tmp_path / "feeds.d" / "subscriptions.toml").exists()


def test_feeds_remove_takes_out_one_table_and_keeps_the_rest_of_the_file(tmp_path: Path) -> None:
    config = tmp_path / "aggregator.toml"
    config.write_text(
        'include = ["feeds.d/*.toml"]\n' + MAIN + '\n[[feeds]]\nurl = "https://main.example/feed"\n'
    )
    feeds_d = tmp_path / "feeds.d"
    feeds_d.mkdir()
    listing = feeds_d / "news.toml"
    listing.write_text(
        '# my news feeds\n\n[[feeds]]\nurl = "https://a.example/feed"\n'
        'tags = ["a"]\n\n# the one to drop\n[[feeds]]\n'
        'url = "https://b.example/feed"\n\n[[feeds]]\n'
        'url = "https://c.example/feed"  # keep\n'
    )

    out = cli(config, "feeds", "remove", "https://a.example/feed")
    assert f"unsubscribed from https://a.example/feed (removed from {listing})" in out.stdout
    assert listing.read_text() == (
        "# my news feeds\n\n# the one to drop\n[[feeds]]\n"
        'url = "https://b.example/feed"\n\n[[feeds]]\n'
        'url = "https://c.example/feed"  # keep\n'
    )
    assert [f.url for f in config_mod.load(config).feeds] == [
        "https://main.example/feed",
        "https://b.example/feed",
        "https://c.example/feed",
    ]

    missing = cli(config, "feeds", "remove", "https://a.example/feed", code=1)
    assert "not subscribed to https://a.example/feed" in missing.stderr
    # A feed of the main config is left for the user to remove: that file is never rewritten.
    before = config.read_text()
    main = cli(config, "feeds", "remove", "https://main.example/feed", code=1)
    assert f"is listed in {config} itself" in main.stderr
    assert config.read_text() == before


def test_a_removed_feed_keeps_its_entries_and_is_marked_inactive(
    tmp_path: Path, server: LoopbackServer
) -> None:
    config, url = harbour(tmp_path, server)
    cli(config, "feeds", "add", url)
    cli(config, "poll")
    cli(config, "feeds", "remove", url)
    cli(config, "poll")
    with sqlite3.connect(tmp_path / "agg.db") as conn:
        assert conn.execute("SELECT active FROM feeds WHERE url = ?", (url,)).fetchone() == (0,)
        assert conn.execute("SELECT count(*) FROM entries").fetchone() == (1,)
    conn.close()
    assert len(server.hits("/harbour.xml")) == 2  # `feeds add`, the first poll; not once removed


def test_feeds_add_and_remove_tell_the_running_daemon_which_reloads(
    tmp_path: Path, listener: NotifyListener, feed_dir: Path
) -> None:
    config = write_service_config(tmp_path, [feed_dir / "ledger.xml"], digests=False)
    daemon = Daemon(config, daemon_env(listener))
    try:
        listener.wait_key("READY", "1")
        daemon.wait_log("cycle: 1 due")
        pid = DaemonPid(tmp_path / "agg.db")
        assert pid.running() == daemon.proc.pid
        (extra,) = write_feeds(tmp_path / "more", 1, 3, seed=11)

        before = len(listener.snapshot())
        out = cli(config, "feeds", "add", str(extra))
        assert f"told the running daemon (pid {daemon.proc.pid}) to reload" in out.stdout
        listener.wait_key("RELOADING", "1", after=before)
        daemon.wait_log(f"feed added: {extra.as_uri()}")
        daemon.wait_log(f"{extra.as_uri()}: 3 new, 0 updated entries")

        out = cli(config, "feeds", "remove", extra.as_uri())
        assert f"told the running daemon (pid {daemon.proc.pid}) to reload" in out.stdout
        daemon.wait_log(f"feed removed: {extra.as_uri()}")
    finally:
        assert daemon.stop() == 0, daemon.text()
    # Stopped: the pid is no longer believed, and nothing is signalled.
    assert DaemonPid(tmp_path / "agg.db").running() is None
    out = cli(config, "feeds", "add", "https://after.example/feed", "--no-discover")
    assert "systemctl reload aggregator" in out.stdout


def test_a_pid_file_left_by_a_killed_daemon_is_not_believed(tmp_path: Path) -> None:
    database = tmp_path / "agg.db"
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys, time; from pathlib import Path;"
            "from aggregator.store import DaemonPid; assert DaemonPid(Path(sys.argv[1])).claim();"
            "print('held', flush=True); time.sleep(60)",
            str(database),
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline() == "held\n"
        assert DaemonPid(database).running() == holder.pid
        assert not DaemonPid(database).claim()  # one daemon per database records itself
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait()
        if holder.stdout is not None:
            holder.stdout.close()
    assert Path(str(database) + ".pid").read_text() == f"{holder.pid}\n"  # left behind
    assert DaemonPid(database).running() is None


def test_feeds_import_into_the_file_feeds_add_wrote_keeps_what_was_added(tmp_path: Path) -> None:
    config = tmp_path / "aggregator.toml"
    config.write_text(MAIN)
    cli(config, "feeds", "add", "https://added.example/feed", "--tag", "mine", "--no-discover")
    opml = tmp_path / "subscriptions.opml"  # imports into feeds.d/subscriptions.toml too
    opml.write_text(
        '<?xml version="1.0"?><opml version="2.0"><head/><body>'
        '<outline type="rss" text="A" xmlUrl="https://added.example/feed"/>'
        '<outline type="rss" text="B" xmlUrl="https://opml.example/feed"/>'
        "</body></opml>"
    )
    out = cli(config, "feeds", "import", str(opml))
    assert "wrote 1 feeds to" in out.stdout and "(1 already subscribed)" in out.stdout
    feeds = {f.url: f.tags for f in config_mod.load(config).feeds}
    assert feeds == {"https://added.example/feed": ("mine",), "https://opml.example/feed": ()}
    again = cli(config, "feeds", "import", str(opml))
    assert "wrote 0 feeds" in again.stdout and "(2 already subscribed)" in again.stdout
    assert len(config_mod.load(config).feeds) == 2


# -- discovery: feeds add on a web page -------------------------------------------------------

PAGE = """<!doctype html><html><head><title>Harbour News</title>
<link rel="alternate" type="application/rss+xml" title="Harbour: front page" href="/rss/front.xml">
<link rel="alternate" type="application/atom+xml" title="Harbour: culture" href="{culture}">
<link rel="stylesheet" href="/style.css">
</head><body><a href="/rss/not-in-head.xml" rel="alternate" type="application/rss+xml">x</a>
</body></html>"""
HTML = {"Content-Type": "text/html; charset=utf-8"}
RSS = {"Content-Type": "application/rss+xml"}


def test_feeds_add_on_a_page_lists_its_feeds_and_subscribes_to_the_one_picked(
    tmp_path: Path, server: LoopbackServer
) -> None:
    culture = server.url("/culture.atom")
    server.serve("/", PAGE.format(culture=culture).encode(), **HTML)
    server.serve("/rss/front.xml", FEED, **RSS)
    config = tmp_path / "aggregator.toml"
    config.write_text(MAIN)  # allows private networks: the loopback server is one

    listed = cli(config, "feeds", "add", server.url("/"), code=1)
    assert (
        f"names 2 feeds:\n  1. {server.url('/rss/front.xml')}  (RSS: Harbour: front page)\n"
        f"  2. {culture}  (Atom: Harbour: culture)" in listed.stdout
    )
    assert "pick one with --pick N" in listed.stderr
    assert not (tmp_path / "feeds.d").exists()  # nothing written

    out = cli(config, "feeds", "add", server.url("/"), "--pick", "2", "--tag", "culture")
    assert f"subscribed to {culture}" in out.stdout
    too_far = cli(config, "feeds", "add", server.url("/"), "--pick", "3", code=1)
    assert "--pick 3: there are only 2" in too_far.stderr
    assert [(f.url, f.tags) for f in config_mod.load(config).feeds] == [(culture, ("culture",))]


def test_feeds_add_on_a_page_naming_none_tries_the_common_paths(
    tmp_path: Path, server: LoopbackServer
) -> None:
    server.serve(
        "/", b"<!doctype html><html><head><title>x</title></head><body>hi</body></html>", **HTML
    )
    server.serve("/rss", FEED, **RSS)
    config = tmp_path / "aggregator.toml"
    config.write_text(MAIN)  # allows private networks: the loopback server is one
    out = cli(config, "feeds", "add", server.url("/"))
    assert f"found a feed at {server.url('/rss')}" in out.stdout
    assert [f.url for f in config_mod.load(config).feeds] == [server.url("/rss")]
    assert server.hits("/feed")  # tried first, and missing (404)


def test_feeds_add_finds_nothing_on_a_page_without_feeds_and_writes_nothing(
    tmp_path: Path, server: LoopbackServer
) -> None:
    server.serve("/", b"<html><head></head><body>no feeds here</body></html>", **HTML)
    server.serve("/image.png", b"\x89PNG\r\n\x1a\n\0\0\0binary", **{"Content-Type": "image/png"})
    config = tmp_path / "aggregator.toml"
    config.write_text(MAIN)  # allows private networks: the loopback server is one
    before = config.read_text()
    none = cli(config, "feeds", "add", server.url("/"), code=1)
    assert "no feed found for" in none.stderr and '<link rel="alternate">' in none.stderr
    binary = cli(config, "feeds", "add", server.url("/image.png"), code=1)
    assert "serves neither a feed nor an HTML page" in binary.stderr
    missing = cli(config, "feeds", "add", server.url("/gone"), code=1)
    assert "cannot fetch" in missing.stderr and "404" in missing.stderr
    assert config.read_text() == before and not (tmp_path / "feeds.d").exists()


def test_feeds_add_of_a_feed_url_keeps_it_and_discovery_honours_the_ssrf_guard(
    tmp_path: Path, server: LoopbackServer
) -> None:
    server.serve("/harbour.xml", FEED, **RSS)
    config = tmp_path / "aggregator.toml"
    config.write_text(MAIN)  # allows private networks: the loopback server is one
    out = cli(config, "feeds", "add", server.url("/harbour.xml"))
    assert f"subscribed to {server.url('/harbour.xml')}" in out.stdout
    (tmp_path / "guarded").mkdir()
    guarded = tmp_path / "guarded" / "aggregator.toml"  # the default: private addresses refused
    guarded.write_text('[storage]\ndatabase = "g.db"\n')
    refused = cli(guarded, "feeds", "add", server.url("/harbour.xml"), code=1)
    assert "cannot fetch" in refused.stderr and "127.0.0.1" in refused.stderr
    # --no-discover subscribes without asking the network.
    cli(guarded, "feeds", "add", server.url("/harbour.xml"), "--no-discover")
    assert [f.url for f in config_mod.load(guarded).feeds] == [server.url("/harbour.xml")]
