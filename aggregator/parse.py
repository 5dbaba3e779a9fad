"""Feed bytes + response headers → `ParsedFeed`; the only module that uses feedparser.

Every route out of `parse_feed` is either a `ParsedFeed` or a `ParseError`: feedparser's own
exceptions, a JSON decoder's, or an encoding error never escape. The function is pure (no I/O,
no clock) and its arguments and result pickle, so the pipeline can run it in a worker process
with a time limit.

What is done *before* feedparser sees the bytes, and why:

- size cap: `max_bytes` (20 MiB by default) bounds memory;
- compressed bodies are refused, never inflated: fetch hands over decoded bytes, so gzip or
  zlib magic here means a file:// feed or a confused server, and inflating it could be a bomb;
- numeric character references that are not XML characters (`&#0;`, `&#xD800;`, `&#x110000;`,
  `&#xFFFFFFFF;`) are removed, because feedparser 6.0.14 *raises* on some of them;
- internal entities whose total expansion would exceed `_MAX_ENTITY_EXPANSION` are dropped
  (feedparser already refuses nested and external entities, but one 100 KB entity used 1,000
  times is still a 100 MB "quadratic blowup");
- UTF-16 without BOM and without an XML declaration is recognised and transcoded.

External entities and DTDs are never read: feedparser strips the DOCTYPE, re-declares only
entities whose value is plain text, and turns off `feature_external_ges` on the SAX parser
(expat; the optional libxml2 driver is not installed). `tests/test_corpus.py` checks this
with the XXE corpus.
"""

from __future__ import annotations

import calendar
import html
import io
import json
import logging
import re
from collections.abc import Callable, Mapping
from dataclasses import replace
from datetime import UTC, datetime
from typing import Any

import feedparser  # untyped: listed in [tool.mypy] overrides

from aggregator.errors import ParseError
from aggregator.model import Enclosure, FailureKind, ParsedFeed, RawEntry

DEFAULT_MAX_BYTES = 20 * 1024 * 1024
# Entries kept of one feed document: the newest, when it holds more (a podcast's archive, an
# absurd or hostile feed). Older ones are in the database already or were never wanted.
MAX_ENTRIES_PER_DOCUMENT = 1000
# A document that looks like more items than this is not parsed at all: counting "<item" /
# "<entry" (or "{" in JSON) first stops a million-item document before feedparser or json
# builds it (a 3 MB JSON Feed of 1,000,000 {} took a worker past 1 GiB).
MAX_ITEMS_IN_DOCUMENT = 20_000
_MAX_JSON_OBJECTS = 10 * MAX_ITEMS_IN_DOCUMENT

# feedparser's author-email regex is quadratic in the length of a plain-text author field
# (30,000 characters take 12 s). Real author fields are short; longer ones are cut before the
# regex sees them.
_MAX_AUTHOR_CHARS = 256

# Total characters internal entity references may add to the document.
_MAX_ENTITY_EXPANSION = 1024 * 1024
# Each declaration costs one scan of the body when its expansion is counted.
_MAX_ENTITY_DECLARATIONS = 256

_JSON_FEED_VERSION = re.compile(r"^https?://jsonfeed\.org/version/1(\.\d+)?/?$")
# A numeric character reference that may not be an XML character. The lookahead skips the ones
# that always are: 32..9999 in decimal and 0x20..0xD7FF in hex, without leading zeros (nearly
# every real one, &#8217; &#x2019;), so the Python check runs for the rare rest only.
_CHARREF = re.compile(
    rb"&#(?!(?:3[2-9]|[4-9][0-9]|[1-9][0-9]{2,3}"
    rb"|[xX](?:[2-9a-fA-F][0-9a-fA-F]|[1-9a-fA-F][0-9a-fA-F]{2}|[1-9a-cA-C][0-9a-fA-F]{3}"
    rb"|[dD][0-7][0-9a-fA-F]{2}));)"
    rb"(?:[xX]([0-9a-fA-F]+)|([0-9]+));"
)
_FIRST_ELEMENT = re.compile(rb"<[A-Za-z_]")
_ENTITY_DECL = re.compile(rb"<!ENTITY\s+(%\s+)?([\w.:-]+)\s+(\"[^\"]*\"|'[^']*'|[^>]*)>")
_DOCTYPE = re.compile(rb"<!DOCTYPE(?:[^\[>]*\[.*?\]\s*>|[^>]*>)", re.DOTALL)

