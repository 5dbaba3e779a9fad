"""TOML → a frozen, validated `Config`. Every bad key or value is a ConfigError naming the key."""

from __future__ import annotations

import glob
import json
import os
import re
import shutil
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from . import PROJECT_URL, __version__
from .errors import ConfigError
from .model import FeedSettings, FetchOptions, FetchSettings, ScheduleSettings, Secret, origin
from .schedule import parse_duration as schedule_duration

DEFAULT_CONFIG = Path("config/aggregator.toml")
ENV_VAR = "AGGREGATOR_CONFIG"
DEFAULT_USER_AGENT = f"aggregator/{__version__} (+{PROJECT_URL})"
DIGEST_FORMATS = ("atom", "rss", "json", "html")
_MAX_CONFIG_BYTES = 64 << 20  # a feeds file of 100,000 subscriptions is ~10 MB
MAX_BODY_SIZE = 1 << 30  # a 1 GiB feed document is an attack, not a feed
REPRESENTATIVES = ("earliest", "complete")


def parse_duration(value: object) -> int:
    """Seconds from "90s", "30m", "2h", "1d", "1w" or a number of seconds; must be positive."""
    if isinstance(value, bool) or not isinstance(value, str | int):
        raise ValueError(f'expected a duration such as "30m", got {_kind(value)}')
    seconds = schedule_duration(value)
    if seconds <= 0:
        raise ValueError(f"a duration must be positive, got {value!r}")
    return seconds


@dataclass(frozen=True, slots=True)
class DigestSettings:
    """One `[[digests]]` table: a digest file the daemon rewrites after cycles that change it."""

    name: str
    path: Path
    format: str = "atom"
    since: int = 86400  # seconds: stories last seen within this window
    min_sources: int = 1
    tags: tuple[str, ...] = ()
    language: str | None = None
    query: str | None = None
    limit: int = 100
    title: str | None = None
    link: str | None = None  # the page the digest is about (RSS <channel><link>, Atom alternate)
    feed_url: str | None = None  # where the digest file is published (rel="self")
    # Exclusions: an entry is excluded when its feed has one of `exclude_tags`, it matches
    # `exclude_query` (full text) or its title matches one of `block_titles` (regular
    # expressions, case-insensitive); a story is left out when every one of its entries is.
    exclude_tags: tuple[str, ...] = ()
    exclude_query: str | None = None
    block_titles: tuple[str, ...] = ()
    timezone: str = "UTC"  # the IANA zone the HTML digest writes its clock times in


@dataclass(frozen=True, slots=True)
class ClusterOptions:
    """The `[cluster]` table."""

    window: int = 72 * 3600  # seconds: entries further apart never share a new story
    simhash_k: int = 3
    representative: str = "earliest"
    story_threshold: float = 0.2  # pair rule: TF-IDF cosine two write-ups need (half-agreement)


@dataclass(frozen=True, slots=True)
class Config:
    path: Path
    database: Path
    keep_days: int = 90
    fetch: FetchSettings = field(default_factory=lambda: FetchSettings(DEFAULT_USER_AGENT))
    schedule: ScheduleSettings = field(default_factory=ScheduleSettings)
    cluster: ClusterOptions = field(default_factory=ClusterOptions)
    feeds: tuple[FeedSettings, ...] = ()
    digests: tuple[DigestSettings, ...] = ()
    includes: tuple[Path, ...] = ()


def _query(r: _Reader, name: str = "query") -> str | None:
    from .store import query_problem

    query: str | None = r.take(name, str)
    problem = query_problem(query) if query else None
    if problem:
        raise r.error(name, problem)
    return query


_INCLUDE_LINE = re.compile(r"^include\s*=\s*\[(?P<items>[^\]\n]*)\](?P<tail>\s*(#.*)?)$", re.M)


