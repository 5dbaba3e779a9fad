"""The shipped systemd unit: `systemd-analyze verify` is clean, exposure is at most 2.0.

The unit's ExecStart names the installed path (/opt/aggregator/bin/aggregator), which does not
exist on a development or CI machine, and `verify` rightly fails on a missing binary. So the test
checks a copy whose ExecStart points at this checkout's own `aggregator` script (the same
command line otherwise) and asserts that this path is the only difference.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

UNIT = Path(__file__).resolve().parents[1] / "aggregator.service"
INSTALLED = "/opt/aggregator/bin/aggregator"
ANALYZE = shutil.which("systemd-analyze")
needs_analyze = pytest.mark.skipif(
    ANALYZE is None,
    reason="systemd-analyze is not installed (Debian: apt-get install -y systemd); "
    ".ci/run installs it",
)


def _settings(text: str) -> list[tuple[str, str]]:
    pairs = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith(("#", ";", "[")) and "=" in line:
            key, _, value = line.partition("=")
            pairs.append((key.strip(), value.strip()))
    return pairs


def _local_copy(tmp_path: Path) -> Path:
    text = UNIT.read_text(encoding="utf-8")
    assert text.count(INSTALLED) == 1, "ExecStart should name the installed binary once"
    here = Path(sys.executable).parent / "aggregator"
    assert here.exists(), f"{here} missing: run `make venv` (pip install -e .)"
    copy = tmp_path / "aggregator.service"  # the same name: verify checks it
    copy.write_text(text.replace(INSTALLED, str(here)), encoding="utf-8")
    return copy


def test_unit_has_the_settings_the_daemon_relies_on() -> None:
    settings = dict(_settings(UNIT.read_text(encoding="utf-8")))
    assert settings["Type"] == "notify" and settings["NotifyAccess"] == "main"
    assert settings["ExecStart"] == f"{INSTALLED} --config /etc/aggregator/aggregator.toml run"
    assert settings["ExecReload"] == "/bin/kill -HUP $MAINPID"
    assert settings["WatchdogSec"] and settings["Restart"] == "on-failure"
    assert settings["User"] == settings["Group"] == "aggregator"
    assert settings["StateDirectory"] == settings["ConfigurationDirectory"] == "aggregator"
    assert settings["KillMode"] == "mixed"  # workers are stopped by the daemon, not by SIGTERM
    assert "2" in settings["RestartPreventExitStatus"].split()  # ConfigError's exit code
    # The stop timeout leaves room for the daemon's own 10 s shutdown.
    assert int(settings["TimeoutStopSec"].rstrip("s")) > 10


def test_exec_start_command_line_is_accepted_by_the_cli(tmp_path: Path) -> None:
    args = dict(_settings(_local_copy(tmp_path).read_text()))["ExecStart"].split()
    done = subprocess.run([*args, "--help"], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert "Run as a daemon" in done.stdout


@needs_analyze
def test_systemd_analyze_verify_is_clean(tmp_path: Path) -> None:
    assert ANALYZE is not None
    unit = _local_copy(tmp_path)
    done = subprocess.run(
        [ANALYZE, "verify", str(unit)], capture_output=True, text=True, timeout=120, cwd=tmp_path
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert done.stdout.strip() == "" and done.stderr.strip() == "", done.stdout + done.stderr


@needs_analyze
def test_systemd_analyze_security_exposure_is_at_most_2(tmp_path: Path) -> None:
    assert ANALYZE is not None
    unit = _local_copy(tmp_path)
    done = subprocess.run(
        [ANALYZE, "security", "--offline=yes", "--no-pager", str(unit)],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=tmp_path,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    match = re.search(
        r"Overall exposure level for aggregator\.service: (\d+(?:\.\d+)?)", done.stdout
    )
    assert match, done.stdout + done.stderr
    exposure = float(match.group(1))
    print(f"systemd-analyze security: overall exposure {exposure}")
    assert exposure <= 2.0, done.stdout