# sy:updatePeriod in seconds (RSS 1.0 syndication module).
_UPDATE_PERIODS = {
    "hourly": 3600,
    "daily": 86400,
    "weekly": 7 * 86400,
    "monthly": 30 * 86400,
    "yearly": 365 * 86400,
}


def parse_feed(
    body: bytes,
    headers: Mapping[str, str],
    url: str,
    *,
    max_bytes: int = DEFAULT_MAX_BYTES,
) -> ParsedFeed:
    """Turn a response body into a `ParsedFeed`, or raise `ParseError` when nothing usable is there.

    `headers` are the final response's headers (any case); `url` is the final URL, used as the
    base for relative links. Recoverable problems (bozo feeds) are recorded in `problem`.
    """
    if len(body) > max_bytes:
        raise ParseError(url, f"body is {len(body):,} bytes, over the {max_bytes:,} byte cap")
    if not body.strip():
        raise ParseError(url, "empty body: not a feed")
    if body[:2] == b"\x1f\x8b" or body[:2] in (b"\x78\x01", b"\x78\x5e", b"\x78\x9c", b"\x78\xda"):
        raise ParseError(
            url, "body is compressed (gzip/zlib); it must be decoded before parsing, not here"
        )
    lower_headers = {str(k).lower(): str(v) for k, v in headers.items()}
    try:
        if _looks_like_json(body, lower_headers):
            objects = body.count(b"{")
            if objects > _MAX_JSON_OBJECTS:
                raise ParseError(
                    url,
                    f"the JSON holds {objects:,} objects, more than "
                    f"{MAX_ITEMS_IN_DOCUMENT:,} items could need; not parsed",
                    kind=FailureKind.TOO_LARGE,
                )
            return _newest(_parse_json_feed(body, url))
        items = body.count(b"<item") + body.count(b"<entry")
        if items > MAX_ITEMS_IN_DOCUMENT:
            raise ParseError(
                url,
                f"the document holds about {items:,} items, more than the "
                f"{MAX_ITEMS_IN_DOCUMENT:,} a feed may; not parsed",
                kind=FailureKind.TOO_LARGE,
            )
        return _newest(_parse_xml_feed(body, lower_headers, url))
    except ParseError:
        raise
    except (RecursionError, MemoryError) as exc:
        raise ParseError(
            url, f"feed is too deeply nested or too large: {type(exc).__name__}"
        ) from exc
    except Exception as exc:  # the boundary: nothing but ParseError leaves this function
        raise ParseError(url, f"cannot parse feed: {type(exc).__name__}: {exc}"[:500]) from exc


def _newest(parsed: ParsedFeed) -> ParsedFeed:
    """At most `MAX_ENTRIES_PER_DOCUMENT` entries: the newest by date (undated ones count as
    oldest), in document order."""
    entries = parsed.entries
    if len(entries) <= MAX_ENTRIES_PER_DOCUMENT:
        return parsed
    oldest = datetime.min.replace(tzinfo=UTC)

    def when(i: int) -> tuple[datetime, int]:
        e = entries[i]
        moment = e.published or e.updated
        if moment is not None and moment.tzinfo is None:
            moment = moment.replace(tzinfo=UTC)
        return (moment or oldest, -i)  # ties: earlier in the document is newer

    keep = sorted(sorted(range(len(entries)), key=when, reverse=True)[:MAX_ENTRIES_PER_DOCUMENT])
    note = f"{len(entries):,} entries in the document; kept the newest {MAX_ENTRIES_PER_DOCUMENT:,}"
    return replace(
        parsed,
        entries=tuple(entries[i] for i in keep),
        problem="; ".join(p for p in (parsed.problem, note) if p),
    )


# --------------------------------------------------------------------------------------------
# XML through feedparser


