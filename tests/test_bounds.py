"""Odd values a user or a server can hand us: each gets a clear error or is treated as absent,
never a traceback, a crash at start or a feed broken for good."""

from __future__ import annotations

import sqlite3
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from aggregator import config
from aggregator.errors import ConfigError
from aggregator.fetch import parse_max_age, parse_retry_after, sendable_validator
from aggregator.schedule import MAX_DURATION
from tests.feedgen import one_feed_config
from tests.httpserver import LoopbackServer, Request, Response

CLI = [sys.executable, "-m", "aggregator"]
RSS = (
    b'<?xml version="1.0"?><rss version="2.0"><channel><title>t</title>'
    b"<item><guid>a1</guid><title>Harbour bridge reopens after repairs</title>"
    b"<link>https://a.example/1</link></item></channel></rss>"
)
NOW = datetime(2026, 12, 3, tzinfo=UTC)


def run(config_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*CLI, "--config", str(config_path), *args], capture_output=True, text=True, timeout=120
    )


def loopback(tmp_path: Path, url: str) -> Path:
    path = tmp_path / "agg.toml"
    path.write_text(
        '[storage]\ndatabase = "agg.db"\n[fetch]\nallow_private_networks = true\n'
        f'[[feeds]]\nurl = "{url}"\n',
        encoding="utf-8",
    )
    return path


# -- validators and numeric headers ------------------------------------------------------------


def test_non_ascii_etag_and_last_modified_are_never_stored_and_the_feed_keeps_polling(
    tmp_path: Path, server: LoopbackServer
) -> None:
    # http.server sends header values as Latin-1: "\xe9" goes out as the byte 0xE9.
    server.serve(
        "/feed.xml",
        RSS,
        ETag='"caf\xe9"',
        Last_Modified="Tue, 3 D\xe9c 2026",
        Content_Type="application/rss+xml",
    )
    cfg = loopback(tmp_path, server.url("/feed.xml"))
    for _ in range(3):
        done = run(cfg, "poll", "--all")
        assert done.returncode == 0, done.stderr
        assert " 0 failed" in done.stdout, done.stdout
    assert len(server.hits("/feed.xml")) == 3, "every poll reached the server"
    assert all(
        "if-none-match" not in h.headers and "if-modified-since" not in h.headers
        for h in server.hits("/feed.xml")
    )
    conn = sqlite3.connect(tmp_path / "agg.db")
    assert conn.execute("SELECT etag, last_modified, error_count FROM feeds").fetchone() == (
        None,
        None,
        0,
    )
    conn.close()


def test_a_stored_unsendable_validator_is_ignored_and_feeds_reset_clears_validators(
    tmp_path: Path, server: LoopbackServer
) -> None:
    def feed(req: Request, _h: object) -> Response:
        if req.headers.get("if-none-match") == '"v1"':
            return Response(304)
        return Response(200, RSS, {"ETag": '"v1"', "Content-Type": "application/rss+xml"})

    server.route("/feed.xml", feed)
    cfg = loopback(tmp_path, server.url("/feed.xml"))
    assert run(cfg, "poll", "--all").returncode == 0
    conn = sqlite3.connect(tmp_path / "agg.db")
    # What an earlier version stored from a bad response.
    conn.execute("UPDATE feeds SET etag = ?, last_modified = ?", ('"caf\xe9"', "x\r\ny"))
    conn.commit()
    again = run(cfg, "poll", "--all")
    assert again.returncode == 0 and " 0 failed" in again.stdout, again.stdout + again.stderr
    assert "if-none-match" not in server.hits("/feed.xml")[1].headers
    assert conn.execute("SELECT etag FROM feeds").fetchone() == ('"v1"',)
    reset = run(cfg, "feeds", "reset", server.url("/feed.xml"))
    assert reset.returncode == 0, reset.stderr
    assert conn.execute("SELECT etag, last_modified, body_hash FROM feeds").fetchone() == (
        None,
        None,
        None,
    )
    conn.close()
    assert run(cfg, "poll", "--all").returncode == 0
    assert "if-none-match" not in server.hits("/feed.xml")[2].headers, "reset sent no validator"


