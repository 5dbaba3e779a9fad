"""Digests (Atom 1.0, RSS 2.0, JSON Feed 1.1, HTML) and OPML, rendered from loaded records.

Pure: no I/O, no clock, no randomness. The same `Digest` always gives the same bytes.

Safety rules every renderer follows, whatever the input says:
- every piece of text is escaped for the format it lands in (and characters XML cannot carry
  are dropped), so a title such as ``<script>`` arrives as visible text, never as markup;
- a story's `summary` is untrusted: it is reduced to plain text here (tags, scripts, styles and
  attributes are dropped) and then escaped, so event handlers and ``javascript:`` links in it
  cannot survive;
- only absolute http(s) URLs are emitted; any other link is left out;
- the only HTML in any output is markup this module builds itself from escaped parts.
"""

from __future__ import annotations

import html
import json
import re
import unicodedata
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, tzinfo
from email.utils import format_datetime
from urllib.parse import quote, urlsplit
from zoneinfo import ZoneInfo

from lxml import etree
from lxml import html as lxml_html

from . import PROJECT_URL
from .errors import ConfigError
from .model import Digest, DigestStory, Enclosure, FeedSettings, Source

__all__ = [
    "FORMATS",
    "MEDIA_TYPES",
    "feeds_toml",
    "opml_export",
    "opml_import",
    "render",
    "render_atom",
    "render_html",
    "render_json_feed",
    "render_rss",
    "safe_url",
    "summary_text",
]

DEFAULT_ID_PREFIX = "tag:aggregator,2026:"
SUMMARY_CHARS = 400
GENERATOR = "aggregator"

MEDIA_NS = "http://search.yahoo.com/mrss/"  # Media RSS: media:thumbnail, the lead image
ATOM_NS = "http://www.w3.org/2005/Atom"
XML_NS = "http://www.w3.org/XML/1998/namespace"

FORMATS = ("atom", "rss", "json", "html")
MEDIA_TYPES = {
    "atom": "application/atom+xml",
    "rss": "application/rss+xml",
    "json": "application/feed+json",
    "html": "text/html; charset=utf-8",
    "opml": "text/x-opml",
}

# --- small safe building blocks -------------------------------------------------------------

# XML 1.0 allows tab, LF, CR and everything from U+0020 except surrogates and U+FFFE/U+FFFF.
_NOT_XML_CHAR = re.compile("[^\t\n\r\u0020-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]")
_SPACES = re.compile(r"\s+")
_LANGUAGE = re.compile(r"^[A-Za-z]{1,8}(?:-[A-Za-z0-9]{1,8})*$")


def _clean(text: str | None) -> str:
    """Text any format can carry: no characters XML forbids, no C0/C1 controls, NFC."""
    if not text:
        return ""
    text = _NOT_XML_CHAR.sub("", text)
    text = "".join(ch for ch in text if ch in "\t\n\r" or unicodedata.category(ch) != "Cc")
    return unicodedata.normalize("NFC", text)


def _line(text: str | None) -> str:
    """One line of clean text with runs of whitespace collapsed (titles, names, tags)."""
    return _SPACES.sub(" ", _clean(text)).strip()


def safe_url(url: str | None) -> str | None:
    """The URL when it is an absolute http(s) URL a reader may follow, else None.

    Anything else (javascript:, data:, relative or protocol-relative links, URLs with
    whitespace or control characters inside) is dropped rather than repaired.
    """
    if not url:
        return None
    url = url.strip()
    if not url or any(ch.isspace() or unicodedata.category(ch) == "Cc" for ch in url):
        return None
    if _NOT_XML_CHAR.search(url) or '"' in url or "<" in url or ">" in url or "\\" in url:
        return None
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 - raises ValueError on a malformed port
    except ValueError:
        return None
    if parts.scheme.lower() not in ("http", "https") or not parts.hostname:
        return None
    return url


def _language(value: str | None) -> str | None:
    """A BCP 47-looking language tag, or None (the tag ends up in attributes)."""
    if value and _LANGUAGE.match(value.strip()):
        return value.strip()
    return None


def _utc(moment: datetime) -> datetime:
    # Records carry tz-aware UTC; a naive value is taken to be UTC rather than local time,
    # because reading the local zone would make the output depend on the machine.
    if moment.tzinfo is None:
        return moment.replace(tzinfo=UTC)
    return moment.astimezone(UTC)


def _rfc3339(moment: datetime) -> str:
    return _utc(moment).replace(microsecond=0).strftime("%Y-%m-%dT%H:%M:%SZ")


def _rfc822(moment: datetime) -> str:
    return format_datetime(_utc(moment).replace(microsecond=0), usegmt=True)


