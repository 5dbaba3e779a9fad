"""One poll cycle: the only module that knows every stage.

fetch (async, polite) → parse + normalise + fingerprint (worker processes) → cluster → store,
one short write transaction per feed outcome.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import sys
from collections.abc import Callable, Collection, Iterable, Iterator, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from typing import Any, TypedDict

from . import cluster as clustering
from . import fingerprint
from .config import Config
from .decide import FeedDecision, decide_feed
from .errors import AggregatorError
from .fetch import Fetcher
from .model import (
    Entry,
    FailureKind,
    FeedFailure,
    FetchOptions,
    FetchResult,
    Fingerprint,
    ProcessedFeed,
    outlet_host,
    utcnow,
)
from .pool import WorkerPool
from .process import process_body
from .store import DueFeed, Store, from_db_time, i64_to_u64

log = logging.getLogger("aggregator")

PARSE_TIMEOUT = 120.0  # seconds one feed body may take (a 100,000-item feed needs ~30 s)
WORKER_MEMORY = 1 << 30  # address-space cap per worker: a memory bomb fails that feed only
WORKER_RECYCLE = 256 << 20  # a worker that peaked above this (a giant feed) is replaced
RELEASE_WORKERS_AT = 20_000  # documents in the clustering window: workers stop for the merge


@dataclass
class FeedOutcome:
    url: str
    status: str  # "new", "not_modified", "failed", "unchanged"
    new_entries: int = 0
    updated_entries: int = 0
    failure: FeedFailure | None = None


@dataclass
class CycleSummary:
    due: int = 0
    fetched: int = 0
    not_modified: int = 0
    failed: int = 0
    new_entries: int = 0
    updated_entries: int = 0
    new_stories: int = 0
    grown_stories: int = 0
    failures: list[tuple[str, str, str]] = field(default_factory=list)

    @property
    def changed(self) -> bool:
        return bool(self.new_entries or self.updated_entries)

    def line(self) -> str:
        return (
            f"feeds: {self.fetched} fetched, {self.not_modified} not modified, "
            f"{self.failed} failed; entries: {self.new_entries} new, "
            f"{self.updated_entries} updated; stories: {self.new_stories} new, "
            f"{self.grown_stories} grown"
        )


class Poller:
    """Owns the long-lived fetcher and worker pool; runs poll cycles against one store."""

    def __init__(self, config: Config, store: Store, *, workers: int | None = None) -> None:
        self.config = config
        self.store = store
        self.workers = workers or max(1, min(4, os.cpu_count() or 1))
        self.fetcher: Fetcher | None = None
        self.pool: WorkerPool | None = None
        self._options: dict[str, FetchOptions] = {}

    async def __aenter__(self) -> Poller:
        self._stack = contextlib.AsyncExitStack()
        self.fetcher = await self._stack.enter_async_context(Fetcher(self.config.fetch))
        self.pool = self._stack.enter_context(
            WorkerPool(self.workers, max_memory=WORKER_MEMORY, recycle_rss=WORKER_RECYCLE)
        )
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self._stack.aclose()

    async def run_cycle(
        self,
        *,
        poll_all: bool = False,
        mode: str = "scheduled",
        now: datetime | None = None,
        progress: Callable[[FeedOutcome], None] | None = None,
        only: Collection[int] | None = None,
    ) -> CycleSummary:
        """Poll every due feed once and record the outcomes (see Store.due_feeds for `mode`);
        `only`: just the feeds with these ids (among those due)."""
        assert self.fetcher is not None and self.pool is not None, "use `async with Poller(...)`"
        now = now or utcnow()
        # Each feed's own headers, user agent and basic auth, by its configured URL, from the
        # config of this cycle (a reload replaces it). Never stored: secrets come from the
        # environment or files when the config is read.
        self._options = {f.url: f.fetch for f in self.config.feeds if f.fetch is not None}
        due = self.store.due_feeds(now, all_feeds=poll_all, mode=mode)
        if only is not None:
            due = [feed for feed in due if feed.state.id in only]
        summary = CycleSummary(due=len(due))
        cycle = _ClusterCycle(self.store, self.config, now)
        for _ in backfill_steps(self.store):
            await asyncio.sleep(0)
        cycle.recover()

        queue = iter(due)

        async def runner() -> None:
            # `concurrency` runners share one iterator: 10,000 due feeds do not become 10,000
            # waiting tasks before the first request.
            for feed in queue:
                outcome = await self._poll_feed(feed, now, cycle)
                _count(summary, outcome)
                if progress is not None:
                    progress(outcome)

        try:
            async with asyncio.TaskGroup() as group:
                for _ in range(min(len(due), max(1, self.config.fetch.concurrency))):
                    group.create_task(runner())
        except BaseExceptionGroup as eg:
            # A store error ends the cycle (and the process): the other feeds were cancelled.
            raise _first_error(eg) from None
        if cycle.window_size() >= RELEASE_WORKERS_AT:
            # The workers idle through the merge pass while it holds a big window: let their
            # memory go (the next cycle starts them again).
            self.pool.release_idle()
        await cycle.finish()
        summary.new_stories = len(cycle.created)
        summary.grown_stories = len(cycle.grown - cycle.created)
        return summary

    async def _poll_feed(self, feed: DueFeed, now: datetime, cycle: _ClusterCycle) -> FeedOutcome:
        """Fetch, process in a worker, `decide_feed`, then record it all in one transaction."""
        assert self.fetcher is not None and self.pool is not None
        url = feed.state.url
        # By the URL the config names it by, else by its current one: a feed that moved by a
        # 301 and whose config was then changed to the new URL keeps its old config_url.
        options = self._options.get(feed.config_url) or self._options.get(url)
        result = await self.fetcher.fetch(
            feed.state if options is None else replace(feed.state, options=options), now
        )
        if result.failure is not None or result.not_modified or result.body is None:
            return self._record(feed, result, now)
        try:
            processed: ProcessedFeed = await self.pool.run(
                process_body,
                result.body,
                dict(result.headers),
                result.final_url,
                now,
                self.config.fetch.max_body_bytes,
                timeout=PARSE_TIMEOUT,
            )
        except TimeoutError:
            failure = FeedFailure(
                FailureKind.TIMEOUT, f"parsing took longer than {PARSE_TIMEOUT:.0f} s"
            )
            return self._record(feed, result, now, failure=failure)
        except Exception as exc:  # a worker crash must not end the cycle
            failure = FeedFailure(FailureKind.PARSE, f"worker failed: {type(exc).__name__}: {exc}")
            return self._record(feed, result, now, failure=failure)
        if processed.failure is not None:
            return self._record(feed, result, now, failure=processed.failure)
        parsed = processed.feed
        with self.store.transaction():
            recent = self.store.recent_published(feed.state.id)
            decision = self._decide(
                feed,
                result,
                now,
                recent + [e.published for e, _ in processed.entries],
                parsed_ttl=parsed.ttl,
            )
            self.store.record_fetch_success(
                feed.state.id,
                now=now,
                status=result.status,
                url=decision.moved_to,
                etag=result.etag,
                last_modified=result.last_modified,
                body_hash=result.body_hash,
                next_poll_at=decision.next_poll_at,
                feed_title=parsed.title,
                site_url=parsed.link,
                language=parsed.language,
                ttl=parsed.ttl,
                parse_problem=parsed.problem,
            )
            self._set_holds(feed, decision)
            new, updated = cycle.ingest(feed.state.id, result.final_url, processed.entries)
            cycle.refresh()
        log.info("%s: %d new, %d updated entries", url, new, updated)
        return FeedOutcome(url, "new" if new or updated else "unchanged", new, updated)

    def _decide(
        self,
        feed: DueFeed,
        result: FetchResult,
        now: datetime,
        recent: list[datetime],
        *,
        failure: FeedFailure | None = None,
        parsed_ttl: int | None = None,
    ) -> FeedDecision:
        return decide_feed(
            state=feed.state,
            result=result,
            now=now,
            settings=self.config.schedule,
            configured_interval=feed.interval,
            stored_ttl=feed.ttl,
            recent_published=recent,
            failure=failure,
            parsed_ttl=parsed_ttl,
        )

    def _set_holds(self, feed: DueFeed, decision: FeedDecision) -> None:
        self.store.set_holds(
            feed.state.id,
            hold_until=decision.hold_until,
            retry_after_until=decision.retry_after_until,
        )

    def _record(
        self,
        feed: DueFeed,
        result: FetchResult,
        now: datetime,
        *,
        failure: FeedFailure | None = None,
    ) -> FeedOutcome:
        """Record a poll that stores no entries: a failure, or a feed not modified."""
        with self.store.transaction():
            recent = self.store.recent_published(feed.state.id)
            decision = self._decide(feed, result, now, recent, failure=failure)
            if decision.failure is not None:
                self.store.record_fetch_failure(
                    feed.state.id,
                    now=now,
                    kind=decision.failure.kind,
                    message=decision.failure.message,
                    status=decision.failure.status or result.status,
                    next_poll_at=decision.next_poll_at,
                    retire=decision.retire,
                )
            else:
                self.store.record_not_modified(
                    feed.state.id,
                    now=now,
                    status=result.status,
                    next_poll_at=decision.next_poll_at,
                    etag=result.etag,
                    last_modified=result.last_modified,
                )
            self._set_holds(feed, decision)
            if decision.failure is None and decision.moved_to:
                self.store.move_feed(feed.state.id, decision.moved_to)
        if decision.failure is not None:
            log.warning(
                "%s: %s: %s", feed.state.url, decision.failure.kind, decision.failure.message
            )
            return FeedOutcome(feed.state.url, "failed", failure=decision.failure)
        log.info("%s: not modified", feed.state.url)
        return FeedOutcome(feed.state.url, "not_modified")


def _first_error(group: BaseExceptionGroup[BaseException]) -> BaseException:
    errors = list(_leaves(group))
    for exc in errors:
        if isinstance(exc, AggregatorError):
            return exc
    return errors[0]


def _leaves(exc: BaseException) -> Iterator[BaseException]:
    if isinstance(exc, BaseExceptionGroup):
        for inner in exc.exceptions:
            yield from _leaves(inner)
    else:
        yield exc


def _count(summary: CycleSummary, outcome: FeedOutcome) -> None:
    if outcome.status == "failed":
        summary.failed += 1
        if outcome.failure:
            summary.failures.append((outcome.url, outcome.failure.kind, outcome.failure.message))
    elif outcome.status == "not_modified":
        summary.not_modified += 1
    else:
        summary.fetched += 1
    summary.new_entries += outcome.new_entries
    summary.updated_entries += outcome.updated_entries


class _ClusterCycle:
    """The clustering side of one cycle: a lazily loaded window and the stories it touched."""

    def __init__(self, store: Store, config: Config, now: datetime) -> None:
        self.store = store
        self.now = now
        opts = config.cluster
        self.representative = opts.representative
        self.window = timedelta(seconds=opts.window)
        self.settings = clustering.ClusterSettings(
            window_hours=opts.window / 3600,
            simhash_k=opts.simhash_k,
            representative=opts.representative,
            story_threshold=opts.story_threshold,
        )
        self.clusterer: clustering.StoryClusterer | None = None
        self.loaded: tuple[datetime, datetime] | None = None
        self.touched: set[int] = set()
        self.pending: list[datetime] = []  # publication times placed since the last refresh
        self.bridges: list[tuple[int, int, int]] = []  # (absorbed, into, entry) to record
        self.grown: set[int] = set()
        self.created: set[int] = set()

    def _ensure_window(self, published: datetime) -> clustering.StoryClusterer:
        if self.clusterer is None:
            self.clusterer = clustering.StoryClusterer(self.settings, self.store.next_story_id())
        lo, hi = _shift(published, -self.window), _shift(published, self.window)
        if self.loaded is None:
            self.clusterer.load(_doc(r) for r in self.store.window_entries(lo, hi))
            self.loaded = (lo, hi)
        elif lo < self.loaded[0] or hi > self.loaded[1]:
            # Load only what the window grew by: reloading all of it for each entry is quadratic.
            rows = []
            if lo < self.loaded[0]:
                rows += self.store.window_entries(lo, self.loaded[0], include_until=False)
            if hi > self.loaded[1]:
                rows += self.store.window_entries(self.loaded[1], hi, include_since=False)
            self.clusterer.load(_doc(r) for r in rows)
            self.loaded = (min(lo, self.loaded[0]), max(hi, self.loaded[1]))
        return self.clusterer

    def ingest(
        self, feed_id: int, feed_url: str, pairs: Sequence[tuple[Entry, Fingerprint]]
    ) -> tuple[int, int]:
        """Store one feed's entries inside the caller's transaction: changed ones are updated in
        place, new ones are placed in stories first and then inserted with their story and
        evidence in one statement (no second write of each row). Returns (new, updated)."""
        existing = self.store.existing_entries(feed_id, [entry.guid for entry, _ in pairs])
        fresh: list[tuple[Entry, Fingerprint]] = []
        updated = 0
        for entry, fp in pairs:
            row = existing.get(entry.guid)
            if row is None:
                fresh.append((entry, fp))
                continue
            res = self.store.update_entry(row, entry, fp, self.now)
            if res.status == "updated":
                updated += 1
                if res.story_id is not None:
                    self.touch(res.story_id)
                if clustering.retitled(row["title"] or "", entry.title):
                    # A live page or ticker that moved on to another happening leaves the
                    # story it was placed in and is placed again, as what it now reports.
                    self._ensure_window(entry.published).forget(res.entry_id)
                    self.place(res.entry_id, feed_id, feed_url, entry, fp)
        if fresh:
            first = self.store.next_entry_id()
            for offset, (entry, fp) in enumerate(fresh):
                self.place(first + offset, feed_id, feed_url, entry, fp, stored=False)
            clusterer = self.clusterer
            assert clusterer is not None  # place() made it
            self.store.insert_entries(
                feed_id,
                [
                    (first + offset, entry, fp, clusterer.assignment(first + offset))
                    for offset, (entry, fp) in enumerate(fresh)
                ],
                self.now,
            )
            self.store.count_headlines(
                (entry.published, _headline(entry.title, fp.terms)) for entry, fp in fresh
            )
            for bridge in self.bridges:
                self._merge(bridge)
            self.bridges.clear()
        return len(fresh), updated

    def _merge(self, bridge: tuple[int, int, int]) -> None:
        absorbed, into, entry_id = bridge
        self.store.merge_stories(
            absorbed, into, entry_id=entry_id, reason=f"bridged by entry {entry_id}", now=self.now
        )

    def place(
        self,
        entry_id: int,
        feed_id: int,
        feed_url: str,
        entry: Entry,
        fp: Fingerprint,
        *,
        stored: bool = True,
    ) -> None:
        """Put one entry in a story. A `stored` entry (crash recovery) gets its story written
        now; a new one is inserted by `ingest` afterwards, with its final story."""
        clusterer = self._ensure_window(entry.published)
        doc = clustering.ClusterDoc(
            entry_id=entry_id,
            feed_id=feed_id,
            host=_shared(outlet_host(entry.link or feed_url)),
            published=entry.published,
            link=entry.link,
            content_hash=fp.content_hash,
            simhash=fp.simhash,
            title=entry.title,
            terms=_interned(fp.terms),
            language=_shared(entry.language),
            story_id=None,
            **_layout(entry.title),
        )
        since = _shift(entry.published, -self.window)
        rows = self.store.exact_candidates(entry.link, fp.content_hash, since, exclude=entry_id)
        if fp.simhash is not None:
            rows += self.store.simhash_candidates(fp.simhash, since, exclude=entry_id)
        candidates = [_doc(r) for r in rows]
        a = clusterer.add(doc, candidates)
        self.pending.append(entry.published)
        if a.rule == "new":
            self.created.add(a.story_id)
            if not stored:
                self.store.create_story(a.story_id, entry.title, self.now)
        for absorbed in a.absorbed:
            bridge = (absorbed, a.story_id, entry_id)
            if stored:
                self._merge(bridge)
            else:  # the merge record names the entry: written once `ingest` has stored it
                self.bridges.append(bridge)
            self.created.discard(absorbed)
        if stored:
            self.store.assign_story(
                entry_id,
                a.story_id,
                rule=a.rule,
                distance=a.distance,
                score=a.score,
                matched_entry_id=a.matched_entry_id,
                now=self.now,
                new_story_title=entry.title if a.rule == "new" else None,
            )
        self.touch(a.story_id)
        self.grown.add(a.story_id)

    def touch(self, story_id: int) -> None:
        self.touched.add(story_id)

    def refresh(self) -> None:
        """End of a feed's transaction: story rows, and the merge pass still owed (crash-safe)."""
        if self.pending:
            self.store.mark_merge_pending(min(self.pending))
            self.store.mark_merge_pending(max(self.pending))
            self.pending.clear()
        if self.touched:
            self.store.refresh_stories(self.touched, self.now, self.representative)
            self.touched.clear()

    def recover(self) -> None:
        """Finish what a crash interrupted: a pending merge pass, entries without a story."""
        pending = self.store.merge_pending()
        if pending is not None:
            self._ensure_window(pending[0])
            clusterer = self._ensure_window(pending[1])
            # The interrupted cycle's stories must be looked at again by the merge pass.
            clusterer.touch_range(_shift(pending[0], -self.window), _shift(pending[1], self.window))
        rows = self.store.unclustered_entries()
        if not rows:
            return
        with self.store.transaction():
            for r in rows:
                published = from_db_time(r["published"]) or self.now
                entry = Entry(
                    guid=r["guid"],
                    link=r["link"],
                    title=r["title"],
                    summary="",
                    content="",
                    text=r["text"],
                    published=published,
                    updated=None,
                    author=None,
                    language=r["language"],
                    content_hash=r["content_hash"],
                )
                fp = Fingerprint(
                    r["content_hash"], i64_to_u64(r["simhash"]), tuple(r["terms"].split())
                )
                self.place(r["id"], r["feed_id"], r["feed_url"], entry, fp)
            self.refresh()

    def window_size(self) -> int:
        """Documents in the clustering window held in memory."""
        return self.clusterer.documents if self.clusterer is not None else 0

    async def finish(self) -> None:
        """The merge pass, yielding to the event loop between its steps, then its writes."""
        if self.clusterer is None:
            return
        _use_headline_counts(self.store, self.clusterer)
        self.clusterer.use_story_spans(self.store.story_spans(self.clusterer.story_ids()))
        steps = self.clusterer.merge_steps()
        while True:
            try:
                next(steps)
            except StopIteration as done:
                merges = done.value
                break
            await asyncio.sleep(0)
        with self.store.transaction():
            self.store.clear_merge_pending()
            for m in merges:
                self.store.merge_stories(
                    m.from_story_id,
                    m.into_story_id,
                    entry_id=m.entry_id,
                    reason=m.reason,
                    now=self.now,
                )
                self.created.discard(m.from_story_id)
                self.grown.discard(m.from_story_id)
                self.touch(m.into_story_id)
                self.grown.add(m.into_story_id)
            # Entries that founded a story the pass merged away now have story-match evidence.
            for entry_id, a in self.clusterer.evidence_updates().items():
                self.store.assign_story(
                    entry_id,
                    a.story_id,
                    rule=a.rule,
                    distance=a.distance,
                    score=a.score,
                    matched_entry_id=a.matched_entry_id,
                    now=self.now,
                )
            self.refresh()


