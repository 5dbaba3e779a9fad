"""Media (issue 16): enclosures and each entry's lead image are kept, sanitised and exported.

A real poll of RSS, Atom and JSON Feed files served over loopback HTTP into a real SQLite file,
then `aggregator export` in every feed format, read back by feedparser and checked against the
Atom and JSON Feed schemas; and the enclosure cases of feedparser's own test corpus.
"""

from __future__ import annotations

import json
import sqlite3
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

import feedparser
import pytest
from lxml import etree

from aggregator import normalise, parse
from tests.httpserver import LoopbackServer
from tests.olddb import database_at

MEDIA = Path(__file__).parent / "data" / "media"
SHARED = Path(__file__).resolve().parents[1].parent / "shared"
SCHEMAS = SHARED / "schemas"
FEEDPARSER_TESTS = SHARED / "corpora" / "feedparser-tests" / "wellformed"
CLI = [sys.executable, "-m", "aggregator"]
TYPES = {
    "podcast.xml": "application/rss+xml",
    "video.atom": "application/atom+xml",
    "gallery.json": "application/feed+json",
}


def cli(config: Path, *args: str) -> bytes:
    result = subprocess.run(
        [*CLI, "--config", str(config), *args], capture_output=True, timeout=120
    )
    assert result.returncode == 0, result.stderr.decode("utf-8", "replace")
    assert b"Traceback" not in result.stderr
    return result.stdout


