"""bytes + headers → ParsedFeed (first version). The only feedparser user."""

from __future__ import annotations

import calendar
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

import feedparser

from .errors import ParseError
from .model import ParsedFeed, RawEntry


def _date(struct: Any) -> datetime | None:
    if not struct:
        return None
    return datetime.fromtimestamp(calendar.timegm(struct), UTC)


def parse_feed(body: bytes, headers: Mapping[str, str], url: str) -> ParsedFeed:
    try:
        d = feedparser.parse(body, response_headers={**headers, "content-location": url})
    except Exception as exc:  # feedparser raises on some char refs
        raise ParseError(url, f"cannot parse feed: {exc}") from exc
    if not d.entries and d.get("bozo"):
        raise ParseError(url, f"not a feed: {d.get('bozo_exception')}")
    entries = []
    for e in d.entries:
        content = e.get("content")
        entries.append(RawEntry(
            guid=e.get("id"), link=e.get("link"), title=e.get("title"),
            summary=e.get("summary"), content=content[0].get("value") if content else None,
            published=_date(e.get("published_parsed")), updated=_date(e.get("updated_parsed")),
            author=e.get("author"), language=None,
            categories=tuple(t.get("term") for t in e.get("tags", []) if t.get("term"))))
    f = d.feed
    return ParsedFeed(title=f.get("title"), link=f.get("link"), language=f.get("language"),
                      entries=tuple(entries),
                      problem=str(d.get("bozo_exception")) if d.get("bozo") else None)
