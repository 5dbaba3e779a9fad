"""Soak: hundreds of poll cycles against a flaky loopback server; descriptors and memory.

    .venv/bin/python benchmarks/soak.py [--cycles 300] [--feeds 24] [--seed 11] [--max-seconds 900]

A loopback server (127.0.0.1 only, in this process) serves `--feeds` RSS feeds. Each request
draws, from a seeded per-feed RNG, one behaviour: the current feed (with an ETag, 304 when the
client already has it), a changed feed (its window of items moves on, so new entries arrive
and old guids come back unchanged), a connection reset (RST before or after the headers), a
body truncated mid-stream (Content-Length promises more), bytes dripped slowly (0.2 to 1.6 s;
the fetch timeout is 1 s, so about half of them time out), 500, or 503 (sometimes with
Retry-After: 1).

The poller runs in a child process (this script with --child): one long-lived `Poller` — the
object `aggregator run` keeps for its whole life, with its fetcher (httpx client), worker pool
and store — running `run_cycle(poll_all=True)` back to back. Why not `aggregator run`: the
daemon only polls what is due, and failing feeds back off for minutes to hours, so hundreds of
cycles that each hit every feed would take days; the cycle logic measured here is the same
code the daemon's dispatcher calls. After each cycle the child reports its own open
descriptors (/proc/self/fd) and RSS, and those of its worker processes and the fork server
(/proc/<pid>/fd of every descendant). The run stops after --cycles or --max-seconds.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import random
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.httpserver import LoopbackServer, Request, Response  # noqa: E402

POOL = 30  # distinct items per feed; a feed shows WINDOW of them at a time
WINDOW = 10
START = datetime(2024, 11, 1, tzinfo=UTC)
BEHAVIOURS = [  # (name, weight)
    ("good", 30),
    ("changed", 15),
    ("reset", 11),
    ("truncate", 11),
    ("drip", 13),
    ("500", 10),
    ("503", 10),
]


# -- the flaky server ---------------------------------------------------------------------------


class FlakyFeeds:
    """Per-feed state and behaviour draws; deterministic per feed for a seed."""

    def __init__(self, feeds: int, seed: int) -> None:
        self.version = [0] * feeds
        self.rngs = [random.Random(seed * 1000 + i) for i in range(feeds)]
        self.outcomes: Counter[str] = Counter()
        self.lock = threading.Lock()
        self.names = [b for b, _ in BEHAVIOURS]
        self.weights = [w for _, w in BEHAVIOURS]

    def body(self, feed: int) -> bytes:
        v = self.version[feed]
        items = []
        for n in range(v, v + WINDOW):
            k = n % POOL
            when = START + timedelta(hours=k, minutes=feed)
            items.append(
                f'<item><guid isPermaLink="false">soak{feed}-{k}</guid>'
                f"<title>Feed {feed} item {k}: harbour council budget vote {k % 7}</title>"
                f"<link>http://outlet{feed}.example/{k}</link>"
                f"<description>Item {k} of feed {feed}; the council met about the harbour "
                f"budget, topic {k % 7}, and voted.</description>"
                f"<pubDate>{format_datetime(when, usegmt=True)}</pubDate></item>"
            )
        return (
            '<?xml version="1.0" encoding="utf-8"?><rss version="2.0"><channel>'
            f"<title>Soak feed {feed}</title><link>http://outlet{feed}.example/</link>"
            f"<description>soak</description>{''.join(items)}</channel></rss>"
        ).encode()

    def handler(self, feed: int) -> Any:
        def answer(req: Request, h: BaseHTTPRequestHandler) -> Response | None:
            with self.lock:
                rng = self.rngs[feed]
                kind = rng.choices(self.names, self.weights)[0]
                if kind == "changed":
                    self.version[feed] += 1
                body = self.body(feed)
                etag = f'"v{self.version[feed]}"'
                extra = rng.random()
                self.outcomes[kind] += 1
            if kind in ("good", "changed"):
                if req.headers.get("if-none-match") == etag:
                    with self.lock:
                        self.outcomes["304"] += 1
                    return Response(304, b"", {"ETag": etag})
                return Response(200, body, {"Content-Type": "application/rss+xml", "ETag": etag})
            if kind == "500":
                return Response(500, b"internal error")
            if kind == "503":
                headers = {"Retry-After": "1"} if extra < 0.5 else {}
                return Response(503, b"busy", headers)
            if kind == "reset":
                if extra < 0.5:  # after the headers and part of the body
                    _head(h, body)
                    h.wfile.write(body[: len(body) // 3])
                    h.wfile.flush()
                _reset(h)
                return None
            if kind == "truncate":
                _head(h, body)
                h.wfile.write(body[: int(len(body) * (0.2 + 0.6 * extra))])
                h.wfile.flush()
                h.close_connection = True
                return None
            # drip: the whole body, spread over 0.2 to 1.6 s in small pieces
            _head(h, body)
            total = 0.2 + 1.4 * extra
            pieces = 20
            step = max(1, len(body) // pieces)
            for i in range(0, len(body), step):
                h.wfile.write(body[i : i + step])
                h.wfile.flush()
                time.sleep(total / pieces)
            return None

        return answer


def _head(h: BaseHTTPRequestHandler, body: bytes) -> None:
    h.send_response(200)
    h.send_header("Content-Type", "application/rss+xml")
    h.send_header("Content-Length", str(len(body)))
    h.end_headers()


def _reset(h: BaseHTTPRequestHandler) -> None:
    """Close with SO_LINGER 0: the peer gets a TCP RST, not a clean end."""
    sock: socket.socket = h.connection  # type: ignore[attr-defined]
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    h.close_connection = True
    try:
        sock.close()
    except OSError:
        pass


# -- the poller (child process) -------------------------------------------------------------------


def _fds(pid: int | str) -> int:
    try:
        return len(os.listdir(f"/proc/{pid}/fd"))
    except OSError:
        return 0


def _rss_kb(pid: int | str) -> int:
    try:
        with open(f"/proc/{pid}/status") as fh:
            for line in fh:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


def _descendants(pid: int) -> list[int]:
    """Every descendant process of `pid` (fork server and workers), from /proc."""
    children: dict[int, list[int]] = {}
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/stat") as fh:
                ppid = int(fh.read().rsplit(")", 1)[1].split()[1])
        except (OSError, ValueError, IndexError):
            continue
        children.setdefault(ppid, []).append(int(name))
    out: list[int] = []
    todo = [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            out.append(child)
            todo.append(child)
    return out


def child(config_path: Path, cycles: int, max_seconds: float, workers: int) -> int:
    from aggregator import config as config_mod
    from aggregator.pipeline import Poller, utcnow
    from aggregator.store import Store

    # Feed failures are the point here; the per-cycle JSON counts them instead of logging.
    quiet = logging.getLogger("aggregator")
    quiet.addHandler(logging.NullHandler())
    quiet.propagate = False
    cfg = config_mod.load(config_path)
    deadline = time.monotonic() + max_seconds

    async def go() -> None:
        with Store.open(cfg.database) as store:
            store.sync_feeds(cfg.feeds, utcnow())
            async with Poller(cfg, store, workers=workers) as poller:
                for n in range(1, cycles + 1):
                    t0 = time.perf_counter()
                    s = await poller.run_cycle(poll_all=True)
                    kids = _descendants(os.getpid())
                    kinds = Counter(k for _, k, _ in s.failures)
                    print(
                        json.dumps(
                            {
                                "cycle": n,
                                "seconds": round(time.perf_counter() - t0, 3),
                                "fds": _fds("self"),
                                "rss_kb": _rss_kb("self"),
                                "child_pids": len(kids),
                                "child_fds": sum(_fds(p) for p in kids),
                                "child_rss_kb": sum(_rss_kb(p) for p in kids),
                                "threads": threading.active_count(),
                                "due": s.due,
                                "fetched": s.fetched,
                                "not_modified": s.not_modified,
                                "failed": s.failed,
                                "new": s.new_entries,
                                "failures": dict(kinds),
                                "entries": store.counts()["entries"],
                            }
                        ),
                        flush=True,
                    )
                    if time.monotonic() > deadline:
                        print(json.dumps({"stopped": "max-seconds", "cycle": n}), flush=True)
                        return

    asyncio.run(go())
    return 0


# -- driver ---------------------------------------------------------------------------------------


def main() -> int:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--cycles", type=int, default=300)
    ap.add_argument("--feeds", type=int, default=24)
    ap.add_argument("--seed", type=int, default=11)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument(
        "--max-seconds",
        type=float,
        default=900.0,
        help="stop after the cycle that passes this (the run always ends)",
    )
    ap.add_argument("--child", type=Path, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        return child(args.child, args.cycles, args.max_seconds, args.workers)

    flaky = FlakyFeeds(args.feeds, args.seed)
    with tempfile.TemporaryDirectory(prefix="soak-") as tmp, LoopbackServer() as server:
        for i in range(args.feeds):
            server.route(f"/feed{i}.xml", flaky.handler(i))
        cfg = Path(tmp) / "soak.toml"
        feeds = "".join(
            f'[[feeds]]\nurl = "{server.url(f"/feed{i}.xml")}"\n' for i in range(args.feeds)
        )
        cfg.write_text(
            f'[storage]\ndatabase = "{Path(tmp) / "soak.db"}"\n\n'
            "[fetch]\ntimeout = 1\nconcurrency = 32\nper_host = 32\n"
            "allow_private_networks = true\n\n" + feeds,
            encoding="utf-8",
        )
        cmd = [
            sys.executable,
            str(Path(__file__).resolve()),
            "--child",
            str(cfg),
            "--cycles",
            str(args.cycles),
            "--max-seconds",
            str(args.max_seconds),
            "--workers",
            str(args.workers),
        ]
        print(
            f"{args.feeds} feeds on {server.base_url}, {args.cycles} cycles, seed {args.seed}, "
            f"{args.workers} workers, fetch timeout 1 s",
            flush=True,
        )
        t0 = time.perf_counter()
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True, cwd=ROOT)
        # A hung child cannot keep the benchmark alive: a watchdog kills it past the budget.
        timer = threading.Timer(args.max_seconds + 120, proc.kill)
        timer.start()
        rows: list[dict[str, Any]] = []
        assert proc.stdout is not None
        for line in proc.stdout:
            rec = json.loads(line)
            if "stopped" in rec:
                print(f"stopped by --max-seconds after cycle {rec['cycle']}")
                continue
            rows.append(rec)
            n = rec["cycle"]
            if n in (1, 10, 50, 100, 150, 200, 250, 300) or n % 100 == 0:
                print(
                    f"cycle {n:4d}: {rec['seconds']:.2f} s; poller fds {rec['fds']}, RSS "
                    f"{rec['rss_kb'] / 1024:.1f} MB; {rec['child_pids']} child processes: fds "
                    f"{rec['child_fds']}, RSS {rec['child_rss_kb'] / 1024:.1f} MB; threads "
                    f"{rec['threads']}; entries {rec['entries']}",
                    flush=True,
                )
        proc.wait()
        timer.cancel()
        seconds = time.perf_counter() - t0
    if not rows:
        print(f"the poller produced no cycles (exit {proc.returncode})")
        return 1
    print(f"\n{len(rows)} cycles in {seconds:.0f} s (exit {proc.returncode})")
    for label, key, scale, unit in (
        ("poller fds", "fds", 1, ""),
        ("child fds", "child_fds", 1, ""),
        ("poller RSS", "rss_kb", 1024, " MB"),
        ("child RSS", "child_rss_kb", 1024, " MB"),
        ("threads", "threads", 1, ""),
    ):
        at = {c: rows[c - 1][key] / scale for c in (1, 100, 300) if c <= len(rows)}
        peak = max(r[key] for r in rows) / scale
        last = rows[-1][key] / scale
        fmt = "{:.1f}" if scale > 1 else "{:.0f}"
        cols = "  ".join(f"cycle {c}: {fmt.format(v)}{unit}" for c, v in at.items())
        print(f"{label:11s} {cols}  last: {fmt.format(last)}{unit}  max: {fmt.format(peak)}{unit}")
    totals = Counter()
    for r in rows:
        totals.update({k: r[k] for k in ("due", "fetched", "not_modified", "failed", "new")})
        totals.update({f"failure:{k}": v for k, v in r["failures"].items()})
    print(
        f"server: {sum(v for k, v in flaky.outcomes.items() if k != '304')} requests; "
        + ", ".join(f"{k} {v}" for k, v in sorted(flaky.outcomes.items()))
    )
    print("poller: " + ", ".join(f"{k} {v}" for k, v in sorted(totals.items())))
    return 0 if proc.returncode == 0 else 1


if __name__ == "__main__":
    raise SystemExit(main())
