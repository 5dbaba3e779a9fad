"""The largest stories of three real days, from a real poll, for a person to read.

For each day the raw feeds are polled as file:// feeds with `aggregator poll --all` into a
temporary database, and the N largest stories (by members) are printed with every member's
title and outlet, so anyone can check that each story reports one happening:

* news-en-2020: each outlet's first snapshot dated 2020-08-05 or 2020-08-06 (20 feeds);
* news-de-2024-12-21: the 13 German feeds of that day;
* fr-2024-10-28: the hand-labelled French day (its records written as one RSS file per outlet,
  as benchmarks/cluster_eval.py does), with each member's gold label beside it.

    .venv/bin/python benchmarks/largest_stories.py            # 10 per day
    .venv/bin/python benchmarks/largest_stories.py --top 20 --day de
"""

from __future__ import annotations

import argparse
import contextlib
import shutil
import sqlite3
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from urllib.parse import urlsplit

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared"
sys.path.insert(0, str(ROOT / "benchmarks"))

import cluster_eval  # noqa: E402


def english_day(directory: Path) -> list[Path]:
    corpus = SHARED / "corpora" / "news-en-2020"
    feeds = []
    for outlet in sorted(p for p in corpus.iterdir() if p.is_dir()):
        snapshots = sorted(
            p for p in outlet.iterdir() if p.name.startswith(("20200805", "20200806"))
        )
        if snapshots:
            target = directory / f"{outlet.name}.xml"
            shutil.copyfile(snapshots[0], target)
            feeds.append(target)
    return feeds


def english_history(directory: Path, aggregator: str, days: int) -> Path:
    """news-en-2020 as a daemon would have seen it: every outlet's snapshots of the `days`
    days before 5 August 2020, one poll per date (a feed keeps its last document on a date it
    has none), then the day's snapshots (`english_day`). Returns the database."""
    corpus = SHARED / "corpora" / "news-en-2020"
    outlets = sorted(p for p in corpus.iterdir() if p.is_dir())
    first = (datetime(2020, 8, 5) - timedelta(days=days)).strftime("%Y%m%d")
    dates = sorted(
        {p.name[:8] for o in outlets for p in o.iterdir() if first <= p.name[:8] < "20200805"}
    )
    directory.mkdir(parents=True, exist_ok=True)
    database = directory / "day.db"
    feeds = [directory / f"{o.name}.xml" for o in outlets]
    config = cluster_eval.write_config(directory, feeds, database)
    for feed in feeds:
        feed.write_text(
            '<?xml version="1.0"?><rss version="2.0"><channel><title>-</title>'
            "<link>http://x/</link><description>-</description></channel></rss>"
        )
    for date in dates:
        for outlet, feed in zip(outlets, feeds, strict=True):
            snapshots = sorted(p for p in outlet.iterdir() if p.name.startswith(date))
            if snapshots:
                shutil.copyfile(snapshots[0], feed)
        subprocess.run(
            [aggregator, "--config", str(config), "poll", "--all"],
            check=True,
            stdout=subprocess.DEVNULL,
        )
    english_day(directory)  # the day's snapshots over the same files
    subprocess.run(
        [aggregator, "--config", str(config), "poll", "--all"],
        check=True,
        stdout=subprocess.DEVNULL,
    )
    return database


def german_day(directory: Path) -> list[Path]:
    corpus = SHARED / "corpora" / "news-de-2024-12-21"
    return sorted(p for p in corpus.iterdir() if p.suffix in (".xml", ".rss", ".atom", ".json"))


def french_day(directory: Path) -> list[Path]:
    rows = cluster_eval.read_labelled_day(SHARED / "labelled" / "fr-2024-10-28.jsonl")
    return cluster_eval.write_feeds(rows, directory)


OPTIONS = {"fr_date": "2024-10-23"}  # --fr-date picks another day of news-fr-2024-10


def unseen_french_day(directory: Path) -> list[Path]:
    """A day of news-fr-2024-10 other than the labelled one (no labels): one feed per host,
    items spread over the day as for the labelled day (`cluster_eval.corpus_day`)."""
    day = datetime.strptime(OPTIONS["fr_date"], "%Y-%m-%d").replace(tzinfo=UTC)
    rows = cluster_eval.corpus_day(day, SHARED / "corpora" / "news-fr-2024-10")
    return cluster_eval.write_feeds(rows, directory)


DAYS = {
    "en": ("news-en-2020, 2020-08-05/06", english_day),
    "de": ("news-de-2024-12-21", german_day),
    "fr": ("fr-2024-10-28 (labelled)", french_day),
    "fr-other": (
        "news-fr-2024-10, a day other than the labelled one (unlabelled)",
        unseen_french_day,
    ),
}


