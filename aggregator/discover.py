"""Feed discovery for `feeds add https://site/`: the feeds a web page names in its head, and the
paths where sites commonly keep one. Pure: the caller fetches (through the polite, SSRF-guarded
fetcher) and decides.
"""

from __future__ import annotations

from dataclasses import dataclass
from html.parser import HTMLParser
from urllib.parse import urljoin, urlsplit

__all__ = [
    "COMMON_PATHS",
    "FeedLink",
    "common_candidates",
    "feed_links",
    "looks_like_feed",
    "looks_like_html",
]

_FEED_TYPES = {
    "application/rss+xml": "RSS",
    "application/atom+xml": "Atom",
    "application/feed+json": "JSON Feed",
    "application/json": "JSON Feed",
    "application/rdf+xml": "RSS 1.0",
    "text/xml": "XML feed",
    "application/xml": "XML feed",
}
#: Tried in this order when a page names no feed.
COMMON_PATHS = (
    "/feed",
    "/rss",
    "/rss.xml",
    "/feed.xml",
    "/atom.xml",
    "/index.xml",
    "/feed.json",
    "/feeds/posts/default",
)
_MARKERS = (b"<rss", b"<feed", b"<rdf:rdf", b"jsonfeed.org/version")
_MAX_LINKS = 50  # a page listing more is not a page about its own feeds


@dataclass(frozen=True, slots=True)
class FeedLink:
    url: str
    title: str | None
    kind: str  # "RSS", "Atom", "JSON Feed", ...


class _HeadLinks(HTMLParser):
    def __init__(self, base: str) -> None:
        super().__init__(convert_charrefs=True)
        self.base = base
        self.links: list[FeedLink] = []
        self._done = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if self._done:
            return
        if tag == "body":
            self._done = True  # feeds are announced in the head
            return
        values = {k.lower(): (v or "") for k, v in attrs}
        if tag == "base" and values.get("href"):
            self.base = urljoin(self.base, values["href"].strip())
        if tag != "link":
            return
        rels = values.get("rel", "").lower().split()
        media = values.get("type", "").split(";")[0].strip().lower()
        href = values.get("href", "").strip()
        if "alternate" not in rels or media not in _FEED_TYPES or not href:
            return
        url = urljoin(self.base, href)
        if urlsplit(url).scheme not in ("http", "https"):
            return
        if len(self.links) < _MAX_LINKS and all(link.url != url for link in self.links):
            title = " ".join(values.get("title", "").split()) or None
            self.links.append(FeedLink(url, title, _FEED_TYPES[media]))


def feed_links(page: bytes, url: str) -> list[FeedLink]:
    """The feeds a page announces with `<link rel="alternate" type="application/rss+xml" ...>`
    (Atom and JSON Feed too) before its body, absolute, in page order, each once."""
    parser = _HeadLinks(url)
    text = page[:1_000_000].decode("utf-8", errors="replace")
    parser.feed(text)
    parser.close()
    return parser.links


def common_candidates(url: str) -> list[str]:
    """The common feed locations of the site `url` is on."""
    parts = urlsplit(url)
    root = f"{parts.scheme}://{parts.netloc}"
    return [root + path for path in COMMON_PATHS]


def looks_like_feed(body: bytes) -> bool:
    """Whether the start of a body shows RSS, Atom, RDF or JSON Feed markup."""
    head = body[:4096].lower()
    return any(marker in head for marker in _MARKERS)


def looks_like_html(body: bytes) -> bool:
    head = body[:4096].lstrip(b"\xef\xbb\xbf \t\r\n").lower()
    return head.startswith((b"<!doctype html", b"<html")) or b"<head" in head
