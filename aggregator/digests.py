"""Digests: load stories from the store, render them with `export`, write files atomically."""

from __future__ import annotations

import json
import os
import re
import tempfile
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from .config import Config, DigestSettings
from .export import render
from .model import Digest, DigestStory, Source
from .store import Store, from_db_time

MAX_CANDIDATES = 100_000  # stories considered by a filtered digest (the window bounds it first)


def build_digest(store: Store, settings: DigestSettings, now: datetime) -> Digest:
    """The stories a digest shows, most widely reported first, with every outlet that
    reported them."""
    filtered = bool(
        settings.tags
        or settings.language
        or settings.query
        or settings.exclude_tags
        or settings.exclude_query
        or settings.block_titles
    )
    blocked = [re.compile(p, re.IGNORECASE) for p in settings.block_titles]
    # With filters, every story in the window is a candidate: taking the top `limit` first and
    # filtering after would drop matching stories that rank lower.
    rows = store.stories(
        since=now - timedelta(seconds=settings.since),
        min_sources=settings.min_sources,
        limit=MAX_CANDIDATES if filtered else settings.limit,
    )
    wanted_language = _primary_language(settings.language)
    stories: list[DigestStory] = []
    for s in rows:
        members = store.story_members(s["id"])
        tags: set[str] = set()
        languages = set()
        for m in members:
            tags.update(json.loads(m["feed_tags"] or "[]"))
            if m["language"]:
                languages.add(_primary_language(m["language"]))
        if settings.tags and not tags & set(settings.tags):
            continue
        if wanted_language and wanted_language not in languages:
            continue
        if settings.query and not store.story_matches(s["id"], settings.query):
            continue
        if (settings.exclude_tags or settings.exclude_query or blocked) and _all_excluded(
            store, s["id"], members, settings, blocked
        ):
            continue
        rep = next((m for m in members if m["id"] == s["representative_id"]), members[0])
        sources = tuple(
            Source(
                outlet=m["outlet"],
                title=m["title"],
                link=m["link"],
                published=from_db_time(m["published"]) or now,
            )
            for m in members
        )
        stories.append(
            DigestStory(
                story_id=s["id"],
                title=s["title"],
                link=rep["link"],
                summary=rep["summary"] or "",
                first_seen=from_db_time(s["first_seen"]) or now,
                updated=from_db_time(s["updated_at"]) or now,
                sources=sources,
                categories=tuple(sorted(tags)),
                language=rep["language"],
                image=rep["image"],
                enclosures=store.enclosures(rep["id"]),
            )
        )
        if len(stories) >= settings.limit:
            break
    # In the order `aggregator stories` lists them (Store.stories): the most widely reported
    # first, then the larger, then the most recently seen.
    generated = max((d.updated for d in stories), default=now)
    return Digest(
        title=settings.title or f"aggregator: {settings.name}",
        generated_at=generated,
        stories=tuple(stories),
        name=settings.name,
        link=settings.link,
        feed_url=settings.feed_url,
        timezone=settings.timezone,
    )


def _all_excluded(
    store: Store,
    story_id: int,
    members: list[Any],
    settings: DigestSettings,
    blocked: list[re.Pattern[str]],
) -> bool:
    """Whether every entry of the story is excluded by the digest's exclusions."""
    excluded_tags = set(settings.exclude_tags)
    by_query = (
        store.matching_members(story_id, settings.exclude_query)
        if settings.exclude_query
        else set()
    )
    for m in members:
        tagged = bool(excluded_tags & set(json.loads(m["feed_tags"] or "[]")))
        titled = any(p.search(m["title"] or "") for p in blocked)
        if not (tagged or titled or m["id"] in by_query):
            return False
    return True


def _primary_language(tag: str | None) -> str | None:
    """ "en-GB" and "EN_us" both mean English to a digest filter: compare primary subtags."""
    if not tag or not tag.strip():
        return None
    return tag.strip().replace("_", "-").split("-")[0].lower()


def write_atomically(path: Path, data: bytes, *, make_parents: bool = True) -> None:
    """Write to a temporary file in the same folder, fsync, rename: readers never see half.
    `make_parents=False` (`export -o`) refuses a folder that does not exist instead of
    creating it: a typo run as root must not create folders under /etc."""
    if make_parents:
        path.parent.mkdir(parents=True, exist_ok=True)
    elif not path.parent.is_dir():
        raise FileNotFoundError(2, f"the folder {path.parent} does not exist (create it first)")
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_digests(config: Config, store: Store, now: datetime) -> list[Path]:
    """Rewrite every configured digest whose bytes changed; return the paths written."""
    written = []
    for settings in config.digests:
        data = render(build_digest(store, settings, now), settings.format)
        try:
            if settings.path.read_bytes() == data:
                continue
        except OSError:
            pass
        write_atomically(settings.path, data)
        written.append(settings.path)
    return written