def _parse_xml_feed(body: bytes, headers: dict[str, str], url: str) -> ParsedFeed:
    problems: list[str] = []
    data, headers = _transcode_bomless_utf16(body, headers, problems)
    data = _drop_invalid_charrefs(data, problems)
    data = _limit_entity_expansion(data, problems)

    fp_headers = dict(headers)
    fp_headers["content-location"] = url
    fp_headers.pop("content-encoding", None)  # the bytes are already decoded
    fp_headers.setdefault("content-type", "application/xml")

    _tune_feedparser()
    try:
        result = _feedparser_parse(data, fp_headers)
    except Exception as first:
        # feedparser can still raise on DOCTYPE tricks (a backslash in an entity value makes
        # its re.sub fail); retry once without any DOCTYPE before giving up.
        stripped = _strip_doctype(data)
        if stripped == data:
            raise
        problems.append(f"DOCTYPE removed after feedparser failed ({type(first).__name__})")
        result = _feedparser_parse(stripped, fp_headers)

    entries_in = result.get("entries") or []
    feed_in = result.get("feed") or {}
    version = result.get("version") or ""
    if not entries_in and not version:
        why = result.get("bozo_exception")
        detail = f" ({type(why).__name__}: {why})" if why else ""
        raise ParseError(
            url,
            f"not a feed: no RSS, Atom or JSON Feed found{detail}"[:500],
            kind=FailureKind.NOT_A_FEED,
        )

    if result.get("bozo"):
        exc = result.get("bozo_exception")
        # A missing or odd Content-Type is not a problem of the feed worth recording.
        if exc is not None and type(exc).__name__ != "NonXMLContentType":
            problems.append(f"{type(exc).__name__}: {exc}"[:300])

    feed_language = _text(feed_in.get("language"))
    entries = tuple(_raw_entry(e) for e in entries_in)
    return ParsedFeed(
        title=_detail_html(feed_in, "title"),
        link=_text(feed_in.get("link")),
        language=feed_language,
        ttl=_feed_ttl(feed_in),
        entries=entries,
        problem="; ".join(problems) or None,
    )


def _feedparser_parse(data: bytes, headers: dict[str, str]) -> Any:
    # BytesIO, never bytes: feedparser treats a bare string as a URL or file name to open.
    # sanitize_html=False: normalise sanitises with nh3 (one sanitiser, and faster);
    # resolve_relative_uris only when the document uses xml:base: feedparser's sgmllib pass
    # is most of its time, and without xml:base normalise resolves relative links against
    # the entry link and feed URL just as well.
    return feedparser.parse(
        io.BytesIO(data),
        response_headers=headers,
        sanitize_html=False,
        resolve_relative_uris=b"xml:base" in data,
    )


_feedparser_tuned = False
log = logging.getLogger(__name__)

# The feedparser internals `_tune_feedparser` replaces or wraps (feedparser 6.0.14, pinned):
# where they live and the attributes each must have.
_HOOKS: tuple[tuple[str, tuple[str, ...]], ...] = (
    (
        "mixin._FeedParserMixin",
        ("_sync_author_detail", "_get_context", "can_be_relative_uri", "push_content"),
    ),
    (
        "parsers.strict._StrictFeedParser",
        ("__init__", "startElementNS", "endElementNS"),
    ),
    ("mixin", ("_cp1252", "make_safe_absolute_uri")),
    ("util", ("FeedParserDict",)),
)


def missing_feedparser_hooks() -> list[str]:
    """The internals of `_HOOKS` this feedparser lacks ("mixin._FeedParserMixin.push_content")."""
    missing = []
    for path, names in _HOOKS:
        owner: Any = feedparser
        for part in path.split("."):
            owner = getattr(owner, part, None)
        if owner is None:
            missing.append(path)
            continue
        missing += [f"{path}.{name}" for name in names if not hasattr(owner, name)]
    return missing


def _tune_feedparser() -> None:
    """Changes to feedparser's parser classes, made once per process, all or none:

    - *semantic* (results differ): plain-text author fields are cut to `_MAX_AUTHOR_CHARS`
      before its email regex, which is quadratic in their length, runs on them; RSS guids are
      kept exactly as given (feedparser would resolve a permalink guid such as "item-7"
      against the feed URL, and an entry's identity must not depend on that);
    - *speed only* (same results; tests/test_parse.py parses every file of feedparser's own
      test corpus tuned and untuned and compares): the strict parser receives each run of
      text in one piece (`_coalesced_character_data`), the Windows-1252 fix-up is a table
      lookup (`_cp1252_table`), the xml:base of each element is not re-joined when it is the
      same as its parent's (`_last_call_remembered`), and the parameters of the text construct
      being read are a dict with dict's own lookups (`_plain_dict_content_params`).

    If an internal is missing (another feedparser) or a replacement cannot be built, nothing is
    changed: one error is logged and feedparser runs as shipped (slower, and relative RSS
    guids resolved), never a parse error on every feed."""
    global _feedparser_tuned
    if _feedparser_tuned:
        return
    _feedparser_tuned = True  # first: a failure below is reported once, not at every parse
    missing = missing_feedparser_hooks()
    if missing:
        log.error(
            "feedparser %s lacks %s: parsing without the aggregator's tuning (slower;"
            " relative RSS guids are resolved against the feed URL)",
            getattr(feedparser, "__version__", "?"),
            ", ".join(missing),
        )
        return
    try:
        apply = _feedparser_tuning()
    except Exception as exc:  # an internal of another shape: stay untuned, say so once
        log.error(
            "feedparser %s: cannot tune its parser (%s: %s); parsing without it",
            getattr(feedparser, "__version__", "?"),
            type(exc).__name__,
            exc,
        )
        return
    apply()


