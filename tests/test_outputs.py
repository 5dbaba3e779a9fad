"""Outputs end to end: a real poll into a real SQLite file, then `aggregator export` (every format,
filters, files), configured digests, a hostile feed, and the OPML import → include → poll loop."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tomllib
from datetime import UTC, datetime
from pathlib import Path
from urllib.parse import urlsplit

import feedparser
import pytest
from lxml import etree
from lxml import html as lxml_html

from aggregator import config as config_mod
from aggregator.digests import write_digests
from aggregator.export import opml_import
from aggregator.store import Store
from tests.httpserver import LoopbackServer
from tests.test_export import assert_inert_bytes, assert_inert_html

OUTPUTS = Path(__file__).parent / "data" / "outputs"
SHARED = Path(__file__).resolve().parents[1].parent / "shared"
SCHEMAS = SHARED / "schemas"
ATOM_NS = "http://www.w3.org/2005/Atom"
ATOM = f"{{{ATOM_NS}}}"
MEDIA_THUMBNAIL = "{http://search.yahoo.com/mrss/}thumbnail"
CLI = [sys.executable, "-m", "aggregator"]
DIGEST_FORMATS = ("atom", "rss", "json", "html")

needs_schemas = pytest.mark.skipif(
    not (SCHEMAS / "atom-rfc4287.rng").exists()
    or not (SCHEMAS / "jsonfeed-1.1.schema.json").exists(),
    reason=f"schemas not found at {SCHEMAS} (../shared is absent in this checkout)",
)

# (file, title, tags) of the feeds every test here polls.
FEEDS = (
    ("harbour.xml", None, ("local", "transport")),
    ("quay.xml", None, ("culture",)),
    ("gazette.xml", None, ("france",)),
    ("hostile.xml", None, ("local",)),
)


def run_cli(config: Path, *args: str, check: bool = True) -> subprocess.CompletedProcess[bytes]:
    result = subprocess.run(
        [*CLI, "--config", str(config), *args], capture_output=True, timeout=120
    )
    if check:
        assert result.returncode == 0, result.stderr.decode("utf-8", "replace")
    assert b"Traceback" not in result.stderr, result.stderr.decode("utf-8", "replace")
    return result


def feeds_block(folder: Path, feeds: tuple[tuple[str, str | None, tuple[str, ...]], ...]) -> str:
    out = []
    for name, title, tags in feeds:
        out.append(f'[[feeds]]\nurl = "{(folder / name).as_uri()}"')
        if title:
            out.append(f'title = "{title}"')
        if tags:
            out.append("tags = [" + ", ".join(f'"{t}"' for t in tags) + "]")
    return "\n".join(out) + "\n"


def polled_site(root: Path, digests: str = "", database: str = "agg.db") -> Path:
    """Copy the fixture feeds under `root`, write a config, run one real poll; the config path."""
    feeds = root / "feeds"
    shutil.copytree(OUTPUTS, feeds)
    config = root / "aggregator.toml"
    config.write_text(
        f'[storage]\ndatabase = "{database}"\n\n' + feeds_block(feeds, FEEDS) + digests,
        encoding="utf-8",
    )
    result = run_cli(config, "poll", "--all")
    assert b"failed" not in result.stdout.split(b"\n")[0] or b"0 failed" in result.stdout
    return config


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One polled database shared by the read-only tests of this module."""
    return polled_site(tmp_path_factory.mktemp("site"))


def export(config: Path, fmt: str, *args: str) -> bytes:
    return run_cli(config, "export", "--format", fmt, *args).stdout


def json_titles(config: Path, *args: str) -> list[str]:
    document = json.loads(export(config, "json", *args))
    return [item["title"] for item in document["items"]]


# --- every format after a real poll ---------------------------------------------------------


def story_count(site: Path) -> int:
    with Store.open(site.parent / "agg.db") as store:
        count = store.counts()["stories"]
    assert count >= 5  # ten entries, some of them grouped
    return count


