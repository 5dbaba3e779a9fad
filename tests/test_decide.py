"""`decide_feed`, table-driven: recorded fetch outcomes in, what the feed records out.

Each row is one poll a feed could see: the FetchResult the fetcher returned (and, for some, a
failure after it), and what must follow: the outcome, the error count, the bounds of the next
poll, the holds, retirement and a permanent move.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

import pytest

from aggregator.decide import FeedDecision, Outcome, decide_feed
from aggregator.model import FailureKind, FeedFailure, FeedState, FetchResult, ScheduleSettings

NOW = datetime(2024, 10, 28, 12, 0, tzinfo=UTC)
URL = "https://news.example/feed.xml"
SETTINGS = ScheduleSettings()  # interval 1 h, max_interval 1 d, max_retry_after 7 d
HOUR = timedelta(hours=1)


def fetched(**fields: object) -> FetchResult:
    values: dict[str, object] = {
        "feed_id": 1,
        "requested_url": URL,
        "final_url": URL,
        "fetched_at": NOW,
        "status": 200,
        "body": b"<rss/>",
    }
    values.update(fields)
    return FetchResult(**values)  # type: ignore[arg-type]


def failed(kind: FailureKind, status: int | None = None, **fields: object) -> FetchResult:
    return fetched(
        body=None, status=status, failure=FeedFailure(kind, "recorded", status), **fields
    )


@dataclass(frozen=True)
class Row:
    name: str
    result: FetchResult
    outcome: Outcome
    errors_before: int = 0
    errors_after: int = 0
    next_within: tuple[timedelta, timedelta] = (HOUR, 1.25 * HOUR)  # bounds after NOW
    hold: timedelta | None = None  # hold_until - NOW; None: no hold
    retry: timedelta | None = None  # retry_after_until - NOW
    retire: bool = False
    moved_to: str | None = None
    failure: FeedFailure | None = None  # a failure after the fetch (parse, worker)
    extra: dict[str, object] = field(default_factory=dict)


ROWS = [
    Row("200 with a feed", fetched(), Outcome.FETCHED),
    Row(
        "304 not modified", fetched(status=304, body=None, not_modified=True), Outcome.NOT_MODIFIED
    ),
    Row("unchanged body (same hash)", fetched(body=None, not_modified=True), Outcome.NOT_MODIFIED),
    Row(
        "Cache-Control max-age of 3 h lengthens the interval and holds a manual poll",
        fetched(max_age=3 * 3600),
        Outcome.FETCHED,
        next_within=(3 * HOUR, 3.75 * HOUR),
        hold=3 * HOUR,
    ),
    Row(
        "a max-age of a year is capped at max_interval",
        fetched(max_age=365 * 86400),
        Outcome.FETCHED,
        next_within=(0.8 * 24 * HOUR, 24 * HOUR),
        hold=24 * HOUR,
    ),
    Row(
        "the feed's own ttl of 2 h",
        fetched(),
        Outcome.FETCHED,
        next_within=(2 * HOUR, 2.5 * HOUR),
        hold=2 * HOUR,
        extra={"parsed_ttl": 7200},
    ),
    Row(
        "301 on every hop moves the feed",
        fetched(permanent_url="https://news.example/new.xml"),
        Outcome.FETCHED,
        moved_to="https://news.example/new.xml",
    ),
    Row(
        "304 after a 308 still moves it",
        fetched(
            status=304, body=None, not_modified=True, permanent_url="https://news.example/new.xml"
        ),
        Outcome.NOT_MODIFIED,
        moved_to="https://news.example/new.xml",
    ),
    Row(
        "first 500: backoff and a hold until the next poll",
        failed(FailureKind.HTTP, 500),
        Outcome.FAILED,
        errors_after=1,
        next_within=(0.5 * HOUR, 3 * HOUR),
        hold=None,
    ),
    Row(
        "fourth network error: a longer backoff",
        failed(FailureKind.NETWORK),
        Outcome.FAILED,
        errors_before=3,
        errors_after=4,
        next_within=(4 * HOUR, 24 * HOUR),
    ),
    Row(
        "410 Gone retires the feed",
        failed(FailureKind.GONE, 410),
        Outcome.FAILED,
        errors_after=1,
        next_within=(0.5 * HOUR, 3 * HOUR),
        retire=True,
    ),
    Row(
        "429 with Retry-After in 2 h binds",
        failed(FailureKind.HTTP, 429, retry_after=NOW + 2 * HOUR),
        Outcome.FAILED,
        errors_after=1,
        next_within=(2 * HOUR, 3 * HOUR),
        retry=2 * HOUR,
    ),
    Row(
        "Retry-After of a year is capped at 7 days",
        failed(FailureKind.HTTP, 503, retry_after=NOW + timedelta(days=365)),
        Outcome.FAILED,
        errors_after=1,
        next_within=(7 * 24 * HOUR, 7 * 24 * HOUR),
        retry=7 * 24 * HOUR,
    ),
    Row(
        "a 200 whose body does not parse fails the feed",
        fetched(),
        Outcome.FAILED,
        errors_before=2,
        errors_after=3,
        next_within=(1.5 * HOUR, 12 * HOUR),
        failure=FeedFailure(FailureKind.PARSE, "not a feed"),
    ),
    Row(
        "a parse failure after a 301 does not move the feed",
        fetched(permanent_url="https://news.example/new.xml"),
        Outcome.FAILED,
        errors_after=1,
        next_within=(0.5 * HOUR, 3 * HOUR),
        failure=FeedFailure(FailureKind.NOT_A_FEED, "html"),
    ),
]


def decide(row: Row, recent: list[datetime] | None = None) -> FeedDecision:
    return decide_feed(
        state=FeedState(id=1, url=URL, error_count=row.errors_before),
        result=row.result,
        now=NOW,
        settings=SETTINGS,
        configured_interval=None,
        stored_ttl=None,
        recent_published=recent or [],
        failure=row.failure,
        **row.extra,  # type: ignore[arg-type]
    )


@pytest.mark.parametrize("row", ROWS, ids=[r.name for r in ROWS])
def test_what_a_poll_means_for_its_feed(row: Row) -> None:
    d = decide(row)
    assert d.outcome == row.outcome
    assert d.error_count == row.errors_after
    low, high = row.next_within
    assert NOW + low <= d.next_poll_at <= NOW + high, d.next_poll_at - NOW
    if row.outcome == Outcome.FAILED:
        # A failed feed is held until its next poll: a poll by hand does not hammer it.
        assert d.hold_until == d.next_poll_at
        assert d.failure == (row.failure or row.result.failure)
        assert d.moved_to is None
    else:
        assert d.hold_until == (NOW + row.hold if row.hold else None)
        assert d.failure is None
        assert d.moved_to == row.moved_to
    assert d.retry_after_until == (NOW + row.retry if row.retry else None)
    assert d.retire is row.retire


def test_the_same_poll_decides_the_same_way() -> None:
    # Pure: no clock, no randomness (the jitter derives from the URL).
    for row in ROWS:
        assert decide(row) == decide(row)


def test_a_feed_that_publishes_every_ten_minutes_is_polled_sooner_than_its_interval() -> None:
    recent = [NOW - timedelta(minutes=10 * n) for n in range(1, 21)]
    d = decide(Row("busy feed", fetched(), Outcome.FETCHED), recent)
    assert d.next_poll_at < NOW + HOUR
    assert d.next_poll_at >= NOW + timedelta(seconds=SETTINGS.min_interval)
