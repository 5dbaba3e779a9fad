"""Ingest benchmark: whole-process `aggregator poll --all` into an empty database over
../shared/corpora/blogs-200 (file:// feeds), alternating with lemon24/reader's
update_feeds(workers=2) on the same files. Prints entries/s for both and the ratio.

    .venv/bin/python benchmarks/ingest.py [--rounds 2] [--no-reader]
"""

from __future__ import annotations

import argparse
import sqlite3
import statistics
import tempfile
from pathlib import Path

from _common import PYTHON, ROOT, need_shared, run_measured


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--no-reader", action="store_true")
    args = ap.parse_args()
    corpus = need_shared("corpora", "blogs-200")
    files = sorted(p for p in corpus.rglob("*") if p.is_file() and p.name != "LICENSE")
    results: dict[str, list[tuple[float, int, float, float]]] = {"aggregator": [], "reader": []}
    with tempfile.TemporaryDirectory() as tmp:
        tmpdir = Path(tmp)
        for rnd in range(args.rounds):
            db = tmpdir / f"agg{rnd}.db"
            cfg = tmpdir / f"agg{rnd}.toml"
            cfg.write_text(
                f'[storage]\ndatabase = "{db}"\n'
                + "".join(f'[[feeds]]\nurl = "{p.as_uri()}"\n' for p in files)
            )
            run = run_measured([PYTHON, "-m", "aggregator", "--config", str(cfg), "poll", "--all"])
            if run.returncode != 0:
                raise SystemExit(f"aggregator failed: {run.stderr[-2000:]}")
            n = sqlite3.connect(db).execute("SELECT count(*) FROM entries").fetchone()[0]
            results["aggregator"].append((run.seconds, n, run.peak_rss_mb, run.cpu_seconds))
            print(
                f"round {rnd + 1} aggregator: {n} entries in {run.seconds:.1f} s "
                f"({n / run.seconds:.0f}/s), CPU {run.cpu_seconds:.1f} s, peak {run.peak_pss_mb:.0f} MB PSS "
                f"({run.peak_rss_mb:.0f} MB RSS)",
                flush=True,
            )
            if args.no_reader:
                continue
            rdb = tmpdir / f"reader{rnd}.sqlite"
            run = run_measured(
                [
                    PYTHON,
                    str(ROOT / "benchmarks" / "_reader_ingest.py"),
                    str(rdb),
                    str(corpus),
                    *(p.name for p in files),
                ]
            )
            if run.returncode != 0:
                raise SystemExit(
                    f"reader failed (pip install -e '.[bench]'?): {run.stderr[-2000:]}"
                )
            n = int(run.stdout.strip().splitlines()[-1])
            results["reader"].append((run.seconds, n, run.peak_rss_mb, run.cpu_seconds))
            print(
                f"round {rnd + 1} reader:     {n} entries in {run.seconds:.1f} s "
                f"({n / run.seconds:.0f}/s), CPU {run.cpu_seconds:.1f} s, peak {run.peak_pss_mb:.0f} MB PSS "
                f"({run.peak_rss_mb:.0f} MB RSS)",
                flush=True,
            )
    agg = statistics.median(n / s for s, n, _m, _c in results["aggregator"])
    print(f"\naggregator median: {agg:.0f} entries/s over {len(files)} feeds")
    if results["reader"]:
        rdr = statistics.median(n / s for s, n, _m, _c in results["reader"])
        print(f"reader median:     {rdr:.0f} entries/s")
        print(f"ratio aggregator/reader: {agg / rdr:.2f}x")


if __name__ == "__main__":
    main()
