"""The daemon (`aggregator run`) driven as a real subprocess, plus its housekeeping and helpers.

A test plays systemd: it binds a Unix datagram socket, passes it as $NOTIFY_SOCKET and reads
what the daemon reports (READY=1, STATUS=, WATCHDOG=1, RELOADING=1, STOPPING=1).
"""

from __future__ import annotations

import logging
import os
import signal
import socket
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from aggregator.config import Config, DigestSettings
from aggregator.model import Entry, FeedSettings, Fingerprint
from aggregator.service import (
    JournalFormatter,
    config_changes,
    journald_stream,
    notify_address,
    spread_first_polls,
    watchdog_interval,
)
from aggregator.store import Store
from tests.feedgen import write_feeds
from tests.httpserver import LoopbackServer, Response

CLI = [sys.executable, "-m", "aggregator"]
DEADLINE = 20.0  # seconds any single expectation may take on a loaded 2-core machine


class NotifyListener:
    """A fake systemd: collects sd_notify datagrams on a Unix socket (path or abstract)."""

    def __init__(self, *, abstract: bool = False) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        if abstract:
            name = f"aggregator-test-{os.getpid()}-{id(self)}"
            self.sock.bind("\0" + name)
            self.env_value = "@" + name
            self._dir: str | None = None
        else:
            # AF_UNIX paths are limited to 108 bytes: pytest's tmp_path can be longer.
            self._dir = tempfile.mkdtemp(prefix="agg-notify-", dir="/tmp")
            path = os.path.join(self._dir, "notify.sock")
            self.sock.bind(path)
            self.env_value = path
        self.sock.settimeout(0.2)
        self.messages: list[dict[str, str]] = []
        self._lock = threading.Lock()
        self._closed = False
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()

    def _read(self) -> None:
        while not self._closed:
            try:
                data = self.sock.recv(65536)
            except TimeoutError:
                continue
            except OSError:
                return
            fields = dict(line.split("=", 1) for line in data.decode().splitlines() if "=" in line)
            with self._lock:
                self.messages.append(fields)

    def snapshot(self) -> list[dict[str, str]]:
        with self._lock:
            return list(self.messages)

    def wait_for(
        self,
        predicate: Callable[[list[dict[str, str]]], bool],
        what: str,
        timeout: float = DEADLINE,
    ) -> list[dict[str, str]]:
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            msgs = self.snapshot()
            if predicate(msgs):
                return msgs
            time.sleep(0.05)
        raise AssertionError(f"no {what} within {timeout} s; got {self.snapshot()}")

    def wait_key(
        self, key: str, value: str | None = None, *, after: int = 0, timeout: float = DEADLINE
    ) -> int:
        """Index of the first message at or after `after` carrying key (=value)."""

        def found(msgs: list[dict[str, str]]) -> bool:
            return any(key in m and (value is None or m[key] == value) for m in msgs[after:])

        msgs = self.wait_for(found, f"{key}={value or '*'}", timeout)
        return next(
            i
            for i, m in enumerate(msgs)
            if i >= after and key in m and (value is None or m[key] == value)
        )

    def close(self) -> None:
        self._closed = True
        self.sock.close()
        self._thread.join(timeout=2)
        if self._dir:
            for name in os.listdir(self._dir):
                os.unlink(os.path.join(self._dir, name))
            os.rmdir(self._dir)


class Daemon:
    """`aggregator run` as a subprocess, its stderr in a file the test can read."""

    def __init__(
        self, config: Path, env: dict[str, str], *extra: str, log_level: str | None = None
    ) -> None:
        self.log_path = config.parent / "daemon.log"
        self.log = open(self.log_path, "wb")  # noqa: SIM115  (closed in stop())
        self.env = env
        args = [*CLI, "--config", str(config)]
        if log_level:
            args += ["--log-level", log_level]
        args += ["run", "--dispatch-interval", "0.5", *extra]
        self.proc = subprocess.Popen(
            args, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=self.log, env=env
        )

    def text(self) -> str:
        return self.log_path.read_text(errors="replace")

    def wait_log(self, needle: str, timeout: float = DEADLINE) -> str:
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            text = self.text()
            if needle in text:
                return text
            if self.proc.poll() is not None:
                break
            time.sleep(0.05)
        raise AssertionError(f"{needle!r} not logged within {timeout} s:\n{self.text()}")

    def signal(self, sig: signal.Signals) -> None:
        self.proc.send_signal(sig)

    def stop(self, timeout: float = 15) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout=timeout)
        finally:
            if self.proc.poll() is None:
                self.proc.kill()
                self.proc.wait()
            self.log.close()


