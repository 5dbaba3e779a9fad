"""Every file of ../shared/corpora/feedparser-tests and ../shared/corpora/hostile through
parse + normalise, each in a worker process with a time limit and a memory cap.

Checks: only ParseError escapes; output strings are plain, NUL-free, surrogate-free NFC `str`;
dates are tz-aware UTC; links are http(s) or None; sanitised HTML carries no script or
javascript:/data: URL; nothing from /etc/passwd or /etc/hosts appears (external entities are
never read) and nothing connects to the XXE loopback port.
"""

from __future__ import annotations

import asyncio
import errno
import os
import socket
import time
import unicodedata
from collections import Counter
from dataclasses import fields
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from aggregator.errors import ParseError
from aggregator.model import Enclosure, Entry, ParsedFeed
from aggregator.normalise import normalise_entries
from aggregator.parse import parse_feed
from aggregator.pool import WorkerPool

SHARED = Path(__file__).resolve().parents[1].parent / "shared"
CORPORA = [SHARED / "corpora" / "feedparser-tests", SHARED / "corpora" / "hostile"]
NOW = datetime(2024, 6, 1, 12, 0, tzinfo=UTC)
PER_FILE_TIMEOUT = 30.0
WORKER_MEMORY_CAP = 1024 * 1024 * 1024

pytestmark = [
    pytest.mark.corpus,
    pytest.mark.skipif(
        not all(path.is_dir() for path in CORPORA),
        reason=f"shared corpora not found under {SHARED} (they live next to the repository)",
    ),
]


def _secrets() -> list[str]:
    """Strings that would only appear if a local file had been read as an entity."""
    found = []
    for path in (Path("/etc/passwd"), Path("/etc/hosts")):
        try:
            lines = path.read_text(encoding="utf-8", errors="replace").splitlines()
        except OSError:
            continue
        found += [
            line.strip() for line in lines if len(line.strip()) > 12 and not line.startswith("#")
        ][:3]
    return found


def _string_problems(where: str, value: str | None) -> list[str]:
    if value is None:
        return []
    problems = []
    if type(value) is not str:
        problems.append(f"{where}: {type(value).__name__}, not str")
        return problems
    if "\x00" in value:
        problems.append(f"{where}: contains NUL")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        problems.append(f"{where}: lone surrogate")
    if not unicodedata.is_normalized("NFC", value):
        problems.append(f"{where}: not NFC")
    return problems


def _entry_problems(entry: Entry, secrets: list[str]) -> list[str]:
    problems = []
    for field in fields(entry):
        value = getattr(entry, field.name)
        if isinstance(value, str):
            problems += _string_problems(field.name, value)
            problems += [f"{field.name}: leaked local file" for s in secrets if s in value]
        elif isinstance(value, datetime):
            if value.tzinfo is None or value.utcoffset() != timedelta(0):
                problems.append(f"{field.name}: not UTC")
            elif value > NOW:
                problems.append(f"{field.name}: in the future")
        elif isinstance(value, tuple):
            for item in value:
                if isinstance(item, Enclosure):  # a file: a safe absolute URL, a clean type
                    problems += _string_problems(f"{field.name}.url", item.url)
                    problems += _string_problems(f"{field.name}.media_type", item.media_type)
                    if not item.url.startswith(("http://", "https://")):
                        problems.append(f"{field.name}: not http(s): {item.url[:60]!r}")
                    if item.length is not None and item.length <= 0:
                        problems.append(f"{field.name}: length {item.length}")
                else:
                    problems += _string_problems(field.name, item)
    for url, what in ((entry.link, "link"), (entry.image, "image")):
        if url is not None and not url.startswith(("http://", "https://")):
            problems.append(f"{what}: not http(s): {url[:60]!r}")
    for html in (entry.summary, entry.content):
        lowered = html.lower()
        for bad in ("<script", "javascript:", "data:text", "onerror=", "onload=", "<iframe"):
            if bad in lowered:
                problems.append(f"html: contains {bad}")
    return problems