def add_include(config_path: Path, entry: str) -> bool:
    """Add `entry` to the config file's top-level `include` list, editing the text so every
    comment and the layout stay: a new `include = [...]` line above the first setting, or the
    entry appended to a one-line `include = [...]`. Checked by parsing the result; written
    atomically with the file's own permissions. False (nothing written) when the list is spread
    over several lines: then the user edits it."""
    text = config_path.read_text(encoding="utf-8")
    quoted = json.dumps(entry)  # a JSON string is a valid TOML basic string
    if "include" not in tomllib.loads(text):
        lines = text.splitlines(keepends=True)
        at = 0
        while at < len(lines) and (not lines[at].strip() or lines[at].lstrip().startswith("#")):
            at += 1
        lines.insert(at, f"include = [{quoted}]\n")
        new = "".join(lines)
    else:
        match = _INCLUDE_LINE.search(text)
        if match is None:
            return False
        items = match.group("items").strip().rstrip(",").strip()
        joined = f"{items}, {quoted}" if items else quoted
        new = (
            f"{text[: match.start()]}include = [{joined}]{match.group('tail')}{text[match.end() :]}"
        )
    if entry not in tomllib.loads(new).get("include", []):
        return False
    tmp = config_path.with_name(f".{config_path.name}.tmp")
    try:
        tmp.write_text(new, encoding="utf-8")
        shutil.copymode(config_path, tmp)
        os.replace(tmp, config_path)
    except OSError:  # a config the user may not write (/etc/aggregator): they add it
        tmp.unlink(missing_ok=True)
        return False
    return True


_FEEDS_HEADER = re.compile(r"^[ \t]*\[\[[ \t]*feeds[ \t]*\]\][ \t]*(#.*)?$", re.M)


def without_feed(text: str, url: str, base: Path) -> str | None:
    """A feeds file's text without the `[[feeds]]` table of `url` (written as the file writes
    it, or as it normalises against `base`), every other line as it was; None when no table
    of the file names it. A table runs from its header to the next one (or the end), but for
    the comments just above the next header, which speak of that table."""
    starts = [m.start() for m in _FEEDS_HEADER.finditer(text)]
    for i, start in enumerate(starts):
        end = starts[i + 1] if i + 1 < len(starts) else len(text)
        lines = text[start:end].splitlines(keepends=True)
        tail = len(lines)
        while tail > 1 and (
            not lines[tail - 1].strip() or lines[tail - 1].lstrip().startswith("#")
        ):
            tail -= 1
        # The blank lines after the table go with it; a comment from there on stays.
        comment = next((j for j in range(tail, len(lines)) if lines[j].strip()), len(lines))
        end -= sum(map(len, lines[comment:]))
        try:
            tables = tomllib.loads(text[start:end]).get("feeds", [])
        except tomllib.TOMLDecodeError:
            continue
        for table in tables:
            written = table.get("url") if isinstance(table, dict) else None
            if not isinstance(written, str):
                continue
            try:
                same = url in (written, feed_url(written, base))
            except ValueError:
                same = False
            if same:
                return text[:start] + text[end:]
    return None


def check_feeds(text: str, file: Path) -> tuple[FeedSettings, ...]:
    """The feeds of a feeds-file fragment, checked as `load` checks an included file's (the
    error names the file and key), without writing anything."""
    try:
        table = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(str(file), None, f"invalid TOML: {exc}") from None
    reader = _Reader(str(file), "", table)
    raw = reader.take("feeds", list, [])
    reader.finish()
    return tuple(
        _feed(str(file), f"feeds[{i}]", t, file.resolve().parent) for i, t in enumerate(raw)
    )


def rewrite_checked(config_path: Path, target: Path, text: str) -> Config:
    """Write `text` to the feeds file `target` (atomically, its folder created) and load the
    config again; when it no longer loads, put the file back as it was and raise the error."""
    try:
        before: str | None = target.read_text(encoding="utf-8")
    except FileNotFoundError:
        before = None

    def put(data: str) -> None:
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = target.with_name(f".{target.name}.tmp")
        tmp.write_text(data, encoding="utf-8")
        if target.exists():
            shutil.copymode(target, tmp)
        os.replace(tmp, target)

    put(text)
    try:
        return load(config_path)
    except ConfigError:
        if before is None:
            target.unlink(missing_ok=True)
        else:
            put(before)
        raise


