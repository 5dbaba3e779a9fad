"""parse.parse_feed: fixtures with expected results, and the hostile shapes it must survive."""

from __future__ import annotations

import gzip
import json
import pickle
import re
import zlib
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from aggregator.errors import ParseError
from aggregator.model import ParsedFeed
from aggregator.parse import parse_feed

DATA = Path(__file__).parent / "data" / "parse"
CASES = sorted(DATA.glob("*.json"))


def _feed_file(case: Path, spec: dict[str, Any]) -> Path:
    if "feed_file" in spec:
        return DATA / spec["feed_file"]
    return case.with_suffix(".xml")


def _as_jsonable(value: Any) -> Any:
    if isinstance(value, datetime):
        assert value.tzinfo is not None
        return value.isoformat()
    if isinstance(value, tuple):
        return list(value)
    return value


@pytest.mark.parametrize("case", CASES, ids=[c.stem for c in CASES])
def test_fixture_parses_to_expected_fields(case: Path) -> None:
    spec = json.loads(case.read_text(encoding="utf-8"))
    body = _feed_file(case, spec).read_bytes()
    if "error" in spec:
        with pytest.raises(ParseError) as raised:
            parse_feed(body, spec["headers"], spec["url"])
        assert spec["error"] in raised.value.message
        assert raised.value.url == spec["url"]
        return
    feed = parse_feed(body, spec["headers"], spec["url"])
    expect = spec["expect"]
    for key in ("title", "link", "language", "ttl"):
        if key in expect:
            assert getattr(feed, key) == expect[key], key
    if "problem" in expect:
        if expect["problem"] is None:
            assert feed.problem is None
        else:
            assert feed.problem is not None and expect["problem"] in feed.problem
    assert len(feed.entries) == len(expect["entries"])
    for entry, wanted in zip(feed.entries, expect["entries"], strict=True):
        for key, value in wanted.items():
            assert _as_jsonable(getattr(entry, key)) == value, key


def _rss(item_xml: str = "", prolog: str = "") -> bytes:
    return (
        f'<?xml version="1.0" encoding="utf-8"?>{prolog}<rss version="2.0"><channel>'
        f"<title>t</title><link>http://example.org/</link><description>d</description>"
        f"<item><guid>g1</guid>{item_xml}</item></channel></rss>"
    ).encode()


def test_body_over_the_size_cap_is_a_parse_error() -> None:
    with pytest.raises(ParseError, match="over the 1,000 byte cap"):
        parse_feed(_rss("<title>" + "x" * 2000 + "</title>"), {}, "http://e/", max_bytes=1000)


@pytest.mark.parametrize("body", [b"", b"   \n\t  "])
def test_empty_body_is_a_parse_error(body: bytes) -> None:
    with pytest.raises(ParseError, match="empty"):
        parse_feed(body, {}, "http://e/")


@pytest.mark.parametrize("compress", [gzip.compress, zlib.compress])
def test_compressed_body_is_refused_not_inflated(compress: Any) -> None:
    with pytest.raises(ParseError, match="compressed"):
        parse_feed(compress(_rss()), {}, "http://e/")


def test_long_author_is_cut_before_feedparsers_quadratic_email_regex() -> None:
    # 30,000 characters take feedparser 6.0.14 over 10 s unbounded; cut, they take milliseconds.
    author = "a@" + "a-" * 15000
    feed = parse_feed(_rss(f"<title>x</title><author>{author}</author>"), {}, "http://e/")
    assert feed.entries[0].author is not None
    assert len(feed.entries[0].author) <= 256


def test_external_entity_file_is_never_read(tmp_path: Path) -> None:
    secret = tmp_path / "secret.txt"
    secret.write_text("TOP-SECRET-CONTENT", encoding="utf-8")
    dtd = tmp_path / "evil.dtd"
    dtd.write_text(f'<!ENTITY leak SYSTEM "{secret.as_uri()}">', encoding="utf-8")
    bodies = [
        _rss("<title>&xxe;</title>", f'<!DOCTYPE rss [<!ENTITY xxe SYSTEM "{secret.as_uri()}">]>'),
        _rss("<title>&leak;</title>", f'<!DOCTYPE rss SYSTEM "{dtd.as_uri()}">'),
        _rss(
            "<title>&leak;</title>", f'<!DOCTYPE rss [<!ENTITY % p SYSTEM "{dtd.as_uri()}"> %p;]>'
        ),
    ]
    for body in bodies:
        feed = parse_feed(body, {}, "http://e/")
        assert "TOP-SECRET" not in repr(feed)


