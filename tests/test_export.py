"""Digests, HTML page and OPML: valid formats, no active content, same input gives same bytes."""

from __future__ import annotations

import dataclasses
import json
import re
import sqlite3
import tomllib
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from urllib.parse import urlsplit

import feedparser
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from lxml import etree
from lxml import html as lxml_html

from aggregator import export
from aggregator.errors import ConfigError
from aggregator.model import Digest, DigestStory, FeedSettings, Source

DATA = Path(__file__).parent / "data" / "export"
SHARED = Path(__file__).resolve().parents[1].parent / "shared"
SCHEMAS = SHARED / "schemas"
ATOM = "{http://www.w3.org/2005/Atom}"
PREFIX = "tag:aggregator,2026:"
needs_schemas = pytest.mark.skipif(
    not (SCHEMAS / "atom-rfc4287.rng").exists(),
    reason=f"schemas not found at {SCHEMAS} (../shared is absent in this checkout)",
)


def when(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


def load_digest(source: str | Path) -> Digest:
    """A Digest from a JSON fixture: a name under tests/data/export/, or any path."""
    raw = json.loads((DATA / source).read_text(encoding="utf-8"))
    stories = tuple(
        DigestStory(
            story_id=s["story_id"],
            title=s["title"],
            link=s["link"],
            summary=s["summary"],
            first_seen=when(s["first_seen"]),
            updated=when(s["updated"]),
            sources=tuple(
                Source(src["outlet"], src["title"], src["link"], when(src["published"]))
                for src in s["sources"]
            ),
            categories=tuple(s.get("categories", ())),
            language=s.get("language"),
        )
        for s in raw["stories"]
    )
    return Digest(
        title=raw["title"],
        generated_at=when(raw["generated_at"]),
        stories=stories,
        link=raw.get("link"),
        feed_url=raw.get("feed_url"),
    )


@pytest.fixture(scope="module")
def digest() -> Digest:
    return load_digest("digest.json")


@pytest.fixture(scope="module")
def hostile() -> Digest:
    return load_digest("hostile.json")


# --- checking for active content ------------------------------------------------------------

DANGEROUS_ELEMENTS = {
    "script",
    "iframe",
    "object",
    "embed",
    "svg",
    "math",
    "form",
    "base",
    "frame",
    "frameset",
    "applet",
    "link",
    "img",
    "video",
    "audio",
    "input",
}
URL_ATTRIBUTES = {"href", "src", "action", "formaction", "xlink:href", "background", "poster"}


def assert_inert_html(markup: str, *, page: bool = False) -> None:
    """Parse HTML the way a browser would and fail on anything that could run or load."""
    if page:
        root = lxml_html.document_fromstring(markup)
    else:
        root = lxml_html.fragment_fromstring(markup, create_parent="div")
    for element in root.iter():
        if not isinstance(element.tag, str):
            continue
        tag = element.tag.lower()
        if tag == "img" and page and element.get("class") == "lead":
            # The page's one kind of image: a story's lead image, from http(s) (checked with
            # the other URL attributes below), loaded lazily and sent without a referrer.
            assert element.get("loading") == "lazy", "lead image not lazy"
            assert element.get("referrerpolicy") == "no-referrer", "lead image sends a referrer"
        else:
            assert tag not in DANGEROUS_ELEMENTS, f"<{tag}> in output"
        if tag == "style":
            assert page, "<style> inside a feed item"
            assert "url(" not in (element.text or "") and "@import" not in (element.text or "")
        if tag == "meta":
            assert (element.get("http-equiv") or "").lower() != "refresh"
        for name, value in element.attrib.items():
            assert not name.lower().startswith("on"), f"event handler {name}={value!r}"
            assert name.lower() != "style", "inline style attribute"
            if name.lower() in URL_ATTRIBUTES:
                assert urlsplit(value).scheme in ("http", "https"), f"{name}={value!r}"


# The one image an output may hold: the HTML digest's lead image of a story, from http(s),
# lazy, without a referrer (feed items carry images only as URLs: enclosures, thumbnails).
LEAD_IMAGE = re.compile(
    rb'<img class="lead" src="https?://[^"<>\s]+" alt="" loading="lazy" decoding="async"'
    rb' referrerpolicy="no-referrer">'
)


def assert_inert_bytes(output: bytes) -> None:
    lowered = LEAD_IMAGE.sub(b"", output).lower()
    for needle in (
        b"<script",
        b"javascript:",
        b"vbscript:",
        b"data:text",
        b"<iframe",
        b"<svg",
        b"<img",
    ):
        assert needle not in lowered, f"{needle!r} in output"


def all_formats(d: Digest) -> dict[str, bytes]:
    return {fmt: export.render(d, fmt, id_prefix=PREFIX) for fmt in export.FORMATS}


# --- Atom -----------------------------------------------------------------------------------


@needs_schemas
def test_atom_validates_against_rfc4287_relax_ng(digest: Digest, hostile: Digest) -> None:
    schema = etree.RelaxNG(etree.parse(str(SCHEMAS / "atom-rfc4287.rng")))
    for d in (digest, hostile, dataclasses.replace(digest, stories=(), link=None, feed_url=None)):
        document = etree.fromstring(export.render_atom(d, id_prefix=PREFIX))
        assert schema.validate(document), schema.error_log


def test_atom_reparses_with_feedparser_without_bozo(digest: Digest) -> None:
    parsed = feedparser.parse(export.render_atom(digest, id_prefix=PREFIX))
    assert not parsed.bozo, parsed.get("bozo_exception")
    assert parsed.version == "atom10"
    assert [e.id for e in parsed.entries] == [
        "tag:aggregator,2026:story/4021",
        "tag:aggregator,2026:story/4019",
        "tag:aggregator,2026:story/3990",
    ]
    beirut = parsed.entries[0]
    assert beirut.title == "Huge explosion rocks Beirut port, hundreds injured"
    assert beirut.link == "https://www.example-broadcaster.co.uk/news/world-middle-east-53660000"
    assert beirut.updated == "2020-08-05T09:02:00Z"
    assert beirut.published == "2020-08-04T15:20:11Z"
    assert [t.term for t in beirut.tags] == ["world", "middle east"]
    assert beirut.summary.startswith("A massive blast in the Lebanese capital's port area")
    # Every outlet, with its link, in the "also reported by" list.
    content = beirut.content[0].value
    for outlet in (
        "Example Broadcaster",
        "The Daily Example",
        "Example Herald (NZ)",
        "Wire Service",
    ):
        assert outlet in content
    related = {link.href for link in beirut.links if link.rel == "related"}
    assert "https://daily.example.com/world/2020/aug/04/beirut-explosion" in related
    # Times given in another zone come out in UTC.
    assert parsed.entries[2].published == "2020-08-04T18:00:00Z"


def test_atom_marks_languages_per_entry_when_they_differ(digest: Digest) -> None:
    root = etree.fromstring(export.render_atom(digest, id_prefix=PREFIX))
    lang = "{http://www.w3.org/XML/1998/namespace}lang"
    assert root.get(lang) is None  # English and French stories: no single feed language
    assert [e.get(lang) for e in root.iter(ATOM + "entry")] == ["en", "en", "fr"]


# --- RSS ------------------------------------------------------------------------------------


def test_rss_is_well_formed_rss_2_with_stable_non_permalink_guids(digest: Digest) -> None:
    output = export.render_rss(digest, id_prefix=PREFIX)
    root = etree.fromstring(output)
    assert root.tag == "rss" and root.get("version") == "2.0"
    channel = root.find("channel")
    assert channel is not None
    for required in ("title", "link", "description"):
        assert channel.findtext(required)
    guids = channel.findall("item/guid")
    assert [g.text for g in guids] == [f"{PREFIX}story/{n}" for n in (4021, 4019, 3990)]
    assert {g.get("isPermaLink") for g in guids} == {"false"}
    parsed = feedparser.parse(output)
    assert not parsed.bozo, parsed.get("bozo_exception")
    assert parsed.version == "rss20"
    first = parsed.entries[0]
    assert first.id == f"{PREFIX}story/4021"
    assert first.link.startswith("https://www.example-broadcaster.co.uk/")
    assert first.published_parsed[:6] == (2020, 8, 4, 15, 20, 11)
    assert "Wire Service" in first.summary and "http://wire.example.net/article/idUSKCN250" in (
        first.summary
    )
    assert [t.term for t in first.tags] == ["world", "middle east"]
    # The query string's & survives escaping both ways.
    assert (
        parsed.entries[1].link
        == "https://local.example.com/2020/08/05/cafes-reopen?utm_source=feed&x=1"
    )


# --- JSON Feed ------------------------------------------------------------------------------


@needs_schemas
def test_json_feed_validates_against_json_feed_1_1_schema(digest: Digest, hostile: Digest) -> None:
    import jsonschema

    schema = json.loads((SCHEMAS / "jsonfeed-1.1.schema.json").read_text(encoding="utf-8"))
    validator_class = jsonschema.validators.validator_for(schema)
    validator = validator_class(schema, format_checker=validator_class.FORMAT_CHECKER)
    for d in (digest, hostile, dataclasses.replace(digest, stories=())):
        document = json.loads(export.render_json_feed(d, id_prefix=PREFIX))
        errors = sorted(validator.iter_errors(document), key=str)
        assert not errors, [e.message for e in errors]


def test_json_feed_items_carry_ids_dates_tags_and_sources(digest: Digest) -> None:
    document = json.loads(export.render_json_feed(digest, id_prefix=PREFIX))
    assert document["version"] == "https://jsonfeed.org/version/1.1"
    assert document["feed_url"] == "https://news.example.org/digest/world.atom"
    first = document["items"][0]
    assert first["id"] == f"{PREFIX}story/4021"
    assert first["date_published"] == "2020-08-04T15:20:11Z"
    assert first["date_modified"] == "2020-08-05T09:02:00Z"
    assert first["tags"] == ["world", "middle east"]
    assert first["language"] == "en"
    # Oldest report first, whatever order the store loaded them in.
    assert [s["outlet"] for s in first["_aggregator"]["sources"]] == [
        "Example Broadcaster",
        "Wire Service",
        "The Daily Example",
        "Example Herald (NZ)",
    ]
    french = document["items"][2]
    assert french["_aggregator"]["sources"][1] == {
        "outlet": "Quotidien Exemple",
        "title": "Beyrouth sous le choc",
        "date_published": "2020-08-05T04:00:00Z",
    }


# --- HTML page ------------------------------------------------------------------------------


def test_html_page_is_self_contained_and_lists_outlets(digest: Digest) -> None:
    output = export.render_html(digest, id_prefix=PREFIX).decode("utf-8")
    root = lxml_html.document_fromstring(output)
    assert root.findtext(".//title") == "World news digest"
    articles = root.findall(".//article")
    assert len(articles) == 3
    beirut = articles[0]
    heading = beirut.find(".//h2/a")
    assert heading is not None and heading.text_content().startswith("Huge explosion")
    assert "4 sources" in beirut.text_content()
    # The headline's outlet is named beside it, and not listed again as "also reported by".
    assert beirut.find(".//p[@class='meta']/span[@class='outlet']").text == "Example Broadcaster"
    outlets = [li.find(".//span").text for li in beirut.findall(".//ul[@class='sources']/li")]
    assert outlets == [
        "Wire Service",
        "The Daily Example",
        "Example Herald (NZ)",
    ]
    assert beirut.find(".//time").get("datetime") == "2020-08-04T15:20:11Z"
    assert articles[2].get("lang") == "fr"
    # Nothing is fetched from anywhere: no external stylesheet, script, image (these stories
    # have no lead image) or font.
    assert not root.xpath("//script|//link|//img|//iframe|//object|//embed")
    assert "url(" not in output and "@import" not in output
    assert_inert_html(output, page=True)


def test_html_page_shows_a_storys_lead_image_lazily_and_without_a_referrer(
    digest: Digest,
) -> None:
    beirut = dataclasses.replace(digest.stories[0], image="https://img.example.com/beirut.jpg")
    unsafe = dataclasses.replace(digest.stories[1], image="javascript:alert(1)")
    plain = dataclasses.replace(digest.stories[2], image="http://img.example.com/mixed.jpg")
    page = dataclasses.replace(digest, stories=(beirut, unsafe, plain))
    output = export.render_html(page, id_prefix=PREFIX).decode("utf-8")
    root = lxml_html.document_fromstring(output)
    (image,) = root.xpath("//img")  # javascript: and plain http (mixed content) give none
    assert image.get("src") == "https://img.example.com/beirut.jpg"
    assert image.get("loading") == "lazy" and image.get("referrerpolicy") == "no-referrer"
    assert image.get("alt") == ""  # decorative: the headline under it says what it shows
    assert image.getparent().get("id") == "story-4021"
    csp = root.xpath("//meta[@http-equiv='Content-Security-Policy']")[0].get("content")
    assert "img-src https:;" in csp and "http:" not in csp and "script-src" not in csp
    assert_inert_html(output, page=True)
    assert_inert_bytes(output.encode())


def test_html_page_times_are_local_and_told_relative_to_the_page(digest: Digest) -> None:
    moment = datetime(2024, 10, 28, 10, 40, tzinfo=UTC)
    story = dataclasses.replace(
        digest.stories[0],
        first_seen=datetime(2024, 10, 28, 8, 15, tzinfo=UTC),
        updated=datetime(2024, 10, 28, 10, 40, tzinfo=UTC),
        sources=(
            Source(
                "Example Broadcaster",
                digest.stories[0].title,
                digest.stories[0].link,
                datetime(2024, 10, 28, 8, 15, tzinfo=UTC),
            ),
            Source(
                "Wire Service",
                "Earlier report",
                "https://wire.example/1",
                datetime(2024, 10, 27, 22, 5, tzinfo=UTC),
            ),
        ),
    )
    quiet = dataclasses.replace(
        digest.stories[1],
        first_seen=datetime(2024, 10, 24, 6, 0, tzinfo=UTC),
        updated=datetime(2024, 10, 24, 6, 0, tzinfo=UTC),
    )
    page = dataclasses.replace(
        digest, stories=(story, quiet), generated_at=moment, timezone="Europe/Paris"
    )
    root = lxml_html.document_fromstring(export.render_html(page, id_prefix=PREFIX))
    header = root.find(".//header/p/time").text_content()
    assert header == "Mon 28 Oct 2024 11:40 CET"  # Paris is UTC+1 after 27 October
    first, second = root.findall(".//article")
    meta = first.find(".//p[@class='meta']").text_content()
    assert "first seen today 09:15 CET" in meta and "updated 2 h later" in meta
    assert first.find(".//ul[@class='sources']/li/time").text == "yesterday 23:05 CET"
    # A story not updated since its first report says so once, not with a second clock.
    meta = second.find(".//p[@class='meta']").text_content()
    assert "first seen Thu 24 Oct 08:00 CEST" in meta and "updated" not in meta
    # In UTC by default, with the same relative days.
    root = lxml_html.document_fromstring(
        export.render_html(dataclasses.replace(page, timezone="UTC"), id_prefix=PREFIX)
    )
    assert "first seen today 08:15 UTC" in root.find(".//article/p").text_content()


def test_html_page_for_an_empty_digest_says_so(digest: Digest) -> None:
    output = export.render_html(dataclasses.replace(digest, stories=()), id_prefix=PREFIX)
    assert b"No stories in this digest yet." in output


# --- safety ---------------------------------------------------------------------------------


def test_hostile_story_produces_no_active_content_in_any_format(hostile: Digest) -> None:
    outputs = all_formats(hostile)
    for output in outputs.values():
        assert_inert_bytes(output)
        output.decode("utf-8")  # lone surrogates and NULs were dropped, not encoded

    atom = etree.fromstring(outputs["atom"])
    for element in atom.iter():
        for name, value in element.attrib.items():
            assert not name.startswith("on")
            if name == "href":
                assert urlsplit(value).scheme in ("http", "https"), value
    for content in atom.iter(ATOM + "content"):
        assert_inert_html(content.text or "")
    for summary in atom.iter(ATOM + "summary"):
        assert summary.get("type") == "text"

    rss = etree.fromstring(outputs["rss"])
    # Both channel URLs were unsafe: RSS's required <link> falls back to the generator's home.
    assert rss.findtext("channel/link") == "https://github.com/aggregator-project/aggregator"
    # Readers disagree on whether RSS titles are HTML: make them inert read either way.
    for tag in ("description", "title", "category"):
        for element in rss.iter(tag):
            assert_inert_html(element.text or "")
    for fmt in ("rss", "atom"):
        parsed = feedparser.parse(outputs[fmt])
        assert not parsed.bozo, (fmt, parsed.get("bozo_exception"))
        assert parsed.entries[0].title.endswith("Breaking")
    for link in rss.iter("link"):
        assert urlsplit(link.text).scheme in ("http", "https")

    document = json.loads(outputs["json"])
    assert "home_page_url" not in document and "feed_url" not in document
    for item in document["items"]:
        assert_inert_html(item["content_html"])
        assert urlsplit(item["url"]).scheme == "https"
        for source in item["_aggregator"]["sources"]:
            assert urlsplit(source.get("url", "https://x")).scheme in ("http", "https")

    assert_inert_html(outputs["html"].decode("utf-8"), page=True)


def test_hostile_story_keeps_its_text_and_its_safe_links(hostile: Digest) -> None:
    document = json.loads(export.render_json_feed(hostile, id_prefix=PREFIX))
    item = document["items"][0]
    # Text stays visible as text; the markup in the summary is gone, its words remain.
    assert (
        item["title"] == "<script>alert('title')</script><img src=x onerror=alert('title')>Breaking"
    )
    # What is left of the summary is the text a browser would have shown, and no markup.
    assert item["summary"].startswith("Read this now. x")
    assert "<" not in item["summary"] and "onerror" not in item["summary"]
    assert "language" not in item  # the attribute-breaking language tag was dropped
    sources = {s["outlet"]: s.get("url") for s in item["_aggregator"]["sources"]}
    assert sources["Good Outlet"] == "https://good.example.com/report"
    assert "ControlOutlet" in sources  # NUL and backspace dropped from the name
    for dropped in (
        "ControlOutlet",
        "Data Outlet",
        "Vbscript Outlet",
        "Tricky Outlet",
        "Quote Outlet",
        "<b onmouseover=\"alert('outlet')\">Evil Outlet</b>",
    ):
        assert sources[dropped] is None, dropped
    # With no safe link of its own, the story links to its first source with a safe link.
    assert item["url"] == "https://good.example.com/report"


def test_story_without_safe_link_falls_back_to_a_safe_source_link(digest: Digest) -> None:
    story = dataclasses.replace(digest.stories[0], link="javascript:void(0)")
    output = json.loads(export.render_json_feed(dataclasses.replace(digest, stories=(story,))))
    assert output["items"][0]["url"] == (
        "https://www.example-broadcaster.co.uk/news/world-middle-east-53660000"
    )


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("https://example.com/a?b=1", "https://example.com/a?b=1"),
        ("  http://example.com/  ", "http://example.com/"),
        ("HTTPS://Example.com/", "HTTPS://Example.com/"),
        ("javascript:alert(1)", None),
        ("JavaScript:alert(1)", None),
        ("java\nscript:alert(1)", None),
        ("//example.com/protocol-relative", None),
        ("/relative/path", None),
        ("data:text/html,hi", None),
        ("http://", None),
        ("https://example.com:99999/", None),
        ("https://exa mple.com/", None),
        (None, None),
    ],
)
def test_safe_url_keeps_only_absolute_http_urls(url: str | None, expected: str | None) -> None:
    assert export.safe_url(url) == expected