def test_superscript_retry_after_is_ignored_not_a_crash(
    tmp_path: Path, server: LoopbackServer
) -> None:
    server.serve("/busy.xml", b"busy", status=503, Retry_After="\xb2")
    server.serve(
        "/aged.xml",
        RSS,
        Cache_Control="max-age=600",
        Age="\xb2",
        Content_Type="application/rss+xml",
    )
    cfg = tmp_path / "agg.toml"
    cfg.write_text(
        '[storage]\ndatabase = "agg.db"\n[fetch]\nallow_private_networks = true\n'
        f'[[feeds]]\nurl = "{server.url("/busy.xml")}"\n'
        f'[[feeds]]\nurl = "{server.url("/aged.xml")}"\n',
        encoding="utf-8",
    )
    done = run(cfg, "poll", "--all")
    assert done.returncode == 0, done.stderr
    conn = sqlite3.connect(tmp_path / "agg.db")
    kinds = dict(conn.execute("SELECT url, error_kind FROM feeds").fetchall())
    conn.close()
    assert kinds[server.url("/busy.xml")] == "http"  # a 503, not an internal error
    assert kinds[server.url("/aged.xml")] is None


@given(st.text(max_size=40))
def test_header_parsers_never_raise(value: str) -> None:
    assert parse_retry_after(value, NOW) is None or parse_retry_after(value, NOW) >= NOW
    parse_max_age({"cache-control": f"max-age={value}", "age": value}, NOW)
    kept = sendable_validator(value)
    assert kept is None or kept.encode("ascii")


# -- durations, counts and ids -------------------------------------------------------------------


@given(
    st.one_of(
        st.integers(min_value=-(10**30), max_value=10**30),
        st.text(alphabet="0123456789smhdw ²٣", max_size=30),
    )
)
def test_every_duration_parses_or_says_why(value: int | str) -> None:
    try:
        seconds = config.parse_duration(value)
    except ValueError as exc:
        assert "duration" in str(exc)
    else:
        assert 0 <= seconds <= MAX_DURATION


@pytest.mark.parametrize(
    "args",
    [
        ("stories", "--since", "99999999d"),
        ("stories", "--since", "1000000w"),
        ("export", "--since", "99999999d"),
        ("stories", "--limit", "1" + "0" * 30),
        ("stories", "--min-sources", "99999999999999999999"),
        ("search", "ferry", "--limit", "1" + "0" * 30),
        ("explain", "99999999999999999999"),
    ],
)
def test_huge_cli_values_are_usage_errors(tmp_path: Path, args: tuple[str, ...]) -> None:
    cfg = tmp_path / "agg.toml"
    cfg.write_text('[storage]\ndatabase = "agg.db"\n', encoding="utf-8")
    done = run(cfg, *args)
    assert done.returncode == 2, done.stderr
    assert "Traceback" not in done.stderr and "Error" in done.stderr


@pytest.mark.parametrize(
    ("text", "key", "words"),
    [
        ('[fetch]\nuser_agent = "bot\\r\\nX-Evil: 1"\n', "fetch.user_agent", "printable ASCII"),
        ('[fetch]\nuser_agent = "r\u00e9sum\u00e9 bot"\n', "fetch.user_agent", "printable ASCII"),
        ("[fetch]\nmax_body_size = 9223372036854775807\n", "fetch.max_body_size", "at most"),
        ("[storage]\nkeep_days = 99999999999\n", "storage.keep_days", "at most 36500"),
        ('[schedule]\ninterval = "99999999d"\n', "schedule.interval", "at most 365000 days"),
        (
            '[[digests]]\nname = "d"\npath = "d.xml"\nlimit = 99999999999999\n',
            "digests[0].limit",
            "at most",
        ),
        (
            '[[digests]]\nname = "d"\npath = "d.xml"\nsince = "1000000w"\n',
            "digests[0].since",
            "at most 365000 days",
        ),
    ],
)
def test_huge_or_unsendable_config_values_name_the_key(
    tmp_path: Path, text: str, key: str, words: str
) -> None:
    path = tmp_path / "aggregator.toml"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(ConfigError) as info:
        config.load(path)
    assert info.value.key == key
    assert words in str(info.value)


def test_deeply_nested_toml_is_a_config_error_and_the_daemon_exits_2(tmp_path: Path) -> None:
    path = tmp_path / "aggregator.toml"
    path.write_text("x = " + "[" * 50_000 + "]" * 50_000 + "\n", encoding="utf-8")
    with pytest.raises(ConfigError, match="nested too deeply"):
        config.load(path)
    daemon = subprocess.run(
        [*CLI, "--config", str(path), "run"], capture_output=True, text=True, timeout=60
    )
    assert daemon.returncode == 2, daemon.stderr  # Restart=on-failure must not loop on it
    assert "Traceback" not in daemon.stderr