def _feedparser_tuning() -> Callable[[], None]:
    """Every replacement built first; the returned function only assigns them."""
    mixin = feedparser.mixin._FeedParserMixin
    original: Callable[..., None] = mixin._sync_author_detail

    def _sync_author_detail(self: Any, key: str = "author") -> None:
        context = self._get_context()
        value = context.get(key)
        if isinstance(value, str) and len(value) > _MAX_AUTHOR_CHARS:
            context[key] = value[:_MAX_AUTHOR_CHARS]
        original(self, key)

    relative = frozenset(mixin.can_be_relative_uri) - {"id"}
    strict = _coalesced_character_data(feedparser.parsers.strict._StrictFeedParser)
    table = _cp1252_table(feedparser.mixin._cp1252)
    join = _last_call_remembered(feedparser.mixin.make_safe_absolute_uri)
    push_content = _plain_dict_content_params(mixin, feedparser.util.FeedParserDict)

    def apply() -> None:
        mixin._sync_author_detail = _sync_author_detail
        mixin.can_be_relative_uri = relative
        for name, method in strict.items():
            setattr(feedparser.parsers.strict._StrictFeedParser, name, method)
        feedparser.mixin._cp1252 = table
        feedparser.mixin.make_safe_absolute_uri = join
        mixin.push_content = push_content

    return apply


def _last_call_remembered(
    make_safe_absolute_uri: Callable[[str, str | None], str],
) -> Callable[[str, str | None], str]:
    """feedparser's `make_safe_absolute_uri`, answering a repeat of the previous call at once.

    feedparser calls it at every element start to join the inherited base URI with the
    element's own xml:base, which is nearly always the same pair as for the element before
    (99% of 70,000 calls on 200 blog feeds); each call costs a regex and a `urljoin`. The
    function is pure, so the remembered answer is the answer. One (base, rel, result) tuple is
    kept, replaced as a whole, so threads cannot see a mixed pair.
    """
    last: tuple[Any, Any, str] | None = None

    def remembered(base: str, rel: str | None = None) -> str:
        nonlocal last
        previous = last
        if previous is not None and previous[0] == base and previous[1] == rel:
            return previous[2]
        result = make_safe_absolute_uri(base, rel)
        last = (base, rel, result)
        return result

    return remembered


def _plain_dict_content_params(
    mixin: Any, feedparser_dict: type[dict[str, Any]]
) -> Callable[..., None]:
    """feedparser's `contentparams` (type, mode, base64, src, value of the text construct being
    read) with dict's C lookups instead of FeedParserDict's Python ones.

    feedparser reads `contentparams['type']` and `['base64']` several times per element (about
    400,000 Python-level lookups on 200 blog feeds) and deep-copies it into each `*_detail`.
    FeedParserDict only differs from dict for its alias keys (`description`, `url`, `guid`, ...)
    and `category`/`enclosures`/`license`/`updated`, none of which feedparser ever uses as a
    content parameter, so dict's lookups give the same answers. The deep copy stored in the
    result is a plain FeedParserDict with the same (immutable) values, as before.
    """

    class ContentParams(feedparser_dict):  # type: ignore[misc, valid-type]
        get = dict.get
        __getitem__ = dict.__getitem__
        __setitem__ = dict.__setitem__

        def __deepcopy__(self, memo: dict[int, Any]) -> dict[str, Any]:
            return feedparser_dict(self)

    push_content = mixin.push_content

    def push_content_as_dict(self: Any, *args: Any, **kwargs: Any) -> None:
        push_content(self, *args, **kwargs)
        self.contentparams = ContentParams(self.contentparams)

    return push_content_as_dict