def test_large_internal_entity_expansion_is_refused() -> None:
    prolog = '<!DOCTYPE rss [<!ENTITY big "' + "B" * 10_000 + '">]>'
    body = _rss("<title>" + "&big;" * 1000 + "</title>", prolog)
    feed = parse_feed(body, {}, "http://e/")
    assert feed.problem is not None and "entity" in feed.problem
    assert "B" * 10_000 not in (feed.entries[0].title or "")


def test_small_internal_entity_is_still_expanded() -> None:
    body = _rss("<title>&co; news</title>", '<!DOCTYPE rss [<!ENTITY co "Acme">]>')
    assert parse_feed(body, {}, "http://e/").entries[0].title == "Acme news"


def test_nested_entities_do_not_explode() -> None:
    decls = '<!ENTITY a "aaaaaaaaaa">' + "".join(
        f'<!ENTITY {n} "{("&" + p + ";") * 10}">'
        for p, n in zip("abcdefgh", "bcdefghi", strict=True)
    )
    feed = parse_feed(_rss("<title>&i;</title>", f"<!DOCTYPE rss [{decls}]>"), {}, "http://e/")
    assert len(repr(feed)) < 10_000


def test_backslash_in_entity_value_does_not_crash_feedparser() -> None:
    body = b'<!DOCTYPE rss [\n<!ENTITY p "C:\\data">\n]><rss version="2.0"><channel><title>t</title><item><guid>1</guid></item></channel></rss>'
    feed = parse_feed(body, {}, "http://e/")
    assert feed.entries[0].guid == "1"
    assert feed.problem is not None and "DOCTYPE removed" in feed.problem


def test_utf16_without_bom_or_declaration_is_recognised() -> None:
    text = '<rss version="2.0"><channel><title>Ünïcode</title><item><guid>u</guid></item></channel></rss>'
    for codec in ("utf-16-le", "utf-16-be"):
        feed = parse_feed(text.encode(codec), {}, "http://e/")
        assert feed.title == "Ünïcode"
        assert feed.entries[0].guid == "u"


def test_deeply_nested_json_is_a_parse_error_not_a_crash() -> None:
    body = (
        b'{"version":"https://jsonfeed.org/version/1.1","items":'
        + b"[" * 100_000
        + b"]" * 100_000
        + b"}"
    )
    with pytest.raises(ParseError):
        parse_feed(body, {"content-type": "application/feed+json"}, "http://e/")


def test_javascript_link_is_passed_on_raw_for_normalise_to_reject() -> None:
    # parse keeps what the feed says; normalise decides what is safe (see test_normalise).
    feed = parse_feed(_rss("<link>javascript:alert(1)</link>"), {}, "http://e/")
    assert feed.entries[0].link == "javascript:alert(1)"


def test_parsed_feed_survives_pickling_for_worker_processes() -> None:
    feed = parse_feed((DATA / "rss20_full.xml").read_bytes(), {}, "https://news.example.com/f")
    assert pickle.loads(pickle.dumps(feed)) == feed


_VALID = (DATA / "rss20_full.xml").read_bytes()


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(max_size=400), st.integers(min_value=0, max_value=len(_VALID)))
def test_only_parse_error_escapes_for_any_bytes(noise: bytes, at: int) -> None:
    for body in (noise, _VALID[:at] + noise + _VALID[at:]):
        try:
            feed = parse_feed(body, {}, "http://e/")
        except ParseError:
            continue
        assert isinstance(feed, ParsedFeed)


