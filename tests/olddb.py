"""A database as an older version of the aggregator left it, for migration tests."""

from __future__ import annotations

import sqlite3
from pathlib import Path

from aggregator import store


def database_at(path: Path, version: int, *, summary: str = "") -> Path:
    """A SQLite file at schema `version` (the first `version` migrations) holding one feed
    and one entry ("Harbour news", guid "g", with `summary`)."""
    conn = sqlite3.connect(path)
    for number, script in enumerate(store.MIGRATIONS[:version], 1):
        for statement in store._statements(script):
            conn.execute(statement)
        conn.execute(f"PRAGMA user_version = {number}")
    conn.execute(
        "INSERT INTO feeds (url, config_url, tags, active, created_at, updated_at)"
        " VALUES ('https://a.example/f', 'https://a.example/f', '[]', 1, 'x', 'x')"
    )
    conn.execute(
        "INSERT INTO entries (feed_id, guid, title, summary, text, published, first_seen,"
        " content_hash) VALUES (1, 'g', 'Harbour news', ?, 'Harbour news x',"
        " '2026-01-01T00:00:00Z', '2026-01-01T00:00:00Z', 'h')",
        (summary,),
    )
    conn.commit()
    conn.close()
    return path