# Elements whose text is never meant to be read, and block elements that separate words.
_INVISIBLE = ("script", "style", "template", "noscript", "iframe", "object", "embed", "svg", "math")
_BLOCKS = frozenset(
    "address article aside blockquote br dd div dl dt figcaption figure footer h1 h2 h3 h4 h5 h6 "
    "header hr li main nav ol p pre section table td th tr ul".split()
)


def summary_text(summary: str | None, limit: int = SUMMARY_CHARS) -> str:
    """Plain text of an untrusted HTML (or text) summary, at most `limit` characters.

    Markup is parsed, never pattern-matched: scripts, styles and every attribute disappear,
    entities are decoded, and block boundaries become spaces. The result is text to be
    escaped by the caller, never markup.
    """
    cleaned = _clean(summary)
    if not cleaned.strip():
        return ""
    if "<" in cleaned or "&" in cleaned:
        parser = lxml_html.HTMLParser(
            no_network=True, remove_comments=True, remove_pis=True, recover=True
        )
        try:
            root = lxml_html.fragment_fromstring(cleaned, create_parent="div", parser=parser)
        except (etree.ParserError, ValueError):
            root = None
        if root is not None:
            etree.strip_elements(root, *_INVISIBLE, with_tail=False)
            for element in root.iter():
                if isinstance(element.tag, str) and element.tag.lower() in _BLOCKS:
                    element.tail = " " + (element.tail or "")
                    element.text = " " + (element.text or "")
            cleaned = "".join(root.itertext())
        else:
            cleaned = ""
    text = _SPACES.sub(" ", _clean(cleaned)).strip()
    return _shorten(text, limit)


def _shorten(text: str, limit: int) -> str:
    if len(text) <= limit:
        return text
    cut = text[: limit - 1]
    space = cut.rfind(" ")
    if space > limit // 2:
        cut = cut[:space]
    return cut.rstrip(" ,;:.-") + "…"


# --- what every format shows about a story --------------------------------------------------


@dataclass(frozen=True, slots=True)
class _SourceView:
    outlet: str
    title: str
    link: str | None
    published: datetime


@dataclass(frozen=True, slots=True)
class _StoryView:
    item_id: str
    title: str
    link: str | None
    summary: str
    first_seen: datetime
    updated: datetime
    sources: tuple[_SourceView, ...]
    categories: tuple[str, ...]
    language: str | None
    outlet: str | None = None  # who wrote the headline the story is shown under
    others: tuple[_SourceView, ...] = ()  # "also reported by": every source but that one
    image: str | None = None  # the headline entry's lead image
    enclosures: tuple[Enclosure, ...] = ()  # its files, with safe URLs


# A feed reader needs a media type for a file: RSS 2.0 and JSON Feed require one.
_UNKNOWN_MEDIA_TYPE = "application/octet-stream"


def _source_view(source: Source) -> _SourceView:
    link = safe_url(source.link)
    outlet = _line(source.outlet) or (urlsplit(link).hostname if link else None) or "unknown"
    return _SourceView(outlet, _line(source.title), link, source.published)


def _story_view(story: DigestStory, id_prefix: str) -> _StoryView:
    # Sources in a fixed order (oldest report first), whatever order the store loaded them in,
    # and each outlet's report once.
    seen: set[tuple[str, str | None, str]] = set()
    sources: list[_SourceView] = []
    for view in sorted(
        (_source_view(s) for s in story.sources),
        key=lambda v: (_utc(v.published), v.outlet.casefold(), v.outlet, v.link or "", v.title),
    ):
        key = (view.outlet, view.link, view.title)
        if key not in seen:
            seen.add(key)
            sources.append(view)
    categories = tuple(dict.fromkeys(c for c in (_line(c) for c in story.categories) if c))
    link = safe_url(story.link) or next((s.link for s in sources if s.link), None)
    title = _line(story.title) or next((s.title for s in sources if s.title), "") or "(untitled)"
    # The headline's own report: the source linking the story's link, else the one whose
    # title it is. It is named as the headline's outlet, not listed again as "also reported".
    headline = next((s for s in sources if link and s.link == link), None) or next(
        (s for s in sources if s.title and s.title == title), None
    )
    return _StoryView(
        outlet=headline.outlet if headline else None,
        others=tuple(s for s in sources if s is not headline),
        item_id=f"{id_prefix}story/{int(story.story_id)}",
        title=title,
        link=link,
        summary=summary_text(story.summary),
        first_seen=story.first_seen,
        updated=max(_utc(story.updated), _utc(story.first_seen)),
        sources=tuple(sources),
        categories=categories,
        language=_language(story.language),
        image=safe_url(story.image),
        enclosures=tuple(
            Enclosure(url, e.media_type, e.length)
            for e in story.enclosures
            if (url := safe_url(e.url)) is not None
        ),
    )


