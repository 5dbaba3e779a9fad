"""Frozen records passed between the pipeline's stages. Imports nothing from the package."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from urllib.parse import urlsplit


def utcnow() -> datetime:
    """Now in UTC, to the second: the one clock every stored timestamp comes from."""
    return datetime.now(UTC).replace(microsecond=0)


def outlet_host(url: str | None) -> str:
    """The host that counts as one outlet: lower-case, without a leading "www."."""
    return (urlsplit(url or "").hostname or "").removeprefix("www.")


# A member's date counts for the representative no earlier than this before the aggregator
# first stored it: a feed cannot win a story's headline by back-dating its item (a 1976
# pubDate), only by having been seen first.
REPRESENTATIVE_CLAMP = timedelta(hours=2)
_SECOND_LEVEL = frozenset({"co", "com", "ac", "gov", "org", "net", "edu", "ne", "or"})


def base_domain(url: str | None) -> str:
    """The registrable part of a URL's host, roughly: "bbc.co.uk", "lemonde.fr"."""
    labels = outlet_host(url).split(".")
    if len(labels) >= 3 and labels[-2] in _SECOND_LEVEL and len(labels[-1]) == 2:
        return ".".join(labels[-3:])
    return ".".join(labels[-2:])


def representative_key(
    *,
    published: datetime,
    first_seen: datetime | None,
    link: str | None,
    feed_url: str | None,
    entry_id: int,
) -> tuple[bool, datetime, datetime, int]:
    """Sort key of a story's members for its representative ("earliest"): first a member whose
    link is on its own feed's domain (the outlet that owns the article; a feed cannot forge
    the URL it is subscribed at), then the earliest date clamped to `REPRESENTATIVE_CLAMP`
    before first seen, then the date itself, then the entry id."""
    owner = bool(link and feed_url) and base_domain(link) == base_domain(feed_url)
    clamped = published
    if first_seen is not None and published < first_seen - REPRESENTATIVE_CLAMP:
        clamped = first_seen - REPRESENTATIVE_CLAMP
    return (not owner, clamped, published, entry_id)


def simhash_bands(simhash: int) -> tuple[int, int, int, int]:
    """The four 16-bit bands of an unsigned 64-bit simhash (band i holds bits 16*i..16*i+15).

    Two simhashes within Hamming distance 3 agree on at least one band, so the band index
    (store) and the in-memory candidates (cluster) find every near-duplicate up to k=3.
    """
    return (
        simhash & 0xFFFF,
        (simhash >> 16) & 0xFFFF,
        (simhash >> 32) & 0xFFFF,
        (simhash >> 48) & 0xFFFF,
    )


class Secret:
    """A credential from the config (a password, an API key): compared by value, shown as
    `<secret>` in every repr, log line and config diff; `reveal()` only where it is sent."""

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value

    def reveal(self) -> str:
        return self._value

    def __repr__(self) -> str:
        return "<secret>"

    __str__ = __repr__

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Secret) and other._value == self._value

    def __hash__(self) -> int:
        return hash(self._value)

    def __reduce__(self) -> tuple[type[Secret], tuple[str]]:
        return (Secret, (self._value,))


def origin(url: str) -> str:
    """scheme://host:port of an http(s) URL, the unit credentials are sent to."""
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    port = parts.port or (443 if scheme == "https" else 80)
    host = (parts.hostname or "").lower()
    if not host.isascii():  # "bücher.example" as it goes on the wire ("xn--bcher-kva.example")
        try:
            host = host.encode("idna").decode("ascii")
        except UnicodeError:
            pass  # compared as written: a redirect there then gets no credentials
    return f"{scheme}://{host}:{port}"


@dataclass(frozen=True, slots=True)
class FetchOptions:
    """A feed's own request options (`[[feeds]]` `headers`, `user_agent`, `auth`). Sent only
    to `origin`, the configured URL's scheme, host and port: a redirect to anywhere else is
    followed without them."""

    origin: str
    headers: tuple[tuple[str, Secret], ...] = ()  # extra request headers, values kept secret
    user_agent: str | None = None
    username: str | None = None  # HTTP basic auth, with `password`
    password: Secret | None = None


@dataclass(frozen=True, slots=True)
class FeedSettings:
    """One `[[feeds]]` entry of the config, validated."""

    url: str
    title: str | None = None
    tags: tuple[str, ...] = ()
    interval: int | None = None  # seconds; None means the [schedule] default
    fetch: FetchOptions | None = None  # its own headers, user agent, basic auth


@dataclass(frozen=True, slots=True)
class FeedState:
    """What the fetcher needs to know about one feed before it polls it."""

    id: int
    url: str
    etag: str | None = None
    last_modified: str | None = None
    body_hash: str | None = None
    error_count: int = 0
    options: FetchOptions | None = None  # the feed's own headers, user agent, basic auth


