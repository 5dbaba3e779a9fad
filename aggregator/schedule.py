"""When to poll a feed next. Pure: `now`, settings and the last outcome are parameters; jitter
comes from a hash of the feed URL, never from a random source, so a decision can be replayed.

The rules, in order of strength:
1. A Retry-After (429/503) is binding: nothing earlier, capped at `max_retry_after`.
2. After a failure, back off exponentially from the feed's normal interval, capped at
   `max_backoff` (or the normal interval, when that is longer).
3. After a success, poll at the feed's interval: its configured one, or else one adapted to its
   own publishing rhythm; never sooner than the publisher asks (Cache-Control/Expires, RSS
   `<ttl>`, `sy:updatePeriod`) up to `max_interval`, and never sooner than `min_interval`.
"""

from __future__ import annotations

import hashlib
import re
import statistics
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta

from .model import FailureKind, FetchResult, ScheduleSettings

_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}
_DURATION = re.compile(r"(?:\s*\d+\s*[smhdw])+\s*", re.ASCII)
_PART = re.compile(r"(\d+)\s*([smhdw])")

SUCCESS_JITTER = 0.10  # up to +10% of the interval, so feeds added together drift apart
FAILURE_JITTER = 0.25  # up to +25% of the backoff, so a host's feeds do not retry in lockstep
_MIN_GAPS = 2  # publishing gaps needed before the rhythm is trusted over the default


# The longest duration anything accepts: 1,000 years (365,000 days; "--since 100000d" is a
# common way to say "everything"). Longer ones ("99999999d") reach past the dates Python can
# represent.
MAX_DURATION = 365_000 * 86400


def parse_duration(value: str | int) -> int:
    """Seconds in a duration written as "90s", "30m", "2h", "1d", "1w", "1h30m", or a plain
    integer of seconds, at most `MAX_DURATION`. Raises ValueError naming the bad value
    otherwise."""
    if isinstance(value, bool):
        raise ValueError(f"invalid duration {value!r}: expected seconds or text such as '30m'")
    if isinstance(value, int):
        if value < 0:
            raise ValueError(f"invalid duration {value}: it cannot be negative")
        return _bounded(value, value)
    if not isinstance(value, str):
        raise ValueError(f"invalid duration {value!r}: expected seconds or text such as '30m'")
    text = value.strip().lower()
    if text.isascii() and text.isdigit():
        return _bounded(int(text) if len(text) <= 20 else MAX_DURATION + 1, value)
    if text and len(text) <= 200 and _DURATION.fullmatch(text):
        total = 0
        for amount, unit in _PART.findall(text):
            total += (int(amount) if len(amount) <= 20 else MAX_DURATION + 1) * _UNITS[unit]
        return _bounded(total, value)
    raise ValueError(
        f"invalid duration {_shown(value)}: use whole seconds (3600) or numbers with units "
        "s, m, h, d, w (90s, 30m, 2h, 1d, 1h30m)"
    )


def _shown(value: str | int) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:36] + ("...'" if isinstance(value, str) else "...")


def _bounded(seconds: int, value: str | int) -> int:
    if seconds > MAX_DURATION:
        raise ValueError(f"invalid duration {_shown(value)}: at most 365000 days (1000 years)")
    return seconds


def retires(result: FetchResult) -> bool:
    """True when the outcome retires the feed (410 Gone): it is not polled again until its
    config entry changes or it is reset."""
    return result.failure is not None and result.failure.kind == FailureKind.GONE


def jitter_fraction(url: str, salt: str = "") -> float:
    """A stable number in [0, 1) derived from the URL (and a salt), used instead of randomness."""
    digest = hashlib.sha256(f"{salt}\0{url}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


def _utc(moment: datetime) -> datetime:
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment


def publishing_rhythm(recent_published: Sequence[datetime], now: datetime) -> int | None:
    """Seconds between polls that suit the feed's own publishing: half the median gap between
    its recent entries (so a new entry waits half a gap on average), lengthened when the feed
    has gone quiet (a quarter of the silence). None when there is too little history."""
    now = _utc(now)
    times = sorted({_utc(t) for t in recent_published if _utc(t) <= now})
    gaps = [
        (later - earlier).total_seconds() for earlier, later in zip(times, times[1:], strict=False)
    ]
    if len(gaps) < _MIN_GAPS:
        return None
    median_gap = statistics.median(gaps)
    silence = (now - times[-1]).total_seconds()
    return int(max(median_gap / 2, silence / 4))


def base_interval(
    *,
    now: datetime,
    settings: ScheduleSettings,
    configured_interval: int | None,
    recent_published: Sequence[datetime],
) -> int:
    """The feed's normal interval before publisher hints: its configured interval, or else the
    default adapted to its rhythm within [min_interval, max_interval]."""
    if configured_interval:
        return max(configured_interval, settings.min_interval)
    rhythm = publishing_rhythm(recent_published, now)
    interval = settings.interval if rhythm is None else rhythm
    return min(
        max(interval, settings.min_interval), max(settings.max_interval, settings.min_interval)
    )


def backoff_delay(
    *, url: str, settings: ScheduleSettings, normal_interval: int, error_count: int
) -> int:
    """Seconds to wait after the `error_count`-th consecutive failure: the normal interval,
    doubled per further failure, plus up to 25% hash jitter, capped at max_backoff (or at the
    normal interval when a feed is configured to be polled even more rarely)."""
    failures = max(error_count, 1)
    cap = max(settings.max_backoff, normal_interval)
    raw = normal_interval * 2 ** min(failures - 1, 32)
    jitter = 1 + FAILURE_JITTER * jitter_fraction(url, f"backoff:{failures}")
    return int(max(settings.min_interval, min(cap, raw * jitter)))


def next_poll_at(
    *,
    now: datetime,
    url: str,
    settings: ScheduleSettings,
    configured_interval: int | None,
    result: FetchResult,
    error_count: int,
    ttl: int | None,
    recent_published: Sequence[datetime],
) -> datetime:
    """When to poll the feed at `url` next, given this poll's `result`.

    `error_count` is the count of consecutive failures after this outcome (0 after a success).
    `ttl` is the feed's own hint in seconds (RSS <ttl>, sy:updatePeriod), None when absent.
    `recent_published` are publication times of the feed's recent entries, any order."""
    now = _utc(now)
    normal = base_interval(
        now=now,
        settings=settings,
        configured_interval=configured_interval,
        recent_published=recent_published,
    )
    if result.failure is not None:
        delay = backoff_delay(
            url=url, settings=settings, normal_interval=normal, error_count=error_count
        )
    else:
        hint = max(result.max_age or 0, ttl or 0)
        interval = normal
        if hint > interval:  # the publisher asks for fewer polls: oblige, up to max_interval
            interval = max(min(hint, settings.max_interval), interval)
        spread = SUCCESS_JITTER * jitter_fraction(url, "interval")
        delay = int(interval * (1 + spread))
        if delay > settings.max_interval >= interval:
            # At the ceiling the jitter goes the other way: still spread, never past it.
            delay = int(interval * (1 - spread))
    at = now + timedelta(seconds=delay)
    if result.retry_after is not None:  # binding, but a hostile value cannot park us for years
        asked = min(_utc(result.retry_after), now + timedelta(seconds=settings.max_retry_after))
        at = max(at, asked)
    return at