def test_summary_text_decodes_entities_and_separates_blocks() -> None:
    assert export.summary_text("<p>One</p><p>Two &amp; three</p>") == "One Two & three"
    assert export.summary_text("AT&amp;T <b>rocks</b>") == "AT&T rocks"
    assert export.summary_text("plain text, no markup") == "plain text, no markup"
    assert export.summary_text("<script>x()</script>") == ""
    long = export.summary_text("word " * 200, limit=50)
    assert len(long) <= 50 and long.endswith("…")


# --- determinism ----------------------------------------------------------------------------


def test_same_content_gives_same_bytes(digest: Digest) -> None:
    first = all_formats(digest)
    again = all_formats(load_digest("digest.json"))
    assert first == again
    # The store may load sources in any order; the output does not change.
    shuffled = tuple(
        dataclasses.replace(s, sources=tuple(reversed(s.sources))) for s in digest.stories
    )
    assert all_formats(dataclasses.replace(digest, stories=shuffled)) == first
    # Times in another zone are the same instants.
    shifted = dataclasses.replace(
        digest, generated_at=digest.generated_at.astimezone(timezone(timedelta(hours=-7)))
    )
    assert all_formats(shifted) == first


def test_new_outlet_moves_updated_but_keeps_item_id(digest: Digest) -> None:
    story = digest.stories[1]
    later = story.updated + timedelta(hours=3)
    grown = dataclasses.replace(
        story,
        updated=later,
        sources=story.sources
        + (Source("Second Outlet", "Cafés reopen", "https://second.example/c", later),),
    )
    before = json.loads(export.render_json_feed(dataclasses.replace(digest, stories=(story,))))
    after = json.loads(export.render_json_feed(dataclasses.replace(digest, stories=(grown,))))
    assert before["items"][0]["id"] == after["items"][0]["id"] == f"{PREFIX}story/4019"
    assert after["items"][0]["date_modified"] == "2020-08-05T10:45:00Z"
    assert before["items"][0]["date_modified"] == "2020-08-05T07:45:00Z"
    assert "Second Outlet" in after["items"][0]["content_html"]