class FailureKind(StrEnum):
    """Why a feed's poll failed, as one short word: `feeds.error_kind`, the `kind` of `aggregator
    feeds --json`. A StrEnum, so each kind is also the plain string stored and compared."""

    HTTP = "http"  # an HTTP error status (404, 5xx, 429 ...)
    NETWORK = "network"  # DNS, connection, TLS, a file that cannot be read
    TIMEOUT = "timeout"  # no complete answer within the deadline, or a parse that overran
    TOO_LARGE = "too_large"  # over a size cap: body, items in a document, text stored per poll
    NOT_A_FEED = "not_a_feed"  # an HTML page, an office document, binary data, no feed markup
    BLOCKED = "blocked"  # refused by the SSRF guard (loopback, private, site-local ...)
    REDIRECT = "redirect"  # a redirect loop, too many hops, a redirect to a non-HTTP URL
    GONE = "gone"  # 410 Gone: the feed is retired
    PARSE = "parse"  # a feed that cannot be parsed, or a worker that failed on it
    INTERNAL = "internal"  # a bug of ours, reported for that feed only


@dataclass(frozen=True, slots=True)
class FeedFailure:
    """Why a feed's poll failed: a `FailureKind` (stored in feeds.error_kind), a message for
    people, the HTTP status when there was one."""

    kind: FailureKind
    message: str
    status: int | None = None


@dataclass(frozen=True, slots=True)
class FetchResult:
    """The outcome of one request. Exactly one of body / not_modified / failure is meaningful."""

    feed_id: int
    requested_url: str
    final_url: str
    fetched_at: datetime
    status: int | None = None
    body: bytes | None = None  # decoded bytes when there is something to parse
    headers: Mapping[str, str] = field(default_factory=dict)  # final response, lower-case keys
    etag: str | None = None
    last_modified: str | None = None
    body_hash: str | None = None
    not_modified: bool = False  # 304, or a body identical to the last one
    permanent_url: str | None = None  # set when every redirect hop was 301/308
    failure: FeedFailure | None = None
    retry_after: datetime | None = None  # binding: do not ask again before this
    max_age: int | None = None  # seconds the publisher asks us to wait (Cache-Control/Expires)


@dataclass(frozen=True, slots=True)
class Enclosure:
    """A file an entry carries: a podcast episode, a video, a document (RSS `<enclosure>`,
    Atom `link rel="enclosure"`, Media RSS `media:content`, JSON Feed `attachments`)."""

    url: str
    media_type: str | None = None  # "audio/mpeg"; None when the feed gave none or a bad one
    length: int | None = None  # bytes, as the feed says; None when absent, zero or not a number


@dataclass(frozen=True, slots=True)
class RawEntry:
    """One entry as the feed gave it, before any cleaning. HTML fields are untrusted."""

    guid: str | None = None
    link: str | None = None
    title: str | None = None
    summary: str | None = None  # HTML or text as given
    content: str | None = None  # HTML or text as given
    published: datetime | None = None
    updated: datetime | None = None
    author: str | None = None
    language: str | None = None
    categories: tuple[str, ...] = ()
    enclosures: tuple[Enclosure, ...] = ()  # URLs as given (untrusted, maybe relative)
    image: str | None = None  # the lead image's URL as given (untrusted, maybe relative)


@dataclass(frozen=True, slots=True)
class ParsedFeed:
    """bytes + headers turned into a feed. `problem` records a recoverable (bozo) issue."""

    title: str | None = None
    link: str | None = None
    language: str | None = None
    ttl: int | None = None  # seconds, from RSS <ttl> or sy:updatePeriod/updateFrequency
    entries: tuple[RawEntry, ...] = ()
    problem: str | None = None


@dataclass(frozen=True, slots=True)
class Entry:
    """A normalised entry: stable identity, clean text, safe HTML, UTC dates."""

    guid: str  # the feed's own id exactly as given, or a derived key
    link: str | None  # canonical http(s) URL or None
    title: str  # plain text
    summary: str  # sanitised HTML
    content: str  # sanitised HTML
    text: str  # plain text of title + summary + content, for fingerprints and search
    published: datetime  # tz-aware UTC
    updated: datetime | None
    author: str | None
    language: str | None
    content_hash: str  # hex digest of the meaningful content
    categories: tuple[str, ...] = ()
    enclosures: tuple[Enclosure, ...] = ()  # absolute http(s) URLs, at most MAX_ENCLOSURES
    image: str | None = None  # the lead image: an absolute http(s) URL


@dataclass(frozen=True, slots=True)
class Fingerprint:
    """What near-duplicate detection and story matching need from one entry."""

    content_hash: str
    simhash: int | None  # unsigned 64-bit; None when the text is too short to be reliable
    terms: tuple[str, ...] = ()  # informative title/summary terms for story matching


@dataclass(frozen=True, slots=True)
class ProcessedFeed:
    """Everything the worker process hands back for one feed body."""

    feed: ParsedFeed
    entries: tuple[tuple[Entry, Fingerprint], ...]
    failure: FeedFailure | None = None


@dataclass(frozen=True, slots=True)
class FetchSettings:
    """The `[fetch]` table."""

    user_agent: str
    timeout: float = 30.0  # total deadline per request, seconds
    max_body_bytes: int = 20 * 1024 * 1024  # counted on decoded bytes
    concurrency: int = 20  # requests in flight overall
    per_host: int = 2  # requests in flight per host
    max_redirects: int = 5
    allow_private_networks: bool = False


