"""Full-text search: FTS5 follows inserts, updates and deletes; `aggregator search` takes any input."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import pytest

from aggregator.store import Store, fts_query
from tests.feedgen import one_feed_config
from tests.olddb import database_at
from tests.test_outputs import polled_site, run_cli


def search(config: Path, *args: str) -> list[dict[str, object]]:
    result = run_cli(config, "search", "--json", *args)
    assert result.stderr == b""
    return [json.loads(line) for line in result.stdout.splitlines()]


def titles(config: Path, query: str) -> list[str]:
    return [str(row["title"]) for row in search(config, "--", query)]


def assert_index_matches_entries(database: Path) -> None:
    """FTS5's own check that the external-content index agrees with the entries table."""
    conn = sqlite3.connect(database)
    try:
        conn.execute("INSERT INTO entries_fts (entries_fts, rank) VALUES ('integrity-check', 1)")
        indexed = conn.execute("SELECT count(*) FROM entries_fts").fetchone()[0]
        assert indexed == conn.execute("SELECT count(*) FROM entries").fetchone()[0]
    finally:
        conn.close()


@pytest.fixture
def site(tmp_path: Path) -> Path:
    return polled_site(tmp_path)


def test_search_finds_new_entries_and_ranks_title_matches_first(site: Path) -> None:
    assert_index_matches_entries(site.parent / "agg.db")
    rows = search(site, "lighthouse")
    # The title hit ranks above the entry that mentions the lighthouse only in its text.
    assert [r["title"] for r in rows] == [
        "Lighthouse keeper retires after forty years",
        "Spring tides expected this weekend",
    ]
    assert rows[0]["outlet"] == "Harbour Herald" and rows[0]["story_id"]
    assert "[lighthouse]" in str(rows[1]["snippet"]).lower()
    # Diacritics are folded: "élus" is found as "elus".
    assert titles(site, "elus") == ["Le conseil municipal adopte le budget du port"]


def test_raw_user_input_is_safe_and_never_an_fts_syntax_error(site: Path) -> None:
    for raw in (
        "c++",
        '"unbalanced',
        "AND",
        "NEAR(",
        "*",
        "",
        "OR NOT",
        "title:ferry",
        "ferry)",
        "-ferry",
        "^ferry",
        "'; DROP TABLE entries; --",
        "🙂",
    ):
        # "--" ends the options, so a query may start with "-".
        result = run_cli(site, "search", "--", raw)
        assert result.returncode == 0 and result.stderr == b"", raw
    assert titles(site, "c++") == ["Local start-up ships C++ compiler for marine sensors"]
    assert titles(site, '"unbalanced') == []
    assert titles(site, "*") == [] and titles(site, "") == []
    # Operators are words to look for, not syntax: "title:ferry" needs both words.
    assert titles(site, "ferry terminal") and titles(site, "title:ferry") == []
    assert titles(site, "-ferry") == titles(site, "ferry") != []
    with Store.open(site.parent / "agg.db") as store:
        assert store.search("\x00ferry\x00") and store.search("\x00") == []
        assert store.counts()["entries"] == 10


def test_search_limit_caps_the_results(site: Path) -> None:
    assert len(search(site, "--limit", "2", "the")) == 2


def test_fts_follows_an_entry_whose_content_changes_on_repoll(site: Path) -> None:
    herald = site.parent / "feeds" / "harbour.xml"
    old = "hands over the keys to the volunteer trust"
    assert titles(site, "volunteer trust") == ["Lighthouse keeper retires after forty years"]
    herald.write_text(herald.read_text().replace(old, "rings the foghorn one last time"))
    result = run_cli(site, "poll", "--all")
    assert b"1 updated" in result.stdout, result.stdout
    assert titles(site, "foghorn") == ["Lighthouse keeper retires after forty years"]
    assert titles(site, "volunteer trust") == []
    assert_index_matches_entries(site.parent / "agg.db")


def test_fts_follows_deleted_entries_and_deleted_feeds(site: Path) -> None:
    database = site.parent / "agg.db"
    with Store.open(database) as store:
        store.execute("DELETE FROM entries WHERE title LIKE 'Spring tides%'")
    assert titles(site, "lighthouse") == ["Lighthouse keeper retires after forty years"]
    assert_index_matches_entries(database)
    with Store.open(database) as store:
        # Deleting a feed cascades to its entries; the delete trigger fires for each.
        store.execute("DELETE FROM feeds WHERE url LIKE '%gazette.xml'")
    assert titles(site, "budget port") == []
    assert_index_matches_entries(database)


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("c++", '"c"'),
        ('"unbalanced', '"unbalanced"'),
        ("NEAR(a b", '"NEAR" "a" "b"'),
        ("*", None),
        ("", None),
        ("  ", None),
    ],
)
def test_fts_query_quotes_every_word(raw: str, expected: str | None) -> None:
    assert fts_query(raw) == expected


def test_sqlite_utils_finds_the_full_text_index(site: Path) -> None:
    """`sqlite-utils search` (and Datasette's search box) detect the FTS table of entries."""
    import sqlite_utils

    db = sqlite_utils.Database(site.parent / "agg.db")
    try:
        assert db["entries"].detect_fts() == "entries_fts"
        found = list(db["entries"].search("lighthouse", columns=["title"]))
        assert {r["title"] for r in found} == {
            "Lighthouse keeper retires after forty years",
            "Spring tides expected this weekend",
        }
    finally:
        db.close()


def test_search_matches_text_not_the_markup_of_summaries(tmp_path: Path) -> None:
    feed = tmp_path / "links.xml"
    feed.write_text(
        '<?xml version="1.0"?><rss version="2.0"><channel><title>t</title>'
        "<item><guid>1</guid><title>Ferry timetable changes</title><description>"
        '&lt;p&gt;See &lt;a href="https://a.example/t"&gt;the timetable&lt;/a&gt;&lt;/p&gt;'
        "</description></item></channel></rss>",
        encoding="utf-8",
    )
    config = one_feed_config(tmp_path, feed)
    run_cli(config, "poll", "--all")
    with Store.open(tmp_path / "agg.db") as store:
        summary = store.execute("SELECT summary FROM entries").fetchone()[0]
    assert "noopener" in summary  # the sanitised HTML carries it; search must not see it
    for markup in ("noopener", "noreferrer", "href", "https"):
        assert titles(config, markup) == [], markup
    assert titles(config, "timetable") == ["Ferry timetable changes"]
    assert_index_matches_entries(tmp_path / "agg.db")


def test_a_schema_5_database_migrates_to_a_text_only_index(tmp_path: Path) -> None:
    from aggregator import store as store_mod

    db = database_at(tmp_path / "old.db", 5, summary='<a rel="noopener">x</a>')
    with Store.open(db) as store:
        assert store.schema_version == len(store_mod.MIGRATIONS)
        assert [r["title"] for r in store.search("harbour")] == ["Harbour news"]
        assert store.search("noopener") == []
    assert_index_matches_entries(db)