def test_render_dispatches_on_format_and_rejects_unknown_ones(digest: Digest) -> None:
    assert export.render(digest, "atom") == export.render_atom(digest, id_prefix=PREFIX)
    assert export.render(digest, "json", id_prefix="tag:example.org,2020:").startswith(b"{")
    assert b"tag:example.org,2020:story/4021" in export.render(
        digest, "rss", id_prefix="tag:example.org,2020:"
    )
    with pytest.raises(ValueError, match="unknown digest format"):
        export.render(digest, "opml")


# --- OPML -----------------------------------------------------------------------------------


def test_opml_round_trip_keeps_urls_titles_and_tags() -> None:
    feeds = [
        FeedSettings("https://example.com/feed.xml", "Example & Sons <News>", ("world", "uk")),
        FeedSettings("http://plain.example.net/rss?x=1&y=2", None, ()),
        FeedSettings("https://unicode.example.org/フィード", "Café “quotes”", ("日本",)),
    ]
    document = export.opml_export(feeds, "My feeds")
    root = etree.fromstring(document)
    assert root.get("version") == "2.0" and root.findtext("head/title") == "My feeds"
    outlines = root.findall("body/outline")
    assert [o.get("type") for o in outlines] == ["rss"] * 3
    assert outlines[0].get("category") == "world,uk"
    assert outlines[1].get("text") == "http://plain.example.net/rss?x=1&y=2"
    assert export.opml_import(document, "roundtrip.opml") == feeds
    assert export.opml_export(feeds, "My feeds") == document


