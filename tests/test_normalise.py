"""normalise: fixtures with expected results for every rule, and idempotence properties."""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from aggregator.model import ParsedFeed, RawEntry
from aggregator.normalise import (
    _TRACKER_SRC,
    _VOLATILE,
    _collapse,
    _sanitised_plain_text,
    canonical_url,
    content_hash,
    normalise_entries,
    plain_text,
    sanitise_html,
)

DATA = Path(__file__).parent / "data" / "normalise"
NOW = datetime(2024, 6, 1, 12, 0, tzinfo=UTC)


def _load(name: str) -> Any:
    return json.loads((DATA / name).read_text(encoding="utf-8"))


URL_CASES = _load("canonical_urls.json")["cases"]
SANITISE_CASES = _load("sanitise.json")["cases"]
TEXT_CASES = _load("plain_text.json")["cases"]
ENTRY_CASES = _load("entries.json")["cases"]


@pytest.mark.parametrize(("url", "base", "expected"), URL_CASES)
def test_canonical_url_matches_fixture(url: str, base: str | None, expected: str | None) -> None:
    assert canonical_url(url, base) == expected


@pytest.mark.parametrize(("fragment", "base", "expected"), SANITISE_CASES)
def test_sanitise_html_matches_fixture(fragment: str, base: str | None, expected: str) -> None:
    assert sanitise_html(fragment, base) == expected


@pytest.mark.parametrize(("fragment", "expected"), TEXT_CASES)
def test_plain_text_matches_fixture(fragment: str, expected: str) -> None:
    assert plain_text(fragment) == expected


def _date(value: str | None) -> datetime | None:
    return datetime.fromisoformat(value) if value else None


def _raw(spec: dict[str, Any]) -> RawEntry:
    fields = dict(spec)
    for key in ("published", "updated"):
        fields[key] = _date(fields.get(key))
    fields["categories"] = tuple(fields.get("categories", ()))
    return RawEntry(**fields)


@pytest.mark.parametrize("case", ENTRY_CASES, ids=[c["name"] for c in ENTRY_CASES])
def test_normalise_entries_matches_fixture(case: dict[str, Any]) -> None:
    parsed = ParsedFeed(language=case["language"], entries=tuple(_raw(e) for e in case["entries"]))
    entries = normalise_entries(parsed, case["feed_url"], datetime.fromisoformat(case["now"]))
    assert len(entries) == len(case["expect"])
    for entry, wanted in zip(entries, case["expect"], strict=True):
        for key, value in wanted.items():
            if key == "guid_prefix":
                assert entry.guid.startswith(value)
                continue
            actual = getattr(entry, key)
            if isinstance(actual, datetime):
                assert actual.tzinfo is UTC
                actual = actual.isoformat()
            if isinstance(actual, tuple):
                actual = list(actual)
            assert actual == value, key


def _entry(**fields: Any) -> RawEntry:
    return RawEntry(**{"guid": "g", "title": "Title", **fields})


def _one(raw: RawEntry, now: datetime = NOW) -> Any:
    return normalise_entries(ParsedFeed(entries=(raw,)), "https://feed.example.com/rss", now)[0]


def test_hash_identity_is_stable_across_polls_when_the_entry_has_no_date() -> None:
    raw = RawEntry(title="No id", summary="same words")
    later = datetime(2024, 7, 1, tzinfo=UTC)
    assert _one(raw).guid == _one(raw, later).guid
    assert _one(raw).guid != _one(RawEntry(title="No id", summary="other words")).guid


def test_content_hash_changes_when_meaningful_content_changes() -> None:
    before = _one(_entry(content="<p>The council approved the budget.</p>"))
    after = _one(_entry(content="<p>The council rejected the budget.</p>"))
    retitled = _one(_entry(title="New title", content="<p>The council approved the budget.</p>"))
    assert len({before.content_hash, after.content_hash, retitled.content_hash}) == 3


def test_content_hash_ignores_markup_only_changes() -> None:
    plain = _one(_entry(content="<p>Same words here.</p>"))
    styled = _one(_entry(content="<div><p class='x'>Same   words <span>here.</span></p></div>"))
    assert plain.content_hash == styled.content_hash


def test_content_hash_ignores_a_timestamp_that_changes_on_every_poll() -> None:
    first = _one(_entry(content="<p>Live scores. Updated 10:42, 2024-06-01.</p>"))
    second = _one(_entry(content="<p>Live scores. Updated 11:07, 2024-06-02.</p>"))
    assert first.content_hash == second.content_hash
    assert content_hash("a", "b") != content_hash("a", "c")


def test_very_long_id_is_replaced_by_a_stable_digest() -> None:
    entry = _one(_entry(guid="x" * 5000))
    assert entry.guid.startswith("long-id:") and len(entry.guid) < 100
    assert entry.guid == _one(_entry(guid="x" * 5000)).guid