def _views(digest: Digest, id_prefix: str) -> list[_StoryView]:
    if not id_prefix or _line(id_prefix) != id_prefix:
        raise ValueError(f"id_prefix must be a non-empty URI prefix, got {id_prefix!r}")
    return [_story_view(story, id_prefix) for story in digest.stories]


def _feed_id(digest: Digest, id_prefix: str) -> str:
    # A digest's name (from the config) is stable while its title may be reworded; the title
    # is only the fallback for digests built without a name.
    key = _line(digest.name) or _line(digest.title)
    return safe_url(digest.feed_url) or f"{id_prefix}digest/{quote(key, safe='')}"


def _common_language(views: Sequence[_StoryView]) -> str | None:
    languages = {v.language.lower() if v.language else None for v in views}
    if len(languages) == 1:
        return next(iter(languages))
    return None


def _sources_label(count: int) -> str:
    return "1 source" if count == 1 else f"{count} sources"


def _item_html(view: _StoryView) -> str:
    """The HTML body of a feed item: summary and the "also reported by" list, all escaped."""
    esc = html.escape
    parts: list[str] = []
    if view.outlet:
        parts.append(f"<p>From {esc(view.outlet)}.</p>")
    if view.summary:
        parts.append(f"<p>{esc(view.summary)}</p>")
    if view.others:
        parts.append(f"<p>Also reported by ({_sources_label(len(view.others))}):</p><ul>")
        for source in view.others:
            outlet = esc(source.outlet)
            if source.link:
                outlet = f'<a href="{esc(source.link)}">{outlet}</a>'
            title = f": {esc(source.title)}" if source.title else ""
            parts.append(f"<li>{outlet}{title}</li>")
        parts.append("</ul>")
    return "".join(parts)


# --- Atom 1.0 -------------------------------------------------------------------------------


def _sub(parent: etree._Element, tag: str, text: str | None = None, **attrs: str) -> etree._Element:
    element = etree.SubElement(parent, tag, {k: v for k, v in attrs.items()})
    if text is not None:
        element.text = text
    return element


def render_atom(digest: Digest, *, id_prefix: str = DEFAULT_ID_PREFIX) -> bytes:
    """The digest as an Atom 1.0 feed (RFC 4287), one entry per story."""
    views = _views(digest, id_prefix)
    a = f"{{{ATOM_NS}}}"
    # lxml-stubs do not know that None names the default namespace.
    namespaces: dict[str | None, str] = {None: ATOM_NS}
    if any(v.image for v in views):
        namespaces["media"] = MEDIA_NS
    feed = etree.Element(a + "feed", nsmap=namespaces)  # type: ignore[arg-type]
    language = _common_language(views)
    if language:
        feed.set(f"{{{XML_NS}}}lang", language)
    _sub(feed, a + "id", _feed_id(digest, id_prefix))
    _sub(feed, a + "title", _line(digest.title) or "Digest", type="text")
    _sub(feed, a + "updated", _rfc3339(digest.generated_at))
    author = _sub(feed, a + "author")
    _sub(author, a + "name", GENERATOR)
    _sub(feed, a + "generator", GENERATOR)
    if link := safe_url(digest.link):
        _sub(feed, a + "link", rel="alternate", type="text/html", href=link)
    if feed_url := safe_url(digest.feed_url):
        _sub(feed, a + "link", rel="self", type=MEDIA_TYPES["atom"], href=feed_url)
    for view in views:
        entry = _sub(feed, a + "entry")
        if view.language and view.language.lower() != language:
            entry.set(f"{{{XML_NS}}}lang", view.language)
        _sub(entry, a + "id", view.item_id)
        _sub(entry, a + "title", view.title, type="text")
        _sub(entry, a + "published", _rfc3339(view.first_seen))
        _sub(entry, a + "updated", _rfc3339(view.updated))
        if view.link:
            _sub(entry, a + "link", rel="alternate", type="text/html", href=view.link)
        for source in view.sources:
            if source.link and source.link != view.link:
                _sub(
                    entry,
                    a + "link",
                    rel="related",
                    type="text/html",
                    href=source.link,
                    title=source.outlet,
                )
        if view.image:
            _sub(entry, f"{{{MEDIA_NS}}}thumbnail", url=view.image)
        for enclosure in view.enclosures:
            _sub(
                entry,
                a + "link",
                rel="enclosure",
                href=enclosure.url,
                **({"type": enclosure.media_type} if enclosure.media_type else {}),
                **({"length": str(enclosure.length)} if enclosure.length else {}),
            )
        for category in view.categories:
            _sub(entry, a + "category", term=category)
        if view.summary:
            _sub(entry, a + "summary", view.summary, type="text")
        _sub(entry, a + "content", _item_html(view), type="html")
    return etree.tostring(feed, xml_declaration=True, encoding="utf-8") + b"\n"


