"""Raw entries → clean `Entry` records; the only module that uses nh3.

Pure: no I/O, no clock (`now` is a parameter), deterministic for the same input.

Conventions a reader of the database can rely on:

- `guid` is the feed's own id exactly as given (control characters and surrounding
  whitespace removed), else the
  canonical link, else ``"hash:" + blake2b(title, date as given, summary)``; the n-th repeat of
  an id inside one feed becomes ``"<id>#<n>"``. Ids over 2,048 characters are replaced by
  ``"long-id:" + blake2b(id)``.
- Canonical URLs keep the query parameters in the publisher's order (re-ordering can change
  what some servers return), drop tracking parameters, fragments, user info and default ports.
- `title` is plain text of at most 1,024 characters; `summary` and `content` are sanitised
  HTML (inputs over 1,000,000 characters are cut before sanitising); `text` is at most
  200,000 characters.
- `content_hash` covers title + text with clock times and dates masked, so a body that only
  restates "updated 10:42" on every poll keeps its hash and does not churn.
"""

from __future__ import annotations

import hashlib
import html
import re
import unicodedata
from dataclasses import replace
from datetime import UTC, datetime
from urllib.parse import quote, unquote, urljoin, urlsplit, urlunsplit

import nh3

from aggregator.model import Enclosure, Entry, ParsedFeed, RawEntry

MAX_TITLE_CHARS = 1024
MAX_HTML_CHARS = 1_000_000  # of a summary or content read from the feed
# Of a summary or content as stored, counted after sanitising: nh3 can make HTML ~11x longer
# (every <a> gains rel="noopener noreferrer"), so the input cap alone bounds nothing.
MAX_STORED_HTML_CHARS = 500_000
MAX_TEXT_CHARS = 200_000
MAX_URL_CHARS = 8192
MAX_ID_CHARS = 2048
MAX_SHORT_CHARS = 256  # author, category, language
MAX_ENCLOSURES = 8  # files kept per entry (a podcast episode has one; a gallery a few)
MAX_MEDIA_URL_CHARS = 2048

# fmt: off
TRACKING_PARAMS = frozenset(
    {
        "fbclid", "gclid", "gclsrc", "dclid", "msclkid", "yclid", "twclid", "igshid",
        "mc_cid", "mc_eid", "_hsenc", "_hsmi", "__hssc", "__hstc", "__hsfp", "hsctatracking",
        "mkt_tok", "oly_anon_id", "oly_enc_id", "vero_id", "vero_conv", "wickedid",
        "_ga", "_gl", "s_cid", "ref_src", "ref_url", "spm", "cmpid", "ocid", "ncid",
        "sr_share", "at_medium", "at_campaign", "rss_campaign",
    }
)
# fmt: on
TRACKING_PREFIXES = ("utm_", "pk_", "mtm_", "itm_")

_DEFAULT_PORTS = {"http": 80, "https": 443}
_HOST_OK = re.compile(r"^(?:[\w-]+(?:\.[\w-]+)*|[0-9a-fA-F:.]*:[0-9a-fA-F:.]*)$")
# Characters a URL path/query may carry unescaped; `%` stays so escaping is idempotent.
_PATH_SAFE = "/%:@!$&'()*+,;=~-._"
_QUERY_SAFE = _PATH_SAFE + "?"
_PERCENT_ESCAPE = re.compile(r"%([0-9a-fA-F]{2})")
_BAD_PERCENT = re.compile(r"%(?![0-9a-fA-F]{2})")

