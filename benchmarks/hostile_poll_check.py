"""Issue 3's outside check: two `aggregator poll` runs against benchmarks/hostile_server.py.

Starts the hostile server on loopback, writes a config listing its feeds (with
`[fetch] allow_private_networks = true`), runs `aggregator poll` and then `aggregator poll`
again (no --all) as subprocesses, measuring wall time and peak RSS of each whole process tree,
and checks the server's request log and the database. Prints one PASS/FAIL line per
expectation, then the figures; exits 1 when any expectation fails.

    .venv/bin/python benchmarks/hostile_poll_check.py [--keep DIR]
"""

from __future__ import annotations

import json
import sqlite3
import subprocess
import sys
from collections import Counter
from pathlib import Path

from _common import PYTHON, Run, run_check, run_measured

from aggregator.config import DEFAULT_USER_AGENT

HERE = Path(__file__).resolve().parent
ETAG = '"hostile-etag-v1"'
LAST_MODIFIED = "Mon, 01 Jan 2024 00:00:00 GMT"
MEMORY_LIMIT_MB = 400
TIME_LIMIT_S = 90


def read_log(path: Path) -> list[dict[str, object]]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line]


def requests_of(records: list[dict[str, object]]) -> list[dict[str, object]]:
    return [r for r in records if r["event"] == "request"]


def poll(config: Path) -> Run:
    return run_measured([PYTHON, "-m", "aggregator", "--config", str(config), "poll"], timeout=300)


def main(argv: list[str] | None = None) -> int:
    return run_check(check, "hostile-poll-", argv, __doc__ or "")