def _cp1252_table(mapping: Mapping[int, str]) -> tuple[int, ...]:
    """feedparser's C1 → Windows-1252 character map as a tuple indexed by code point.

    feedparser ends every element with `text.translate(_cp1252)`, a dict of 27 entries. On
    non-ASCII text `str.translate` looks every character up, and each one the dict lacks costs
    a KeyError raised and cleared: 1.7 s for the 25 million characters of 200 blog feeds. The
    tuple maps every code point below U+10000 (most to itself) so lookups never fail; it is
    2.5 times faster. Code points above U+FFFF are "not mapped", as they were with the dict, so
    the result is the same for every string.
    """
    table = list(range(0x10000))
    for code, char in mapping.items():
        table[code] = ord(char)
    return tuple(table)


def _coalesced_character_data(strict: Any) -> dict[str, Callable[..., None]]:
    """Methods that hand feedparser's strict (SAX) parser each run of text once, not chunk by
    chunk (to set on `strict`).

    expat reports text in many small pieces (each line, each entity reference), and every
    piece cost a `handle_data` call that reads `contentparams['type']` through FeedParserDict's
    slow Python lookups: 2.4 million calls, a third of the parse time, on 200 blog feeds.
    Pieces are collected and passed on as one string just before the next element starts or
    ends, or the document ends. The result is the same: only element events can change where
    text goes or how it is escaped, and the only escaping (`xml.sax.saxutils.escape`, for
    XHTML content) works character by character, so escaping the joined text equals joining
    the escaped pieces.
    """
    init = strict.__init__
    start_element = strict.startElementNS
    end_element = strict.endElementNS

    def __init__(self: Any, *args: Any, **kwargs: Any) -> None:
        self._text_pieces = []
        init(self, *args, **kwargs)

    def characters(self: Any, text: str) -> None:
        self._text_pieces.append(text)

    def flush_text(self: Any) -> None:
        pieces = self._text_pieces
        if pieces:
            self._text_pieces = []
            self.handle_data(pieces[0] if len(pieces) == 1 else "".join(pieces))

    def startElementNS(self: Any, name: Any, qname: Any, attrs: Any) -> None:  # noqa: N802
        flush_text(self)
        start_element(self, name, qname, attrs)

    def endElementNS(self: Any, name: Any, qname: Any) -> None:  # noqa: N802
        flush_text(self)
        end_element(self, name, qname)

    def endDocument(self: Any) -> None:  # noqa: N802
        flush_text(self)

    return {
        "__init__": __init__,
        "characters": characters,
        "startElementNS": startElementNS,
        "endElementNS": endElementNS,
        "endDocument": endDocument,
    }


def _transcode_bomless_utf16(
    body: bytes, headers: dict[str, str], problems: list[str]
) -> tuple[bytes, dict[str, str]]:
    """UTF-16 with neither BOM nor XML declaration: feedparser cannot tell; the NUL pattern can."""
    head = body[:4]
    if len(head) < 4 or head[:2] in (b"\xff\xfe", b"\xfe\xff"):
        return body, headers
    if head[0:1] == b"<" and head[1] == 0 and head[2] not in (0, ord("?")) and head[3] == 0:
        codec = "utf-16-le"
    elif head[0] == 0 and head[1:2] == b"<" and head[2] == 0 and head[3] not in (0, ord("?")):
        codec = "utf-16-be"
    else:
        return body, headers
    problems.append(f"no BOM or XML declaration; read as {codec.upper()}")
    text = body.decode(codec, errors="replace")
    media_type = headers.get("content-type", "application/xml").split(";")[0].strip()
    new_headers = dict(headers)
    new_headers["content-type"] = f"{media_type or 'application/xml'}; charset=utf-8"
    return text.encode("utf-8"), new_headers


def _is_xml_char(code: int) -> bool:
    return (
        code in (0x9, 0xA, 0xD)
        or 0x20 <= code <= 0xD7FF
        or 0xE000 <= code <= 0xFFFD
        or 0x10000 <= code <= 0x10FFFF
    )