# C0/C1 controls except tab/newline/carriage return, lone surrogates, non-characters.
# Control characters, lone surrogates, non-characters; and the bidi embeddings, overrides and
# isolates (U+202A-202E, U+2066-2069) and the BOM / zero-width no-break space (U+FEFF), which
# let a title display as something other than what it says ("Trojan Source").
_CONTROL = re.compile(
    "[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f\ud800-\udfff\ufdd0-\ufdef\ufffe\uffff"
    "\u202a-\u202e\u2066-\u2069\ufeff]"
)
# Block-level tags: their boundaries become spaces in plain text ("<p>a</p><p>b</p>" → "a b").
# fmt: off
_BLOCK_TAG_NAMES = frozenset(
    {
        "p", "div", "br", "hr", "li", "ul", "ol", "dl", "dt", "dd", "h1", "h2", "h3", "h4", "h5",
        "h6", "tr", "td", "th", "table", "thead", "tbody", "tfoot", "caption", "blockquote", "pre",
        "section", "article", "aside", "header", "footer", "nav", "figure", "figcaption",
        "address", "img", "details", "summary", "main", "option", "title",
    }
)
# fmt: on
_BLOCK_TAG = re.compile(r"<(?=/?(?:" + "|".join(sorted(_BLOCK_TAG_NAMES)) + r")\b)", re.IGNORECASE)
# A tag as nh3 (html5ever) serialises it: a lower-case name, attributes with values in double
# quotes (which may hold '<' and '>'); in its text '<' and '>' are always escaped.
_SERIALISED_TAG = re.compile(r'</?([a-z][a-z0-9]*)(?:\s+[^\s"\'<>/=]+(?:="[^"]*")?)*\s*/?>')
# An <img> tag (bounded by the next '<' so a missing '>' cannot make this quadratic).
_IMG_TAG = re.compile(r"<img\b[^<>]*>", re.IGNORECASE)
_PIXEL_SIZE = re.compile(r"""\b(?:width|height)\s*=\s*["']?\s*[01](?:px)?\s*(?:["'\s/>])""", re.I)
# Tracker image URLs: feeds.feedburner.com/~r/ and /~ff/, pixel.wp.com/, stats.wordpress.com/,
# google-analytics.com/, pixel.quantserve.com/, doubleclick.net/, /pixel.gif, /tracking.gif,
# /beacon.gif, /open.gif. Only searched for; the lookahead on the first characters lets most
# positions fail at one test instead of ten (three times faster than the plain alternation).
_TRACKER_SRC = re.compile(
    r"(?=[fpsgd/])(?:feeds\.feedburner\.com/~(?:r|ff)/|pixel\.(?:wp|quantserve)\.com/"
    r"|stats\.wordpress\.com/|google-analytics\.com/|doubleclick\.net/"
    r"|/(?:pixel|tracking|beacon|open)\.gif)",
    re.IGNORECASE,
)
_URL_ATTRIBUTES = frozenset({"href", "src", "cite", "longdesc", "usemap", "action"})
_SAFE_URL_SCHEMES = frozenset({"http", "https", "mailto"})
# Volatile tokens masked before hashing: 10:42, 10:42:07, 2024-05-01, 01/05/2024, "5 minutes ago".
# Every form starts at a word boundary with a digit. That first digit comes first in the pattern
# and the boundary is checked after it ("(?<!\w.)": the character before the digit is not a word
# character), so `re` can skip to the next digit instead of trying four alternatives at every
# position: the same matches as "\b\d{1,2}:...|\b\d{4}-...|...", four times faster.
_VOLATILE = re.compile(
    r"\d(?<!\w.)(?:"
    r"\d?:\d{2}(?::\d{2})?(?:\s?[ap]\.?m\.?)?\b"
    r"|\d{3}-\d{2}-\d{2}(?:[T ]\d{2}:\d{2}(?::\d{2}(?:\.\d+)?)?(?:Z|[+-]\d{2}:?\d{2})?)?\b"
    r"|\d?/\d{1,2}/\d{2,4}\b"
    r"|\d*\s+(?:second|minute|hour|day)s?\s+ago\b)",
    re.IGNORECASE,
)


# --------------------------------------------------------------------------------------------
# strings


def clean_string(value: str) -> str:
    """Remove NUL, control characters, lone surrogates and non-characters; return Unicode NFC."""
    value = _CONTROL.sub("", value)
    return unicodedata.normalize("NFC", value)


def _collapse(value: str) -> str:
    """Runs of whitespace as one space, none at the ends.

    `str.split()` splits on exactly the characters `re`'s `\\s` matches in a str pattern
    (`str.isspace`, 29 code points), and `str.strip()` removes the same ones, so this equals
    `re.sub(r"\\s+", " ", value).strip()` and costs a third of it on long texts."""
    return " ".join(value.split())


def _short(value: str | None, limit: int = MAX_SHORT_CHARS) -> str | None:
    if value is None:
        return None
    cleaned = _collapse(clean_string(value))[:limit].strip()
    return cleaned or None


# --------------------------------------------------------------------------------------------
# URLs