def test_opml_import_turns_folders_into_tags_and_dedupes_urls() -> None:
    feeds = export.opml_import((DATA / "nested.opml").read_bytes(), "nested.opml")
    expected = json.loads((DATA / "nested.expected.json").read_text(encoding="utf-8"))
    assert [{"url": f.url, "title": f.title, "tags": list(f.tags)} for f in feeds] == expected


@pytest.mark.parametrize(
    ("name", "key", "problem"),
    [
        ("billion-laughs.opml", "DOCTYPE", "not allowed"),
        ("small-entity.opml", "DOCTYPE", "not allowed"),
        ("xxe.opml", "DOCTYPE", "not allowed"),
        ("truncated.opml", "line 6", "not readable"),
        ("javascript-url.opml", "outline 3", "not an http(s) URL"),
    ],
)
def test_opml_import_rejects_unsafe_or_unreadable_files(
    name: str, key: str | None, problem: str
) -> None:
    with pytest.raises(ConfigError) as caught:
        export.opml_import((DATA / name).read_bytes(), name)
    assert caught.value.path == name
    if key is not None:
        assert caught.value.key == key
    assert problem in caught.value.problem
    assert "root:" not in str(caught.value)  # /etc/passwd was never read


def test_opml_parser_itself_refuses_entity_bombs_the_pre_check_cannot_see() -> None:
    # In UTF-16 the bytes "<!ENTITY" do not appear; the XML parser must still refuse.
    text = (DATA / "billion-laughs.opml").read_text(encoding="utf-8")
    data = text.replace('<?xml version="1.0"?>', '<?xml version="1.0" encoding="UTF-16"?>')
    with pytest.raises(ConfigError) as caught:
        export.opml_import(data.encode("utf-16"), "bomb16.opml")
    assert caught.value.path == "bomb16.opml"


