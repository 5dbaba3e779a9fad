"""Near-duplicate pairs found by tier 1 on real RSS snapshots, for inspection.

Reads every snapshot under ../shared/corpora/news-en-2020 and the German feeds of
news-de-2024-12-21 (feedparser), makes one text per
distinct (outlet, item text) as the normaliser would (title + summary as plain text), and lists
the pairs tier 1 links that are *not* trivially the same item (different canonical link), with
their Hamming distance, so a person can judge them. Also prints the distance distribution of
re-published versions of one item (same link, edited text) against unrelated pairs.

    .venv/bin/python benchmarks/neardup_precision.py [--k 3] [--show 60] [--shingle 3]
"""

from __future__ import annotations

import argparse
import hashlib
import html
import random
import re
import sys
from collections import Counter, defaultdict
from datetime import UTC, datetime
from pathlib import Path

import feedparser

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from aggregator import cluster, fingerprint, model  # noqa: E402

CORPUS = ROOT.parent / "shared" / "corpora" / "news-en-2020"
CORPUS_DE = ROOT.parent / "shared" / "corpora" / "news-de-2024-12-21"
_TAG = re.compile(r"<[^>]+>")


def plain(text: str) -> str:
    return " ".join(html.unescape(_TAG.sub(" ", text or "")).split())


def load() -> list[tuple[str, model.Entry]]:
    seen: set[tuple[str, str]] = set()
    out = []
    for path in sorted([*CORPUS.glob("*/*.xml"), *CORPUS_DE.glob("*.xml")]):
        outlet = path.parent.name if path.parent != CORPUS_DE else path.stem
        parsed = feedparser.parse(path.read_bytes())
        for e in parsed.entries:
            title = plain(e.get("title", ""))
            summary = plain(e.get("summary", ""))
            text = f"{title} {summary}".strip()
            if not text or (outlet, text) in seen:
                continue
            seen.add((outlet, text))
            t = e.get("published_parsed") or e.get("updated_parsed")
            published = datetime(*t[:6], tzinfo=UTC) if t else datetime(2020, 8, 1, tzinfo=UTC)
            out.append(
                (
                    outlet,
                    model.Entry(
                        guid=e.get("id") or e.get("link") or text,
                        link=e.get("link") or None,
                        title=title,
                        summary=summary,
                        content="",
                        text=text,
                        published=published,
                        updated=None,
                        author=None,
                        language="en",
                        content_hash=hashlib.sha256(text.encode()).hexdigest(),
                    ),
                )
            )
    return out


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--k", type=int, default=3)
    ap.add_argument("--show", type=int, default=60)
    ap.add_argument(
        "--sample-same",
        type=int,
        default=0,
        help="also print N random linked pairs that share a link (seeded)",
    )
    args = ap.parse_args()
    if not CORPUS.exists():
        print("skipped: ../shared/corpora/news-en-2020 not found")
        return 0
    items = load()
    fps = [fingerprint.fingerprint(e) for _, e in items]
    with_hash = [i for i, f in enumerate(fps) if f.simhash is not None]
    print(
        f"{len(items)} distinct item texts, {len(with_hash)} long enough for a simhash "
        f"(>= {fingerprint.MIN_SIMHASH_TOKENS} words)"
    )
    buckets: dict[tuple[int, int], list[int]] = defaultdict(list)
    for i in with_hash:
        for b, v in enumerate(fingerprint.bands(fps[i].simhash or 0)):
            buckets[(b, v)].append(i)
    pairs: set[tuple[int, int]] = set()
    for members in buckets.values():
        for x in range(len(members)):
            for y in range(x + 1, len(members)):
                a, b = members[x], members[y]
                if fingerprint.hamming(fps[a].simhash or 0, fps[b].simhash or 0) <= args.k:
                    pairs.add((min(a, b), max(a, b)))
    clusterer = cluster.StoryClusterer(model.ClusterSettings(simhash_k=args.k), 1)

    def doc(i: int) -> model.ClusterDoc:
        outlet, e = items[i]
        return model.ClusterDoc(
            i,
            hash(outlet) & 0xFFFF,
            outlet,
            e.published,
            e.link,
            e.content_hash,
            fps[i].simhash,
            e.title,
            fps[i].terms,
        )

    kinds: Counter[str] = Counter()
    interesting = []
    for a, b in sorted(pairs):
        rule = clusterer.near_duplicate(doc(a), doc(b))
        same_link = items[a][1].link == items[b][1].link
        kind = ("same link" if same_link else "different link") + ("" if rule else " (refused)")
        kinds[kind] += 1
        if not same_link:
            interesting.append(
                (fingerprint.hamming(fps[a].simhash or 0, fps[b].simhash or 0), a, b, rule)
            )
    print(f"pairs within k={args.k} by simhash: {sum(kinds.values())}: {dict(kinds)}")
    for d, a, b, rule in interesting[: args.show]:
        print(f"\n[d={d} rule={rule and rule[0]}] {items[a][0]}: {items[a][1].text[:160]}")
        print(f"      {' ' * len(str(d))}         {items[b][0]}: {items[b][1].text[:160]}")
        print(f"      links: {items[a][1].link} | {items[b][1].link}")
    same = [(a, b) for a, b in sorted(pairs) if items[a][1].link == items[b][1].link]
    for a, b in random.Random(5).sample(same, min(args.sample_same, len(same))):
        d = fingerprint.hamming(fps[a].simhash or 0, fps[b].simhash or 0)
        print(f"\n[same link, d={d}] {items[a][0]}: {items[a][1].title[:90]}")
        print(f"                 {items[b][0]}: {items[b][1].title[:90]}")
    # Distances between edited versions of one item (same link, different text).
    by_link: dict[str, list[int]] = defaultdict(list)
    for i in with_hash:
        if items[i][1].link:
            by_link[items[i][1].link].append(i)
    versions = Counter()
    for members in by_link.values():
        for x in range(1, len(members)):
            versions[
                min(
                    fingerprint.hamming(fps[members[0]].simhash or 0, fps[members[x]].simhash or 0),
                    40,
                )
                // 4
                * 4
            ] += 1
    print(
        "\nHamming distance between edited versions of one item (bucketed by 4):",
        dict(sorted(versions.items())),
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