def daemon_env(listener: NotifyListener | None = None, **extra: str) -> dict[str, str]:
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in ("NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID", "JOURNAL_STREAM")
    }
    if listener is not None:
        env["NOTIFY_SOCKET"] = listener.env_value
    env.update(extra)
    return env


def write_service_config(folder: Path, feeds: list[Path], *, digests: bool = True) -> Path:
    lines = ["[storage]", f'database = "{folder / "agg.db"}"', ""]
    for path in feeds:
        lines += ["[[feeds]]", f'url = "{path.as_uri()}"', ""]
    if digests:
        lines += [
            "[[digests]]",
            'name = "everything"',
            f'path = "{folder / "everything.atom"}"',
            'since = "3650d"',
            "",
        ]
    config = folder / "aggregator.toml"
    config.write_text("\n".join(lines), encoding="utf-8")
    return config


@pytest.fixture
def listener() -> Iterator[NotifyListener]:
    lst = NotifyListener()
    yield lst
    lst.close()


@pytest.fixture
def two_feeds(feed_dir: Path) -> list[Path]:
    return [feed_dir / "ledger.xml", feed_dir / "courier.xml"]


def db_check(db: Path) -> sqlite3.Connection:
    conn = sqlite3.connect(db)
    assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    assert conn.execute("PRAGMA foreign_key_check").fetchall() == []
    return conn


# -- the daemon, end to end --------------------------------------------------------------------


def test_daemon_reports_ready_polls_and_stops_cleanly_on_sigterm(
    tmp_path: Path, listener: NotifyListener, two_feeds: list[Path]
) -> None:
    config = write_service_config(tmp_path, two_feeds)
    daemon = Daemon(config, daemon_env(listener))
    try:
        ready = listener.wait_key("READY", "1")
        # After the first cycle the status says what was polled and when the next poll is.
        listener.wait_for(
            lambda ms: any(
                "polled 2 feeds, 4 new entries" in m.get("STATUS", "")
                and "next poll in" in m.get("STATUS", "")
                for m in ms
            ),
            "a STATUS line after the first cycle",
        )
        assert ready >= 0
        text = daemon.wait_log("digest written (cycle)")
        # One line per feed outcome, and no timestamps from APScheduler's INFO chatter.
        assert "ledger.xml: 2 new, 0 updated entries" in text
        assert "courier.xml: 2 new, 0 updated entries" in text
        assert "Running job" not in text
        assert (tmp_path / "everything.atom").read_bytes().startswith(b"<?xml")
        before = len(listener.snapshot())
    finally:
        code = daemon.stop()
    assert code == 0, daemon.text()
    stopping = listener.wait_key("STOPPING", "1", after=before)
    assert stopping >= before
    assert "stopped" in daemon.text()
    conn = db_check(tmp_path / "agg.db")
    assert conn.execute("SELECT count(*) FROM entries").fetchone()[0] == 4
    assert conn.execute("SELECT count(*) FROM entries WHERE story_id IS NULL").fetchone()[0] == 0
    conn.close()


def _slow_feed_config(
    tmp_path: Path, server: LoopbackServer, release: threading.Event, two_feeds: list[Path]
) -> Path:
    body = (two_feeds[0]).read_bytes().replace(b"ledger", b"slowpaper")

    def slow(_req: object, _h: object) -> Response:
        release.wait(timeout=30)
        return Response(200, body, {"Content-Type": "application/rss+xml"})

    server.route("/slow.xml", slow)
    config = write_service_config(tmp_path, [two_feeds[1]])
    config.write_text(
        config.read_text()
        + f'''
[fetch]
allow_private_networks = true
[[feeds]]
url = "{server.url("/slow.xml")}"
'''
    )
    return config