def resolve_path(cli_path: str | os.PathLike[str] | None, env: Mapping[str, str]) -> Path:
    """--config PATH, else $AGGREGATOR_CONFIG, else config/aggregator.toml."""
    if cli_path:
        return Path(cli_path)
    if env.get(ENV_VAR):
        return Path(env[ENV_VAR])
    return DEFAULT_CONFIG


def load(path: Path) -> Config:
    """Read and validate a config file (and the feed files it includes)."""
    data = _read_toml(path, path)
    return parse(data, path)


def _read_toml(path: Path, config_path: Path) -> dict[str, Any]:
    try:
        if path.stat().st_size > _MAX_CONFIG_BYTES:
            raise ConfigError(
                str(path),
                None,
                f"larger than {_MAX_CONFIG_BYTES // 2**20} MiB: not a config or feeds file",
            )
        raw = path.read_bytes()
    except FileNotFoundError:
        raise ConfigError(str(path), None, "file not found") from None
    except OSError as exc:
        raise ConfigError(str(path), None, f"cannot read file: {exc.strerror or exc}") from None
    try:
        return tomllib.loads(raw.decode("utf-8"))
    except UnicodeDecodeError:
        raise ConfigError(str(path), None, "not UTF-8 text") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(str(path), None, f"invalid TOML: {exc}") from None
    except RecursionError:
        raise ConfigError(
            str(path),
            None,
            "invalid TOML: arrays or tables nested too deeply "
            "(a config needs at most three levels)",
        ) from None


class _Reader:
    """Pops keys from one table, checking types; leftover keys are errors."""

    def __init__(self, file: str, prefix: str, table: object) -> None:
        self.file = file
        self.prefix = prefix
        if not isinstance(table, dict):
            raise ConfigError(file, prefix, f"must be a table, got {_kind(table)}")
        self.table: dict[str, Any] = dict(table)

    def key(self, name: str) -> str:
        return f"{self.prefix}.{name}" if self.prefix else name

    def error(self, name: str, problem: str) -> ConfigError:
        return ConfigError(self.file, self.key(name), problem)

    def take(self, name: str, types: type | tuple[type, ...], default: Any = None) -> Any:
        if name not in self.table:
            return default
        value = self.table.pop(name)
        if isinstance(value, bool) and bool not in _as_tuple(types):
            raise self.error(name, f"must be {_names(types)}, got a boolean")
        if not isinstance(value, types):
            raise self.error(name, f"must be {_names(types)}, got {_kind(value)}")
        return value

    def duration(self, name: str, default: int | None) -> int | None:
        if name not in self.table:
            return default
        value = self.table.pop(name)
        try:
            return parse_duration(value)
        except ValueError as exc:
            raise self.error(name, str(exc)) from None

    def positive_int(self, name: str, default: int, maximum: int = 1_000_000) -> int:
        value = self.take(name, int, default)
        if value < 1:
            raise self.error(name, f"must be a positive integer, got {value}")
        if value > maximum:
            raise self.error(name, f"must be at most {maximum}, got {value}")
        return int(value)

    def strings(self, name: str) -> tuple[str, ...]:
        value = self.take(name, list, [])
        for i, item in enumerate(value):
            if not isinstance(item, str) or not item.strip():
                raise ConfigError(self.file, f"{self.key(name)}[{i}]", "must be a non-empty string")
        return tuple(item.strip() for item in value)

    def finish(self) -> None:
        if self.table:
            name = sorted(self.table)[0]
            raise self.error(name, "unknown key")


def _as_tuple(types: type | tuple[type, ...]) -> tuple[type, ...]:
    return types if isinstance(types, tuple) else (types,)


_TYPE_WORDS = {
    str: "a string",
    int: "an integer",
    float: "a number",
    bool: "a boolean",
    list: "an array",
    dict: "a table",
}


def _names(types: type | tuple[type, ...]) -> str:
    """What a key must be: bool reads "true or false", the rest as `_TYPE_WORDS` says."""
    words = {**_TYPE_WORDS, bool: "true or false"}
    return " or ".join(words.get(t, t.__name__) for t in _as_tuple(types))


