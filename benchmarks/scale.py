"""Scale: 10,000 generated feeds on loopback servers (many feeds per host: 20 hosts at
127.0.0.1 … 127.0.0.20, 500 feeds each), one full `aggregator poll` cycle in a subprocess.
Reports wall time, peak memory of the whole process tree, and the most requests any one host
saw in flight at once (the per-host limit is 2 by default).

    .venv/bin/python benchmarks/scale.py [--feeds 10000] [--hosts 20] [--entries 5]
"""

from __future__ import annotations

import argparse
import sqlite3
import sys
import tempfile
import threading
from collections import defaultdict
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from _common import PYTHON, ROOT, run_measured

sys.path.insert(0, str(ROOT))
from tests.feedgen import write_feeds  # noqa: E402


class Hosts:
    def __init__(self, folder: Path, hosts: int) -> None:
        self.folder = folder
        self.lock = threading.Lock()
        self.in_flight: dict[str, int] = defaultdict(int)
        self.peak: dict[str, int] = defaultdict(int)
        self.requests = 0
        self.servers = [self._serve(f"127.0.0.{i + 1}") for i in range(hosts)]

    def _serve(self, address: str) -> ThreadingHTTPServer:
        hosts = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def do_GET(self) -> None:  # noqa: N802
                with hosts.lock:
                    hosts.requests += 1
                    hosts.in_flight[address] += 1
                    hosts.peak[address] = max(hosts.peak[address], hosts.in_flight[address])
                try:
                    body = (hosts.folder / self.path.strip("/")).read_bytes()
                    self.send_response(200)
                    self.send_header("Content-Type", "application/rss+xml")
                    self.send_header("Content-Length", str(len(body)))
                    self.end_headers()
                    self.wfile.write(body)
                finally:
                    with hosts.lock:
                        hosts.in_flight[address] -= 1

        server = ThreadingHTTPServer((address, 0), Handler)
        server.daemon_threads = True
        threading.Thread(target=server.serve_forever, daemon=True).start()
        return server


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--feeds", type=int, default=10_000)
    ap.add_argument("--hosts", type=int, default=20)
    ap.add_argument("--entries", type=int, default=5)
    ap.add_argument(
        "--profile",
        type=Path,
        help="run the poll under cProfile and write its statistics to this file "
        "(the times it prints are then inflated)",
    )
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        tmpdir = Path(tmp)
        paths = write_feeds(tmpdir / "feeds", args.feeds, args.entries, seed=5)
        hosts = Hosts(tmpdir / "feeds", args.hosts)
        lines = [
            "[storage]",
            f'database = "{tmpdir / "scale.db"}"',
            "[fetch]",
            "allow_private_networks = true",
            "concurrency = 40",
        ]
        for i, path in enumerate(paths):
            server = hosts.servers[i % args.hosts]
            host, port = server.server_address[:2]
            lines += ["[[feeds]]", f'url = "http://{host}:{port}/{path.name}"']
        cfg = tmpdir / "scale.toml"
        cfg.write_text("\n".join(lines) + "\n")
        profile = ["-m", "cProfile", "-o", str(args.profile.resolve())] if args.profile else []
        run = run_measured(
            [PYTHON, *profile, "-m", "aggregator", "--config", str(cfg), "poll", "--all"],
            timeout=3600,
        )
        if run.returncode != 0:
            raise SystemExit(f"poll failed: {run.stderr[-3000:]}")
        conn = sqlite3.connect(tmpdir / "scale.db")
        entries = conn.execute("SELECT count(*) FROM entries").fetchone()[0]
        stories = conn.execute("SELECT count(*) FROM stories").fetchone()[0]
        print(run.stdout.strip())
        print(f"{args.feeds} feeds on {args.hosts} hosts, {entries} entries, {stories} stories")
        print(
            f"wall {run.seconds:.1f} s, CPU {run.cpu_seconds:.1f} s, peak memory of the process "
            f"tree: {run.peak_pss_mb:.0f} MB PSS ({run.peak_rss_mb:.0f} MB summed RSS)"
        )
        print(
            f"requests served: {hosts.requests}; most in flight on one host: "
            f"{max(hosts.peak.values())} (limit: per_host = 2)"
        )


if __name__ == "__main__":
    main()
