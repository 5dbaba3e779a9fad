"""Entry identity, canonical URLs, UTC dates, plain text, sanitised HTML (first version)."""

from __future__ import annotations

import hashlib
import html
import re
from datetime import datetime
from urllib.parse import urljoin, urlsplit

import nh3

from .model import Entry, ParsedFeed

_TAG = re.compile(r"<[^>]+>")


def plain_text(fragment: str) -> str:
    return " ".join(html.unescape(_TAG.sub(" ", fragment or "")).split())


def sanitise_html(fragment: str, base_url: str | None = None) -> str:
    return nh3.clean(fragment or "", url_schemes={"http", "https", "mailto"})


def canonical_url(url: str | None, base: str | None = None) -> str | None:
    if not url:
        return None
    full = urljoin(base or "", url.strip())
    parts = urlsplit(full)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        return None
    return parts._replace(scheme=parts.scheme.lower(), netloc=parts.netloc.lower(),
                          fragment="").geturl()


def normalise_entries(parsed: ParsedFeed, feed_url: str, now: datetime) -> list[Entry]:
    out = []
    seen: set[str] = set()
    for raw in parsed.entries:
        link = canonical_url(raw.link, feed_url)
        title = plain_text(raw.title or "")
        summary = sanitise_html(raw.summary or "")
        content = sanitise_html(raw.content or "")
        text = " ".join(x for x in (title, plain_text(raw.summary or ""), plain_text(raw.content or "")) if x)
        published = min(raw.published or raw.updated or now, now)
        guid = raw.guid or link or hashlib.sha1(f"{title}|{published}|{summary}".encode()).hexdigest()
        while guid in seen:
            guid += "#dup"
        seen.add(guid)
        out.append(Entry(
            guid=guid, link=link, title=title, summary=summary, content=content, text=text,
            published=published, updated=raw.updated, author=raw.author,
            language=raw.language or parsed.language,
            content_hash=hashlib.blake2b(f"{title}\n{text}".encode(), digest_size=16).hexdigest(),
            categories=raw.categories))
    return out
