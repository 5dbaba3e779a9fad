"""Shared helpers for the benchmarks: paths, timing a subprocess tree, reading a database."""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import psutil

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared"
PYTHON = sys.executable


def need_shared(*parts: str) -> Path:
    path = SHARED.joinpath(*parts)
    if not path.exists():
        sys.exit(f"skipped: {path} is not here (the shared corpora live beside the checkout)")
    return path


@dataclass
class Run:
    seconds: float
    cpu_seconds: float
    peak_rss_mb: float  # summed RSS: pages shared by the processes count once per process
    returncode: int
    stdout: str
    stderr: str
    peak_pss_mb: float = 0.0  # summed PSS: each shared page split among its sharers


def run_measured(
    cmd: list[str], *, env: dict[str, str] | None = None, timeout: float = 1800
) -> Run:
    """Run `cmd`, sampling the summed RSS (every 20 ms) and PSS (every 100 ms) of its whole
    process tree.

    RSS summed over processes counts the interpreter and the shared libraries once per process
    (a worker pool looks several times its real size); PSS (proportional set size, from
    /proc/PID/smaps_rollup) splits each shared page among the processes sharing it, so the sum
    is what the tree really occupies."""
    start = time.perf_counter()
    proc = subprocess.Popen(
        cmd,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, **(env or {})},
    )
    peak = 0
    peak_pss = 0
    cpu: dict[int, float] = {}
    stop = threading.Event()

    def sample() -> None:
        nonlocal peak, peak_pss
        try:
            root = psutil.Process(proc.pid)
        except psutil.NoSuchProcess:
            return
        tick = 0
        while not stop.is_set():
            total = 0
            total_pss = 0
            # PSS needs /proc/PID/smaps_rollup, which costs the kernel a walk of every mapping:
            # read it every 5th sample (100 ms) so the measuring does not slow what it measures.
            full = tick % 5 == 0
            tick += 1
            try:
                procs = [root, *root.children(recursive=True)]
            except psutil.NoSuchProcess:
                break
            for p in procs:
                try:
                    if full:
                        info = p.memory_full_info()
                        total_pss += getattr(info, "pss", info.rss)
                    else:
                        info = p.memory_info()
                    total += info.rss
                    t = p.cpu_times()
                    cpu[p.pid] = t.user + t.system
                except (psutil.NoSuchProcess, psutil.AccessDenied):
                    pass
            peak = max(peak, total)
            peak_pss = max(peak_pss, total_pss)
            stop.wait(0.02)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        # Kill the whole tree (workers included), then report the run as timed out.
        try:
            victims = [psutil.Process(proc.pid), *psutil.Process(proc.pid).children(recursive=True)]
        except psutil.NoSuchProcess:
            victims = []
        for p in victims:
            with contextlib.suppress(psutil.NoSuchProcess):
                p.kill()
        out, err = proc.communicate()
        err += f"\n[run_measured: killed after the {timeout:g} s timeout]\n"
    stop.set()
    sampler.join()
    seconds = time.perf_counter() - start
    return Run(seconds, sum(cpu.values()), peak / 1e6, proc.returncode, out, err, peak_pss / 1e6)


def run_check(check: Callable[[Path], int], prefix: str, argv: list[str] | None, doc: str) -> int:
    """The outside checks' command line: `--keep DIR` keeps the work folder, else a temp one."""
    import argparse
    import tempfile

    parser = argparse.ArgumentParser(description=doc.split("\n\n")[0])
    parser.add_argument("--keep", type=Path, help="work in this folder and keep it")
    args = parser.parse_args(argv)
    if args.keep:
        args.keep.mkdir(parents=True, exist_ok=True)
        return check(args.keep)
    with tempfile.TemporaryDirectory(prefix=prefix) as tmp:
        return check(Path(tmp))