def test_opml_import_accepts_a_doctype_without_declarations() -> None:
    data = b'<!DOCTYPE opml><opml version="1.0"><body><outline xmlUrl="https://e.com/f"/></body></opml>'
    assert export.opml_import(data, "doctype.opml") == [FeedSettings("https://e.com/f")]


def test_opml_import_rejects_documents_that_are_not_opml() -> None:
    with pytest.raises(ConfigError, match="not an OPML document"):
        export.opml_import(b"<rss version='2.0'><channel/></rss>", "feed.xml")
    with pytest.raises(ConfigError, match="no <body>"):
        export.opml_import(b"<opml version='2.0'><head/></opml>", "nobody.opml")
    with pytest.raises(ConfigError, match="not readable"):
        export.opml_import(b"", "empty.opml")


def test_feeds_toml_parses_back_to_the_same_feeds() -> None:
    feeds = [
        FeedSettings(
            'https://example.com/feed?a=1&b="2"',
            'A "quoted" \\ title\twith\ttabs',
            ("news", "ünïcode", "new\nline"),
        ),
        FeedSettings("https://example.org/rss", None, (), 900),
        FeedSettings("https://example.net/atom", "Control\x01char", ("x",)),
    ]
    text = export.feeds_toml(feeds)
    assert text.count("[[feeds]]") == 3
    parsed = tomllib.loads(text)["feeds"]
    back = [
        FeedSettings(f["url"], f.get("title"), tuple(f.get("tags", ())), f.get("interval"))
        for f in parsed
    ]
    assert back == feeds
    assert export.feeds_toml([]) == ""


