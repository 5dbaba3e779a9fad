"""Generated RSS feeds for reliability tests and benchmarks (deterministic for a seed), and
how many entries a poll of them has committed so far.

Each feed carries entries about shared "events" (so stories form across feeds), some of them
wire copies of the same text, plus unrelated items.
"""

from __future__ import annotations

import random
import sqlite3
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from pathlib import Path
from xml.sax.saxutils import escape

WORDS = (
    "council harbour minister budget storm river bridge election court school hospital "
    "railway airport museum festival strike factory market farmers police museum orchestra "
    "library vaccine research climate energy solar wind pipeline tariff export import bank "
    "inflation housing rent tenants union workers nurses teachers drivers ferry port island "
    "mountain valley glacier drought flood wildfire rescue volunteers mayor governor senate "
    "parliament treaty summit embassy border refugees shelter charity donation award novel "
    "film director season league coach transfer stadium final champions record marathon"
).split()
_SYLLABLES = (
    "ka ri to ne sa mu li po de va ro ti mi ga lo be nu fa si ke da zo re ha ju wi pe"
).split()


def _vocabulary(size: int, seed: int) -> list[str]:
    """Pseudo-words: real news has a wide vocabulary, and a tiny one makes every text alike."""
    rng = random.Random(seed)
    words: set[str] = set()
    while len(words) < size:
        words.add("".join(rng.choice(_SYLLABLES) for _ in range(rng.randint(2, 4))))
    return sorted(words)


VOCABULARY = WORDS + _vocabulary(4000, 99)
PLACES = (
    "Lisbon Oslo Tallinn Porto Gdansk Lyon Graz Bergen Turku Cork Bilbao Malmo Ghent "
    "Utrecht Brno Split Varna Kaunas Leipzig Nantes"
).split()


def _sentence(rng: random.Random, words: list[str], n: int) -> str:
    # A few common words and a long tail of rarer ones.
    picks = (rng.choice(words) if rng.random() < 0.4 else rng.choice(VOCABULARY) for _ in range(n))
    return " ".join(picks).capitalize() + "."


def make_events(count: int, seed: int = 1) -> list[dict[str, str]]:
    rng = random.Random(seed)
    events = []
    for i in range(count):
        place = rng.choice(PLACES)
        topic = rng.sample(VOCABULARY, 4)
        events.append(
            {
                "place": place,
                "topic": " ".join(topic),
                "wire": f"{place} {' '.join(topic)} event{i} "
                + " ".join(_sentence(rng, WORDS, 14) for _ in range(5)),
            }
        )
    return events


def write_feeds(
    folder: Path,
    feeds: int,
    entries_per_feed: int,
    *,
    seed: int = 1,
    start: datetime = datetime(2024, 10, 28, tzinfo=UTC),
) -> list[Path]:
    """Write `feeds` RSS files into `folder`; returns their paths."""
    rng = random.Random(seed)
    events = make_events(max(3, feeds // 3), seed)
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for f in range(feeds):
        items = []
        for n in range(entries_per_feed):
            when = start + timedelta(minutes=rng.randrange(0, 48 * 60))
            kind = rng.random()
            if kind < 0.3:
                ev = rng.choice(events)
                title = f"{ev['place']}: {ev['topic']}"
                body = ev["wire"]
            elif kind < 0.6:
                ev = rng.choice(events)
                title = f"{ev['place']} {ev['topic'].split()[0]} {rng.choice(WORDS)} update"
                body = f"{ev['place']} {ev['topic']} " + _sentence(rng, WORDS, 30)
            else:
                title = _sentence(rng, WORDS, 7)[:-1]
                body = " ".join(_sentence(rng, WORDS, 15) for _ in range(3))
            items.append(
                f'<item><guid isPermaLink="false">feed{f}-item{n}</guid>'
                f"<title>{escape(title)}</title>"
                f"<link>https://outlet{f}.example/{n}</link>"
                f"<description>{escape(body)}</description>"
                f"<pubDate>{format_datetime(when)}</pubDate></item>"
            )
        xml = (
            '<?xml version="1.0" encoding="utf-8"?><rss version="2.0"><channel>'
            f"<title>Outlet {f}</title><link>https://outlet{f}.example/</link>"
            f"<description>generated</description>{''.join(items)}</channel></rss>"
        )
        path = folder / f"outlet{f:05d}.xml"
        path.write_text(xml, encoding="utf-8")
        paths.append(path)
    return paths


def config_for(paths: list[Path], database: Path, extra: str = "") -> str:
    feeds = "".join(f'[[feeds]]\nurl = "{p.as_uri()}"\n' for p in paths)
    return f'[storage]\ndatabase = "{database}"\n{extra}\n{feeds}'


def committed_entries(db: Path) -> int:
    """Entries committed so far, read the way any outside reader would (0 before the table)."""
    if not db.exists():
        return 0
    try:
        conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=5)
        try:
            return int(conn.execute("SELECT count(*) FROM entries").fetchone()[0])
        finally:
            conn.close()
    except sqlite3.OperationalError:  # no schema yet, or a writer holds the file for a moment
        return 0


def snapshot(db: Path) -> dict[str, object]:
    """Check the invariants every run must end with (integrity, no duplicate or dangling rows,
    story counts that add up) and return what two runs are compared by."""
    conn = sqlite3.connect(db)
    try:
        assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        assert conn.execute("PRAGMA foreign_key_check").fetchall() == []
        dupes = conn.execute(
            "SELECT feed_id, guid FROM entries GROUP BY 1, 2 HAVING count(*) > 1"
        ).fetchall()
        assert dupes == [], "duplicate (feed, guid)"
        orphans = conn.execute(
            "SELECT count(*) FROM entries e LEFT JOIN stories s ON s.id = e.story_id"
            " WHERE s.id IS NULL"
        ).fetchone()[0]
        assert orphans == 0, "entries without a story"
        wrong_counts = conn.execute(
            "SELECT count(*) FROM stories s WHERE member_count !="
            " (SELECT count(*) FROM entries e WHERE e.story_id = s.id)"
        ).fetchone()[0]
        assert wrong_counts == 0, "stories whose member_count is stale"
        empty = conn.execute(
            "SELECT count(*) FROM stories s WHERE NOT EXISTS"
            " (SELECT 1 FROM entries e WHERE e.story_id = s.id)"
        ).fetchone()[0]
        assert empty == 0, "stories pointing at nothing"
        entries = set(
            conn.execute(
                "SELECT f.url, e.guid, e.content_hash FROM entries e JOIN feeds f ON f.id = e.feed_id"
            ).fetchall()
        )
        groups = conn.execute(
            "SELECT group_concat(f.url || '#' || e.guid, ' ') FROM entries e"
            " JOIN feeds f ON f.id = e.feed_id GROUP BY e.story_id"
        ).fetchall()
        partition = {frozenset(g[0].split(" ")) for g in groups}
        return {"entries": entries, "stories": len(partition), "partition": partition}
    finally:
        conn.close()


def one_feed_config(folder: Path, feed: Path) -> Path:
    """A config polling one local feed file into folder/agg.db; its path."""
    config = folder / "agg.toml"
    config.write_text(
        f'[storage]\ndatabase = "agg.db"\n[[feeds]]\nurl = "{feed.as_uri()}"\n', encoding="utf-8"
    )
    return config