def check_file(path: str) -> tuple[str, list[str], int]:
    """Run one file through parse + normalise; return (outcome, problems, entry count)."""
    body = Path(path).read_bytes()
    url = Path(path).resolve().as_uri().replace("file://", "http://corpus.example")
    try:
        parsed = parse_feed(body, {}, url)
    except ParseError as exc:
        problems = _string_problems("ParseError.message", exc.message)
        return "parse_error", problems, 0
    assert isinstance(parsed, ParsedFeed)
    entries = normalise_entries(parsed, url, NOW)
    secrets = _secrets()
    problems = _string_problems("feed.problem", parsed.problem)
    for entry in entries:
        problems += _entry_problems(entry, secrets)
    return ("bozo" if parsed.problem else "ok"), problems, len(entries)


def _loopback_listener(port: int) -> socket.socket | None:
    """Listen where the XXE samples point, to notice any attempt to fetch them."""
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        listener.bind(("127.0.0.1", port))
    except OSError as exc:
        listener.close()
        if exc.errno in (errno.EACCES, errno.EADDRINUSE, errno.EPERM):
            return None
        raise
    listener.listen(8)
    listener.setblocking(False)
    return listener


def test_every_corpus_file_parses_cleanly_within_time_and_memory() -> None:
    files = sorted(str(p) for corpus in CORPORA for p in corpus.rglob("*") if p.is_file())
    assert len(files) > 2000
    listener = _loopback_listener(9)

    async def run_all() -> list[tuple[str, object]]:
        with WorkerPool(2, max_memory=WORKER_MEMORY_CAP) as pool:

            async def one(path: str) -> tuple[str, object]:
                try:
                    return path, await pool.run(check_file, path, timeout=PER_FILE_TIMEOUT)
                except BaseException as exc:  # a failure to report, not to stop on
                    return path, exc

            return await asyncio.gather(*(one(path) for path in files))

    started = time.perf_counter()
    try:
        results = asyncio.run(run_all())
        if listener is not None:
            with pytest.raises(BlockingIOError):
                listener.accept()  # nobody tried to fetch an external entity
    finally:
        if listener is not None:
            listener.close()
    elapsed = time.perf_counter() - started

    outcomes: Counter[str] = Counter()
    failures = []
    for path, result in results:
        name = os.path.relpath(path, SHARED)
        if isinstance(result, BaseException):
            failures.append(f"{name}: {type(result).__name__}: {result}")
            continue
        outcome, problems, _count = result  # type: ignore[misc]
        outcomes[outcome] += 1
        failures += [f"{name}: {problem}" for problem in problems]
    print(f"\n{len(files)} files in {elapsed:.1f} s: {dict(outcomes)}")
    assert not failures, "\n".join(failures[:50])
    # The corpus is mostly feeds: most files must give a feed, not an error.
    assert outcomes["ok"] + outcomes["bozo"] > 0.8 * len(files)


def test_hostile_samples_meet_their_specific_expectations() -> None:
    generated = SHARED / "corpora" / "hostile" / "generated"
    url = "http://hostile.example/feed"

    def parse(name: str) -> ParsedFeed:
        return parse_feed((generated / name).read_bytes(), {}, url)

    for name in ("gzip_bomb_1GB.rss.gz", "empty.xml", "html_not_feed.xml", "json_not_feed.json"):
        with pytest.raises(ParseError):
            parse(name)
    xss = normalise_entries(parse("xss_payloads.rss"), url, NOW)
    assert xss[0].title == "Title" and xss[0].link is None
    controls = normalise_entries(parse("nul_and_controls.rss"), url, NOW)
    assert controls[0].title == "abcd"
    assert parse("latin1_declared_utf8.rss").entries[0].title == "café crème"
    for name in ("xxe_file.rss", "external_dtd_file.rss"):
        assert not any(s in repr(parse(name)) for s in _secrets())