def test_poll_stores_every_fixture_feed_and_clusters_the_wire_copy(site: Path) -> None:
    with Store.open(site.parent / "agg.db") as store:
        counts = store.counts()
        assert counts["feeds"] == 4
        assert counts["entries"] == 10
        shared = store.stories(min_sources=2)
        assert [s["title"] for s in shared] == [
            "Harbour board approves a new ferry terminal on the north quay"
        ]


@needs_schemas
def test_exported_atom_validates_against_rfc4287_relax_ng(site: Path) -> None:
    schema = etree.RelaxNG(etree.parse(str(SCHEMAS / "atom-rfc4287.rng")))
    document = etree.fromstring(export(site, "atom"))
    assert schema.validate(document), schema.error_log
    assert len(document.findall(f"{ATOM}entry")) == story_count(site)  # one item per story


@needs_schemas
def test_exported_json_feed_validates_against_the_json_feed_1_1_schema(site: Path) -> None:
    import jsonschema

    schema = json.loads((SCHEMAS / "jsonfeed-1.1.schema.json").read_text(encoding="utf-8"))
    document = json.loads(export(site, "json"))
    jsonschema.validate(document, schema)
    assert len(document["items"]) == story_count(site)


@pytest.mark.parametrize("fmt", ["atom", "rss"])
def test_exported_xml_feeds_reparse_with_feedparser_without_bozo(site: Path, fmt: str) -> None:
    parsed = feedparser.parse(export(site, fmt))
    assert not parsed.bozo, parsed.get("bozo_exception")
    assert parsed.version == ("atom10" if fmt == "atom" else "rss20")
    ferry = [e for e in parsed.entries if "ferry terminal" in e.title]
    assert len(ferry) == 1
    assert ferry[0].id.startswith("tag:aggregator,2026:story/")
    body = ferry[0].content[0].value if fmt == "atom" else ferry[0].summary
    assert "Harbour Herald" in body and "Quayside Courier" in body


def test_html_export_lists_the_story_with_both_outlets(site: Path) -> None:
    page = export(site, "html").decode("utf-8")
    assert_inert_html(page, page=True)
    root = lxml_html.document_fromstring(page)
    ferry = [a for a in root.iter("article") if "ferry terminal" in a.text_content()]
    assert len(ferry) == 1
    outlets = [o.text_content() for o in ferry[0].find_class("outlet")]
    assert sorted(outlets) == ["Harbour Herald", "Quayside Courier"]


def test_same_database_gives_the_same_bytes_in_every_format(site: Path) -> None:
    for fmt in (*DIGEST_FORMATS, "opml"):
        assert export(site, fmt) == export(site, fmt), fmt


def test_output_file_replaces_the_old_one_atomically(site: Path, tmp_path: Path) -> None:
    target = tmp_path / "out" / "digest.atom"
    target.parent.mkdir()
    target.write_bytes(b"old digest\n")
    # A reader that opened the old file (a hard link stands for its open handle) keeps seeing
    # the complete old bytes: the new file is renamed over the name, never written in place.
    os.link(target, tmp_path / "reader-view")
    old_inode = target.stat().st_ino
    result = run_cli(site, "export", "--format", "atom", "-o", str(target))
    assert result.stdout == b""
    assert target.read_bytes() == export(site, "atom")
    assert target.stat().st_ino != old_inode
    assert (tmp_path / "reader-view").read_bytes() == b"old digest\n"
    assert sorted(p.name for p in target.parent.iterdir()) == ["digest.atom"]  # no temp files
    assert target.stat().st_mode & 0o777 == 0o644


def test_output_to_an_unwritable_place_fails_cleanly(site: Path, tmp_path: Path) -> None:
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("a file where a folder should be")
    result = run_cli(site, "export", "--format", "json", "-o", str(blocker / "x.json"), check=False)
    assert result.returncode != 0
    assert not (blocker.parent / "x.json").exists()


# --- filters --------------------------------------------------------------------------------

FERRY = "Harbour board approves a new ferry terminal on the north quay"


def test_min_sources_keeps_only_stories_carried_by_that_many_feeds(site: Path) -> None:
    assert json_titles(site, "--min-sources", "2") == [FERRY]
    assert json_titles(site, "--min-sources", "3") == []