def _headline(title: str, terms: Sequence[str]) -> tuple[str, ...]:
    """The headline words of an entry that the day counts keep (see `Store.count_headlines`)."""
    return fingerprint.headline_words(terms, fingerprint.title_layout(title)[0])


def _use_headline_counts(store: Store, clusterer: clustering.StoryClusterer) -> None:
    """Give the clusterer the headline counts its event rule asks for."""
    request = clusterer.headline_request()
    if request is not None:
        clusterer.use_headline_counts(store.headline_counts(*request))


def backfill_steps(store: Store, *, batch: int = 5000) -> Iterator[int]:
    """Count the headlines of entries stored before migration 7 (see `Store.headline_backfill`),
    one transaction per batch with its progress, so a crash resumes where it stopped and never
    counts an entry twice. Yields the running count after each batch: the daemon goes back to
    its event loop between batches, so a million entries never stall its watchdog."""
    done = 0
    while (progress := store.headline_backfill()) is not None:
        after, until = progress
        with store.transaction():
            rows = store.backfill_rows(after, until, batch)
            store.count_headlines(
                (
                    from_db_time(r["published"]) or utcnow(),
                    _headline(r["title"] or "", (r["terms"] or "").split()),
                )
                for r in rows
            )
            store.note_backfill(rows[-1]["id"] if rows else until, until)
        done += len(rows)
        yield done