# --- RSS 2.0 --------------------------------------------------------------------------------


def _rss_text(text: str) -> str:
    """Plain text for an RSS element that some readers render as HTML (titles, categories).

    RSS never says whether a title is text or HTML. Text without angle brackets reads the same
    either way; text with them is HTML-escaped, so a reader that renders HTML shows the
    brackets and one that does not shows entities: never markup.
    """
    if "<" in text or ">" in text:
        return html.escape(text, quote=False)
    return text


def render_rss(digest: Digest, *, id_prefix: str = DEFAULT_ID_PREFIX) -> bytes:
    """The digest as an RSS 2.0 feed; item guids are the story ids (isPermaLink="false")."""
    views = _views(digest, id_prefix)
    namespaces = {"atom": ATOM_NS, **({"media": MEDIA_NS} if any(v.image for v in views) else {})}
    rss = etree.Element("rss", {"version": "2.0"}, nsmap=namespaces)
    channel = _sub(rss, "channel")
    title = _line(digest.title) or "Digest"
    _sub(channel, "title", _rss_text(title))
    # Required by RSS 2.0: the digest's page, else its own URL, else the generator's home.
    _sub(channel, "link", safe_url(digest.link) or safe_url(digest.feed_url) or PROJECT_URL)
    # Readers render <description> as HTML.
    _sub(
        channel,
        "description",
        html.escape(f"{title}: stories and the outlets that reported them", quote=False),
    )
    if language := _common_language(views):
        _sub(channel, "language", language)
    _sub(channel, "lastBuildDate", _rfc822(digest.generated_at))
    _sub(channel, "generator", GENERATOR)
    if feed_url := safe_url(digest.feed_url):
        _sub(channel, f"{{{ATOM_NS}}}link", rel="self", type=MEDIA_TYPES["rss"], href=feed_url)
    for view in views:
        item = _sub(channel, "item")
        _sub(item, "title", _rss_text(view.title))
        if view.link:
            _sub(item, "link", view.link)
        _sub(item, "description", _item_html(view))
        for category in view.categories:
            _sub(item, "category", _rss_text(category))
        if view.image:
            _sub(item, f"{{{MEDIA_NS}}}thumbnail", url=view.image)
        if view.enclosures:
            # RSS readers take one enclosure per item (the W3C validator warns at two), and
            # RSS 2.0 requires its length and type: 0 and octet-stream when the feed gave none.
            first = view.enclosures[0]
            _sub(
                item,
                "enclosure",
                url=first.url,
                length=str(first.length or 0),
                type=first.media_type or _UNKNOWN_MEDIA_TYPE,
            )
        _sub(item, "guid", view.item_id, isPermaLink="false")
        _sub(item, "pubDate", _rfc822(view.first_seen))
        # RSS has no "updated"; Atom's element is the common extension readers understand.
        _sub(item, f"{{{ATOM_NS}}}updated", _rfc3339(view.updated))
    return etree.tostring(rss, xml_declaration=True, encoding="utf-8") + b"\n"


# --- JSON Feed 1.1 --------------------------------------------------------------------------

# Escaped so the JSON stays inert even if someone pastes it into an HTML page.
_JSON_INERT = str.maketrans(
    {"<": "\\u003c", ">": "\\u003e", "&": "\\u0026", "\u2028": "\\u2028", "\u2029": "\\u2029"}
)


def render_json_feed(digest: Digest, *, id_prefix: str = DEFAULT_ID_PREFIX) -> bytes:
    """The digest as a JSON Feed 1.1; sources also appear as an `_aggregator` extension."""
    views = _views(digest, id_prefix)
    feed: dict[str, object] = {
        "version": "https://jsonfeed.org/version/1.1",
        "title": _line(digest.title) or "Digest",
    }
    if link := safe_url(digest.link):
        feed["home_page_url"] = link
    if feed_url := safe_url(digest.feed_url):
        feed["feed_url"] = feed_url
    if language := _common_language(views):
        feed["language"] = language
    feed["authors"] = [{"name": GENERATOR}]
    items: list[dict[str, object]] = []
    for view in views:
        item: dict[str, object] = {"id": view.item_id}
        if view.link:
            item["url"] = view.link
        item["title"] = view.title
        if view.summary:
            item["summary"] = view.summary
        if view.image:
            item["image"] = view.image
        if view.enclosures:
            item["attachments"] = [
                {
                    "url": e.url,
                    "mime_type": e.media_type or _UNKNOWN_MEDIA_TYPE,
                    **({"size_in_bytes": e.length} if e.length else {}),
                }
                for e in view.enclosures
            ]
        item["content_html"] = _item_html(view)
        item["date_published"] = _rfc3339(view.first_seen)
        item["date_modified"] = _rfc3339(view.updated)
        if view.categories:
            item["tags"] = list(view.categories)
        if view.language:
            item["language"] = view.language
        item["_aggregator"] = {
            "sources": [
                {
                    "outlet": s.outlet,
                    "title": s.title,
                    **({"url": s.link} if s.link else {}),
                    "date_published": _rfc3339(s.published),
                }
                for s in view.sources
            ],
        }
        items.append(item)
    feed["items"] = items
    text = json.dumps(feed, ensure_ascii=False, indent=2).translate(_JSON_INERT)
    return (text + "\n").encode("utf-8")


