"""The demo's expected stories through the real pipeline: which pairs join, which must not.

Polls the demo feeds (aggregator/demo/feeds, first poll's files) as file:// feeds with
`aggregator poll --all` into a temporary database, then checks aggregator/demo/expected_stories.json:
same-language member pairs that share a story, cross-language pairs that do, hard negatives kept
apart.

    .venv/bin/python benchmarks/demo_stories.py
"""

from __future__ import annotations

import itertools
import json
import sqlite3
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DEMO = ROOT / "aggregator" / "demo"


def main() -> int:
    expected_path = DEMO / "expected_stories.json"
    if not expected_path.exists():
        print("skipped: aggregator/demo/expected_stories.json not found (demo not merged yet)")
        return 0
    expected = json.loads(expected_path.read_text(encoding="utf-8"))
    feeds = sorted(p for p in (DEMO / "feeds").iterdir() if ".poll2." not in p.name)
    with tempfile.TemporaryDirectory() as tmp:
        db = Path(tmp) / "demo.db"
        config = Path(tmp) / "demo.toml"
        lines = ["[storage]", f'database = "{db}"', ""]
        for p in feeds:
            lines += ["[[feeds]]", f'url = "{p.as_uri()}"', ""]
        config.write_text("\n".join(lines), encoding="utf-8")
        subprocess.run(
            [str(ROOT / ".venv" / "bin" / "aggregator"), "--config", str(config), "poll", "--all"],
            check=True,
            stdout=subprocess.DEVNULL,
        )
        with sqlite3.connect(db) as conn:
            rows = conn.execute(
                "SELECT f.url, e.guid, e.story_id FROM entries e JOIN feeds f ON f.id = e.feed_id"
            ).fetchall()
    story = {}
    for url, guid, sid in rows:
        slug = Path(url).name.split(".")[0]
        story[(slug, guid)] = sid
    manifest = json.loads((DEMO / "manifest.json").read_text(encoding="utf-8"))
    language = {o["slug"]: o["language"] for o in manifest["outlets"]}
    same = [0, 0]
    cross = [0, 0]
    missing: set[tuple[str, str]] = set()
    for s in expected["stories"]:
        members = [tuple(m) for m in s["members"]]
        for a, b in itertools.combinations(members, 2):
            if a not in story or b not in story:
                missing.add(a if a not in story else b)
                continue
            kind = same if language[a[0]] == language[b[0]] else cross
            kind[1] += 1
            kind[0] += story[a] == story[b]
            if kind is same and story[a] != story[b]:
                print(f"  same-language pair apart: {a} | {b}")
    negatives = expected.get("hard_negatives", [])
    apart = 0
    for a, b in negatives:
        if story.get(tuple(a)) != story.get(tuple(b)):
            apart += 1
        else:
            print(f"  hard negative together: {tuple(a)} | {tuple(b)}")
    if missing:
        print(
            f"  {len(missing)} expected entries were not ingested (pairs with them skipped):"
            f" {sorted(missing)}"
        )
    print(f"same-language member pairs together: {same[0]}/{same[1]}")
    print(f"cross-language member pairs together: {cross[0]}/{cross[1]}")
    print(f"hard-negative pairs kept apart: {apart}/{len(negatives)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
