"""Polite, hardened fetching of feed bodies: the only home of httpx.

One `Fetcher` owns one long-lived `httpx.AsyncClient`. `Fetcher.fetch` never raises for a
feed-level problem: every poll ends in a `FetchResult`, with `failure` set when it went wrong.

What "polite" and "hardened" mean here, and why each piece exists:
- conditional GET (ETag / Last-Modified) and an unchanged-body check, so unchanged feeds cost
  the publisher almost nothing and us no parsing;
- redirects followed by hand, so a 301/308 chain can move the feed and a 302 cannot;
- a global and a per-host concurrency limit (httpx has no per-host limit);
- one total deadline around each request including its body (httpx's read timeout is per chunk,
  so a server trickling one byte a second would otherwise hold us forever);
- the body cap is counted on decoded bytes while decompressing in bounded pieces, so a gzip bomb
  is cut off after at most a few MiB of extra memory;
- an SSRF guard that checks the address actually connected to (at connect time, so DNS rebinding
  cannot slip past a check made earlier), for every redirect hop.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import importlib.util
import ipaddress
import socket
import zlib
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from email.utils import parsedate_to_datetime
from pathlib import Path
from types import TracebackType
from typing import Any, Protocol
from urllib.parse import unquote, urlsplit
from urllib.request import getproxies, url2pathname

import httpcore
import httpx

from .errors import ConfigError
from .model import (
    FailureKind,
    FeedFailure,
    FeedState,
    FetchOptions,
    FetchResult,
    FetchSettings,
    origin,
)

# Largest piece of decoded output one decompression call may produce. Small enough that a
# bomb cannot balloon memory between two checks of the body cap.
_PIECE = 256 * 1024
# Decoded bytes examined to decide whether a body can be a feed at all.
_SNIFF_BYTES = 4096

_REDIRECTS = frozenset({301, 302, 303, 307, 308})
_PERMANENT = frozenset({301, 308})

_ACCEPT = (
    "application/rss+xml, application/atom+xml, application/feed+json, "
    "application/rdf+xml;q=0.9, application/xml;q=0.9, text/xml;q=0.9, "
    "application/json;q=0.8, */*;q=0.5"
)


# --------------------------------------------------------------------------------------------
# Content decoding in bounded pieces
# --------------------------------------------------------------------------------------------


class _DecodeError(Exception):
    """A compressed body is corrupt."""


class _Decoder(Protocol):
    def feed(self, data: bytes) -> Iterator[bytes]: ...

    def finish(self) -> Iterator[bytes]: ...


class _ZlibDecoder:
    """gzip (possibly several members) or deflate (zlib-wrapped or, as some servers send, raw)."""

    def __init__(self, gzip: bool) -> None:
        self._gzip = gzip
        self._wbits = zlib.MAX_WBITS | 16 if gzip else zlib.MAX_WBITS
        self._d = zlib.decompressobj(self._wbits)
        self._started = False

    def feed(self, data: bytes) -> Iterator[bytes]:
        while data:
            if self._d.eof:
                if not self._gzip or not data.strip(b"\0"):
                    return  # trailing junk or padding after the stream: ignore it
                self._d = zlib.decompressobj(self._wbits)  # the next gzip member
            try:
                out = self._d.decompress(data, _PIECE)
            except zlib.error as exc:
                if not self._gzip and not self._started and self._wbits > 0:
                    # "deflate" without the zlib header: retry the same bytes as raw deflate.
                    self._wbits = -zlib.MAX_WBITS
                    self._d = zlib.decompressobj(self._wbits)
                    continue
                name = "gzip" if self._gzip else "deflate"
                raise _DecodeError(f"the {name}-encoded body is corrupt ({exc})") from exc
            self._started = True
            if out:
                yield out
            data = self._d.unused_data if self._d.eof else self._d.unconsumed_tail
            # zlib may still hold output although all input was taken: drain it in pieces.
            while not data and len(out) == _PIECE and not self._d.eof:
                out = self._d.decompress(b"", _PIECE)
                if out:
                    yield out
                data = self._d.unused_data if self._d.eof else self._d.unconsumed_tail

    def finish(self) -> Iterator[bytes]:
        if not self._d.eof:
            out = self._d.flush(_PIECE)
            if out:
                yield out


class _BrotliDecoder:
    def __init__(self) -> None:
        import brotli  # type: ignore[import-untyped, unused-ignore]

        self._error: type[Exception] = brotli.error
        self._d = brotli.Decompressor()

    def feed(self, data: bytes) -> Iterator[bytes]:
        if self._d.is_finished():
            return
        try:
            out = self._d.process(data, output_buffer_limit=_PIECE)
            if out:
                yield out
            while not self._d.can_accept_more_data() or len(out) >= _PIECE:
                out = self._d.process(b"", output_buffer_limit=_PIECE)
                if out:
                    yield out
                elif not self._d.can_accept_more_data():
                    raise _DecodeError("the br-encoded body is corrupt (decoder stuck)")
        except self._error as exc:
            raise _DecodeError(f"the br-encoded body is corrupt ({exc})") from exc

    def finish(self) -> Iterator[bytes]:
        return iter(())


class _ZstdDecoder:
    """zstandard's decompressobj has no output limit, so it is fed in slices small enough that
    even the densest blocks (about 4 bytes per 128 KiB) cannot expand past a few MiB."""

    _SLICE = 64
    _MAX_WINDOW = 8 * 1024 * 1024  # what RFC 8878 recommends for HTTP

    def __init__(self) -> None:
        import zstandard

        self._zstd = zstandard
        self._dctx = zstandard.ZstdDecompressor(max_window_size=self._MAX_WINDOW)
        self._d = self._dctx.decompressobj()

    def feed(self, data: bytes) -> Iterator[bytes]:
        view = memoryview(data)
        try:
            for start in range(0, len(view), self._SLICE):
                piece = bytes(view[start : start + self._SLICE])
                while piece:
                    if self._d.eof:
                        self._d = self._dctx.decompressobj()  # the next frame
                    out = self._d.decompress(piece)
                    if out:
                        yield out
                    piece = self._d.unused_data if self._d.eof else b""
        except self._zstd.ZstdError as exc:
            raise _DecodeError(f"the zstd-encoded body is corrupt ({exc})") from exc

    def finish(self) -> Iterator[bytes]:
        return iter(())


class _IdentityDecoder:
    def feed(self, data: bytes) -> Iterator[bytes]:
        # Split big reads too, so the body cap is checked at the same granularity.
        for start in range(0, len(data), _PIECE):
            yield data[start : start + _PIECE]

    def finish(self) -> Iterator[bytes]:
        return iter(())


def _brotli_usable() -> bool:
    try:
        import brotli  # type: ignore[import-untyped, unused-ignore]
    except ImportError:
        return False
    # Bounded output needs brotli >= 1.2 (output_buffer_limit); older ones are not safe here.
    return hasattr(brotli.Decompressor(), "can_accept_more_data")


def _zstd_usable() -> bool:
    return importlib.util.find_spec("zstandard") is not None


def accepted_encodings() -> tuple[str, ...]:
    """The content codings this fetcher can decode safely, in the order it advertises them."""
    codings = ["gzip", "deflate"]
    if _brotli_usable():
        codings.append("br")
    if _zstd_usable():
        codings.append("zstd")
    return tuple(codings)


def _decoders_for(content_encoding: str) -> list[_Decoder] | str:
    """Decoders to apply in order, or the name of a coding we cannot decode."""
    codings = [c.strip().lower() for c in content_encoding.split(",") if c.strip()]
    decoders: list[_Decoder] = []
    for coding in reversed(codings):  # the last coding applied is the first one to undo
        if coding in ("identity", ""):
            continue
        if coding in ("gzip", "x-gzip"):
            decoders.append(_ZlibDecoder(gzip=True))
        elif coding == "deflate":
            decoders.append(_ZlibDecoder(gzip=False))
        elif coding == "br" and _brotli_usable():
            decoders.append(_BrotliDecoder())
        elif coding == "zstd" and _zstd_usable():
            decoders.append(_ZstdDecoder())
        else:
            return coding
    return decoders or [_IdentityDecoder()]


def _through(decoder: _Decoder, pieces: Iterable[bytes], last: bool) -> Iterator[bytes]:
    for piece in pieces:
        yield from decoder.feed(piece)
    if last:
        yield from decoder.finish()


def _decode(decoders: list[_Decoder], raw: bytes, last: bool = False) -> Iterator[bytes]:
    """Decoded pieces of `raw`, lazily, so each stage produces at most a bounded piece at once."""
    pieces: Iterable[bytes] = (raw,) if raw else ()
    for decoder in decoders:
        pieces = _through(decoder, pieces, last)
    return iter(pieces)


# --------------------------------------------------------------------------------------------
# What can be a feed
# --------------------------------------------------------------------------------------------

_NOT_FEED_TYPE_PREFIXES = ("image/", "video/", "audio/", "font/", "model/")
_NOT_FEED_TYPES = frozenset(
    {
        "application/pdf",
        "application/zip",
        "application/gzip",
        "application/x-gzip",
        "application/x-tar",
        "application/x-7z-compressed",
        "application/vnd.rar",
        "application/x-rar-compressed",
        "application/java-archive",
        "application/wasm",
        "application/x-shockwave-flash",
        "application/x-msdownload",
        "application/msword",
        "application/vnd.ms-excel",
        "application/vnd.ms-powerpoint",
    }
)
_FEED_MARKERS = ("<rss", "<feed", "<rdf:rdf", "<channel", "jsonfeed.org/version")


def _media_type(content_type: str) -> str:
    return content_type.split(";", 1)[0].strip().lower()


def content_type_refusal(content_type: str) -> str | None:
    """Why a response with this Content-Type cannot be a feed, or None when it might be one."""
    media = _media_type(content_type)
    if media.startswith(_NOT_FEED_TYPE_PREFIXES) or media in _NOT_FEED_TYPES:
        return f"the server sent {media}, which cannot be a feed; check the feed URL"
    if media.startswith("application/vnd.openxmlformats"):
        return f"the server sent an office document ({media}), not a feed; check the feed URL"
    return None


def sniff_refusal(head: bytes, content_type: str, *, quote: bool = True) -> str | None:
    """Why a body starting with `head` cannot be a feed, or None when it might be one.

    Lenient on purpose: many real feeds are served as text/html, text/plain or
    application/octet-stream, so the bytes decide, not the label."""
    media = _media_type(content_type) or "no Content-Type"
    if head.startswith((b"\xff\xfe", b"\xfe\xff")):
        text = head.decode("utf-16", errors="ignore")
    else:
        text = head.decode("latin-1")
    text = text.lstrip("\ufeff\u00ef\u00bb\u00bf \t\r\n").lower()
    if not text:
        return "the response body is empty"
    if any(marker in text for marker in _FEED_MARKERS):
        return None
    if text.startswith(("<!doctype html", "<html")) or (
        text.startswith("<?xml") and "<html" in text
    ):
        return (
            f"the URL serves an HTML page ({media}), not a feed; use the feed's own URL "
            '(the page\'s <link rel="alternate"> points to it)'
        )
    if "\0" in text and not head.startswith((b"\xff\xfe", b"\xfe\xff")):
        return f"the body is binary data ({media}), not a feed"
    if text.startswith(("<", "{", "[")):
        return None  # some XML or JSON: the parser decides
    if not quote:  # a local file's content stays out of the database and the logs
        return f"the body ({media}) does not look like XML or JSON"
    start = text[:40]
    return f"the body ({media}) does not look like XML or JSON; it starts with {start!r}"


# --------------------------------------------------------------------------------------------
# Header policy: caching and Retry-After
# --------------------------------------------------------------------------------------------


def _http_date(value: str) -> datetime | None:
    try:
        when = parsedate_to_datetime(value.strip())
    except (TypeError, ValueError, IndexError, OverflowError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return when


_MAX_VALIDATOR = 1024  # characters of an ETag or Last-Modified worth sending back


def sendable_validator(value: str | None) -> str | None:
    """An ETag or Last-Modified value that can go back in a request header, else None.

    RFC 9110 lets a validator hold only visible ASCII (obs-text aside, which no client can
    send reliably): a value with another byte, a control character or an absurd length is
    treated as absent, so one bad response cannot break every later request of the feed."""
    if not value:
        return None
    value = value.strip()
    if not value or len(value) > _MAX_VALIDATOR:
        return None
    if not all(" " <= c <= "~" for c in value):
        return None
    return value


def _ascii_int(value: str) -> int | None:
    """A header's delay in whole seconds: ASCII digits only ("²".isdigit() is True)."""
    return int(value) if value.isascii() and value.isdigit() else None


