"""The CPU part of one feed's cycle, run in the worker processes: parse → normalise → fingerprint.

Its own small module so that a worker imports only these stages (about 40 MB resident instead
of 54 MB with the whole pipeline: httpx, sqlite-utils, the clusterer); `pipeline` hands
`process_body` to the pool by reference.
"""

from __future__ import annotations

from dataclasses import replace
from datetime import datetime

from .errors import ParseError
from .fingerprint import fingerprint
from .model import FailureKind, FeedFailure, ParsedFeed, ProcessedFeed
from .normalise import canonical_url, normalise_entries, plain_title
from .parse import parse_feed

MAX_STORED_PER_DOCUMENT = 64 * 2**20  # characters of title, summary, content and text per poll


def process_body(
    body: bytes, headers: dict[str, str], url: str, now: datetime, max_bytes: int
) -> ProcessedFeed:
    """parse → normalise → fingerprint, in a worker process. Never raises for bad feeds."""
    try:
        parsed = parse_feed(body, headers, url, max_bytes=max_bytes)
    except ParseError as exc:
        failure = FeedFailure(FailureKind(exc.kind), exc.message)
        return ProcessedFeed(feed=ParsedFeed(), entries=(), failure=failure)
    entries = normalise_entries(parsed, url, now)
    stored = sum(len(e.title) + len(e.summary) + len(e.content) + len(e.text) for e in entries)
    if stored > MAX_STORED_PER_DOCUMENT:
        # The growth guard: one poll of one feed never writes more than this; the feed is
        # marked instead, and nothing of it is stored.
        message = (
            f"its entries would store {stored / 2**20:,.0f} MiB of text after "
            f"sanitising, over the {MAX_STORED_PER_DOCUMENT // 2**20} MiB a feed may "
            "store per poll; nothing stored"
        )
        return ProcessedFeed(
            feed=ParsedFeed(), entries=(), failure=FeedFailure(FailureKind.TOO_LARGE, message)
        )
    pairs = tuple((e, fingerprint(e)) for e in entries)
    # The feed's own title is HTML as parsed; store it as plain text, its link canonical.
    feed = replace(
        parsed,
        entries=(),
        title=plain_title(parsed.title or "") or None,
        link=canonical_url(parsed.link, url) if parsed.link else None,
    )
    return ProcessedFeed(feed=feed, entries=pairs)