def _kind(value: object) -> str:
    return _TYPE_WORDS.get(type(value), type(value).__name__)


def parse(data: Mapping[str, Any], path: Path) -> Config:
    """Validate a decoded TOML document. `path` is used for messages and relative paths."""
    file = str(path)
    base = path.resolve().parent
    top = _Reader(file, "", data)

    storage = _Reader(file, "storage", top.take("storage", dict, {}))
    database = storage.take("database", str, "../data/aggregator.db")
    if not database.strip():
        raise storage.error("database", "must not be empty")
    keep_days = storage.positive_int("keep_days", 90, maximum=36_500)
    storage.finish()

    fetch_t = _Reader(file, "fetch", top.take("fetch", dict, {}))
    user_agent = fetch_t.take("user_agent", str, DEFAULT_USER_AGENT)
    if not user_agent.strip() or not all(" " <= c <= "~" for c in user_agent):
        # It goes into every request's User-Agent header: CR/LF would split the header and
        # httpx refuses anything but ASCII, so every feed would fail.
        raise fetch_t.error(
            "user_agent",
            "must be one line of printable ASCII text "
            "(no line breaks, tabs or other control characters)",
        )
    timeout = fetch_t.duration("timeout", 30)
    max_body = fetch_t.take("max_body_size", int, 20 * 1024 * 1024)
    if max_body < 1024:
        raise fetch_t.error("max_body_size", "must be at least 1024 bytes")
    if max_body > MAX_BODY_SIZE:
        raise fetch_t.error("max_body_size", f"must be at most {MAX_BODY_SIZE} bytes (1 GiB)")
    fetch = FetchSettings(
        user_agent=user_agent,
        timeout=float(timeout or 30),
        max_body_bytes=max_body,
        concurrency=fetch_t.positive_int("concurrency", 20),
        per_host=fetch_t.positive_int("per_host", 2),
        max_redirects=fetch_t.positive_int("max_redirects", 5),
        allow_private_networks=fetch_t.take("allow_private_networks", bool, False),
    )
    fetch_t.finish()

    sched_t = _Reader(file, "schedule", top.take("schedule", dict, {}))
    schedule = ScheduleSettings(
        interval=sched_t.duration("interval", 3600) or 3600,
        min_interval=sched_t.duration("min_interval", 300) or 300,
        max_interval=sched_t.duration("max_interval", 86400) or 86400,
        max_backoff=sched_t.duration("max_backoff", 86400) or 86400,
        max_retry_after=sched_t.duration("max_retry_after", 7 * 86400) or 7 * 86400,
    )
    if schedule.min_interval > schedule.max_interval:
        raise sched_t.error("min_interval", "must not be larger than schedule.max_interval")
    sched_t.finish()

    cluster_t = _Reader(file, "cluster", top.take("cluster", dict, {}))
    cluster = ClusterOptions(
        window=cluster_t.duration("window", 72 * 3600) or 72 * 3600,
        simhash_k=cluster_t.take("simhash_k", int, 3),
        representative=cluster_t.take("representative", str, "earliest"),
        story_threshold=float(cluster_t.take("story_threshold", (int, float), 0.2)),
    )
    if not 0 < cluster.story_threshold <= 1:
        raise cluster_t.error("story_threshold", "must be a number above 0 and at most 1")
    if not 0 <= cluster.simhash_k <= 3:
        raise cluster_t.error(
            "simhash_k", "must be between 0 and 3 (the band index is exact up to 3)"
        )
    if cluster.representative not in REPRESENTATIVES:
        raise cluster_t.error("representative", f"must be one of {', '.join(REPRESENTATIVES)}")
    cluster_t.finish()

    include_patterns = top.strings("include")
    feeds_raw = top.take("feeds", list, [])
    digests_raw = top.take("digests", list, [])
    top.finish()

    feeds = [_feed(file, f"feeds[{i}]", t, base) for i, t in enumerate(feeds_raw)]
    includes: list[Path] = []
    for i, pattern in enumerate(include_patterns):
        full = pattern if os.path.isabs(pattern) else str(base / pattern)
        matches = sorted(glob.glob(full)) if glob.has_magic(full) else [full]
        if not glob.has_magic(full) and not Path(full).exists():
            raise ConfigError(file, f"include[{i}]", f"file not found: {full}")
        for match in matches:
            inc_path = Path(match)
            includes.append(inc_path)
            inc = _Reader(str(inc_path), "", _read_toml(inc_path, path))
            inc_feeds = inc.take("feeds", list, [])
            inc.finish()
            feeds.extend(
                _feed(str(inc_path), f"feeds[{j}]", t, inc_path.resolve().parent)
                for j, t in enumerate(inc_feeds)
            )
    seen: dict[str, int] = {}
    for i, feed in enumerate(feeds):
        if feed.url in seen:
            raise ConfigError(
                file, f"feeds[{i}].url", f"duplicate feed {feed.url} (also feeds[{seen[feed.url]}])"
            )
        seen[feed.url] = i

    digests = [_digest(file, f"digests[{i}]", t, base) for i, t in enumerate(digests_raw)]
    names: set[str] = set()
    for i, d in enumerate(digests):
        if d.name in names:
            raise ConfigError(file, f"digests[{i}].name", f"duplicate digest name {d.name!r}")
        names.add(d.name)

    return Config(
        path=path,
        database=_resolve(base, database),
        keep_days=keep_days,
        fetch=fetch,
        schedule=schedule,
        cluster=cluster,
        feeds=tuple(feeds),
        digests=tuple(digests),
        includes=tuple(includes),
    )


