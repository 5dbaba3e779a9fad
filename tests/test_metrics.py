"""`aggregator run --metrics`: Prometheus text metrics and /healthz, over real HTTP, from a
real daemon polling real feed files (one of them broken)."""

from __future__ import annotations

import re
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from aggregator.metrics import Metrics, parse_address
from tests.test_service import DEADLINE, Daemon, daemon_env, write_service_config

CLI = [sys.executable, "-m", "aggregator"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def get(url: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=10) as response:  # noqa: S310 (loopback)
            return response.status, response.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


def metric(text: str, name: str, labels: str = "") -> float:
    pattern = re.escape(name) + (re.escape("{" + labels + "}") if labels else "") + r" (\S+)"
    found = re.search(r"^" + pattern + "$", text, re.M)
    assert found, f"{name}{{{labels}}} not in:\n{text}"
    return float(found.group(1))


def test_metrics_and_healthz_describe_the_running_daemon(tmp_path: Path, feed_dir: Path) -> None:
    broken = tmp_path / "broken.xml"
    broken.write_bytes(b"\x00\x01 not a feed at all")
    config = write_service_config(
        tmp_path, [feed_dir / "ledger.xml", feed_dir / "courier.xml", broken], digests=False
    )
    port = free_port()
    daemon = Daemon(config, daemon_env(), "--metrics", f"127.0.0.1:{port}")
    try:
        daemon.wait_log(f"metrics on http://127.0.0.1:{port}/metrics")
        daemon.wait_log("cycle: 3 due")
        end = time.monotonic() + DEADLINE
        while True:  # the cycle's outcome reaches the metrics right after it is logged
            status, text = get(f"http://127.0.0.1:{port}/metrics")
            if (
                "aggregator_last_successful_cycle_timestamp_seconds " in text
                and "aggregator_fetches_total" in text
                or time.monotonic() > end
            ):
                break
            time.sleep(0.05)
        assert status == 200
        assert metric(text, "aggregator_feeds", 'state="ok"') == 2
        assert metric(text, "aggregator_feeds", 'state="failing"') == 1
        assert metric(text, "aggregator_fetches_total", 'kind="",outcome="fetched"') == 2
        failed = re.findall(
            r'^aggregator_fetches_total\{kind="(\w+)",outcome="failed"\} 1\.0$', text, re.M
        )
        assert len(failed) == 1, text
        assert metric(text, "aggregator_entries") == 4
        assert metric(text, "aggregator_stories") >= 1
        assert metric(text, "aggregator_database_bytes") > 0
        assert metric(text, "aggregator_cycle_duration_seconds_count") >= 1
        assert metric(text, "aggregator_new_entries_total") == 4
        assert (
            abs(metric(text, "aggregator_last_successful_cycle_timestamp_seconds") - time.time())
            < 120
        )

        status, body = get(f"http://127.0.0.1:{port}/healthz")
        assert (status, body.split(":")[0]) == (200, "ok"), body
        assert get(f"http://127.0.0.1:{port}/nothing")[0] == 404
    finally:
        assert daemon.stop() == 0, daemon.text()
    with pytest.raises(urllib.error.URLError):  # stopped with the daemon
        urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=2)  # noqa: S310


def test_healthz_says_503_when_dispatches_stall(tmp_path: Path) -> None:
    metrics = Metrics(lambda: tmp_path / "missing.db", horizon=0.2)
    host, port = metrics.start("127.0.0.1", 0)
    try:
        assert get(f"http://{host}:{port}/healthz")[0] == 200  # just started
        metrics.dispatch_started()
        time.sleep(0.5)  # a dispatch running for longer than twice the horizon
        status, body = get(f"http://{host}:{port}/healthz")
        assert status == 503 and "stalled: the poll cycle has run for" in body
        metrics.dispatch_finished(polled=True, ok=True, fetched=1)
        assert get(f"http://{host}:{port}/healthz")[0] == 200
        # A database that cannot be read leaves its gauges out; the rest is served.
        status, text = get(f"http://{host}:{port}/metrics")
        assert status == 200 and "aggregator_feeds" not in text
        assert metric(text, "aggregator_fetches_total", 'kind="",outcome="fetched"') == 1
    finally:
        metrics.close()


def test_metrics_refuse_a_non_loopback_address_unless_asked() -> None:
    assert parse_address("127.0.0.1:9464") == ("127.0.0.1", 9464)
    assert parse_address("[::1]:9464") == ("::1", 9464)
    assert parse_address("localhost:9464") == ("127.0.0.1", 9464)
    with pytest.raises(ValueError, match="not a loopback address"):
        parse_address("0.0.0.0:9464")
    assert parse_address("0.0.0.0:9464", allow_remote=True) == ("0.0.0.0", 9464)  # noqa: S104
    for bad in ("9464", "127.0.0.1:", "127.0.0.1:70000", "example.org:9464"):
        with pytest.raises(ValueError):
            parse_address(bad)


def test_run_with_a_bad_metrics_address_exits_2_naming_the_option(
    tmp_path: Path, feed_dir: Path
) -> None:
    config = write_service_config(tmp_path, [feed_dir / "ledger.xml"], digests=False)
    result = subprocess.run(
        [*CLI, "--config", str(config), "run", "--metrics", "0.0.0.0:9464"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2 and "--metrics" in result.stderr
    assert "--metrics-remote" in result.stderr and "Traceback" not in result.stderr


def test_run_exits_1_when_the_metrics_port_is_taken(tmp_path: Path, feed_dir: Path) -> None:
    config = write_service_config(tmp_path, [feed_dir / "ledger.xml"], digests=False)
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = subprocess.run(
            [*CLI, "--config", str(config), "run", "--metrics", f"127.0.0.1:{port}"],
            capture_output=True,
            text=True,
            timeout=60,
            env=daemon_env(),
        )
    assert result.returncode == 1, result.stderr
    assert f"cannot serve metrics on 127.0.0.1:{port}" in result.stderr