def test_sigterm_lets_an_in_flight_poll_finish(
    tmp_path: Path, listener: NotifyListener, server: LoopbackServer, two_feeds: list[Path]
) -> None:
    release = threading.Event()
    config = _slow_feed_config(tmp_path, server, release, two_feeds)
    daemon = Daemon(config, daemon_env(listener))
    try:
        listener.wait_key("READY", "1")
        listener.wait_for(lambda _m: bool(server.hits("/slow.xml")), "the slow request")
        daemon.signal(signal.SIGTERM)
        listener.wait_key("STOPPING", "1")
        assert daemon.proc.poll() is None  # still finishing the poll in flight
        release.set()
        assert daemon.proc.wait(timeout=15) == 0, daemon.text()
    finally:
        release.set()
        daemon.stop()
    assert "/slow.xml: 2 new, 0 updated entries" in daemon.text()
    conn = db_check(tmp_path / "agg.db")
    assert conn.execute("SELECT count(*) FROM entries").fetchone()[0] == 4
    conn.close()


def test_sigterm_abandons_a_stuck_poll_within_the_stop_timeout(
    tmp_path: Path, listener: NotifyListener, server: LoopbackServer, two_feeds: list[Path]
) -> None:
    release = threading.Event()
    config = _slow_feed_config(tmp_path, server, release, two_feeds)
    daemon = Daemon(config, daemon_env(listener), "--stop-timeout", "4")
    try:
        listener.wait_key("READY", "1")
        listener.wait_for(lambda _m: bool(server.hits("/slow.xml")), "the slow request")
        daemon.wait_log("courier.xml: 2 new")  # the other feed was recorded meanwhile
        daemon.signal(signal.SIGTERM)
        assert daemon.proc.wait(timeout=15) == 0, daemon.text()
    finally:
        release.set()
        daemon.stop()
    assert "abandoned the poll cycle in flight" in daemon.text()
    conn = db_check(tmp_path / "agg.db")
    # The abandoned feed recorded nothing and is still due: the next start polls it.
    row = conn.execute(
        "SELECT last_fetched_at, next_poll_at FROM feeds WHERE url LIKE '%slow%'"
    ).fetchone()
    assert row[0] is None
    assert conn.execute("SELECT count(*) FROM entries").fetchone()[0] == 2
    conn.close()


def test_abstract_notify_socket_receives_ready(tmp_path: Path, two_feeds: list[Path]) -> None:
    abstract = NotifyListener(abstract=True)
    try:
        assert abstract.env_value.startswith("@")
        daemon = Daemon(write_service_config(tmp_path, two_feeds), daemon_env(abstract))
        try:
            abstract.wait_key("READY", "1")
        finally:
            assert daemon.stop() == 0, daemon.text()
        abstract.wait_key("STOPPING", "1")
    finally:
        abstract.close()


def test_watchdog_pings_every_half_watchdog_usec(
    tmp_path: Path, listener: NotifyListener, two_feeds: list[Path]
) -> None:
    daemon = Daemon(
        write_service_config(tmp_path, two_feeds), daemon_env(listener, WATCHDOG_USEC="2000000")
    )
    try:
        # 2 s watchdog → a ping every second: three arrive well within 15 s.
        listener.wait_for(
            lambda ms: sum(m.get("WATCHDOG") == "1" for m in ms) >= 3,
            "three WATCHDOG=1 pings",
            timeout=15,
        )
    finally:
        assert daemon.stop() == 0, daemon.text()


def test_watchdog_meant_for_another_pid_is_not_pinged(
    tmp_path: Path, listener: NotifyListener, two_feeds: list[Path]
) -> None:
    daemon = Daemon(
        write_service_config(tmp_path, two_feeds),
        daemon_env(listener, WATCHDOG_USEC="2000000", WATCHDOG_PID="1"),
    )
    try:
        listener.wait_key("READY", "1")
        listener.wait_for(
            lambda ms: any("polled" in m.get("STATUS", "") for m in ms), "the first cycle's STATUS"
        )
    finally:
        assert daemon.stop() == 0, daemon.text()
    assert not any("WATCHDOG" in m for m in listener.snapshot())


