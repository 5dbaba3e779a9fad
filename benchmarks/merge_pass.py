"""The story merge pass alone, in process: the 50,000 entries `scale.py` generates (10,000 feeds
of 5), parsed and fingerprinted as a worker does, added to one `StoryClusterer` window, then
`merge_pass()`. Prints its time, merges, stories and the process's peak RSS. Steadier than
`scale.py`'s wall time, which also counts HTTP, workers and SQLite.

    .venv/bin/python benchmarks/merge_pass.py [--feeds 10000] [--entries 5] [--code DIR]

`--code DIR` measures another checkout of the package (e.g. a `git worktree` of an older
commit) on the same entries.
"""

from __future__ import annotations

import argparse
import resource
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

from _common import ROOT


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--feeds", type=int, default=10_000)
    ap.add_argument("--entries", type=int, default=5)
    ap.add_argument("--code", type=Path, default=ROOT, help="a checkout whose aggregator to run")
    args = ap.parse_args()
    sys.path.insert(0, str(ROOT))
    from tests.feedgen import write_feeds  # the generator of this checkout, for every --code

    sys.path.insert(0, str(args.code.resolve()))
    for name in [m for m in sys.modules if m == "aggregator" or m.startswith("aggregator.")]:
        del sys.modules[name]
    from aggregator import cluster, fingerprint, model
    from aggregator.process import process_body

    now = datetime(2024, 10, 30, tzinfo=UTC)
    docs = []
    with tempfile.TemporaryDirectory() as tmp:
        for feed_id, path in enumerate(write_feeds(Path(tmp), args.feeds, args.entries, seed=5), 1):
            out = process_body(path.read_bytes(), {}, f"http://127.0.0.1/{path.name}", now, 10**7)
            for entry, fp in out.entries:
                layout = {}
                if hasattr(fingerprint, "title_layout"):  # older code has no headline layout
                    layout = dict(
                        zip(
                            ("title_terms", "rubric_terms"),
                            fingerprint.title_layout(entry.title),
                            strict=True,
                        )
                    )
                docs.append(
                    model.ClusterDoc(
                        entry_id=len(docs) + 1,
                        feed_id=feed_id,
                        host=f"outlet{feed_id}.example",
                        published=entry.published,
                        link=entry.link,
                        content_hash=fp.content_hash,
                        simhash=fp.simhash,
                        title=entry.title,
                        terms=tuple(map(sys.intern, fp.terms)),
                        language=entry.language,
                        story_id=None,
                        text_length=len(entry.text),
                        **layout,
                    )
                )
    clusterer = cluster.StoryClusterer(model.ClusterSettings(), 1)
    for doc in docs:
        clusterer.add(doc, ())
    start = time.perf_counter()
    merges = clusterer.merge_pass()
    seconds = time.perf_counter() - start
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(
        f"{args.code}: {len(docs)} entries, merge_pass {seconds:.1f} s, {len(merges)} merges, "
        f"{len(clusterer.stories())} stories, peak RSS {peak:.0f} MB"
    )


if __name__ == "__main__":
    main()