def _resolve(base: Path, value: str) -> Path:
    p = Path(os.path.expanduser(value))
    return p if p.is_absolute() else Path(os.path.normpath(base / p))


def feed_url(value: str, base: Path) -> str:
    """Normalise a configured feed location to an http(s):// or file:// URL; ValueError if bad."""
    value = value.strip()
    if not value:
        raise ValueError("must not be empty")
    if any(c.isspace() for c in value):
        raise ValueError(f"must not contain spaces: {value!r}")
    parts = urlsplit(value)
    scheme = parts.scheme.lower()
    if scheme in ("http", "https"):
        if not parts.hostname:
            raise ValueError(f"has no host: {value!r}")
        try:
            parts.port  # noqa: B018  (raises on a bad port)
        except ValueError:
            raise ValueError(f"has a bad port: {value!r}") from None
        return value
    if scheme == "file":
        return value
    if scheme and len(scheme) > 1:  # a Windows drive letter is not a scheme
        raise ValueError(
            f"must be an http(s):// or file:// URL or a local path, got scheme {scheme!r}"
        )
    return _resolve(base, value).resolve().as_uri()


def _feed(file: str, prefix: str, table: object, base: Path) -> FeedSettings:
    r = _Reader(file, prefix, table)
    url = r.take("url", str)
    if url is None:
        raise r.error("url", "is required")
    try:
        url = feed_url(url, base)
    except ValueError as exc:
        raise r.error("url", str(exc)) from None
    title = r.take("title", str)
    tags = r.strings("tags")
    interval = r.duration("interval", None)
    options = _fetch_options(r, url, base)
    r.finish()
    return FeedSettings(
        url=url, title=title.strip() if title else None, tags=tags, interval=interval, fetch=options
    )


# Request headers a feed's `headers` may not set: the fetcher owns them (the connection,
# caching validators, decompression), or another key says them (`user_agent`, `auth`).
_OWN_HEADERS = frozenset(
    {
        "host",
        "content-length",
        "transfer-encoding",
        "connection",
        "keep-alive",
        "upgrade",
        "te",
        "trailer",
        "accept-encoding",
        "if-none-match",
        "if-modified-since",
        "user-agent",
        "proxy-authorization",
        "proxy-connection",
    }
)
_HEADER_NAME = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
_MAX_HEADER_VALUE = 8192