@dataclass(frozen=True, slots=True)
class ScheduleSettings:
    """The `[schedule]` table; all values in seconds."""

    interval: int = 3600  # default poll interval
    min_interval: int = 300  # never poll a feed more often than this
    max_interval: int = 86400  # adaptive and publisher hints never go beyond this
    max_backoff: int = 86400  # cap for exponential backoff after errors
    max_retry_after: int = 7 * 86400  # cap for Retry-After


@dataclass(frozen=True, slots=True)
class Source:
    """One outlet's report of a story, as shown in a digest's "also reported by" list."""

    outlet: str
    title: str
    link: str | None
    published: datetime


@dataclass(frozen=True, slots=True)
class DigestStory:
    """One story as the exporters render it (loaded from the store)."""

    story_id: int
    title: str
    link: str | None
    summary: str  # sanitised HTML (already safe) or plain text
    first_seen: datetime
    updated: datetime  # moves when a new outlet joins
    sources: tuple[Source, ...]
    categories: tuple[str, ...] = ()
    language: str | None = None
    image: str | None = None  # the headline entry's lead image
    enclosures: tuple[Enclosure, ...] = ()  # the headline entry's files (a podcast episode)


@dataclass(frozen=True, slots=True)
class Digest:
    """A digest feed: a titled list of stories."""

    title: str
    generated_at: datetime  # the newest `updated` among stories, so same content gives same bytes
    stories: tuple[DigestStory, ...]
    link: str | None = None
    feed_url: str | None = None
    name: str | None = None  # the [[digests]] name: the feed id derives from it, not the title
    timezone: str = "UTC"  # IANA zone of the HTML page's clock times


# --- story clustering (cluster.py decides; store records; pipeline wires) -----------------------


@dataclass(frozen=True, slots=True)
class ClusterSettings:
    """The `[cluster]` table: how entries are grouped into near-duplicates and stories."""

    window_hours: float = 72.0  # entries older than this (by published) are not matched
    simhash_k: int = 3  # near-duplicate when Hamming distance <= k (bands find all up to 3)
    story_threshold: float = 0.2  # pair rule: TF-IDF cosine of two entries (half-agreement linkage)
    idf_prior_docs: int = 50  # pseudo-documents smoothing IDF so tiny windows behave
    representative: str = "earliest"  # "earliest" or "complete" (longest text)


@dataclass(frozen=True, slots=True)
class ClusterDoc:
    """What the clusterer knows about one entry (built from an Entry + Fingerprint or a row)."""

    entry_id: int
    feed_id: int
    host: str | None
    published: datetime  # tz-aware
    link: str | None  # canonical URL
    content_hash: str
    simhash: int | None  # unsigned 64-bit
    title: str
    terms: tuple[str, ...]
    language: str | None = None
    story_id: int | None = None  # set for entries already stored
    first_seen: datetime | None = None  # when we first stored it; defaults to `published`
    text_length: int = 0  # len(Entry.text); used by representative="complete"
    match_rule: str | None = None  # stored evidence rule (entries.match_rule) of a loaded entry
    title_terms: int = 0  # terms[:title_terms] come from the headline (fingerprint.title_layout)
    rubric_terms: int = 0  # terms[:rubric_terms] are a leading label ("Guerre en Ukraine :")


@dataclass(frozen=True, slots=True)
class Assignment:
    """Which story an entry joins and the evidence: rule, distance or score, matched entry.

    `rule` is one of "new", "url", "content_hash", "simhash", "story_match". `absorbed` lists
    story ids merged into `story_id` because this entry bridged them."""

    story_id: int
    rule: str
    distance: int | None = None  # Hamming distance for rule "simhash"
    score: float | None = None  # similarity for rule "story_match"
    matched_entry_id: int | None = None
    absorbed: tuple[int, ...] = ()


@dataclass(frozen=True, slots=True)
class StoryMerge:
    """Story `from_story_id` was merged into `into_story_id` (the older one survives)."""

    from_story_id: int
    into_story_id: int
    score: float | None
    reason: str  # "bridge:<rule>" when an entry joined both, "merge_pass" for centroid merges
    entry_id: int | None = None  # the entry that bridged them / closest member of `from`
    matched_entry_id: int | None = None  # its closest member of `into`


@dataclass(frozen=True, slots=True)
class Explanation:
    """Why two entries are (or would be) in one story, or why not."""

    joined: bool
    rule: str | None  # the rule that joins them, None when none does
    distance: int | None  # simhash Hamming distance when both have a simhash
    score: float | None  # story similarity (TF-IDF cosine) of their terms
    shared_terms: tuple[str, ...]  # most informative first
    guard: str | None  # the guard that refused a story match, if any
    reason: str  # one human sentence


@dataclass(frozen=True, slots=True)
class StorySummary:
    """What the stories table holds for one story, derived from its members."""

    story_id: int
    title: str
    representative_id: int
    first_seen: datetime
    last_seen: datetime
    member_count: int
    feed_count: int
    host_count: int