def test_twenty_megabyte_title_is_cut_to_a_title_sized_string() -> None:
    entry = _one(_entry(title="word " * 4_000_000))
    assert 0 < len(entry.title) <= 1024


def test_naive_now_is_taken_as_utc() -> None:
    entry = _one(RawEntry(guid="g"), datetime(2024, 6, 1, 12, 0))
    assert entry.published == NOW and entry.published.tzinfo is UTC


def test_normalise_does_not_depend_on_anything_but_its_arguments() -> None:
    parsed = ParsedFeed(entries=(_entry(content="<p>x</p>"), RawEntry(title="t")))
    first = normalise_entries(parsed, "https://f.example.com/", NOW)
    assert first == normalise_entries(parsed, "https://f.example.com/", NOW)


# ---- properties ---------------------------------------------------------------------------

_url_text = st.text(alphabet=st.characters(codec="utf-8", exclude_categories=("Cs",)), max_size=30)
_urls = st.one_of(
    _url_text,
    st.builds(
        lambda scheme, host, port, path, query, frag: f"{scheme}://{host}{port}{path}{query}{frag}",
        st.sampled_from(["http", "HTTPS", "https", "ftp", "javascript"]),
        st.from_regex(r"[A-Za-z0-9]{1,10}(\.[A-Za-z0-9]{1,10}){0,2}", fullmatch=True),
        st.sampled_from(["", ":80", ":443", ":8080", ":0"]),
        st.builds(lambda t: "/" + t, _url_text),
        st.builds(lambda t: "?" + t, _url_text) | st.just(""),
        st.builds(lambda t: "#" + t, _url_text) | st.just(""),
    ),
)


@settings(max_examples=400, deadline=None)
@given(
    _urls, st.sampled_from([None, "https://base.example.com/dir/feed.xml", "http://[::1]:8080/a/"])
)
def test_canonical_url_is_idempotent(url: str, base: str | None) -> None:
    once = canonical_url(url, base)
    if once is None:
        return
    assert once.startswith(("http://", "https://"))
    assert canonical_url(once) == once
    assert canonical_url(once, base) == once


_html = st.lists(
    st.one_of(
        st.text(max_size=20),
        st.sampled_from(
            [
                "<p>",
                "</p>",
                "<b>",
                "</b>",
                "<a href='/x?utm_source=1'>",
                "</a>",
                "<script>alert(1)</script>",
                "<img src='pic.png' width=1 height=1>",
                "<img src=x onerror=alert(1)>",
                "<iframe src=//e>",
                "&amp;",
                "&lt;",
                "<br>",
                "<a href='javascript:alert(1)'>",
                "<!-- c -->",
                "<table><tr><td>",
                "\x00",
            ]
        ),
    ),
    max_size=15,
).map("".join)


@settings(max_examples=300, deadline=None)
@given(_html, st.sampled_from([None, "https://base.example.com/a/b"]))
def test_sanitising_twice_is_sanitising_once(fragment: str, base: str | None) -> None:
    once = sanitise_html(fragment, base)
    assert sanitise_html(once, base) == once
    assert "<script" not in once and "javascript:" not in once and "onerror" not in once


@settings(max_examples=300, deadline=None)
@given(_html)
def test_plain_text_is_clean_and_stable(fragment: str) -> None:
    text = plain_text(fragment)
    assert "\x00" not in text and text == text.strip()
    assert plain_text(sanitise_html(fragment)) == plain_text(sanitise_html(sanitise_html(fragment)))


# Markup that html5ever parses in unusual ways, for the shortcut that reads sanitised HTML.
_tricky_html = st.lists(
    st.one_of(
        st.text(max_size=12),
        st.sampled_from(
            [
                "<p>",
                "</p>",
                "<div>",
                "</div>",
                "<b>",
                "</b>",
                "<pre>\n",
                "</pre>",
                "<br/>",
                "<table>",
                "<tr>",
                "<td>",
                "</td>",
                "</table>",
                "<li>",
                "<h2>",
                "<button>",
                "<marquee>",
                "<select>",
                "<option>",
                "<textarea>",
                "<title>",
                "<svg>",
                "<xmp>",
                "<a href='x'>",
                "</a>",
                '<p title="a>b <div> c">',
                '<abbr title="1 < 2">',
                "<img alt='<p>' src='http://e/x.png'>",
                "<!--",
                "-->",
                "<![CDATA[",
                "]]>",
                "&amp;",
                "&lt;",
                "&gt;",
                "&nbsp;",
                "&amp;lt;",
                "&copy;",
                "&",
                "<",
                ">",
                '"',
                "\xa0",
                "\u0338",
                "e\u0301",
                "\r\n",
                "\x0c",
                "\x00",
                "\u2000",
                "\x85",
            ]
        ),
    ),
    max_size=25,
).map("".join)


