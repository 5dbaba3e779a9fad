from __future__ import annotations

from pathlib import Path

import pytest

from aggregator import config
from aggregator.errors import ConfigError

GOOD = """
[storage]
database = "data/aggregator.db"

[fetch]
allow_private_networks = false

[[feeds]]
url = "https://www.example.org/rss.xml"
title = "Example"
tags = ["world", "fr"]
interval = "30m"

[[feeds]]
url = "feeds/local.xml"
"""


def load(tmp_path: Path, text: str) -> config.Config:
    path = tmp_path / "aggregator.toml"
    path.write_text(text, encoding="utf-8")
    return config.load(path)


def test_contract_shape_loads_with_paths_relative_to_the_config(tmp_path: Path) -> None:
    cfg = load(tmp_path, GOOD)
    assert cfg.database == tmp_path / "data" / "aggregator.db"
    assert cfg.fetch.allow_private_networks is False
    first, local = cfg.feeds
    assert (first.url, first.title, first.tags, first.interval) == (
        "https://www.example.org/rss.xml",
        "Example",
        ("world", "fr"),
        1800,
    )
    assert local.url == (tmp_path / "feeds" / "local.xml").as_uri()
    assert cfg.fetch.user_agent.startswith("aggregator/")


@pytest.mark.parametrize(
    ("text", "key", "words"),
    [
        ('[storage]\ndatabse = "x.db"\n', "storage.databse", "unknown key"),
        (
            '[fetch]\nallow_private_networks = "yes"\n',
            "fetch.allow_private_networks",
            "true or false",
        ),
        ('[[feeds]]\nurl = "ftp://example.org/feed"\n', "feeds[0].url", "scheme"),
        ('[[feeds]]\nurl = "https://"\n', "feeds[0].url", "no host"),
        ('[[feeds]]\ntitle = "no url"\n', "feeds[0].url", "required"),
        (
            '[[feeds]]\nurl = "https://a.example/f"\ninterval = "soon"\n',
            "feeds[0].interval",
            "duration",
        ),
        ('[[feeds]]\nurl = "https://a.example/f"\ntags = "news"\n', "feeds[0].tags", "an array"),
        (
            '[[feeds]]\nurl = "https://a.example/f"\n[[feeds]]\nurl = "https://a.example/f"\n',
            "feeds[1].url",
            "duplicate",
        ),
        ("[schedule]\ninterval = 0\n", "schedule.interval", "positive"),
        (
            '[[digests]]\nname = "d"\npath = "d.xml"\nformat = "pdf"\n',
            "digests[0].format",
            "one of",
        ),
        (
            '[[digests]]\nname = "d"\npath = "d.html"\ntimezone = "Mars/Olympus"\n',
            "digests[0].timezone",
            "unknown time zone",
        ),
        (
            '[[digests]]\nname = "d"\npath = "d.html"\ntimezone = "../../etc/passwd"\n',
            "digests[0].timezone",
            "unknown time zone",
        ),
        (
            '[[feeds]]\nurl = "file:///tmp/f.xml"\nuser_agent = "Me/1"\n',
            "feeds[0].user_agent",
            "http(s) feeds only",
        ),
        ('colour = "blue"\n', "colour", "unknown key"),
    ],
)
def test_bad_config_names_the_file_and_key(tmp_path: Path, text: str, key: str, words: str) -> None:
    with pytest.raises(ConfigError) as info:
        load(tmp_path, text)
    message = str(info.value)
    assert str(tmp_path / "aggregator.toml") in message
    assert info.value.key == key
    assert words in message


def test_invalid_toml_and_missing_file_are_config_errors(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="invalid TOML"):
        load(tmp_path, "[storage\n")
    with pytest.raises(ConfigError, match="file not found"):
        config.load(tmp_path / "missing.toml")


def test_config_path_precedence_is_flag_then_environment_then_default() -> None:
    assert config.resolve_path("a.toml", {"AGGREGATOR_CONFIG": "b.toml"}) == Path("a.toml")
    assert config.resolve_path(None, {"AGGREGATOR_CONFIG": "b.toml"}) == Path("b.toml")
    assert config.resolve_path(None, {}) == Path("config/aggregator.toml")


def test_included_feed_files_add_feeds(tmp_path: Path) -> None:
    (tmp_path / "more.toml").write_text('[[feeds]]\nurl = "https://b.example/rss"\n')
    cfg = load(tmp_path, 'include = ["more.toml"]\n[[feeds]]\nurl = "https://a.example/rss"\n')
    assert [f.url for f in cfg.feeds] == ["https://a.example/rss", "https://b.example/rss"]


@pytest.mark.parametrize(
    ("text", "seconds"), [("90s", 90), ("30m", 1800), ("2h", 7200), ("1d", 86400), (45, 45)]
)
def test_durations(text: object, seconds: int) -> None:
    assert config.parse_duration(text) == seconds


def test_shipped_configs_are_valid() -> None:
    root = Path(__file__).resolve().parents[1]
    for name in ("aggregator.toml", "demo.toml"):
        cfg = config.load(root / "config" / name)
        assert len(cfg.feeds) >= 8, f"{name} lists too few feeds"
