"""Issue 17's memory attack: four greedy feeds polled together by one `aggregator poll`.

A 3 MB JSON Feed of 1,000,000 empty items, an RSS feed of 100,000 items, a feed whose one
title is 20 MB, and an 18 MB feed whose HTML grows past 64 MiB once sanitised (185 summaries
of `<a>x</a>` x 12,500), generated in a temporary folder and polled as file:// feeds with the
default worker count. Prints wall time, peak RSS and PSS of the whole process tree, the
database size and each feed's outcome; exits 1 when the peak PSS reaches 600 MB or the poll
fails.

    .venv/bin/python benchmarks/attack_memory.py [--keep DIR]
"""

from __future__ import annotations

import sqlite3
import sys
from pathlib import Path

from _common import PYTHON, run_check, run_measured
from corpus_poll_check import write_big_title, write_many_items, write_million_empty_json

PSS_LIMIT_MB = 600


def write_inflating(path: Path) -> None:
    body = "<a>x</a>" * 12_500  # 100 kB that sanitises to ~425 kB
    items = "".join(
        f"<item><guid>g{i}</guid><title>Item {i}</title>"
        f"<description><![CDATA[{body}]]></description></item>"
        for i in range(185)
    )
    path.write_text(
        '<?xml version="1.0"?><rss version="2.0"><channel><title>t</title>'
        + items
        + "</channel></rss>",
        encoding="utf-8",
    )


def check(work: Path) -> int:
    feeds = {
        "empty-1m.json": write_million_empty_json,
        "items-100k.xml": lambda p: write_many_items(p, 100_000),
        "title-20mb.xml": write_big_title,
        "inflating.xml": write_inflating,
    }
    for name, write in feeds.items():
        write(work / name)
    database = work / "attack.db"
    for suffix in ("", "-wal", "-shm"):
        Path(f"{database}{suffix}").unlink(missing_ok=True)
    config = work / "aggregator.toml"
    config.write_text(
        f'[storage]\ndatabase = "{database}"\n'
        + "".join(f'[[feeds]]\nurl = "{(work / n).as_uri()}"\n' for n in feeds),
        encoding="utf-8",
    )
    run = run_measured([PYTHON, "-m", "aggregator", "--config", str(config), "poll"], timeout=600)
    with sqlite3.connect(database) as db:
        outcomes = db.execute("SELECT config_url, error_kind, error_message FROM feeds").fetchall()
        entries = db.execute("SELECT count(*) FROM entries").fetchone()[0]
    print(
        f"exit {run.returncode}, wall {run.seconds:.1f} s, peak RSS {run.peak_rss_mb:.0f} MB, "
        f"peak PSS {run.peak_pss_mb:.0f} MB (limit {PSS_LIMIT_MB}), database "
        f"{database.stat().st_size / 1e6:.1f} MB, {entries} entries"
    )
    for url, kind, message in outcomes:
        print(f"  {url.rsplit('/', 1)[1]:16} {kind or 'ok':10} {message or ''}")
    ok = run.returncode == 0 and run.peak_pss_mb < PSS_LIMIT_MB
    print("PASS" if ok else "FAIL")
    return 0 if ok else 1


def main(argv: list[str] | None = None) -> int:
    return run_check(check, "attack-memory-", argv, __doc__ or "")


if __name__ == "__main__":
    sys.exit(main())