@pytest.fixture(scope="module")
def polled(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The three media feeds polled once over real HTTP; the config path."""
    root = tmp_path_factory.mktemp("media")
    with LoopbackServer() as server:
        for name, media_type in TYPES.items():
            server.serve(f"/{name}", (MEDIA / name).read_bytes(), **{"Content-Type": media_type})
        config = root / "aggregator.toml"
        config.write_text(
            '[storage]\ndatabase = "agg.db"\n\n[fetch]\nallow_private_networks = true\n\n'
            + "".join(f'[[feeds]]\nurl = "{server.url("/" + n)}"\n' for n in TYPES),
            encoding="utf-8",
        )
        assert b"0 failed" in cli(config, "poll")
    return config


def stored(
    config: Path,
) -> tuple[dict[str, str | None], dict[str, list[tuple[str, str | None, int | None]]]]:
    """Each entry's image and its enclosures (url, media_type, length) by guid, from SQL."""
    with sqlite3.connect(config.parent / "agg.db") as conn:
        images = dict(conn.execute("SELECT guid, image FROM entries"))
        files: dict[str, list[tuple[str, str | None, int | None]]] = {g: [] for g in images}
        for guid, url, media_type, length in conn.execute(
            "SELECT e.guid, n.url, n.media_type, n.length FROM enclosures n"
            " JOIN entries e ON e.id = n.entry_id ORDER BY e.guid, n.position"
        ):
            files[guid].append((url, media_type, length))
    return images, files


def test_a_podcast_episode_keeps_its_audio_file_and_artwork(polled: Path) -> None:
    images, files = stored(polled)
    # The relative URL is made absolute against the episode's link; its query is kept.
    assert files["harbour-hour-12"] == [
        (
            "https://podcast.harbour.example/audio/harbour-hour-12.mp3?token=af3e",
            "audio/mpeg",
            48213004,
        )
    ]
    assert images["harbour-hour-12"] == "https://cdn.harbour.example/art/12.jpg"


def test_unsafe_media_urls_are_dropped_and_odd_types_and_lengths_blanked(polled: Path) -> None:
    images, files = stored(polled)
    # javascript: and a URL with credentials are dropped, the duplicate kept once, the length
    # "unknown" is no length, the type loses its parameters and its capitals.
    assert files["harbour-hour-11"] == [
        ("https://podcast.harbour.example/audio/harbour-hour-11.m4a", "audio/mp4", None)
    ]
    assert images["harbour-hour-11"] is None  # a data: URL
    assert images["tag:quay.example,2024:video/pixel"] is None  # a tracking pixel
    assert files["gallery-harbour-lights"] == [
        ("https://gallery.gazette.example/dl/lights.zip", "application/zip", 10485760),
        ("https://gallery.gazette.example/dl/lights.pdf", None, None),
    ]


def test_atom_enclosures_and_media_thumbnails_are_kept(polled: Path) -> None:
    images, files = stored(polled)
    guid = "tag:quay.example,2024:video/footbridge"
    assert files[guid] == [
        ("https://media.quay.example/footbridge-720p.mp4", "video/mp4", 73400320),
        ("https://media.quay.example/footbridge.vtt", "text/vtt", None),
    ]
    assert images[guid] == "https://media.quay.example/footbridge.jpg"
    assert images["gallery-harbour-lights"] == "https://gallery.gazette.example/img/lights-lead.jpg"


def export(config: Path, fmt: str) -> bytes:
    return cli(config, "export", "--format", fmt, "--since", "100000d", "--min-sources", "1")


def test_atom_and_rss_digests_carry_the_enclosures_feedparser_reads(polled: Path) -> None:
    for fmt in ("atom", "rss"):
        parsed = feedparser.parse(export(polled, fmt))
        assert not parsed.bozo, (fmt, parsed.bozo_exception)
        by_title = {e.title: e for e in parsed.entries}
        episode = by_title["Episode 12: the night ferry's last crossing"]
        (audio,) = episode.enclosures
        assert audio.href == "https://podcast.harbour.example/audio/harbour-hour-12.mp3?token=af3e"
        assert audio.type == "audio/mpeg" and audio.length == "48213004"
        assert episode.media_thumbnail[0]["url"] == "https://cdn.harbour.example/art/12.jpg"
        video = by_title["Watch: the new footbridge swings open for the first time"]
        # Atom lists every file; RSS readers take one per item, the first.
        assert [e.href for e in video.enclosures] == (
            [
                "https://media.quay.example/footbridge-720p.mp4",
                "https://media.quay.example/footbridge.vtt",
            ]
            if fmt == "atom"
            else ["https://media.quay.example/footbridge-720p.mp4"]
        )
        # RSS requires a length and a type: 0 and octet-stream stand in when the feed gave none.
        if fmt == "rss":
            (file,) = by_title["Episode 11: dredging the old basin"].enclosures
            assert file.length == "0" and file.type == "audio/mp4"


def test_json_feed_digest_has_attachments_and_the_image(polled: Path) -> None:
    document = json.loads(export(polled, "json"))
    by_title = {item["title"]: item for item in document["items"]}
    gallery = by_title["The harbour lights festival in twelve pictures"]
    assert gallery["image"] == "https://gallery.gazette.example/img/lights-lead.jpg"
    assert gallery["attachments"] == [
        {
            "url": "https://gallery.gazette.example/dl/lights.zip",
            "mime_type": "application/zip",
            "size_in_bytes": 10485760,
        },
        {
            "url": "https://gallery.gazette.example/dl/lights.pdf",
            "mime_type": "application/octet-stream",
        },
    ]
    assert "image" not in by_title["Watch: a tracker in the thumbnail"]


@pytest.mark.skipif(
    not (SCHEMAS / "atom-rfc4287.rng").exists(),
    reason=f"schemas not found at {SCHEMAS} (../shared is absent in this checkout)",
)
def test_digests_with_media_still_validate_against_their_schemas(polled: Path) -> None:
    import jsonschema

    schema = etree.RelaxNG(etree.parse(str(SCHEMAS / "atom-rfc4287.rng")))
    document = etree.fromstring(export(polled, "atom"))
    assert schema.validate(document), schema.error_log
    json_schema = json.loads((SCHEMAS / "jsonfeed-1.1.schema.json").read_text(encoding="utf-8"))
    jsonschema.validate(json.loads(export(polled, "json")), json_schema)


ENCLOSURE_CASES = (
    sorted(
        [
            *FEEDPARSER_TESTS.glob("rss/item_enclosure_*.xml"),
            *FEEDPARSER_TESTS.glob("atom10/entry_link_rel_enclosure*.xml"),
        ]
    )
    if FEEDPARSER_TESTS.exists()
    else []
)


@pytest.mark.skipif(
    not ENCLOSURE_CASES,
    reason=f"feedparser's test corpus not found at {FEEDPARSER_TESTS} (../shared absent)",
)
@pytest.mark.parametrize("path", ENCLOSURE_CASES, ids=lambda p: p.name)
def test_feedparsers_enclosure_cases_give_their_files(path: Path) -> None:
    body = path.read_bytes()
    url = "http://example.com/feed.xml"
    parsed = parse.parse_feed(body, {"content-type": "application/xml"}, url)
    (entry,) = normalise.normalise_entries(parsed, url, datetime(2024, 10, 28, tzinfo=UTC))
    expected = [
        e
        for e in feedparser.parse(body).entries[0].get("enclosures", [])
        if e.get("href", "").startswith("http")
    ]
    assert [e.url for e in entry.enclosures] == list(dict.fromkeys(e.href for e in expected))
    assert entry.enclosures, "every case carries at least one http file"


def test_a_schema_7_database_gains_media_and_keeps_its_entries(tmp_path: Path) -> None:
    from aggregator import store as store_mod

    db = database_at(tmp_path / "old.db", 7)
    with store_mod.Store.open(db) as store:
        assert store.schema_version == 8
        assert [tuple(r) for r in store.execute("SELECT guid, image FROM entries")] == [("g", None)]
        assert store.enclosures(1) == ()


def test_a_huge_or_negative_file_length_is_no_length_and_the_feed_still_parses() -> None:
    digits = "9" * 5000  # past int()'s 4,300-digit limit: once a ValueError for the whole feed
    body = (
        '<?xml version="1.0"?><rss version="2.0"><channel><title>t</title><item>'
        "<title>Episode</title><link>https://pod.example/1</link>"
        f'<enclosure url="https://pod.example/1.mp3" length="{digits}" type="audio/mpeg"/>'
        "</item></channel></rss>"
    ).encode()
    url = "https://pod.example/feed"
    parsed = parse.parse_feed(body, {}, url)
    (entry,) = normalise.normalise_entries(parsed, url, datetime(2024, 10, 28, tzinfo=UTC))
    assert [(e.url, e.length) for e in entry.enclosures] == [("https://pod.example/1.mp3", None)]
    doc = {
        "version": "https://jsonfeed.org/version/1.1",
        "title": "t",
        "items": [
            {
                "id": "1",
                "url": "https://pod.example/1",
                "title": "Episode",
                "attachments": [
                    {
                        "url": "https://pod.example/1.mp3",
                        "mime_type": "audio/mpeg",
                        "size_in_bytes": 10**30,
                    }
                ],
            }
        ],
    }
    parsed = parse.parse_feed(
        json.dumps(doc).encode(), {"content-type": "application/feed+json"}, url
    )
    (entry,) = normalise.normalise_entries(parsed, url, datetime(2024, 10, 28, tzinfo=UTC))
    assert entry.enclosures[0].length is None


def test_a_replaced_episode_file_updates_the_stored_entry(tmp_path: Path) -> None:
    # Same title and text, a new audio file: the entry changes, and its enclosure with it.
    feed = tmp_path / "pod.xml"
    config = tmp_path / "aggregator.toml"
    config.write_text(f'[storage]\ndatabase = "agg.db"\n\n[[feeds]]\nurl = "{feed.as_uri()}"\n')
    podcast = (MEDIA / "podcast.xml").read_text(encoding="utf-8")
    for audio in ("harbour-hour-12.mp3?token=af3e", "harbour-hour-12-fixed.mp3"):
        feed.write_text(podcast.replace("harbour-hour-12.mp3?token=af3e", audio), encoding="utf-8")
        cli(config, "poll", "--all")
    _, files = stored(config)
    assert [f[0] for f in files["harbour-hour-12"]] == [
        "https://podcast.harbour.example/audio/harbour-hour-12-fixed.mp3"
    ]
