"""Two polling rounds of the fetcher alone against benchmarks/hostile_server.py; prints figures.

Mimics what `aggregator poll` does between rounds with the fetch and schedule modules only:
validators and body hashes carried over, 301 targets adopted, 410 retired, and a feed polled
in round two only when schedule.next_poll_at says it is due (with every feed made due by the
clock except those the publisher asked us to leave alone).

    python benchmarks/fetch_hostile.py
"""

from __future__ import annotations

import asyncio
import json
import resource
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

from aggregator import PROJECT_URL, __version__, fetch, schedule
from aggregator.model import FeedState, FetchResult, FetchSettings, ScheduleSettings

HERE = Path(__file__).resolve().parent


async def poll_round(
    fetcher: fetch.Fetcher, states: list[FeedState], now: datetime
) -> list[FetchResult]:
    return await asyncio.gather(*(fetcher.fetch(s, now) for s in states))


def show(results: list[FetchResult], seconds: float) -> None:
    for r in results:
        what = (
            f"FAIL {r.failure.kind}: {r.failure.message[:70]}"
            if r.failure
            else ("not modified" if r.not_modified else f"{len(r.body or b'')} bytes")
        )
        moved = f" -> moved to {r.permanent_url}" if r.permanent_url else ""
        print(f"  {r.requested_url.rsplit('/', 1)[1]:20} {r.status!s:5} {what}{moved}")
    print(f"  round took {seconds:.1f} s")


async def main() -> int:
    with tempfile.TemporaryDirectory() as tmp:
        log = Path(tmp) / "requests.jsonl"
        server = subprocess.Popen(
            [sys.executable, str(HERE / "hostile_server.py"), "--log", str(log)],
            stdout=subprocess.PIPE,
            text=True,
        )
        try:
            assert server.stdout is not None
            server.stdout.readline()
            urls = [server.stdout.readline().strip() for _ in range(11)]
            settings = FetchSettings(
                user_agent=f"aggregator/{__version__} (+{PROJECT_URL})",
                allow_private_networks=True,  # the hostile server is on loopback
            )
            sched = ScheduleSettings()
            states = [FeedState(id=i, url=u) for i, u in enumerate(urls)]
            now = datetime.now(UTC)
            started = time.perf_counter()
            async with fetch.Fetcher(settings) as fetcher:
                t0 = time.perf_counter()
                first = await poll_round(fetcher, states, now)
                print("round 1")
                show(first, time.perf_counter() - t0)

                later = now + timedelta(hours=1, seconds=-1)  # "the second poll, soon after"
                second_states = []
                for state, result in zip(states, first, strict=True):
                    if schedule.retires(result):
                        continue
                    errors = state.error_count + 1 if result.failure else 0
                    due = schedule.next_poll_at(
                        now=now,
                        url=state.url,
                        settings=sched,
                        configured_interval=None,
                        result=result,
                        error_count=errors,
                        ttl=None,
                        recent_published=(),
                    )
                    if result.retry_after and due > later:
                        continue  # the publisher asked us to wait: not due in round two
                    second_states.append(
                        FeedState(
                            id=state.id,
                            url=result.permanent_url or state.url,
                            etag=result.etag,
                            last_modified=result.last_modified,
                            body_hash=result.body_hash,
                            error_count=errors,
                        )
                    )
                t0 = time.perf_counter()
                second = await poll_round(fetcher, second_states, later)
                print("round 2")
                show(second, time.perf_counter() - t0)
            total = time.perf_counter() - started
        finally:
            server.terminate()
            server.wait(5)
        peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        records = [json.loads(line) for line in log.read_text().splitlines()]
        requests = [r for r in records if r["event"] == "request"]
    paths = [r["path"] for r in requests]
    print(f"both rounds: {total:.1f} s, peak RSS of this process {peak_mb:.0f} MB")
    print(f"requests: {len(requests)}; per path: {dict(sorted(_count(paths).items()))}")
    conditional = [r for r in requests if r["if_none_match"] or r["if_modified_since"]]
    print(f"conditional requests: {[r['path'] for r in conditional]}")
    print(f"user agents: {sorted({r['user_agent'] for r in requests})}")
    print(f"accept-encoding: {sorted({r['accept_encoding'] for r in requests})}")
    return 0


def _count(items: list[str]) -> dict[str, int]:
    counts: dict[str, int] = {}
    for item in items:
        counts[item] = counts.get(item, 0) + 1
    return counts


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
