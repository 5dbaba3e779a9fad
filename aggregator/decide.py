"""What one poll means for its feed, decided in one place, purely (no I/O, `now` given).

The pipeline fetches, processes in a worker and then asks `decide_feed` what to record: the
outcome, when to poll next, the holds even a manual poll respects (a `Retry-After`, error
backoff, the publisher's caching hints), retirement after `410 Gone`, and a permanent move.
It applies the answer in one transaction; entries and stories are the story tier's business.

    FetchResult (+ a processing failure, + the feed's parsed ttl) --decide_feed--> FeedDecision
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from enum import StrEnum

from .model import FailureKind, FeedFailure, FeedState, FetchResult, ScheduleSettings
from .schedule import next_poll_at, retires

RECENT_PUBLISHED = 20  # publication times the adaptive interval looks at


class Outcome(StrEnum):
    FAILED = "failed"  # fetched or processed with an error: recorded on the feed
    NOT_MODIFIED = "not_modified"  # 304, or a body whose hash has not changed
    FETCHED = "fetched"  # a feed was read: its entries are to be stored


@dataclass(frozen=True, slots=True)
class FeedDecision:
    """Everything to record about the feed after one poll."""

    outcome: Outcome
    next_poll_at: datetime
    hold_until: datetime | None  # no poll before this, `poll` by hand included (not --all)
    retry_after_until: datetime | None  # no poll before this at all: the server said so
    error_count: int = 0  # the feed's consecutive failures after this poll
    failure: FeedFailure | None = None
    retire: bool = False  # 410 Gone: never polled again until reset or re-configured
    moved_to: str | None = None  # a permanent redirect's target: the feed's new URL


def decide_feed(
    *,
    state: FeedState,
    result: FetchResult,
    now: datetime,
    settings: ScheduleSettings,
    configured_interval: int | None,
    stored_ttl: int | None,
    recent_published: Sequence[datetime],
    failure: FeedFailure | None = None,
    parsed_ttl: int | None = None,
) -> FeedDecision:
    """Decide one poll of the feed `state`: `result` is the fetch; `failure`, when given, a
    failure after it (a parse error, a worker timeout) that overrides a successful fetch;
    `parsed_ttl` the feed document's own ttl when it was read, `stored_ttl` the one stored
    from earlier polls; `recent_published` the publication times of its latest entries (new
    ones included)."""
    failure = failure or result.failure
    recent = sorted(recent_published)[-RECENT_PUBLISHED:]
    retry = None
    if result.retry_after is not None:
        retry = min(result.retry_after, now + timedelta(seconds=settings.max_retry_after))
    if failure is not None:
        errors = state.error_count + 1
        nxt = next_poll_at(
            now=now,
            url=state.url,
            settings=settings,
            configured_interval=configured_interval,
            result=replace(result, failure=failure),
            error_count=errors,
            ttl=stored_ttl,
            recent_published=recent,
        )
        retire = retires(result) or failure.kind == FailureKind.GONE
        return FeedDecision(
            Outcome.FAILED,
            nxt,
            hold_until=nxt,
            retry_after_until=retry,
            error_count=errors,
            failure=failure,
            retire=retire,
        )
    read = not result.not_modified and result.body is not None
    ttl = parsed_ttl if read else stored_ttl
    nxt = next_poll_at(
        now=now,
        url=state.url,
        settings=settings,
        configured_interval=configured_interval,
        result=result,
        error_count=0,
        ttl=ttl,
        recent_published=recent,
    )
    # The publisher's caching hints (Cache-Control max-age, Expires, the feed's ttl) hold even
    # a poll by hand, up to `max_interval`.
    hint = min(max(result.max_age or 0, ttl or 0), settings.max_interval)
    return FeedDecision(
        Outcome.FETCHED if read else Outcome.NOT_MODIFIED,
        nxt,
        hold_until=now + timedelta(seconds=hint) if hint else None,
        retry_after_until=retry,
        moved_to=result.permanent_url,
    )
