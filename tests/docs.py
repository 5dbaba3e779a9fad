"""ClusterDocs built as the pipeline builds them (normalised entry -> fingerprint -> doc), for
the story-tier tests."""

from __future__ import annotations

import hashlib
from datetime import datetime

from aggregator import fingerprint
from aggregator.model import ClusterDoc, Entry


def written(
    entry_id: int,
    host: str,
    title: str,
    summary: str = "",
    published: str = "2024-10-28T12:00:00+00:00",
) -> ClusterDoc:
    """A doc built as the pipeline builds one, from an outlet's headline and summary."""
    text = f"{title} {summary}".strip()
    entry = Entry(
        guid=str(entry_id),
        link=f"https://{host}/{entry_id}",
        title=title,
        summary=summary,
        content="",
        text=text,
        published=datetime.fromisoformat(published),
        updated=None,
        author=None,
        language="fr",
        content_hash=hashlib.sha256(text.encode()).hexdigest(),
    )
    fp = fingerprint.fingerprint(entry)
    title_terms, rubric_terms = fingerprint.title_layout(title)
    return ClusterDoc(
        entry_id=entry_id,
        feed_id=sum(map(ord, host)),
        host=host,
        published=entry.published,
        link=entry.link,
        content_hash=fp.content_hash,
        simhash=fp.simhash,
        title=title,
        terms=fp.terms,
        language="fr",
        story_id=None,
        text_length=len(text),
        title_terms=title_terms,
        rubric_terms=rubric_terms,
    )
