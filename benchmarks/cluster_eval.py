"""Story clustering against labelled news: B-cubed and pairwise precision / recall / F1.

Default (the real pipeline): the UCI CSV becomes one RSS 2.0 file per publisher (guid = row ID,
pubDate = its timestamp, title, link) in a temporary directory, a config lists them as file://
feeds, `aggregator poll --all --config ...` runs, and entries.story_id (joined by guid) is scored
against the STORY column.

    .venv/bin/python benchmarks/cluster_eval.py                      # through `aggregator poll`
    .venv/bin/python benchmarks/cluster_eval.py --direct             # fingerprint + clusterer only
    .venv/bin/python benchmarks/cluster_eval.py --direct --cycles 1h # one cycle per hour of news
    .venv/bin/python benchmarks/cluster_eval.py --direct --orders 3  # shuffled feed orders agree?

--direct runs the same rows through `fingerprint.fingerprint` and `cluster.StoryClusterer` in
process, one poll cycle per --cycles period (default: everything in one cycle, as `poll --all` on
a fresh database does), simulating the store between cycles (load the window with story ids, add
the new entries, apply the merge pass).
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import json
import random
import re
import sqlite3
import subprocess
import sys
import tempfile
import time
from collections import Counter, defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from pathlib import Path
from urllib.parse import urlsplit
from xml.sax.saxutils import escape

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from aggregator import cluster, fingerprint, model  # noqa: E402

DEFAULT_CSV = ROOT.parent / "shared" / "labelled" / "uci-news-5k.csv"
DEFAULT_FR = ROOT.parent / "shared" / "labelled" / "fr-2024-10-28.jsonl"
FR_DAY = datetime(2024, 10, 28, tzinfo=UTC)


@dataclass(frozen=True)
class Row:
    id: str
    title: str
    url: str
    publisher: str
    story: str
    host: str
    published: datetime
    summary: str = ""


def read_rows(path: Path) -> list[Row]:
    with path.open(newline="", encoding="utf-8") as fh:
        return [
            Row(
                r["ID"],
                r["TITLE"],
                r["URL"],
                r["PUBLISHER"],
                r["STORY"],
                r["HOSTNAME"],
                datetime.fromtimestamp(int(r["TIMESTAMP"]) / 1000, UTC),
            )
            for r in csv.DictReader(fh)
        ]


OUR_LABELS = ROOT / "benchmarks" / "labels"
_LABEL_DATE = re.compile(r"(\d{4}-\d{2}-\d{2})")


def labelled_day_of(path: Path) -> datetime:
    """The day a labelled file describes, from its name (`fr-2024-10-24.jsonl`)."""
    found = _LABEL_DATE.search(path.name)
    if found is None:
        raise SystemExit(f"{path}: no YYYY-MM-DD in the file name, cannot tell its day")
    return datetime.strptime(found.group(1), "%Y-%m-%d").replace(tzinfo=UTC)


def labelled_sets() -> list[Path]:
    """The French days labelled by story: the shared hand-labelled day and ours
    (`benchmarks/labels/`, links and stories only; titles and summaries come from the corpus)."""
    return [DEFAULT_FR, *sorted(OUR_LABELS.glob("fr-*.jsonl"))]


def read_labelled_day(path: Path, day: datetime | None = None) -> list[Row]:
    """A labelled day (JSON lines in feed order, no dates): each outlet's items are spread
    evenly over the day, newest first, as a feed lists them. Records without a title (our
    label files) take title and summary from that day of the French corpus, by link."""
    if day is None:
        day = labelled_day_of(path)
    records = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line]
    if any("title" not in rec for rec in records):
        source = FR_CORPUS / f"{day:%Y-%m-%d}.json"
        if not source.exists():
            raise SystemExit(f"{path}: needs {source} for titles and summaries")
        texts = {r["link"]: r for r in json.loads(source.read_text(encoding="utf-8"))}
        for rec in records:
            if "title" not in rec:
                text = texts[rec["link"]]
                rec["title"], rec["summary"] = text["title"], text.get("summary") or ""
    by_outlet: dict[str, list[dict[str, str]]] = defaultdict(list)
    for rec in records:
        by_outlet[rec["outlet"]].append(rec)
    rows = []
    for outlet, items in by_outlet.items():
        for i, rec in enumerate(items):
            published = day + timedelta(days=1) * (1 - (i + 0.5) / len(items))
            rows.append(
                Row(
                    rec["id"],
                    rec["title"],
                    rec["link"],
                    outlet,
                    rec["story"],
                    outlet,
                    published.replace(microsecond=0),
                    rec.get("summary") or "",
                )
            )
    return rows


# -- scoring --------------------------------------------------------------------------------------


def bcubed(pred: Sequence[object], gold: Sequence[object]) -> tuple[float, float, float]:
    """B-cubed precision, recall, F1 (Bagga & Baldwin), averaged over items."""
    joint = Counter(zip(pred, gold, strict=True))
    psize, gsize = Counter(pred), Counter(gold)
    n = len(pred)
    p = sum(c * c / psize[pc] for (pc, _), c in joint.items()) / n
    r = sum(c * c / gsize[gc] for (_, gc), c in joint.items()) / n
    return p, r, _f1(p, r)


def pairwise(pred: Sequence[object], gold: Sequence[object]) -> tuple[float, float, float]:
    """Precision, recall, F1 over unordered pairs of items put together."""

    def pairs(counts: Counter[object]) -> int:
        return sum(c * (c - 1) // 2 for c in counts.values())

    both = pairs(Counter(zip(pred, gold, strict=True)))
    in_pred, in_gold = pairs(Counter(pred)), pairs(Counter(gold))
    p = both / in_pred if in_pred else 1.0
    r = both / in_gold if in_gold else 1.0
    return p, r, _f1(p, r)


def _f1(p: float, r: float) -> float:
    return 2 * p * r / (p + r) if p + r else 0.0


def report(label: str, pred: Sequence[object], gold: Sequence[object], seconds: float) -> None:
    bp, br, bf = bcubed(pred, gold)
    pp, pr, pf = pairwise(pred, gold)
    print(
        f"{label}: {len(pred)} entries, {len(set(pred))} stories (gold {len(set(gold))}), "
        f"{seconds:.1f} s"
    )
    print(f"  B-cubed   precision {bp:.3f}  recall {br:.3f}  F1 {bf:.3f}")
    print(f"  pairwise  precision {pp:.3f}  recall {pr:.3f}  F1 {pf:.3f}")


# -- direct: fingerprint + clusterer in process ---------------------------------------------------


def entry_of(row: Row) -> model.Entry:
    """The Entry the normaliser would make of an RSS item with only title, link and pubDate."""
    title = " ".join(row.title.split())
    summary = " ".join(row.summary.split())
    text = f"{title} {summary}".strip()
    return model.Entry(
        guid=row.id,
        link=row.url,
        title=title,
        summary=summary,
        content="",
        text=text,
        published=row.published,
        updated=None,
        author=None,
        language="en",
        content_hash=hashlib.sha256(text.encode()).hexdigest(),
    )


def run_direct(
    rows: list[Row], settings: model.ClusterSettings, cycle: timedelta | None, seed: int | None
) -> dict[str, int]:
    """Story id per row id, simulating the store across poll cycles."""
    feed_ids = {p: i for i, p in enumerate(sorted({r.publisher for r in rows}), 1)}
    docs: list[model.ClusterDoc] = []
    for r in rows:
        e = entry_of(r)
        fp = fingerprint.fingerprint(e)
        docs.append(
            model.ClusterDoc(
                entry_id=0,
                feed_id=feed_ids[r.publisher],
                host=r.host,
                published=e.published,
                link=e.link,
                content_hash=fp.content_hash,
                simhash=fp.simhash,
                title=e.title,
                terms=fp.terms,
                language=e.language,
                story_id=None,
                text_length=len(e.text),
                **dict(
                    zip(
                        ("title_terms", "rubric_terms"),
                        fingerprint.title_layout(e.title),
                        strict=True,
                    )
                ),
            )
        )
    row_of: dict[int, str] = {}  # entry_id -> row ID (the guid)
    start = min(d.published for d in docs)
    period = cycle or timedelta(days=36500)
    batches: dict[int, list[int]] = defaultdict(list)
    for i, d in enumerate(docs):
        batches[int((d.published - start) / period)].append(i)

    rng = random.Random(seed)
    stored: dict[int, model.ClusterDoc] = {}  # entry_id -> doc with story_id (the "store")
    next_entry, next_story = 1, 1
    window = timedelta(hours=settings.window_hours)
    for b in sorted(batches):
        members = batches[b]
        # The pipeline polls feeds in some order and stores each feed's new entries in turn.
        by_feed: dict[int, list[int]] = defaultdict(list)
        for i in members:
            by_feed[docs[i].feed_id].append(i)
        feeds = sorted(by_feed)
        if seed is not None:
            rng.shuffle(feeds)
        order = [i for f in feeds for i in by_feed[f]]
        now = max(docs[i].published for i in members)
        clusterer = cluster.StoryClusterer(settings, next_story)
        clusterer.load(d for d in stored.values() if d.published >= now - 2 * window)
        by_link: dict[str, list[int]] = defaultdict(list)
        by_hash: dict[str, list[int]] = defaultdict(list)
        for d in stored.values():
            if d.link:
                by_link[d.link].append(d.entry_id)
            by_hash[d.content_hash].append(d.entry_id)
        added: dict[int, model.ClusterDoc] = {}
        for i in order:
            doc = replace(docs[i], entry_id=next_entry)
            row_of[next_entry] = rows[i].id
            next_entry += 1
            # What the store's exact/band candidate queries would return (stored entries only).
            cands = {e for e in by_link.get(doc.link or "", ())} | set(
                by_hash.get(doc.content_hash, ())
            )
            a = clusterer.add(doc, [stored[e] for e in sorted(cands)])
            added[doc.entry_id] = replace(doc, story_id=a.story_id)
        clusterer.merge_pass()
        for eid, doc in added.items():
            stored[eid] = doc
        # Apply final story ids (bridges and merges) to everything in memory, as the store would.
        for sid, member_ids in clusterer.stories().items():
            for eid in member_ids:
                if eid in stored:
                    stored[eid] = replace(stored[eid], story_id=sid)
        next_story = max(next_story, *(d.story_id or 0 for d in stored.values())) + 1
    return {row_of[eid]: d.story_id or 0 for eid, d in stored.items()}


# -- through the real pipeline --------------------------------------------------------------------


def write_feeds(rows: list[Row], directory: Path) -> list[Path]:
    """One RSS 2.0 file per publisher: guid = row ID, pubDate, title, link."""
    by_publisher: dict[str, list[Row]] = defaultdict(list)
    for r in rows:
        by_publisher[r.publisher].append(r)
    paths = []
    for n, (publisher, items) in enumerate(sorted(by_publisher.items()), 1):
        parts = [
            '<?xml version="1.0" encoding="UTF-8"?>\n<rss version="2.0"><channel>',
            f"<title>{escape(publisher)}</title><link>http://{escape(items[0].host)}/</link>",
            "<description>UCI News Aggregator rows</description>",
        ]
        for r in items:
            parts.append(
                f'<item><guid isPermaLink="false">{escape(r.id)}</guid>'
                f"<title>{escape(r.title)}</title><link>{escape(r.url)}</link>"
                + (f"<description>{escape(r.summary)}</description>" if r.summary else "")
                + f"<pubDate>{format_datetime(r.published, usegmt=True)}</pubDate></item>"
            )
        parts.append("</channel></rss>\n")
        path = directory / f"publisher-{n:04d}.xml"
        path.write_text("".join(parts), encoding="utf-8")
        paths.append(path)
    return paths


def write_config(directory: Path, feeds: list[Path], database: Path) -> Path:
    lines = ["[storage]", f'database = "{database}"', ""]
    for p in feeds:
        lines += ["[[feeds]]", f'url = "{p.as_uri()}"', ""]
    path = directory / "aggregator.toml"
    path.write_text("\n".join(lines), encoding="utf-8")
    return path


FR_CORPUS = ROOT.parent / "shared" / "corpora" / "news-fr-2024-10"


def corpus_day(day: datetime, corpus: Path = FR_CORPUS) -> list[Row]:
    """One day of the French news corpus as rows (no labels), spread over the day as
    `read_labelled_day` does; ids `<date>-<n>`."""
    records = json.loads((corpus / f"{day:%Y-%m-%d}.json").read_text(encoding="utf-8"))
    lines = [
        json.dumps(
            {
                "id": f"{day:%Y-%m-%d}-{i}",
                "outlet": urlsplit(r["link"]).hostname or "unknown",
                "title": r["title"],
                "summary": r.get("summary") or "",
                "link": r["link"],
                "story": "unlabelled",
            },
            ensure_ascii=False,
        )
        for i, r in enumerate(records)
        if r.get("title") and r.get("link")
    ]
    with tempfile.TemporaryDirectory() as tmp:
        source = Path(tmp) / "day.jsonl"
        source.write_text("\n".join(lines) + "\n", encoding="utf-8")
        return read_labelled_day(source, day)


def history_days(day: datetime, days: int = 7, corpus: Path = FR_CORPUS) -> list[list[Row]]:
    """The corpus days before `day` (up to `days`, oldest first) that the corpus holds."""
    found = []
    for n in range(days, 0, -1):
        before = day - timedelta(days=n)
        if (corpus / f"{before:%Y-%m-%d}.json").exists():
            found.append(corpus_day(before, corpus))
    return found


def run_days(days: list[list[Row]], aggregator: str, directory: Path) -> Path:
    """Poll day after day, as a daemon would have: one feed file per outlet, rewritten with
    each day's items before one `aggregator poll --all`. An item's guid is its link, so an
    article a feed still lists the next day is the entry it was (as with real guids), not a
    second copy. Returns the database."""
    directory.mkdir(parents=True, exist_ok=True)
    outlets = sorted({r.publisher for rows in days for r in rows})
    names = {o: f"outlet-{n:03d}.xml" for n, o in enumerate(outlets, 1)}
    database = directory / "eval.db"
    config = write_config(directory, [directory / names[o] for o in outlets], database)
    for n, rows in enumerate(days, 1):
        by_outlet: dict[str, list[Row]] = defaultdict(list)
        for r in rows:
            by_outlet[r.publisher].append(r)
        for outlet in outlets:
            items = by_outlet.get(outlet, [])
            (directory / names[outlet]).write_text(_rss(outlet, items), encoding="utf-8")
        cmd = [aggregator, "--config", str(config), "poll", "--all"]
        print(f"running ({n}/{len(days)}):", " ".join(cmd), f"({len(rows)} items)", file=sys.stderr)
        subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
    return database


def _rss(publisher: str, items: list[Row]) -> str:
    host = items[0].host if items else "unknown.invalid"
    parts = [
        '<?xml version="1.0" encoding="UTF-8"?>\n<rss version="2.0"><channel>',
        f"<title>{escape(publisher)}</title><link>http://{escape(host)}/</link>",
        "<description>rows</description>",
    ]
    for r in items:
        parts.append(
            f'<item><guid isPermaLink="false">{escape(r.url)}</guid>'
            f"<title>{escape(r.title)}</title><link>{escape(r.url)}</link>"
            + (f"<description>{escape(r.summary)}</description>" if r.summary else "")
            + f"<pubDate>{format_datetime(r.published, usegmt=True)}</pubDate></item>"
        )
    parts.append("</channel></rss>\n")
    return "".join(parts)


def run_with_history(
    rows: list[Row], history: list[list[Row]], aggregator: str, keep: Path | None
) -> dict[str, int]:
    with tempfile.TemporaryDirectory(prefix="cluster-eval-") as tmp:
        directory = keep / "with-history" if keep else Path(tmp)
        directory.mkdir(parents=True, exist_ok=True)
        database = run_days([*history, rows], aggregator, directory)
        with sqlite3.connect(database) as conn:
            by_link = {
                guid: sid for guid, sid in conn.execute("SELECT guid, story_id FROM entries")
            }
        return {r.id: by_link[r.url] for r in rows if r.url in by_link}


def run_pipeline(rows: list[Row], aggregator: str, keep: Path | None) -> dict[str, int]:
    with tempfile.TemporaryDirectory(prefix="cluster-eval-") as tmp:
        directory = keep or Path(tmp)
        directory.mkdir(parents=True, exist_ok=True)
        feeds = write_feeds(rows, directory)
        database = directory / "eval.db"
        config = write_config(directory, feeds, database)
        cmd = [aggregator, "--config", str(config), "poll", "--all"]
        print("running:", " ".join(cmd), f"({len(feeds)} feeds)", file=sys.stderr)
        subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
        with sqlite3.connect(database) as conn:
            return {guid: sid for guid, sid in conn.execute("SELECT guid, story_id FROM entries")}


# -- main -----------------------------------------------------------------------------------------


def parse_period(text: str | None) -> timedelta | None:
    if not text:
        return None
    units = {"m": 60, "h": 3600, "d": 86400}
    return timedelta(seconds=float(text[:-1]) * units[text[-1]])


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--csv", type=Path, default=DEFAULT_CSV)
    ap.add_argument(
        "--fr",
        type=Path,
        action="append",
        help="a labelled French day (repeatable; default: the shared hand-labelled day and"
        " every benchmarks/labels/fr-*.jsonl)",
    )
    ap.add_argument(
        "--set", choices=["all", "uci", "fr"], default="all", help="which labelled sets"
    )
    ap.add_argument("--direct", action="store_true", help="fingerprint + clusterer in process")
    ap.add_argument("--cycles", help="direct: one poll cycle per period, e.g. 30m, 1h, 6h")
    ap.add_argument("--orders", type=int, default=0, help="direct: also run N shuffled feed orders")
    ap.add_argument("--threshold", type=float, help="override story_threshold")
    ap.add_argument("--aggregator", default=str(ROOT / ".venv" / "bin" / "aggregator"))
    ap.add_argument("--keep", type=Path, help="pipeline: keep feeds, config and database here")
    ap.add_argument("--show", type=int, default=0, help="print the N largest predicted stories")
    ap.add_argument(
        "--history",
        type=int,
        default=7,
        metavar="DAYS",
        help="French day: also poll the DAYS corpus days before it first, one poll"
        " a day, as a running daemon would have (0: only the day alone)",
    )
    args = ap.parse_args(argv)
    sets = []
    if args.set in ("all", "fr"):
        for path in args.fr or labelled_sets():
            sets.append((path.stem, path, read_labelled_day))
    if args.set in ("all", "uci"):
        sets.append(("uci-5k", args.csv, read_rows))
    settings = model.ClusterSettings()
    if args.threshold is not None:
        settings = replace(settings, story_threshold=args.threshold)
    for name, path, reader in sets:
        if not path.exists():
            print(f"{name}: skipped, {path} not found (needs ../shared)", file=sys.stderr)
            continue
        rows = reader(path)
        evaluate(name, rows, args, settings)
    return 0


def evaluate(
    name: str, rows: list[Row], args: argparse.Namespace, settings: model.ClusterSettings
) -> None:
    gold_of = {r.id: r.story for r in rows}
    by_id = {r.id: r for r in rows}

    def score(label: str, story_of: dict[str, int], seconds: float) -> dict[str, int]:
        story_of = {i: sid for i, sid in story_of.items() if i in gold_of}  # not history days
        ids = sorted(gold_of)
        missing = [i for i in ids if i not in story_of]
        if missing:
            print(f"  warning: {len(missing)} rows have no entry (first: {missing[:5]})")
        ids = [i for i in ids if i in story_of]
        report(f"{name}, {label}", [story_of[i] for i in ids], [gold_of[i] for i in ids], seconds)
        show(story_of)
        return story_of

    def show(story_of: dict[str, int]) -> None:
        groups: dict[int, list[str]] = defaultdict(list)
        for rid, sid in story_of.items():
            groups[sid].append(rid)
        seed = "nato-confirms-dprk-troops-russia"
        if seed in gold_of.values():
            gold_ids = {i for i, g in gold_of.items() if g == seed}
            holders = Counter(story_of[i] for i in gold_ids if i in story_of)
            sid, held = holders.most_common(1)[0]
            intruders = len([i for i in groups[sid] if gold_of[i] != seed])
            print(
                f"  seed story {seed}: {held} of {len(gold_ids)} items together,"
                f" {intruders} intruders"
            )
        for sid, members in sorted(groups.items(), key=lambda kv: -len(kv[1]))[: args.show]:
            stories = Counter(gold_of[m] for m in members)
            print(f"  story {sid}: {len(members)} members, gold {dict(stories.most_common(4))}")
            for m in members:
                print(
                    f"      [{gold_of[m][:24]:24}] {by_id[m].publisher[:18]:18} {by_id[m].title[:90]}"
                )

    if not args.direct:
        t0 = time.perf_counter()
        score(
            "aggregator poll --all",
            run_pipeline(rows, args.aggregator, args.keep),
            time.perf_counter() - t0,
        )
        if name.startswith("fr-") and args.history:
            history = history_days(labelled_day_of(Path(name + ".jsonl")), args.history)
            if history:
                t0 = time.perf_counter()
                score(
                    f"after {len(history)} days of history (one poll a day)",
                    run_with_history(rows, history, args.aggregator, args.keep),
                    time.perf_counter() - t0,
                )
        return
    cycle = parse_period(args.cycles)
    label = f"direct, {'one cycle' if cycle is None else 'cycles of ' + args.cycles}"
    t0 = time.perf_counter()
    base = score(label, run_direct(rows, settings, cycle, None), time.perf_counter() - t0)
    for seed in range(1, args.orders + 1):
        t0 = time.perf_counter()
        other = score(
            f"{label}, feed order shuffled (seed {seed})",
            run_direct(rows, settings, cycle, seed),
            time.perf_counter() - t0,
        )
        same = _same_partition(base, other)
        print(f"  same partition as the unshuffled run: {same}")


def _same_partition(a: dict[str, int], b: dict[str, int]) -> bool:
    def blocks(m: dict[str, int]) -> set[frozenset[str]]:
        groups: dict[int, set[str]] = defaultdict(set)
        for k, v in m.items():
            groups[v].add(k)
        return {frozenset(g) for g in groups.values()}

    return blocks(a) == blocks(b)


if __name__ == "__main__":
    raise SystemExit(main())
