"""Render a digest as HTML and photograph it with headless Chromium (a visual check, not a test).

    .venv/bin/python benchmarks/screenshot_digest.py [DIGEST.json ...] [--dark] [--width 1200]

DIGEST.json has the shape of tests/data/export/digest.json (the default). Prints the paths of the
HTML page and the PNG, and how long rendering took. Needs `chromium` on PATH
(Debian: apt-get install chromium).
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path

from aggregator.export import render_html
from aggregator.model import Digest, DigestStory, Source

ROOT = Path(__file__).resolve().parents[1]
DEFAULT = ROOT / "tests" / "data" / "export" / "digest.json"


def _when(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


def load_digest(path: Path) -> Digest:
    raw = json.loads(path.read_text(encoding="utf-8"))
    stories = tuple(
        DigestStory(
            story_id=s["story_id"],
            title=s["title"],
            link=s["link"],
            summary=s["summary"],
            first_seen=_when(s["first_seen"]),
            updated=_when(s["updated"]),
            sources=tuple(
                Source(x["outlet"], x["title"], x["link"], _when(x["published"]))
                for x in s["sources"]
            ),
            categories=tuple(s.get("categories", ())),
            language=s.get("language"),
        )
        for s in raw["stories"]
    )
    return Digest(
        raw["title"], _when(raw["generated_at"]), stories, raw.get("link"), raw.get("feed_url")
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("digests", nargs="*", type=Path, default=[DEFAULT])
    parser.add_argument("--dark", action="store_true", help="emulate prefers-color-scheme: dark")
    parser.add_argument("--width", type=int, default=1200)
    parser.add_argument("--height", type=int, default=1600)
    parser.add_argument("--out", type=Path, default=Path(tempfile.gettempdir()))
    args = parser.parse_args()
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if chromium is None:
        print("chromium not found on PATH (apt-get install chromium)", file=sys.stderr)
        return 2
    for path in args.digests:
        digest = load_digest(path)
        started = time.perf_counter()
        page = render_html(digest)
        elapsed = time.perf_counter() - started
        suffix = "-dark" if args.dark else ""
        html_path = args.out / f"digest-{path.stem}{suffix}.html"
        png_path = args.out / f"digest-{path.stem}{suffix}-{args.width}.png"
        html_path.write_bytes(page)
        with tempfile.TemporaryDirectory() as profile:
            command = [
                chromium,
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                "--no-first-run",
                f"--user-data-dir={profile}",
                "--hide-scrollbars",
                f"--screenshot={png_path}",
                f"--window-size={args.width},{args.height}",
            ]
            if args.dark:
                command.append("--blink-settings=preferredColorScheme=0")
            command.append(html_path.as_uri())
            subprocess.run(command, check=True, capture_output=True, timeout=120)
        print(
            f"{path.name}: {len(digest.stories)} stories, {len(page)} bytes, "
            f"rendered in {elapsed * 1000:.2f} ms -> {html_path} {png_path}"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