def _shift(when: datetime, delta: timedelta) -> datetime:
    """`when + delta`, saturating at the ends of the calendar instead of overflowing."""
    try:
        return when + delta
    except OverflowError:
        return (
            datetime.min.replace(tzinfo=UTC)
            if delta < timedelta(0)
            else datetime.max.replace(tzinfo=UTC)
        )


def _interned(terms: Iterable[str]) -> tuple[str, ...]:
    """A window holds tens of thousands of documents drawing on one vocabulary: one string
    object per distinct term, not one per occurrence."""
    return tuple(map(sys.intern, terms))


def _shared(value: str | None) -> str | None:
    """Hosts, languages and rules repeat across a window's documents: one object each."""
    return None if value is None else sys.intern(value)


def _doc(row: Any) -> clustering.ClusterDoc:
    return clustering.ClusterDoc(
        entry_id=row["id"],
        feed_id=row["feed_id"],
        host=_shared(outlet_host(row["link"] or row["feed_url"])),
        published=from_db_time(row["published"]) or utcnow(),
        link=row["link"],
        content_hash=row["content_hash"],
        simhash=i64_to_u64(row["simhash"]),
        title=row["title"],
        terms=_interned((row["terms"] or "").split()),
        language=_shared(row["language"]),
        story_id=row["story_id"],
        first_seen=from_db_time(row["first_seen"]),
        text_length=(row["text_length"] or 0) if "text_length" in row.keys() else 0,
        match_rule=_shared(row["match_rule"]),
        **_layout(row["title"] or ""),
    )


