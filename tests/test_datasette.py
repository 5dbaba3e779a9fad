"""Datasette on loopback against a database made by a real poll: a story and its outlets read back."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.test_outputs import FERRY, polled_site, run_cli

pytest.importorskip("datasette", reason="datasette is in the test extra: pip install -e '.[test]'")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def get(base: str, path: str) -> Any:
    with urllib.request.urlopen(base + path, timeout=30) as response:  # noqa: S310 (loopback)
        body = response.read()
    return json.loads(body) if ".json" in path else body.decode("utf-8")


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Path]]:
    """A polled database named news.db (not aggregator.db) served by Datasette; (base URL, config)."""
    root = tmp_path_factory.mktemp("datasette")
    config = polled_site(root, database="news.db")
    run_cli(config, "datasette-metadata", "-o", str(root / "metadata.json"))
    port = free_port()
    log = (root / "datasette.log").open("wb")
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "datasette",
            "serve",
            str(root / "news.db"),
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--metadata",
            str(root / "metadata.json"),
            "--setting",
            "num_sql_threads",
            "1",
            "--setting",
            "sql_time_limit_ms",
            "5000",
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60  # a start-up limit, not a timing assertion
        while True:
            if process.poll() is not None:
                pytest.fail("datasette exited: " + (root / "datasette.log").read_text())
            try:
                get(base, "/-/versions.json")
                break
            except (urllib.error.URLError, ConnectionError):
                if time.monotonic() > deadline:
                    pytest.fail("datasette did not answer: " + (root / "datasette.log").read_text())
                time.sleep(0.2)
        yield base, config
    finally:
        process.terminate()
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        log.close()


def ferry_story_id(base: str) -> int:
    rows = get(base, "/news/story_overview.json?_shape=array&feed_count=2")
    assert [r["title"] for r in rows] == [FERRY]
    return int(rows[0]["story_id"])


def test_story_overview_shows_the_story_with_its_outlets(served: tuple[str, Path]) -> None:
    base, _ = served
    story_id = ferry_story_id(base)
    rows = get(base, f"/news/story_overview.json?_shape=array&story_id={story_id}")
    assert len(rows) == 1
    assert rows[0]["outlets"] == "Harbour Herald | Quayside Courier"
    assert rows[0]["member_count"] == 2
    story = get(base, f"/news/stories/{story_id}.json?_shape=objects")["rows"][0]
    assert story["title"] == FERRY and story["feed_count"] == 2
    page = get(base, f"/news/story_overview?story_id={story_id}")
    assert "Harbour Herald | Quayside Courier" in page


def test_canned_query_lists_every_report_of_a_story(served: tuple[str, Path]) -> None:
    base, _ = served
    story_id = ferry_story_id(base)
    rows = get(base, f"/news/story_entries.json?_shape=array&story_id={story_id}")
    assert sorted(r["outlet"] for r in rows) == ["Harbour Herald", "Quayside Courier"]
    assert {r["match_rule"] for r in rows} == {"new", "content_hash"}


def test_metadata_applies_to_a_database_not_named_aggregator(served: tuple[str, Path]) -> None:
    base, _ = served
    # Descriptions and canned queries come from `aggregator datasette-metadata`, which keys
    # them by the configured file's name (news), so Datasette applies them.
    queries = {q["name"] for q in get(base, "/news.json")["queries"]}
    assert {"story_entries", "failing_feeds", "one_feed"} <= queries
    page = get(base, "/news/stories")
    assert "One row per story: the same event reported by one or more outlets." in page


def test_views_answer_feed_health_and_story_sources(served: tuple[str, Path]) -> None:
    base, _ = served
    # No canned query may share a view's name: Datasette would route the view's URL to it.
    database = get(base, "/news.json")
    assert not {q["name"] for q in database["queries"]} & {v["name"] for v in database["views"]}
    health = get(base, "/news/feed_health.json?_shape=array")
    assert len(health) == 4 and {h["state"] for h in health} == {"ok"}
    sources = get(base, f"/news/story_sources.json?_shape=array&story_id={ferry_story_id(base)}")
    assert sorted(s["outlet"] for s in sources) == ["Harbour Herald", "Quayside Courier"]


def test_datasette_metadata_command_rekeys_the_bundled_file(tmp_path: Path) -> None:
    config = tmp_path / "aggregator.toml"
    config.write_text('[storage]\ndatabase = "data/my-news.db"\n')
    printed = json.loads(run_cli(config, "datasette-metadata").stdout)
    assert list(printed["databases"]) == ["my-news"]
    bundled = json.loads(
        (Path(__file__).parents[1] / "aggregator" / "datasette_metadata.json").read_text(
            encoding="utf-8"
        )
    )
    assert printed["databases"]["my-news"] == bundled["databases"]["aggregator"]
    assert not (tmp_path / "data").exists()  # printing metadata creates no database


def test_entries_table_has_a_working_search_box(served: tuple[str, Path]) -> None:
    base, _ = served
    rows = get(base, "/news/entries.json?_shape=array&_search=lighthouse&_col=title")
    assert sorted(r["title"] for r in rows) == [
        "Lighthouse keeper retires after forty years",
        "Spring tides expected this weekend",
    ]


def test_story_overview_opens_with_the_most_widely_reported_stories(
    served: tuple[str, Path],
) -> None:
    base, _config = served
    rows = get(base, "/news/story_overview.json?_shape=array")
    counts = [row["feed_count"] for row in rows]
    assert counts and counts[0] >= 2 and counts == sorted(counts, reverse=True)