def parse_retry_after(value: str | None, now: datetime) -> datetime | None:
    """The moment a Retry-After header (delay in seconds or an HTTP date) points to."""
    if not value:
        return None
    value = value.strip()
    if (seconds := _ascii_int(value)) is not None:
        return now + timedelta(seconds=min(seconds, 10 * 365 * 86400))
    when = _http_date(value)
    if when is None:
        return None
    return max(when, now)


def parse_max_age(headers: Mapping[str, str], now: datetime) -> int | None:
    """Seconds the publisher asks caches to keep this answer (Cache-Control max-age, else
    Expires relative to the server's Date), minus its Age; None when it asks nothing."""
    cache_control = headers.get("cache-control", "")
    directives: dict[str, str] = {}
    for part in cache_control.split(","):
        name, _, arg = part.strip().partition("=")
        if name:
            directives[name.strip().lower()] = arg.strip().strip('"')
    seconds: int | None = None
    if "max-age" in directives:
        seconds = _ascii_int(directives["max-age"])
    elif "expires" in headers:
        expires = _http_date(headers["expires"])
        if expires is not None:
            date = _http_date(headers.get("date", "")) or now
            seconds = int((expires - date).total_seconds())
    if seconds is None:
        return None
    age = _ascii_int(headers.get("age", "").strip())
    if age is not None:
        seconds -= age
    return seconds if seconds > 0 else None


