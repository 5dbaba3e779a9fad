"""When to poll a feed next (first version). Pure: `now` is a parameter."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timedelta

from .model import FetchResult, ScheduleSettings


def next_poll_at(*, now: datetime, url: str, settings: ScheduleSettings,
                 configured_interval: int | None, result: FetchResult, error_count: int,
                 ttl: int | None, recent_published: Sequence[datetime]) -> datetime:
    if result.failure is not None:
        delay = min(settings.max_backoff, settings.min_interval * 2 ** max(0, error_count - 1))
        return now + timedelta(seconds=delay)
    interval = configured_interval or settings.interval
    return now + timedelta(seconds=max(settings.min_interval, interval))


def retires(result: FetchResult) -> bool:
    return result.status == 410