def test_tag_filter_keeps_stories_with_a_member_from_a_tagged_feed(site: Path) -> None:
    assert sorted(json_titles(site, "--tag", "culture")) == [
        FERRY,
        "Orchestra announces its winter season",
    ]
    assert json_titles(site, "--tag", "france") == ["Le conseil municipal adopte le budget du port"]
    assert json_titles(site, "--tag", "no-such-tag") == []


def test_language_filter_compares_primary_language_subtags(site: Path) -> None:
    assert json_titles(site, "--language", "fr") == [
        "Le conseil municipal adopte le budget du port"
    ]
    english = json_titles(site, "--language", "en-US")  # the Herald says en-GB: still English
    assert FERRY in english and "Lighthouse keeper retires after forty years" in english
    assert "Le conseil municipal adopte le budget du port" not in english


def test_query_filter_uses_full_text_search_over_members(site: Path) -> None:
    assert sorted(json_titles(site, "--query", "lighthouse")) == [
        "Lighthouse keeper retires after forty years",
        "Spring tides expected this weekend",
    ]
    assert json_titles(site, "--query", "phare") == [
        "Le conseil municipal adopte le budget du port"
    ]
    assert json_titles(site, "--query", '"unbalanced (') == []


def test_limit_and_filters_combine(site: Path) -> None:
    assert len(json_titles(site, "--limit", "2")) == 2
    assert json_titles(site, "--tag", "local", "--query", "compiler", "--limit", "1") == [
        "Local start-up ships C++ compiler for marine sensors"
    ]


def test_since_window_drops_stories_not_seen_recently(tmp_path: Path) -> None:
    config = polled_site(tmp_path)
    with Store.open(tmp_path / "agg.db") as store:
        store.execute(
            "UPDATE stories SET last_seen = '2020-01-01T00:00:00Z' WHERE title LIKE 'Orchestra%'"
        )
    assert "Orchestra announces its winter season" not in json_titles(config, "--since", "24h")
    assert "Orchestra announces its winter season" in json_titles(config, "--since", "5000d")


def test_digest_option_uses_the_configured_filters_and_a_name_based_feed_id(tmp_path: Path) -> None:
    digest = (
        '\n[[digests]]\nname = "wire"\npath = "digests/wire.atom"\nmin_sources = 2\n'
        'title = "Stories many outlets carry"\n'
    )
    config = polled_site(tmp_path, digest)
    feed = etree.fromstring(export(config, "atom", "--digest", "wire"))
    assert [e.findtext(f"{ATOM}title") for e in feed.iter(f"{ATOM}entry")] == [FERRY]
    assert feed.findtext(f"{ATOM}id") == "tag:aggregator,2026:digest/wire"
    # Rewording the title keeps the feed id: readers do not see a new subscription.
    config.write_text(config.read_text().replace("Stories many outlets carry", "Wire copy"))
    again = etree.fromstring(export(config, "atom", "--digest", "wire"))
    assert again.findtext(f"{ATOM}title") == "Wire copy"
    assert again.findtext(f"{ATOM}id") == "tag:aggregator,2026:digest/wire"
    missing = run_cli(config, "export", "--digest", "nope", check=False)
    assert missing.returncode == 2 and b"nope" in missing.stderr


def assert_digest_key_refused(tmp_path: Path, line: str, key: str) -> None:
    """A digest with `line` is a config error (exit 2) naming `key`."""
    folder = tmp_path / "refused"
    folder.mkdir(exist_ok=True)
    (folder / "aggregator.toml").write_text(
        f'[[digests]]\nname = "d"\npath = "d.xml"\n{line}\n', encoding="utf-8"
    )
    refused = run_cli(folder / "aggregator.toml", "export", check=False)
    assert refused.returncode == 2 and key.encode() in refused.stderr, refused.stderr