def test_opml_file_imports_into_toml_that_parses() -> None:
    feeds = export.opml_import((DATA / "nested.opml").read_bytes(), "nested.opml")
    parsed = tomllib.loads(export.feeds_toml(feeds))["feeds"]
    assert [f["url"] for f in parsed] == [f.url for f in feeds]
    assert parsed[1]["tags"] == ["News", "World", "wires", "breaking"]


# --- Datasette metadata ---------------------------------------------------------------------

COLUMNS = {
    "feeds": "id url title feed_title site_url tags active etag last_modified last_status "
    "last_fetched_at "
    "last_success_at next_poll_at error_count error_kind error_message retired_at "
    "created_at",
    "entries": "id feed_id guid link title summary content text author language published "
    "updated first_seen content_hash simhash story_id match_rule match_distance "
    "match_score matched_entry_id",
    "stories": "id title representative_id first_seen last_seen updated_at member_count "
    "feed_count host_count",
    "story_merges": "id from_story_id into_story_id entry_id reason merged_at",
    "story_overview": "story_id title link first_seen last_seen member_count feed_count outlets",
    # Views the store added on main alongside story_overview.
    "feed_health": "feed_id title url active state last_success_at next_poll_at error_count "
    "error_kind error_message last_status entries",
    "story_sources": "story_id entry_id outlet title link published match_rule match_distance "
    "match_score matched_entry_id",
}
VIEWS = {"story_overview", "feed_health", "story_sources"}


