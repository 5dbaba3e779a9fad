from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.httpserver import LoopbackServer

DATA = Path(__file__).parent / "data"
SHARED = Path(__file__).resolve().parents[1].parent / "shared"


@pytest.fixture
def server() -> Iterator[LoopbackServer]:
    with LoopbackServer() as srv:
        yield srv


@pytest.fixture
def feed_dir(tmp_path: Path) -> Path:
    """A copy of the test feeds that a test may change."""
    target = tmp_path / "feeds"
    shutil.copytree(DATA / "feeds", target)
    return target


def write_config(path: Path, body: str) -> Path:
    path.write_text(body, encoding="utf-8")
    return path
