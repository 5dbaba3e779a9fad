"""Issue 4's outside check: every corpus file plus two generated giants, polled by one CLI run.

Configures every regular file under ../shared/corpora/feedparser-tests/ and
../shared/corpora/hostile/ (recursively, LICENSE files included: a poller must record a
non-feed as a failure like any other), plus generated giants (a feed whose entry title is
20 MB, a feed of 15,000 items of which the newest 1,000 are kept, a feed of 100,000 items and
a 3 MB JSON Feed of 1,000,000 empty items, both refused before parsing), as file:// feeds in
one config, and
runs ONE `aggregator poll` as a subprocess, measuring wall time and the peak RSS of its whole
process tree. Prints PASS/FAIL per expectation, then the figures; exits 1 when one fails.

    .venv/bin/python benchmarks/corpus_poll_check.py [--keep DIR]
"""

from __future__ import annotations

import json
import sqlite3
import sys
import time
from collections import Counter
from pathlib import Path

from _common import PYTHON, need_shared, run_check, run_measured

TIME_LIMIT_S = 300
MEMORY_LIMIT_MB = (1 << 30) / 1e6  # 1 GiB, in the MB run_measured reports
TITLE_BYTES = 20_000_000
ITEMS = 15_000  # over the 1,000 kept per document, under the 20,000 that are not parsed at all
HUGE_ITEMS = 100_000
KEPT = 1_000
# What must never leak out of /etc/passwd through an external entity or DTD.
PASSWD_MARKERS = ("root:x:0:0", "/usr/sbin/nologin", "daemon:x:1:1")


def corpus_files() -> list[Path]:
    roots = [need_shared("corpora", "feedparser-tests"), need_shared("corpora", "hostile")]
    return sorted(p for root in roots for p in root.rglob("*") if p.is_file())