def test_digest_link_and_feed_url_give_self_links_readers_and_validators_accept(
    tmp_path: Path,
) -> None:
    digest = (
        '\n[[digests]]\nname = "wire"\npath = "digests/wire.xml"\nformat = "rss"\n'
        'link = "https://news.example.org/"\n'
        'feed_url = "https://news.example.org/wire.xml"\n'
    )
    config = polled_site(tmp_path, digest)
    rss = etree.fromstring(export(config, "rss", "--digest", "wire"))
    assert rss.findtext("channel/link") == "https://news.example.org/"
    self_link = rss.find(f"channel/{ATOM}link")
    assert self_link is not None and self_link.get("rel") == "self"
    assert self_link.get("href") == "https://news.example.org/wire.xml"
    guids = [g.text for g in rss.iter("guid")]
    assert guids and len(guids) == len(set(guids))
    atom_bytes = export(config, "atom", "--digest", "wire")
    atom = etree.fromstring(atom_bytes)
    links = {link.get("rel"): link.get("href") for link in atom.findall(f"{ATOM}link")}
    assert links == {
        "alternate": "https://news.example.org/",
        "self": "https://news.example.org/wire.xml",
    }
    assert atom.findtext(f"{ATOM}id") == "https://news.example.org/wire.xml"
    for fmt in ("rss", "atom"):
        parsed = feedparser.parse(export(config, fmt, "--digest", "wire"))
        assert not parsed.bozo, parsed.get("bozo_exception")
        assert parsed.feed.get("link") == "https://news.example.org/"
    if (SCHEMAS / "atom-rfc4287.rng").exists():
        schema = etree.RelaxNG(etree.parse(str(SCHEMAS / "atom-rfc4287.rng")))
        assert schema.validate(atom), schema.error_log
    document = json.loads(export(config, "json", "--digest", "wire"))
    assert document["home_page_url"] == "https://news.example.org/"
    assert document["feed_url"] == "https://news.example.org/wire.xml"
    assert_digest_key_refused(tmp_path, 'feed_url = "javascript:alert(1)"', "digests[0].feed_url")


# --- a hostile feed polled with normal ones ---------------------------------------------------


def _assert_http_only(url: str | None, where: str) -> None:
    if url is not None:
        assert urlsplit(url).scheme in ("http", "https"), f"{where}: {url!r}"


def check_atom_inert(data: bytes) -> None:
    feed = etree.fromstring(data)
    for element in feed.iter():
        assert isinstance(element.tag, str), element.tag
        if element.tag == MEDIA_THUMBNAIL:  # a story's lead image: an http(s) URL, no text
            _assert_http_only(element.get("url"), "media:thumbnail url")
            assert element.get("url") and not element.text and not len(element)
            continue
        assert element.tag.startswith(ATOM), element.tag
        _assert_http_only(element.get("href"), "atom href")
        if element.tag == f"{ATOM}content":
            assert element.get("type") == "html"
            assert_inert_html(element.text or "")
    for text_field in feed.iter(f"{ATOM}title", f"{ATOM}summary"):
        assert text_field.get("type") == "text"


def check_rss_inert(data: bytes) -> None:
    rss = etree.fromstring(data)
    for item in rss.iter("item"):
        _assert_http_only(item.findtext("link"), "rss link")
        for enclosure in item.iter("enclosure"):
            _assert_http_only(enclosure.get("url"), "rss enclosure")
        for thumbnail in item.iter(MEDIA_THUMBNAIL):
            _assert_http_only(thumbnail.get("url"), "rss media:thumbnail")
        assert_inert_html(item.findtext("description") or "")
        # Titles and categories may be rendered as HTML by some readers: no markup in them.
        for name in ("title", "category"):
            for element in item.iter(name):
                assert "<" not in (element.text or ""), element.text


def check_json_inert(data: bytes) -> None:
    document = json.loads(data)
    _assert_http_only(document.get("home_page_url"), "home_page_url")
    for item in document["items"]:
        for key in ("url", "external_url", "image"):
            _assert_http_only(item.get(key), key)
        for attachment in item.get("attachments", []):
            _assert_http_only(attachment["url"], "attachment")
        assert_inert_html(item.get("content_html") or "")
        # title, summary and content_text are plain text by the JSON Feed spec: "<" there is
        # a character to show, and the bytes carry it as \u003c (checked by assert_inert_bytes).
    for value in _strings(document):
        if value.lower().startswith(("javascript:", "data:", "vbscript:")):
            pytest.fail(f"active URL in JSON Feed: {value!r}")