def canonical_url(url: str, base: str | None = None) -> str | None:
    """The canonical absolute http(s) form of `url` (resolved against `base`), or None.

    Lower-case scheme and host, no user info, no default port, no fragment, no tracking
    parameters; other query parameters kept in their original order; unsafe characters
    percent-escaped with upper-case hex. Anything that is not http(s) gives None.
    """
    if not isinstance(url, str):
        return None
    url = _CONTROL.sub("", url).strip()
    if not url or len(url) > MAX_URL_CHARS:
        return None
    try:
        if base:
            base = _CONTROL.sub("", base).strip()
            if len(base) <= MAX_URL_CHARS:
                url = urljoin(base, url)
        parts = urlsplit(url)
        scheme = parts.scheme.lower()
        if scheme not in _DEFAULT_PORTS:
            return None
        host = (parts.hostname or "").rstrip(".")
        if not host or not _HOST_OK.match(host):
            return None
        if ":" in host:  # IPv6 literal; urlsplit hands it back without brackets
            host = f"[{host}]"
        port = parts.port
    except ValueError:
        return None
    host = host.lower()
    netloc = host if port in (None, _DEFAULT_PORTS[scheme]) else f"{host}:{port}"
    path = _escape(parts.path, _PATH_SAFE) or "/"
    query = _canonical_query(parts.query)
    result = urlunsplit((scheme, netloc, path, query, ""))
    return result if len(result) <= MAX_URL_CHARS else None


def _escape(value: str, safe: str) -> str:
    value = _BAD_PERCENT.sub("%25", value)
    value = quote(value, safe=safe)
    return _PERCENT_ESCAPE.sub(lambda m: "%" + m.group(1).upper(), value)


def _is_tracking(key: str) -> bool:
    key = unquote(key).strip().lower()
    return key in TRACKING_PARAMS or key.startswith(TRACKING_PREFIXES)


def _canonical_query(query: str) -> str:
    kept = []
    for pair in query.split("&"):
        if not pair:
            continue
        key = pair.split("=", 1)[0]
        if _is_tracking(key):
            continue
        kept.append(_escape(pair, _QUERY_SAFE))
    return "&".join(kept)


# --------------------------------------------------------------------------------------------
# HTML


def plain_text(fragment: str) -> str:
    """Readable plain text of an HTML fragment: tags gone, entities decoded, whitespace collapsed.

    Script and style bodies are dropped; block elements separate words with a space.
    """
    if not fragment:
        return ""
    fragment = clean_string(fragment)
    if "<" not in fragment and "&" not in fragment:
        return _collapse(fragment)
    spaced = _BLOCK_TAG.sub(" <", fragment)
    text = nh3.clean(
        spaced,
        tags=set(),
        clean_content_tags={"script", "style", "template", "noscript", "iframe", "object"},
        attributes={},
        strip_comments=True,
    )
    return _collapse(clean_string(html.unescape(text)))


def _sanitised_plain_text(sanitised: str) -> str:
    """`plain_text` of `sanitise_html` output, without parsing it a second time.

    `sanitised` is html5ever's serialisation, already through `clean_string`: every '<'
    outside an attribute value opens a tag, text holds only the entities &amp; &lt; &gt; &nbsp;,
    and there are no comments, scripts or styles. Replacing each tag by what `plain_text` leaves
    of it (a space for a block tag) and decoding the entities gives what nh3 gives. Anything
    else (a '<' left over, e.g. after NFC merged a '>' with a combining character) goes through
    nh3. The result is always `plain_text(sanitised)`; tests check it on hostile input.
    """
    if "<" not in sanitised and "&" not in sanitised:
        return _collapse(sanitised)
    text = _SERIALISED_TAG.sub(_tag_gap, sanitised)
    if "<" in text:
        return plain_text(sanitised)
    # Decoding those entities adds no control character, so of clean_string only NFC is left
    # to do ("&gt;" next to a combining mark can compose).
    return _collapse(unicodedata.normalize("NFC", html.unescape(text)))


def _tag_gap(tag: re.Match[str]) -> str:
    """What a serialised tag leaves in plain text: a space for a block tag, else nothing."""
    return " " if tag.group(1) in _BLOCK_TAG_NAMES else ""


def _capped_html(html: str, base_url: str | None) -> str:
    """Sanitised HTML cut to `MAX_STORED_HTML_CHARS`: cut, then sanitised again, which closes
    what the cut left open and drops a half tag; shortened further if that grew it back."""
    limit = MAX_STORED_HTML_CHARS
    while len(html) > MAX_STORED_HTML_CHARS:
        limit = limit * 3 // 4
        html = sanitise_html(html[:limit], base_url)
    return html