def write_big_title(path: Path) -> None:
    """An RSS feed whose one entry's title is 20 MB of words (under the 20 MiB body cap)."""
    words = b"enormous title words "
    title = (words * (TITLE_BYTES // len(words) + 1))[:TITLE_BYTES]
    with path.open("wb") as out:
        out.write(
            b'<?xml version="1.0" encoding="utf-8"?>\n<rss version="2.0"><channel>'
            b"<title>A feed with a 20 MB title</title><link>https://example.com/</link>"
            b"<description>generated</description><item><title>"
        )
        out.write(title)
        out.write(
            b"</title><link>https://example.com/big-title</link>"
            b"<guid>https://example.com/big-title</guid>"
            b"<pubDate>Mon, 01 Jan 2024 10:00:00 GMT</pubDate></item>"
            b"<item><title>A normal entry beside it</title>"
            b"<link>https://example.com/normal</link></item></channel></rss>\n"
        )


def write_million_empty_json(path: Path) -> None:
    """A 3 MB JSON Feed whose items are 1,000,000 empty objects."""
    path.write_text(
        '{"version": "https://jsonfeed.org/version/1.1", "title": "empty",'
        ' "items": [' + ",".join(["{}"] * 1_000_000) + "]}",
        encoding="utf-8",
    )


def write_many_items(path: Path, items: int = ITEMS) -> None:
    """An RSS feed of small, distinct items, one every ten minutes going back."""
    vocabulary = (
        "market storm election river court vaccine border rocket budget strike "
        "harbour museum festival drought merger summit protest satellite"
    ).split()
    with path.open("w", encoding="utf-8") as out:
        out.write(
            '<?xml version="1.0" encoding="utf-8"?>\n<rss version="2.0"><channel>'
            f"<title>A feed with {items:,} items</title><link>https://example.com/many</link>"
            "<description>generated</description>\n"
        )
        start = 1_735_689_600  # 2025-01-01T00:00:00Z
        for i in range(items):
            a, b = vocabulary[i % 18], vocabulary[(i // 18) % 18]
            when = time.strftime("%a, %d %b %Y %H:%M:%S GMT", time.gmtime(start - 600 * i))
            out.write(
                f"<item><title>Item {i}: {a} {b}</title>"
                f"<link>https://example.com/many/{i}</link><pubDate>{when}</pubDate></item>\n"
            )
        out.write("</channel></rss>\n")


def toml_string(value: str) -> str:
    return json.dumps(value)  # a JSON string of this text is a valid TOML basic string


def main(argv: list[str] | None = None) -> int:
    return run_check(check, "corpus-poll-", argv, __doc__ or "")


def check(work: Path) -> int:
    files = corpus_files()
    big_title, many_items = work / "title-20mb.xml", work / "items-15k.xml"
    huge_items, empty_json = work / "items-100k.xml", work / "empty-1m.json"
    write_big_title(big_title)
    write_many_items(many_items)
    write_many_items(huge_items, HUGE_ITEMS)
    write_million_empty_json(empty_json)
    generated = [big_title, many_items, huge_items, empty_json]
    files += generated
    urls = [f.resolve().as_uri() for f in files]
    database = work / "corpus.db"
    for suffix in ("", "-wal", "-shm"):
        Path(f"{database}{suffix}").unlink(missing_ok=True)
    config = work / "aggregator.toml"
    config.write_text(
        f"[storage]\ndatabase = {toml_string(str(database))}\n\n"
        + "".join(f"[[feeds]]\nurl = {toml_string(u)}\n" for u in urls),
        encoding="utf-8",
    )
    print(
        f"{len(urls)} feeds configured ({len(files) - len(generated)} corpus files + "
        f"{len(generated)} generated); polling",
        flush=True,
    )

    run = run_measured(
        [PYTHON, "-m", "aggregator", "--config", str(config), "poll"], timeout=TIME_LIMIT_S + 60
    )

    with sqlite3.connect(database) as db:
        rows = {
            r[0]: r
            for r in db.execute(
                "SELECT config_url, last_fetched_at, last_success_at, error_kind, retired_at"
                " FROM feeds"
            )
        }
        leaks = passwd_in_database(db)
        entries = db.execute("SELECT count(*) FROM entries").fetchone()[0]
        stories = db.execute("SELECT count(*) FROM stories").fetchone()[0]
        many, newest = db.execute(
            "SELECT count(*), sum(e.title LIKE 'Item _:%' OR e.title LIKE 'Item __:%'"
            " OR e.title LIKE 'Item ___:%') FROM entries e JOIN feeds f ON f.id = e.feed_id"
            " WHERE f.config_url = ?",
            (many_items.resolve().as_uri(),),
        ).fetchone()
        longest = db.execute("SELECT max(length(title)) FROM entries").fetchone()[0]

    results: list[tuple[bool, str]] = []

    def expect(ok: bool, what: str) -> None:
        results.append((ok, what))

    expect(run.returncode == 0, f"exit 0 (got {run.returncode})")
    expect(run.seconds < TIME_LIMIT_S, f"within {TIME_LIMIT_S} s ({run.seconds:.1f} s)")
    expect("Traceback" not in run.stderr, "no traceback on stderr")
    expect(
        run.peak_rss_mb < MEMORY_LIMIT_MB,
        f"peak memory under 1 GiB ({run.peak_rss_mb:.0f} MB of {MEMORY_LIMIT_MB:.0f} MB)",
    )
    missing = [u for u in urls if u not in rows]
    expect(
        not missing,
        f"every configured feed has a row in feeds ({len(urls) - len(missing)}"
        f"/{len(urls)})" + (f"; missing e.g. {missing[0]}" if missing else ""),
    )
    unpolled = [u for u in urls if u in rows and rows[u][1] is None]
    expect(
        not unpolled,
        "every feed has an outcome recorded (last_fetched_at set) "
        f"({len(urls) - len(unpolled)}/{len(urls)})"
        + (f"; e.g. {unpolled[0]}" if unpolled else ""),
    )
    out_leaks = [m for m in PASSWD_MARKERS if m in run.stdout or m in run.stderr]
    expect(
        not out_leaks,
        f"nothing from /etc/passwd in stdout/stderr (markers {PASSWD_MARKERS})"
        + (f"; found {out_leaks}" if out_leaks else ""),
    )
    expect(
        not leaks,
        "nothing from /etc/passwd in any text column of the database"
        + (f"; found in {leaks[:5]}" if leaks else ""),
    )
    expect(
        many == KEPT and newest == KEPT,
        f"the {ITEMS:,}-item feed kept its newest {KEPT:,} entries ({many} stored, "
        f"{newest} of them items 0-999)",
    )
    for path in (huge_items, empty_json):
        row = rows.get(path.resolve().as_uri())
        expect(
            row is not None and row[3] == "too_large",
            f"{path.name} is refused before parsing (error kind {row[3] if row else 'no row'})",
        )
    title_row = rows.get(big_title.resolve().as_uri())
    expect(
        title_row is not None and title_row[2] is not None,
        f"the 20 MB-title feed was polled successfully (longest stored title: {longest} chars; "
        f"error: {title_row[3] if title_row else 'no row'})",
    )

    for ok, what in results:
        print(f"{'PASS' if ok else 'FAIL'}  {what}")
    print()
    print(
        f"wall {run.seconds:.1f} s, CPU {run.cpu_seconds:.1f} s, peak RSS of the process tree "
        f"{run.peak_rss_mb:.0f} MB, exit {run.returncode}"
    )
    ok_count = sum(1 for r in rows.values() if r[3] is None and r[1] is not None)
    kinds = Counter(r[3] for r in rows.values() if r[3] is not None)
    print(
        f"feeds: {len(rows)} rows, {ok_count} ok, {sum(kinds.values())} failed "
        f"({', '.join(f'{k} {n}' for k, n in kinds.most_common())}); "
        f"{sum(1 for r in rows.values() if r[4])} retired"
    )
    print(f"entries {entries}, stories {stories}")
    print("poll summary: " + (run.stdout.splitlines()[0] if run.stdout else "(no output)"))
    tail = [line for line in run.stderr.splitlines() if not line.startswith("WARNING ")]
    if tail:
        print("stderr (other than per-feed warnings):")
        for line in tail[-15:]:
            print(f"    {line[:300]}")
    failed = [what for ok, what in results if not ok]
    print(f"\n{len(results) - len(failed)}/{len(results)} expectations pass")
    return 1 if failed else 0


def passwd_in_database(db: sqlite3.Connection) -> list[str]:
    """`table.column` for every column of every table that holds a /etc/passwd marker."""
    found = []
    tables = [
        r[0]
        for r in db.execute(
            "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%'"
        )
    ]
    for table in tables:
        columns = [r[1] for r in db.execute(f'PRAGMA table_info("{table}")')]
        for column in columns:
            for marker in PASSWD_MARKERS:
                hit = db.execute(
                    f'SELECT 1 FROM "{table}" WHERE instr(CAST("{column}" AS TEXT), ?) > 0 LIMIT 1',
                    (marker,),
                ).fetchone()
                if hit:
                    found.append(f"{table}.{column} ({marker})")
    return found


if __name__ == "__main__":
    sys.exit(main())
