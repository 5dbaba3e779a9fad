"""Fetching (first version; the hardened fetcher replaces it). The only httpx user."""

from __future__ import annotations

import hashlib
from datetime import datetime
from pathlib import Path
from urllib.parse import unquote, urlsplit

import httpx

from .model import FeedFailure, FeedState, FetchResult, FetchSettings


class Fetcher:
    def __init__(self, settings: FetchSettings) -> None:
        self.settings = settings
        self.client = httpx.AsyncClient(
            headers={"User-Agent": settings.user_agent}, timeout=settings.timeout,
            follow_redirects=True)

    async def __aenter__(self) -> Fetcher:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        await self.client.aclose()

    async def fetch(self, state: FeedState, now: datetime) -> FetchResult:
        if state.url.startswith("file:"):
            path = Path(unquote(urlsplit(state.url).path))
            try:
                body = path.read_bytes()
            except OSError as exc:
                return FetchResult(state.id, state.url, state.url, now,
                                   failure=FeedFailure("network", f"cannot read {path}: {exc}"))
            digest = hashlib.sha256(body).hexdigest()
            return FetchResult(state.id, state.url, state.url, now, body=body, body_hash=digest,
                               not_modified=digest == state.body_hash)
        headers = {}
        if state.etag:
            headers["If-None-Match"] = state.etag
        if state.last_modified:
            headers["If-Modified-Since"] = state.last_modified
        try:
            resp = await self.client.get(state.url, headers=headers)
        except httpx.HTTPError as exc:
            return FetchResult(state.id, state.url, state.url, now,
                               failure=FeedFailure("network", str(exc) or type(exc).__name__))
        final = str(resp.url)
        if resp.status_code == 304:
            return FetchResult(state.id, state.url, final, now, status=304, not_modified=True,
                               etag=state.etag, last_modified=state.last_modified)
        if resp.status_code >= 400:
            return FetchResult(state.id, state.url, final, now, status=resp.status_code,
                               failure=FeedFailure("http", f"HTTP {resp.status_code}",
                                                   resp.status_code))
        body = resp.content
        digest = hashlib.sha256(body).hexdigest()
        return FetchResult(
            state.id, state.url, final, now, status=resp.status_code, body=body,
            headers={k.lower(): v for k, v in resp.headers.items()},
            etag=resp.headers.get("etag"), last_modified=resp.headers.get("last-modified"),
            body_hash=digest, not_modified=digest == state.body_hash)
