"""Parse feed files and print one JSON line per file: the ParsedFeed, or the ParseError.

    python tests/parse_dump.py [--untuned] [--hook NAME] FILE...

`--untuned` parses with feedparser as shipped (the aggregator's tuning never applied);
`--hook NAME` pretends the tuning needs one more feedparser internal that does not exist.
Used by tests/test_parse.py in separate processes, since the tuning is process-wide.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import sys
from datetime import datetime
from pathlib import Path

from aggregator import parse
from aggregator.errors import ParseError


def _plain(value: object) -> object:
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: _plain(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, tuple | list):
        return [_plain(v) for v in value]
    if isinstance(value, datetime):
        return value.isoformat()
    return value


def main(argv: list[str]) -> None:
    logging.basicConfig(level=logging.ERROR, format="%(levelname)s %(message)s")
    if argv and argv[0] == "--untuned":
        argv = argv[1:]
        parse._feedparser_tuned = True  # as if done: nothing is ever patched in this process
    if argv and argv[0] == "--hook":
        name, argv = argv[1], argv[2:]
        parse._HOOKS = (*parse._HOOKS, ("mixin._FeedParserMixin", (name,)))
    for path in argv:
        body = Path(path).read_bytes()
        try:
            result: object = _plain(parse.parse_feed(body, {}, "http://example.com/feed"))
        except ParseError as exc:
            result = {"error": exc.message}
        print(json.dumps({"file": path, "result": result}, sort_keys=True, default=str))


if __name__ == "__main__":
    main(sys.argv[1:])
