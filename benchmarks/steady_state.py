"""Steady state: replay ../shared/corpora/news-en-2020 (20 outlets, ~21 daily snapshots each)
from a loopback server that moves one snapshot forward per poll, and report the CPU seconds each
cycle costs (poller process plus its workers). Then poll again with nothing changed.

    .venv/bin/python benchmarks/steady_state.py [--cycles 21]
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import statistics
import sys
import tempfile
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import psutil
from _common import ROOT, need_shared

sys.path.insert(0, str(ROOT))

from aggregator import config as config_mod  # noqa: E402
from aggregator.pipeline import Poller, utcnow  # noqa: E402
from aggregator.store import Store  # noqa: E402


class Replay:
    def __init__(self, corpus: Path) -> None:
        self.outlets = {
            d.name: sorted(d.glob("*.xml")) for d in sorted(corpus.iterdir()) if d.is_dir()
        }
        self.step = 0
        self.requests = 0
        self.not_modified = 0

    def body(self, outlet: str) -> bytes:
        files = self.outlets[outlet]
        return files[min(self.step, len(files) - 1)].read_bytes()

    def serve(self) -> ThreadingHTTPServer:
        replay = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def do_GET(self) -> None:  # noqa: N802
                replay.requests += 1
                outlet = self.path.strip("/").removesuffix(".xml")
                body = replay.body(outlet)
                etag = '"' + hashlib.sha1(body).hexdigest() + '"'
                if self.headers.get("If-None-Match") == etag:
                    replay.not_modified += 1
                    self.send_response(304)
                    self.send_header("ETag", etag)
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                self.send_response(200)
                self.send_header("Content-Type", "application/rss+xml")
                self.send_header("ETag", etag)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

        server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        server.daemon_threads = True
        threading.Thread(target=server.serve_forever, daemon=True).start()
        return server


def tree_cpu() -> float:
    me = psutil.Process()
    total = sum(me.cpu_times()[:2])
    for child in me.children(recursive=True):
        try:
            total += sum(child.cpu_times()[:2])
        except psutil.NoSuchProcess:
            pass
    return total


async def run(cycles: int, tmp: Path) -> None:
    replay = Replay(need_shared("corpora", "news-en-2020"))
    server = replay.serve()
    port = server.server_address[1]
    cfg_path = tmp / "steady.toml"
    cfg_path.write_text(
        f'[storage]\ndatabase = "{tmp / "steady.db"}"\n[fetch]\nallow_private_networks = true\n'
        + "".join(
            f'[[feeds]]\nurl = "http://127.0.0.1:{port}/{o}.xml"\ntitle = "{o}"\n'
            for o in replay.outlets
        )
    )
    cfg = config_mod.load(cfg_path)
    costs = []
    with Store.open(cfg.database) as store:
        store.sync_feeds(cfg.feeds, utcnow())
        async with Poller(cfg, store) as poller:
            for step in range(cycles):
                replay.step = step
                cpu0, wall0 = tree_cpu(), time.perf_counter()
                summary = await poller.run_cycle(mode="all")
                cpu, wall = tree_cpu() - cpu0, time.perf_counter() - wall0
                costs.append(cpu)
                print(
                    f"cycle {step + 1:>2}: CPU {cpu:5.2f} s, wall {wall:5.2f} s  {summary.line()}",
                    flush=True,
                )
            quiet = []
            for _ in range(3):  # nothing changed: every feed answers 304
                cpu0, wall0 = tree_cpu(), time.perf_counter()
                summary = await poller.run_cycle(mode="all")
                quiet.append(tree_cpu() - cpu0)
                print(
                    f"unchanged cycle: CPU {quiet[-1]:.3f} s, wall {time.perf_counter() - wall0:.3f} s"
                    f"  {summary.line()}",
                    flush=True,
                )
        counts = store.counts()
    server.shutdown()
    print(f"\nfirst cycle (empty database): CPU {costs[0]:.2f} s")
    print(
        f"later cycles (one snapshot forward): median CPU {statistics.median(costs[1:]):.2f} s per cycle"
    )
    print(f"unchanged cycles (all 304): median CPU {statistics.median(quiet):.3f} s per cycle")
    print(f"database: {counts}; server: {replay.requests} requests, {replay.not_modified} x 304")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--cycles", type=int, default=21)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        asyncio.run(run(args.cycles, Path(tmp)))


if __name__ == "__main__":
    main()