# --- HTML page ------------------------------------------------------------------------------

_CSS = """
:root{color-scheme:light dark;--bg:#fbfaf7;--fg:#1d1d1f;--muted:#5f6368;--card:#fff;
--line:#e4e1da;--accent:#0b57d0;--chip:#eef2fb}
@media (prefers-color-scheme:dark){:root{--bg:#121316;--fg:#e8e6e3;--muted:#a3a7ad;
--card:#1b1d21;--line:#2c2f35;--accent:#8ab4f8;--chip:#23304a}}
*{box-sizing:border-box}
body{margin:0;background:var(--bg);color:var(--fg);
font:16px/1.55 system-ui,-apple-system,"Segoe UI",Roboto,"Helvetica Neue",Arial,sans-serif}
main{max-width:46rem;margin:0 auto;padding:2rem 1rem 3rem}
header.page{margin-bottom:1.5rem;border-bottom:2px solid var(--line);padding-bottom:.75rem}
header.page h1{margin:0;font-size:1.9rem;line-height:1.2;letter-spacing:-.01em}
header.page p{margin:.35rem 0 0;color:var(--muted);font-size:.9rem}
a{color:var(--accent);text-decoration:none}
a:hover,a:focus{text-decoration:underline}
ol.stories{list-style:none;margin:0;padding:0}
article{background:var(--card);border:1px solid var(--line);border-radius:10px;
padding:1rem 1.15rem;margin:0 0 1rem}
article h2{margin:0 0 .3rem;font-size:1.2rem;line-height:1.3}
.meta{margin:0 0 .5rem;color:var(--muted);font-size:.85rem}
.meta .count{font-weight:600;color:var(--fg)}
.summary{margin:.25rem 0 .6rem;overflow-wrap:anywhere}
.tags{display:inline-flex;flex-wrap:wrap;gap:.3rem;margin:0;padding:0;list-style:none}
.tags li{background:var(--chip);border-radius:999px;padding:0 .55rem;font-size:.78rem}
details{margin-top:.4rem}
summary{cursor:pointer;color:var(--muted);font-size:.85rem}
ul.sources{margin:.5rem 0 0;padding:0;list-style:none;font-size:.92rem}
ul.sources li{display:flex;flex-wrap:wrap;align-items:baseline;column-gap:.6rem;
margin:0;padding:.35rem 0 .35rem .75rem;border-left:3px solid var(--line);overflow-wrap:anywhere}
ul.sources li+li{margin-top:.3rem}
ul.sources .outlet{font-weight:600}
ul.sources time{color:var(--muted);font-size:.78rem;white-space:nowrap;margin-left:auto}
ul.sources .headline{flex-basis:100%}
img.lead{display:block;width:100%;max-height:16rem;object-fit:cover;border-radius:6px;
margin:0 0 .6rem;background:var(--line)}
.empty{color:var(--muted)}
footer{color:var(--muted);font-size:.8rem;margin-top:2rem}
@media (max-width:30rem){main{padding:1rem .6rem}header.page h1{font-size:1.5rem}
article{padding:.8rem .85rem}}
"""

# No scripts, frames, plugins or fonts; only the inline stylesheet above applies, and images
# come only over https (a story's lead image, loaded lazily and sent without a referrer;
# a plain-http one would be mixed content on an https page and is left out).
_CSP = (
    "default-src 'none'; style-src 'unsafe-inline'; img-src https:; base-uri 'none';"
    " form-action 'none'"
)


def _zone(name: str) -> tzinfo:
    try:
        return ZoneInfo(name)
    except (KeyError, ValueError, OSError):  # the config checked it; a hand-built digest may not
        return UTC