# --------------------------------------------------------------------------------------------
# SSRF guard
# --------------------------------------------------------------------------------------------

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


def address_refusal(address: str | IPAddress) -> str | None:
    """Why connecting to this IP address is refused (loopback, private, ...), or None if it is
    a public address."""
    ip = ipaddress.ip_address(address) if isinstance(address, str) else address
    if isinstance(ip, ipaddress.IPv6Address):
        embedded = ip.ipv4_mapped or ip.sixtofour
        if embedded is not None:
            ip = embedded
    for flag, what in (
        ("is_loopback", "a loopback"),
        ("is_link_local", "a link-local"),
        ("is_multicast", "a multicast"),
        ("is_unspecified", "an unspecified"),
        ("is_private", "a private"),
        ("is_reserved", "a reserved"),
        ("is_site_local", "a site-local (fec0::/10, deprecated)"),
    ):
        if getattr(ip, flag, False):
            return f"{ip} is {what} address"
    if not ip.is_global:
        return f"{ip} is not a public address"
    return None


_GUARD_HINT = "set [fetch] allow_private_networks = true to allow such targets"


class _BlockedAddress(Exception):
    """The target resolved only to addresses the SSRF guard refuses."""


def _literal_ip(host: str) -> IPAddress | None:
    try:
        return ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        return None


