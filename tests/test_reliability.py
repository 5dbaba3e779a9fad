"""Crashes, concurrent readers and storage faults, with real processes and real files."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from tests.feedgen import committed_entries, config_for, snapshot, write_feeds

CLI = [sys.executable, "-m", "aggregator"]


def poll(config: Path, *extra: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*CLI, "--config", str(config), "poll", "--all", *extra],
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def _kill_when_committed(
    proc: subprocess.Popen[bytes], db: Path, target: int, deadline: float = 240
) -> bool:
    """SIGKILL `proc` as soon as at least `target` entries are committed; False if it ended first.

    The kill point is a row count the test observes, not a sleep, so a slow or loaded machine
    changes only how long the wait takes, never where the kill lands."""
    give_up = time.monotonic() + deadline
    while proc.poll() is None:
        if committed_entries(db) >= target:
            proc.send_signal(signal.SIGKILL)
            return True
        if time.monotonic() > give_up:
            proc.kill()
            raise AssertionError(f"no {target} entries committed within {deadline} s")
        time.sleep(0.005)
    return False


@pytest.mark.slow
def test_kill_9_during_ingest_loses_nothing_and_ends_like_a_clean_run(tmp_path: Path) -> None:
    per_feed, n_feeds = 12, 300
    feeds = write_feeds(tmp_path / "feeds", n_feeds, per_feed, seed=7)
    clean_cfg = tmp_path / "clean.toml"
    clean_cfg.write_text(config_for(feeds, tmp_path / "clean.db"))
    assert poll(clean_cfg).returncode == 0
    clean = snapshot(tmp_path / "clean.db")
    assert len(clean["entries"]) == n_feeds * per_feed

    crash_db = tmp_path / "crash.db"
    crash_cfg = tmp_path / "crash.toml"
    crash_cfg.write_text(config_for(feeds, crash_db))
    # Six kills, each once a few more feeds' entries have been committed than before: the
    # first lands inside the first feeds' transactions, the last with most of the feeds stored.
    # Each later run re-polls every feed and must skip what is stored and add the rest.
    for step in (1, 30, 80, 140, 200, 260):
        proc = subprocess.Popen(
            [*CLI, "--config", str(crash_cfg), "poll", "--all"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        killed = _kill_when_committed(proc, crash_db, step * per_feed)
        proc.wait(timeout=60)
        assert killed, f"the poll ended before {step} feeds were stored"
        snapshot(crash_db)  # consistent after every kill
        assert committed_entries(crash_db) < n_feeds * per_feed, "the kill came too late"
    final = poll(crash_cfg)
    assert final.returncode == 0, final.stderr
    crashed = snapshot(crash_db)
    assert crashed["entries"] == clean["entries"]
    assert crashed["stories"] == clean["stories"]
    assert crashed["partition"] == clean["partition"]


@pytest.mark.slow
def test_readers_never_see_a_locked_database_during_a_large_poll(tmp_path: Path) -> None:
    feeds = write_feeds(tmp_path / "feeds", 300, 12, seed=3)
    cfg = tmp_path / "agg.toml"
    db = tmp_path / "agg.db"
    cfg.write_text(config_for(feeds, db))
    subprocess.run([*CLI, "--config", str(cfg), "feeds"], check=True, capture_output=True)
    stop = threading.Event()
    errors: list[str] = []
    reads = 0

    def reader() -> None:
        nonlocal reads
        while not stop.is_set():
            try:
                conn = sqlite3.connect(db, timeout=0.05)
                conn.execute("SELECT count(*) FROM entries").fetchone()
                conn.execute(
                    "SELECT * FROM story_overview ORDER BY feed_count DESC LIMIT 5"
                ).fetchall()
                conn.close()
                reads += 1
            except sqlite3.OperationalError as exc:
                errors.append(str(exc))

    # Datasette and a running daemon keep a connection open. Without any open connection, the
    # reader threads would race each other: the last connection to close checkpoints and
    # removes the WAL under an exclusive lock. That is SQLite's doing, not the poller's.
    keeper = sqlite3.connect(db)
    keeper.execute("SELECT 1 FROM feeds LIMIT 1").fetchall()
    threads = [threading.Thread(target=reader) for _ in range(2)]
    for t in threads:
        t.start()
    try:
        result = poll(cfg)
    finally:
        stop.set()
        for t in threads:
            t.join()
        keeper.close()
    assert result.returncode == 0, result.stderr
    assert reads > 10
    assert [e for e in errors if "locked" in e] == []


def _mount_tmpfs(path: Path, size: str) -> None:
    path.mkdir()
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)], capture_output=True
    )
    if done.returncode != 0:
        pytest.skip("cannot mount a tmpfs here (needs root): " + done.stderr.decode().strip())


def _umount(path: Path) -> None:
    subprocess.run(["umount", "-l", str(path)], capture_output=True)


def test_full_disk_gives_a_clear_error_and_keeps_what_was_committed(tmp_path: Path) -> None:
    mnt = tmp_path / "small"
    _mount_tmpfs(mnt, "600k")
    try:
        few = write_feeds(tmp_path / "few", 3, 3, seed=1)
        many = write_feeds(tmp_path / "many", 200, 20, seed=2)
        cfg = tmp_path / "agg.toml"
        cfg.write_text(config_for(few, mnt / "agg.db"))
        assert poll(cfg).returncode == 0
        before = snapshot(mnt / "agg.db")["entries"]
        cfg.write_text(config_for(few + many, mnt / "agg.db"))
        result = poll(cfg)
        assert result.returncode == 3, (result.returncode, result.stderr[-2000:])
        assert "disk is full" in result.stderr
        assert str(mnt / "agg.db") in result.stderr
        assert "Traceback" not in result.stderr
        after = snapshot(mnt / "agg.db")["entries"]
        assert before <= after  # nothing committed was lost
    finally:
        _umount(mnt)


def test_read_only_database_gives_a_clear_error(tmp_path: Path) -> None:
    mnt = tmp_path / "ro"
    _mount_tmpfs(mnt, "20m")
    try:
        feeds = write_feeds(tmp_path / "feeds", 2, 2)
        cfg = tmp_path / "agg.toml"
        cfg.write_text(config_for(feeds, mnt / "agg.db"))
        assert poll(cfg).returncode == 0
        subprocess.run(["mount", "-o", "remount,ro", str(mnt)], check=True)
        result = poll(cfg)
        assert result.returncode == 3
        assert "read-only" in result.stderr and str(mnt / "agg.db") in result.stderr
        assert "Traceback" not in result.stderr
    finally:
        _umount(mnt)


def test_corrupted_database_gives_a_clear_error(tmp_path: Path) -> None:
    feeds = write_feeds(tmp_path / "feeds", 2, 2)
    cfg = tmp_path / "agg.toml"
    db = tmp_path / "agg.db"
    cfg.write_text(config_for(feeds, db))
    assert poll(cfg).returncode == 0
    data = bytearray(db.read_bytes())
    data[0:16] = b"garbage!garbage!"
    db.write_bytes(bytes(data))
    for suffix in ("-wal", "-shm"):
        Path(str(db) + suffix).unlink(missing_ok=True)
    result = poll(cfg)
    assert result.returncode == 3
    assert str(db) in result.stderr and "backup" in result.stderr
    assert "Traceback" not in result.stderr


def test_open_descriptors_do_not_grow_over_cycles(tmp_path: Path) -> None:
    """In-process: many cycles with one Poller leave no descriptors behind."""
    import asyncio

    from aggregator import config as config_mod
    from aggregator.pipeline import Poller
    from aggregator.store import Store

    feeds = write_feeds(tmp_path / "feeds", 5, 3)
    cfg_path = tmp_path / "agg.toml"
    cfg_path.write_text(config_for(feeds, tmp_path / "agg.db"))
    cfg = config_mod.load(cfg_path)

    def fds() -> int:
        return len(os.listdir("/proc/self/fd"))

    async def go() -> list[int]:
        counts = []
        with Store.open(cfg.database) as store:
            store.sync_feeds(cfg.feeds, __import__("aggregator.pipeline").pipeline.utcnow())
            async with Poller(cfg, store, workers=1) as poller:
                for i in range(30):
                    await poller.run_cycle(poll_all=True)
                    if i in (5, 29):
                        counts.append(fds())
        return counts

    first, last = asyncio.run(go())
    assert last <= first + 2


@pytest.mark.slow
def test_long_reader_neither_stalls_the_poller_nor_leaves_the_wal_growing(tmp_path: Path) -> None:
    """A read transaction held open across a whole poll: the poll still commits and exits, the
    reader keeps its snapshot, a checkpoint meanwhile reports busy instead of waiting, and once
    the reader ends a checkpoint empties the WAL and later polls reuse it instead of growing it."""
    from aggregator.store import Store

    feeds = write_feeds(tmp_path / "feeds", 80, 10, seed=5)
    more = write_feeds(tmp_path / "more", 80, 10, seed=6)
    for i, p in enumerate(more):  # other feed URLs, so the second poll adds as much again
        p.rename(p.with_name(f"more{i:05d}.xml"))
    more = sorted((tmp_path / "more").glob("*.xml"))
    cfg = tmp_path / "agg.toml"
    db = tmp_path / "agg.db"
    wal = Path(str(db) + "-wal")
    cfg.write_text(config_for(feeds, db))
    subprocess.run([*CLI, "--config", str(cfg), "feeds"], check=True, capture_output=True)

    reader = sqlite3.connect(db, isolation_level=None)
    try:
        reader.execute("BEGIN")
        seen_before = reader.execute("SELECT count(*) FROM entries").fetchone()[0]
        result = poll(cfg, timeout=120)  # the reader stays open for the whole poll
        assert result.returncode == 0, result.stderr[-2000:]
        # The poller committed everything while the reader still held its old snapshot.
        assert reader.execute("SELECT count(*) FROM entries").fetchone()[0] == seen_before
        with sqlite3.connect(db) as fresh:
            assert fresh.execute("SELECT count(*) FROM entries").fetchone()[0] == 80 * 10
        wal_with_reader = wal.stat().st_size
        assert wal_with_reader > 0
        # A checkpoint cannot finish past the reader: it says busy after its short wait.
        with Store.open(db) as store:
            busy, _, _ = store.checkpoint(mode="TRUNCATE", wait_ms=100)
        assert busy == 1
    finally:
        reader.execute("ROLLBACK")
        reader.close()

    with Store.open(db) as store:
        busy, _, _ = store.checkpoint(mode="TRUNCATE", wait_ms=100)
    assert busy == 0 and wal.stat().st_size == 0
    cfg.write_text(config_for(feeds + more, db))
    result = poll(cfg, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    with sqlite3.connect(db) as fresh:
        assert fresh.execute("SELECT count(*) FROM entries").fetchone()[0] == 160 * 10
    # More written than in the first poll, without a reader: automatic checkpoints recycle
    # the WAL (about 4 MB) instead of appending to it as they had to while the reader stayed.
    assert wal.stat().st_size < wal_with_reader // 2
