"""Documents per second: our fingerprint (word 2-shingles + xxh64 into the simhash package)
against the package's default `Simhash(text)` (character 4-grams of the text without spaces,
MD5), on the same texts.

    .venv/bin/python benchmarks/fingerprint_bench.py [--limit 3000] [--repeat 3]

Texts: title + summary + content (plain text) of every item of ../shared/corpora/news-en-2020
(short RSS items) and ../shared/corpora/blogs-200 (full articles), parsed with feedparser and
stripped of tags here; parsing is not timed.
"""

from __future__ import annotations

import argparse
import hashlib
import html
import re
import statistics
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

import feedparser
from simhash import Simhash

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from aggregator import fingerprint, model  # noqa: E402

SHARED = ROOT.parent / "shared" / "corpora"
_TAG = re.compile(r"<[^>]+>")


def plain(text: str) -> str:
    return " ".join(html.unescape(_TAG.sub(" ", text or "")).split())


def texts(corpus: str, limit: int) -> list[str]:
    out: list[str] = []
    files = sorted((SHARED / corpus).rglob("*"))
    for path in files:
        if not path.is_file():
            continue
        for e in feedparser.parse(path.read_bytes()).entries:
            content = " ".join(c.get("value", "") for c in e.get("content", []))
            text = " ".join(
                filter(
                    None, (plain(e.get("title", "")), plain(e.get("summary", "")), plain(content))
                )
            )
            if text:
                out.append(text)
            if len(out) >= limit:
                return out
    return out


def entries(docs: list[str]) -> list[model.Entry]:
    now = datetime(2024, 1, 1, tzinfo=UTC)
    return [
        model.Entry(
            guid=str(i),
            link=None,
            title=t[:80],
            summary="",
            content="",
            text=t,
            published=now,
            updated=None,
            author=None,
            language=None,
            content_hash=hashlib.sha256(t.encode()).hexdigest(),
        )
        for i, t in enumerate(docs)
    ]


def rate(fn, items: list, repeat: int) -> tuple[float, int]:
    """Median documents/s over `repeat` runs, and how many documents raised."""
    runs = []
    failed = 0
    for _ in range(repeat):
        failed = 0
        t0 = time.perf_counter()
        for item in items:
            try:
                fn(item)
            except OverflowError:
                # simhash 2.1.2's default path sums weights in uint8: a 4-gram seen more than
                # 255 times in one text raises. Counted, and its time still counts.
                failed += 1
        runs.append(len(items) / (time.perf_counter() - t0))
    return statistics.median(runs), failed


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--limit", type=int, default=3000, help="documents per corpus")
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()
    if not SHARED.exists():
        print("skipped: ../shared/corpora not found")
        return 0
    for corpus in ("news-en-2020", "blogs-200"):
        docs = texts(corpus, args.limit)
        ents = entries(docs)
        chars = statistics.mean(len(d) for d in docs)
        ours_simhash, _ = rate(fingerprint.simhash_of, docs, args.repeat)
        ours_full, _ = rate(fingerprint.fingerprint, ents, args.repeat)
        default, failed = rate(lambda t: Simhash(t).value, docs, args.repeat)
        print(f"{corpus}: {len(docs)} texts, mean {chars:,.0f} chars")
        print(
            f"  simhash package default Simhash(text):       {default:9,.0f} docs/s"
            + (f" ({failed} texts raised OverflowError)" if failed else "")
        )
        print(
            f"  ours, simhash only (2-shingles, xxh64):       {ours_simhash:9,.0f} docs/s "
            f"({ours_simhash / default:.1f}x)"
        )
        print(
            f"  ours, full fingerprint (simhash + terms):     {ours_full:9,.0f} docs/s "
            f"({ours_full / default:.1f}x)"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