def test_sighup_with_two_more_feeds_reloads_and_polls_them(
    tmp_path: Path, listener: NotifyListener, two_feeds: list[Path]
) -> None:
    config = write_service_config(tmp_path, two_feeds)
    daemon = Daemon(config, daemon_env(listener))
    try:
        listener.wait_key("READY", "1")
        daemon.wait_log("cycle: 2 due")
        extra = write_feeds(tmp_path / "more", 2, 3, seed=7)
        write_service_config(tmp_path, [*two_feeds, *extra])
        before = len(listener.snapshot())
        daemon.signal(signal.SIGHUP)
        reloading = listener.wait_key("RELOADING", "1", after=before)
        assert listener.snapshot()[reloading]["MONOTONIC_USEC"].isdigit()
        assert listener.wait_key("READY", "1", after=reloading) > reloading
        text = daemon.wait_log("reloaded:")
        for path in extra:
            assert f"feed added: {path.as_uri()}" in text
        for path in extra:  # the new feeds are scheduled (spread) and then polled
            daemon.wait_log(f"{path.as_uri()}: 3 new, 0 updated entries")
        with sqlite3.connect(tmp_path / "agg.db") as conn:
            urls = {r[0] for r in conn.execute("SELECT url FROM feeds WHERE active = 1")}
            assert {p.as_uri() for p in extra} <= urls
            assert conn.execute("SELECT count(*) FROM entries").fetchone()[0] == 4 + 2 * 3
        conn.close()
    finally:
        assert daemon.stop() == 0, daemon.text()


def test_sighup_with_a_broken_config_keeps_the_running_one(
    tmp_path: Path, listener: NotifyListener, two_feeds: list[Path]
) -> None:
    config = write_service_config(tmp_path, two_feeds)
    daemon = Daemon(config, daemon_env(listener))
    try:
        listener.wait_key("READY", "1")
        daemon.wait_log("cycle: 2 due")
        config.write_text(config.read_text() + '\n[fetch]\nconcurrency = "many"\n')
        before = len(listener.snapshot())
        daemon.signal(signal.SIGHUP)
        reloading = listener.wait_key("RELOADING", "1", after=before)
        listener.wait_key("READY", "1", after=reloading)
        text = daemon.wait_log("reload refused")
        assert "fetch.concurrency" in text
        assert "ERROR" in text
        # Still alive, still dispatching with the old config: a removed feed is not removed.
        assert daemon.proc.poll() is None
    finally:
        assert daemon.stop() == 0, daemon.text()
    with sqlite3.connect(tmp_path / "agg.db") as conn:
        assert conn.execute("SELECT count(*) FROM feeds WHERE active = 1").fetchone()[0] == 2
    conn.close()


def test_sigint_stops_like_sigterm(
    tmp_path: Path, listener: NotifyListener, two_feeds: list[Path]
) -> None:
    daemon = Daemon(write_service_config(tmp_path, two_feeds), daemon_env(listener))
    try:
        listener.wait_key("READY", "1")
        daemon.signal(signal.SIGINT)
        assert daemon.proc.wait(timeout=15) == 0, daemon.text()
    finally:
        daemon.stop()
    listener.wait_key("STOPPING", "1")
    db_check(tmp_path / "agg.db").close()


def test_journald_stream_gets_syslog_priority_prefixes(
    tmp_path: Path, listener: NotifyListener, two_feeds: list[Path]
) -> None:
    missing = tmp_path / "gone.xml"  # a failing feed logs a warning
    config = write_service_config(tmp_path, [*two_feeds, missing], digests=False)
    log_path = tmp_path / "daemon.log"
    log_path.touch()
    st = os.stat(log_path)
    # The daemon's stderr is this very file, so $JOURNAL_STREAM names it as journald would.
    daemon = Daemon(
        config, daemon_env(listener, JOURNAL_STREAM=f"{st.st_dev}:{st.st_ino}"), log_level="debug"
    )
    try:
        daemon.wait_log("cycle: 3 due")
    finally:
        assert daemon.stop() == 0, daemon.text()
    lines = [line for line in daemon.text().splitlines() if line]
    assert lines and all(line[:3] in ("<2>", "<3>", "<4>", "<6>", "<7>") for line in lines), lines
    assert any(line.startswith("<6>aggregator: ") and "ledger.xml" in line for line in lines)
    assert any(line.startswith("<4>aggregator: ") and "gone.xml" in line for line in lines)
    assert any(line.startswith("<7>") for line in lines)  # --log-level debug is honoured


