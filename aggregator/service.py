"""The daemon behind `aggregator run`: scheduler, signals, systemd notify + watchdog, logging.

The only APScheduler user. Polling state lives in the database (`feeds.next_poll_at`), so the
scheduler holds nothing worth persisting: a short dispatcher job polls whatever is due, an hourly
job refreshes digests (stories age out of their windows), and a daily job prunes and tidies the
database. Everything runs on one asyncio event loop; database writes are short synchronous
transactions that never span an `await`, so a signal can never interrupt one half-way.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import os
import signal
import socket
import sys
import time
import zlib
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, fields, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, TextIO

from apscheduler.schedulers.asyncio import AsyncIOScheduler
from apscheduler.triggers.cron import CronTrigger
from apscheduler.triggers.date import DateTrigger
from apscheduler.triggers.interval import IntervalTrigger

from . import config as config_mod
from .config import Config
from .digests import write_digests
from .errors import AggregatorError, ConfigError, StoreError
from .model import utcnow
from .pipeline import CycleSummary, Poller
from .store import DaemonPid, Store, WriterLock

log = logging.getLogger("aggregator.service")

# -- systemd notify protocol -------------------------------------------------------------------


def notify_address(value: str | None) -> str | None:
    """The socket address in $NOTIFY_SOCKET: a path, or '@name' for an abstract socket."""
    if not value:
        return None
    if value.startswith("@"):
        return "\0" + value[1:]
    if value.startswith("/"):
        return value
    return None  # e.g. vsock: addresses, which a service on a host never gets


class Notifier:
    """Sends sd_notify datagrams to $NOTIFY_SOCKET; does nothing when it is not set.

    Never blocks and never raises: a full or vanished socket must not stop the daemon.
    """

    def __init__(self, env: Mapping[str, str] | None = None) -> None:
        env = os.environ if env is None else env
        self.address = notify_address(env.get("NOTIFY_SOCKET"))
        if env.get("NOTIFY_SOCKET") and self.address is None:
            log.warning(
                "NOTIFY_SOCKET=%s: unsupported address, not notifying systemd",
                env.get("NOTIFY_SOCKET"),
            )
        self._sock: socket.socket | None = None
        if self.address is not None:
            self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
            self._sock.setblocking(False)

    @property
    def enabled(self) -> bool:
        return self._sock is not None

    def send(self, *assignments: str) -> bool:
        """Send one datagram of VAR=value lines; returns whether it was sent."""
        if self._sock is None or self.address is None:
            return False
        try:
            self._sock.sendto("\n".join(assignments).encode("utf-8"), self.address)
        except OSError as exc:
            log.debug("sd_notify %s failed: %s", assignments, exc)
            return False
        return True

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None


def monotonic_usec() -> int:
    """CLOCK_MONOTONIC in microseconds, as systemd (≥253) wants next to RELOADING=1."""
    return time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000


def watchdog_interval(env: Mapping[str, str], pid: int) -> float | None:
    """Seconds between WATCHDOG=1 pings (half of $WATCHDOG_USEC), or None when not asked."""
    usec = env.get("WATCHDOG_USEC", "")
    if not (usec.isascii() and usec.isdigit()) or int(usec) == 0:
        return None
    owner = env.get("WATCHDOG_PID", "")
    if owner and owner != str(pid):
        return None  # meant for another process (we were started by the real recipient)
    return int(usec) / 2 / 1_000_000


# -- logging -----------------------------------------------------------------------------------


def syslog_priority(levelno: int) -> int:
    """A logging level as a syslog priority (what journald reads from a `<N>` prefix)."""
    if levelno >= logging.CRITICAL:
        return 2
    if levelno >= logging.ERROR:
        return 3
    if levelno >= logging.WARNING:
        return 4
    if levelno >= logging.INFO:
        return 6
    return 7


class JournalFormatter(logging.Formatter):
    """Prefixes every line with `<priority>`; journald adds time, unit and pid itself."""

    def format(self, record: logging.LogRecord) -> str:
        prefix = f"<{syslog_priority(record.levelno)}>"
        text = super().format(record)
        return "\n".join(prefix + line for line in (text.splitlines() or [""]))


def journald_stream(stream: TextIO, env: Mapping[str, str]) -> bool:
    """Whether `stream` is the journald stream $JOURNAL_STREAM names (device:inode)."""
    value = env.get("JOURNAL_STREAM", "")
    dev, _, ino = value.partition(":")
    if not (value.isascii() and dev.isdigit() and ino.isdigit()):
        return False
    try:
        st = os.fstat(stream.fileno())
    except (OSError, ValueError, AttributeError):
        return False
    return (st.st_dev, st.st_ino) == (int(dev), int(ino))


class _QuietSkips(logging.Filter):
    """APScheduler warns when a run is skipped because the last is still busy: with a 15 s
    dispatcher and a cycle that takes minutes that is the design, not news."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "maximum number of running instances reached" not in record.getMessage()