@settings(max_examples=100, deadline=None)
@given(st.text(max_size=200))
def test_only_parse_error_escapes_for_any_text_in_a_title(title: str) -> None:
    escaped = title.replace("&", "&amp;").replace("<", "&lt;")
    for body in (_rss(f"<title>{escaped}</title>"), _rss(f"<title>{title}</title>")):
        try:
            body.decode("utf-8")
        except UnicodeDecodeError:
            continue
        try:
            parse_feed(body, {}, "http://e/")
        except ParseError:
            pass


def test_xml_served_as_json_is_still_read_as_xml() -> None:
    feed = parse_feed(_rss("<title>x</title>"), {"Content-Type": "application/json"}, "http://e/")
    assert feed.entries[0].guid == "g1"


def test_thousands_of_entity_declarations_are_dropped_not_counted() -> None:
    decls = "".join(f'<!ENTITY e{i} "v">' for i in range(5000))
    feed = parse_feed(_rss("<title>&e1;</title>", f"<!DOCTYPE rss [{decls}]>"), {}, "http://e/")
    assert feed.problem is not None and "5000 entity declarations removed" in feed.problem
    assert feed.entries[0].guid == "g1"


def test_text_split_by_expat_reaches_feedparser_in_one_piece(monkeypatch: Any) -> None:
    # expat reports "a&lt;b&amp;c" line by line and entity by entity; feedparser must get each
    # run of text once (its per-piece handling was a third of the parse time).
    import feedparser  # type: ignore[import-untyped]

    parse_feed(_rss(), {}, "http://e/")  # tunes feedparser before the spy goes in
    pieces: list[str] = []
    original = feedparser.mixin._FeedParserMixin.handle_data

    def spy(self: Any, text: str, escape: int = 1) -> None:
        pieces.append(text)
        original(self, text, escape)

    monkeypatch.setattr(feedparser.mixin._FeedParserMixin, "handle_data", spy)
    feed = parse_feed(
        _rss("<description>one\ntwo &lt;b&gt;three&lt;/b&gt;\nfour &amp; five</description>"),
        {},
        "http://e/",
    )
    assert "one\ntwo <b>three</b>\nfour & five" in pieces
    assert feed.entries[0].summary == "one\ntwo <b>three</b>\nfour & five"


def test_xhtml_content_split_by_expat_is_escaped_as_a_whole() -> None:
    body = (
        b'<?xml version="1.0" encoding="utf-8"?><feed xmlns="http://www.w3.org/2005/Atom">'
        b"<title>t</title><id>urn:f</id><entry><id>urn:e</id><title>x</title>"
        b'<content type="xhtml"><div xmlns="http://www.w3.org/1999/xhtml">\n'
        b"  <p>a &lt; b\n &amp; c &gt; d</p>\n  <p>e&#38;f</p>\n</div></content></entry></feed>"
    )
    feed = parse_feed(body, {}, "http://e/")
    assert feed.entries[0].content == "<p>a &lt; b\n &amp; c &gt; d</p>\n  <p>e&amp;f</p>"


def test_windows_1252_fixup_table_maps_every_character_as_feedparsers_dict() -> None:
    import feedparser  # type: ignore[import-untyped]

    from aggregator.parse import _cp1252_table

    parse_feed(_rss(), {}, "http://e/")  # tunes feedparser
    table = feedparser.mixin._cp1252
    assert isinstance(table, tuple)  # the tuned table is in place
    original = feedparser.html._cp1252  # the dict it replaces, still used by feedparser.html
    assert table == _cp1252_table(original)
    every = "".join(map(chr, range(0x110000)))
    assert every.translate(table) == every.translate(original)
    body = _rss("<title>a\u0080b\u0093c\u0081 \u00e9\U0001f600</title>")
    assert (
        parse_feed(body, {}, "http://e/").entries[0].title
        == "a\u20acb\u201cc\u0081 \u00e9\U0001f600"
    )