def test_plain_log_lines_when_stderr_is_not_the_journal(
    tmp_path: Path, listener: NotifyListener, two_feeds: list[Path]
) -> None:
    config = write_service_config(tmp_path, two_feeds, digests=False)
    # JOURNAL_STREAM inherited from a parent whose stderr was the journal: not ours.
    daemon = Daemon(config, daemon_env(listener, JOURNAL_STREAM="1:1"), log_level="warning")
    try:
        listener.wait_key("READY", "1")
        listener.wait_for(
            lambda ms: any("polled" in m.get("STATUS", "") for m in ms), "the first cycle's STATUS"
        )
        config.write_text("this is not toml")
        daemon.signal(signal.SIGHUP)
        daemon.wait_log("reload refused")
    finally:
        assert daemon.stop() == 0, daemon.text()
    lines = daemon.text().splitlines()
    assert not any(line.startswith("<") for line in lines)
    # --log-level warning: the per-feed info lines are not there, the error is.
    assert not any("ledger.xml" in line for line in lines)
    assert any(" ERROR aggregator.service: reload refused" in line for line in lines)


def test_broken_config_at_start_exits_2_with_a_logged_error(
    tmp_path: Path, listener: NotifyListener
) -> None:
    config = tmp_path / "aggregator.toml"
    config.write_text("[storage]\nkeep_days = 0\n")
    daemon = Daemon(config, daemon_env(listener))
    try:
        code = daemon.proc.wait(timeout=30)
    finally:
        daemon.stop()
    assert code == 2
    assert "storage.keep_days" in daemon.text()
    assert not any("READY" in m for m in listener.snapshot())


def test_daemon_housekeeping_checkpoints_the_wal(
    tmp_path: Path, listener: NotifyListener, two_feeds: list[Path]
) -> None:
    daemon = Daemon(
        write_service_config(tmp_path, two_feeds),
        daemon_env(listener),
        "--housekeeping-delay",
        "0.5",
    )
    try:
        listener.wait_key("READY", "1")
        daemon.wait_log("cycle: 2 due")
        text = daemon.wait_log("housekeeping: pruned")
        assert "WAL checkpoint complete" in text
        wal = tmp_path / "agg.db-wal"
        # TRUNCATE leaves an empty WAL while the daemon still holds the database open
        # (unless a cycle wrote in between, which these unchanged file feeds do not).
        assert not wal.exists() or wal.stat().st_size == 0
    finally:
        assert daemon.stop() == 0, daemon.text()


# -- housekeeping against a real SQLite file ---------------------------------------------------

NOW = datetime(2026, 6, 1, 12, 0, tzinfo=UTC)


def _entry(guid: str, title: str, published: datetime) -> tuple[Entry, Fingerprint]:
    entry = Entry(
        guid=guid,
        link=f"https://example.org/{guid}",
        title=title,
        summary="",
        content="",
        text=title,
        published=published,
        updated=None,
        author=None,
        language="en",
        content_hash=f"hash-{guid}",
    )
    return entry, Fingerprint(f"hash-{guid}", (hash(guid) & ((1 << 64) - 1)) or 1, ("w",))


def _add(
    store: Store, feed_id: int, guid: str, story: int, *, age_days: float, rule: str = "new"
) -> int:
    when = NOW - timedelta(days=age_days)
    entry, fp = _entry(guid, f"title {guid}", when)
    res = store.upsert_entry(feed_id, entry, fp, when)
    store.assign_story(
        res.entry_id, story, rule=rule, distance=None, score=None, matched_entry_id=None, now=when
    )
    store.refresh_stories([story], when)
    return res.entry_id


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    with Store.open(tmp_path / "hk.db") as st:
        st.sync_feeds(
            [FeedSettings("https://a.example/feed"), FeedSettings("https://b.example/feed")],
            NOW - timedelta(days=400),
        )
        yield st


def _feed_ids(store: Store) -> tuple[int, int]:
    ids = [r["id"] for r in store.feed_rows()]
    return ids[0], ids[1]