def test_daemon_with_a_huge_digest_limit_exits_2(tmp_path: Path) -> None:
    path = tmp_path / "aggregator.toml"
    path.write_text(
        '[storage]\ndatabase = "agg.db"\n[[digests]]\nname = "d"\npath = "d.xml"\n'
        "limit = 99999999999999999\n",
        encoding="utf-8",
    )
    daemon = subprocess.run(
        [*CLI, "--config", str(path), "run"], capture_output=True, text=True, timeout=60
    )
    assert daemon.returncode == 2, daemon.stderr
    assert "digests[0].limit" in daemon.stderr and "Traceback" not in daemon.stderr


# -- smaller holes ----------------------------------------------------------------------------


def test_site_local_ipv6_is_refused_by_the_ssrf_guard() -> None:
    from aggregator.fetch import address_refusal

    assert "site-local" in (address_refusal("fec0::1") or "")
    assert "site-local" in (address_refusal("feff:ffff::1") or "")
    assert address_refusal("2a00:1450:4007:80e::200e") is None  # a public address still passes


def test_a_local_non_feed_file_is_refused_without_echoing_its_content(tmp_path: Path) -> None:
    secret = tmp_path / "notes.txt"
    secret.write_text("DB_PASSWORD=hunter2 and more private lines\n", encoding="utf-8")
    cfg = one_feed_config(tmp_path, secret)
    done = run(cfg, "poll", "--all")
    assert done.returncode == 0
    assert "hunter2" not in done.stdout + done.stderr
    conn = sqlite3.connect(tmp_path / "agg.db")
    kind, message = conn.execute("SELECT error_kind, error_message FROM feeds").fetchone()
    conn.close()
    assert kind == "not_a_feed" and "does not look like XML or JSON" in message
    assert "hunter2" not in message and "DB_PASSWORD" not in message


def test_export_output_into_a_missing_folder_is_refused_not_created(tmp_path: Path) -> None:
    cfg = tmp_path / "agg.toml"
    cfg.write_text('[storage]\ndatabase = "agg.db"\n', encoding="utf-8")
    target = tmp_path / "no" / "such" / "folder" / "digest.xml"
    done = run(cfg, "export", "--format", "atom", "-o", str(target))
    assert done.returncode == 1, done.stderr
    assert "does not exist" in done.stderr and "Traceback" not in done.stderr
    assert not (tmp_path / "no").exists()


def test_bidi_overrides_and_byte_order_marks_are_stripped_from_titles(tmp_path: Path) -> None:
    feed = tmp_path / "feed.xml"
    feed.write_text(
        '<?xml version="1.0" encoding="utf-8"?><rss version="2.0"><channel><title>t</title>'
        "<item><guid>b1</guid><title>\ufeffPay \u202egnp.exe\u202c now \u2066x\u2069</title>"
        "<description>\u202eevil</description></item></channel></rss>",
        encoding="utf-8",
    )
    cfg = one_feed_config(tmp_path, feed)
    assert run(cfg, "poll", "--all").returncode == 0
    conn = sqlite3.connect(tmp_path / "agg.db")
    title, summary, text = conn.execute("SELECT title, summary, text FROM entries").fetchone()
    conn.close()
    assert title == "Pay gnp.exe now x"
    for value in (title, summary, text):
        assert not any(c in value for c in "\ufeff\u202a\u202b\u202c\u202d\u202e\u2066\u2069")


def test_a_search_of_too_many_words_is_refused_with_the_cap(tmp_path: Path) -> None:
    cfg = tmp_path / "agg.toml"
    cfg.write_text('[storage]\ndatabase = "agg.db"\n', encoding="utf-8")
    words = " ".join(f"word{i}" for i in range(800))
    done = run(cfg, "search", words)
    assert done.returncode == 2 and "at most 32" in done.stderr, done.stderr
    done = run(cfg, "export", "--format", "atom", "--query", words)
    assert done.returncode == 2 and "at most 32" in done.stderr, done.stderr
    path = tmp_path / "digest.toml"
    path.write_text(
        f'[[digests]]\nname = "d"\npath = "d.xml"\nquery = "{words}"\n', encoding="utf-8"
    )
    with pytest.raises(ConfigError) as info:
        config.load(path)
    assert info.value.key == "digests[0].query"