def _strings(value: object) -> list[str]:
    if isinstance(value, str):
        return [value]
    if isinstance(value, dict):
        return [s for v in value.values() for s in _strings(v)]
    if isinstance(value, list):
        return [s for v in value for s in _strings(v)]
    return []


CHECKS = {
    "atom": check_atom_inert,
    "rss": check_rss_inert,
    "json": check_json_inert,
    "html": lambda data: assert_inert_html(data.decode("utf-8"), page=True),
}


def test_hostile_feed_leaves_no_active_content_in_any_export(site: Path) -> None:
    for fmt in DIGEST_FORMATS:
        data = export(site, fmt)
        assert_inert_bytes(data)
        CHECKS[fmt](data)
        # The hostile entries are there (as text), so the checks above looked at them.
        assert b"Council" in data and b"Entity-encoded script" in data, fmt


def test_hostile_feed_text_survives_as_text_and_its_handlers_do_not(site: Path) -> None:
    document = json.loads(export(site, "json"))
    hostile = {
        item["title"]: item
        for item in document["items"]
        if "hostile.test" in (item.get("url") or "")
        or "Entity" in item["title"]
        or "Data link" in item["title"]
    }
    assert len(hostile) == 3, sorted(hostile)
    everything = json.dumps(document)
    for handler in (
        "onclick",
        "onerror",
        "onmouseover",
        "onload",
        "expression(",
        "javascript:",
        "vbscript:",
        "data:text",
    ):
        assert handler not in everything, handler
    # Double-encoded markup was text in the feed, so it stays text (escaped in every format).
    double = hostile["Data link in place of an article"]["summary"]
    assert double.startswith("<script>alert('double-encoded')</script> shows as text")
    # Items whose own link was javascript: or data: have no link at all, not a repaired one.
    links = {title: item.get("url") for title, item in hostile.items()}
    assert links["Entity-encoded script in the description"] is None
    assert links["Data link in place of an article"] is None


def test_html_digest_written_by_write_digests_is_inert_with_a_hostile_feed(tmp_path: Path) -> None:
    digest = '\n[[digests]]\nname = "daily"\npath = "digests/daily.html"\nformat = "html"\n'
    config = polled_site(tmp_path, digest)
    cfg = config_mod.load(config)
    with Store.open(cfg.database) as store:
        written = write_digests(cfg, store, datetime.now(UTC))
    assert written == [tmp_path / "digests" / "daily.html"]
    page = written[0].read_text(encoding="utf-8")
    assert_inert_bytes(page.encode("utf-8"))
    assert_inert_html(page, page=True)
    assert "Council" in page and FERRY in page


# --- configured digests: rewritten only when their bytes change -----------------------------

DIGESTS = """
[[digests]]
name = "everything"
path = "digests/everything.atom"

[[digests]]
name = "culture"
path = "digests/culture.json"
format = "json"
tags = ["culture"]

[[digests]]
name = "page"
path = "digests/page.html"
format = "html"
min_sources = 2
"""

NEW_ITEM = """    <item>
      <guid isPermaLink="false">herald-regatta</guid>
      <title>Regatta moves to the outer harbour</title>
      <link>https://harbour-herald.test/2024/10/regatta</link>
      <description>Organisers say the new course gives spectators a better view.</description>
      <pubDate>Tue, 29 Oct 2024 15:00:00 GMT</pubDate>
    </item>
  </channel>"""