def _clock(moment: datetime, reference: datetime, zone: tzinfo) -> str:
    """A local clock time with its day told relative to `reference` (the page's own time):
    "today 08:15 CET", "yesterday 22:10 CET", "Mon 28 Oct 08:15 CET", "28 Oct 2023 08:15 UTC"."""
    local, ref = _utc(moment).astimezone(zone), _utc(reference).astimezone(zone)
    days = (ref.date() - local.date()).days
    if days == 0:
        day = "today"
    elif days == 1:
        day = "yesterday"
    elif 1 < days < 7:
        day = f"{_WEEKDAYS[local.weekday()]} {local.day} {_MONTHS[local.month - 1]}"
    elif local.year == ref.year:
        day = f"{local.day} {_MONTHS[local.month - 1]}"
    else:
        day = f"{local.day} {_MONTHS[local.month - 1]} {local.year}"
    return f"{day} {local:%H:%M} {local.tzname() or ''}".rstrip()


def _later(earlier: datetime, later: datetime) -> str:
    """How long after `earlier` `later` is, in words: "40 min later", "3 h later", "2 days later"."""
    minutes = int((_utc(later) - _utc(earlier)) / timedelta(minutes=1))
    if minutes < 60:
        return f"{max(minutes, 1)} min later"
    if minutes < 48 * 60:
        return f"{minutes // 60} h later"
    return f"{minutes // (24 * 60)} days later"


# English names whatever the process's locale (strftime's %a and %b follow it).
_WEEKDAYS = ("Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun")
_MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")


def _html_story(view: _StoryView, reference: datetime, zone: tzinfo) -> str:
    """One story's card; times are local to `zone`, their days told relative to the page's
    time `reference`."""
    esc = html.escape
    lang = f' lang="{esc(view.language)}"' if view.language else ""
    title = esc(view.title)
    if view.link:
        title = f'<a href="{esc(view.link)}" rel="noopener noreferrer">{title}</a>'
    outlets = len({source.outlet for source in view.sources})
    count = _sources_label(len(view.sources))
    if outlets != len(view.sources):
        count += f" from {outlets} outlets" if outlets != 1 else " from 1 outlet"
    meta = [f'<span class="outlet">{esc(view.outlet)}</span>'] if view.outlet else []
    meta += [
        f'<span class="count">{count}</span>',
        f'first seen <time datetime="{_rfc3339(view.first_seen)}">'
        f"{esc(_clock(view.first_seen, reference, zone))}</time>",
    ]
    # "Updated" only when it says something: told after the first report, not as one more
    # clock time (which, for stories grown in one cycle, was the same on every card).
    if _utc(view.updated) - _utc(view.first_seen) >= timedelta(minutes=1):
        meta.append(
            f'updated <time datetime="{_rfc3339(view.updated)}"'
            f' title="{esc(_clock(view.updated, reference, zone))}">'
            f"{esc(_later(view.first_seen, view.updated))}</time>"
        )
    lines = [f'<li><article id="story-{view.item_id.rsplit("/", 1)[-1]}"{lang}>']
    if view.image and view.image.startswith("https://"):
        # Decorative: the headline below says what it shows, so the alternative text is empty
        # (feeds give no description of their images).
        lines.append(
            f'<img class="lead" src="{esc(view.image)}" alt="" loading="lazy"'
            ' decoding="async" referrerpolicy="no-referrer">'
        )
    lines += [f"<h2>{title}</h2>", f'<p class="meta">{" · ".join(meta)}</p>']
    if view.summary:
        lines.append(f'<p class="summary">{esc(view.summary)}</p>')
    if view.categories:
        chips = "".join(f"<li>{esc(c)}</li>" for c in view.categories)
        lines.append(f'<ul class="tags" aria-label="tags">{chips}</ul>')
    if view.others:
        lines.append('<details open><summary>Also reported by</summary><ul class="sources">')
        for source in view.others:
            outlet = esc(source.outlet)
            if source.link and not source.title:
                outlet = f'<a href="{esc(source.link)}" rel="noopener noreferrer">{outlet}</a>'
            lines.append(
                f'<li><span class="outlet">{outlet}</span> '
                f'<time datetime="{_rfc3339(source.published)}">'
                f"{esc(_clock(source.published, reference, zone))}</time>"
            )
            if source.title:
                headline = esc(source.title)
                if source.link:
                    headline = (
                        f'<a href="{esc(source.link)}" rel="noopener noreferrer">{headline}</a>'
                    )
                lines.append(f'<span class="headline">{headline}</span>')
            lines.append("</li>")
        lines.append("</ul></details>")
    lines.append("</article></li>")
    return "\n".join(lines)