def _drop_invalid_charrefs(data: bytes, problems: list[str]) -> bytes:
    if b"&#" not in data:
        return data
    dropped = 0

    def replace(match: re.Match[bytes]) -> bytes:
        nonlocal dropped
        hex_digits, dec_digits = match.group(1), match.group(2)
        digits = hex_digits or dec_digits
        # Long digit strings are out of range anyway; do not hand them to int().
        if len(digits.lstrip(b"0")) <= 8:
            code = int(digits, 16 if hex_digits else 10)
            if _is_xml_char(code):
                return match.group(0)
        dropped += 1
        return b""

    cleaned = _CHARREF.sub(replace, data)
    if dropped:
        problems.append(f"{dropped} character reference(s) to non-XML characters removed")
    return cleaned


def _prolog(data: bytes) -> tuple[bytes, bytes]:
    first = _FIRST_ELEMENT.search(data)
    cut = first.start() if first else len(data)
    return data[:cut], data[cut:]


def _limit_entity_expansion(data: bytes, problems: list[str]) -> bytes:
    prolog, rest = _prolog(data)
    if b"<!ENTITY" not in prolog:
        return data
    declarations = _ENTITY_DECL.findall(prolog)
    if len(declarations) > _MAX_ENTITY_DECLARATIONS:
        problems.append(
            f"{len(declarations)} entity declarations removed (limit {_MAX_ENTITY_DECLARATIONS})"
        )
        return _strip_doctype(data)
    expansion = 0
    for match in _ENTITY_DECL.finditer(prolog):
        name, value = match.group(2), match.group(3)
        expansion += max(len(value) - 2, 0) * rest.count(b"&" + name + b";")
        if expansion > _MAX_ENTITY_EXPANSION:
            problems.append("entity declarations removed: their expansion exceeds 1 MiB")
            return _strip_doctype(data)
    return data


def _strip_doctype(data: bytes) -> bytes:
    prolog, rest = _prolog(data)
    if b"<!DOCTYPE" not in prolog and b"<!ENTITY" not in prolog:
        return data
    prolog = _DOCTYPE.sub(b"", prolog)
    prolog = _ENTITY_DECL.sub(b"", prolog)
    return prolog + rest


def _get(container: Any, key: str) -> Any:
    """A value exactly as feedparser stored it: no key aliases, no `updated`→`published`
    fallback (which also emits a DeprecationWarning)."""
    if isinstance(container, dict):
        return dict.get(container, key)
    return None


def _text(value: Any) -> str | None:
    if isinstance(value, str):
        value = value.strip()
        return value or None
    return None


def _detail_html(container: Mapping[str, Any], key: str) -> str | None:
    """A text construct as HTML: escaped when feedparser says it is plain text."""
    value = _get(container, key)
    if not isinstance(value, str) or not value.strip():
        return None
    detail = _get(container, f"{key}_detail") or {}
    kind = str(_get(detail, "type") or "text/html")
    if "html" in kind:
        return value
    return html.escape(value, quote=False)


def _struct_to_datetime(value: Any) -> datetime | None:
    if value is None:
        return None
    try:
        return datetime.fromtimestamp(calendar.timegm(value), UTC)
    except (OverflowError, ValueError, OSError, TypeError):
        return None


def _entry_content(entry: Mapping[str, Any]) -> str | None:
    parts = []
    for item in _get(entry, "content") or []:
        value = _get(item, "value")
        if not isinstance(value, str) or not value.strip():
            continue
        kind = str(_get(item, "type") or "text/html")
        parts.append(value if "html" in kind else html.escape(value, quote=False))
    return "\n".join(parts) or None


def _entry_language(entry: Mapping[str, Any]) -> str | None:
    for key in ("content", "summary_detail", "title_detail"):
        details = _get(entry, key)
        if isinstance(details, list):
            details = details[0] if details else None
        if details and _text(_get(details, "language")):
            return _text(_get(details, "language"))
    return _text(_get(entry, "language"))


def _raw_entry(entry: Mapping[str, Any]) -> RawEntry:
    summary = _detail_html(entry, "summary")
    content = _entry_content(entry)
    if summary is not None and summary == content:
        summary = None  # RSS description copied into content by feedparser
    categories = []
    for tag in _get(entry, "tags") or []:
        term = _text(_get(tag, "term")) or _text(_get(tag, "label"))
        if term:
            categories.append(term)
    return RawEntry(
        guid=_text(_get(entry, "id")),
        link=_entry_link(entry),
        title=_detail_html(entry, "title"),
        summary=summary,
        content=content,
        published=_struct_to_datetime(_get(entry, "published_parsed")),
        updated=_struct_to_datetime(_get(entry, "updated_parsed")),
        author=_text(_get(entry, "author")),
        language=_entry_language(entry),
        categories=tuple(categories),
        enclosures=_entry_enclosures(entry),
        image=_entry_image(entry),
    )