def check(work: Path) -> int:
    log = work / "requests.jsonl"
    log.unlink(missing_ok=True)
    feeds_toml = work / "feeds.toml"
    server = subprocess.Popen(
        [
            PYTHON,
            str(HERE / "hostile_server.py"),
            "--log",
            str(log),
            "--feeds-toml",
            str(feeds_toml),
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert server.stdout is not None
        banner = server.stdout.readline()  # printed after the feeds file is written
        base = banner.split(" on ", 1)[1].split(" ", 1)[0]
        config = work / "aggregator.toml"
        database = work / "hostile.db"
        for suffix in ("", "-wal", "-shm"):
            Path(f"{database}{suffix}").unlink(missing_ok=True)
        config.write_text(
            f'[storage]\ndatabase = "{database}"\n\n[fetch]\nallow_private_networks = true\n\n'
            + feeds_toml.read_text(encoding="utf-8"),
            encoding="utf-8",
        )
        first = poll(config)
        split = len(requests_of(read_log(log)))
        second = poll(config)
    finally:
        server.terminate()
        try:
            server.wait(timeout=10)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()
    records = read_log(log)
    reqs = requests_of(records)
    round1, round2 = reqs[:split], reqs[split:]
    done = [r for r in records if r["event"] == "done"]
    # The "done" record of a round-two request: the first one for that path after round one.
    t_split = float(str(round2[0]["time"])) if round2 else float("inf")
    done2 = {str(r["path"]): r for r in reversed(done) if float(str(r["time"])) >= t_split}

    with sqlite3.connect(database) as db:
        db.row_factory = sqlite3.Row
        feeds = {
            r["config_url"].removeprefix(base): dict(r) for r in db.execute("SELECT * FROM feeds")
        }

    results: list[tuple[bool, str]] = []

    def expect(ok: bool, what: str) -> None:
        results.append((ok, what))

    expect(
        first.returncode == 0 and second.returncode == 0,
        f"both polls exit 0 (got {first.returncode}, {second.returncode})",
    )
    expect("Traceback" not in first.stderr + second.stderr, "no traceback on stderr")

    paths2 = Counter(str(r["path"]) for r in round2)
    etag2 = [r for r in round2 if r["path"] == "/etag.xml"]
    lm2 = [r for r in round2 if r["path"] == "/last-modified.xml"]
    expect(
        len(etag2) == 1
        and etag2[0]["if_none_match"] == ETAG
        and done2.get("/etag.xml", {}).get("status") == 304,
        "second poll: /etag.xml sent If-None-Match and got 304 "
        f"(requests {len(etag2)}, header {etag2[0]['if_none_match'] if etag2 else None!r}, "
        f"status {done2.get('/etag.xml', {}).get('status')})",
    )
    expect(
        len(lm2) == 1
        and lm2[0]["if_modified_since"] == LAST_MODIFIED
        and done2.get("/last-modified.xml", {}).get("status") == 304,
        "second poll: /last-modified.xml sent If-Modified-Since and got 304 "
        f"(requests {len(lm2)}, header {lm2[0]['if_modified_since'] if lm2 else None!r}, "
        f"status {done2.get('/last-modified.xml', {}).get('status')})",
    )
    for path, why in (
        ("/gone.xml", "410"),
        ("/throttled.xml", "429 Retry-After 3600"),
        ("/moved.xml", "301-old URL"),
    ):
        expect(
            paths2[path] == 0,
            f"second poll: {path} ({why}) not requested again (requests: {paths2[path]})",
        )
    expect(
        paths2["/new-home.xml"] >= 1,
        f"second poll: the 301 target /new-home.xml polled directly ({paths2['/new-home.xml']})",
    )
    bad_etag = [r for r in round2 if r["path"] == "/bad-etag.xml"]
    expect(
        len(bad_etag) == 1
        and not bad_etag[0]["if_none_match"]
        and feeds.get("/bad-etag.xml", {}).get("error_kind") is None,
        "second poll: /bad-etag.xml (non-ASCII ETag) is requested again, unconditionally, "
        f"and stays ok (requests {len(bad_etag)}, error "
        f"{feeds.get('/bad-etag.xml', {}).get('error_kind')})",
    )
    expect(
        feeds.get("/odd-retry.xml", {}).get("error_kind") == "http",
        "/odd-retry.xml ('Retry-After: \u00b2') is an http failure, not an internal error "
        f"(error {feeds.get('/odd-retry.xml', {}).get('error_kind')})",
    )
    moved = feeds.get("/moved.xml", {}).get("url")
    temporary = feeds.get("/temporary.xml", {}).get("url")
    expect(moved == f"{base}/new-home.xml", f"feeds.url follows the 301 (url: {moved})")
    expect(temporary == f"{base}/temporary.xml", f"feeds.url ignores the 302 (url: {temporary})")
    gone = feeds.get("/gone.xml", {})
    expect(
        bool(gone.get("retired_at")),
        f"the 410 feed is retired (retired_at {gone.get('retired_at')})",
    )
    peak = max(first.peak_rss_mb, second.peak_rss_mb)
    expect(peak < MEMORY_LIMIT_MB, f"peak memory under {MEMORY_LIMIT_MB} MB ({peak:.0f} MB)")
    total = first.seconds + second.seconds
    expect(total < TIME_LIMIT_S, f"both polls under {TIME_LIMIT_S} s ({total:.1f} s)")
    bad_ua = [r for r in reqs if r["user_agent"] != DEFAULT_USER_AGENT]
    expect(
        not bad_ua,
        f"every request ({len(reqs)}) carries User-Agent {DEFAULT_USER_AGENT!r}"
        + (f"; {len(bad_ua)} do not, e.g. {bad_ua[0]['user_agent']!r}" if bad_ua else ""),
    )
    no_gzip = [r for r in reqs if "gzip" not in str(r["accept_encoding"] or "")]
    expect(
        not no_gzip,
        f"every request accepts gzip (Accept-Encoding {reqs[0]['accept_encoding']!r})"
        if reqs
        else "every request accepts gzip (no requests!)",
    )

    for ok, what in results:
        print(f"{'PASS' if ok else 'FAIL'}  {what}")
    print()
    for name, run in (("first poll", first), ("second poll", second)):
        print(
            f"{name}: {run.seconds:.1f} s wall, {run.cpu_seconds:.1f} s CPU, "
            f"peak RSS {run.peak_rss_mb:.0f} MB, exit {run.returncode}"
        )
        for line in run.stdout.splitlines():
            print(f"    {line}")
    print(
        f"requests: round 1 {len(round1)}, round 2 {len(round2)} "
        f"({', '.join(f'{p} x{n}' for p, n in sorted(paths2.items()))})"
    )
    print("feeds after both polls:")
    for path, row in sorted(feeds.items()):
        state = "retired" if row["retired_at"] else (row["error_kind"] or "ok")
        print(
            f"    {path:20} {state:10} status {row['last_status']!s:5} "
            f"url {str(row['url']).removeprefix(base)}"
        )
    failed = [what for ok, what in results if not ok]
    print(f"\n{len(results) - len(failed)}/{len(results)} expectations pass")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
