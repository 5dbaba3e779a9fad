"""Two writers on one database: `poll` beside `poll`, `poll` beside the daemon, the daemon
beside a `poll`, and short commands during a cycle. Real processes, a real loopback server and
real files; a feed whose response the test holds back keeps the first writer inside its cycle
for as long as the test needs, so no step depends on timing."""

from __future__ import annotations

import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from tests.feedgen import config_for, snapshot, write_feeds
from tests.httpserver import LoopbackServer, Response
from tests.test_service import Daemon, daemon_env

CLI = [sys.executable, "-m", "aggregator"]
DEADLINE = 60.0


class HeldFeed:
    """One generated feed served over loopback; each request waits until `release()`."""

    def __init__(self, server: LoopbackServer, body: bytes, name: str) -> None:
        self.server = server
        self.gate = threading.Event()
        self.path = f"/{name}-held.xml"
        self.url = server.url(self.path)

        def handler(_req: object, _h: object) -> Response:
            self.gate.wait(timeout=DEADLINE)
            return Response(200, body, {"Content-Type": "application/rss+xml"})

        server.route(self.path, handler)

    def release(self) -> None:
        self.gate.set()

    def wait_requested(self, times: int = 1) -> None:
        end = time.monotonic() + DEADLINE
        while len(self.server.hits(self.path)) < times:
            assert time.monotonic() < end, "the held feed was never requested"
            time.sleep(0.02)


def _setup(
    tmp_path: Path, server: LoopbackServer, name: str, feeds_count: int = 21
) -> tuple[Path, Path, HeldFeed]:
    feeds = write_feeds(tmp_path / "feeds", feeds_count, 6, seed=11)
    held = HeldFeed(server, feeds.pop().read_bytes(), name)
    db = tmp_path / f"{name}.db"
    config = tmp_path / f"{name}.toml"
    text = config_for(feeds, db, "[fetch]\nallow_private_networks = true\n")
    config.write_text(text + f'[[feeds]]\nurl = "{held.url}"\n', encoding="utf-8")
    return config, db, held


def _start_poll(config: Path, log: Path, *extra: str) -> subprocess.Popen[bytes]:
    with open(log, "wb") as err:
        return subprocess.Popen(
            [*CLI, "--config", str(config), "poll", "--all", *extra],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=err,
        )


def _wait_text(path: Path, needle: str, proc: subprocess.Popen[bytes] | None = None) -> str:
    end = time.monotonic() + DEADLINE
    while time.monotonic() < end:
        text = path.read_text(errors="replace") if path.exists() else ""
        if needle in text:
            return text
        if proc is not None and proc.poll() is not None:
            break
        time.sleep(0.02)
    raise AssertionError(
        f"{needle!r} not in {path.name}:\n"
        + (path.read_text(errors="replace") if path.exists() else "")
    )


def _run(config: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*CLI, "--config", str(config), *args], capture_output=True, text=True, timeout=DEADLINE
    )


@pytest.fixture
def clean(tmp_path: Path, server: LoopbackServer) -> dict[str, object]:
    """What one poll of the same feeds on a fresh database ends with."""
    config, db, held = _setup(tmp_path / "clean", server, "clean")
    held.release()
    done = _run(config, "poll", "--all")
    assert done.returncode == 0, done.stderr
    return snapshot(db)


@pytest.fixture
def clean_five(tmp_path: Path, server: LoopbackServer) -> dict[str, object]:
    """The same for five feeds: as many as the daemon's first cycle takes at once (it spreads
    first polls at five a second). Stories can depend on how entries were grouped into
    cycles, which is not what these tests are about."""
    config, db, held = _setup(tmp_path / "clean", server, "clean5", feeds_count=5)
    held.release()
    done = _run(config, "poll", "--all")
    assert done.returncode == 0, done.stderr
    return snapshot(db)


def _by_guid(snap: dict[str, object]) -> tuple[set[tuple[str, str]], set[frozenset[str]]]:
    """Entries and stories named by guid alone (unique across these generated feeds): the
    clean run reads the same feeds from other paths and URLs."""
    entries = {(guid, digest) for _url, guid, digest in snap["entries"]}  # type: ignore[attr-defined]
    stories = {frozenset(m.rsplit("#", 1)[1] for m in group) for group in snap["partition"]}  # type: ignore[attr-defined]
    return entries, stories


def _same_as(clean: dict[str, object], db: Path) -> None:
    entries, stories = _by_guid(snapshot(db))
    clean_entries, clean_stories = _by_guid(clean)
    assert any(len(story) > 1 for story in clean_stories), "stories to compare"
    assert entries == clean_entries
    assert stories == clean_stories