def _count(value: Any) -> int | None:
    """A byte count as feeds write it ("12345"; a number in JSON): None for anything else."""
    if isinstance(value, int) and not isinstance(value, bool):
        return value if 0 <= value < 2**63 else None
    text = _text(value)
    if text is None or len(text) > 18 or not text.isascii() or not text.isdigit():
        return None  # (18 digits: below 2**63, and far from int()'s 4,300-digit limit)
    return int(text)


def _entry_enclosures(entry: Mapping[str, Any]) -> tuple[Enclosure, ...]:
    """RSS `<enclosure>` and Atom `link rel="enclosure"` (feedparser keeps both in `links`),
    then Media RSS `media:content` files that are not images."""
    found: list[Enclosure] = []
    for link in _get(entry, "links") or []:
        if _get(link, "rel") == "enclosure" and (href := _text(_get(link, "href"))):
            found.append(Enclosure(href, _text(_get(link, "type")), _count(_get(link, "length"))))
    for media in _get(entry, "media_content") or []:
        url = _text(_get(media, "url"))
        kind = _text(_get(media, "type"))
        if url and _get(media, "medium") != "image" and not (kind or "").startswith("image/"):
            found.append(Enclosure(url, kind, _count(_get(media, "filesize"))))
    return tuple(found[:_MAX_RAW_MEDIA])


def _entry_image(entry: Mapping[str, Any]) -> str | None:
    """The entry's lead image: iTunes `<itunes:image>`, a Media RSS thumbnail or image, an
    image enclosure."""
    image = _get(entry, "image")
    if isinstance(image, dict) and (href := _text(_get(image, "href"))):
        return href
    for thumbnail in _get(entry, "media_thumbnail") or []:
        if url := _text(_get(thumbnail, "url")):
            return url
    for media in _get(entry, "media_content") or []:
        url = _text(_get(media, "url"))
        if url and (
            _get(media, "medium") == "image"
            or (_text(_get(media, "type")) or "").startswith("image/")
        ):
            return url
    for link in _get(entry, "links") or []:
        if (
            _get(link, "rel") == "enclosure"
            and (href := _text(_get(link, "href")))
            and (_text(_get(link, "type")) or "").startswith("image/")
        ):
            return href
    return None


_MAX_RAW_MEDIA = 32  # files read per entry (normalise keeps fewer): a hostile feed lists more


def _entry_link(entry: Mapping[str, Any]) -> str | None:
    link = _text(_get(entry, "link"))
    if link:
        return link
    for candidate in _get(entry, "links") or []:
        if (_get(candidate, "rel") or "alternate") == "alternate" and _text(
            _get(candidate, "href")
        ):
            return _text(_get(candidate, "href"))
    return None


