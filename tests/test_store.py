from __future__ import annotations

import sqlite3
from datetime import UTC, datetime
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from aggregator.errors import StoreError
from aggregator.model import FeedSettings
from aggregator.store import MIGRATIONS, Store, i64_to_u64, u64_to_i64

NOW = datetime(2024, 10, 29, 12, 0, tzinfo=UTC)


def test_migrating_an_empty_database_creates_the_public_schema(tmp_path: Path) -> None:
    with Store.open(tmp_path / "sub" / "agg.db") as store:
        assert store.schema_version == len(MIGRATIONS)
        tables = {r[0] for r in store.execute("SELECT name FROM sqlite_master WHERE type='table'")}
        assert {"feeds", "entries", "stories", "simhash_bands", "story_merges"} <= tables
        assert store.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        cols = {r[1] for r in store.execute("PRAGMA table_info(entries)")}
        assert {
            "id",
            "feed_id",
            "guid",
            "link",
            "title",
            "summary",
            "content",
            "published",
            "story_id",
        } <= cols
    # Opening again migrates nothing and keeps the version.
    with Store.open(tmp_path / "sub" / "agg.db") as store:
        assert store.migrate() == len(MIGRATIONS)


def test_a_newer_schema_is_refused_with_advice(tmp_path: Path) -> None:
    path = tmp_path / "agg.db"
    conn = sqlite3.connect(path)
    conn.execute(f"PRAGMA user_version = {len(MIGRATIONS) + 5}")
    conn.close()
    with pytest.raises(StoreError, match="upgrade the aggregator"):
        Store.open(path)


def test_a_file_that_is_not_a_database_gives_a_clear_error(tmp_path: Path) -> None:
    path = tmp_path / "agg.db"
    path.write_bytes(b"this is not sqlite" * 100)
    with pytest.raises(StoreError) as info:
        Store.open(path)
    assert str(path) in str(info.value)
    assert "not a SQLite database" in str(info.value)


def test_feed_sync_adds_updates_and_deactivates_keeping_entries(tmp_path: Path) -> None:
    with Store.open(tmp_path / "agg.db") as store:
        a = FeedSettings("https://a.example/rss", "A", ("news",))
        b = FeedSettings("https://b.example/rss")
        report = store.sync_feeds([a, b], NOW)
        assert report.added == (a.url, b.url)
        report = store.sync_feeds([FeedSettings(a.url, "A renamed", ("news",))], NOW)
        assert report.updated == (a.url,)
        assert report.deactivated == (b.url,)
        rows = {r["url"]: r for r in store.feed_rows()}
        assert rows[a.url]["title"] == "A renamed"
        assert rows[b.url]["active"] == 0
        assert [f.state.url for f in store.due_feeds(NOW)] == [a.url]
        # Re-adding a removed feed re-activates the same row.
        store.sync_feeds([a, b], NOW)
        assert len(store.feed_rows()) == 2
        assert all(r["active"] for r in store.feed_rows())


@given(st.integers(min_value=0, max_value=(1 << 64) - 1))
def test_u64_round_trips_through_signed_storage(value: int) -> None:
    stored = u64_to_i64(value)
    assert stored is not None and -(1 << 63) <= stored < (1 << 63)
    assert i64_to_u64(stored) == value