def render_html(digest: Digest, *, id_prefix: str = DEFAULT_ID_PREFIX) -> bytes:
    """The digest as one self-contained HTML page: inline CSS, no scripts, no external assets."""
    esc = html.escape
    views = _views(digest, id_prefix)
    title = esc(_line(digest.title) or "Digest")
    language = _common_language(views) or "en"
    count = "1 story" if len(views) == 1 else f"{len(views)} stories"
    zone = _zone(digest.timezone)
    made = _utc(digest.generated_at).astimezone(zone)
    subtitle = (
        f'{count} · updated <time datetime="{_rfc3339(digest.generated_at)}">'
        f"{_WEEKDAYS[made.weekday()]} {made.day} {_MONTHS[made.month - 1]} {made.year}"
        f" {made:%H:%M} {esc(made.tzname() or '')}</time>"
    )
    alternates = []
    if feed_url := safe_url(digest.feed_url):
        alternates.append(f'<a href="{esc(feed_url)}">subscribe</a>')
    if link := safe_url(digest.link):
        alternates.append(f'<a href="{esc(link)}">home</a>')
    if alternates:
        subtitle += " · " + " · ".join(alternates)
    body = "\n".join(_html_story(view, digest.generated_at, zone) for view in views)
    if not views:
        body = '<li class="empty">No stories in this digest yet.</li>'
    page = f"""<!DOCTYPE html>
<html lang="{esc(language)}">
<head>
<meta charset="utf-8">
<meta http-equiv="Content-Security-Policy" content="{_CSP}">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta name="color-scheme" content="light dark">
<meta name="referrer" content="no-referrer">
<meta name="generator" content="{GENERATOR}">
<title>{title}</title>
<style>{_CSS}</style>
</head>
<body>
<main>
<header class="page"><h1>{title}</h1><p>{subtitle}</p></header>
<ol class="stories">
{body}
</ol>
<footer>Generated by {GENERATOR} from the feeds it follows.</footer>
</main>
</body>
</html>
"""
    return page.encode("utf-8")


# --- dispatch -------------------------------------------------------------------------------

_RENDERERS: dict[str, Callable[..., bytes]] = {
    "atom": render_atom,
    "rss": render_rss,
    "json": render_json_feed,
    "html": render_html,
}


def render(digest: Digest, fmt: str, *, id_prefix: str = DEFAULT_ID_PREFIX) -> bytes:
    """The digest in format `fmt` ("atom", "rss", "json" or "html")."""
    try:
        renderer = _RENDERERS[fmt]
    except KeyError:
        raise ValueError(
            f"unknown digest format {fmt!r}; expected one of {', '.join(FORMATS)}"
        ) from None
    return renderer(digest, id_prefix=id_prefix)


# --- OPML -----------------------------------------------------------------------------------


def opml_export(feeds: Sequence[FeedSettings], title: str) -> bytes:
    """The subscriptions as an OPML 2.0 document: one `type="rss"` outline per feed.

    Tags go into the outline's `category` attribute (comma-separated); feeds keep their order.
    """
    opml = etree.Element("opml", version="2.0")
    head = _sub(opml, "head")
    _sub(head, "title", _line(title) or "Subscriptions")
    body = _sub(opml, "body")
    for feed in feeds:
        url = _line(feed.url)
        name = _line(feed.title) or url
        attrs = {"type": "rss", "text": name, "title": name, "xmlUrl": url}
        # A comma separates categories in OPML, so it cannot appear inside one.
        tags = [t for t in (_line(tag.replace(",", " ")) for tag in feed.tags) if t]
        if tags:
            attrs["category"] = ",".join(tags)
        etree.SubElement(body, "outline", attrs)
    return etree.tostring(opml, xml_declaration=True, encoding="utf-8", pretty_print=True)


_OPML_MAX_BYTES = 10 * 1024 * 1024


def _attr(element: etree._Element, name: str) -> str | None:
    """An attribute by name, ignoring case: real OPML files write xmlUrl, xmlurl and XMLURL."""
    value = element.get(name)
    if value is None:
        lowered = name.lower()
        for key, candidate in element.attrib.items():
            if isinstance(key, str) and key.lower() == lowered:
                value = str(candidate)
                break
    return value


def _parse_opml(data: bytes, source: str) -> etree._Element:
    if len(data) > _OPML_MAX_BYTES:
        raise ConfigError(source, None, f"OPML file is larger than {_OPML_MAX_BYTES} bytes")
    if b"<!ENTITY" in data:
        # Entity declarations are how XML bombs and external-file tricks start; OPML needs none.
        raise ConfigError(source, "DOCTYPE", "DTD entity declarations are not allowed in OPML")
    parser = etree.XMLParser(
        resolve_entities=False,
        no_network=True,
        load_dtd=False,
        dtd_validation=False,
        huge_tree=False,
        remove_comments=True,
        remove_pis=True,
    )
    try:
        root = etree.fromstring(data, parser)
    except etree.XMLSyntaxError as exc:
        line = getattr(exc, "lineno", None)
        raise ConfigError(
            source, f"line {line}" if line else None, f"not readable as OPML (XML): {exc.msg}"
        ) from exc
    except ValueError as exc:
        raise ConfigError(source, None, f"not readable as OPML (XML): {exc}") from exc
    docinfo = root.getroottree().docinfo
    dtd = docinfo.internalDTD
    # (lxml-stubs lag behind lxml: DTD.iterentities/iterelements exist since lxml 3.x.)
    if dtd is not None and (
        list(dtd.iterentities()) or list(dtd.iterelements())  # type: ignore[union-attr]
    ):
        # Same rule for documents whose encoding hid the declarations from the byte check.
        raise ConfigError(source, "DOCTYPE", "DTD declarations are not allowed in OPML")
    if not isinstance(root.tag, str) or etree.QName(root).localname.lower() != "opml":
        raise ConfigError(source, None, "not an OPML document (the root element is not <opml>)")
    return root