def _fetch_options(r: _Reader, url: str, base: Path) -> FetchOptions | None:
    """A feed's `headers`, `user_agent` and `auth` (credentials read now, from the environment
    or a file), or None when it has none."""
    headers_t = r.take("headers", dict)
    user_agent = r.take("user_agent", str)
    auth_t = r.take("auth", dict)
    if headers_t is None and user_agent is None and auth_t is None:
        return None
    if urlsplit(url).scheme.lower() not in ("http", "https"):
        name = (
            "headers"
            if headers_t is not None
            else "user_agent"
            if user_agent is not None
            else "auth"
        )
        raise r.error(name, "applies to http(s) feeds only")
    if user_agent is not None and not _printable(user_agent):
        raise r.error("user_agent", "must be one line of printable ASCII text")
    headers: list[tuple[str, Secret]] = []
    seen: set[str] = set()
    for name, value in (headers_t or {}).items():
        key = f"headers.{name}"
        if not _HEADER_NAME.fullmatch(name):
            raise r.error(key, "is not a valid header name (letters, digits and !#$%&'*+-.^_`|~)")
        lowered = name.lower()
        if lowered in _OWN_HEADERS:
            hint = {"user-agent": "; use the feed's user_agent key"}.get(lowered, "")
            raise r.error(key, f"is set by the fetcher itself and cannot be configured{hint}")
        if lowered == "authorization" and auth_t is not None:
            raise r.error(key, "conflicts with the feed's auth table; give one of the two")
        if lowered in seen:
            raise r.error(key, "is given twice (header names are case-insensitive)")
        seen.add(lowered)
        text = _secret_value(r, key, value, base, literal_ok=True)
        if not _printable(text) or len(text) > _MAX_HEADER_VALUE:
            raise r.error(
                key,
                f"must be one line of printable ASCII text of at most"
                f" {_MAX_HEADER_VALUE} characters",
            )
        headers.append((name, Secret(text)))
    username = password = None
    if auth_t is not None:
        auth = _Reader(r.file, r.key("auth"), auth_t)
        username = auth.take("username", str)
        if "password" in auth.table:
            raise auth.error(
                "password",
                "is not read from the config: put it in a file"
                " (password_file) or the environment (password_env)",
            )
        password_env = auth.take("password_env", str)
        password_file = auth.take("password_file", str)
        auth.finish()
        if username is None:
            raise auth.error("username", "is required")
        if ":" in username or not _printable(username, allow_non_ascii=True):
            raise auth.error("username", "must be one line without a colon")
        if (password_env is None) == (password_file is None):
            raise auth.error("password_env", "give exactly one of password_env and password_file")
        if password_env is not None:
            text = _secret_value(auth, "password_env", {"env": password_env}, base)
        else:
            text = _secret_value(auth, "password_file", {"file": password_file}, base)
        if not _printable(text, allow_non_ascii=True):
            raise auth.error(
                "password_env" if password_env is not None else "password_file",
                "holds a password with control characters or line breaks",
            )
        password = Secret(text)
    return FetchOptions(
        origin=origin(url),
        headers=tuple(headers),
        user_agent=user_agent,
        username=username,
        password=password,
    )


def _secret_value(
    r: _Reader, key: str, value: object, base: Path, *, literal_ok: bool = False
) -> str:
    """A configured value given as a string, `{ env = "NAME" }` or `{ file = "path" }` (one
    line; a final line break is dropped)."""
    if isinstance(value, str) and literal_ok:
        return value
    if not isinstance(value, dict) or len(value) != 1 or not ({"env", "file"} & value.keys()):
        expected = 'a string, { env = "NAME" } or { file = "path" }' if literal_ok else "a string"
        raise r.error(key, f"must be {expected}")
    ((how, where),) = value.items()
    if not isinstance(where, str) or not where.strip():
        raise r.error(key, f"{how} must be a non-empty string")
    if how == "env":
        text = os.environ.get(where)
        if text is None:
            raise r.error(key, f"environment variable {where} is not set")
    else:
        if "\x00" in where:
            raise r.error(key, f"is not a usable path: {where!r}")
        path = Path(os.path.expanduser(os.path.expandvars(where)))
        path = path if path.is_absolute() else base / path
        try:
            regular = path.is_file()  # not a folder, a FIFO (which would block), a device
            if regular:
                with open(path, "rb") as fh:
                    raw = fh.read(_MAX_HEADER_VALUE + 3)
        except OSError as exc:
            raise r.error(key, f"cannot read {path}: {exc.strerror or exc}") from None
        if not regular:
            problem = "not found" if not path.exists() else "not a regular file"
            raise r.error(key, f"cannot read {path}: {problem}")
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError:
            raise r.error(key, f"{path} is not UTF-8 text") from None
        text = text.removesuffix("\n").removesuffix("\r")
    if not text:
        raise r.error(key, "is empty")
    return text


