"""Schedule rules as pure functions: no clock, no network, no randomness."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from aggregator import schedule
from aggregator.model import FeedFailure, FetchResult, ScheduleSettings

NOW = datetime(2024, 3, 1, 12, 0, tzinfo=UTC)
URL = "https://example.com/feed.xml"
SETTINGS = ScheduleSettings()  # interval 1h, min 5m, max 1d, backoff 1d, retry-after 7d
HOUR = 3600


def ok(**fields: Any) -> FetchResult:
    return FetchResult(feed_id=1, requested_url=URL, final_url=URL, fetched_at=NOW, **fields)


def failed(kind: str = "http", status: int | None = 500, **fields: Any) -> FetchResult:
    return ok(failure=FeedFailure(kind, "boom", status), status=status, **fields)


def delay(
    result: FetchResult,
    *,
    url: str = URL,
    settings: ScheduleSettings = SETTINGS,
    configured_interval: int | None = None,
    error_count: int = 0,
    ttl: int | None = None,
    recent_published: Sequence[datetime] = (),
) -> float:
    at = schedule.next_poll_at(
        now=NOW,
        url=url,
        settings=settings,
        configured_interval=configured_interval,
        result=result,
        error_count=error_count,
        ttl=ttl,
        recent_published=recent_published,
    )
    return (at - NOW).total_seconds()


def every(gap: timedelta, count: int, last: datetime = NOW) -> list[datetime]:
    return [last - gap * i for i in range(count)]


# ---------------------------------------------------------------- parse_duration


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("90s", 90),
        ("30m", 1800),
        ("2h", 7200),
        ("1d", 86400),
        ("1w", 604800),
        ("1h30m", 5400),
        (" 2H ", 7200),
        ("3600", 3600),
        (45, 45),
        ("0", 0),
    ],
)
def test_parse_duration_accepts_units_and_plain_seconds(text: str | int, seconds: int) -> None:
    assert schedule.parse_duration(text) == seconds


@pytest.mark.parametrize("bad", ["", "soon", "10 minutes", "1.5h", "-5", "h", "5x", -1, True])
def test_parse_duration_rejects_anything_else_with_a_clear_message(bad: Any) -> None:
    with pytest.raises(ValueError, match="invalid duration"):
        schedule.parse_duration(bad)


# ---------------------------------------------------------------- success


def test_success_uses_the_default_interval_plus_small_stable_jitter() -> None:
    seconds = delay(ok())
    assert HOUR <= seconds < HOUR * (1 + schedule.SUCCESS_JITTER)
    assert delay(ok()) == seconds  # same URL, same answer


def test_jitter_spreads_different_feeds() -> None:
    delays = {delay(ok(), url=f"https://example.com/{i}.xml") for i in range(20)}
    assert len(delays) > 15


def test_configured_interval_wins_over_rhythm_but_not_over_min_interval() -> None:
    busy = every(timedelta(minutes=10), 10)
    assert 2 * HOUR <= delay(ok(), configured_interval=2 * HOUR, recent_published=busy) < 2.3 * HOUR
    assert delay(ok(), configured_interval=10) >= SETTINGS.min_interval


def test_busy_feed_is_polled_more_often_within_bounds() -> None:
    every_hour = every(timedelta(hours=1), 12)
    assert 0.5 * HOUR <= delay(ok(), recent_published=every_hour) < 0.56 * HOUR
    every_minute = every(timedelta(minutes=1), 30)
    assert SETTINGS.min_interval <= delay(ok(), recent_published=every_minute) < 1.1 * 300


def test_slow_or_silent_feed_is_polled_less_often_up_to_max_interval() -> None:
    weekly = every(timedelta(days=7), 6)
    assert 0.9 * 86400 <= delay(ok(), recent_published=weekly) <= SETTINGS.max_interval
    went_quiet = every(timedelta(hours=1), 10, last=NOW - timedelta(days=1))
    assert delay(ok(), recent_published=went_quiet) >= 6 * HOUR


def test_too_little_history_keeps_the_default() -> None:
    assert HOUR <= delay(ok(), recent_published=[NOW, NOW - timedelta(minutes=1)]) < 1.1 * HOUR
    same_moment = [NOW - timedelta(hours=2)] * 20  # one batch is no rhythm
    assert HOUR <= delay(ok(), recent_published=same_moment) < 1.1 * HOUR


def test_future_and_naive_publication_dates_do_not_break_the_rhythm() -> None:
    naive = [(NOW - timedelta(hours=i)).replace(tzinfo=None) for i in range(10)]
    future = [NOW + timedelta(days=365)]
    assert 0.5 * HOUR <= delay(ok(), recent_published=naive + future) < 0.56 * HOUR


def test_publisher_max_age_lengthens_the_interval() -> None:
    assert 3 * HOUR <= delay(ok(max_age=3 * HOUR)) < 3.3 * HOUR
    assert HOUR <= delay(ok(max_age=60)) < 1.1 * HOUR  # a short hint never shortens it


def test_feed_ttl_lengthens_the_interval() -> None:
    assert 5 * HOUR <= delay(ok(), ttl=5 * HOUR) < 5.5 * HOUR


def test_publisher_hints_are_capped_at_max_interval() -> None:
    assert 0.9 * 86400 <= delay(ok(max_age=30 * 86400), ttl=60 * 86400) <= 86400


@given(st.text(min_size=1, max_size=30))
def test_a_success_never_schedules_past_max_interval_and_stays_spread(path: str) -> None:
    url = f"https://example.com/{path}"
    weekly = every(timedelta(days=7), 6)
    assert 0.9 * 86400 <= delay(ok(), url=url, recent_published=weekly) <= 86400
    assert delay(ok(max_age=7 * 86400), url=url) <= 86400
    assert delay(ok(), url=url, configured_interval=86400) <= 86400


def test_feeds_at_the_ceiling_are_still_spread_out() -> None:
    urls = [f"https://example.com/{i}.xml" for i in range(40)]
    delays = {delay(ok(), url=u, configured_interval=86400) for u in urls}
    assert len(delays) > 30 and max(delays) <= 86400


def test_not_modified_is_scheduled_like_a_success() -> None:
    assert delay(ok(not_modified=True, status=304)) == delay(ok())


# ---------------------------------------------------------------- failure


def test_failures_back_off_exponentially_with_jitter() -> None:
    delays = [delay(failed(), error_count=n) for n in range(1, 6)]
    for n, seconds in enumerate(delays, start=1):
        raw = HOUR * 2 ** (n - 1)
        assert raw <= seconds <= min(86400, raw * (1 + schedule.FAILURE_JITTER))
    assert delays == sorted(delays)


def test_backoff_is_capped_at_max_backoff() -> None:
    assert delay(failed(), error_count=10) == 86400
    assert delay(failed(), error_count=10_000) == 86400
    short = ScheduleSettings(max_backoff=4 * HOUR)
    assert delay(failed(), settings=short, error_count=7) == 4 * HOUR


def test_backoff_never_polls_sooner_than_a_rarely_polled_feed_would() -> None:
    weekly = 7 * 86400
    assert delay(failed(), configured_interval=weekly, error_count=3) == weekly


@pytest.mark.parametrize("kind", ["network", "timeout", "too_large", "not_a_feed", "blocked"])
def test_every_failure_kind_backs_off(kind: str) -> None:
    assert delay(failed(kind, None), error_count=3) >= 4 * HOUR


def test_retry_after_is_binding() -> None:
    result = failed(status=429, retry_after=NOW + timedelta(hours=30))
    assert delay(result, error_count=1) == 30 * HOUR


def test_retry_after_shorter_than_backoff_does_not_shorten_it() -> None:
    result = failed(status=503, retry_after=NOW + timedelta(seconds=10))
    assert delay(result, error_count=3) >= 4 * HOUR


def test_retry_after_is_capped_at_max_retry_after() -> None:
    result = failed(status=429, retry_after=NOW + timedelta(days=400))
    assert delay(result, error_count=1) == 7 * 86400


def test_410_retires_and_other_outcomes_do_not() -> None:
    assert schedule.retires(failed("gone", 410))
    assert not schedule.retires(failed("http", 404))
    assert not schedule.retires(ok())


# ---------------------------------------------------------------- properties

outcomes = st.one_of(
    st.builds(ok, max_age=st.none() | st.integers(0, 10**8)),
    st.builds(failed, kind=st.sampled_from(["http", "network", "timeout"])),
    st.builds(
        failed,
        status=st.just(429),
        retry_after=st.none()
        | st.integers(-(10**6), 10**9).map(lambda s: NOW + timedelta(seconds=s)),
    ),
)


@given(
    result=outcomes,
    error_count=st.integers(0, 200),
    ttl=st.none() | st.integers(0, 10**8),
    configured=st.none() | st.integers(1, 10**7),
    gaps=st.lists(st.integers(0, 10**7), max_size=30),
    url=st.text(max_size=40),
)
def test_next_poll_is_never_sooner_than_min_interval_nor_later_than_its_caps(
    result: FetchResult,
    error_count: int,
    ttl: int | None,
    configured: int | None,
    gaps: list[int],
    url: str,
) -> None:
    published = [NOW - timedelta(seconds=sum(gaps[:i])) for i in range(len(gaps))]
    failing = result.failure is not None
    seconds = delay(
        result,
        url=url,
        configured_interval=configured,
        error_count=max(error_count, 1) if failing else 0,
        ttl=ttl,
        recent_published=published,
    )
    assert seconds >= SETTINGS.min_interval
    ceiling = max(
        SETTINGS.max_interval * (1 + schedule.SUCCESS_JITTER),
        SETTINGS.max_backoff,
        SETTINGS.max_retry_after,
        (configured or 0) * (1 + schedule.SUCCESS_JITTER),
    )
    assert seconds <= ceiling