def opml_import(data: bytes, source: str, skipped: list[str] | None = None) -> list[FeedSettings]:
    """The subscriptions in an OPML file, in document order, one per feed URL.

    Outlines without an `xmlUrl` are folders (their name becomes a tag of every feed inside
    them) or notes (skipped). `category` attributes add tags. A URL listed twice is kept once,
    with the union of its tags. Raises `ConfigError(source, key, problem)` when the file
    cannot be read safely; an outline whose feed URL is not http(s) raises too, unless
    `skipped` is given: then the outline is left out and why (with its line) appended there.
    """
    root = _parse_opml(data, source)
    body = next((c for c in root if isinstance(c.tag, str) and c.tag.lower() == "body"), None)
    if body is None:
        raise ConfigError(source, None, "not an OPML document (no <body>)")

    found: dict[str, tuple[str, str | None, list[str]]] = {}
    number = 0

    def walk(parent: etree._Element, folders: tuple[str, ...]) -> None:
        nonlocal number
        for outline in parent:
            if not isinstance(outline.tag, str) or outline.tag.lower() != "outline":
                continue
            number += 1
            name = _line(_attr(outline, "title")) or _line(_attr(outline, "text"))
            raw_url = _attr(outline, "xmlUrl")
            if raw_url is None or not raw_url.strip():
                walk(outline, folders + ((name,) if name else ()))
                continue
            url = safe_url(_line(raw_url))
            if url is None:
                problem = f"xmlUrl is not an http(s) URL: {_line(raw_url)[:200]!r}"
                if skipped is None:
                    raise ConfigError(source, f"outline {number}", problem)
                line = f" (line {outline.sourceline})" if outline.sourceline else ""
                skipped.append(f"outline {number}{line}: {problem}")
                continue
            tags = list(folders)
            for category in (_attr(outline, "category") or "").split(","):
                tag = _line(category).strip("/")
                if tag:
                    tags.append(tag)
            key = _url_key(url)
            if key in found:
                found[key][2].extend(tags)
            else:
                found[key] = (url, name if name and name != url else None, tags)
            walk(outline, folders)  # feeds nested under a feed are rare but legal

    walk(body, ())
    return [
        FeedSettings(url=url, title=name, tags=tuple(dict.fromkeys(tags)))
        for url, name, tags in found.values()
    ]


def _url_key(url: str) -> str:
    """Scheme and host are case-insensitive; the rest of a feed URL is not."""
    parts = urlsplit(url)
    return parts._replace(scheme=parts.scheme.lower(), netloc=parts.netloc.lower()).geturl()


# --- TOML for imported feeds ----------------------------------------------------------------

_TOML_ESCAPES = {
    "\\": "\\\\",
    '"': '\\"',
    "\b": "\\b",
    "\t": "\\t",
    "\n": "\\n",
    "\f": "\\f",
    "\r": "\\r",
}


def _toml_string(value: str) -> str:
    out = []
    for ch in value:
        if ch in _TOML_ESCAPES:
            out.append(_TOML_ESCAPES[ch])
        elif unicodedata.category(ch) == "Cc" or ch == "\x7f":
            out.append(f"\\u{ord(ch):04X}")
        elif 0xD800 <= ord(ch) <= 0xDFFF:
            continue  # a lone surrogate cannot be written as UTF-8 at all
        else:
            out.append(ch)
    return '"' + "".join(out) + '"'


def _toml_lines(feed: FeedSettings) -> Iterable[str]:
    yield "[[feeds]]"
    yield f"url = {_toml_string(feed.url)}"
    if feed.title:
        yield f"title = {_toml_string(feed.title)}"
    if feed.tags:
        yield f"tags = [{', '.join(_toml_string(t) for t in feed.tags)}]"
    if feed.interval is not None:
        yield f"interval = {int(feed.interval)}"


def feeds_toml(feeds: Sequence[FeedSettings]) -> str:
    """A TOML fragment of `[[feeds]]` tables for these feeds (strings escaped for TOML)."""
    return "\n".join("\n".join(_toml_lines(feed)) + "\n" for feed in feeds)