def largest(
    database: Path, top: int, since: str = ""
) -> list[tuple[int, list[tuple[str, str, str]]]]:
    """The `top` largest stories with a member published `since` (ISO date) or later, by their
    members of that day; members of earlier days are listed too, their date before them."""
    with sqlite3.connect(database) as conn:
        ids = [
            r[0]
            for r in conn.execute(
                # Ties broken by content, not by story ids (which follow the order a poll happened
                # to store feeds in), so two runs list the same stories.
                "SELECT story_id FROM entries WHERE published >= ? GROUP BY story_id"
                " ORDER BY count(*) DESC, count(DISTINCT feed_id) DESC, min(published), min(guid)"
                " LIMIT ?",
                (since, top),
            )
        ]
        out = []
        for sid in ids:
            members = conn.execute(
                "SELECT coalesce(f.title, e.link, f.url), e.title, e.guid, e.published"
                " FROM entries e JOIN feeds f ON f.id = e.feed_id WHERE e.story_id = ?"
                " ORDER BY e.published",
                (sid,),
            ).fetchall()
            out.append(
                (
                    sid,
                    [
                        (_outlet(str(a)), (f"({d[:10]}) " if d < since else "") + str(b), str(c))
                        for a, b, c, d in members
                    ],
                )
            )
        return out


def _outlet(name: str) -> str:
    """A feed's title, or the host of the entry's link."""
    if "://" in name and not name.startswith("file:"):
        return urlsplit(name).hostname or name
    return name


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--top", type=int, default=10)
    ap.add_argument("--day", choices=["all", *DAYS], default="all")
    ap.add_argument("--aggregator", default=str(ROOT / ".venv" / "bin" / "aggregator"))
    ap.add_argument(
        "--keep",
        type=Path,
        help="keep each day's feeds, config and database in DIR/<day> (to run "
        "`aggregator explain` on them)",
    )
    ap.add_argument(
        "--history",
        type=int,
        default=0,
        metavar="DAYS",
        help="French days: first poll the DAYS corpus days before, one poll a day,"
        " as a daemon running for a week would have (the event rule needs"
        " them); stories are those with a member on the day",
    )
    ap.add_argument(
        "--fr-date",
        default=OPTIONS["fr_date"],
        help="the news-fr-2024-10 day of --day fr-other (default %(default)s)",
    )
    args = ap.parse_args(argv)
    OPTIONS["fr_date"] = args.fr_date
    if not SHARED.exists():
        print(f"skipped: {SHARED} not found (the corpora live there)")
        return 0
    gold: dict[str, str] = {}
    labelled = SHARED / "labelled" / "fr-2024-10-28.jsonl"
    if labelled.exists():
        gold = {r.id: r.story for r in cluster_eval.read_labelled_day(labelled)}
        # After history days an entry's guid is its link (see cluster_eval.run_days).
        gold |= {r.url: r.story for r in cluster_eval.read_labelled_day(labelled)}
    for key, (label, build) in DAYS.items():
        if args.day not in ("all", key):
            continue
        with contextlib.ExitStack() as stack:
            if args.keep:
                directory = args.keep / key
                directory.mkdir(parents=True, exist_ok=True)
                for name in ("day.db", "day.db-wal", "day.db-shm"):  # a fresh poll each run
                    (directory / name).unlink(missing_ok=True)
            else:
                directory = Path(
                    stack.enter_context(tempfile.TemporaryDirectory(prefix="largest-"))
                )
            feeds = build(directory)
            database = directory / "day.db"
            since = ""
            if args.history and key in ("fr", "fr-other"):
                # The same day again, this time after a week polled day by day.
                day = datetime.strptime(
                    OPTIONS["fr_date"] if key == "fr-other" else "2024-10-28", "%Y-%m-%d"
                ).replace(tzinfo=UTC)
                rows = (
                    cluster_eval.read_labelled_day(labelled)
                    if key == "fr"
                    else cluster_eval.corpus_day(day)
                )
                history = cluster_eval.history_days(day, args.history)
                database = cluster_eval.run_days(
                    [*history, rows], args.aggregator, directory / "with-history"
                )
                since = day.strftime("%Y-%m-%d")
                label += f", after {len(history)} days of history"
            elif args.history and key == "en":
                database = english_history(
                    directory / "with-history", args.aggregator, args.history
                )
                since = "2020-08-04"  # the day the snapshots of the 5th begin with
                label += f", after the snapshots of the {args.history} days before"
            else:
                config = cluster_eval.write_config(directory, feeds, database)
                subprocess.run(
                    [args.aggregator, "--config", str(config), "poll", "--all"],
                    check=True,
                    stdout=subprocess.DEVNULL,
                )
            with sqlite3.connect(database) as conn:
                entries, stories = conn.execute(
                    "SELECT count(*), count(DISTINCT story_id) FROM entries WHERE published >= ?",
                    (since,),
                ).fetchone()
            print(f"== {label}: {len(feeds)} feeds, {entries} entries, {stories} stories")
            for rank, (sid, members) in enumerate(largest(database, args.top, since), 1):
                outlets = len({m[0] for m in members})
                print(f"  #{rank} story {sid}: {len(members)} members, {outlets} outlets")
                for outlet, title, guid in members:
                    tag = f"[{gold[guid][:26]:26}] " if key == "fr" and guid in gold else ""
                    print(f"      {tag}{outlet[:22]:22} {' '.join(title.split())[:100]}")
            print()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
