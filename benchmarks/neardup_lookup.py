"""Near-duplicate lookup through the SQLite band table with a million stored fingerprints.

Builds (or reuses) a SQLite file with N random 64-bit simhashes in an entries-like table and the
band table the store uses (one row per entry per 16-bit band, WITHOUT ROWID, primary key
(band, value, entry_id)), plus planted neighbours at distance 1..3 of some probes. Then times the
query that finds every entry within Hamming distance k=3 of a probe (band equality, then the exact
distance on the candidates), reports the median and p99, and checks the answers against brute
force (a full scan) on a sample of probes.

    .venv/bin/python benchmarks/neardup_lookup.py [--n 1000000] [--probes 2000] [--db PATH]
"""

from __future__ import annotations

import argparse
import random
import sqlite3
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from aggregator.fingerprint import bands, hamming, to_signed, to_unsigned  # noqa: E402

SCHEMA = """
CREATE TABLE entries (id INTEGER PRIMARY KEY, simhash INTEGER, story_id INTEGER);
CREATE TABLE simhash_bands (band INTEGER NOT NULL, value INTEGER NOT NULL,
    entry_id INTEGER NOT NULL, PRIMARY KEY (band, value, entry_id)) WITHOUT ROWID;
"""

LOOKUP = """
SELECT e.id, e.simhash FROM entries e WHERE e.id IN (
    SELECT entry_id FROM simhash_bands WHERE band = 0 AND value = ?
    UNION SELECT entry_id FROM simhash_bands WHERE band = 1 AND value = ?
    UNION SELECT entry_id FROM simhash_bands WHERE band = 2 AND value = ?
    UNION SELECT entry_id FROM simhash_bands WHERE band = 3 AND value = ?)
"""


def flip(value: int, rng: random.Random, bits: int) -> int:
    for b in rng.sample(range(64), bits):
        value ^= 1 << b
    return value


def build(path: Path, n: int, rng: random.Random) -> list[int]:
    conn = sqlite3.connect(path)
    conn.executescript("PRAGMA journal_mode=OFF; PRAGMA synchronous=OFF;" + SCHEMA)
    values = [rng.getrandbits(64) for _ in range(n)]
    # Plant neighbours: every 1000th value gets copies at distance 1, 2 and 3.
    planted = []
    for i in range(0, n, 1000):
        planted += [flip(values[i], rng, d) for d in (1, 2, 3)]
    values += planted
    with conn:
        conn.executemany(
            "INSERT INTO entries (id, simhash, story_id) VALUES (?, ?, ?)",
            ((i + 1, to_signed(v), i + 1) for i, v in enumerate(values)),
        )
        rows = ((b, v, i + 1) for i, s in enumerate(values) for b, v in enumerate(bands(s)))
        conn.executemany("INSERT INTO simhash_bands (band, value, entry_id) VALUES (?, ?, ?)", rows)
    conn.execute("ANALYZE")
    conn.close()
    return values


def neighbours(conn: sqlite3.Connection, probe: int, k: int) -> set[int]:
    rows = conn.execute(LOOKUP, bands(probe)).fetchall()
    return {eid for eid, s in rows if hamming(probe, to_unsigned(s)) <= k}


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=1_000_000)
    ap.add_argument("--probes", type=int, default=2000)
    ap.add_argument("--brute", type=int, default=20, help="probes checked against a full scan")
    ap.add_argument("--db", type=Path, help="reuse or create this file")
    args = ap.parse_args()
    rng = random.Random(20240606)
    with tempfile.TemporaryDirectory() as tmp:
        path = args.db or Path(tmp) / "bands.db"
        t0 = time.perf_counter()
        if path.exists():
            values = [
                to_unsigned(s)
                for (s,) in sqlite3.connect(path).execute("SELECT simhash FROM entries ORDER BY id")
            ]
        else:
            values = build(path, args.n, rng)
        print(
            f"{len(values):,} fingerprints in {path.name} ({path.stat().st_size / 1e6:.0f} MB), "
            f"ready in {time.perf_counter() - t0:.0f} s"
        )
        conn = sqlite3.connect(path)
        # Probes: half stored values with planted neighbours, half near-misses of random values.
        probes = [values[i] for i in range(0, args.n, 1000)][: args.probes // 2]
        probes += [flip(rng.choice(values), rng, 2) for _ in range(args.probes - len(probes))]
        times, found = [], 0
        for p in probes:
            t = time.perf_counter()
            found += len(neighbours(conn, p, 3))
            times.append((time.perf_counter() - t) * 1000)
        times.sort()
        print(
            f"lookup of all neighbours within k=3 over {len(probes)} probes: median "
            f"{statistics.median(times):.3f} ms, p99 {times[int(0.99 * len(times))]:.3f} ms, "
            f"{found} neighbours found"
        )
        mismatches = 0
        for p in probes[: args.brute // 2] + probes[-(args.brute // 2) :]:
            brute = {
                eid
                for eid, s in conn.execute("SELECT id, simhash FROM entries")
                if hamming(p, to_unsigned(s)) <= 3
            }
            if brute != neighbours(conn, p, 3):
                mismatches += 1
        print(f"checked against brute force on {args.brute} probes: {mismatches} mismatches")
        conn.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
