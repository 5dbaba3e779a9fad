"""Issue 8's outside check: six `kill -9` during ingest of the UCI set, then one full poll.

    .venv/bin/python benchmarks/crash_check.py [--seed 8] [--kills 6] [--keep DIR]

The labelled UCI CSV (../shared/labelled/uci-news-5k.csv) becomes one RSS 2.0 feed per
publisher (1,734 feeds, 5,000 entries; guid = row ID, pubDate = TIMESTAMP, title, link) with the
converter of benchmarks/cluster_eval.py. Then:

A. one clean `aggregator poll --all` into a.db, timing its ingest (first to last entry commit);
B. into b.db, `aggregator poll --all` six times, each SIGKILLed at a random moment of its ingest:
   the kill waits until the run has committed new entries, then a seeded random delay drawn
   from a share of the clean ingest time; a kill only counts when the process was still running
   and b.db still lacked entries afterwards (otherwise the check says so and fails);
   after each kill: integrity, and whether any worker process outlived the poller;
   then (extra, --merge-kill, on by default) one more run killed 2 s after its last entry
   commit, while it runs the cycle's story merge pass; then one `poll --all` to completion.

Prints PRAGMA integrity_check, duplicate (feed, guid), entries missing/extra against A, story
counts, whether the partitions (the set of entry keys of each story) are identical, and whether
every entry has a story. Exit status 0 only when everything agrees.
"""

from __future__ import annotations

import argparse
import os
import random
import signal
import sqlite3
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

import psutil

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import PYTHON, ROOT, need_shared  # noqa: E402
from cluster_eval import read_rows, write_config, write_feeds  # noqa: E402

sys.path.insert(0, str(ROOT))
from tests.feedgen import committed_entries  # noqa: E402

CLI = [PYTHON, "-m", "aggregator"]


