"""Would a learned pair decision beat the story tier's pair rule? A measurement, not a model we ship.

For each labelled French day (the shared hand-labelled day and benchmarks/labels/), the day is
polled after its week of history as `cluster_eval.py` does, and every pair of entries from two
outlets with a cosine of at least 0.02 gets the similarity features a logistic model would use
(Miranda et al., EMNLP 2018, did this for streaming news): cosine, cosine without the strongest
unit, headline-only cosine, what a bursting event name and the standing names add, a shared
name or number, the rarest shared headline term, shared headline terms, hours apart. A logistic
regression (Newton's method, small L2) is trained on some days and scored on the others against
the pair rule itself, at the pair rule's own precision.

    .venv/bin/python benchmarks/pair_model.py

Measured (2026-12-03): trained on any one or two days, the model's recall at the rule's
precision is lower on every held-out day (e.g. trained on 28 Oct: 24 Oct 0.34 against the
rule's 0.42, 31 Oct 0.23 against 0.32), so the story tier keeps its rule.
"""

from __future__ import annotations

import itertools
import math
import sys
import tempfile
from datetime import timedelta
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

import cluster_eval as ce  # noqa: E402

from aggregator import cluster as C  # noqa: E402
from aggregator import pipeline as P  # noqa: E402
from aggregator.store import Store  # noqa: E402

FEATURES = (
    "cosine",
    "without strongest unit",
    "headline cosine",
    "event share",
    "standing share",
    "name shared",
    "numbers shared",
    "rarest shared term",
    "shared headline terms",
    "hours apart",
    "without standing names",
)


def day_features(labels: Path, directory: Path) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Features, gold (same story) and the pair rule's decision for one labelled day."""
    rows = ce.read_labelled_day(labels)
    day = ce.labelled_day_of(labels)
    aggregator = str(ROOT / ".venv" / "bin" / "aggregator")
    ce.run_with_history(rows, ce.history_days(day, 7), aggregator, directory)
    gold = {r.url: r.story for r in rows}
    store = Store.open(directory / "with-history" / "eval.db", readonly=True)
    stored = store.execute(
        "SELECT e.*, f.url AS feed_url FROM entries e JOIN feeds f ON f.id = e.feed_id"
    ).fetchall()
    everything = [P._doc(r) for r in stored]
    docs = {d.link: d for d in everything if d.link in gold}
    settings = C.ClusterSettings()
    clusterer = C.StoryClusterer(settings, 1 << 40)
    window = timedelta(hours=settings.window_hours)
    lo, hi = min(d.published for d in docs.values()), max(d.published for d in docs.values())
    clusterer.load(d for d in everything if lo - window <= d.published <= hi + window)
    P._use_headline_counts(store, clusterer)
    stats = clusterer._stats()
    boilerplate = C._Boilerplate.of(clusterer._docs.values())
    vectors = {k: C._doc_vector(d, stats.idf, boilerplate) for k, d in docs.items()}

    def headline_vector(doc: C.ClusterDoc) -> dict[str, float]:
        common, rubric = boilerplate.noise(doc)
        weights: dict[str, float] = {}
        for i, term in enumerate(doc.terms[: doc.title_terms]):
            if term not in weights and term not in common and i >= rubric:
                weights[term] = stats.idf(term)
        norm = math.sqrt(sum(w * w for w in weights.values())) or 1.0
        return {t: w / norm for t, w in weights.items()}

    headlines = {k: headline_vector(d) for k, d in docs.items()}
    features, same, rule = [], [], []
    for a, b in itertools.combinations(sorted(docs), 2):
        da, db = docs[a], docs[b]
        if C._outlet(da) == C._outlet(db):
            continue  # never joined by similarity
        va, vb = vectors[a], vectors[b]
        cosine, top = C._pair_match(va, vb)
        if cosine < 0.02:
            continue
        events = C._event_keys(da, db, clusterer._events)
        standing = C._standing_keys(da, db, clusterer._chronic)
        standing_share = C._unit_share(va, vb, standing) if standing else 0.0
        shared = set(da.terms[: da.title_terms]) & set(db.terms[: db.title_terms])
        features.append(
            [
                cosine,
                cosine - top,
                sum(w * headlines[b].get(t, 0.0) for t, w in headlines[a].items()),
                C._unit_share(va, vb, events) if events else 0.0,
                standing_share,
                float(C._names_shared(va, vb, da, db)),
                min(3, sum(1 for t in shared if t.startswith("#"))),
                max((stats.idf(t) for t in shared), default=0.0) / 8,
                min(6, len(shared)) / 6,
                math.log1p(abs((da.published - db.published).total_seconds()) / 3600) / 3,
                cosine - standing_share,
            ]
        )
        same.append(gold[a] == gold[b])
        _, passes = C._pair_rule(
            va, vb, settings.story_threshold, (da, db), clusterer._events, clusterer._chronic
        )
        rule.append(passes)
    store.close()
    return np.array(features), np.array(same), np.array(rule)


def fit(x: np.ndarray, y: np.ndarray, l2: float = 1e-3, steps: int = 100) -> np.ndarray:
    """Logistic regression by Newton's method."""
    xb = np.column_stack([x, np.ones(len(x))])
    w = np.zeros(xb.shape[1])
    for _ in range(steps):
        p = 1 / (1 + np.exp(-xb @ w))
        gradient = xb.T @ (p - y) / len(y) + l2 * w
        hessian = (xb * (p * (1 - p))[:, None]).T @ xb / len(y) + l2 * np.eye(len(w))
        w -= np.linalg.solve(hessian, gradient)
    return w


def recall_at(p: np.ndarray, y: np.ndarray, precision: float) -> float:
    """The model's recall at the largest cut-off that keeps `precision`."""
    order = np.argsort(-p)
    hits = np.cumsum(y[order])
    kept = np.where(hits / np.arange(1, len(p) + 1) >= precision)[0]
    return float(hits[kept.max()] / y.sum()) if len(kept) else 0.0


def main() -> int:
    days = [p for p in ce.labelled_sets() if p.exists()]
    if len(days) < 2:
        print("skipped: needs at least two labelled days (../shared and benchmarks/labels)")
        return 0
    data = {}
    with tempfile.TemporaryDirectory(prefix="pair-model-") as tmp:
        for path in days:
            print(f"polling {path.stem} after its week of history ...", file=sys.stderr)
            data[path.stem] = day_features(path, Path(tmp) / path.stem)
    names = sorted(data)
    for n in (1, 2):
        for train in itertools.combinations(names, n):
            x = np.vstack([data[d][0] for d in train])
            y = np.concatenate([data[d][1] for d in train]).astype(float)
            w = fit(x, y)
            for test in names:
                if test in train:
                    continue
                xt, yt, rule = data[test]
                p = 1 / (1 + np.exp(-(np.column_stack([xt, np.ones(len(xt))]) @ w)))
                rule_p = (rule & yt).sum() / max(rule.sum(), 1)
                rule_r = (rule & yt).sum() / yt.sum()
                print(
                    f"trained on {'+'.join(train)}, scored on {test}: pair rule P {rule_p:.3f}"
                    f" R {rule_r:.3f}; model at that precision R {recall_at(p, yt, rule_p):.3f}"
                )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