def test_prune_removes_old_stories_and_keeps_the_rest_consistent(store: Store) -> None:
    a, b = _feed_ids(store)
    with store.transaction():
        old = [_add(store, a, "old1", 1, age_days=200), _add(store, b, "old2", 1, age_days=199)]
        # Story 2 spans the cutoff: its old member goes, the story stays with the young one.
        span_old = _add(store, a, "span-old", 2, age_days=120)
        span_new = _add(store, b, "span-new", 2, age_days=30)
        recent = _add(store, a, "recent", 3, age_days=1)
        top = _add(store, b, "top", 4, age_days=300)  # highest story id: never recycled
    updated_before = store.execute("SELECT updated_at FROM stories WHERE id = 2").fetchone()[0]
    next_id = store.next_story_id()

    counts = store.prune(90, NOW - timedelta(days=3), now=NOW, keep_latest=1)

    assert counts == {"entries": 3, "stories": 1, "stories_trimmed": 1}
    ids = {r[0] for r in store.execute("SELECT id FROM entries")}
    assert ids == {span_new, recent, top}
    assert not set(old) & ids and span_old not in ids
    assert {r[0] for r in store.execute("SELECT id FROM stories")} == {2, 3, 4}
    s2 = store.execute("SELECT * FROM stories WHERE id = 2").fetchone()
    assert (s2["member_count"], s2["representative_id"]) == (1, span_new)
    assert s2["updated_at"] == updated_before  # pruning is not news
    assert store.next_story_id() == next_id
    assert store.execute("PRAGMA foreign_key_check").fetchall() == []
    assert store.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    orphans = store.execute(
        "SELECT count(*) FROM entries e LEFT JOIN stories s ON s.id = e.story_id WHERE s.id IS NULL"
    ).fetchone()[0]
    assert orphans == 0
    assert (
        store.execute(
            "SELECT count(*) FROM simhash_bands WHERE entry_id NOT IN (SELECT id FROM entries)"
        ).fetchone()[0]
        == 0
    )
    # The full-text index forgot the pruned entries too.
    assert store.search("old1") == [] and len(store.search("recent")) == 1


def test_prune_keeps_a_story_still_inside_a_digest_window(store: Store) -> None:
    a, b = _feed_ids(store)
    with store.transaction():
        _add(store, a, "ancient", 1, age_days=150)
        _add(store, b, "late-report", 1, age_days=2)  # the story was seen 2 days ago
        _add(store, a, "filler", 2, age_days=0)
    counts = store.prune(90, NOW - timedelta(days=7), now=NOW, keep_latest=1)
    assert counts["entries"] == 0
    assert store.execute("SELECT member_count FROM stories WHERE id = 1").fetchone()[0] == 2


def test_prune_keeps_the_newest_entries_of_an_active_feed(store: Store) -> None:
    a, b = _feed_ids(store)
    with store.transaction():
        for i in range(5):  # a slow blog: its whole feed document is old
            _add(store, a, f"blog{i}", 1 + i, age_days=300 - i)
        _add(store, b, "filler", 10, age_days=0)
    counts = store.prune(90, NOW - timedelta(days=3), now=NOW, keep_latest=3)
    assert counts["entries"] == 2
    left = {r[0] for r in store.execute("SELECT guid FROM entries WHERE feed_id = ?", (a,))}
    assert left == {"blog2", "blog3", "blog4"}  # re-polling them would add them again as new
    # Once the feed is removed from the config, nothing protects its old entries.
    store.sync_feeds([FeedSettings("https://b.example/feed")], NOW)
    assert store.prune(90, NOW - timedelta(days=3), now=NOW, keep_latest=3)["entries"] == 3


def test_prune_never_lets_a_merged_away_story_id_come_back(store: Store) -> None:
    a, b = _feed_ids(store)
    with store.transaction():
        _add(store, a, "x1", 1, age_days=200)
        _add(store, b, "x2", 2, age_days=200)
        store.merge_stories(2, 1, entry_id=None, reason="test", now=NOW - timedelta(days=199))
        store.refresh_stories([1], NOW - timedelta(days=199))
    assert store.next_story_id() == 3
    store.prune(90, NOW - timedelta(days=3), now=NOW, keep_latest=1)
    assert store.next_story_id() == 3


def test_prune_steps_commit_between_batches(store: Store) -> None:
    a, b = _feed_ids(store)
    with store.transaction():
        for i in range(7):
            _add(store, a, f"e{i}", i + 1, age_days=200 + i)
        _add(store, b, "keep", 100, age_days=0)
    seen = []
    for counts in store.prune_steps(90, NOW, now=NOW, keep_latest=1, batch=3):
        assert not store.conn.in_transaction  # the daemon may yield to its loop here
        seen.append(counts["entries"])
    assert seen[:3] == [3, 6, 6] or seen[:2] == [3, 6]
    assert seen[-1] == 6 and store.counts()["entries"] == 2