def test_the_command_line_loads_the_pipeline_only_for_commands_that_poll() -> None:
    # `--version`, `feeds` and `stories` must start quickly: importing the CLI does not pull in
    # the fetcher (httpx), the worker pool or the clusterer. (Timings go in benchmarks, not here.)
    probe = (
        "import sys, aggregator.cli; "
        "print(sorted(m for m in ('httpx', 'aggregator.pipeline', 'aggregator.cluster',"
        " 'aggregator.fetch', 'asyncio') if m in sys.modules))"
    )
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"


# -- what one feed may store ---------------------------------------------------------------------


def _rss(items: list[str]) -> str:
    return (
        '<?xml version="1.0" encoding="utf-8"?><rss version="2.0"><channel><title>t</title>'
        + "".join(items)
        + "</channel></rss>"
    )


def test_stored_html_is_capped_after_sanitising_not_only_before() -> None:
    from aggregator.model import ParsedFeed, RawEntry
    from aggregator.normalise import MAX_STORED_HTML_CHARS, normalise_entries

    links = "<a>x</a>" * 100_000  # 0.8 M characters: under the input cap, ~3.4 M once sanitised
    raw = RawEntry(guid="g", title="Links", link="https://a.example/", summary=links, content=links)
    (entry,) = normalise_entries(ParsedFeed(entries=(raw,)), "https://a.example/feed", NOW)
    assert 0 < len(entry.summary) <= MAX_STORED_HTML_CHARS
    assert 0 < len(entry.content) <= MAX_STORED_HTML_CHARS
    assert entry.summary.endswith("</a>") and entry.summary.count("<a ") == entry.summary.count(
        "</a>"
    )


@pytest.mark.slow
def test_a_feed_that_would_store_too_much_in_one_poll_is_marked_and_stores_nothing(
    tmp_path: Path,
) -> None:
    body = "<a>x</a>" * 12_500  # 100 kB that sanitises to ~425 kB (rel="noopener noreferrer")
    items = [
        f"<item><guid>g{i}</guid><title>Item {i}</title>"
        f"<description><![CDATA[{body}]]></description></item>"
        for i in range(185)
    ]
    feed = tmp_path / "greedy.xml"
    feed.write_text(_rss(items), encoding="utf-8")
    assert feed.stat().st_size < 20 * 2**20  # under the body cap: only the output is too big
    cfg = one_feed_config(tmp_path, feed)
    done = run(cfg, "poll", "--all")
    assert done.returncode == 0, done.stderr
    conn = sqlite3.connect(tmp_path / "agg.db")
    kind, message = conn.execute("SELECT error_kind, error_message FROM feeds").fetchone()
    entries = conn.execute("SELECT count(*) FROM entries").fetchone()[0]
    conn.close()
    assert kind == "too_large" and "MiB a feed may store per poll" in message
    assert entries == 0


def test_a_document_with_too_many_items_keeps_the_newest_and_a_huge_one_is_refused() -> None:
    from email.utils import format_datetime

    from aggregator.errors import ParseError
    from aggregator.parse import MAX_ENTRIES_PER_DOCUMENT, parse_feed

    base = datetime(2025, 1, 1, tzinfo=UTC)
    # Item 0 is the newest; the document lists them oldest first, as some feeds do.
    items = [
        f"<item><guid>g{i}</guid><title>Item {i}</title>"
        f"<pubDate>{format_datetime(base - timedelta(minutes=10 * i))}</pubDate></item>"
        for i in reversed(range(1500))
    ]
    parsed = parse_feed(_rss(items).encode(), {}, "https://a.example/feed")
    assert len(parsed.entries) == MAX_ENTRIES_PER_DOCUMENT
    assert {e.guid for e in parsed.entries} == {f"g{i}" for i in range(MAX_ENTRIES_PER_DOCUMENT)}
    assert "kept the newest 1,000" in (parsed.problem or "")
    with pytest.raises(ParseError, match="objects, more than 20,000 items") as refused:
        parse_feed(
            (
                '{"version": "https://jsonfeed.org/version/1.1", "items": ['
                + ",".join(["{}"] * 300_000)
                + "]}"
            ).encode(),
            {},
            "https://a.example/j",
        )
    assert refused.value.kind == "too_large"