def metadata() -> dict:
    path = Path(export.__file__).with_name("datasette_metadata.json")
    return json.loads(path.read_text(encoding="utf-8"))


def test_datasette_metadata_describes_every_column_of_the_schema() -> None:
    meta = metadata()
    assert meta["title"] and meta["description"]
    (database,) = meta["databases"].values()
    tables = database["tables"]
    assert set(tables) == set(COLUMNS)
    for table, columns in COLUMNS.items():
        assert tables[table]["description"], table
        assert set(tables[table]["columns"]) == set(columns.split()), table
        assert all(tables[table]["columns"].values()), table
    assert "feed_id" in tables["entries"]["facets"]
    assert "feed_count" in tables["stories"]["facets"]
    assert 3 <= len(database["queries"]) <= 5


def test_datasette_canned_queries_run_against_a_schema_with_those_columns() -> None:
    """The canned queries name only real columns: run each on a small database."""
    db = sqlite3.connect(":memory:")
    for table, columns in COLUMNS.items():
        if table not in VIEWS:
            db.execute(f"CREATE TABLE {table} ({', '.join(columns.split())})")
    # A stand-in for the store's view with the agreed columns.
    db.execute(
        "CREATE VIEW story_overview AS SELECT s.id AS story_id, s.title, e.link, s.first_seen, "
        "s.last_seen, s.member_count, s.feed_count, "
        "(SELECT group_concat(f.title, ', ') FROM feeds f) AS outlets "
        "FROM stories s LEFT JOIN entries e ON e.id = s.representative_id"
    )
    now = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    db.execute(
        "INSERT INTO feeds (id, url, title, active, error_count, error_kind) "
        "VALUES (1, 'https://a.example/feed', 'A', 1, 2, 'timeout')"
    )
    db.execute(
        "INSERT INTO stories (id, title, representative_id, first_seen, last_seen, "
        "member_count, feed_count) VALUES (7, 'Story', 70, ?, ?, 1, 1)",
        (now, now),
    )
    db.execute(
        "INSERT INTO entries (id, feed_id, title, link, first_seen, published, story_id) "
        "VALUES (70, 1, 'Story', 'https://a.example/s', ?, ?, 7)",
        (now, now),
    )
    (database,) = metadata()["databases"].values()
    for name, query in database["queries"].items():
        # Datasette passes parameters as text, whatever the column's type.
        params = {p: {"feed_id": "1", "story_id": "7"}[p] for p in query.get("params", [])}
        rows = db.execute(query["sql"], params).fetchall()
        assert rows, f"canned query {name} returned nothing on a database with one story"


# --- one real day of news -------------------------------------------------------------------

NEWS_DAY = SHARED / "corpora" / "news-en-2020"


def real_day_digest(snapshot: str = "20200805T203406Z") -> Digest:
    """A digest built from one snapshot of each of the 20 real outlets plus the hostile story.

    Story grouping here is deliberately crude (Beirut/Lebanon headlines form one story, every
    other entry is its own): the point is real-world text and HTML through the renderers.
    """
    beirut: list[Source] = []
    stories: list[DigestStory] = []
    for path in sorted(NEWS_DAY.glob(f"*/{snapshot}.xml")):
        parsed = feedparser.parse(path.read_bytes())
        outlet = parsed.feed.get("title") or path.parent.name
        for raw in parsed.entries[:40]:
            published = raw.get("published_parsed") or raw.get("updated_parsed")
            moment = (
                datetime(*published[:6], tzinfo=UTC) if published else when("2020-08-05T00:00:00Z")
            )
            source = Source(outlet, raw.get("title", ""), raw.get("link"), moment)
            title = raw.get("title", "")
            if any(word in title.lower() for word in ("beirut", "lebanon")):
                beirut.append(source)
                continue
            stories.append(
                DigestStory(
                    story_id=len(stories) + 1,
                    title=title,
                    link=raw.get("link"),
                    summary=raw.get("summary", ""),
                    first_seen=moment,
                    updated=moment,
                    sources=(source,),
                    categories=tuple(t.term for t in raw.get("tags", []) if t.get("term")),
                    language=parsed.feed.get("language"),
                )
            )
    assert len(beirut) >= 5, "expected the Beirut explosion in several outlets"
    first = min(beirut, key=lambda s: s.published)
    stories.insert(
        0,
        DigestStory(
            100000,
            first.title,
            first.link,
            "",
            first.published,
            max(s.published for s in beirut),
            tuple(beirut),
            ("world",),
        ),
    )
    stories.extend(load_digest("hostile.json").stories)
    return Digest("One day of news", max(s.updated for s in stories), tuple(stories))