@settings(max_examples=500, deadline=None)
@given(_tricky_html, st.sampled_from([None, "https://base.example.com/a/b"]))
def test_plain_text_of_sanitised_html_needs_no_second_parse(
    fragment: str, base: str | None
) -> None:
    sanitised = sanitise_html(fragment, base)
    assert _sanitised_plain_text(sanitised) == plain_text(sanitised)


_WHITESPACE_RUN = re.compile(r"\s+")
_ALL_WHITESPACE = [c for c in range(0x3001) if chr(c).isspace()]


@settings(max_examples=300, deadline=None)
@given(st.text(alphabet=st.sampled_from([*map(chr, _ALL_WHITESPACE), "a", "é", "_", "\u200b"])))
def test_collapse_is_the_whitespace_regex(text: str) -> None:
    assert _collapse(text) == _WHITESPACE_RUN.sub(" ", text).strip()


# The volatile-token pattern as first written; normalise holds a faster form of it.
_VOLATILE_AS_WRITTEN = re.compile(
    r"\b\d{1,2}:\d{2}(?::\d{2})?(?:\s?[ap]\.?m\.?)?\b"
    r"|\b\d{4}-\d{2}-\d{2}(?:[T ]\d{2}:\d{2}(?::\d{2}(?:\.\d+)?)?(?:Z|[+-]\d{2}:?\d{2})?)?\b"
    r"|\b\d{1,2}/\d{1,2}/\d{2,4}\b"
    r"|\b\d+\s+(?:second|minute|hour|day)s?\s+ago\b",
    re.IGNORECASE,
)
_time_text = st.lists(
    st.sampled_from(
        [
            "1",
            "12",
            "2024",
            "0",
            "\u0663",
            ":",
            "-",
            "/",
            " ",
            "\n",
            "a",
            "p",
            "m",
            ".",
            "A",
            "M",
            "T",
            "Z",
            "+",
            "x",
            "_",
            "\xe9",
            "seconds",
            "Minute",
            "HOURS",
            "day",
            "ago",
            "\u017f",
            "10:42",
            "2024-05-01",
            "01/05/2024",
            "5 minutes ago",
            "at 9:30 p.m.",
        ]
    ),
    max_size=20,
).map("".join)


@settings(max_examples=500, deadline=None)
@given(_time_text)
def test_volatile_tokens_are_those_of_the_pattern_as_written(text: str) -> None:
    assert _VOLATILE.sub("#", text) == _VOLATILE_AS_WRITTEN.sub("#", text)


# The tracker pattern as first written; normalise holds a faster form of it.
_TRACKER_AS_WRITTEN = re.compile(
    r"(?:feeds\.feedburner\.com/~r/|feeds\.feedburner\.com/~ff/|pixel\.wp\.com/|stats\.wordpress\.com/"
    r"|google-analytics\.com/|pixel\.quantserve\.com/|doubleclick\.net/|/pixel\.gif|/tracking\.gif"
    r"|/beacon\.gif|/open\.gif)",
    re.IGNORECASE,
)
_tracker_text = st.lists(
    st.sampled_from(
        [
            "feeds.feedburner.com/~r/",
            "FEEDS.FeedBurner.com/~ff/",
            "feeds.feedburner.com/~x/",
            "pixel.wp.com/",
            "pixel.quantserve.com/",
            "stats.wordpreſs.com/",
            "doubleclick.net/",
            "google-analytics.com/",
            "/pixel.gif",
            "/tracKing.gif",
            "/beacon.GIF",
            "/open.gif",
            "/opengif",
            "pixel",
            ".gif",
            "/",
            "http://",
            "e.com",
            "?",
            "s",
            "x",
            "\u212a",
        ]
    ),
    max_size=6,
).map("".join)


@settings(max_examples=500, deadline=None)
@given(_tracker_text)
def test_tracker_urls_are_those_of_the_pattern_as_written(url: str) -> None:
    assert bool(_TRACKER_SRC.search(url)) == bool(_TRACKER_AS_WRITTEN.search(url))


@settings(max_examples=300, deadline=None)
@given(_tricky_html, _tricky_html, _tricky_html)
def test_entry_text_is_title_summary_and_content_text_collapsed(
    title: str, summary: str, content: str
) -> None:
    raw = RawEntry(guid="g", link=None, title=title, summary=summary, content=content)
    entry = normalise_entries(ParsedFeed(entries=(raw,)), "http://e.example/", NOW)[0]
    summary_text = plain_text(entry.summary)
    content_text = plain_text(entry.content)
    if content_text.startswith(summary_text):
        body = content_text
    else:
        body = f"{summary_text} {content_text}"
    assert entry.text == _collapse(f"{entry.title} {body}")