def test_configured_digests_are_rewritten_only_when_their_bytes_change(tmp_path: Path) -> None:
    config = polled_site(tmp_path, DIGESTS)
    folder = tmp_path / "digests"

    def write() -> list[str]:
        cfg = config_mod.load(config)
        with Store.open(cfg.database) as store:
            return [p.name for p in write_digests(cfg, store, datetime.now(UTC))]

    assert write() == ["everything.atom", "culture.json", "page.html"]
    # The same bytes `aggregator export --digest` prints.
    for name, fmt in (("everything", "atom"), ("culture", "json"), ("page", "html")):
        path = next(folder.glob(f"{name}.*"))
        assert path.read_bytes() == export(config, fmt, "--digest", name)
    inodes = {p.name: p.stat().st_ino for p in folder.iterdir()}

    assert write() == []  # nothing changed: nothing rewritten
    assert {p.name: p.stat().st_ino for p in folder.iterdir()} == inodes

    # A new local story changes the unfiltered digest only.
    herald = tmp_path / "feeds" / "harbour.xml"
    herald.write_text(herald.read_text().replace("  </channel>", NEW_ITEM), encoding="utf-8")
    run_cli(config, "poll", "--all")
    assert write() == ["everything.atom"]
    assert b"Regatta moves to the outer harbour" in (folder / "everything.atom").read_bytes()
    assert (folder / "culture.json").stat().st_ino == inodes["culture.json"]
    assert (folder / "page.html").stat().st_ino == inodes["page.html"]
    assert sorted(p.name for p in folder.iterdir()) == sorted(inodes)  # no temp files left


# --- OPML: import → include → poll, and export round trip ------------------------------------


def test_opml_import_include_and_poll_then_export_round_trips(
    tmp_path: Path, server: LoopbackServer
) -> None:
    for name in ("harbour.xml", "quay.xml"):
        server.serve(
            f"/{name}", (OUTPUTS / name).read_bytes(), **{"Content-Type": "application/rss+xml"}
        )
    opml = tmp_path / "subscriptions.opml"
    opml.write_text(
        f"""<?xml version="1.0" encoding="utf-8"?>
<opml version="2.0"><head><title>Mine</title></head><body>
  <outline text="Local">
    <outline type="rss" text="Harbour Herald" xmlUrl="{server.url("/harbour.xml")}"/>
  </outline>
  <outline type="rss" text="Quayside" title="Quayside Courier"
           xmlUrl="{server.url("/quay.xml")}" category="culture,music"/>
</body></opml>
""",
        encoding="utf-8",
    )
    config = tmp_path / "aggregator.toml"
    original = (
        '# my aggregator\n\n[storage]\ndatabase = "agg.db"  # keep it here\n'
        "[fetch]\nallow_private_networks = true\n"
    )
    config.write_text(original)
    config.chmod(0o600)

    result = run_cli(config, "feeds", "import", str(opml))
    target = tmp_path / "feeds.d" / "subscriptions.toml"
    assert f"wrote 2 feeds to {target}" in result.stdout.decode()
    assert 'added include "feeds.d/subscriptions.toml"' in result.stdout.decode()
    # The include line is added; every comment and line of the user's file stays.
    assert config.read_text() == (
        '# my aggregator\n\ninclude = ["feeds.d/subscriptions.toml"]\n'
        + original.split("\n\n", 1)[1]
    )
    assert config.stat().st_mode & 0o777 == 0o600
    assert len(config_mod.load(config).feeds) == 2

    polled = run_cli(config, "poll", "--all")
    assert b"entries: 6 new" in polled.stdout, polled.stdout
    assert len(server.hits("/harbour.xml")) == 1 and len(server.hits("/quay.xml")) == 1
    before = config.read_text()
    again = run_cli(config, "feeds", "import", str(opml))
    assert b"added include" not in again.stdout and config.read_text() == before

    with Store.open(tmp_path / "agg.db") as store:
        tags = {
            r["url"]: json.loads(r["tags"]) for r in store.execute("SELECT url, tags FROM feeds")
        }
        shared = [s["title"] for s in store.stories(min_sources=2)]
    assert shared == [FERRY]
    assert tags == {
        server.url("/harbour.xml"): ["Local"],
        server.url("/quay.xml"): ["culture", "music"],
    }

    exported = export(config, "opml")
    assert opml_import(exported, "export") == list(config_mod.load(config).feeds)
    # And the exported OPML imports into an equivalent feeds file.
    (tmp_path / "exported.opml").write_bytes(exported)
    run_cli(
        config,
        "feeds",
        "import",
        str(tmp_path / "exported.opml"),
        "-o",
        str(tmp_path / "again.toml"),
    )
    first = tomllib.loads(target.read_text(encoding="utf-8"))
    second = tomllib.loads((tmp_path / "again.toml").read_text(encoding="utf-8"))
    assert first == second


# --- one real day of 20 outlets plus the hostile feed ---------------------------------------