def test_nested_xml_base_is_joined_per_element_with_the_remembered_join() -> None:
    import feedparser  # type: ignore[import-untyped]

    body = (
        b'<?xml version="1.0" encoding="utf-8"?>'
        b'<feed xmlns="http://www.w3.org/2005/Atom" xml:base="http://a.example/dir/">'
        b"<title>t</title><id>urn:f</id>"
        b'<entry xml:base="sub/"><id>urn:1</id><title>1</title><link href="x.html"/></entry>'
        b'<entry><id>urn:2</id><title>2</title><link href="y.html"/></entry>'
        b'<entry xml:base="sub/"><id>urn:3</id><title>3</title><link href="z.html"/></entry>'
        b"</feed>"
    )
    feed = parse_feed(body, {}, "http://e/")
    assert feedparser.mixin.make_safe_absolute_uri is not feedparser.urls.make_safe_absolute_uri
    assert [e.link for e in feed.entries] == [
        "http://a.example/dir/sub/x.html",
        "http://a.example/dir/y.html",
        "http://a.example/dir/sub/z.html",
    ]


def test_content_parameters_read_as_plain_dict_give_feedparsers_answers() -> None:
    import base64

    import feedparser  # type: ignore[import-untyped]

    encoded = base64.b64encode(b"<p>decoded</p>").decode()
    body = (
        '<?xml version="1.0" encoding="utf-8"?><feed version="0.3" '
        'xmlns="http://purl.org/atom/ns#"><title>t</title>'
        "<entry><id>urn:1</id><title>1</title>"
        f'<content type="text/html" mode="base64">{encoded}</content>'
        '<summary type="text/plain">a &lt;b&gt;bold&lt;/b&gt; claim</summary></entry></feed>'
    ).encode()
    feed = parse_feed(body, {}, "http://e/")  # also tunes feedparser
    assert feed.entries[0].content == "<p>decoded</p>"
    assert feed.entries[0].summary == "a &lt;b&gt;bold&lt;/b&gt; claim"  # Atom text stays text
    result = feedparser.parse(body, sanitize_html=False)
    entry = result.entries[0]
    assert type(entry.summary_detail) is feedparser.util.FeedParserDict
    assert type(entry.content[0]) is feedparser.util.FeedParserDict
    assert entry.content[0]["type"] == "text/html" and "base64" not in entry.content[0]


def _drop_every_invalid_charref(data: bytes) -> bytes:
    """Reference: check every numeric character reference (parse skips the surely valid)."""

    def keep(match: re.Match[bytes]) -> bytes:
        digits = match.group(1) or match.group(2)
        if len(digits.lstrip(b"0")) > 8:
            return b""
        code = int(digits, 16 if match.group(1) else 10)
        valid = code in (9, 10, 13) or 0x20 <= code <= 0xD7FF or 0xE000 <= code <= 0xFFFD
        return match.group(0) if valid or 0x10000 <= code <= 0x10FFFF else b""

    return re.sub(rb"&#(?:[xX]([0-9a-fA-F]+)|([0-9]+));", keep, data)


_charref_text = st.lists(
    st.one_of(
        st.integers(0, 0x11FFFF).map(lambda c: f"&#{c};"),
        st.integers(0, 0x11FFFF).map(lambda c: f"&#x{c:x};"),
        st.integers(0, 0x11FFFF).map(lambda c: f"&#X{c:04X};"),
        st.integers(0, 0xFFFF).map(lambda c: f"&#00{c};"),
        st.sampled_from(["&#", "&#x", ";", "&", "#", "1", "a", "&#xD7FF;", "&#xD800;", "&#31;"]),
    ),
    max_size=12,
).map(lambda parts: "".join(parts).encode())


@settings(max_examples=500, deadline=None)
@given(_charref_text)
def test_only_non_xml_charrefs_are_dropped(data: bytes) -> None:
    from aggregator.parse import _drop_invalid_charrefs

    problems: list[str] = []
    assert _drop_invalid_charrefs(data, problems) == _drop_every_invalid_charref(data)