@pytest.mark.corpus
@pytest.mark.skipif(not NEWS_DAY.exists(), reason=f"news corpus not found at {NEWS_DAY}")
@needs_schemas
def test_one_real_day_of_news_exports_valid_inert_feeds_in_every_format() -> None:
    import jsonschema

    digest = real_day_digest()
    assert len(digest.stories) > 300
    outputs = all_formats(digest)
    atom_schema = etree.RelaxNG(etree.parse(str(SCHEMAS / "atom-rfc4287.rng")))
    assert atom_schema.validate(etree.fromstring(outputs["atom"])), atom_schema.error_log
    json_schema = json.loads((SCHEMAS / "jsonfeed-1.1.schema.json").read_text(encoding="utf-8"))
    validator_class = jsonschema.validators.validator_for(json_schema)
    validator = validator_class(json_schema, format_checker=validator_class.FORMAT_CHECKER)
    document = json.loads(outputs["json"])
    assert not [e.message for e in validator.iter_errors(document)]
    for fmt in ("atom", "rss"):
        parsed = feedparser.parse(outputs[fmt])
        assert not parsed.bozo, (fmt, parsed.get("bozo_exception"))
        assert len(parsed.entries) == len(digest.stories)
        assert parsed.entries[0].id == f"{PREFIX}story/100000"
    for output in outputs.values():
        assert_inert_bytes(output)
    for item in document["items"]:
        assert_inert_html(item["content_html"])
    assert_inert_html(outputs["html"].decode("utf-8"), page=True)
    assert all_formats(real_day_digest()) == outputs


# --- property: whatever the text, the output is well-formed and inert -----------------------

FRAGMENTS = st.sampled_from(
    [
        "<script>",
        "</script>",
        "<img src=x onerror=alert(1)>",
        "javascript:",
        "&",
        "&amp;",
        "&#0;",
        "&#xD800;",
        "]]>",
        "<![CDATA[",
        '"',
        "'",
        "<",
        ">",
        "\x00",
        "\ud800",
        "\u2028",
        "<a href='javascript:x'>",
        "<svg onload=1>",
        "\x1b",
        "\ufffe",
        "<!--",
        "-->",
    ]
)
HOSTILE_TEXT = st.lists(st.one_of(st.text(max_size=20), FRAGMENTS), max_size=8).map("".join)
LINKS = st.one_of(
    st.none(),
    HOSTILE_TEXT,
    st.sampled_from(
        [
            "https://ok.example/a?b=1&c=2",
            "javascript:alert(1)",
            " http://x.example/ ",
            "data:text/html,<script>",
            'https://ok.example/"onclick=x',
        ]
    ),
)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    title=HOSTILE_TEXT,
    summary=HOSTILE_TEXT,
    outlet=HOSTILE_TEXT,
    link=LINKS,
    tag=HOSTILE_TEXT,
    language=HOSTILE_TEXT,
)
def test_any_text_gives_well_formed_inert_output(
    title: str, summary: str, outlet: str, link: str | None, tag: str, language: str
) -> None:
    moment = when("2020-08-05T10:00:00Z")
    story = DigestStory(
        1,
        title,
        link,
        summary,
        moment,
        moment,
        (Source(outlet, title, link, moment),),
        (tag,),
        language,
    )
    outputs = all_formats(Digest(title, moment, (story,), link, link))
    atom = etree.fromstring(outputs["atom"])
    rss = etree.fromstring(outputs["rss"])
    document = json.loads(outputs["json"])
    # Plain text may say "javascript:" in words; it is never inside markup or a URL (below).
    for output in outputs.values():
        assert b"<script" not in output.lower()
    for content in atom.iter(ATOM + "content"):
        assert_inert_html(content.text or "")
    for tag_name in ("description", "title", "category"):
        for element in rss.iter(tag_name):
            assert_inert_html(element.text or "")
    for item in document["items"]:
        assert_inert_html(item["content_html"])
        assert item.get("url") is None or urlsplit(item["url"]).scheme in ("http", "https")
    for element in atom.iter(ATOM + "link"):
        assert urlsplit(element.get("href")).scheme in ("http", "https")
    assert_inert_html(outputs["html"].decode("utf-8"), page=True)