def sanitise_html(fragment: str, base_url: str | None = None) -> str:
    """Safe HTML for output: no scripts, styles, event handlers, frames, javascript:/data:
    URLs or tracking pixels; relative URLs resolved against `base_url` when given."""
    if not fragment:
        return ""
    fragment = clean_string(fragment)
    if "<" in fragment:
        fragment = _IMG_TAG.sub(_drop_pixel, fragment)

    def attribute_filter(tag: str, attribute: str, value: str) -> str | None:
        if attribute not in _URL_ATTRIBUTES:
            return value
        if tag == "img" and attribute == "src" and _TRACKER_SRC.search(value):
            return None
        return _safe_attribute_url(value, base_url)

    cleaned = nh3.clean(
        fragment,
        clean_content_tags={"script", "style", "template", "noscript", "iframe", "object"},
        url_schemes=set(_SAFE_URL_SCHEMES),
        attribute_filter=attribute_filter,
        strip_comments=True,
    )
    return clean_string(cleaned).strip()


def _drop_pixel(match: re.Match[str]) -> str:
    tag = match.group(0)
    if len(_PIXEL_SIZE.findall(tag)) >= 2 or _TRACKER_SRC.search(tag):
        return ""
    return tag


def _safe_attribute_url(value: str, base_url: str | None) -> str | None:
    value = value.strip()
    if not value:
        return None
    try:
        scheme = urlsplit(value).scheme.lower()
    except ValueError:
        return None
    if scheme == "mailto":
        return value
    if scheme and scheme not in _DEFAULT_PORTS:
        return None
    if scheme and "?" not in value and "#" not in value and " " not in value:
        return value  # an absolute http(s) link with nothing to strip: the common case, fast
    if base_url:
        return canonical_url(value, base_url)
    if scheme:
        return canonical_url(value)
    return value  # relative and nothing to resolve against: harmless


# --------------------------------------------------------------------------------------------
# entries


def normalise_entries(parsed: ParsedFeed, feed_url: str, now: datetime) -> list[Entry]:
    """Clean every entry of `parsed`: identity, canonical link, UTC dates, plain text, safe HTML.

    `now` is when the entries were first seen: it fills missing dates and caps future ones.
    """
    if now.tzinfo is None:
        now = now.replace(tzinfo=UTC)
    now = now.astimezone(UTC)
    feed_language = _short(parsed.language, 35)
    entries = []
    seen: dict[str, int] = {}
    for raw in parsed.entries:
        entry = _normalise_entry(raw, feed_url, now, feed_language)
        guid = entry.guid
        if guid in seen:
            count = seen[guid]
            while True:
                count += 1
                candidate = f"{guid}#{count}"
                if candidate not in seen:
                    break
            seen[guid] = count
            seen[candidate] = 1
            entry = replace(entry, guid=candidate)
        else:
            seen[guid] = 1
        entries.append(entry)
    return entries


def _utc(value: datetime | None, now: datetime) -> datetime | None:
    if value is None:
        return None
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    try:
        value = value.astimezone(UTC)
    except (OverflowError, ValueError):
        return None
    if value.year < 1970:  # "0001-01-01" and friends: a placeholder, not a date
        return None
    return min(value, now)


def _digest(*parts: str) -> str:
    digest = hashlib.blake2b(digest_size=16)
    for part in parts:
        digest.update(part.encode("utf-8", "surrogatepass"))
        digest.update(b"\x1f")
    return digest.hexdigest()


def _identity(raw: RawEntry, link: str | None) -> str:
    if raw.guid is not None:
        guid = clean_string(raw.guid).strip()
        if guid:
            if len(guid) > MAX_ID_CHARS:
                return "long-id:" + _digest(guid)
            return guid
    if link:
        return link
    date = raw.published or raw.updated
    return "hash:" + _digest(
        raw.title or "", date.isoformat() if date else "", raw.summary or raw.content or ""
    )