def configure_logging(
    level: int | str, stream: TextIO | None = None, env: Mapping[str, str] | None = None
) -> bool:
    """Log to stderr, with syslog prefixes when journald reads it. Returns whether it does."""
    stream = sys.stderr if stream is None else stream
    env = os.environ if env is None else env
    if isinstance(level, str):
        level = logging.getLevelNamesMapping()[level.upper()]
    journal = journald_stream(stream, env)
    handler = logging.StreamHandler(stream)
    if journal:
        handler.setFormatter(JournalFormatter("%(name)s: %(message)s"))
    else:
        handler.setFormatter(
            logging.Formatter(
                "%(asctime)s %(levelname)s %(name)s: %(message)s", "%Y-%m-%dT%H:%M:%S%z"
            )
        )
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
        old.close()
    root.addHandler(handler)
    root.setLevel(level)
    # APScheduler logs every run at INFO; only its warnings matter unless debugging.
    aps = logging.getLogger("apscheduler")
    aps.setLevel(logging.DEBUG if level <= logging.DEBUG else logging.WARNING)
    for name in ("apscheduler.scheduler", "apscheduler.executors.default"):
        logging.getLogger(name).addFilter(_QuietSkips())
    logging.getLogger("httpx").setLevel(max(level, logging.WARNING))
    logging.getLogger("httpcore").setLevel(max(level, logging.WARNING))
    return journal


# -- pure helpers ------------------------------------------------------------------------------


def spread_first_polls(
    feeds: Sequence[tuple[int, str]], now: datetime, *, rate: float = 5.0, max_window: float = 300.0
) -> list[tuple[int, datetime]]:
    """Start times for feeds that are all due at once: `rate` a second, within `max_window`.

    Deterministic: feeds are ordered by a hash of their URL (which interleaves hosts) and
    evenly spaced, so a restart does not hit every server in the same second.
    """
    ordered = sorted(feeds, key=lambda f: (zlib.crc32(f[1].encode("utf-8")), f[0]))
    if not ordered:
        return []
    window = min(max_window, len(ordered) / rate)
    step = window / len(ordered)
    return [
        (feed_id, now + timedelta(seconds=int(i * step)))
        for i, (feed_id, _url) in enumerate(ordered)
    ]


def protect_since(config: Config, now: datetime) -> datetime:
    """Stories last seen after this are kept whole: a digest or the clusterer may need them."""
    longest = max([config.cluster.window, *(d.since for d in config.digests)])
    return now - timedelta(seconds=longest)


def config_changes(old: Config, new: Config) -> list[str]:
    """Human lines describing what a reload changes (feeds, digests, settings)."""
    lines = _keyed_changes("feed", {f.url: f for f in old.feeds}, {f.url: f for f in new.feeds})
    lines += _keyed_changes(
        "digest", {d.name: d for d in old.digests}, {d.name: d for d in new.digests}
    )
    for section, attr in (
        ("storage.database", "database"),
        ("storage.keep_days", "keep_days"),
        ("fetch", "fetch"),
        ("schedule", "schedule"),
        ("cluster", "cluster"),
    ):
        a, b = getattr(old, attr), getattr(new, attr)
        if a != b:
            detail = _diff(a, b) if hasattr(a, "__dataclass_fields__") else f"{a} → {b}"
            lines.append(f"[{section}] changed ({detail})")
    return lines


