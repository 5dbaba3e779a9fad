"""Ingest the given feed files with lemon24/reader's update_feeds(workers=2) (benchmark peer)."""

from __future__ import annotations

import sys

from reader import make_reader


def main() -> None:
    db, root, *names = sys.argv[1:]
    reader = make_reader(db, feed_root=root)
    for name in names:
        reader.add_feed(f"file:{name}", allow_invalid_url=True)
    reader.update_feeds(workers=2)
    print(reader.get_entry_counts().total)


if __name__ == "__main__":
    main()