def _normalise_entry(
    raw: RawEntry, feed_url: str, now: datetime, feed_language: str | None
) -> Entry:
    link = canonical_url(raw.link, feed_url) if raw.link else None
    base = link or feed_url
    title = plain_title(raw.title or "")
    summary = _capped_html(sanitise_html((raw.summary or "")[:MAX_HTML_CHARS], base), base)
    content = _capped_html(sanitise_html((raw.content or "")[:MAX_HTML_CHARS], base), base)
    summary_text = _sanitised_plain_text(summary)
    content_text = _sanitised_plain_text(content)
    parts: tuple[str, ...]
    if content_text.startswith(summary_text):
        parts = (title, content_text)  # the summary is the content's lead: say it once
    else:
        parts = (title, summary_text, content_text)
    # Each part is already collapsed, so joining the non-empty ones with a space is what
    # collapsing their concatenation would give, without another pass over the text.
    text = " ".join(part for part in parts if part)[:MAX_TEXT_CHARS]
    published = _utc(raw.published, now) or _utc(raw.updated, now) or now
    categories = tuple(dict.fromkeys(c for c in (_short(c, 100) for c in raw.categories) if c))
    enclosures = _enclosures(raw.enclosures, base)
    image = _media_url(raw.image, base) if raw.image else None
    # A new or replaced file (a podcast's re-cut episode, a new lead image) is a change of the
    # entry; an entry without media hashes as before.
    media = tuple(e.url for e in enclosures) + ((image,) if image else ())
    return Entry(
        guid=_identity(raw, link),
        link=link,
        title=title,
        summary=summary,
        content=content,
        text=text,
        published=published,
        updated=_utc(raw.updated, now),
        author=_short(raw.author),
        language=_short(raw.language, 35) or feed_language,
        content_hash=content_hash(title, text, media),
        categories=categories[:50],
        enclosures=enclosures,
        image=image,
    )


# A media type as RFC 6838 writes one ("audio/mpeg", "application/vnd.apple.mpegurl").
_MEDIA_TYPE = re.compile(r"[a-z0-9][a-z0-9!#$&^_.+-]{0,62}/[a-z0-9][a-z0-9!#$&^_.+-]{0,62}")


def _media_url(value: str, base: str) -> str | None:
    """An enclosure's or image's URL made absolute against the entry's link (or the feed's
    URL): http(s) only, no credentials, no spaces or control characters, at most
    `MAX_MEDIA_URL_CHARS`; the query is kept whole (media URLs are often signed). None when
    it is none of that, or a tracking pixel."""
    value = value.strip()
    if not value or len(value) > MAX_MEDIA_URL_CHARS or not value.isprintable() or " " in value:
        return None
    try:
        url = urljoin(base, value)
        parts = urlsplit(url)
    except ValueError:
        return None
    if parts.scheme.lower() not in ("http", "https") or not parts.hostname:
        return None
    if parts.username is not None or parts.password is not None or _TRACKER_SRC.search(url):
        return None
    return url if len(url) <= MAX_MEDIA_URL_CHARS else None


def _enclosures(raw: tuple[Enclosure, ...], base: str) -> tuple[Enclosure, ...]:
    """The entry's files with safe absolute URLs, each once, at most `MAX_ENCLOSURES`; a media
    type that is not one (lower-cased, parameters dropped) and a length that is not a
    positive byte count are left out, the file kept."""
    kept: dict[str, Enclosure] = {}
    for item in raw:
        url = _media_url(item.url, base)
        if url is None or url in kept:
            continue
        media_type = (item.media_type or "").split(";")[0].strip().lower()
        length = item.length if item.length is not None and 0 < item.length < 2**53 else None
        kept[url] = Enclosure(
            url, media_type if _MEDIA_TYPE.fullmatch(media_type) else None, length
        )
        if len(kept) == MAX_ENCLOSURES:
            break
    return tuple(kept.values())


_MARKUP = re.compile(r"</?[a-zA-Z][a-zA-Z0-9]*(?:\s[^<>]*)?/?>")


def plain_title(fragment: str) -> str:
    """A title as plain text, at most MAX_TITLE_CHARS; markup escaped twice is removed too."""
    title = plain_text(fragment[: MAX_TITLE_CHARS * 64])
    if _MARKUP.search(title):  # a title escaped twice (or CDATA holding HTML) is still markup
        title = plain_text(title)
    return title[:MAX_TITLE_CHARS].strip()


def content_hash(title: str, text: str, media: tuple[str, ...] = ()) -> str:
    """Hex digest of the meaningful content (with the URLs of its files and lead image, when it
    has any); clock times and dates do not count."""
    return _digest(_VOLATILE.sub("#", title), _VOLATILE.sub("#", text), *media)