def _keyed_changes(kind: str, old: dict[str, Any], new: dict[str, Any]) -> list[str]:
    """Lines for what was added, removed or changed between two keyed sets of settings."""
    lines = [f"{kind} added: {key}" for key in new if key not in old]
    lines += [f"{kind} removed: {key}" for key in old if key not in new]
    lines += [
        f"{kind} changed: {key} ({_diff(old[key], item)})"
        for key, item in new.items()
        if key in old and old[key] != item
    ]
    return lines


def _diff(a: Any, b: Any) -> str:
    return ", ".join(
        f"{f.name}: {getattr(a, f.name)!r} → {getattr(b, f.name)!r}"
        for f in fields(a)
        if getattr(a, f.name) != getattr(b, f.name)
    )


# -- the daemon --------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ServiceOptions:
    dispatch_interval: float = 15.0  # seconds between looks at feeds.next_poll_at
    housekeeping_delay: float = 600.0  # first housekeeping this long after start
    housekeeping_hour: int = 3  # then daily at this UTC hour (minute 17)
    stop_timeout: float = 10.0  # SIGTERM → exit within this, in-flight work or not
    workers: int | None = None  # worker processes for parsing (default: up to 4)
    metrics: tuple[str, int] | None = None  # serve /metrics and /healthz here (run --metrics)


