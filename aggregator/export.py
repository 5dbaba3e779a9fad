"""Digest renderers (first version: HTML only; the full exporters replace this)."""

from __future__ import annotations

from html import escape

from .model import Digest


def render(digest: Digest, fmt: str, *, id_prefix: str = "tag:aggregator,2026:") -> bytes:
    if fmt != "html":
        raise ValueError(f"format {fmt!r} is not available yet")
    parts = [f"<!doctype html><meta charset=utf-8><title>{escape(digest.title)}</title>",
             f"<h1>{escape(digest.title)}</h1>"]
    for s in digest.stories:
        parts.append(f"<h2>{escape(s.title)}</h2><ul>")
        for src in s.sources:
            parts.append(f"<li>{escape(src.outlet)}: {escape(src.title)}</li>")
        parts.append("</ul>")
    return "\n".join(parts).encode()