def _feed_ttl(feed: Mapping[str, Any]) -> int | None:
    """Seconds between polls the publisher suggests: RSS <ttl> (minutes) or sy:updatePeriod."""
    ttl = _positive_int(_get(feed, "ttl"))
    if ttl is not None:
        return ttl * 60
    period = _text(_get(feed, "sy_updateperiod"))
    if period and period.lower() in _UPDATE_PERIODS:
        frequency = _positive_int(_get(feed, "sy_updatefrequency")) or 1
        return max(_UPDATE_PERIODS[period.lower()] // frequency, 1)
    return None


def _positive_int(value: Any) -> int | None:
    if isinstance(value, int) and not isinstance(value, bool):
        number = value
    elif (
        isinstance(value, str)
        and value.strip().isascii()
        and value.strip().isdigit()
        and len(value.strip()) <= 9
    ):
        number = int(value.strip())
    else:
        return None
    return number if number > 0 else None


# --------------------------------------------------------------------------------------------
# JSON Feed 1.0 / 1.1 (feedparser 6.0.14 does not read it)


def _looks_like_json(body: bytes, headers: Mapping[str, str]) -> bool:
    """The first character decides ('{' JSON, '<' XML); the Content-Type only when it cannot."""
    first = body.lstrip(b"\xef\xbb\xbf \t\r\n")[:1]
    if first in (b"{", b"<"):
        return first == b"{"
    media_type = headers.get("content-type", "").split(";")[0].strip().lower()
    if media_type in ("application/feed+json", "application/json") or media_type.endswith("+json"):
        return True
    return False


def _parse_json_feed(body: bytes, url: str) -> ParsedFeed:
    problems: list[str] = []
    try:
        text = body.decode("utf-8-sig")
    except UnicodeDecodeError:
        text = body.decode("utf-8-sig", errors="replace")
        problems.append("invalid UTF-8 replaced")
    try:
        document = json.loads(text)
    except RecursionError as exc:
        raise ParseError(url, "JSON nested too deeply") from exc
    except ValueError as exc:
        raise ParseError(
            url, f"not a feed: invalid JSON ({exc})"[:300], kind=FailureKind.NOT_A_FEED
        ) from exc
    if not isinstance(document, dict):
        raise ParseError(
            url, "not a feed: JSON document is not an object", kind=FailureKind.NOT_A_FEED
        )
    version = document.get("version")
    items = document.get("items")
    if not (isinstance(version, str) and _JSON_FEED_VERSION.match(version.strip())):
        if not isinstance(items, list):
            raise ParseError(
                url,
                "not a feed: JSON without a JSON Feed version or items",
                kind=FailureKind.NOT_A_FEED,
            )
        problems.append(f"unknown JSON Feed version {str(version)[:80]!r}")
    if not isinstance(items, list):
        problems.append("items is not a list")
        items = []

    feed_language = _json_str(document.get("language"))
    entries = []
    skipped = 0
    for item in items:
        if not isinstance(item, dict):
            skipped += 1
            continue
        entries.append(_json_entry(item))
    if skipped:
        problems.append(f"{skipped} item(s) that are not objects skipped")
    return ParsedFeed(
        title=_escaped(_json_str(document.get("title"))),
        link=_json_str(document.get("home_page_url")),
        language=feed_language,
        ttl=None,
        entries=tuple(entries),
        problem="; ".join(problems) or None,
    )


def _json_str(value: Any) -> str | None:
    if isinstance(value, str) and value.strip():
        return value.strip()
    return None


def _escaped(value: str | None) -> str | None:
    return html.escape(value, quote=False) if value is not None else None


def _json_id(value: Any) -> str | None:
    # JSON Feed 1.0 allowed numbers; 1.1 says strings. Keep the text a publisher meant.
    if isinstance(value, bool):
        return None
    if isinstance(value, int | float):
        return str(value)
    return _json_str(value)


def _json_date(value: Any) -> datetime | None:
    text = _json_str(value)
    if text is None or len(text) > 64:
        return None
    try:
        parsed = datetime.fromisoformat(text)
    except ValueError:
        return None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    try:
        return parsed.astimezone(UTC)
    except (OverflowError, ValueError):
        return None


def _json_author(item: Mapping[str, Any]) -> str | None:
    authors = item.get("authors")
    if not isinstance(authors, list):
        authors = [item.get("author")]
    names = [_json_str(author.get("name")) for author in authors[:20] if isinstance(author, dict)]
    joined = ", ".join(name for name in names if name)
    return joined or None


def _json_entry(item: Mapping[str, Any]) -> RawEntry:
    content_html = _json_str(item.get("content_html"))
    content = content_html or _escaped(_json_str(item.get("content_text")))
    tags = item.get("tags")
    categories = tuple(
        tag.strip() for tag in (tags if isinstance(tags, list) else []) if _json_str(tag)
    )
    return RawEntry(
        guid=_json_id(item.get("id")),
        link=_json_str(item.get("url")) or _json_str(item.get("external_url")),
        title=_escaped(_json_str(item.get("title"))),
        summary=_escaped(_json_str(item.get("summary"))),
        content=content,
        published=_json_date(item.get("date_published")),
        updated=_json_date(item.get("date_modified")),
        author=_json_author(item),
        language=_json_str(item.get("language")),
        categories=categories,
        enclosures=_json_attachments(item.get("attachments")),
        image=_json_str(item.get("image")) or _json_str(item.get("banner_image")),
    )


def _json_attachments(value: Any) -> tuple[Enclosure, ...]:
    """JSON Feed `attachments`: url, mime_type, size_in_bytes."""
    if not isinstance(value, list):
        return ()
    found = [
        Enclosure(url, _json_str(a.get("mime_type")), _count(a.get("size_in_bytes")))
        for a in value[:_MAX_RAW_MEDIA]
        if isinstance(a, dict)
        if (url := _json_str(a.get("url")))
    ]
    return tuple(found)
