"""The SQLite store: schema and migrations, queries, transactions, u64↔i64 at the boundary.

One writer (the poller or daemon), many readers (CLI, sqlite3, Datasette): WAL mode, a busy
timeout, and one short BEGIN IMMEDIATE transaction per feed outcome. A poll cycle and the
daemon's pruning also hold `WriterLock` (an advisory lock file beside the database), so a
`poll` run by hand beside the daemon, or two overlapping cron runs, take turns instead of
working from each other's stale view of the stories.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import os
import re
import sqlite3
from collections.abc import Generator, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import sqlite_utils

from .errors import StoreError, WriterBusy
from .model import (
    Assignment,
    Enclosure,
    Entry,
    FeedSettings,
    FeedState,
    Fingerprint,
    base_domain,
    outlet_host,
    representative_key,
    simhash_bands,
)

BUSY_TIMEOUT_MS = 10_000
U64 = 1 << 64
_IN_CHUNK = 500  # values per `IN (...)` list: well under SQLite's variable limit
# What clustering reads of a stored entry: never the (large) summary, content and text, not
# even their length (length() reads a whole text value, overflow pages and all).
_DOC_COLUMNS = (
    "e.id, e.feed_id, e.link, e.title, e.published, e.first_seen, e.content_hash,"
    " e.simhash, e.terms, e.language, e.story_id, e.match_rule, f.url AS feed_url"
)


def to_db_time(dt: datetime | None) -> str | None:
    """ISO-8601 UTC text with a Z, second precision: sorts as text, reads as time."""
    if dt is None:
        return None
    return dt.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def from_db_time(text: str | None) -> datetime | None:
    if not text:
        return None
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


def u64_to_i64(value: int | None) -> int | None:
    """Simhashes are unsigned 64-bit; SQLite integers are signed."""
    if value is None:
        return None
    return value - U64 if value >= 1 << 63 else value


def i64_to_u64(value: int | None) -> int | None:
    if value is None:
        return None
    return value + U64 if value < 0 else value


# Each migration runs in one transaction together with the user_version bump.
MIGRATIONS: list[str] = [
    # 1: feeds, entries, stories, near-duplicate bands, story merges
    """
    CREATE TABLE feeds (
        id INTEGER PRIMARY KEY,
        url TEXT NOT NULL UNIQUE,
        config_url TEXT NOT NULL UNIQUE,
        title TEXT,
        feed_title TEXT,
        site_url TEXT,
        language TEXT,
        tags TEXT NOT NULL DEFAULT '[]',
        interval INTEGER,
        active INTEGER NOT NULL DEFAULT 1,
        etag TEXT,
        last_modified TEXT,
        body_hash TEXT,
        ttl INTEGER,
        last_status INTEGER,
        last_fetched_at TEXT,
        last_success_at TEXT,
        next_poll_at TEXT,
        error_count INTEGER NOT NULL DEFAULT 0,
        error_kind TEXT,
        error_message TEXT,
        last_error_at TEXT,
        parse_problem TEXT,
        retired_at TEXT,
        created_at TEXT NOT NULL,
        updated_at TEXT NOT NULL
    );
    CREATE TABLE stories (
        id INTEGER PRIMARY KEY,
        title TEXT NOT NULL,
        representative_id INTEGER REFERENCES entries(id) ON DELETE SET NULL,
        first_seen TEXT NOT NULL,
        last_seen TEXT NOT NULL,
        updated_at TEXT NOT NULL,
        member_count INTEGER NOT NULL DEFAULT 0,
        feed_count INTEGER NOT NULL DEFAULT 0,
        host_count INTEGER NOT NULL DEFAULT 0
    );
    CREATE TABLE entries (
        id INTEGER PRIMARY KEY,
        feed_id INTEGER NOT NULL REFERENCES feeds(id) ON DELETE CASCADE,
        guid TEXT NOT NULL,
        link TEXT,
        title TEXT NOT NULL,
        summary TEXT NOT NULL DEFAULT '',
        content TEXT NOT NULL DEFAULT '',
        text TEXT NOT NULL DEFAULT '',
        author TEXT,
        language TEXT,
        categories TEXT NOT NULL DEFAULT '[]',
        published TEXT NOT NULL,
        updated TEXT,
        first_seen TEXT NOT NULL,
        last_changed_at TEXT,
        change_count INTEGER NOT NULL DEFAULT 0,
        content_hash TEXT NOT NULL,
        simhash INTEGER,
        terms TEXT NOT NULL DEFAULT '',
        story_id INTEGER REFERENCES stories(id),
        match_rule TEXT,
        match_distance INTEGER,
        match_score REAL,
        matched_entry_id INTEGER REFERENCES entries(id) ON DELETE SET NULL,
        UNIQUE (feed_id, guid)
    );
    CREATE INDEX entries_story ON entries(story_id);
    CREATE INDEX entries_link ON entries(link);
    CREATE INDEX entries_content_hash ON entries(content_hash);
    CREATE INDEX entries_published ON entries(published);
    CREATE INDEX stories_last_seen ON stories(last_seen);
    CREATE TABLE simhash_bands (
        band INTEGER NOT NULL,
        value INTEGER NOT NULL,
        entry_id INTEGER NOT NULL REFERENCES entries(id) ON DELETE CASCADE,
        PRIMARY KEY (band, value, entry_id)
    ) WITHOUT ROWID;
    CREATE INDEX simhash_bands_entry ON simhash_bands(entry_id);
    CREATE TABLE story_merges (
        id INTEGER PRIMARY KEY,
        from_story_id INTEGER NOT NULL,
        into_story_id INTEGER NOT NULL REFERENCES stories(id) ON DELETE CASCADE,
        entry_id INTEGER REFERENCES entries(id) ON DELETE SET NULL,
        reason TEXT,
        merged_at TEXT NOT NULL
    );
    """,
    # 2: full-text search kept in sync by triggers, and views for the common questions
    """
    -- content="entries" in double quotes: sqlite-utils and Datasette find the index by that
    -- spelling (their search box and `sqlite-utils search` need it).
    CREATE VIRTUAL TABLE entries_fts USING fts5(
        title, summary, text, content="entries", content_rowid='id',
        tokenize='unicode61 remove_diacritics 2'
    );
    INSERT INTO entries_fts (rowid, title, summary, text) SELECT id, title, summary, text FROM entries;
    CREATE TRIGGER entries_fts_insert AFTER INSERT ON entries BEGIN
        INSERT INTO entries_fts (rowid, title, summary, text)
        VALUES (new.id, new.title, new.summary, new.text);
    END;
    CREATE TRIGGER entries_fts_delete AFTER DELETE ON entries BEGIN
        INSERT INTO entries_fts (entries_fts, rowid, title, summary, text)
        VALUES ('delete', old.id, old.title, old.summary, old.text);
    END;
    CREATE TRIGGER entries_fts_update AFTER UPDATE OF title, summary, text ON entries BEGIN
        INSERT INTO entries_fts (entries_fts, rowid, title, summary, text)
        VALUES ('delete', old.id, old.title, old.summary, old.text);
        INSERT INTO entries_fts (rowid, title, summary, text)
        VALUES (new.id, new.title, new.summary, new.text);
    END;
    CREATE VIEW story_overview AS
    SELECT s.id AS story_id, s.title, rep.link AS link, s.first_seen, s.last_seen,
           s.member_count, s.feed_count,
           (SELECT group_concat(name, ' | ') FROM (
                SELECT DISTINCT COALESCE(f.title, f.feed_title, f.url) AS name
                FROM entries e JOIN feeds f ON f.id = e.feed_id
                WHERE e.story_id = s.id ORDER BY name)) AS outlets
    FROM stories s LEFT JOIN entries rep ON rep.id = s.representative_id;
    CREATE VIEW feed_health AS
    SELECT f.id AS feed_id, COALESCE(f.title, f.feed_title) AS title, f.url, f.active,
           CASE WHEN NOT f.active THEN 'inactive' WHEN f.retired_at IS NOT NULL THEN 'retired'
                WHEN f.error_count > 0 THEN 'failing' ELSE 'ok' END AS state,
           f.last_success_at, f.next_poll_at, f.error_count, f.error_kind, f.error_message,
           f.last_status, (SELECT count(*) FROM entries e WHERE e.feed_id = f.id) AS entries
    FROM feeds f;
    CREATE VIEW story_sources AS
    SELECT e.story_id, e.id AS entry_id, COALESCE(f.title, f.feed_title, f.url) AS outlet,
           e.title, e.link, e.published, e.match_rule, e.match_distance, e.match_score,
           e.matched_entry_id
    FROM entries e JOIN feeds f ON f.id = e.feed_id;
    """,
    # 3: small key/value state that must survive a crash (a pending story merge pass)
    """
    CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT) WITHOUT ROWID;
    """,
    # 4: hard holds that even a manual poll respects (Retry-After, backoff, publisher hints)
    """
    ALTER TABLE feeds ADD COLUMN hold_until TEXT;
    ALTER TABLE feeds ADD COLUMN retry_after_until TEXT;
    """,
    # 5: a feed that has never been polled is "never polled", not "ok"
    """
    DROP VIEW feed_health;
    CREATE VIEW feed_health AS
    SELECT f.id AS feed_id, COALESCE(f.title, f.feed_title) AS title, f.url, f.active,
           CASE WHEN NOT f.active THEN 'inactive' WHEN f.retired_at IS NOT NULL THEN 'retired'
                WHEN f.error_count > 0 THEN 'failing'
                WHEN f.last_success_at IS NULL THEN 'never polled' ELSE 'ok' END AS state,
           f.last_success_at, f.next_poll_at, f.error_count, f.error_kind, f.error_message,
           f.last_status, (SELECT count(*) FROM entries e WHERE e.feed_id = f.id) AS entries
    FROM feeds f;
    """,
    # 6: full-text search indexes text, not markup: the summary's HTML (every link's
    # rel="noopener noreferrer") made `search noopener` match every entry with a link. `text`
    # already holds the summary's and the content's plain text.
    """
    DROP TRIGGER entries_fts_insert;
    DROP TRIGGER entries_fts_delete;
    DROP TRIGGER entries_fts_update;
    DROP TABLE entries_fts;
    CREATE VIRTUAL TABLE entries_fts USING fts5(
        title, text, content="entries", content_rowid='id',
        tokenize='unicode61 remove_diacritics 2'
    );
    INSERT INTO entries_fts (entries_fts) VALUES ('rebuild');
    CREATE TRIGGER entries_fts_insert AFTER INSERT ON entries BEGIN
        INSERT INTO entries_fts (rowid, title, text) VALUES (new.id, new.title, new.text);
    END;
    CREATE TRIGGER entries_fts_delete AFTER DELETE ON entries BEGIN
        INSERT INTO entries_fts (entries_fts, rowid, title, text)
        VALUES ('delete', old.id, old.title, old.text);
    END;
    CREATE TRIGGER entries_fts_update AFTER UPDATE OF title, text ON entries BEGIN
        INSERT INTO entries_fts (entries_fts, rowid, title, text)
        VALUES ('delete', old.id, old.title, old.text);
        INSERT INTO entries_fts (rowid, title, text) VALUES (new.id, new.title, new.text);
    END;
    """,
    # 7: how many headlines of each day carry each story term (term '' counts the day's
    # headlines): the story tier tells a name bursting today ("Ballon d'Or") from one that is
    # in the news every day ("Ukraine"). Entries stored before this migration are counted by
    # the next poll cycle (`headline_backfill`), up to the id noted here.
    """
    CREATE TABLE headline_terms (
        day TEXT NOT NULL,
        term TEXT NOT NULL,
        entries INTEGER NOT NULL,
        PRIMARY KEY (day, term)
    ) WITHOUT ROWID;
    INSERT INTO meta (key, value)
    SELECT 'headline_backfill_until', max(id) FROM entries HAVING max(id) IS NOT NULL;
    """,
    # 8: media: each entry's lead image, and the files it carries (podcast episodes, videos),
    # in feed order. Entries stored before keep none until they change.
    """
    ALTER TABLE entries ADD COLUMN image TEXT;
    CREATE TABLE enclosures (
        entry_id INTEGER NOT NULL REFERENCES entries(id) ON DELETE CASCADE,
        position INTEGER NOT NULL,
        url TEXT NOT NULL,
        media_type TEXT,
        length INTEGER,
        PRIMARY KEY (entry_id, position)
    ) WITHOUT ROWID;
    """,
]


@dataclass(frozen=True, slots=True)
class SyncReport:
    added: tuple[str, ...]
    updated: tuple[str, ...]
    deactivated: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class DueFeed:
    """A feed to poll now, with what the fetcher and scheduler need."""

    state: FeedState
    interval: int | None
    ttl: int | None
    config_url: str = ""  # the URL the config names it by (its `[[feeds]]` options' key)


@dataclass(frozen=True, slots=True)
class UpsertResult:
    entry_id: int
    status: str  # "new", "updated", "unchanged"
    story_id: int | None


def database_counts(database: Path) -> dict[str, Any]:
    """What a database holds, read through a read-only connection of the caller's own (for a
    metrics scrape in another thread): feeds by state, entries, stories, bytes on disk."""
    try:
        conn = sqlite3.connect(f"file:{database}?mode=ro", uri=True, timeout=1.0)
    except sqlite3.Error as exc:
        raise OSError(f"{database}: {exc}") from exc
    try:
        feeds = dict(conn.execute("SELECT state, count(*) FROM feed_health GROUP BY state"))
        entries = conn.execute("SELECT count(*) FROM entries").fetchone()[0]
        stories = conn.execute("SELECT count(*) FROM stories").fetchone()[0]
    except sqlite3.Error as exc:
        raise OSError(f"{database}: {exc}") from exc
    finally:
        conn.close()
    size = sum(p.stat().st_size for p in (database, Path(f"{database}-wal")) if p.exists())
    return {"feeds": feeds, "entries": int(entries), "stories": int(stories), "bytes": size}


class DaemonPid:
    """`<database>.pid`: the running daemon's pid, under a `flock` the daemon holds for its
    whole run. A reader believes the pid only while the lock is held, so a daemon killed with
    -9 (whose lock the kernel dropped) or a pid reused since is never signalled."""

    def __init__(self, database: Path) -> None:
        self.path = Path(str(database) + ".pid")
        self._fd: int | None = None

    def claim(self) -> bool:
        """Record this process as the database's daemon; False (recording nothing) when a
        daemon already runs on it, or the file cannot be written."""
        try:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        except OSError:
            return False
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            os.ftruncate(fd, 0)
            os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        except OSError:
            os.close(fd)
            return False
        self._fd = fd
        return True

    def release(self) -> None:
        if self._fd is not None:
            fd, self._fd = self._fd, None
            with contextlib.suppress(OSError):
                self.path.unlink()
            os.close(fd)

    def running(self) -> int | None:
        """The pid of the daemon running on this database, or None when none is."""
        try:
            fd = os.open(self.path, os.O_RDONLY | os.O_CLOEXEC)
        except OSError:
            return None
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
            except OSError as exc:
                if exc.errno not in (errno.EAGAIN, errno.EACCES):
                    return None
                text = os.pread(fd, 32, 0).decode("ascii", "replace").strip()
                return int(text) if text.isascii() and text.isdigit() else None
            return None  # lockable: nobody holds it, the file is left over
        finally:
            os.close(fd)


class WriterLock:
    """The one-writer-at-a-time lock of a database: `flock` on `<database>.lock`, which names
    its holder ("daemon 1234") while held. The kernel drops it when the holder exits, kill -9
    included, so a crash never leaves a stale lock behind."""

    def __init__(self, database: Path, role: str) -> None:
        self.path = Path(str(database) + ".lock")
        self.role = role
        self._fd: int | None = None

    def _open(self) -> int:
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            return os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        except OSError as exc:
            raise StoreError(
                f"{self.path}: cannot open the writer lock file: {exc.strerror or exc}"
            ) from exc

    def holder(self) -> str:
        """Who holds the lock, in words: "the daemon (pid 1234)", "another poll (pid 99)"."""
        try:
            text = self.path.read_text(encoding="utf-8", errors="replace").split()
        except OSError:
            text = []
        if len(text) == 2 and text[1].isascii() and text[1].isdigit():
            who = "the daemon" if text[0] == "daemon" else f"another {text[0]}"
            return f"{who} (pid {text[1]})"
        return "another process"

    def try_acquire(self) -> bool:
        """Take the lock if it is free; False (holding nothing) when another process has it."""
        return self._fd is not None or self._lock(blocking=False)

    def acquire(self, *, wait: bool, on_wait: Any = None) -> None:
        """Take the lock; when another process holds it, wait for it (calling `on_wait` with
        the holder's description first) or, with `wait=False`, raise `WriterBusy`."""
        if self.try_acquire():
            return
        holder = self.holder()
        if not wait:
            raise WriterBusy(
                f"{holder} is polling {self.path.with_suffix('')}; "
                "not waiting (--no-wait): try again when it has finished"
            )
        if on_wait is not None:
            on_wait(f"{holder} is polling this database; waiting")
        self._lock(blocking=True)

    def _lock(self, *, blocking: bool) -> bool:
        """flock the lock file (waiting for it when `blocking`) and write the holder's name;
        False when it is held elsewhere and not `blocking`."""
        fd = self._open()
        try:
            fcntl.flock(fd, fcntl.LOCK_EX if blocking else fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BaseException as exc:
            os.close(fd)
            if isinstance(exc, OSError) and exc.errno in (errno.EAGAIN, errno.EACCES):
                return False  # held elsewhere (EWOULDBLOCK is EAGAIN on Linux)
            if isinstance(exc, OSError):
                raise StoreError(f"{self.path}: cannot lock: {exc.strerror or exc}") from exc
            raise
        self._fd = fd
        try:
            os.ftruncate(fd, 0)
            os.pwrite(fd, f"{self.role} {os.getpid()}\n".encode(), 0)
        except OSError:
            pass  # the name is a courtesy for whoever waits; the lock itself is held
        return True

    def release(self) -> None:
        if self._fd is not None:
            fd, self._fd = self._fd, None
            os.close(fd)  # closing the descriptor drops the flock

    def __enter__(self) -> WriterLock:
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()


class Store:
    """The aggregator's database. Use `Store.open(path)`; close with `close()` or `with`."""

    def __init__(self, conn: sqlite3.Connection, path: Path) -> None:
        self.conn = conn
        self.path = path
        self.db = sqlite_utils.Database(conn)
        self._in_tx = False

    # -- opening and migrating -------------------------------------------------------------

    @classmethod
    def open(cls, path: Path, *, readonly: bool = False) -> Store:
        """Open (creating when missing) and migrate the database at `path`."""
        path = Path(path)
        if not readonly and _read_only_place(path):
            raise StoreError(
                f"{path}: the database file or its folder is read-only (a read-only file system "
                "or missing write permission); make it writable or use another [storage] database "
                "path — the poller needs to write there"
            )
        try:
            if readonly:
                uri = path.resolve().as_uri() + "?mode=ro"
                conn = sqlite3.connect(uri, uri=True, isolation_level=None, check_same_thread=False)
            else:
                path.parent.mkdir(parents=True, exist_ok=True)
                conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
            conn.row_factory = sqlite3.Row
            conn.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
            conn.execute("PRAGMA foreign_keys = ON")
            if not readonly:
                mode = conn.execute("PRAGMA journal_mode = WAL").fetchone()[0]
                if mode.lower() != "wal":
                    raise StoreError(f"{path}: cannot switch the database to WAL mode (got {mode})")
                conn.execute("PRAGMA synchronous = NORMAL")
        except sqlite3.Error as exc:
            raise _store_error(path, exc) from exc
        except OSError as exc:
            raise StoreError(f"{path}: cannot create the database folder: {exc}") from exc
        store = cls(conn, path)
        if not readonly:
            store.migrate()
        return store

    def close(self) -> None:
        """Close the connection. A passive checkpoint first (it never blocks readers) leaves
        the closing checkpoint, which briefly locks out readers, with nothing to copy."""
        if not self.conn.in_transaction:
            try:
                self.conn.execute("PRAGMA wal_checkpoint(PASSIVE)")
            except sqlite3.Error:
                pass  # closing must not fail; SQLite checkpoints on close anyway
        self.conn.close()

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def schema_version(self) -> int:
        return int(self.conn.execute("PRAGMA user_version").fetchone()[0])

    def migrate(self) -> int:
        """Run every pending migration, each in its own transaction. Returns the new version."""
        version = self.schema_version
        if version > len(MIGRATIONS):
            raise StoreError(
                f"{self.path}: the database schema (version {version}) is newer than this "
                f"aggregator knows ({len(MIGRATIONS)}); upgrade the aggregator"
            )
        for number in range(version + 1, len(MIGRATIONS) + 1):
            try:
                self.conn.execute("BEGIN IMMEDIATE")
                for statement in _statements(MIGRATIONS[number - 1]):
                    self.conn.execute(statement)
                self.conn.execute(f"PRAGMA user_version = {number}")
                self.conn.execute("COMMIT")
            except sqlite3.Error as exc:
                if self.conn.in_transaction:
                    self.conn.execute("ROLLBACK")
                raise _store_error(self.path, exc, f"migration {number} failed") from exc
        return self.schema_version

    @contextmanager
    def transaction(self) -> Iterator[None]:
        """One short write transaction (BEGIN IMMEDIATE); nested calls join the outer one."""
        if self._in_tx:
            yield
            return
        try:
            self.conn.execute("BEGIN IMMEDIATE")
        except sqlite3.Error as exc:
            raise _store_error(self.path, exc) from exc
        self._in_tx = True
        try:
            yield
        except BaseException:
            self._in_tx = False
            if self.conn.in_transaction:
                self.conn.execute("ROLLBACK")
            raise
        self._in_tx = False
        try:
            self.conn.execute("COMMIT")
        except sqlite3.Error as exc:
            if self.conn.in_transaction:
                self.conn.execute("ROLLBACK")
            raise _store_error(self.path, exc) from exc

    def execute(self, sql: str, params: Sequence[Any] | dict[str, Any] = ()) -> sqlite3.Cursor:
        try:
            return self.conn.execute(sql, params)
        except sqlite3.Error as exc:
            raise _store_error(self.path, exc) from exc

    # -- feeds -----------------------------------------------------------------------------

    def sync_feeds(self, feeds: Sequence[FeedSettings], now: datetime) -> SyncReport:
        """Make the feeds table match the config: add new, update changed, deactivate removed."""
        ts = to_db_time(now)
        added: list[str] = []
        updated: list[str] = []
        deactivated: list[str] = []
        with self.transaction():
            rows = {r["config_url"]: r for r in self.execute("SELECT * FROM feeds")}
            by_url = {r["url"]: r for r in rows.values()}
            wanted = set()
            for feed in feeds:
                tags = json.dumps(list(feed.tags), ensure_ascii=False)
                row = rows.get(feed.url) or by_url.get(feed.url)
                if row is None:
                    self.execute(
                        "INSERT INTO feeds (url, config_url, title, tags, interval, active,"
                        " created_at, updated_at) VALUES (?, ?, ?, ?, ?, 1, ?, ?)",
                        (feed.url, feed.url, feed.title, tags, feed.interval, ts, ts),
                    )
                    added.append(feed.url)
                    wanted.add(feed.url)
                    continue
                wanted.add(row["config_url"])
                changed = (row["title"], row["tags"], row["interval"], row["active"]) != (
                    feed.title,
                    tags,
                    feed.interval,
                    1,
                )
                if changed:
                    # A changed config entry also un-retires a feed (410) and clears backoff.
                    self.execute(
                        "UPDATE feeds SET title = ?, tags = ?, interval = ?, active = 1,"
                        " retired_at = NULL, next_poll_at = NULL, hold_until = NULL,"
                        " updated_at = ? WHERE id = ?",
                        (feed.title, tags, feed.interval, ts, row["id"]),
                    )
                    updated.append(feed.url)
            for config_url, row in rows.items():
                if config_url not in wanted and row["active"]:
                    self.execute(
                        "UPDATE feeds SET active = 0, updated_at = ? WHERE id = ?", (ts, row["id"])
                    )
                    deactivated.append(config_url)
        return SyncReport(tuple(added), tuple(updated), tuple(deactivated))

    def due_feeds(
        self, now: datetime, *, all_feeds: bool = False, mode: str = "scheduled"
    ) -> list[DueFeed]:
        """Active, non-retired feeds to poll now.

        mode "scheduled" (the daemon): next_poll_at has come. "manual" (`aggregator poll`):
        not held back by a Retry-After, error backoff or the publisher's caching hints.
        "all" (`poll --all`, or all_feeds=True): everything except a binding Retry-After.
        """
        if all_feeds:
            mode = "all"
        column = {"scheduled": "next_poll_at", "manual": "hold_until", "all": "retry_after_until"}[
            mode
        ]
        sql = (
            f"SELECT * FROM feeds WHERE active = 1 AND retired_at IS NULL"
            f" AND ({column} IS NULL OR {column} <= ?)"
            " ORDER BY next_poll_at IS NOT NULL, next_poll_at, id"
        )
        return [_due_feed(r) for r in self.execute(sql, (to_db_time(now),))]

    def set_holds(
        self, feed_id: int, *, hold_until: datetime | None, retry_after_until: datetime | None
    ) -> None:
        self.execute(
            "UPDATE feeds SET hold_until = ?, retry_after_until = ? WHERE id = ?",
            (to_db_time(hold_until), to_db_time(retry_after_until), feed_id),
        )

    def feed_rows(self) -> list[sqlite3.Row]:
        """Every feed row, with its one-word `state` from the feed_health view (the one home
        of ok / never polled / failing / retired / inactive)."""
        return list(
            self.execute(
                "SELECT f.*, h.state FROM feeds f JOIN feed_health h ON h.feed_id = f.id"
                " ORDER BY f.active DESC, f.id"
            )
        )

    def reset_feed(self, url: str) -> bool:
        """Clear errors, retirement, backoff and the cache validators (ETag, Last-Modified,
        body hash) so the feed is fetched and parsed afresh at the next cycle."""
        with self.transaction():
            cur = self.execute(
                "UPDATE feeds SET retired_at = NULL, error_count = 0, error_kind = NULL,"
                " error_message = NULL, next_poll_at = NULL, hold_until = NULL,"
                " retry_after_until = NULL, etag = NULL, last_modified = NULL,"
                " body_hash = NULL WHERE url = ? OR config_url = ?",
                (url, url),
            )
        return cur.rowcount > 0

    def record_fetch_success(
        self,
        feed_id: int,
        *,
        now: datetime,
        status: int | None,
        url: str | None,
        etag: str | None,
        last_modified: str | None,
        body_hash: str | None,
        next_poll_at: datetime,
        feed_title: str | None = None,
        site_url: str | None = None,
        language: str | None = None,
        ttl: int | None = None,
        parse_problem: str | None = None,
    ) -> None:
        ts = to_db_time(now)
        self.execute(
            "UPDATE feeds SET last_status = ?, etag = ?, last_modified = ?, body_hash = ?,"
            " last_fetched_at = ?, last_success_at = ?, next_poll_at = ?, error_count = 0,"
            " error_kind = NULL, error_message = NULL,"
            " feed_title = COALESCE(?, feed_title), site_url = COALESCE(?, site_url),"
            " language = COALESCE(?, language), ttl = COALESCE(?, ttl), parse_problem = ?,"
            " updated_at = ? WHERE id = ?",
            (
                status,
                etag,
                last_modified,
                body_hash,
                ts,
                ts,
                to_db_time(next_poll_at),
                feed_title,
                site_url,
                language,
                ttl,
                parse_problem,
                ts,
                feed_id,
            ),
        )
        if url:
            self.move_feed(feed_id, url)

    def record_not_modified(
        self,
        feed_id: int,
        *,
        now: datetime,
        status: int | None,
        next_poll_at: datetime,
        etag: str | None = None,
        last_modified: str | None = None,
    ) -> None:
        ts = to_db_time(now)
        self.execute(
            "UPDATE feeds SET last_status = ?, last_fetched_at = ?, last_success_at = ?,"
            " next_poll_at = ?, error_count = 0, error_kind = NULL, error_message = NULL,"
            " etag = COALESCE(?, etag), last_modified = COALESCE(?, last_modified),"
            " updated_at = ? WHERE id = ?",
            (status, ts, ts, to_db_time(next_poll_at), etag, last_modified, ts, feed_id),
        )

    def record_fetch_failure(
        self,
        feed_id: int,
        *,
        now: datetime,
        kind: str,
        message: str,
        status: int | None,
        next_poll_at: datetime,
        retire: bool = False,
    ) -> None:
        ts = to_db_time(now)
        self.execute(
            "UPDATE feeds SET last_status = ?, last_fetched_at = ?, last_error_at = ?,"
            " next_poll_at = ?, error_count = error_count + 1, error_kind = ?, error_message = ?,"
            " retired_at = CASE WHEN ? THEN ? ELSE retired_at END, updated_at = ? WHERE id = ?",
            (
                status,
                ts,
                ts,
                to_db_time(next_poll_at),
                kind,
                message[:2000],
                retire,
                ts,
                ts,
                feed_id,
            ),
        )

    def move_feed(self, feed_id: int, new_url: str) -> None:
        """Follow a permanent redirect; the configured URL stays as the alias."""
        clash = self.execute(
            "SELECT id FROM feeds WHERE url = ? AND id != ?", (new_url, feed_id)
        ).fetchone()
        if clash is None:
            self.execute("UPDATE feeds SET url = ? WHERE id = ?", (new_url, feed_id))

    def recent_published(self, feed_id: int, limit: int = 20) -> list[datetime]:
        rows = self.execute(
            "SELECT published FROM entries WHERE feed_id = ? ORDER BY published DESC LIMIT ?",
            (feed_id, limit),
        )
        return [d for r in rows if (d := from_db_time(r[0])) is not None]

    # -- entries ---------------------------------------------------------------------------

    def upsert_entry(
        self,
        feed_id: int,
        entry: Entry,
        fp: Fingerprint,
        now: datetime,
        *,
        max_changes: int = 5,
        settle_seconds: int = 86400,
    ) -> UpsertResult:
        """Insert a new entry (without a story) or update a changed one in place.

        The poller uses `existing_entries` + `insert_entries` (a feed's new entries in one go,
        with their stories); this one-entry form is for tools and tests.
        """
        row = self.existing_entries(feed_id, [entry.guid]).get(entry.guid)
        if row is None:
            entry_id = self.next_entry_id()
            self.insert_entries(feed_id, [(entry_id, entry, fp, None)], now)
            return UpsertResult(entry_id, "new", None)
        return self.update_entry(
            row, entry, fp, now, max_changes=max_changes, settle_seconds=settle_seconds
        )

    def existing_entries(self, feed_id: int, guids: Sequence[str]) -> dict[str, sqlite3.Row]:
        """The stored entries of one feed among `guids`, by guid (what `update_entry` needs)."""
        found: dict[str, sqlite3.Row] = {}
        unique = list(dict.fromkeys(guids))
        for start in range(0, len(unique), _IN_CHUNK):
            chunk = unique[start : start + _IN_CHUNK]
            marks = ", ".join("?" * len(chunk))
            for row in self.execute(
                "SELECT id, guid, title, content_hash, story_id, change_count, last_changed_at"
                f" FROM entries WHERE feed_id = ? AND guid IN ({marks})",
                (feed_id, *chunk),
            ):
                found[row["guid"]] = row
        return found

    def next_entry_id(self) -> int:
        """The id the next inserted entry gets (inside the writer's transaction)."""
        row = self.execute("SELECT COALESCE(MAX(id), 0) FROM entries").fetchone()
        return int(row[0]) + 1

    def insert_entries(
        self,
        feed_id: int,
        items: Sequence[tuple[int, Entry, Fingerprint, Assignment | None]],
        now: datetime,
    ) -> None:
        """Insert new entries of one feed with the ids given (ascending, from `next_entry_id`)
        and, when known, their story and evidence: one statement for the rows, one for the
        simhash bands. A story an entry names must exist (see `create_story`); an entry it
        matched must be stored or come earlier in `items`."""
        ts = to_db_time(now)
        rows = []
        bands: list[tuple[int, int, int]] = []
        enclosures: list[tuple[int, int, str, str | None, int | None]] = []
        for entry_id, entry, fp, a in items:
            rows.append(
                (
                    entry_id,
                    feed_id,
                    entry.guid,
                    ts,
                    *_entry_values(entry, fp),
                    *(
                        (a.story_id, a.rule, a.distance, a.score, a.matched_entry_id)
                        if a is not None
                        else (None, None, None, None, None)
                    ),
                )
            )
            bands += _band_rows(entry_id, fp.simhash)
            enclosures += _enclosure_rows(entry_id, entry)
        columns = ", ".join(_ENTRY_COLUMNS)
        marks = ", ".join("?" * (len(_ENTRY_COLUMNS) + 9))
        try:
            self.conn.executemany(
                f"INSERT INTO entries (id, feed_id, guid, first_seen, {columns}, story_id,"
                " match_rule, match_distance, match_score, matched_entry_id)"
                f" VALUES ({marks})",
                rows,
            )
            self.conn.executemany(_INSERT_BANDS, bands)
            self.conn.executemany(_INSERT_ENCLOSURES, enclosures)
        except sqlite3.Error as exc:
            raise _store_error(self.path, exc) from exc

    # -- headline terms by day ------------------------------------------------------------

    def count_headlines(self, items: Iterable[tuple[datetime, Iterable[str]]]) -> None:
        """Add headlines (publication time, story terms of the headline) to the day counts,
        inside the caller's transaction; each headline also counts once under term ''."""
        counts: dict[tuple[str, str], int] = {}
        for published, terms in items:
            day = published.astimezone(UTC).date().isoformat()
            for term in {"", *terms}:
                counts[day, term] = counts.get((day, term), 0) + 1
        try:
            self.conn.executemany(
                "INSERT INTO headline_terms (day, term, entries) VALUES (?, ?, ?)"
                " ON CONFLICT (day, term) DO UPDATE SET entries = entries + excluded.entries",
                [(d, t, n) for (d, t), n in sorted(counts.items())],
            )
        except sqlite3.Error as exc:
            raise _store_error(self.path, exc) from exc

    def headline_counts(
        self, terms: Iterable[str], first_day: str, last_day: str
    ) -> dict[tuple[str, str], int]:
        """(day, term) -> headlines, for these terms (and '') on days first_day..last_day."""
        wanted = sorted({"", *terms})
        found: dict[tuple[str, str], int] = {}
        for i in range(0, len(wanted), 500):
            chunk = wanted[i : i + 500]
            marks = ", ".join("?" * len(chunk))
            for day, term, n in self.execute(
                f"SELECT day, term, entries FROM headline_terms WHERE term IN ({marks})"
                " AND day BETWEEN ? AND ?",
                (*chunk, first_day, last_day),
            ):
                found[day, term] = int(n)
        return found

    def story_spans(self, story_ids: Iterable[int]) -> dict[int, tuple[datetime, datetime]]:
        """First and last publication of each story over all its stored members."""
        ids = sorted(set(story_ids))
        spans: dict[int, tuple[datetime, datetime]] = {}
        for i in range(0, len(ids), 500):
            chunk = ids[i : i + 500]
            marks = ", ".join("?" * len(chunk))
            for sid, lo, hi in self.execute(
                "SELECT story_id, min(published), max(published) FROM entries"
                f" WHERE story_id IN ({marks}) GROUP BY story_id",
                chunk,
            ):
                first, last = from_db_time(lo), from_db_time(hi)
                if first is not None and last is not None:
                    spans[int(sid)] = (first, last)
        return spans

    def headline_backfill(self) -> tuple[int, int] | None:
        """(entry ids counted so far, last id to count) while entries stored before migration 7
        are still to be counted, else None."""
        rows = dict(
            self.execute(
                "SELECT key, value FROM meta WHERE key IN"
                " ('headline_backfill_done', 'headline_backfill_until')"
            ).fetchall()
        )
        if "headline_backfill_until" not in rows:
            return None
        return int(rows.get("headline_backfill_done") or 0), int(rows["headline_backfill_until"])

    def backfill_rows(self, after: int, until: int, limit: int) -> list[sqlite3.Row]:
        """Entries after..until (ids) to count: id, title, terms, language, published."""
        return list(
            self.execute(
                "SELECT id, title, terms, language, published FROM entries WHERE id > ? AND id <= ?"
                " ORDER BY id LIMIT ?",
                (after, until, limit),
            )
        )

    def note_backfill(self, done: int, until: int) -> None:
        """Record (in the caller's transaction) that entry ids up to `done` are counted."""
        if done >= until:
            self.execute(
                "DELETE FROM meta WHERE key IN"
                " ('headline_backfill_done', 'headline_backfill_until')"
            )
        else:
            self.execute(
                "INSERT INTO meta (key, value) VALUES ('headline_backfill_done', ?)"
                " ON CONFLICT (key) DO UPDATE SET value = excluded.value",
                (str(done),),
            )

    def update_entry(
        self,
        row: sqlite3.Row,
        entry: Entry,
        fp: Fingerprint,
        now: datetime,
        *,
        max_changes: int = 5,
        settle_seconds: int = 86400,
    ) -> UpsertResult:
        """Update a stored entry (`row` from `existing_entries`) in place if its content changed.

        An entry whose content changes on every poll (a timestamp in the body) is updated at
        most `max_changes` times quickly; after that at most once per `settle_seconds`.
        """
        if row["content_hash"] == entry.content_hash:
            return UpsertResult(row["id"], "unchanged", row["story_id"])
        last = from_db_time(row["last_changed_at"])
        if (
            row["change_count"] >= max_changes
            and last
            and (now - last).total_seconds() < settle_seconds
        ):
            return UpsertResult(row["id"], "unchanged", row["story_id"])
        assignments = ", ".join(f"{c} = ?" for c in _ENTRY_COLUMNS)
        self.execute(
            f"UPDATE entries SET {assignments}, last_changed_at = ?,"
            " change_count = change_count + 1 WHERE id = ?",
            (*_entry_values(entry, fp), to_db_time(now), row["id"]),
        )
        self.execute("DELETE FROM simhash_bands WHERE entry_id = ?", (row["id"],))
        self.execute("DELETE FROM enclosures WHERE entry_id = ?", (row["id"],))
        try:
            self.conn.executemany(_INSERT_BANDS, _band_rows(row["id"], fp.simhash))
            self.conn.executemany(_INSERT_ENCLOSURES, _enclosure_rows(row["id"], entry))
        except sqlite3.Error as exc:
            raise _store_error(self.path, exc) from exc
        return UpsertResult(row["id"], "updated", row["story_id"])

    def simhash_candidates(
        self, simhash: int, since: datetime, *, exclude: int | None = None, limit: int = 200
    ) -> list[sqlite3.Row]:
        """Entries published since `since` that share at least one 16-bit band with `simhash`."""
        b = simhash_bands(simhash)
        return list(
            self.execute(
                f"SELECT {_DOC_COLUMNS} FROM entries e JOIN feeds f ON f.id = e.feed_id"
                " WHERE e.id IN ("
                " SELECT entry_id FROM simhash_bands WHERE (band = 0 AND value = ?)"
                " OR (band = 1 AND value = ?) OR (band = 2 AND value = ?) OR (band = 3 AND value = ?))"
                " AND e.published >= ? AND e.id != ? AND e.story_id IS NOT NULL LIMIT ?",
                (*b, to_db_time(since), exclude or -1, limit),
            )
        )

    def exact_candidates(
        self, link: str | None, content_hash: str, since: datetime, *, exclude: int | None = None
    ) -> list[sqlite3.Row]:
        """Entries (within the window) with the same canonical link or the same content hash."""
        rows = list(
            self.execute(
                f"SELECT {_DOC_COLUMNS} FROM entries e JOIN feeds f ON f.id = e.feed_id"
                " WHERE e.content_hash = ? AND e.id != ? AND e.published >= ?"
                " AND e.story_id IS NOT NULL LIMIT 50",
                (content_hash, exclude or -1, to_db_time(since)),
            )
        )
        if link:
            rows += list(
                self.execute(
                    f"SELECT {_DOC_COLUMNS} FROM entries e JOIN feeds f ON f.id = e.feed_id"
                    " WHERE e.link = ? AND e.id != ? AND e.story_id IS NOT NULL LIMIT 50",
                    (link, exclude or -1),
                )
            )
        return rows

    def window_entries(
        self,
        since: datetime,
        until: datetime,
        *,
        include_since: bool = True,
        include_until: bool = True,
    ) -> list[sqlite3.Row]:
        """Stored, clustered entries published between since and until (the clustering window)."""
        lo = ">=" if include_since else ">"
        hi = "<=" if include_until else "<"
        return list(
            self.execute(
                f"SELECT {_DOC_COLUMNS} FROM entries e JOIN feeds f ON f.id = e.feed_id"
                f" WHERE e.published {lo} ? AND e.published {hi} ? AND e.story_id IS NOT NULL"
                " ORDER BY e.id",
                (to_db_time(since), to_db_time(until)),
            )
        )

    def unclustered_entries(self) -> list[sqlite3.Row]:
        """Entries left without a story (a crash between insert and clustering)."""
        return list(
            self.execute(
                "SELECT e.*, length(e.text) AS text_length, f.url AS feed_url FROM entries e JOIN feeds f ON f.id = e.feed_id"
                " WHERE e.story_id IS NULL ORDER BY e.id"
            )
        )

    def next_story_id(self) -> int:
        row = self.execute("SELECT COALESCE(MAX(id), 0) FROM stories").fetchone()
        merged = self.execute("SELECT COALESCE(MAX(from_story_id), 0) FROM story_merges").fetchone()
        return max(int(row[0]), int(merged[0])) + 1

    # -- stories ---------------------------------------------------------------------------

    def mark_merge_pending(self, published: datetime) -> None:
        """Remember (in the feed's transaction) that the merge pass must look around `published`.

        If the process dies before the cycle's merge pass commits, the next cycle runs it.
        """
        ts = to_db_time(published)
        self.execute(
            "INSERT INTO meta (key, value) VALUES ('merge_pending_from', ?)"
            " ON CONFLICT(key) DO UPDATE SET value = min(value, excluded.value)",
            (ts,),
        )
        self.execute(
            "INSERT INTO meta (key, value) VALUES ('merge_pending_until', ?)"
            " ON CONFLICT(key) DO UPDATE SET value = max(value, excluded.value)",
            (ts,),
        )

    def merge_pending(self) -> tuple[datetime, datetime] | None:
        rows = dict(
            self.execute(
                "SELECT key, value FROM meta WHERE key IN ('merge_pending_from', 'merge_pending_until')"
            ).fetchall()
        )
        lo = from_db_time(rows.get("merge_pending_from"))
        hi = from_db_time(rows.get("merge_pending_until"))
        return (lo, hi) if lo and hi else None

    def clear_merge_pending(self) -> None:
        self.execute("DELETE FROM meta WHERE key IN ('merge_pending_from', 'merge_pending_until')")

    def create_story(self, story_id: int, title: str, now: datetime) -> None:
        """A new story row, before its first entry is inserted; `refresh_stories` (in the same
        transaction) fills in the representative, dates and counts."""
        ts = to_db_time(now)
        self.execute(
            "INSERT INTO stories (id, title, representative_id, first_seen, last_seen,"
            " updated_at) VALUES (?, ?, NULL, ?, ?, ?)",
            (story_id, title, ts, ts, ts),
        )

    def assign_story(
        self,
        entry_id: int,
        story_id: int,
        *,
        rule: str,
        distance: int | None,
        score: float | None,
        matched_entry_id: int | None,
        now: datetime,
        new_story_title: str | None = None,
    ) -> None:
        """Put an entry in a story (creating the story row if new), with its evidence.

        `new_story_title` says the story is new (its first member's title): no lookup needed.
        """
        ts = to_db_time(now)
        exists = (
            None
            if new_story_title is not None
            else self.execute("SELECT 1 FROM stories WHERE id = ?", (story_id,)).fetchone()
        )
        if exists is None:
            title = new_story_title
            if title is None:
                title = self.execute(
                    "SELECT title FROM entries WHERE id = ?", (entry_id,)
                ).fetchone()[0]
            self.execute(
                "INSERT INTO stories (id, title, representative_id, first_seen, last_seen,"
                " updated_at) VALUES (?, ?, ?, ?, ?, ?)",
                (story_id, title, entry_id, ts, ts, ts),
            )
        self.execute(
            "UPDATE entries SET story_id = ?, match_rule = ?, match_distance = ?, match_score = ?,"
            " matched_entry_id = ? WHERE id = ?",
            (story_id, rule, distance, score, matched_entry_id, entry_id),
        )

    def merge_stories(
        self, from_id: int, into_id: int, *, entry_id: int | None, reason: str, now: datetime
    ) -> None:
        """Move every member of `from_id` into `into_id`, record the merge, drop `from_id`."""
        if from_id == into_id:
            return
        self.execute("UPDATE entries SET story_id = ? WHERE story_id = ?", (into_id, from_id))
        self.execute(
            "INSERT INTO story_merges (from_story_id, into_story_id, entry_id, reason, merged_at)"
            " VALUES (?, ?, ?, ?, ?)",
            (from_id, into_id, entry_id, reason, to_db_time(now)),
        )
        self.execute(
            "UPDATE story_merges SET into_story_id = ? WHERE into_story_id = ?", (into_id, from_id)
        )
        self.execute("DELETE FROM stories WHERE id = ?", (from_id,))

    def refresh_stories(
        self, story_ids: Iterable[int], now: datetime, representative: str = "earliest"
    ) -> None:
        """Recompute counts, first/last seen, representative and title of the given stories
        (a few statements per 500 stories); stories left without members are deleted."""
        ts = to_db_time(now)
        # Only "complete" needs each member's text length, and length() reads the whole text.
        size = "length(e.text)" if representative == "complete" else "0"
        ids = sorted(set(story_ids))
        for start in range(0, len(ids), _IN_CHUNK):
            chunk = ids[start : start + _IN_CHUNK]
            marks = ", ".join("?" * len(chunk))
            members: dict[int, list[sqlite3.Row]] = {}
            for m in self.execute(
                f"SELECT e.id, e.story_id, e.title, e.published, e.first_seen, e.feed_id,"
                f" e.link, {size} AS size, f.url AS feed_url FROM entries e"
                f" JOIN feeds f ON f.id = e.feed_id WHERE e.story_id IN ({marks})"
                " ORDER BY e.story_id, e.published, e.id",
                chunk,
            ):
                members.setdefault(m["story_id"], []).append(m)
            old = {
                r[0]: (r[1], r[2])
                for r in self.execute(
                    f"SELECT id, feed_count, member_count FROM stories WHERE id IN ({marks})", chunk
                )
            }
            gone = [(sid,) for sid in chunk if sid not in members]
            updates = []
            for sid, rows in members.items():
                # "earliest": the owner of the link first, then the first by publication clamped
                # to when it was first seen (model.representative_key); "complete": the longest
                # text, ties to the same order.
                ranked = sorted(rows, key=_representative_key)
                rep = (
                    ranked[0]
                    if representative == "earliest"
                    else min(enumerate(ranked), key=lambda pair: (-pair[1]["size"], pair[0]))[1]
                )
                feeds = {m["feed_id"] for m in rows}
                hosts = {outlet_host(m["link"] or m["feed_url"]) for m in rows}
                first = rows[0]["published"]
                last = max(m["first_seen"] for m in rows)
                grew = old.get(sid) != (len(feeds), len(rows))
                updates.append(
                    (
                        rep["title"],
                        rep["id"],
                        first,
                        max(last, first),
                        len(rows),
                        len(feeds),
                        len(hosts),
                        grew,
                        ts,
                        sid,
                    )
                )
            try:
                self.conn.executemany("DELETE FROM stories WHERE id = ?", gone)
                self.conn.executemany(
                    "UPDATE stories SET title = ?, representative_id = ?, first_seen = ?,"
                    " last_seen = ?, member_count = ?, feed_count = ?, host_count = ?,"
                    " updated_at = CASE WHEN ? THEN ? ELSE updated_at END WHERE id = ?",
                    updates,
                )
            except sqlite3.Error as exc:
                raise _store_error(self.path, exc) from exc

    def stories(
        self, *, since: datetime | None = None, min_sources: int = 1, limit: int = 50
    ) -> list[sqlite3.Row]:
        sql = (
            "SELECT s.*, e.link AS link FROM stories s"
            " LEFT JOIN entries e ON e.id = s.representative_id WHERE s.feed_count >= ?"
        )
        params: list[Any] = [min_sources]
        if since is not None:
            sql += " AND s.last_seen >= ?"
            params.append(to_db_time(since))
        sql += " ORDER BY s.feed_count DESC, s.member_count DESC, s.last_seen DESC, s.id LIMIT ?"
        params.append(limit)
        return list(self.execute(sql, params))

    def enclosures(self, entry_id: int) -> tuple[Enclosure, ...]:
        """The files an entry carries, in feed order."""
        return tuple(
            Enclosure(r["url"], r["media_type"], r["length"])
            for r in self.execute(
                "SELECT url, media_type, length FROM enclosures WHERE entry_id = ? ORDER BY position",
                (entry_id,),
            )
        )

    def story_members(self, story_id: int) -> list[sqlite3.Row]:
        return list(
            self.execute(
                "SELECT e.*, COALESCE(f.title, f.feed_title, f.url) AS outlet, f.url AS feed_url,"
                " f.tags AS feed_tags"
                " FROM entries e JOIN feeds f ON f.id = e.feed_id WHERE e.story_id = ?"
                " ORDER BY e.published, e.id",
                (story_id,),
            )
        )

    def headline_reason(self, story_id: int) -> tuple[int, str] | None:
        """The entry whose headline a story shows and why, in words (for `explain`)."""
        row = self.execute(
            "SELECT representative_id FROM stories WHERE id = ?", (story_id,)
        ).fetchone()
        if row is None or row[0] is None:
            return None
        members = list(
            self.execute(
                "SELECT e.id, e.published, e.first_seen, e.link, f.url AS feed_url FROM entries e"
                " JOIN feeds f ON f.id = e.feed_id WHERE e.story_id = ?",
                (story_id,),
            )
        )
        rep = next((m for m in members if m["id"] == row[0]), None)
        if rep is None:
            return None
        foreign, clamped, published, _ = _representative_key(rep)
        if len(members) == 1:
            why = "the story's only report"
        elif not foreign:
            why = (
                "its link is on its own feed's domain "
                f"({base_domain(rep['link'])}), the earliest such report"
            )
        else:
            why = "the earliest report (no member links an article on its own feed's domain)"
        if clamped != published:
            why += (
                f"; its date {rep['published']} counts as {to_db_time(clamped)}, two hours "
                "before the aggregator first saw it"
            )
        return rep["id"], why

    def matching_members(self, story_id: int, query: str) -> set[int]:
        """The ids of a story's entries that match the full-text `query`."""
        match = fts_query(query)
        if match is None:
            return set()
        return {
            int(r[0])
            for r in self.execute(
                "SELECT e.id FROM entries_fts JOIN entries e ON e.id = entries_fts.rowid"
                " WHERE entries_fts MATCH ? AND e.story_id = ?",
                (match, story_id),
            )
        }

    def story_matches(self, story_id: int, query: str) -> bool:
        """Whether any member of the story matches the full-text `query`."""
        match = fts_query(query)
        if match is None:
            return False
        row = self.execute(
            "SELECT 1 FROM entries_fts JOIN entries e ON e.id = entries_fts.rowid"
            " WHERE entries_fts MATCH ? AND e.story_id = ? LIMIT 1",
            (match, story_id),
        ).fetchone()
        return row is not None

    def search(self, query: str, *, limit: int = 20) -> list[sqlite3.Row]:
        """Entries matching every word of `query`, best first. Raw input is safe."""
        match = fts_query(query)
        if match is None:
            return []
        return list(
            self.execute(
                "SELECT e.id, e.story_id, e.title, e.link, e.published,"
                " COALESCE(f.title, f.feed_title, f.url) AS outlet,"
                " snippet(entries_fts, 1, '[', ']', '…', 12) AS snippet"
                " FROM entries_fts JOIN entries e ON e.id = entries_fts.rowid"
                " JOIN feeds f ON f.id = e.feed_id WHERE entries_fts MATCH ?"
                " ORDER BY bm25(entries_fts, 5.0, 1.0), e.published DESC LIMIT ?",
                (match, limit),
            )
        )

    def entry(self, entry_id: int) -> sqlite3.Row | None:
        row: sqlite3.Row | None = self.execute(
            "SELECT e.*, COALESCE(f.title, f.feed_title, f.url) AS outlet, f.url AS feed_url,"
            " length(e.text) AS text_length"
            " FROM entries e JOIN feeds f ON f.id = e.feed_id WHERE e.id = ?",
            (entry_id,),
        ).fetchone()
        return row

    def counts(self) -> dict[str, int]:
        return {
            t: int(self.execute(f"SELECT count(*) FROM {t}").fetchone()[0])
            for t in ("feeds", "entries", "stories")
        }

    # -- housekeeping -------------------------------------------------------------------------
    # Used by service.py (the daemon): first-poll spreading, status, pruning, WAL upkeep.

    def start_due_feeds(
        self, now: datetime, *, unscheduled_only: bool = False
    ) -> list[tuple[int, str]]:
        """(id, url) of active feeds due at `now` (next_poll_at passed or unset); with
        `unscheduled_only`, only those never scheduled (just added)."""
        sql = "SELECT id, url FROM feeds WHERE active = 1 AND retired_at IS NULL AND ("
        sql += (
            "next_poll_at IS NULL"
            if unscheduled_only
            else "next_poll_at IS NULL OR next_poll_at <= ?"
        )
        params: tuple[Any, ...] = () if unscheduled_only else (to_db_time(now),)
        return [(r[0], r[1]) for r in self.execute(sql + ") ORDER BY id", params)]

    def set_next_polls(self, times: Iterable[tuple[int, datetime]]) -> None:
        """Rewrite next_poll_at for the given feeds, in one transaction."""
        with self.transaction():
            self.conn.executemany(
                "UPDATE feeds SET next_poll_at = ? WHERE id = ?",
                [(to_db_time(t), feed_id) for feed_id, t in times],
            )

    def next_poll_time(self, now: datetime) -> datetime | None:
        """When the earliest active feed is due (`now` if one is unscheduled); None if no feed."""
        row = self.execute(
            "SELECT count(*), min(COALESCE(next_poll_at, '')) FROM feeds"
            " WHERE active = 1 AND retired_at IS NULL"
        ).fetchone()
        if not row[0]:
            return None
        return from_db_time(row[1]) or now

    def prune(
        self,
        keep_days: int,
        protect_since: datetime,
        *,
        now: datetime,
        representative: str = "earliest",
        keep_latest: int = 100,
    ) -> dict[str, int]:
        """Delete old entries (see `prune_steps`) and return the counts of what went."""
        counts = {"entries": 0, "stories": 0, "stories_trimmed": 0}
        for step in self.prune_steps(
            keep_days,
            protect_since,
            now=now,
            representative=representative,
            keep_latest=keep_latest,
        ):
            counts = step
        return counts

    def prune_steps(
        self,
        keep_days: int,
        protect_since: datetime,
        *,
        now: datetime,
        representative: str = "earliest",
        keep_latest: int = 100,
        batch: int = 500,
    ) -> Generator[dict[str, int], None, None]:
        """Delete entries older than `keep_days`, one short transaction per batch.

        Yields the running counts after each batch (the daemon yields to its event loop there;
        no transaction is open across a yield). An entry goes when it was both published and
        first seen before the cutoff, unless:
        - its story was last seen at or after `protect_since` (still within a digest or the
          clustering window): a story in a window keeps every member;
        - it is among the `keep_latest` newest entries of an active feed: it is probably still
          in the feed document, and deleting it would make the next poll add it again as new;
        - its story holds the highest story id, or is where the highest merged-away id went:
          story ids are derived from the maximum, and must never be handed out twice.
        Stories left empty are deleted (with their merge records); stories that lost members
        are recomputed, keeping their `updated_at`. No entry ever points at a missing story.
        """
        cutoff = to_db_time(now - timedelta(days=keep_days))
        counts = {"entries": 0, "stories": 0, "stories_trimmed": 0}
        with self.transaction():
            # Headline counts serve as the week before the oldest day still clustered.
            self.execute(
                "DELETE FROM headline_terms WHERE day < ?",
                ((now - timedelta(days=keep_days + 8)).astimezone(UTC).date().isoformat(),),
            )
            top = self.execute("SELECT max(id) FROM stories").fetchone()[0]
            merged = self.execute(
                "SELECT into_story_id FROM story_merges WHERE from_story_id ="
                " (SELECT max(from_story_id) FROM story_merges)"
            ).fetchone()
            keep_stories = [x for x in (top, merged[0] if merged else None) if x is not None]
            self.execute("DROP TABLE IF EXISTS temp.prune_floor")
            self.execute("DROP TABLE IF EXISTS temp.prune_ids")
            # The published time of each active feed's keep_latest-th newest entry: entries
            # strictly older than that may go; feeds with fewer entries keep them all.
            self.execute(
                "CREATE TEMP TABLE prune_floor AS SELECT feed_id, published FROM ("
                " SELECT e.feed_id, e.published, row_number() OVER ("
                "  PARTITION BY e.feed_id ORDER BY e.published DESC, e.id DESC) AS rank"
                " FROM entries e JOIN feeds f ON f.id = e.feed_id"
                " WHERE f.active = 1 AND f.retired_at IS NULL) WHERE rank = ?",
                (keep_latest,),
            )
            marks = ", ".join("?" * len(keep_stories)) or "NULL"
            self.execute(
                "CREATE TEMP TABLE prune_ids AS SELECT e.id AS id FROM entries e"
                " JOIN stories s ON s.id = e.story_id JOIN feeds f ON f.id = e.feed_id"
                " LEFT JOIN temp.prune_floor p ON p.feed_id = e.feed_id"
                " WHERE e.published < ? AND e.first_seen < ? AND s.last_seen < ?"
                f" AND e.story_id NOT IN ({marks})"
                " AND (f.active = 0 OR f.retired_at IS NOT NULL OR e.published < p.published)"
                " ORDER BY e.id",
                (cutoff, cutoff, to_db_time(protect_since), *keep_stories),
            )
        try:
            while True:
                with self.transaction():
                    ids = [
                        r[0]
                        for r in self.execute(
                            "SELECT id FROM temp.prune_ids ORDER BY id LIMIT ?", (batch,)
                        )
                    ]
                    if not ids:
                        break
                    marks = ", ".join("?" * len(ids))
                    touched = {
                        r[0]: r[1]
                        for r in self.execute(
                            "SELECT id, updated_at FROM stories WHERE id IN"
                            f" (SELECT DISTINCT story_id FROM entries WHERE id IN ({marks}))",
                            ids,
                        )
                    }
                    self.execute(f"DELETE FROM entries WHERE id IN ({marks})", ids)
                    self.execute(f"DELETE FROM temp.prune_ids WHERE id IN ({marks})", ids)
                    self.refresh_stories(touched, now, representative)
                    left = (
                        {
                            r[0]
                            for r in self.execute(
                                f"SELECT id FROM stories WHERE id IN ({', '.join('?' * len(touched))})",
                                list(touched),
                            )
                        }
                        if touched
                        else set()
                    )
                    self.conn.executemany(
                        "UPDATE stories SET updated_at = ? WHERE id = ?",
                        [(touched[i], i) for i in left],
                    )
                    counts["entries"] += len(ids)
                    counts["stories"] += len(touched) - len(left)
                    counts["stories_trimmed"] += len(left)
                yield dict(counts)
        finally:
            if not self._in_tx:
                self.execute("DROP TABLE IF EXISTS temp.prune_ids")
                self.execute("DROP TABLE IF EXISTS temp.prune_floor")
        yield dict(counts)

    def checkpoint(self, *, mode: str = "TRUNCATE", wait_ms: int = 1000) -> tuple[int, int, int]:
        """Checkpoint the WAL; returns SQLite's (busy, log frames, checkpointed frames).

        TRUNCATE waits for readers (at most `wait_ms`, so a long reader cannot stall the
        daemon) and then resets the WAL file to zero bytes; when readers stay, it copies what
        it can and reports busy=1, and the next checkpoint finishes the job.
        """
        if mode.upper() not in ("PASSIVE", "FULL", "RESTART", "TRUNCATE"):
            raise ValueError(f"unknown checkpoint mode {mode!r}")
        self.execute(f"PRAGMA busy_timeout = {int(wait_ms)}")
        try:
            row = self.execute(f"PRAGMA wal_checkpoint({mode.upper()})").fetchone()
        finally:
            self.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
        return int(row[0]), int(row[1]), int(row[2])

    def optimize(self) -> None:
        """PRAGMA optimize: refresh the planner's statistics where they have gone stale."""
        self.execute("PRAGMA optimize")


# The columns an entry's content fills, in `_entry_values` order (insert and update alike).
_ENTRY_COLUMNS = (
    "link",
    "title",
    "summary",
    "content",
    "text",
    "author",
    "language",
    "categories",
    "published",
    "updated",
    "content_hash",
    "simhash",
    "terms",
    "image",
)
_INSERT_ENCLOSURES = (
    "INSERT INTO enclosures (entry_id, position, url, media_type, length) VALUES (?, ?, ?, ?, ?)"
)
_INSERT_BANDS = "INSERT OR IGNORE INTO simhash_bands (band, value, entry_id) VALUES (?, ?, ?)"


def _entry_values(entry: Entry, fp: Fingerprint) -> tuple[Any, ...]:
    return (
        entry.link,
        entry.title,
        entry.summary,
        entry.content,
        entry.text,
        entry.author,
        entry.language,
        json.dumps(list(entry.categories), ensure_ascii=False),
        to_db_time(entry.published),
        to_db_time(entry.updated),
        entry.content_hash,
        u64_to_i64(fp.simhash),
        " ".join(fp.terms),
        entry.image,
    )


def _enclosure_rows(
    entry_id: int, entry: Entry
) -> list[tuple[int, int, str, str | None, int | None]]:
    return [(entry_id, i, e.url, e.media_type, e.length) for i, e in enumerate(entry.enclosures)]


def _band_rows(entry_id: int, simhash: int | None) -> list[tuple[int, int, int]]:
    if simhash is None:
        return []
    return [(i, v, entry_id) for i, v in enumerate(simhash_bands(simhash))]


_FTS_TOKEN = re.compile(r"\w+", re.UNICODE)


# Words a search may hold: every one must match, so a longer query finds nothing a shorter
# one would not, and FTS5's cost grows with each (800 words took 19 s on the demo database).
MAX_QUERY_WORDS = 32


def query_problem(text: str) -> str | None:
    """Why a search query cannot be run (too many words), or None."""
    count = len(_FTS_TOKEN.findall(text))
    if count > MAX_QUERY_WORDS:
        return f"the query has {count} words; at most {MAX_QUERY_WORDS} are searched"
    return None


def _representative_key(row: sqlite3.Row) -> tuple[bool, datetime, datetime, int]:
    published = from_db_time(row["published"])
    assert published is not None
    return representative_key(
        published=published,
        first_seen=from_db_time(row["first_seen"]),
        link=row["link"],
        feed_url=row["feed_url"],
        entry_id=row["id"],
    )


def fts_query(text: str) -> str | None:
    """Turn raw user input (`c++`, `"unbalanced`) into a safe FTS5 query: every word, quoted
    (at most `MAX_QUERY_WORDS`: callers check `query_problem` first to say so)."""
    words = _FTS_TOKEN.findall(text)[:MAX_QUERY_WORDS]
    if not words:
        return None
    return " ".join(f'"{w}"' for w in words)


def _due_feed(row: sqlite3.Row) -> DueFeed:
    return DueFeed(
        state=FeedState(
            id=row["id"],
            url=row["url"],
            etag=row["etag"],
            last_modified=row["last_modified"],
            body_hash=row["body_hash"],
            error_count=row["error_count"],
        ),
        interval=row["interval"],
        ttl=row["ttl"],
        config_url=row["config_url"],
    )


def _read_only_place(path: Path) -> bool:
    """True when SQLite could not write the database (or its -wal/-shm files) at `path`."""
    import os

    folder = path.parent if path.parent.exists() else None
    if folder is None:
        return False
    try:
        if os.statvfs(folder).f_flag & os.ST_RDONLY:
            return True
    except OSError:
        return False
    if path.exists() and not os.access(path, os.W_OK):
        return True
    return not os.access(folder, os.W_OK)


def _statements(script: str) -> list[str]:
    """Split a migration into statements; a trigger body (BEGIN ... END;) stays whole."""
    out: list[str] = []
    buf = ""
    for line in script.splitlines(keepends=True):
        buf += line
        if sqlite3.complete_statement(buf):
            if buf.strip():
                out.append(buf.strip())
            buf = ""
    if buf.strip():
        out.append(buf.strip())
    return out


def _store_error(path: Path, exc: BaseException, context: str = "") -> StoreError:
    text = str(exc)
    prefix = f"{path}: " + (f"{context}: " if context else "")
    if "readonly" in text or "read-only" in text:
        hint = "the database file or its folder is read-only; fix its permissions or use another [storage] database path"
    elif "disk is full" in text or "database or disk is full" in text:
        hint = "the disk is full; free space, then run again (nothing committed was lost)"
    elif "malformed" in text or "not a database" in text:
        hint = "the database file is damaged or not a SQLite database; restore it from a backup or move it aside (sqlite3 .recover can salvage rows)"
    elif "unable to open" in text:
        hint = "cannot open the database file; check that its folder exists and is writable"
    elif "locked" in text:
        hint = "the database stayed locked by another process past the busy timeout"
    else:
        hint = "database error"
    return StoreError(f"{prefix}{hint} ({text})")