NEWS = SHARED / "corpora" / "news-en-2020"
DAY = "20200805"


@pytest.mark.corpus
@pytest.mark.slow
@pytest.mark.skipif(
    not NEWS.exists(), reason=f"news corpus not found at {NEWS} (../shared is absent)"
)
@needs_schemas
def test_one_real_day_polled_with_a_hostile_feed_exports_valid_inert_feeds(tmp_path: Path) -> None:
    """20 outlets' two snapshots of 2020-08-05, polled in turn as one feed each, plus hostile.xml."""
    import jsonschema

    feeds = tmp_path / "feeds"
    feeds.mkdir()
    shutil.copy(OUTPUTS / "hostile.xml", feeds / "hostile.xml")
    outlets = sorted(p.name for p in NEWS.iterdir() if sorted(p.glob(f"{DAY}*.xml")))
    assert len(outlets) == 20
    snapshots = {name: sorted((NEWS / name).glob(f"{DAY}*.xml")) for name in outlets}
    block = feeds_block(
        feeds,
        tuple((f"{n}.xml", None, ("news",)) for n in outlets)
        + (("hostile.xml", None, ("hostile",)),),
    )
    config = tmp_path / "aggregator.toml"
    config.write_text('[storage]\ndatabase = "news.db"\n' + block, encoding="utf-8")
    for turn in (0, -1):  # the day's first snapshot, then its last: a real re-poll
        for name, files in snapshots.items():
            shutil.copy(files[turn], feeds / f"{name}.xml")
        result = run_cli(config, "poll", "--all")
        assert b" 0 failed" in result.stdout, result.stdout
    with Store.open(tmp_path / "news.db") as store:
        entries = store.counts()["entries"]
        stories = store.counts()["stories"]
    assert entries > 900

    atom_schema = etree.RelaxNG(etree.parse(str(SCHEMAS / "atom-rfc4287.rng")))
    json_schema = json.loads((SCHEMAS / "jsonfeed-1.1.schema.json").read_text(encoding="utf-8"))
    window = ("--since", "100000d", "--limit", "2000")
    for fmt in DIGEST_FORMATS:
        data = export(config, fmt, *window)
        assert data == export(config, fmt, *window), f"{fmt}: same database, other bytes"
        assert_inert_bytes(data)
        CHECKS[fmt](data)
        assert b"Quiet words after the entities" in data, fmt
        if fmt == "atom":
            assert atom_schema.validate(etree.fromstring(data)), atom_schema.error_log
        if fmt == "json":
            document = json.loads(data)
            jsonschema.validate(document, json_schema)
            assert len(document["items"]) == stories
        if fmt in ("atom", "rss"):
            parsed = feedparser.parse(data)
            assert not parsed.bozo, parsed.get("bozo_exception")
            assert len(parsed.entries) == stories


def test_feeds_import_appends_to_a_one_line_include_list_and_leaves_a_long_one_alone(
    tmp_path: Path,
) -> None:
    opml = tmp_path / "more.opml"
    opml.write_text(
        '<opml version="2.0"><body><outline text="A" xmlUrl="https://a.example/f"/></body></opml>',
        encoding="utf-8",
    )
    (tmp_path / "base.toml").write_text('[[feeds]]\nurl = "https://b.example/f"\n')
    config = tmp_path / "aggregator.toml"
    config.write_text('include = ["base.toml"]  # mine\n[storage]\ndatabase = "agg.db"\n')
    run_cli(config, "feeds", "import", str(opml))
    assert config.read_text().splitlines()[0] == (
        'include = ["base.toml", "feeds.d/more.toml"]  # mine'
    )
    assert {f.url for f in config_mod.load(config).feeds} == {
        "https://a.example/f",
        "https://b.example/f",
    }
    spread = tmp_path / "spread.toml"
    spread.write_text('include = [\n  "base.toml",\n]\n[storage]\ndatabase = "agg.db"\n')
    before = spread.read_text()
    told = run_cli(spread, "feeds", "import", str(opml), "-o", str(tmp_path / "other.toml"))
    assert b'add "other.toml" to the include list' in told.stdout
    assert spread.read_text() == before