def test_errors_cross_the_worker_pipe_whole() -> None:
    """Every error of `errors` pickles with its fields (a worker sends a ParseError back as it
    is), and a failure kind is one word from FailureKind."""
    import pickle

    from aggregator.errors import ConfigError, FeedError, ParseError
    from aggregator.model import FailureKind

    parse = pickle.loads(pickle.dumps(ParseError("u", "no feed", kind=FailureKind.NOT_A_FEED)))
    assert (type(parse), parse.url, parse.message, parse.kind) == (
        ParseError,
        "u",
        "no feed",
        "not_a_feed",
    )
    config = pickle.loads(pickle.dumps(ConfigError("a.toml", "feeds[0].url", "bad")))
    assert (config.path, config.key, config.problem, str(config)) == (
        "a.toml",
        "feeds[0].url",
        "bad",
        "a.toml: feeds[0].url: bad",
    )
    feed = pickle.loads(pickle.dumps(FeedError("u", "m", status=503)))
    assert (feed.status, feed.kind) == (503, "network")
    assert FailureKind("too_large") is FailureKind.TOO_LARGE and FailureKind.GONE == "gone"


# --- feedparser's tuning: one unit, all or nothing -------------------------------------------

FEEDPARSER_TESTS = (
    Path(__file__).resolve().parents[1].parent / "shared" / "corpora" / "feedparser-tests"
)
DUMP = Path(__file__).parent / "parse_dump.py"


def _dump(*args: str, files: list[Path]) -> tuple[list[dict[str, Any]], str]:
    """parse_dump.py in a process of its own (the tuning is process-wide): results, stderr."""
    import subprocess
    import sys

    done = subprocess.run(
        [sys.executable, str(DUMP), *args, *map(str, files)],
        capture_output=True,
        text=True,
        timeout=600,
        check=True,
    )
    return [json.loads(line) for line in done.stdout.splitlines()], done.stderr


def _without_identity(result: Any) -> Any:
    """A parse result without the guid and link fields (the tuning's documented change)."""
    if not isinstance(result, dict):
        return result
    out = {k: v for k, v in result.items() if k not in ("guid", "link")}
    if isinstance(out.get("entries"), list):
        out["entries"] = [_without_identity(e) for e in out["entries"]]
    return out


def test_feedparser_tuning_changes_nothing_but_its_documented_guid_rule() -> None:
    # Every feed file of the repository, and feedparser's own test corpus when present, parsed
    # tuned and untuned: the same result, except that a relative RSS/Atom id stays as given
    # (untuned feedparser resolves it against the feed URL, and derives the link from it).
    files = sorted(
        p
        for p in Path(__file__).parent.joinpath("data").rglob("*")
        if p.suffix in (".xml", ".atom", ".rss", ".json")
        and p.is_file()
        and "export" not in p.parts
    )
    if FEEDPARSER_TESTS.exists():
        files += sorted(FEEDPARSER_TESTS.rglob("*.xml"))
    tuned, tuned_log = _dump(files=files)
    untuned, _ = _dump("--untuned", files=files)
    assert "ERROR" not in tuned_log, tuned_log  # this feedparser has every internal tuned
    assert len(tuned) == len(untuned) == len(files)
    for a, b in zip(tuned, untuned, strict=True):
        if a != b:
            assert _without_identity(a["result"]) == _without_identity(b["result"]), a["file"]
    # (9 of feedparser's 2,242 files differ, and 4 of the repository's: each about an id.)


def test_a_missing_feedparser_internal_leaves_feedparser_as_shipped_and_says_so_once() -> None:
    # As if a feedparser upgrade had renamed one internal the tuning needs: nothing is
    # patched (not even the internals that are there), feeds still parse, one error is logged.
    files = [Path(__file__).parent / "data" / "feeds" / "relative_guid.xml"] * 2
    tuned, _ = _dump(files=files)
    results, log = _dump("--hook", "_renamed_in_a_later_feedparser", files=files)
    untuned, _ = _dump("--untuned", files=files)
    assert results == untuned != tuned  # the guid "tides/november" is kept only when tuned
    assert tuned[0]["result"]["entries"][0]["guid"] == "tides/november"
    assert all("error" not in r["result"] for r in results)
    assert log.count("ERROR") == 1 and "_renamed_in_a_later_feedparser" in log
