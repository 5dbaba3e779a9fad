"""Which story an entry joins, with the evidence (first version: near-duplicates only). Pure."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime


@dataclass(frozen=True, slots=True)
class ClusterSettings:
    window_hours: float = 72
    simhash_k: int = 3
    representative: str = "earliest"


@dataclass(frozen=True, slots=True)
class ClusterDoc:
    entry_id: int
    feed_id: int
    host: str
    published: datetime
    link: str | None
    content_hash: str
    simhash: int | None
    title: str
    terms: tuple[str, ...]
    language: str | None
    story_id: int | None


@dataclass(frozen=True, slots=True)
class Assignment:
    story_id: int
    rule: str
    distance: int | None = None
    score: float | None = None
    matched_entry_id: int | None = None
    absorbed: tuple[int, ...] = ()


@dataclass(frozen=True, slots=True)
class StoryMerge:
    from_story_id: int
    into_story_id: int
    score: float | None
    reason: str


class StoryClusterer:
    def __init__(self, settings: ClusterSettings, next_story_id: int) -> None:
        self.settings = settings
        self.next_story_id = next_story_id
        self.docs: dict[int, ClusterDoc] = {}

    def load(self, docs: Iterable[ClusterDoc]) -> None:
        for doc in docs:
            self.docs[doc.entry_id] = doc

    def add(self, doc: ClusterDoc, candidates: Sequence[ClusterDoc]) -> Assignment:
        best: Assignment | None = None
        for cand in candidates:
            if cand.story_id is None or cand.entry_id == doc.entry_id:
                continue
            if doc.link and cand.link == doc.link:
                a = Assignment(cand.story_id, "url", 0, None, cand.entry_id)
            elif cand.content_hash == doc.content_hash:
                a = Assignment(cand.story_id, "content_hash", 0, None, cand.entry_id)
            elif doc.simhash is not None and cand.simhash is not None:
                d = (doc.simhash ^ cand.simhash).bit_count()
                if d > self.settings.simhash_k:
                    continue
                a = Assignment(cand.story_id, "simhash", d, None, cand.entry_id)
            else:
                continue
            if best is None or (a.distance or 0) < (best.distance or 0):
                best = a
        if best is None:
            best = Assignment(self.next_story_id, "new")
            self.next_story_id += 1
        self.docs[doc.entry_id] = _with_story(doc, best.story_id)
        return best

    def merge_pass(self) -> list[StoryMerge]:
        return []


def _with_story(doc: ClusterDoc, story_id: int) -> ClusterDoc:
    return ClusterDoc(doc.entry_id, doc.feed_id, doc.host, doc.published, doc.link,
                      doc.content_hash, doc.simhash, doc.title, doc.terms, doc.language, story_id)
