"""Print how parse + normalise cope with two generated extremes: a 20 MB title, 100,000 items.

Each case runs in a fresh process (so peak memory is that case's own) and reports wall time,
CPU time and peak RSS. Run: .venv/bin/python benchmarks/parse_big.py
"""

from __future__ import annotations

import multiprocessing
import resource
import sys
import time
from datetime import UTC, datetime

NOW = datetime(2024, 6, 1, tzinfo=UTC)


def huge_title_feed(size: int = 20_000_000) -> bytes:
    """One item whose title is `size` bytes (20 MB, just under the 20 MiB body cap)."""
    title = ("breaking " * (size // 9)).encode()
    return (
        b'<?xml version="1.0" encoding="utf-8"?><rss version="2.0"><channel><title>Big'
        + b"</title><link>http://big.example.com/</link><description>d</description>"
        + b"<item><guid>1</guid><title>"
        + title
        + b"</title><link>http://big.example.com/1</link><description>x</description></item>"
        + b"</channel></rss>"
    )


def many_items_feed(count: int = 100_000) -> bytes:
    items = b"".join(
        b"<item><guid>i%d</guid><title>Story %d</title><link>/%d?utm_source=rss</link>"
        b"<description>&lt;p&gt;Text %d&lt;/p&gt;</description>"
        b"<pubDate>Sat, 01 Jun 2024 10:00:00 GMT</pubDate></item>" % (i, i, i, i)
        for i in range(count)
    )
    return (
        b'<?xml version="1.0" encoding="utf-8"?><rss version="2.0"><channel><title>Many</title>'
        b"<link>http://many.example.com/</link><description>d</description>"
        + items
        + b"</channel></rss>"
    )


def _run(case: str, queue: multiprocessing.Queue) -> None:  # type: ignore[type-arg]
    body = huge_title_feed() if case == "title_20mb" else many_items_feed()
    try:
        queue.put(_measure(case, body))
    except Exception as exc:
        queue.put((case, len(body), f"{type(exc).__name__}: {exc}"))


def _measure(case: str, body: bytes) -> tuple[object, ...]:
    from aggregator.normalise import normalise_entries
    from aggregator.parse import parse_feed

    start, cpu = time.perf_counter(), time.process_time()
    parsed = parse_feed(body, {"content-type": "application/rss+xml"}, "http://example.com/feed")
    parse_s = time.perf_counter() - start
    entries = normalise_entries(parsed, "http://example.com/feed", NOW)
    wall = time.perf_counter() - start
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return (
        case, len(body), len(entries), parse_s, wall, time.process_time() - cpu, peak_mb,
        len(entries[0].title) if entries else 0,
    )  # fmt: skip


def main() -> int:
    context = multiprocessing.get_context("spawn")
    print(
        f"{'case':<12} {'body MB':>8} {'entries':>8} {'parse s':>8} {'total s':>8} {'cpu s':>7} {'peak RSS MB':>12} {'title chars':>12}"
    )
    for case in ("title_20mb", "items_100k"):
        queue = context.Queue()
        process = context.Process(target=_run, args=(case, queue))
        process.start()
        result = queue.get()
        process.join()
        if len(result) == 3:
            print(f"{result[0]:<12} {result[1] / 1e6:>8.1f} failed: {result[2]}")
            continue
        name, size, count, parse_s, wall, cpu, peak, title_len = result
        print(
            f"{name:<12} {size / 1e6:>8.1f} {count:>8} {parse_s:>8.2f} {wall:>8.2f} {cpu:>7.2f} {peak:>12.0f} {title_len:>12}"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