class _Layout(TypedDict):
    title_terms: int
    rubric_terms: int


def _layout(title: str) -> _Layout:
    """Which of an entry's story terms come from its headline and from a leading rubric."""
    title_terms, rubric_terms = fingerprint.title_layout(title)
    return {"title_terms": title_terms, "rubric_terms": rubric_terms}


def explain_pair(store: Store, config: Config, a_id: int, b_id: int) -> Any:
    """Why two stored entries are or are not in one story (IDF from the window around them)."""
    rows = [store.entry(a_id), store.entry(b_id)]
    docs = [_doc(r) for r in rows if r is not None]
    if len(docs) != 2:
        return None
    window = timedelta(seconds=config.cluster.window)
    opts = config.cluster
    clusterer = clustering.StoryClusterer(
        clustering.ClusterSettings(
            window_hours=opts.window / 3600,
            simhash_k=opts.simhash_k,
            representative=opts.representative,
            story_threshold=opts.story_threshold,
        ),
        store.next_story_id(),
    )
    lo = min(d.published for d in docs)
    hi = max(d.published for d in docs)
    clusterer.load(_doc(r) for r in store.window_entries(_shift(lo, -window), _shift(hi, window)))
    _use_headline_counts(store, clusterer)
    return clusterer.explain_pair(docs[0], docs[1])