class Service:
    """One daemon run: `await Service(path, options).run()` returns the exit code."""

    def __init__(
        self,
        config_path: Path,
        options: ServiceOptions | None = None,
        notifier: Notifier | None = None,
        env: Mapping[str, str] | None = None,
    ) -> None:
        self.config_path = Path(config_path)
        self.options = options or ServiceOptions()
        self.env = os.environ if env is None else env
        self.notifier = notifier or Notifier(self.env)
        self.config: Config | None = None
        self.store: Store | None = None
        self.poller: Poller | None = None
        self.scheduler: AsyncIOScheduler | None = None
        self.exit_code = 0
        self.last_cycle: CycleSummary | None = None
        self.polls_since_start = 0
        self.new_since_start = 0
        self._stop = asyncio.Event()
        self._stopping = False
        self._running_jobs: set[asyncio.Task[Any]] = set()
        self._db_lock = asyncio.Lock()  # a poll cycle and housekeeping never interleave
        self._writer: WriterLock | None = None  # and never overlap another process's poll
        self._writer_busy_logged = False
        self._rebuild_poller = False
        self._watchdog: asyncio.Task[None] | None = None
        self._pid: DaemonPid | None = None  # <database>.pid, for `feeds add` to signal
        self._metrics: Any = None  # metrics.Metrics when serving them

    # -- lifecycle ---------------------------------------------------------------------------

    async def run(self) -> int:
        loop = asyncio.get_running_loop()
        self._start_watchdog()
        # Installed first: a SIGTERM during start-up then stops cleanly right after it.
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self.request_stop, sig.name)
        loop.add_signal_handler(signal.SIGHUP, self.reload)
        try:
            self.config = config_mod.load(self.config_path)
            self.store = Store.open(self.config.database)
            self._pid = DaemonPid(self.config.database)
            if not self._pid.claim():
                log.warning(
                    "%s: cannot record this daemon's pid (another daemon on this "
                    "database?); `feeds add` and `feeds remove` will not signal it",
                    self._pid.path,
                )
            now = utcnow()
            report = self.store.sync_feeds(self.config.feeds, now)
            spread = spread_first_polls(self.store.start_due_feeds(now), now)
            self.store.set_next_polls(spread)
        except AggregatorError as exc:
            log.error("cannot start: %s", exc)
            self.notifier.send(f"STATUS=cannot start: {exc}")
            for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
                loop.remove_signal_handler(sig)
            await self._stop_watchdog()
            if self._pid is not None:
                self._pid.release()
            if self.store is not None:
                self.store.close()
            return exc.exit_code
        log.info(
            "database %s, config %s: %d feeds (%d added, %d updated, %d deactivated)",
            self.config.database,
            self.config_path,
            len(self.config.feeds),
            len(report.added),
            len(report.updated),
            len(report.deactivated),
        )
        if spread:
            log.info(
                "first polls of %d feeds spread over %d s",
                len(spread),
                int((spread[-1][1] - now).total_seconds()) if spread else 0,
            )
        if self.options.metrics is not None and not self._start_metrics(*self.options.metrics):
            for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
                loop.remove_signal_handler(sig)
            await self._stop_watchdog()
            if self._pid is not None:
                self._pid.release()
            self.store.close()
            return 1
        self.poller = Poller(self.config, self.store, workers=self.options.workers)
        await self.poller.__aenter__()
        self.scheduler = self._make_scheduler()
        self.scheduler.start()
        self._write_digests("start")
        if not self._stopping:  # a SIGTERM during start-up has already said STOPPING=1
            self.notifier.send("READY=1", f"STATUS={self.status_line()}")
            log.info("ready: dispatching every %g s", self.options.dispatch_interval)

        await self._stop.wait()
        return await self._shutdown(loop)

    def _start_metrics(self, host: str, port: int) -> bool:
        from .metrics import Metrics

        metrics = Metrics(self._database_path, self.options.dispatch_interval)
        try:
            bound = metrics.start(host, port)
        except OSError as exc:
            log.error(
                "cannot start: cannot serve metrics on %s:%d: %s", host, port, exc.strerror or exc
            )
            self.notifier.send(f"STATUS=cannot serve metrics on {host}:{port}")
            return False
        self._metrics = metrics
        shown = f"[{bound[0]}]" if ":" in bound[0] else bound[0]
        log.info("metrics on http://%s:%d/metrics, health on /healthz", shown, bound[1])
        return True

    def _database_path(self) -> Path:
        assert self.config is not None
        return self.config.database

    def request_stop(self, reason: str = "stop requested") -> None:
        """SIGTERM/SIGINT: stop dispatching and shut down (idempotent)."""
        if self._stopping:
            return
        self._stopping = True
        self.notifier.send("STOPPING=1", f"STATUS=stopping ({reason})")
        log.info("stopping (%s)", reason)
        self._stop.set()

    async def _shutdown(self, loop: asyncio.AbstractEventLoop) -> int:
        deadline = loop.time() + self.options.stop_timeout
        assert self.scheduler is not None and self.store is not None
        # Nothing new starts; what runs may finish. The signal handlers stay: a second
        # SIGTERM or Ctrl-C is ignored (request_stop is idempotent), not a traceback.
        self.scheduler.pause()
        running = {t for t in self._running_jobs if not t.done()}
        if running:
            # Leave a margin for closing the fetcher, the worker pool and the database.
            _done, late = await asyncio.wait(running, timeout=max(0.1, deadline - loop.time() - 3))
            for task in late:
                task.cancel()
            if late:
                await asyncio.wait(late, timeout=1)
        self.scheduler.shutdown(wait=False)
        await asyncio.sleep(0)  # AsyncIOScheduler shuts down on the next loop iteration
        clean = await self._close_poller(deadline - loop.time())
        if self._metrics is not None:
            self._metrics.close()
        if self._pid is not None:
            self._pid.release()
        self.store.close()
        log.info("stopped")
        self.notifier.send("STATUS=stopped")
        await self._stop_watchdog()
        self.notifier.close()
        if not clean:
            # A worker is still deep in a parse and would hold the interpreter's exit; every
            # outcome is committed, so leaving now loses nothing.
            logging.shutdown()
            os._exit(self.exit_code)
        return self.exit_code

    async def _close_poller(self, budget: float) -> bool:
        """Close the fetcher and the worker pool; False if the pool outlived `budget`."""
        poller = self.poller
        if poller is None:
            return True
        if poller.pool is not None:
            # Shutting the pool down waits for running parses: do that off the event loop
            # (the watchdog keeps pinging) and give up after the budget. A second close from
            # the Poller's own exit is then instant.
            try:
                await asyncio.wait_for(
                    asyncio.to_thread(poller.pool.close), timeout=max(0.5, budget)
                )
            except TimeoutError:
                log.error("worker processes did not finish within the stop timeout; leaving anyway")
                return False
        await poller.__aexit__(None, None, None)
        return True

    # -- jobs --------------------------------------------------------------------------------

    def _make_scheduler(self) -> AsyncIOScheduler:
        interval = self.options.dispatch_interval
        scheduler = AsyncIOScheduler(timezone=UTC)
        now = datetime.now(UTC)
        # A late dispatch is still worth running (the database knows what is due), so the
        # grace is generous; coalesce + one instance mean a long cycle just delays the next.
        scheduler.add_job(
            self._dispatch,
            IntervalTrigger(seconds=interval, timezone=UTC),
            id="dispatch",
            name="dispatch due feeds",
            coalesce=True,
            max_instances=1,
            misfire_grace_time=max(60, int(4 * interval)),
            next_run_time=now,
        )
        scheduler.add_job(
            self._hourly,
            IntervalTrigger(hours=1, timezone=UTC),
            id="hourly",
            name="refresh digests, checkpoint",
            coalesce=True,
            max_instances=1,
            misfire_grace_time=600,
        )
        scheduler.add_job(
            self._housekeeping,
            CronTrigger(hour=self.options.housekeeping_hour, minute=17, timezone=UTC),
            id="housekeeping",
            name="daily housekeeping",
            coalesce=True,
            max_instances=1,
            misfire_grace_time=3600,
        )
        scheduler.add_job(
            self._housekeeping,
            DateTrigger(now + timedelta(seconds=self.options.housekeeping_delay), timezone=UTC),
            id="housekeeping-start",
            name="housekeeping after start",
            misfire_grace_time=3600,
        )
        return scheduler

    @contextlib.contextmanager
    def _job(self) -> Iterator[None]:
        """Track the running job's task, so a shutdown can wait for it or cancel it."""
        task = asyncio.current_task()
        assert task is not None
        self._running_jobs.add(task)
        try:
            yield
        finally:
            self._running_jobs.discard(task)

    async def _dispatch(self) -> None:
        """Poll the feeds that are due, record outcomes, rewrite digests when stories changed."""
        if self._stopping:
            return
        with self._job():
            try:
                async with self._db_lock:
                    if self._stopping or not self._take_writer():
                        return
                    if self._metrics is not None:
                        self._metrics.dispatch_started()
                    summary: CycleSummary | None = None
                    try:
                        await self._maybe_rebuild_poller()
                        assert self.poller is not None
                        summary = await self.poller.run_cycle()
                    finally:
                        self._release_writer()
                        self._report_dispatch(summary)
            except asyncio.CancelledError:
                if not self._stopping:
                    raise
                self._uncancel()
                log.warning(
                    "abandoned the poll cycle in flight: feeds not yet recorded "
                    "stay due and are polled after the restart"
                )
                return
            except StoreError as exc:
                self._fatal(exc)
                return
            except Exception:
                log.exception("poll cycle failed; trying again at the next dispatch")
                return
            if summary.due:
                self.last_cycle = summary
                self.polls_since_start += summary.due
                self.new_since_start += summary.new_entries
                log.info("cycle: %d due; %s", summary.due, summary.line())
                if summary.changed or summary.new_stories or summary.grown_stories:
                    self._write_digests("cycle")
            self.notifier.send(f"STATUS={self.status_line()}")

    def _report_dispatch(self, summary: CycleSummary | None) -> None:
        """Tell the metrics a dispatch ended (`summary` None: it did not run to its end)."""
        if self._metrics is None:
            return
        if summary is None:
            self._metrics.dispatch_finished(polled=False, ok=False)
            return
        self._metrics.dispatch_finished(
            polled=bool(summary.due),
            ok=True,
            fetched=summary.fetched,
            not_modified=summary.not_modified,
            new_entries=summary.new_entries,
            failures=[kind for _, kind, _ in summary.failures],
        )

    async def _hourly(self) -> None:
        """Digests age (stories leave their windows) without new entries; and a WAL that
        readers kept from being reset by SQLite's automatic (passive) checkpoints is reset
        here when they let go for a moment, so it cannot grow for a day."""
        if self._stopping:
            return
        with self._job():
            self._write_digests("hourly")
            try:
                async with self._db_lock:
                    if self.store is not None and not self._stopping:
                        busy, frames, done = self.store.checkpoint(mode="TRUNCATE", wait_ms=200)
                        log.debug(
                            "hourly WAL checkpoint: busy=%d, %d of %d frames", busy, done, frames
                        )
            except asyncio.CancelledError:
                if not self._stopping:
                    raise
                self._uncancel()
            except StoreError as exc:
                self._fatal(exc)

    async def _housekeeping(self) -> None:
        """Prune old entries, checkpoint the WAL, refresh planner statistics."""
        if self._stopping:
            return
        with self._job():
            try:
                async with self._db_lock:
                    while not self._take_writer():
                        await asyncio.sleep(1.0)  # an outside poll is writing: after it
                        if self._stopping:
                            return
                    try:
                        await self.housekeeping()
                    finally:
                        self._release_writer()
            except asyncio.CancelledError:
                if not self._stopping:
                    raise
                self._uncancel()
                log.warning("housekeeping interrupted by shutdown; it runs again later")
            except StoreError as exc:
                self._fatal(exc)

    async def housekeeping(self, now: datetime | None = None) -> dict[str, int]:
        """One housekeeping pass (the caller holds the database to itself)."""
        assert self.store is not None and self.config is not None
        now = now or utcnow()
        config = self.config
        counts = {"entries": 0, "stories": 0, "stories_trimmed": 0}
        steps = self.store.prune_steps(
            config.keep_days,
            protect_since(config, now),
            now=now,
            representative=config.cluster.representative,
        )
        try:
            for step in steps:
                counts = step
                await asyncio.sleep(0)  # let the watchdog and signals in between batches
                if self._stopping:
                    break
        finally:
            steps.close()
        self.store.optimize()  # before the checkpoint: ANALYZE writes to the WAL
        busy, frames, done = self.store.checkpoint(mode="TRUNCATE")
        log.info(
            "housekeeping: pruned %d entries older than %d days, %d stories removed, "
            "%d trimmed; WAL checkpoint %s (%d of %d frames)",
            counts["entries"],
            config.keep_days,
            counts["stories"],
            counts["stories_trimmed"],
            "busy, readers active" if busy else "complete",
            done,
            frames,
        )
        return counts

    def _take_writer(self) -> bool:
        """Take the database's writer lock for one cycle or housekeeping pass; False when
        another process (a `poll` run by hand or by cron) holds it: the daemon then waits for
        its next dispatch instead of working from a view of the stories that poll changes."""
        assert self.store is not None
        if self._writer is None:
            self._writer = WriterLock(self.store.path, "daemon")
        if self._writer.try_acquire():
            if self._writer_busy_logged:
                log.info("the other writer has finished; polling again")
            self._writer_busy_logged = False
            return True
        if not self._writer_busy_logged:
            log.info(
                "%s is writing to this database; waiting for it to finish", self._writer.holder()
            )
            self._writer_busy_logged = True
        return False

    def _release_writer(self) -> None:
        if self._writer is not None:
            self._writer.release()

    def _fatal(self, exc: AggregatorError) -> None:
        log.critical("%s", exc)
        self.exit_code = exc.exit_code
        self.request_stop("database error")

    @staticmethod
    def _uncancel() -> None:
        task = asyncio.current_task()
        if task is not None:
            task.uncancel()

    async def _maybe_rebuild_poller(self) -> None:
        """Fetch settings changed at a reload: new fetcher and pool, between cycles."""
        if not self._rebuild_poller or self.config is None or self.store is None:
            return
        self._rebuild_poller = False
        old = self.poller
        self.poller = Poller(self.config, self.store, workers=self.options.workers)
        await self.poller.__aenter__()
        if old is not None:
            await old.__aexit__(None, None, None)
        log.info("fetcher and worker pool restarted with the new [fetch] settings")

    def _write_digests(self, why: str) -> None:
        if self.config is None or self.store is None or not self.config.digests:
            return
        try:
            written = write_digests(self.config, self.store, utcnow())
        except StoreError as exc:
            self._fatal(exc)
            return
        except OSError as exc:
            log.error("cannot write digest %s: %s", getattr(exc, "filename", ""), exc)
            return
        for path in written:
            log.info("digest written (%s): %s", why, path)

    # -- reload ------------------------------------------------------------------------------

    def reload(self) -> None:
        """SIGHUP: re-read the config; apply it, or refuse a broken one and keep running."""
        if self._stopping or self.config is None or self.store is None:
            return
        self.notifier.send(
            "RELOADING=1", f"MONOTONIC_USEC={monotonic_usec()}", "STATUS=reloading configuration"
        )
        log.info("reloading %s", self.config_path)
        try:
            new = config_mod.load(self.config_path)
        except ConfigError as exc:
            log.error("reload refused, keeping the running configuration: %s", exc)
            self.notifier.send("READY=1", f"STATUS=reload refused ({exc}); {self.status_line()}")
            return
        old = self.config
        changes = config_changes(old, new)
        if new.database != old.database:
            log.warning(
                "[storage] database is now %s: restart the service to use it; still writing %s",
                new.database,
                old.database,
            )
            new = replace(new, database=old.database)
        try:
            now = utcnow()
            report = self.store.sync_feeds(new.feeds, now)
            self.store.set_next_polls(
                spread_first_polls(self.store.start_due_feeds(now, unscheduled_only=True), now)
            )
        except StoreError as exc:
            self._fatal(exc)
            return
        self.config = new
        if new.fetch != old.fetch:
            self._rebuild_poller = True  # at the start of the next cycle
        if self.poller is not None:
            self.poller.config = new
        for line in changes[:100]:
            log.info("reload: %s", line)
        if len(changes) > 100:
            log.info("reload: ... and %d more changes", len(changes) - 100)
        log.info(
            "reloaded: %d feeds (%d added, %d updated, %d deactivated in the database), %d digests",
            len(new.feeds),
            len(report.added),
            len(report.updated),
            len(report.deactivated),
            len(new.digests),
        )
        if new.digests != old.digests:
            self._write_digests("reload")
        self.notifier.send("READY=1", f"STATUS={self.status_line()}")

    # -- status and watchdog -----------------------------------------------------------------

    def status_line(self) -> str:
        """'polled 120 feeds, 34 new entries, next poll in 30 s' (systemctl status shows it)."""
        now = utcnow()
        parts: list[str] = []
        last = self.last_cycle
        if last is not None:
            parts.append(f"polled {last.due} feeds, {last.new_entries} new entries")
            if last.failed:
                parts.append(f"{last.failed} failed")
            if self.polls_since_start > last.due:
                parts.append(
                    f"{self.polls_since_start} polls and {self.new_since_start} new "
                    "entries since start"
                )
        elif self.config is not None:
            parts.append(f"{len(self.config.feeds)} feeds configured, none polled yet")
        nxt = self.store.next_poll_time(now) if self.store is not None else None
        if nxt is None:
            parts.append("no active feeds")
        else:
            job = self.scheduler.get_job("dispatch") if self.scheduler is not None else None
            when = nxt
            if job is not None and job.next_run_time is not None:
                when = max(nxt, job.next_run_time.astimezone(UTC))
            parts.append(f"next poll in {max(0, math.ceil((when - now).total_seconds()))} s")
        return ", ".join(parts)

    def _start_watchdog(self) -> None:
        interval = watchdog_interval(self.env, os.getpid())
        if interval is None or not self.notifier.enabled:
            return
        log.debug("watchdog: pinging every %.3g s", interval)
        self._watchdog = asyncio.create_task(self._ping(interval), name="watchdog")

    async def _ping(self, interval: float) -> None:
        # From the event loop itself: if the loop blocks, the pings stop and systemd restarts.
        while True:
            self.notifier.send("WATCHDOG=1")
            await asyncio.sleep(interval)

    async def _stop_watchdog(self) -> None:
        if self._watchdog is not None:
            self._watchdog.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._watchdog
            self._watchdog = None


def run_service(
    config_path: Path,
    *,
    log_level: int | str = "info",
    options: ServiceOptions | None = None,
    env: Mapping[str, str] | None = None,
) -> int:
    """Configure logging and run the daemon until SIGTERM/SIGINT; returns the exit code."""
    configure_logging(log_level, env=env)
    service = Service(config_path, options, env=env)
    return asyncio.run(service.run())


__all__ = [
    "JournalFormatter",
    "Notifier",
    "Service",
    "ServiceOptions",
    "config_changes",
    "configure_logging",
    "journald_stream",
    "monotonic_usec",
    "notify_address",
    "protect_since",
    "run_service",
    "spread_first_polls",
    "syslog_priority",
    "watchdog_interval",
]
