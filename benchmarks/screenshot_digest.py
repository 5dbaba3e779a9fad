"""Render a digest as HTML and photograph it with headless Chromium (a visual check, not a test).

    .venv/bin/python benchmarks/screenshot_digest.py [DIGEST.json ...] [--corpus] [--dark]

DIGEST.json has the shape of tests/data/export/digest.json (the default). --corpus instead builds
the digest of one real day (../shared/corpora/news-en-2020, 2020-08-05, plus the hostile story)
the way tests/test_export.py does, and also times every format. Prints the paths of the HTML page
and the PNG. Needs `chromium` on PATH (Debian: apt-get install chromium).
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from aggregator.export import FORMATS, render, render_html
from aggregator.model import Digest

ROOT = Path(__file__).resolve().parents[1]
DEFAULT = ROOT / "tests" / "data" / "export" / "digest.json"


def load_digest(path: Path) -> Digest:
    """The tests' fixture loader (one home for the digest JSON format)."""
    sys.path.insert(0, str(ROOT / "tests"))
    from test_export import load_digest as load

    return load(path.resolve())


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("digests", nargs="*", type=Path, default=[DEFAULT])
    parser.add_argument("--corpus", action="store_true", help="one real day of news instead")
    parser.add_argument("--dark", action="store_true", help="emulate prefers-color-scheme: dark")
    parser.add_argument("--width", type=int, default=1200)
    parser.add_argument("--height", type=int, default=1600)
    parser.add_argument("--out", type=Path, default=Path(tempfile.gettempdir()))
    args = parser.parse_args()
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if chromium is None:
        print("chromium not found on PATH (apt-get install chromium)", file=sys.stderr)
        return 2
    jobs: list[tuple[str, Digest]] = []
    if args.corpus:
        sys.path.insert(0, str(ROOT / "tests"))
        from test_export import real_day_digest  # the same digest the corpus test checks

        started = time.perf_counter()
        digest = real_day_digest()
        print(f"built the real-day digest in {time.perf_counter() - started:.2f} s")
        for fmt in FORMATS:
            started = time.perf_counter()
            for _ in range(5):
                output = render(digest, fmt)
            per_run = (time.perf_counter() - started) / 5
            print(
                f"{fmt:>4}: {len(digest.stories)} stories, "
                f"{sum(len(s.sources) for s in digest.stories)} sources, {len(output)} bytes, "
                f"{per_run * 1000:.1f} ms per render, {len(digest.stories) / per_run:,.0f} stories/s"
            )
        jobs.append(("news-en-2020-08-05", digest))
    else:
        jobs.extend((path.stem, load_digest(path)) for path in args.digests)
    for name, digest in jobs:
        started = time.perf_counter()
        page = render_html(digest)
        elapsed = time.perf_counter() - started
        suffix = "-dark" if args.dark else ""
        html_path = args.out / f"digest-{name}{suffix}.html"
        png_path = args.out / f"digest-{name}{suffix}-{args.width}.png"
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
            f"{name}: {len(digest.stories)} stories, {len(page)} bytes, "
            f"rendered in {elapsed * 1000:.2f} ms -> {html_path} {png_path}"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