async def _resolve(host: str, port: int) -> list[str]:
    loop = asyncio.get_running_loop()
    infos = await loop.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    seen: list[str] = []
    for info in infos:
        address = str(info[4][0])
        if address not in seen:
            seen.append(address)
    return seen


class _GuardedBackend(httpcore.AsyncNetworkBackend):
    """Resolves the host itself and connects only to public addresses, so the address checked
    is the address used (no window for DNS rebinding between check and connect). TLS still
    verifies and sends SNI for the original host name: httpcore takes those from the URL."""

    def __init__(self, inner: httpcore.AsyncNetworkBackend) -> None:
        self._inner = inner

    async def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: Iterable[Any] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        try:
            addresses = await _resolve(host, port)
        except OSError as exc:
            raise httpcore.ConnectError(f"cannot resolve {host}: {exc}") from exc
        refusals = [r for r in (address_refusal(a) for a in addresses) if r]
        allowed = [a for a in addresses if address_refusal(a) is None]
        if not allowed:
            raise _BlockedAddress(f"refused to connect to {host}: {'; '.join(refusals)}")
        last: Exception | None = None
        for address in allowed:
            try:
                return await self._inner.connect_tcp(
                    address,
                    port,
                    timeout=timeout,
                    local_address=local_address,
                    socket_options=socket_options,
                )
            except (httpcore.ConnectError, httpcore.ConnectTimeout) as exc:
                last = exc
        assert last is not None
        raise last

    async def connect_unix_socket(
        self,
        path: str,
        timeout: float | None = None,
        socket_options: Iterable[Any] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        raise _BlockedAddress("unix sockets are not feed targets")

    async def sleep(self, seconds: float) -> None:
        await self._inner.sleep(seconds)


class _GuardedTransport(httpx.AsyncHTTPTransport):
    """httpx's own transport with the connection pool rebuilt on the guarded network backend
    (httpx does not let callers pass a network backend, httpcore does)."""

    def __init__(self, *, http2: bool, limits: httpx.Limits) -> None:
        super().__init__(http2=http2, limits=limits)
        self._pool = httpcore.AsyncConnectionPool(
            ssl_context=httpx.create_ssl_context(trust_env=True),
            max_connections=limits.max_connections,
            max_keepalive_connections=limits.max_keepalive_connections,
            keepalive_expiry=limits.keepalive_expiry,
            http1=True,
            http2=http2,
            network_backend=_GuardedBackend(httpcore.AnyIOBackend()),
        )


def environment_proxies() -> dict[str, str | None]:
    """URL patterns (httpx mount keys) to a proxy URL, or None for "connect directly", read from
    http_proxy / https_proxy / all_proxy / no_proxy the way curl reads them."""
    info = getproxies()
    patterns: dict[str, str | None] = {}
    for scheme in ("http", "https", "all"):
        proxy = info.get(scheme)
        if proxy:
            patterns[f"{scheme}://"] = proxy if "://" in proxy else f"http://{proxy}"
    for entry in info.get("no", "").split(","):
        host = entry.strip()
        if not host:
            continue
        if host == "*":
            return {}
        if "://" in host:
            patterns[host] = None
        elif (ip := _literal_ip(host)) is not None:
            patterns[f"all://[{ip}]" if ip.version == 6 else f"all://{ip}"] = None
        elif host.lower() == "localhost":
            patterns["all://localhost"] = None
        elif "/" not in host:  # CIDR ranges are not expressible as URL patterns: skipped
            patterns[f"all://*{host}"] = None
    return patterns


# --------------------------------------------------------------------------------------------
# The fetcher
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Hop:
    """One request's answer: a status with headers, and the body or why it was refused."""

    status: int
    headers: dict[str, str]
    body: bytes | None = None
    failure: FeedFailure | None = None


def conclude(
    state: FeedState,
    final_url: str,
    statuses: list[int],
    hop: _Hop,
    was_conditional: bool,
    now: datetime,
) -> FetchResult:
    """The status policy, pure: what the last hop of a fetch (after `statuses` of redirects)
    means as a FetchResult: a body to parse, not modified (304 to a conditional request, or
    the same body hash), a permanent move when every hop was 301/308, or a failure (410 Gone
    retires, 429/503 carry their Retry-After, any other status is an HTTP error)."""
    status, headers = hop.status, hop.headers
    moved = bool(statuses) and all(s in _PERMANENT for s in statuses) and final_url != state.url
    common: dict[str, Any] = {
        "feed_id": state.id,
        "requested_url": state.url,
        "final_url": final_url,
        "fetched_at": now,
        "status": status,
        "headers": headers,
    }
    if hop.failure is not None:
        return FetchResult(**common, failure=hop.failure)
    if status == 304 and was_conditional:
        return FetchResult(
            **common,
            etag=sendable_validator(headers.get("etag")) or sendable_validator(state.etag),
            last_modified=sendable_validator(headers.get("last-modified"))
            or sendable_validator(state.last_modified),
            body_hash=state.body_hash,
            not_modified=True,
            permanent_url=final_url if moved else None,
            max_age=parse_max_age(headers, now),
        )
    if 200 <= status < 300 and hop.body is not None:
        digest = _hash(hop.body)
        unchanged = digest == state.body_hash
        return FetchResult(
            **common,
            body=None if unchanged else hop.body,
            etag=sendable_validator(headers.get("etag")),
            last_modified=sendable_validator(headers.get("last-modified")),
            body_hash=digest,
            not_modified=unchanged,
            permanent_url=final_url if moved else None,
            max_age=parse_max_age(headers, now),
        )
    retry_after = None
    if status in (429, 503):
        retry_after = parse_retry_after(headers.get("retry-after"), now)
    if status == 410:
        kind, message = (
            FailureKind.GONE,
            (
                "HTTP 410 Gone: the publisher removed this feed; it is retired until its "
                "config entry changes or `aggregator feeds reset URL`"
            ),
        )
    elif status == 304:
        kind, message = (
            FailureKind.HTTP,
            "HTTP 304 Not Modified to a request without validators",
        )
    else:
        kind, message = FailureKind.HTTP, f"HTTP {_reason(status)}"
        if retry_after is not None:
            message += f"; the server asks us to wait until {retry_after.isoformat()}"
    return FetchResult(
        **common, failure=FeedFailure(kind, message, status), retry_after=retry_after
    )


def _request_headers(
    url: str, conditional: dict[str, str], options: FetchOptions | None
) -> dict[str, str]:
    """One hop's headers beside the client's own: the caching validators, and a feed's own
    user agent everywhere, its headers and basic auth only on its configured origin (a
    redirect to another host, port or scheme gets none of them)."""
    if options is None:
        return conditional
    headers = dict(conditional)
    if options.user_agent is not None:
        headers["User-Agent"] = options.user_agent
    if origin(url) != options.origin:
        return headers
    for name, value in options.headers:
        headers[name] = value.reveal()
    if options.username is not None and options.password is not None:
        pair = f"{options.username}:{options.password.reveal()}".encode()
        headers["Authorization"] = "Basic " + base64.b64encode(pair).decode("ascii")
    return headers


def _hash(body: bytes) -> str:
    return hashlib.sha256(body).hexdigest()


def _reason(status: int) -> str:
    phrase = httpx.codes.get_reason_phrase(status)
    return f"{status} {phrase}" if phrase else str(status)


def _local_path(url: str) -> Path | str:
    """The filesystem path of a file:// URL or plain path, or why it cannot be one."""
    parts = urlsplit(url)
    if parts.scheme.lower() != "file":
        return Path(url).expanduser()
    if parts.netloc not in ("", "localhost"):
        return f"file URLs must name a local file (file:///path), not host {parts.netloc!r}"
    return Path(url2pathname(unquote(parts.path)))


def _read_capped(path: Path, cap: int) -> bytes | None:
    """At most cap bytes of the file, or None when it is larger."""
    with path.open("rb") as handle:
        data = handle.read(cap + 1)
    return None if len(data) > cap else data


class Fetcher:
    """Fetches feeds politely. Use as `async with Fetcher(settings) as fetcher:`."""

    def __init__(self, settings: FetchSettings, *, pages: bool = False) -> None:
        self._settings = settings
        # `pages`: web pages are answers too (feed discovery reads a site's HTML head).
        self._pages = pages
        self._client: httpx.AsyncClient | None = None
        self._global: asyncio.Semaphore | None = None
        self._per_host: dict[str, asyncio.Semaphore] = {}
        self._proxied = False
        self.accept_encoding = ", ".join(accepted_encodings())

    # -- lifecycle --------------------------------------------------------------------------

    async def __aenter__(self) -> Fetcher:
        settings = self._settings
        http2 = importlib.util.find_spec("h2") is not None
        limits = httpx.Limits(
            max_connections=max(settings.concurrency, 1) * 2,
            max_keepalive_connections=max(settings.concurrency, 1),
            keepalive_expiry=30.0,
        )
        direct: httpx.AsyncBaseTransport
        if settings.allow_private_networks:
            direct = httpx.AsyncHTTPTransport(http2=http2, limits=limits)
        else:
            direct = _GuardedTransport(http2=http2, limits=limits)
        mounts: dict[str, httpx.AsyncBaseTransport | None] = {}
        for pattern, proxy in environment_proxies().items():
            if proxy is None:
                mounts[pattern] = direct
                continue
            try:
                mounts[pattern] = httpx.AsyncHTTPTransport(proxy=proxy, http2=http2, limits=limits)
            except (ValueError, ImportError) as exc:
                raise ConfigError(
                    "environment", f"{pattern.rstrip(':/')}_proxy", f"unusable proxy: {exc}"
                ) from exc
            self._proxied = True
        self._client = httpx.AsyncClient(
            transport=direct,
            mounts=mounts,
            headers={
                "User-Agent": settings.user_agent,
                "Accept": _ACCEPT,
                "Accept-Encoding": self.accept_encoding,
            },
            timeout=httpx.Timeout(settings.timeout),
            follow_redirects=False,
            trust_env=False,  # proxies come from environment_proxies(); no .netrc credentials
        )
        await self._client.__aenter__()
        self._global = asyncio.Semaphore(max(settings.concurrency, 1))
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._client is not None:
            await self._client.__aexit__(exc_type, exc, tb)
            self._client = None

    # -- public -----------------------------------------------------------------------------

    async def fetch(self, state: FeedState, now: datetime) -> FetchResult:
        """Poll one feed. Never raises for feed-level problems: see `FetchResult.failure`."""
        if self._client is None:
            raise RuntimeError("Fetcher.fetch needs `async with Fetcher(settings) as fetcher`")
        url = state.url.strip()
        scheme = urlsplit(url).scheme.lower()
        try:
            if scheme in ("http", "https"):
                return await self._fetch_http(state, url, now)
            if scheme == "file" or scheme == "" or (len(scheme) == 1 and url[1:2] == ":"):
                return await self._fetch_file(state, url, now)
            return self._failed(
                state,
                url,
                now,
                FailureKind.NETWORK,
                f"unsupported URL scheme {scheme!r}; use http(s) or file",
            )
        except Exception as exc:  # a bug here must not end the daemon: report it on the feed
            return self._failed(
                state, url, now, FailureKind.INTERNAL, f"unexpected {type(exc).__name__}: {exc}"
            )

    # -- http -------------------------------------------------------------------------------

    def _failed(
        self,
        state: FeedState,
        final_url: str,
        now: datetime,
        kind: FailureKind,
        message: str,
        status: int | None = None,
        **extra: Any,
    ) -> FetchResult:
        return FetchResult(
            feed_id=state.id,
            requested_url=state.url,
            final_url=final_url,
            fetched_at=now,
            status=status,
            failure=FeedFailure(kind, message, status),
            **extra,
        )

    async def _fetch_http(self, state: FeedState, url: str, now: datetime) -> FetchResult:
        conditional: dict[str, str] = {}
        if etag := sendable_validator(state.etag):
            conditional["If-None-Match"] = etag
        if last_modified := sendable_validator(state.last_modified):
            conditional["If-Modified-Since"] = last_modified
        current = url
        chain = [url]
        statuses: list[int] = []
        deadline: list[float] = []  # one deadline for the whole fetch, redirects included
        while True:
            hop = await self._exchange(state, current, conditional, now, deadline)
            if isinstance(hop, FetchResult):
                return hop
            if hop.status not in _REDIRECTS:
                break
            location = hop.headers.get("location", "").strip()
            if not location:
                return self._failed(
                    state,
                    current,
                    now,
                    FailureKind.HTTP,
                    f"HTTP {hop.status} without a Location",
                    hop.status,
                )
            try:
                target = httpx.URL(current).join(location).copy_with(fragment=None)
            except (httpx.InvalidURL, ValueError) as exc:
                return self._failed(
                    state,
                    current,
                    now,
                    FailureKind.REDIRECT,
                    f"bad redirect Location {location!r}: {exc}",
                )
            if target.scheme not in ("http", "https"):
                return self._failed(
                    state,
                    current,
                    now,
                    FailureKind.REDIRECT,
                    f"redirect to a non-HTTP URL {str(target)!r}",
                )
            statuses.append(hop.status)
            following = str(target)
            if following in chain:
                loop = " → ".join([*chain[chain.index(following) :], following])
                return self._failed(
                    state, current, now, FailureKind.REDIRECT, f"redirect loop: {loop}"
                )
            if len(statuses) > self._settings.max_redirects:
                return self._failed(
                    state,
                    current,
                    now,
                    FailureKind.REDIRECT,
                    f"more than {self._settings.max_redirects} redirects (last to {following})",
                )
            chain.append(following)
            current = following
        return conclude(state, current, statuses, hop, bool(conditional), now)

    async def _precheck(self, host: str, port: int) -> str | None:
        """A refusal for a target that the connect-time guard cannot see: literal IPs (cheap,
        fails before any connection) and, when a proxy is configured, names the proxy would
        resolve for us."""
        if self._settings.allow_private_networks:
            return None
        ip = _literal_ip(host)
        if ip is not None:
            refusal = address_refusal(ip)
            return f"refused to connect to {host}: {refusal}" if refusal else None
        if not self._proxied:
            return None  # the guarded transport checks the address it connects to
        try:
            addresses = await _resolve(host, port)
        except OSError:
            return None  # we cannot resolve it; the proxy may (and it is the operator's proxy)
        refusals = [r for r in (address_refusal(a) for a in addresses) if r]
        return f"refused to connect to {host}: {'; '.join(refusals)}" if refusals else None

    def _host_limit(self, host: str) -> asyncio.Semaphore:
        semaphore = self._per_host.get(host)
        if semaphore is None:
            semaphore = self._per_host[host] = asyncio.Semaphore(max(self._settings.per_host, 1))
        return semaphore

    async def _exchange(
        self,
        state: FeedState,
        url: str,
        conditional: dict[str, str],
        now: datetime,
        deadline: list[float],
    ) -> _Hop | FetchResult:
        """One GET under the per-host and global limits and the total deadline. `deadline`
        holds the fetch's deadline once its first hop has its slots (it is set then), so a
        chain of redirects shares one `timeout` instead of getting one per hop."""
        assert self._client is not None and self._global is not None, "use `async with Fetcher`"
        settings = self._settings
        parts = urlsplit(url)
        host = (parts.hostname or "").lower()
        if not host:
            return self._failed(state, url, now, FailureKind.NETWORK, "the URL has no host")
        try:
            port = parts.port or (443 if parts.scheme == "https" else 80)
        except ValueError:
            return self._failed(state, url, now, FailureKind.NETWORK, "the URL has an invalid port")
        try:
            async with self._host_limit(host), self._global:
                if not deadline:
                    deadline.append(asyncio.get_running_loop().time() + settings.timeout)
                async with asyncio.timeout_at(deadline[0]):
                    refusal = await self._precheck(host, port)
                    if refusal:
                        return self._failed(
                            state, url, now, FailureKind.BLOCKED, f"{refusal}; {_GUARD_HINT}"
                        )
                    sent = _request_headers(url, conditional, state.options)
                    async with self._client.stream("GET", url, headers=sent) as response:
                        headers = {k.lower(): v for k, v in response.headers.items()}
                        status = response.status_code
                        if not 200 <= status < 300:
                            return _Hop(status, headers)
                        return await self._read_body(response, status, headers)
        except TimeoutError:
            return self._failed(
                state,
                url,
                now,
                FailureKind.TIMEOUT,
                f"no complete answer within {settings.timeout:g} s",
            )
        except httpx.TimeoutException as exc:
            return self._failed(
                state, url, now, FailureKind.TIMEOUT, f"timed out: {exc or type(exc).__name__}"
            )
        except _BlockedAddress as exc:
            return self._failed(state, url, now, FailureKind.BLOCKED, f"{exc}; {_GUARD_HINT}")
        except (httpx.HTTPError, httpx.InvalidURL, OSError) as exc:
            return self._failed(
                state,
                url,
                now,
                FailureKind.NETWORK,
                f"{type(exc).__name__}: {exc or 'connection failed'}",
            )

    async def _read_body(
        self, response: httpx.Response, status: int, headers: dict[str, str]
    ) -> _Hop:
        """Stream and decode the body under the cap; refuse what cannot be a feed."""
        cap = self._settings.max_body_bytes
        content_type = headers.get("content-type", "")
        refusal = content_type_refusal(content_type)
        if refusal and not self._pages:
            return _Hop(
                status, headers, failure=FeedFailure(FailureKind.NOT_A_FEED, refusal, status)
            )
        encoding = headers.pop("content-encoding", "")
        declared = headers.pop("content-length", "")
        decoders = _decoders_for(encoding)
        if isinstance(decoders, str):
            message = f"unsupported Content-Encoding {decoders!r}"
            return _Hop(status, headers, failure=FeedFailure(FailureKind.HTTP, message, status))
        too_large = FeedFailure(
            FailureKind.TOO_LARGE,
            f"the body is larger than the {cap} byte cap (max_body_bytes)",
            status,
        )
        if not decoders or isinstance(decoders[0], _IdentityDecoder):
            if (size := _ascii_int(declared)) is not None and size > cap:
                return _Hop(status, headers, failure=too_large)
        body = bytearray()
        sniffed = False
        try:
            async for raw in response.aiter_raw():
                for piece in _decode(decoders, raw):
                    body += piece
                    if len(body) > cap:
                        return _Hop(status, headers, failure=too_large)
                if not sniffed and not self._pages and len(body) >= _SNIFF_BYTES:
                    sniffed = True
                    refusal = sniff_refusal(bytes(body[:_SNIFF_BYTES]), content_type)
                    if refusal:
                        return _Hop(
                            status,
                            headers,
                            failure=FeedFailure(FailureKind.NOT_A_FEED, refusal, status),
                        )
            for piece in _decode(decoders, b"", last=True):
                body += piece
                if len(body) > cap:
                    return _Hop(status, headers, failure=too_large)
        except _DecodeError as exc:
            return _Hop(status, headers, failure=FeedFailure(FailureKind.HTTP, str(exc), status))
        if not sniffed and not self._pages:
            refusal = sniff_refusal(bytes(body[:_SNIFF_BYTES]), content_type)
            if refusal:
                return _Hop(
                    status, headers, failure=FeedFailure(FailureKind.NOT_A_FEED, refusal, status)
                )
        return _Hop(status, headers, body=bytes(body))

    # -- local files ------------------------------------------------------------------------

    async def _fetch_file(self, state: FeedState, url: str, now: datetime) -> FetchResult:
        assert self._global is not None, "use `async with Fetcher`"
        path = _local_path(url)
        if isinstance(path, str):
            return self._failed(state, url, now, FailureKind.NETWORK, path)
        cap = self._settings.max_body_bytes
        try:
            async with self._global:
                data = await asyncio.to_thread(_read_capped, path, cap)
        except OSError as exc:
            return self._failed(
                state, url, now, FailureKind.NETWORK, f"cannot read {path}: {exc.strerror or exc}"
            )
        if data is None:
            return self._failed(
                state, url, now, FailureKind.TOO_LARGE, f"{path} is larger than the {cap} byte cap"
            )
        refusal = sniff_refusal(data[:_SNIFF_BYTES], "", quote=False)
        if refusal:
            return self._failed(state, url, now, FailureKind.NOT_A_FEED, f"{path}: {refusal}")
        digest = _hash(data)
        unchanged = digest == state.body_hash
        return FetchResult(
            feed_id=state.id,
            requested_url=state.url,
            final_url=url,
            fetched_at=now,
            body=None if unchanged else data,
            body_hash=digest,
            not_modified=unchanged,
        )