def _printable(text: str, *, allow_non_ascii: bool = False) -> bool:
    """One line without control characters (printable ASCII unless `allow_non_ascii`)."""
    if not text or text != text.strip():
        return False
    if allow_non_ascii:
        return text.isprintable()
    return all(" " <= c <= "~" for c in text)


def _digest(file: str, prefix: str, table: object, base: Path) -> DigestSettings:
    r = _Reader(file, prefix, table)
    name = r.take("name", str)
    if not name or not name.strip():
        raise r.error("name", "is required")
    path = r.take("path", str)
    if not path:
        raise r.error("path", "is required")
    fmt = r.take("format", str, "atom")
    if fmt not in DIGEST_FORMATS:
        raise r.error("format", f"must be one of {', '.join(DIGEST_FORMATS)}, got {fmt!r}")
    digest = DigestSettings(
        name=name.strip(),
        path=_resolve(base, path),
        format=fmt,
        since=r.duration("since", 86400) or 86400,
        min_sources=r.positive_int("min_sources", 1),
        tags=r.strings("tags"),
        language=r.take("language", str),
        query=_query(r),
        limit=r.positive_int("limit", 100),
        title=r.take("title", str),
        link=_web_url(r, "link"),
        feed_url=_web_url(r, "feed_url"),
        exclude_tags=r.strings("exclude_tags"),
        exclude_query=_query(r, "exclude_query"),
        block_titles=_patterns(r, "block_titles"),
        timezone=_timezone(r),
    )
    r.finish()
    return digest


def _timezone(r: _Reader) -> str:
    """An IANA time zone name ("Europe/Paris"), checked against the zone database."""
    from zoneinfo import ZoneInfo

    name: str = r.take("timezone", str, "UTC")
    try:
        ZoneInfo(name.strip())
    except (ValueError, OSError):  # ZoneInfoNotFoundError is a KeyError; bad names ValueError
        raise r.error(
            "timezone",
            f"unknown time zone {name!r} (an IANA name such as Europe/Paris or America/New_York)",
        ) from None
    except KeyError:
        raise r.error(
            "timezone",
            f"unknown time zone {name!r} (an IANA name such as Europe/Paris or America/New_York)",
        ) from None
    return name.strip()


def _patterns(r: _Reader, name: str) -> tuple[str, ...]:
    """Regular expressions that compile (case-insensitive), each at most 500 characters."""
    import re

    patterns = r.strings(name)
    for i, pattern in enumerate(patterns):
        if len(pattern) > 500:
            raise ConfigError(r.file, f"{r.key(name)}[{i}]", "is longer than 500 characters")
        try:
            re.compile(pattern, re.IGNORECASE)
        except re.error as exc:
            raise ConfigError(
                r.file, f"{r.key(name)}[{i}]", f"is not a regular expression: {exc}"
            ) from None
    return patterns


def _web_url(r: _Reader, name: str) -> str | None:
    """An absolute http(s) URL a feed reader can follow, or None when the key is absent."""
    from urllib.parse import urlsplit

    value: str | None = r.take(name, str)
    if value is None:
        return None
    value = value.strip()
    parts = urlsplit(value)
    if (
        parts.scheme.lower() not in ("http", "https")
        or not parts.hostname
        or any(c.isspace() or ord(c) < 32 for c in value)
    ):
        raise r.error(name, f"must be an absolute http(s):// URL, got {value!r}")
    return value