def test_checkpoint_truncates_the_wal(store: Store, tmp_path: Path) -> None:
    a, _b = _feed_ids(store)
    with store.transaction():
        _add(store, a, "w", 1, age_days=0)
    assert (tmp_path / "hk.db-wal").stat().st_size > 0
    busy, _frames, _done = store.checkpoint()
    assert busy == 0
    assert (tmp_path / "hk.db-wal").stat().st_size == 0
    store.optimize()


# -- pure helpers ------------------------------------------------------------------------------


def test_first_polls_are_spread_deterministically() -> None:
    feeds = [(i, f"https://host{i % 7}.example/feed{i}") for i in range(1, 1001)]
    now = datetime(2026, 1, 1, tzinfo=UTC)
    spread = spread_first_polls(feeds, now, rate=5, max_window=300)
    assert spread == spread_first_polls(list(reversed(feeds)), now, rate=5, max_window=300)
    times = [t for _i, t in spread]
    assert min(times) == now and max(times) <= now + timedelta(seconds=300)
    per_second: dict[datetime, int] = {}
    for t in times:
        per_second[t] = per_second.get(t, 0) + 1
    assert max(per_second.values()) <= 5
    assert sorted(i for i, _t in spread) == list(range(1, 1001))
    assert spread_first_polls([], now) == []
    few = spread_first_polls(feeds[:3], now)
    assert max(t for _i, t in few) - now <= timedelta(seconds=1)


def test_config_changes_name_feeds_digests_and_sections(tmp_path: Path) -> None:
    digest = DigestSettings(name="top", path=tmp_path / "top.atom")
    old = Config(
        path=tmp_path / "c.toml",
        database=tmp_path / "db",
        feeds=(FeedSettings("https://a/f"), FeedSettings("https://b/f", interval=600)),
        digests=(digest,),
    )
    new = replace(
        old,
        keep_days=30,
        feeds=(FeedSettings("https://b/f", interval=1200), FeedSettings("https://c/f")),
        digests=(
            replace(digest, format="rss"),
            DigestSettings(name="new", path=tmp_path / "n.atom"),
        ),
    )
    lines = config_changes(old, new)
    assert "feed added: https://c/f" in lines
    assert "feed removed: https://a/f" in lines
    assert "feed changed: https://b/f (interval: 600 → 1200)" in lines
    assert "digest added: new" in lines
    assert "digest changed: top (format: 'atom' → 'rss')" in lines
    assert "[storage.keep_days] changed (90 → 30)" in lines
    assert config_changes(old, old) == []


def test_notify_address_handles_paths_and_abstract_sockets() -> None:
    assert notify_address("/run/systemd/notify") == "/run/systemd/notify"
    assert notify_address("@sd-notify-1") == "\0sd-notify-1"
    assert notify_address("") is None and notify_address(None) is None
    assert notify_address("vsock:2:1234") is None


def test_watchdog_interval_is_half_of_watchdog_usec_for_our_pid() -> None:
    assert watchdog_interval({"WATCHDOG_USEC": "30000000"}, 42) == 15.0
    assert watchdog_interval({"WATCHDOG_USEC": "30000000", "WATCHDOG_PID": "42"}, 42) == 15.0
    assert watchdog_interval({"WATCHDOG_USEC": "30000000", "WATCHDOG_PID": "7"}, 42) is None
    assert watchdog_interval({"WATCHDOG_USEC": "0"}, 42) is None
    assert watchdog_interval({}, 42) is None


def test_journal_formatter_prefixes_every_line_of_a_traceback(tmp_path: Path) -> None:
    fmt = JournalFormatter("%(name)s: %(message)s")
    try:
        raise RuntimeError("boom")
    except RuntimeError:
        record = logging.LogRecord(
            "aggregator", logging.ERROR, __file__, 1, "failed", None, sys.exc_info()
        )
    lines = fmt.format(record).splitlines()
    assert len(lines) > 2 and all(line.startswith("<3>") for line in lines)
    warn = logging.LogRecord("x", logging.WARNING, __file__, 1, "w", None, None)
    assert fmt.format(warn) == "<4>x: w"
    with open(tmp_path / "stderr", "w") as fh:
        st = os.fstat(fh.fileno())
        assert journald_stream(fh, {"JOURNAL_STREAM": f"{st.st_dev}:{st.st_ino}"})
        assert not journald_stream(fh, {"JOURNAL_STREAM": f"{st.st_dev}:{st.st_ino + 1}"})
        assert not journald_stream(fh, {})