@pytest.mark.slow
def test_second_poll_waits_for_the_first_and_both_end_like_one_clean_run(
    tmp_path: Path, server: LoopbackServer, clean: dict[str, object]
) -> None:
    config, db, held = _setup(tmp_path, server, "twice")
    first = _start_poll(config, tmp_path / "first.log")
    try:
        held.wait_requested()  # the first poll is inside its cycle, holding the database
        second = _start_poll(config, tmp_path / "second.log")
        text = _wait_text(tmp_path / "second.log", "waiting", second)
        assert f"another poll (pid {first.pid}) is polling this database; waiting" in text
        assert second.poll() is None
        assert len(server.hits(held.path)) == 1, "the waiting poll fetched nothing yet"
        held.release()
        assert first.wait(timeout=DEADLINE) == 0, (tmp_path / "first.log").read_text()
        assert second.wait(timeout=DEADLINE) == 0, (tmp_path / "second.log").read_text()
    finally:
        held.release()
        for proc in (first, locals().get("second")):
            if isinstance(proc, subprocess.Popen) and proc.poll() is None:
                proc.kill()
    _same_as(clean, db)


def test_poll_no_wait_exits_75_while_another_poll_writes(
    tmp_path: Path, server: LoopbackServer
) -> None:
    config, _db, held = _setup(tmp_path, server, "nowait")
    first = _start_poll(config, tmp_path / "first.log")
    try:
        held.wait_requested()
        busy = _run(config, "poll", "--no-wait")
        assert busy.returncode == 75, busy.stderr
        assert "another poll" in busy.stderr and "--no-wait" in busy.stderr
        assert "Traceback" not in busy.stderr
    finally:
        held.release()
        assert first.wait(timeout=DEADLINE) == 0


@pytest.mark.slow
def test_poll_beside_the_daemon_waits_and_the_daemon_keeps_running(
    tmp_path: Path, server: LoopbackServer, clean_five: dict[str, object]
) -> None:
    config, db, held = _setup(tmp_path, server, "daemon", feeds_count=5)
    daemon = Daemon(config, daemon_env())
    try:
        held.wait_requested()  # the daemon is inside a cycle
        poll = _start_poll(config, tmp_path / "poll.log")
        text = _wait_text(tmp_path / "poll.log", "waiting", poll)
        assert f"the daemon (pid {daemon.proc.pid}) is polling this database; waiting" in text
        held.release()
        assert poll.wait(timeout=DEADLINE) == 0, (tmp_path / "poll.log").read_text()
        daemon.wait_log("cycle:")
        time.sleep(1.0)  # two more dispatches after the poll: the daemon is still there
        assert daemon.proc.poll() is None, daemon.text()
    finally:
        held.release()
        code = daemon.stop()
    assert code == 0, daemon.text()
    assert "CRITICAL" not in daemon.text()
    _same_as(clean_five, db)


@pytest.mark.slow
def test_daemon_started_beside_a_poll_waits_for_it_then_polls(
    tmp_path: Path, server: LoopbackServer, clean: dict[str, object]
) -> None:
    config, db, held = _setup(tmp_path, server, "late")
    poll = _start_poll(config, tmp_path / "poll.log")
    daemon = None
    try:
        held.wait_requested()
        daemon = Daemon(config, daemon_env())
        daemon.wait_log(f"another poll (pid {poll.pid}) is writing to this database; waiting")
        # The commands a user runs by hand meanwhile work and do not disturb either writer.
        reset = _run(config, "feeds", "reset", held.url)
        assert reset.returncode == 0, reset.stderr
        opml = tmp_path / "more.opml"
        opml.write_text(
            '<?xml version="1.0"?><opml version="2.0"><body>'
            '<outline type="rss" text="x" xmlUrl="https://example.org/x.xml"/>'
            "</body></opml>",
            encoding="utf-8",
        )
        imported = _run(config, "feeds", "import", str(opml), "-o", str(tmp_path / "more.toml"))
        assert imported.returncode == 0, imported.stderr
        listing = _run(config, "feeds")
        assert listing.returncode == 0, listing.stderr
        held.release()
        assert poll.wait(timeout=DEADLINE) == 0, (tmp_path / "poll.log").read_text()
        daemon.wait_log("polling again")
        assert daemon.proc.poll() is None, daemon.text()
    finally:
        held.release()
        if poll.poll() is None:
            poll.kill()
        code = daemon.stop() if daemon is not None else 0
    assert code == 0, daemon.text() if daemon else ""
    assert "CRITICAL" not in (daemon.text() if daemon else "")
    _same_as(clean, db)


def test_ctrl_c_during_a_poll_exits_130_with_one_line(
    tmp_path: Path, server: LoopbackServer
) -> None:
    import signal

    config, db, held = _setup(tmp_path, server, "interrupt", feeds_count=3)
    log = tmp_path / "poll.log"
    poll = _start_poll(config, log)
    try:
        held.wait_requested()
        poll.send_signal(signal.SIGINT)
        assert poll.wait(timeout=DEADLINE) == 130
    finally:
        held.release()
        if poll.poll() is None:
            poll.kill()
    text = log.read_text()
    assert "aggregator: interrupted" in text
    assert "Aborted!" not in text and "Traceback" not in text
    snapshot(db)  # what was committed before the interrupt is consistent
    again = _run(config, "poll", "--no-wait")  # and the lock went with the process
    assert again.returncode == 0, again.stderr