def clean_run(config: Path, db: Path) -> tuple[float, float, float]:
    """Poll everything once; returns (total seconds, seconds to the first entry, ingest seconds)."""
    start = time.perf_counter()
    proc = subprocess.Popen(
        [*CLI, "--config", str(config), "poll", "--all"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    first = last = None
    seen = 0
    while proc.poll() is None:
        n = committed_entries(db)
        now = time.perf_counter() - start
        if n > seen:
            first = first if first is not None else now
            last, seen = now, n
        time.sleep(0.05)
    err = proc.stderr.read() if proc.stderr else ""
    if proc.returncode != 0:
        sys.exit(f"clean poll failed ({proc.returncode}): {err[-2000:]}")
    total = time.perf_counter() - start
    return total, first or 0.0, (last or total) - (first or 0.0)


def killed_run(
    config: Path, db: Path, delay: float, expected: int, *, after_ingest: bool = False
) -> dict[str, object]:
    """Start a poll, wait for its first new commit (or, `after_ingest`, its last one), sleep
    `delay`, SIGKILL it."""
    before = committed_entries(db)
    proc = subprocess.Popen(
        [*CLI, "--config", str(config), "poll", "--all"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 600
    target = expected if after_ingest else before + 1
    while proc.poll() is None and committed_entries(db) < target and time.monotonic() < deadline:
        time.sleep(0.02)
    started = committed_entries(db)
    time.sleep(delay)
    alive = proc.poll() is None
    tree: list[psutil.Process] = []
    if alive:
        try:
            tree = psutil.Process(proc.pid).children(recursive=True)
        except psutil.NoSuchProcess:
            pass
        proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=60)
    # Workers notice the closed pipe and leave; give them a moment, then count survivors.
    gone, still = psutil.wait_procs(tree, timeout=10)
    after = committed_entries(db)
    return {
        "before": before,
        "started": started,
        "after": after,
        "alive_at_kill": alive,
        "mid_ingest": alive and before < after < expected,
        "in_merge_pass": alive and before < after == expected,
        "orphans": len(still),
        "delay": delay,
    }


def check(db: Path) -> dict[str, object]:
    conn = sqlite3.connect(db)
    try:
        integrity = [r[0] for r in conn.execute("PRAGMA integrity_check")]
        fk = conn.execute("PRAGMA foreign_key_check").fetchall()
        dupes = conn.execute(
            "SELECT count(*) FROM (SELECT 1 FROM entries"
            " GROUP BY feed_id, guid HAVING count(*) > 1)"
        ).fetchone()[0]
        no_story = conn.execute(
            "SELECT count(*) FROM entries e LEFT JOIN stories s ON s.id = e.story_id"
            " WHERE s.id IS NULL"
        ).fetchone()[0]
        empty = conn.execute(
            "SELECT count(*) FROM stories s WHERE NOT EXISTS"
            " (SELECT 1 FROM entries e WHERE e.story_id = s.id)"
        ).fetchone()[0]
        stale = conn.execute(
            "SELECT count(*) FROM stories s WHERE member_count !="
            " (SELECT count(*) FROM entries e WHERE e.story_id = s.id)"
        ).fetchone()[0]
        pending = conn.execute(
            "SELECT count(*) FROM meta WHERE key LIKE 'merge_pending%'"
        ).fetchone()[0]
        rows = conn.execute(
            "SELECT f.config_url, e.guid, e.content_hash, e.story_id"
            " FROM entries e JOIN feeds f ON f.id = e.feed_id"
        ).fetchall()
    finally:
        conn.close()
    groups: dict[object, set[tuple[str, str]]] = defaultdict(set)
    for url, guid, _, sid in rows:
        groups[sid].add((url, guid))
    return {
        "integrity": "ok" if integrity == ["ok"] else "; ".join(integrity[:5]),
        "foreign_key_violations": len(fk),
        "duplicates": dupes,
        "without_story": no_story,
        "empty_stories": empty,
        "stale_counts": stale,
        "merge_pending": pending,
        "entries": {(u, g, h) for u, g, h, _ in rows},
        "partition": {frozenset(m) for m in groups.values()},
    }


def main() -> int:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--csv", type=Path)
    ap.add_argument("--seed", type=int, default=8)
    ap.add_argument("--kills", type=int, default=6)
    ap.add_argument(
        "--merge-kill",
        type=float,
        default=2.0,
        metavar="SECONDS",
        help="then one more kill this long after the last entry commit, in the "
        "merge pass (0: skip)",
    )
    ap.add_argument("--keep", type=Path, help="work here and keep feeds and databases")
    args = ap.parse_args()
    csv_path = args.csv or need_shared("labelled", "uci-news-5k.csv")
    os.chdir(ROOT)  # `python -m aggregator` imports the checkout's package

    with tempfile.TemporaryDirectory(prefix="crash-check-") as tmp:
        work = args.keep or Path(tmp)
        work.mkdir(parents=True, exist_ok=True)
        (work / "feeds").mkdir(exist_ok=True)
        rows = read_rows(csv_path)
        feeds = write_feeds(rows, work / "feeds")
        a_db, b_db = work / "a.db", work / "b.db"
        for p in (a_db, b_db):
            for suffix in ("", "-wal", "-shm"):
                Path(str(p) + suffix).unlink(missing_ok=True)
        (work / "a").mkdir(exist_ok=True)
        (work / "b").mkdir(exist_ok=True)
        a_cfg = write_config(work / "a", feeds, a_db)
        b_cfg = write_config(work / "b", feeds, b_db)
        print(f"{len(feeds)} feeds, {len(rows)} entries in {work}")

        total, first, ingest = clean_run(a_cfg, a_db)
        a = check(a_db)
        expected = len(a["entries"])  # type: ignore[arg-type]
        print(
            f"A clean poll --all: {total:.1f} s (first entry after {first:.1f} s, "
            f"ingest {ingest:.1f} s), {expected} entries, {len(a['partition'])} stories"
        )  # type: ignore[arg-type]

        rng = random.Random(args.seed)
        kills = []
        for i in range(args.kills):
            # Later runs start with fewer feeds to ingest (new feeds are polled first), so keep
            # each delay to a small share of a clean ingest: every kill must land mid-ingest.
            delay = rng.uniform(0.02, 0.12) * ingest
            k = killed_run(b_cfg, b_db, delay, expected)
            state = check(b_db)
            kills.append(k)
            print(
                f"B kill {i + 1}: after {delay:.2f} s of ingest, entries {k['before']} -> "
                f"{k['after']}, mid-ingest {k['mid_ingest']}, worker processes left "
                f"{k['orphans']}, integrity {state['integrity']}, duplicates "
                f"{state['duplicates']}, without story {state['without_story']}"
            )
        merge_kill = None
        if args.merge_kill:
            # Not in the check, but where a random kill most often lands: after the
            # last entry commit, in the cycle's merge pass (the merge-pending marker's case).
            merge_kill = killed_run(b_cfg, b_db, args.merge_kill, expected, after_ingest=True)
            state = check(b_db)
            print(
                f"B extra kill {args.merge_kill:.1f} s after the last entry commit: entries "
                f"{merge_kill['before']} -> {merge_kill['after']}, in the merge pass "
                f"{merge_kill['in_merge_pass']}, merge pending {state['merge_pending']}, "
                f"integrity {state['integrity']}, worker processes left "
                f"{merge_kill['orphans']}"
            )
        start = time.perf_counter()
        final = subprocess.run(
            [*CLI, "--config", str(b_cfg), "poll", "--all"], capture_output=True, text=True
        )
        print(f"B final poll --all: exit {final.returncode}, {time.perf_counter() - start:.1f} s")
        if final.returncode != 0:
            print(final.stderr[-3000:])
        b = check(b_db)

    a_entries, b_entries = a["entries"], b["entries"]
    a_part, b_part = a["partition"], b["partition"]
    assert isinstance(a_entries, set) and isinstance(b_entries, set)
    assert isinstance(a_part, set) and isinstance(b_part, set)
    print()
    print(f"PRAGMA integrity_check        A {a['integrity']}  B {b['integrity']}")
    print(
        f"foreign key violations       A {a['foreign_key_violations']}  B {b['foreign_key_violations']}"
    )
    print(f"duplicate (feed, guid)       A {a['duplicates']}  B {b['duplicates']}")
    print(
        f"entries                      A {len(a_entries)}  B {len(b_entries)}  "
        f"missing in B {len(a_entries - b_entries)}  extra in B {len(b_entries - a_entries)}"
    )
    print(f"stories                      A {len(a_part)}  B {len(b_part)}")
    print(
        f"partitions identical         {a_part == b_part}"
        + (
            ""
            if a_part == b_part
            else f" ({len(a_part - b_part)} stories of A not in B, {len(b_part - a_part)} of B not in A)"
        )
    )
    print(f"every entry has a story      A {a['without_story'] == 0}  B {b['without_story'] == 0}")
    print(
        f"empty stories / stale counts A {a['empty_stories']}/{a['stale_counts']}  "
        f"B {b['empty_stories']}/{b['stale_counts']}"
    )
    print(f"merge pass left pending      A {a['merge_pending']}  B {b['merge_pending']}")
    landed = sum(bool(k["mid_ingest"]) for k in kills)
    orphans = sum(int(k["orphans"]) for k in kills)  # type: ignore[call-overload]
    print(
        f"kills mid-ingest             {landed}/{len(kills)}; worker processes outliving "
        f"a killed poller: {orphans}"
    )
    if merge_kill is not None:
        print(
            f"extra kill in the merge pass  {merge_kill['in_merge_pass']}; worker processes "
            f"left {merge_kill['orphans']}"
        )
        landed_merge = bool(merge_kill["in_merge_pass"]) and merge_kill["orphans"] == 0
    else:
        landed_merge = True
    ok = (
        landed_merge
        and a["integrity"] == b["integrity"] == "ok"
        and b["duplicates"] == 0
        and a_entries == b_entries
        and a_part == b_part
        and b["without_story"] == 0
        and b["empty_stories"] == 0
        and b["stale_counts"] == 0
        and b["merge_pending"] == 0
        and b["foreign_key_violations"] == 0
        and landed == len(kills)
        and orphans == 0
        and final.returncode == 0
    )
    print("RESULT:", "PASS" if ok else "FAIL")
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