def test_a_config_that_cannot_be_rewritten_is_left_as_it_was(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # As for /etc/aggregator/aggregator.toml run as the service user: the rename is refused.
    config = tmp_path / "aggregator.toml"
    config.write_text('[storage]\ndatabase = "agg.db"\n')

    def refuse(*_args: object) -> None:
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(config_mod.os, "replace", refuse)
    assert config_mod.add_include(config, "feeds.d/x.toml") is False
    assert config.read_text() == '[storage]\ndatabase = "agg.db"\n'
    assert sorted(p.name for p in tmp_path.iterdir()) == ["aggregator.toml"]


def test_feeds_import_keeps_the_good_outlines_and_warns_about_each_skipped_one(
    tmp_path: Path,
) -> None:
    config = tmp_path / "aggregator.toml"
    config.write_text('[storage]\ndatabase = "agg.db"\n', encoding="utf-8")
    opml = tmp_path / "mixed.opml"
    opml.write_text(
        '<?xml version="1.0"?>\n<opml version="2.0"><head><title>mine</title></head><body>\n'
        '<outline text="Good" xmlUrl="https://a.example/feed.xml"/>\n'
        '<outline text="Old FTP" xmlUrl="ftp://files.example/feed.xml"/>\n'
        '<outline text="Also good" xmlUrl="https://b.example/rss"/>\n'
        '<outline text="Script" xmlUrl="javascript:alert(1)"/>\n'
        "</body></opml>\n",
        encoding="utf-8",
    )
    target = tmp_path / "mixed.toml"
    done = run_cli(config, "feeds", "import", str(opml), "-o", str(target))
    stderr = done.stderr.decode()
    assert "skipped outline 2 (line 4)" in stderr and "ftp://files.example" in stderr
    assert "skipped outline 4 (line 6)" in stderr
    feeds = tomllib.loads(target.read_text(encoding="utf-8"))["feeds"]
    assert [f["url"] for f in feeds] == ["https://a.example/feed.xml", "https://b.example/rss"]
    assert b"wrote 2 feeds" in done.stdout

    empty = tmp_path / "empty.opml"
    empty.write_text(
        '<opml version="2.0"><body><outline text="folder only"/>'
        '<outline text="x" xmlUrl="ftp://x.example/f"/></body></opml>',
        encoding="utf-8",
    )
    nothing = run_cli(
        config, "feeds", "import", str(empty), "-o", str(tmp_path / "e.toml"), check=False
    )
    assert nothing.returncode == 1
    assert b"no feeds to import (1 skipped); nothing written" in nothing.stderr
    assert not (tmp_path / "e.toml").exists()


def test_digest_exclusions_drop_a_story_only_when_every_entry_is_excluded(tmp_path: Path) -> None:
    def titles(extra: str) -> list[str]:
        folder = tmp_path / str(abs(hash(extra)))
        folder.mkdir()
        config = polled_site(
            folder,
            '\n[[digests]]\nname = "d"\npath = "d.json"\n'
            'format = "json"\nsince = "3650d"\n' + extra,
        )
        feed = json.loads(run_cli(config, "export", "--digest", "d").stdout)
        return sorted(item["title"] for item in feed["items"])

    everything = titles("")
    assert FERRY in everything and "Orchestra announces its winter season" in everything
    # Quayside Courier (culture) alone carries the orchestra; the ferry is also the Herald's.
    culture_out = titles('exclude_tags = ["culture"]\n')
    assert "Orchestra announces its winter season" not in culture_out and FERRY in culture_out
    assert len(culture_out) == len(everything) - 1
    blocked = titles('block_titles = ["^lighthouse", "c\\\\+\\\\+"]\n')
    assert "Lighthouse keeper retires after forty years" not in blocked
    assert "Local start-up ships C++ compiler for marine sensors" not in blocked
    assert len(blocked) == len(everything) - 2
    # Both reports of the ferry terminal mention it: the story goes.
    assert FERRY not in titles('exclude_query = "ferry terminal"\n')

    assert_digest_key_refused(
        tmp_path, 'block_titles = ["(unclosed"]', "digests[0].block_titles[0]"
    )
