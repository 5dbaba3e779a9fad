"""Pure decisions: which story an entry joins, with the evidence (rule, distance, score).

Two tiers, both inside a time window:

1. Near-duplicates (copies): the same canonical URL, the same content hash, or simhashes within
   Hamming distance k. Near-duplicates always share a story; when an entry is a copy of entries
   in two stories, the stories merge (the entry *bridges* them).
2. Stories (different write-ups of one happening), precision first. Each entry is a unit
   TF-IDF vector of its story terms (IDF from the window's document frequencies smoothed by a
   prior so that small windows behave), headline terms weighted twice, and without what its
   outlet repeats: terms on a quarter or more of one feed's window entries, and a leading
   rubric ("Guerre en Ukraine :") the feed puts on two or more headlines (`_Boilerplate`).
   Two entries match (the *pair rule*) when their cosine reaches `story_threshold` and the
   match does not rest on one unit (the *leave-one-out* guard; a name phrase counts together
   with its own words and initials, and so does a headline label both share: "FC Magdeburg"
   and "Magdeburg attack" share only "magdeburg"); a match sharing no number and no
   capitalised word of either headline needs 1.75 times the threshold (the *names* guard). Two
   stories merge when at least half of the same-language pairs between their *cores* (each
   story's four members closest to its centroid; all of a smaller story) match by the pair
   rule (*half-agreement linkage*): a newcomer must agree with most of a story's core, not
   with a sum of centroids that drifts toward generic terms as the story grows, so stories
   do not chain, and a big story is not held back by its peripheral members. Stories whose
   members quote measurements must share one (the *numbers* guard: a 6.1 and a 5.3
   earthquake are two events), and a story told by one outlet (host) never merges with
   another story of that outlet alone. A story spans at most one window, first to last
   publication (the *span* bound: a subject covered every day does not chain a week of
   happenings into one story). Headlines that share a name bursting in their day's headlines
   (in at least three times as many as in the week before: "Ballon d'Or" on the night of the
   ceremony, not "Ukraine") match on less evidence, and headlines that share two such names
   ("Inondations en Espagne") match on them alone (the *event* rule, `_event_names`; it
   needs a week of stored headline counts, so a new database goes without it at first).
   The same week tells the standing names of a day: in the headlines every day and no more
   so today ("Trump" and "Harris" before the election, "Ukraine"). A match must hold without
   them all, taken as one unit (the *topic* guard, `_chronic_names`): two campaign pieces
   that share only the candidates' names are a subject, not one happening.

How the pieces fit within one poll cycle, and why the result depends neither on the order feeds
are polled nor on where a crash cut a cycle:

* `load()` the stored entries of the window (with their story ids).
* `add()` each new entry: it joins every near-duplicate's story (a symmetric relation, found by
  whichever of the pair arrives second; an entry that copies members of two stories bridges
  them) or starts a new story. The partition after all adds is the connected components of the
  near-duplicate relation over the stored stories: the same for every order.
* `merge_pass()` at the end of the cycle does all story matching: agglomerative
  half-agreement clustering, with the IDF of the whole window, of every story touched this
  cycle (or `touch`ed after a crash) against its neighbours, best pair first, ties broken by content rather than
  ids. A deterministic function of that partition, so order-independent too; and a cycle cut
  short before its merge pass ends, after `touch_range` over its entries, exactly where an
  uninterrupted one would.

No I/O, no clock: `now` never matters; time only enters through the entries' dates.
"""

from __future__ import annotations

import heapq
import math
import re
from array import array
from collections import Counter
from collections.abc import Callable, Generator, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from functools import lru_cache
from typing import TypeVar

import numpy as np

from aggregator.fingerprint import hamming, headline_words, title_names
from aggregator.model import (
    Assignment,
    ClusterDoc,
    ClusterSettings,
    Explanation,
    StoryMerge,
    StorySummary,
    representative_key,
    simhash_bands,
)

__all__ = [
    "Assignment",
    "ClusterDoc",
    "ClusterSettings",
    "Explanation",
    "StoryClusterer",
    "StoryMerge",
    "StorySummary",
    "retitled",
    "summarise_story",
]

# Terms carried by more than this share of the window (plus a floor for small windows) do not
# propose candidates: they still weigh in the cosine, they are just too common to search by.
_SEARCH_DF_SHARE = 0.05
_SEARCH_DF_FLOOR = 20
_TITLE_WORD = re.compile(r"[^\W_]+")

Vector = dict[str, float]
K = TypeVar("K")
# The single-term guard: without its strongest unit a match must keep this share of the threshold.
_GUARD_SHARE = 0.5


@dataclass(frozen=True, slots=True)
class _Stats:
    """Document frequencies of a window, frozen: the IDF used for one set of decisions."""

    docs: int
    df: dict[str, int]
    prior: int

    def idf(self, term: str) -> float:
        # Smoothed: a term unseen in the window weighs like one seen once among `prior` documents.
        return math.log((self.docs + self.prior + 1) / (self.df.get(term, 0) + 1))

    def search_limit(self) -> float:
        return max(_SEARCH_DF_FLOOR, _SEARCH_DF_SHARE * self.docs)


_MAX_NEIGHBOURS = 8  # candidate merges kept per story in the merge pass
_KEY_TERMS = 24  # in a large window, a story's neighbours are found by its top terms only
_MAX_CANDIDATES = 24  # in a large window, stories scored per look for neighbours
_LARGE_WINDOW = 3000  # documents; below this every informative term is searched (exact)
_CORE = 4  # members of a story that speak for it in the linkage (its most central ones)
# Entry vectors a merge pass keeps: ~8 MB on the scale benchmark's long texts; twice as many
# saved 2% of its merge pass for 8 MB more.
_VECTOR_CACHE = 1024
_STEP = 1024  # merge_steps pauses after this many stories built, or an eighth as many pushes


# Headline words weigh this much more than words of the summary or text: a headline names the
# happening, a summary's lead often repeats the outlet's context.
_TITLE_WEIGHT = 2.0
# A term on at least this share of one feed's window entries (a feed with at least
# _FEED_MIN_DOCS there) is that feed's boilerplate: its name, a programme, a recurring rubric.
_FEED_SHARE = 0.25
_FEED_MIN_DOCS = 6
# A leading headline label ("Guerre en Ukraine :") one feed uses this often is a rubric, not news.
_RUBRIC_REPEATS = 2
# A rubric is kept as evidence, weighed like half a summary word and taken as one unit by the
# leave-one-out guard: "Ballon d'or 2024 :" on one outlet's headlines of the day names the
# happening, but two headlines that share nothing beyond it ("Guerre en Ukraine :") are not one.
_RUBRIC_WEIGHT = 0.5


@dataclass(frozen=True, slots=True)
class _Boilerplate:
    """What each feed repeats across its own entries in the window, and so carries no evidence
    that two entries report one happening: frequent terms per feed and recurring rubrics."""

    feed_terms: dict[int, frozenset[str]]
    rubrics: frozenset[tuple[int, tuple[str, ...]]]

    @classmethod
    def of(cls, docs: Iterable[ClusterDoc]) -> _Boilerplate:
        by_feed: dict[int, list[ClusterDoc]] = {}
        for doc in docs:
            by_feed.setdefault(doc.feed_id, []).append(doc)
        feed_terms: dict[int, frozenset[str]] = {}
        rubrics: set[tuple[int, tuple[str, ...]]] = set()
        for feed_id in sorted(by_feed):
            feed_docs = by_feed[feed_id]
            # Counted over distinct headlines: one item listed twice (a feed that repeats an
            # entry, a headline quoting "Trump on the death toll: 'It is what it is'") does not
            # make its lead words a rubric.
            headlines = {
                d.terms[: d.title_terms]: d.rubric_terms for d in feed_docs if d.rubric_terms
            }
            labels = Counter(headline[:n] for headline, n in headlines.items())
            rubrics.update((feed_id, label) for label, n in labels.items() if n >= _RUBRIC_REPEATS)
            if len(feed_docs) >= _FEED_MIN_DOCS:
                counts = Counter(t for d in feed_docs for t in d.terms)
                floor = _FEED_SHARE * len(feed_docs)
                common = frozenset(t for t, n in counts.items() if n >= floor)
                if common:
                    feed_terms[feed_id] = common
        return cls(feed_terms, frozenset(rubrics))

    def noise(self, doc: ClusterDoc) -> tuple[frozenset[str], int]:
        """The terms of `doc` that are its feed's boilerplate, and how many leading terms are a
        recurring rubric."""
        rubric = doc.rubric_terms
        if rubric and (doc.feed_id, doc.terms[:rubric]) not in self.rubrics:
            rubric = 0
        return self.feed_terms.get(doc.feed_id, _NO_TERMS), rubric


_NO_TERMS: frozenset[str] = frozenset()


def _doc_vector(doc: ClusterDoc, idf: Callable[[str], float], boilerplate: _Boilerplate) -> Vector:
    """Unit-length vector of one entry: IDF-weighted terms, headline terms weighted up, its
    feed's boilerplate and a recurring rubric left out."""
    common, rubric = boilerplate.noise(doc)
    weights: dict[str, float] = {}
    for i, term in enumerate(doc.terms):
        if term in weights or term in common:
            continue
        weight = idf(term)
        if i < rubric:
            weights[term] = weight * _RUBRIC_WEIGHT
        else:
            weights[term] = weight * _TITLE_WEIGHT if i < doc.title_terms else weight
    if doc.rubric_terms:
        # A headline's leading label ("Künstliche Intelligenz -"), recurring or not, is one unit
        # for `_pair_match`: a phrase key of no weight that groups its words (and their
        # initials, "KI"), as a name phrase does.
        label = [t for t in doc.terms[: doc.rubric_terms] if t in weights and "_" not in t]
        if len(label) > 1:
            weights.setdefault("_".join(label), 0.0)  # a name phrase keeps its weight
    norm = math.sqrt(sum(w * w for w in weights.values()))
    if norm == 0.0:
        return {}
    return {t: w / norm for t, w in weights.items()}


def _dot(a: Vector, b: Iterable[tuple[str, float]]) -> tuple[float, float]:
    """Dot product of a vector and another one given as (term, weight) pairs, and the largest
    single-term contribution to it. Summed with fsum, exact whatever the order, so a score
    never depends on which side is iterated."""
    get = a.get
    parts = [w * x for t, w in b if (x := get(t)) is not None]
    if not parts:
        return 0.0, 0.0
    return math.fsum(parts), max(parts)


def _pair_match(a: Vector, b: Vector) -> tuple[float, float]:
    """Cosine of two entry vectors and the share carried by their strongest single unit: a
    term, or a name phrase ("kunstliche_intelligenz") together with its own words, which would
    otherwise pass for three independent pieces of evidence."""
    if len(a) > len(b):
        a, b = b, a
    parts = {t: w * x for t, w in a.items() if (x := b.get(t)) is not None}
    if not parts:
        return 0.0, 0.0
    strongest = max(parts.values())
    for term, weight in parts.items():
        if "_" in term:
            words = term.split("_")
            # The phrase's words and its initials ("KI" for "Künstliche Intelligenz", "UN"
            # for "United Nations") are one name told several ways.
            initials = "".join(word[0] for word in words if word)
            unit = weight + math.fsum(parts.get(word, 0.0) for word in {*words, initials})
            strongest = max(strongest, unit)
    return math.fsum(parts.values()), strongest


def _pair_rule(
    a: Vector,
    b: Vector,
    threshold: float,
    docs: tuple[ClusterDoc, ClusterDoc] | None = None,
    events: Mapping[str, frozenset[str]] | None = None,
    chronic: Mapping[str, frozenset[str]] | None = None,
) -> tuple[float, bool]:
    """The cosine of two entries and whether they match: it reaches the threshold, and keeps
    `_GUARD_SHARE` of it without their strongest unit (the leave-one-out guard); and, for the
    `docs` of the vectors, when the match shares no name or number of their headlines, it
    reaches `_PLAIN_SHARE` times the threshold (the *names* guard). Two headlines naming the
    same event of their day (`events`, see `_event_names`) match on less: `_EVENT_SHARE` of
    the threshold, of which `_EVENT_REST` without that name (the *event* rule). Otherwise a
    match must keep `_GUARD_SHARE` of the threshold without the standing names of their days
    (`chronic`, see `_chronic_names`) taken together (the *topic* guard)."""
    cosine, strongest = _pair_match(a, b)
    if docs is not None and events:
        keys = _event_keys(*docs, events)
        if keys and _name_units(a, b, keys) >= _EVENT_NAMES:
            return cosine, True  # two of the day's event names in both headlines
    if docs is not None and events and cosine >= threshold * _EVENT_SHARE:
        keys = _event_keys(*docs, events)
        if keys and cosine - _unit_share(a, b, keys) >= threshold * _EVENT_REST:
            return cosine, True
    passes = cosine >= threshold and cosine - strongest >= threshold * _GUARD_SHARE
    if passes and docs is not None and cosine < threshold * _PLAIN_SHARE:
        passes = _names_shared(a, b, *docs)
    if passes and docs is not None and chronic:
        standing = _standing_keys(*docs, chronic)
        if standing and cosine - _unit_share(a, b, standing) < threshold * _GUARD_SHARE:
            passes = False  # the topic guard: it rests on names in the news all week
    return cosine, passes


# Two write-ups that share no name or number of their headlines ("usine", "menacée",
# "fermeture": a Swiss munitions factory and Volkswagen's plants) need a cosine this many times
# the threshold (0.35 at the default 0.2). On the French day this took pairwise precision from
# 0.920 to 0.930 for 0.003 of recall (a hedgehog story told without a name loses one member).
_PLAIN_SHARE = 1.75


# -- the event rule: a name bursting in the day's headlines --------------------------------------
#
# Sub-stories of one happening (the Ballon d'Or ceremony: Real Madrid's boycott, Mbappé sixth,
# Yamal's Kopa trophy) share little but the happening's name, and so do the many items of a
# story that runs every day ("Guerre en Ukraine", "Trump"). What tells them apart is the week
# before: a name in far more of today's headlines than usual names today's happening. On the
# French day, headline words at least 3 times as frequent as in the week before (with 4
# headlines from 3 outlets) were, among others, "ballon", "depardieu", "unrwa", "volkswagen",
# "free", "herisson"; "ukraine", "trump", "macron", "guerre" were not.
_EVENT_HEADLINES = 4  # an event name is in at least this many headlines of its day
_EVENT_OUTLETS = 3  # from at least this many outlets
_EVENT_BURST = 3.0  # and at least this many times as frequent as in the week before
_EVENT_WEEK = 7  # days of history an event name is measured against
# A week counts when at least this many of its days hold a quarter of the day's headlines: a
# new database (whose first poll holds only what feeds still list) has no week yet.
_EVENT_COVERED_DAYS = 5
# Two headlines that both name this many of their day's event names (distinct names: a name
# phrase, "Poupette Kenza", is one) report one happening whatever else they say: "Inondations
# en Espagne : après le déluge, l'enfer de la boue" and "... au moins 158 morts".
_EVENT_NAMES = 2
_EVENT_SHARE = 0.5  # an event pair needs this share of the threshold ...
_EVENT_REST = 0.25  # ... and this share without the event name (not the name alone)
# A standing name is in at least this many headlines a day on this many days of the week before.
_CHRONIC_HEADLINES = 2
_CHRONIC_DAYS = 5


@lru_cache(maxsize=4096)
def _day(published: datetime) -> str:
    """The UTC day of a publication time (a naive one is taken as UTC)."""
    if published.tzinfo is None:
        return published.date().isoformat()
    try:
        return published.astimezone(UTC).date().isoformat()
    except OverflowError:  # at the ends of the calendar
        return published.date().isoformat()


def _event_keys(
    doc_a: ClusterDoc, doc_b: ClusterDoc, events: Mapping[str, frozenset[str]]
) -> frozenset[str]:
    """The event names of their days both headlines carry, as names (capitalised) in both."""
    day_a, day_b = _day(doc_a.published), _day(doc_b.published)
    bursting = events.get(day_a, _NO_EVENTS) | events.get(day_b, _NO_EVENTS)
    if not bursting:
        return _NO_EVENTS
    shared = bursting.intersection(headline_words(doc_a.terms, doc_a.title_terms)).intersection(
        headline_words(doc_b.terms, doc_b.title_terms)
    )
    if not shared:
        return _NO_EVENTS
    names_a, names_b = title_names(doc_a.title), title_names(doc_b.title)
    if names_a is None or names_b is None:
        return _NO_EVENTS
    return shared & names_a & names_b


_NO_EVENTS: frozenset[str] = frozenset()


def _standing_keys(
    doc_a: ClusterDoc, doc_b: ClusterDoc, chronic: Mapping[str, frozenset[str]]
) -> frozenset[str]:
    """The standing names of their days (`_chronic_names`) both entries carry."""
    standing = chronic.get(_day(doc_a.published), _NO_EVENTS) | chronic.get(
        _day(doc_b.published), _NO_EVENTS
    )
    if not standing:
        return _NO_EVENTS
    return standing.intersection(doc_a.terms).intersection(doc_b.terms)


def _name_units(a: Vector, b: Vector, keys: frozenset[str]) -> int:
    """How many distinct names `keys` are, for two entry vectors: the words of one name
    phrase both carry ("poupette_kenza") count once. (A headline label's grouping key, of no
    weight, does not join its names: "Inondations en Espagne :" names two.)"""
    left = {k for k in keys if k in a and k in b}
    units = 0
    for term in sorted(a.keys() & b.keys()):
        if "_" in term and a[term] and b[term]:
            words = left.intersection(term.split("_"))
            if len(words) > 1:
                left -= words
                units += 1
    return units + len(left)


def _unit_share(a: Vector, b: Vector, keys: frozenset[str]) -> float:
    """What the names `keys` add to the cosine of two vectors, with every name phrase that
    holds one of them and that phrase's other words ("ballon_d_or" with "ballon")."""
    shared = sorted(a.keys() & b.keys())
    counted = {k for k in keys if k in a and k in b}
    for term in shared:
        if "_" in term:
            words = term.split("_")
            if keys.intersection(words):
                counted.add(term)
                counted.update(w for w in words if w in a and w in b)
    return math.fsum(a[t] * b[t] for t in sorted(counted))


def _event_candidates(docs: Iterable[ClusterDoc]) -> dict[str, frozenset[str]]:
    """Per day, the headline words that could be its event names: in `_EVENT_HEADLINES`
    headlines from `_EVENT_OUTLETS` outlets of that day among `docs`. Counted one day at a
    time and without keeping each document's words, so a window of tens of thousands of
    entries costs little memory."""
    by_day: dict[str, list[ClusterDoc]] = {}
    for doc in docs:
        by_day.setdefault(_day(doc.published), []).append(doc)
    found: dict[str, frozenset[str]] = {}
    for day, day_docs in by_day.items():
        counts = Counter(w for d in day_docs for w in set(headline_words(d.terms, d.title_terms)))
        frequent = {w for w, n in counts.items() if n >= _EVENT_HEADLINES}
        del counts
        outlets: dict[str, set[int | str]] = {}
        names: set[str] = set()
        for doc in day_docs:
            for w in frequent.intersection(headline_words(doc.terms, doc.title_terms)):
                if w in names:
                    continue
                who = outlets.setdefault(w, set())
                who.add(_outlet(doc))
                if len(who) >= _EVENT_OUTLETS:
                    names.add(w)
                    del outlets[w]
        if names:
            found[day] = frozenset(names)
    return found


def _event_names(
    candidates: Mapping[str, frozenset[str]], counts: Mapping[tuple[str, str], int]
) -> dict[str, frozenset[str]]:
    """Each day's event names: candidates (`_event_candidates`) `_EVENT_BURST` times as
    frequent in that day's headlines as in the week before, scaled to the day's volume.
    `counts`: (day, term) -> headlines, term '' for all of a day's headlines, over the days
    and the week before each (`Store.headline_counts`)."""
    events: dict[str, frozenset[str]] = {}
    for day, words in sorted(candidates.items()):
        week = _week(day, counts)
        if week is None:
            continue
        days, scale = week
        bursting = set()
        for word in words:
            today = counts.get((day, word), 0)
            expected = scale * sum(counts.get((d, word), 0) for d in days) / len(days)
            if today >= _EVENT_HEADLINES and today + 1 >= _EVENT_BURST * (expected + 1):
                bursting.add(word)
        if bursting:
            events[day] = frozenset(bursting)
    return events


def _chronic_names(
    candidates: Mapping[str, frozenset[str]], counts: Mapping[tuple[str, str], int]
) -> dict[str, frozenset[str]]:
    """Each day's standing names: candidates (`_event_candidates`) that were in the headlines
    on nearly every day of the week before (at least `_CHRONIC_HEADLINES` a day on
    `_CHRONIC_DAYS` days) and are not bursting today. "Trump" and "Harris" the week before the
    election, "Ukraine", "Gaza": the subject of a run of stories, not the happening of one."""
    chronic: dict[str, frozenset[str]] = {}
    for day, words in sorted(candidates.items()):
        week = _week(day, counts)
        if week is None:
            continue
        days, scale = week
        standing = set()
        for word in words:
            daily = [counts.get((d, word), 0) for d in days]
            if sum(n >= _CHRONIC_HEADLINES for n in daily) < _CHRONIC_DAYS:
                continue
            today = counts.get((day, word), 0)
            expected = scale * sum(daily) / len(days)
            if today + 1 < _EVENT_BURST * (expected + 1):
                standing.add(word)
        if standing:
            chronic[day] = frozenset(standing)
    return chronic


def _week(day: str, counts: Mapping[tuple[str, str], int]) -> tuple[list[str], float] | None:
    """The covered days of the week before `day` and the factor that scales their headline
    counts to `day`'s volume, or None when too few days are covered."""
    start = date.fromisoformat(day)
    volume = counts.get((day, ""), 0)
    if start < date.min + timedelta(days=_EVENT_WEEK):
        return None  # no week before the first days of the calendar
    days = [(start - timedelta(days=n)).isoformat() for n in range(1, _EVENT_WEEK + 1)]
    covered = [d for d in days if 4 * counts.get((d, ""), 0) >= volume > 0]
    if len(covered) < _EVENT_COVERED_DAYS:
        return None
    mean = sum(counts[d, ""] for d in covered) / len(covered)
    return covered, volume / mean


def _names_shared(a: Vector, b: Vector, doc_a: ClusterDoc, doc_b: ClusterDoc) -> bool:
    """Whether two entries share a number or a name of either headline (True when a headline's
    capitals cannot tell names apart)."""
    names_a, names_b = title_names(doc_a.title), title_names(doc_b.title)
    if names_a is None or names_b is None:
        return True
    names = names_a | names_b
    return any(t in b and (t[0] == "#" or t in names) for t in a)


def _headlines_meet(a: ClusterDoc, b: ClusterDoc) -> bool:
    """Whether two headlines share a term beyond their leading labels."""
    return not set(a.terms[a.rubric_terms : a.title_terms]).isdisjoint(
        b.terms[b.rubric_terms : b.title_terms]
    )


def _norm(v: Vector) -> float:
    return math.sqrt(sum(w * w for w in v.values()))


def _decimals(terms: Iterable[str]) -> frozenset[str]:
    """Measurements: numbers with a decimal part ("#6.1"), the kind that names an event."""
    return frozenset(t for t in terms if t.startswith("#") and "." in t)


_NO_COUNTS: Counter[str] = Counter()  # shared by the many stories quoting no measurement
_NO_DECIMALS: frozenset[str] = frozenset()


def _signature(counts: Counter[str], members: int) -> frozenset[str]:
    """The measurements at least half of a story's members quote: what the story is about."""
    if not counts:
        return _NO_DECIMALS
    return frozenset(t for t, c in counts.items() if 2 * c >= members)


def _title_words(title: str) -> set[str]:
    """Words and numbers of a title, case-folded ("4/4" gives "4" and "4": a set keeps one)."""
    return {w for w in _TITLE_WORD.findall(title.casefold()) if len(w) > 2 or w[0].isdigit()}


class _Story:
    """A cluster being built in `merge_pass`: members, summed vector, its norm, measurements.

    The centroid is kept compact, as its terms and an array of weights (a window of 50,000
    entries has tens of thousands of stories: a dict of float objects each would be ~2 KB);
    `vector` builds the dict when one is needed."""

    __slots__ = (
        "story_id",
        "members",
        "terms",
        "weights",
        "norm",
        "decimals",
        "decimal_counts",
        "key",
        "first_seen",
        "version",
        "earliest",
        "latest",
        "outlets",
        "core",
    )

    def __init__(
        self,
        story_id: int,
        members: list[int],
        vector: Vector,
        decimal_counts: Counter[str],
        key: tuple[datetime, str],
        first_seen: datetime,
        earliest: datetime,
        latest: datetime,
        outlets: frozenset[int | str],
        terms: tuple[str, ...] | None = None,
    ) -> None:
        self.story_id = story_id
        # `terms`: the vector's keys in order when the caller has them (a document's own tuple).
        self.terms = terms if terms is not None else tuple(vector)
        self.weights = array("d", vector.values())
        self.decimal_counts = decimal_counts  # how many members quote each measurement
        self.earliest = earliest  # publication times of the members, for the window check
        self.latest = latest
        self.outlets = outlets
        self.members = members
        self.norm = _norm(vector)
        self.decimals = _signature(decimal_counts, len(members))
        self.key = key
        self.first_seen = first_seen
        self.version = 0
        self.core: tuple[int, ...] | None = None  # its most central members, when computed

    @property
    def vector(self) -> Vector:
        return dict(self.pairs())

    def pairs(self) -> Iterable[tuple[str, float]]:
        """The centroid as (term, weight) pairs, without building a dict."""
        return zip(self.terms, self.weights, strict=True)


def _outlet(doc: ClusterDoc) -> int | str:
    """Who published an entry: its host (one outlet's section feeds are one outlet), else its
    feed."""
    return doc.host or doc.feed_id


def _reversed_key(key: tuple[datetime, str]) -> tuple[float, tuple[int, ...]]:
    """A story key ordered backwards, so `nlargest` prefers the earlier key on equal scores."""
    return (-key[0].timestamp(), tuple(-ord(c) for c in key[1]))


def _put(table: dict[K, int | list[int]], key: K, entry_id: int) -> None:
    held = table.get(key)
    if held is None:
        table[key] = entry_id
    elif isinstance(held, int):
        table[key] = [held, entry_id]
    else:
        held.append(entry_id)


def _drop(table: dict[K, int | list[int]], key: K, entry_id: int) -> None:
    held = table.get(key)
    if held == entry_id:
        del table[key]
    elif isinstance(held, list) and entry_id in held:
        held.remove(entry_id)
        if len(held) == 1:
            table[key] = held[0]


def _get(table: dict[K, int | list[int]], key: K, into: set[int]) -> None:
    held = table.get(key)
    if held is None:
        return
    if isinstance(held, int):
        into.add(held)
    else:
        into.update(held)


def _current(clusters: dict[int, _Story], story_id: int, version: int) -> bool:
    story = clusters.get(story_id)
    return story is not None and story.version == version


class _NeighbourIndex:
    """Which stories a story could merge with: the key terms of every story at the start of a
    merge pass as flat numpy arrays (term → story positions and weights), with an alias table
    for stories merged since, and each story's time span for the window check.

    Postings are gathered and summed in numpy, so looking for neighbours costs little per
    posting even when a window of tens of thousands of stories shares much vocabulary, and the
    arrays take a few bytes per posting instead of a Python set entry. A merged story is found
    through its members' key terms (the alias table points them at it)."""

    def __init__(
        self,
        stories: list[_Story],
        key_terms: Callable[[_Story], list[tuple[str, float]]],
        span_seconds: float,
    ) -> None:
        self._span = span_seconds
        self._position = {s.story_id: i for i, s in enumerate(stories)}
        self._story_ids = np.array([s.story_id for s in stories], dtype=np.int64)
        # Ties are broken by content (each story's key: earliest publication, content hash), not
        # by story ids, which depend on the order entries arrived in and on where a crash cut.
        by_key = sorted(range(len(stories)), key=lambda i: stories[i].key)
        self._rank = np.empty(len(stories), dtype=np.int64)
        self._rank[by_key] = np.arange(len(stories), dtype=np.int64)
        self._alias = np.arange(len(stories), dtype=np.int64)
        self._earliest = np.array([s.earliest.timestamp() for s in stories], dtype=np.float64)
        self._latest = np.array([s.latest.timestamp() for s in stories], dtype=np.float64)
        # Average-link scores divide by the product of sizes: the estimate divides by the size.
        self._size = np.array([len(s.members) for s in stories], dtype=np.float64)
        term_ids: dict[str, int] = {}
        # Typed arrays while collecting: a million postings as Python ints and floats would be
        # ~40 MB for a moment; as machine numbers they are 20 bytes each.
        tids = array("q")
        positions = array("q")
        weights = array("d")
        for i, story in enumerate(stories):
            for term, weight in key_terms(story):
                tids.append(term_ids.setdefault(term, len(term_ids)))
                positions.append(i)
                weights.append(weight)
        tid_array = np.array(tids, dtype=np.int64)
        order = np.argsort(tid_array, kind="stable")
        self._term_ids = term_ids
        self._postings = np.array(positions, dtype=np.int64)[order]
        self._weights = np.array(weights, dtype=np.float64)[order]
        counts = np.bincount(tid_array, minlength=len(term_ids))
        self._start = np.concatenate(([0], np.cumsum(counts))).tolist()

    def merged(self, source: _Story, into: _Story) -> None:
        """`source` is now part of `into` (whose span and norm are the merged story's)."""
        s, i = self._position[source.story_id], self._position[into.story_id]
        self._alias[self._alias == s] = i
        self._earliest[i] = into.earliest.timestamp()
        self._latest[i] = into.latest.timestamp()
        self._size[i] = len(into.members)
        self._rank[i] = min(self._rank[i], self._rank[s])  # the merged story's key is the min

    def candidates(
        self, story: _Story, terms: list[tuple[str, float]], limit: int | None
    ) -> list[int]:
        """Ids of the stories within the window of `story` that share one of `terms` with it;
        with a `limit`, only that many: those with the highest cosine over the shared terms."""
        parts: list[np.ndarray] = []
        part_weights: list[np.ndarray] = []
        for term, weight in terms:
            tid = self._term_ids.get(term)
            if tid is None:
                continue
            lo, hi = self._start[tid], self._start[tid + 1]
            parts.append(self._postings[lo:hi])
            part_weights.append(self._weights[lo:hi] * weight)
        if not parts:
            return []
        # Summed per story by bincount over all positions (every weight is positive, so the
        # stories present are the non-zero sums): cheaper than sorting the postings. The window
        # check then runs on those stories, far fewer than the postings.
        shared = np.bincount(
            self._alias[np.concatenate(parts)],
            weights=np.concatenate(part_weights),
            minlength=len(self._alias),
        )
        shared[self._alias[self._position[story.story_id]]] = 0.0  # not its own neighbour
        unique = np.flatnonzero(shared)
        # Differences, as in _windows_overlap: some feeds date entries near the calendar's ends.
        unique = unique[
            (self._latest[unique] - story.earliest.timestamp() >= -self._span)
            & (story.latest.timestamp() - self._earliest[unique] >= -self._span)
        ]
        if not len(unique):
            return []
        if limit is not None and len(unique) > limit:
            estimate = shared[unique] / self._size[unique]
            # Highest estimate first, ties to the earlier story key: no dependence on ids. Only
            # those tying with or above the limit-th estimate are sorted (thousands of stories
            # may share a term; sorting them all was most of the cost of a look).
            cut = np.partition(estimate, len(estimate) - limit)[len(estimate) - limit]
            top = np.flatnonzero(estimate >= cut)
            best = np.lexsort((self._rank[unique[top]], -estimate[top]))[:limit]
            unique = unique[top[best]]
        return [int(x) for x in self._story_ids[unique]]


class StoryClusterer:
    """Online story clustering for one poll cycle: `load`, then `add` each new entry, then
    `merge_pass`. Holds the window in memory; the store holds the truth between cycles."""

    def __init__(self, settings: ClusterSettings, next_story_id: int) -> None:
        if settings.representative not in ("earliest", "complete"):
            raise ValueError(
                f"representative must be 'earliest' or 'complete': {settings.representative!r}"
            )
        self.settings = settings
        self._next_story_id = next_story_id
        self._docs: dict[int, ClusterDoc] = {}
        self._story_of: dict[int, int] = {}
        self._members: dict[int, list[int]] = {}
        self._first_seen: dict[int, datetime] = {}
        # Lookup tables for near-duplicates: key -> entry id, or a list of ids once a key is
        # shared (most keys never are; a list each would cost ~90 bytes per key).
        self._by_link: dict[str, int | list[int]] = {}
        self._by_hash: dict[str, int | list[int]] = {}
        self._by_band: tuple[dict[int, int | list[int]], ...] = ({}, {}, {}, {})
        self._df: Counter[str] = Counter()
        self._evidence_updates: dict[int, Assignment] = {}
        self._added: list[int] = []
        self._assignments: dict[int, Assignment] = {}
        self._dirty: set[int] = set()
        self._span = timedelta(hours=settings.window_hours)
        self._vector_of: Callable[[int], Vector] | None = None  # set during a merge pass
        self._single_outlets: dict[frozenset[int | str], frozenset[int | str]] = {}
        self._candidates: dict[str, frozenset[str]] = {}  # possible event names, by day
        # First and last publication of stored stories, members outside the window included.
        self._spans: dict[int, tuple[datetime, datetime]] = {}
        self._events: dict[str, frozenset[str]] = {}  # the days' event names (the event rule)
        self._chronic: dict[str, frozenset[str]] = {}  # the days' standing names (topic guard)

    # -- state ----------------------------------------------------------------------------------

    def load(self, docs: Iterable[ClusterDoc]) -> None:
        """Add stored entries of the window (each with its story_id) to the in-memory state."""
        for doc in docs:
            if doc.story_id is None:
                raise ValueError(f"loaded entry {doc.entry_id} has no story_id")
            if doc.entry_id in self._docs:
                continue
            self._remember(doc, doc.story_id)
            self._next_story_id = max(self._next_story_id, doc.story_id + 1)

    def touch(self, story_ids: Iterable[int]) -> None:
        """Have the next `merge_pass` reconsider these stories (e.g. after a crash interrupted
        the merge pass of the cycle that created them)."""
        self._dirty.update(s for s in story_ids if self._members.get(s))

    def touch_range(self, since: datetime, until: datetime) -> None:
        """`touch` every story with a member published in [since, until]."""
        self.touch(
            {self._story_of[e] for e, d in self._docs.items() if since <= d.published <= until}
        )

    @property
    def documents(self) -> int:
        """How many documents (entries) the clusterer holds."""
        return len(self._docs)

    def story_of(self, entry_id: int) -> int:
        """The story an entry in memory currently belongs to."""
        return self._story_of[entry_id]

    def story_ids(self) -> list[int]:
        """The ids of every story in memory."""
        return [sid for sid, m in self._members.items() if m]

    def stories(self) -> dict[int, tuple[int, ...]]:
        """Every story in memory and its member entry ids (ascending)."""
        return {sid: tuple(sorted(m)) for sid, m in self._members.items() if m}

    def members(self, story_id: int) -> tuple[ClusterDoc, ...]:
        """The member documents of one story held in memory."""
        return tuple(self._docs[e] for e in sorted(self._members.get(story_id, ())))

    def assignment(self, entry_id: int) -> Assignment:
        """The current evidence for an entry added this cycle (updated by `merge_pass`)."""
        return self._with_story(self._assignments[entry_id], self._story_of[entry_id])

    def added(self) -> tuple[int, ...]:
        """Entry ids added this cycle, in the order they were added."""
        return tuple(self._added)

    def _remember(self, doc: ClusterDoc, story_id: int) -> None:
        eid = doc.entry_id
        self._docs[eid] = doc
        self._story_of[eid] = story_id
        self._members.setdefault(story_id, []).append(eid)
        seen = doc.first_seen or doc.published
        if story_id not in self._first_seen or seen < self._first_seen[story_id]:
            self._first_seen[story_id] = seen
        if doc.link:
            _put(self._by_link, doc.link, eid)
        _put(self._by_hash, doc.content_hash, eid)
        if doc.simhash is not None:
            for i, value in enumerate(simhash_bands(doc.simhash)):
                _put(self._by_band[i], value, eid)
        for term in set(doc.terms):
            self._df[term] += 1

    def forget(self, entry_id: int) -> None:
        """Drop an entry from memory (its story keeps its other members), so that it can be
        `add`ed again as what it now is: an entry retitled to another happening (`retitled`)."""
        doc = self._docs.pop(entry_id, None)
        if doc is None:
            return
        story_id = self._story_of.pop(entry_id)
        members = self._members.get(story_id, [])
        members.remove(entry_id)
        if members:
            self._dirty.add(story_id)
        else:
            self._members.pop(story_id, None)
            self._first_seen.pop(story_id, None)
            self._dirty.discard(story_id)
        if doc.link:
            _drop(self._by_link, doc.link, entry_id)
        _drop(self._by_hash, doc.content_hash, entry_id)
        if doc.simhash is not None:
            for i, value in enumerate(simhash_bands(doc.simhash)):
                _drop(self._by_band[i], value, entry_id)
        for term in set(doc.terms):
            self._df[term] -= 1
            if self._df[term] <= 0:
                del self._df[term]
        self._assignments.pop(entry_id, None)
        if entry_id in self._added:
            self._added.remove(entry_id)

    def headline_request(self) -> tuple[frozenset[str], str, str] | None:
        """Which headline counts the event rule needs (give them to `use_headline_counts`
        before `merge_pass`): the words of the window that could be an event name of their
        day, and the days, from the week before the first such day through the last; None
        when no word could be one. Without counts the event rule stays off."""
        self._candidates = _event_candidates(self._docs.values())
        if not self._candidates:
            return None
        days = sorted(self._candidates)
        earliest = date.fromisoformat(days[0])
        back = min(_EVENT_WEEK, (earliest - date.min).days)  # not before the calendar's start
        first = (earliest - timedelta(days=back)).isoformat()
        return frozenset().union(*self._candidates.values()), first, days[-1]

    def use_story_spans(self, spans: Mapping[int, tuple[datetime, datetime]]) -> None:
        """The first and last publication of stored stories over all their members
        (`Store.story_spans`): a story whose older members the window no longer holds still
        spans from them, for the span bound. Only spans reaching beyond the members in memory
        are kept (most stories have all their members there)."""
        for sid, (first, last) in spans.items():
            members = self._members.get(sid)
            if not members:
                continue
            published = [self._docs[e].published for e in members]
            if first < min(published) or last > max(published):
                self._spans[sid] = (first, last)

    def use_headline_counts(self, counts: Mapping[tuple[str, str], int]) -> None:
        """(day, term) -> headlines for `headline_request`'s words and days (term '': all of a
        day's headlines): decides each day's event names."""
        self._events = _event_names(self._candidates, counts)
        self._chronic = _chronic_names(self._candidates, counts)

    def event_names(self) -> dict[str, frozenset[str]]:
        """The event names by day that the event rule uses (after `use_headline_counts`)."""
        return dict(self._events)

    def _stats(self) -> _Stats:
        return _Stats(len(self._docs), dict(self._df), self.settings.idf_prior_docs)

    # -- tier 1: near-duplicates -------------------------------------------------------------------

    def near_duplicate(self, a: ClusterDoc, b: ClusterDoc) -> tuple[str, int | None] | None:
        """The near-duplicate rule joining two entries and its distance, or None.

        Same canonical URL within the window; else same content hash (within one feed, with
        agreeing headlines); else simhash within k and within the window.
        Two entries of one feed with different URLs and no simhash (short texts) are a recurring
        heading ("Morning briefing"), not a copy, so they never match on content.
        """
        if a.link and a.link == b.link and self._in_window(a, b):
            # Within the window like every rule: a feed that back-dates an item linking an
            # outlet's article (a 1976 pubDate) does not join, let alone lead, its story.
            return ("url", None)
        recurring = (
            a.feed_id == b.feed_id
            and a.link
            and b.link
            and (a.simhash is None or b.simhash is None)
        )
        if recurring:
            return None
        if a.content_hash == b.content_hash and a.content_hash:
            # One feed's items with one text but different headline numbers or words are the
            # episodes of a programme ("Maranatha 8/3/2020", "... 8/4/2020"), not a copy.
            if a.feed_id == b.feed_id and not self._titles_agree(a, b):
                return None
            return ("content_hash", None)
        if a.simhash is not None and b.simhash is not None and self._in_window(a, b):
            distance = hamming(a.simhash, b.simhash)
            if distance <= self.settings.simhash_k and self._titles_agree(a, b):
                return ("simhash", distance)
        return None

    def _in_window(self, a: ClusterDoc, b: ClusterDoc) -> bool:
        return abs(a.published - b.published) <= timedelta(hours=self.settings.window_hours)

    @staticmethod
    def _titles_agree(a: ClusterDoc, b: ClusterDoc) -> bool:
        """Extra check for simhash matches: a copy keeps its headline and the headline's numbers.

        Short feed texts are often a template around a title ("SRO | Teleradyo (3 August 2020)
        Subscribe to ..."): the simhash of the shared boilerplate is close while the items are
        different episodes, parts or days. So the titles must carry the same numbers and share
        two thirds of their words. A rewritten headline on a true copy still joins the story
        through the story match; it just is not called a near-duplicate."""
        wa, wb = _title_words(a.title), _title_words(b.title)
        na = {w for w in wa if w[0].isdigit()}
        nb = {w for w in wb if w[0].isdigit()}
        if na != nb:
            return False
        wa, wb = wa - na, wb - nb
        union = wa | wb
        return not union or 3 * len(wa & wb) >= 2 * len(union)

    def _near_duplicate_candidates(self, doc: ClusterDoc) -> set[int]:
        found: set[int] = set()
        if doc.link:
            _get(self._by_link, doc.link, found)
        _get(self._by_hash, doc.content_hash, found)
        if doc.simhash is not None:
            for i, value in enumerate(simhash_bands(doc.simhash)):
                _get(self._by_band[i], value, found)
        found.discard(doc.entry_id)
        return found

    # -- adding one entry --------------------------------------------------------------------------

    def add(self, doc: ClusterDoc, candidates: Sequence[ClusterDoc] = ()) -> Assignment:
        """Place a new entry with its near-duplicates (every one: it bridges their stories), or
        in a new story. Story matching happens in `merge_pass`, which may move it on.

        `candidates` are near-duplicate candidates the store found (band table, same URL, same
        content hash), possibly outside the in-memory window; they must carry their story_id.
        """
        if doc.entry_id in self._docs:
            return self.assignment(doc.entry_id)
        for cand in candidates:
            if cand.entry_id not in self._docs and cand.story_id is not None:
                self._remember(cand, cand.story_id)
                self._next_story_id = max(self._next_story_id, cand.story_id + 1)

        # Tier 1: every near-duplicate, best evidence first (url, content hash, closest simhash).
        order = {"url": 0, "content_hash": 1, "simhash": 2}
        matches: list[tuple[int, int, int, str, int | None]] = []
        for other_id in self._near_duplicate_candidates(doc):
            found = self.near_duplicate(doc, self._docs[other_id])
            if found is not None:
                rule, distance = found
                matches.append((order[rule], distance or 0, other_id, rule, distance))
        matches.sort()
        joined = {self._story_of[m[2]] for m in matches}

        if not joined:
            story_id = self._new_story_id()
            assignment = Assignment(story_id, "new")
        else:
            story_id = min(joined, key=lambda s: (self._first_seen[s], s))
            _, _, matched, rule, distance = matches[0]
            assignment = Assignment(story_id, rule, distance, None, matched)
        absorbed = tuple(sorted(joined - {story_id}, key=lambda s: (self._first_seen[s], s)))
        self._remember(doc, story_id)
        for other in absorbed:
            self._merge_into(other, story_id)
        if absorbed:
            assignment = Assignment(
                assignment.story_id,
                assignment.rule,
                assignment.distance,
                assignment.score,
                assignment.matched_entry_id,
                absorbed,
            )
        self._added.append(doc.entry_id)
        self._assignments[doc.entry_id] = assignment
        self._dirty.add(story_id)
        return assignment

    def _new_story_id(self) -> int:
        story_id = self._next_story_id
        self._next_story_id += 1
        return story_id

    def _merge_into(self, from_id: int, into_id: int) -> None:
        span = self._spans.pop(from_id, None)
        if span is not None:
            held = self._spans.get(into_id, span)
            self._spans[into_id] = (min(span[0], held[0]), max(span[1], held[1]))
        moved = self._members.pop(from_id, [])
        for eid in moved:
            self._story_of[eid] = into_id
        self._members.setdefault(into_id, []).extend(moved)
        first = self._first_seen.pop(from_id, None)
        if first is not None and first < self._first_seen[into_id]:
            self._first_seen[into_id] = first
        self._dirty.discard(from_id)
        self._dirty.add(into_id)

    def _event_reason(
        self, a: ClusterDoc, b: ClusterDoc, va: Vector, vb: Vector, cosine: float
    ) -> str | None:
        """Why the event rule joins two entries, in words, or None when it does not."""
        threshold = self.settings.story_threshold
        if not self._events or _outlet(a) == _outlet(b):
            return None
        keys = _event_keys(a, b, self._events)
        if not keys:
            return None
        if _name_units(va, vb, keys) >= _EVENT_NAMES:
            return (
                f"story match on the event of the day: both headlines name"
                f" {', '.join(sorted(keys))}, {_EVENT_NAMES} or more names each in at least"
                f" {_EVENT_BURST:g} times as many of the day's headlines as in the week before"
                f" (cosine {round(cosine, 4)})"
            )
        if cosine < threshold * _EVENT_SHARE:
            return None
        rest = cosine - _unit_share(va, vb, keys)
        if rest < threshold * _EVENT_REST:
            return None
        names = ", ".join(sorted(keys))
        return (
            f"story match on the event of the day: both headlines name {names}, in at least"
            f" {_EVENT_BURST:g} times as many of the day's headlines as in the week before;"
            f" cosine {round(cosine, 4)} >= {round(threshold * _EVENT_SHARE, 4)}, and"
            f" {round(rest, 4)} >= {round(threshold * _EVENT_REST, 4)} without it"
        )

    def _standing(
        self, a: ClusterDoc, b: ClusterDoc, va: Vector, vb: Vector, cosine: float
    ) -> list[str]:
        """The standing names a match rests on (the topic guard refuses it), or []."""
        if not self._chronic:
            return []
        keys = _standing_keys(a, b, self._chronic)
        share = _unit_share(va, vb, keys) if keys else 0.0
        if not keys or cosine - share >= self.settings.story_threshold * _GUARD_SHARE:
            return []
        return sorted(k for k in keys if k in va and k in vb)

    def _guard(
        self,
        dot: float,
        top: float,
        norms: float,
        decimals_a: frozenset[str],
        decimals_b: frozenset[str],
    ) -> str | None:
        """The name of the guard that refuses a story match, or None when it may proceed.

        single_term: without its strongest shared term the match falls below half the threshold.
        numbers: both sides quote measurements (most of their members do) and none agree."""
        if (dot - top) / norms < self.settings.story_threshold * _GUARD_SHARE:
            return "single_term"
        if decimals_a and decimals_b and not decimals_a & decimals_b:
            return "numbers"
        return None

    # -- end of cycle --------------------------------------------------------------------------------

    def merge_pass(self) -> list[StoryMerge]:
        """Merge stories touched this cycle with their neighbours (agglomerative, best first).

        Uses the IDF of the whole window as it now stands. Returns the merges in the order made;
        the surviving id is the older story (earliest first_seen, ties to the smaller id).
        Entries that founded a story that was merged away get story_match evidence (see
        `assignment`)."""
        steps = self.merge_steps()
        while True:
            try:
                next(steps)
            except StopIteration as done:
                return done.value  # type: ignore[no-any-return]

    def merge_steps(self) -> Generator[None, None, list[StoryMerge]]:
        """`merge_pass` as a generator that pauses every few hundred steps (its return value is
        the merges): a daemon drives it from its event loop, which keeps answering the
        watchdog and signals while a large window (minutes at 50,000 entries) is merged."""
        if not self._dirty:
            return []
        stats = self._stats()
        # Every window term's IDF once (each document's terms are in `stats.df`).
        idf = {t: stats.idf(t) for t in stats.df}
        boilerplate = _Boilerplate.of(self._docs.values())

        cache: dict[int, Vector] = {}

        def vector_of(eid: int) -> Vector:
            # Built when needed, not kept for every document (a large window would hold them
            # all), but the last `_VECTOR_CACHE` are: a story's core is compared with each of
            # its candidates in turn, and a popular story is the candidate of many.
            vector = cache.get(eid)
            if vector is None:
                vector = cache[eid] = _doc_vector(self._docs[eid], idf.__getitem__, boilerplate)
                if len(cache) > _VECTOR_CACHE:
                    del cache[next(iter(cache))]  # the oldest
            return vector

        self._vector_of = vector_of

        def similarity(eid: int, vector: Vector) -> float:
            """Cosine of a member's vector and `vector` (the evidence picks the closest member)."""
            return _dot(vector, vector_of(eid).items())[0]

        limit = stats.search_limit()
        large = stats.docs > _LARGE_WINDOW
        clusters: dict[int, _Story] = {}

        def key_terms(cluster: _Story) -> list[tuple[str, float]]:
            # A story is found through its informative terms (not the very common ones); in a
            # large window through its most informative ones only: two stories that share none
            # of their top terms do not pass the threshold anyway, and every term would make
            # candidates quadratic when a big window shares much vocabulary.
            # Not kept: computed for the index and again when the story looks for neighbours
            # (cheap), instead of held for tens of thousands of stories.
            usable = [(t, w) for t, w in cluster.pairs() if w and stats.df.get(t, 0) <= limit]
            if large and len(usable) > _KEY_TERMS:
                usable = heapq.nlargest(_KEY_TERMS, usable, key=lambda tw: (tw[1], tw[0]))
            return usable

        for sid, members in self._members.items():
            if members:
                clusters[sid] = self._build_story(sid, list(members), vector_of)
                if len(clusters) % _STEP == 0:
                    yield
        index = _NeighbourIndex(
            list(clusters.values()), key_terms, self.settings.window_hours * 3600.0
        )
        heap: list[
            tuple[float, tuple[datetime, str], tuple[datetime, str], int, int, int, int]
        ] = []

        def push_neighbours(sid: int) -> None:
            cluster = clusters[sid]
            # Small windows: every story sharing an informative term is scored (exact). Large
            # ones: those whose key terms promise the highest cosine.
            neighbours = index.candidates(
                cluster, key_terms(cluster), _MAX_CANDIDATES if large else None
            )
            scored: list[tuple[float, _Story]] = []
            own = cluster.vector
            for other_id in neighbours:
                other = clusters[other_id]
                score = self._cluster_score(cluster, other, own)
                if score is not None:
                    scored.append((score, other))
            # Only the best few: the heap stays linear in the number of stories even when a
            # large window shares much vocabulary (a story's best merge is among them; the
            # others are pushed again from their own side or after a merge).
            if len(scored) > _MAX_NEIGHBOURS:
                scored = heapq.nlargest(
                    _MAX_NEIGHBOURS, scored, key=lambda pair: (pair[0], _reversed_key(pair[1].key))
                )
            for score, other in scored:
                a, b = (cluster, other) if cluster.key <= other.key else (other, cluster)
                heapq.heappush(
                    heap, (-score, a.key, b.key, a.story_id, a.version, b.story_id, b.version)
                )

        for n, sid in enumerate(sorted(self._dirty, key=lambda s: clusters[s].key), 1):
            push_neighbours(sid)
            if n % (_STEP // 8) == 0:
                yield

        merges: list[StoryMerge] = []
        while heap:
            neg, _, _, a_id, a_version, b_id, b_version = heapq.heappop(heap)
            a, b = clusters.get(a_id), clusters.get(b_id)
            if a is None or b is None or a.version != a_version or b.version != b_version:
                continue
            into, source = (
                (a, b) if (a.first_seen, a.story_id) <= (b.first_seen, b.story_id) else (b, a)
            )
            entry_id, matched = self._closest_pair(source, into, vector_of, similarity)
            merges.append(
                StoryMerge(
                    source.story_id, into.story_id, round(-neg, 4), "merge_pass", entry_id, matched
                )
            )
            self._reattach_founders(source, into, round(-neg, 4), vector_of, similarity)
            self._merge_into(source.story_id, into.story_id)
            del clusters[source.story_id]
            merged = self._combine(into, source)
            clusters[into.story_id] = merged
            index.merged(source, merged)
            push_neighbours(into.story_id)
            if len(merges) % (_STEP // 8) == 0:
                yield
            if len(heap) > 4 * len(clusters) + 1024:
                # Entries of stories merged since are only skipped when popped; in a large
                # window they would pile up (millions of tuples): drop them now and then.
                heap[:] = [
                    h
                    for h in heap
                    if _current(clusters, h[3], h[4]) and _current(clusters, h[5], h[6])
                ]
                heapq.heapify(heap)
        self._dirty.clear()
        self._vector_of = None
        self._single_outlets.clear()
        return merges

    def _reattach_founders(
        self,
        source: _Story,
        into: _Story,
        score: float,
        vector_of: Callable[[int], Vector],
        similarity: Callable[[int, Vector], float],
    ) -> None:
        """Entries that founded `source` (rule "new") now belong through a story match."""
        for eid in source.members:
            old = self._assignments.get(eid)
            stored_rule = old.rule if old is not None else self._docs[eid].match_rule
            if stored_rule != "new":
                continue
            founder = vector_of(eid)
            matched = max(into.members, key=lambda e: (similarity(e, founder), -e))
            update = Assignment(
                into.story_id,
                "story_match",
                None,
                score,
                matched,
                old.absorbed if old is not None else (),
            )
            if old is not None:
                self._assignments[eid] = update
            self._evidence_updates[eid] = update

    def evidence_updates(self) -> dict[int, Assignment]:
        """Entries whose recorded evidence changed in `merge_pass` (founders of stories merged
        away), loaded or added, with their new evidence; story ids are the final ones."""
        return {
            eid: self._with_story(a, self._story_of[eid])
            for eid, a in self._evidence_updates.items()
        }

    @staticmethod
    def _with_story(a: Assignment, story_id: int) -> Assignment:
        if a.story_id == story_id:
            return a
        return Assignment(story_id, a.rule, a.distance, a.score, a.matched_entry_id, a.absorbed)

    def _build_story(
        self, sid: int, members: list[int], vector_of: Callable[[int], Vector]
    ) -> _Story:
        docs = [self._docs[e] for e in members]
        terms = None
        if len(members) == 1:
            vector = vector_of(members[0])
            if len(vector) == len(docs[0].terms):  # its terms, in order: share the tuple
                terms = docs[0].terms
        else:
            vector = {}
            for eid in members:
                for t, w in vector_of(eid).items():
                    vector[t] = vector.get(t, 0.0) + w
        decimal_counts = Counter(t for d in docs for t in _decimals(d.terms)) or _NO_COUNTS
        key = min((d.published, d.content_hash) for d in docs)
        first_seen = min(d.first_seen or d.published for d in docs)
        earliest = min(d.published for d in docs)
        latest = max(d.published for d in docs)
        if sid in self._spans:  # members outside the window count for the span bound
            earliest = min(earliest, self._spans[sid][0])
            latest = max(latest, self._spans[sid][1])
        return _Story(
            sid,
            members,
            vector,
            decimal_counts,
            key,
            first_seen,
            earliest,
            latest,
            self._outlet_set(docs),
            terms,
        )

    def _outlet_set(self, docs: list[ClusterDoc]) -> frozenset[int | str]:
        """The outlets of a story's members; one shared set per outlet for the many stories
        told by one outlet (a set each would be ~200 bytes for tens of thousands of stories)."""
        outlets = frozenset(map(_outlet, docs))
        if len(outlets) == 1:
            return self._single_outlets.setdefault(outlets, outlets)
        return outlets

    def _combine(self, into: _Story, source: _Story) -> _Story:
        """The story `into` becomes by absorbing `source`: centroids add up, no member is
        recomputed (a big story absorbing many small ones stays linear)."""
        vector = into.vector
        for t, w in source.pairs():
            vector[t] = vector.get(t, 0.0) + w
        members = into.members + source.members
        merged = _Story(
            into.story_id,
            members,
            vector,
            into.decimal_counts + source.decimal_counts,
            min(into.key, source.key),
            min(into.first_seen, source.first_seen),
            min(into.earliest, source.earliest),
            max(into.latest, source.latest),
            into.outlets if into.outlets == source.outlets else into.outlets | source.outlets,
        )
        merged.version = into.version + 1
        return merged

    def _cluster_score(self, a: _Story, b: _Story, a_vector: Vector | None = None) -> float | None:
        """The score with which two stories merge, or None: half-agreement linkage (see the
        module docstring) with its guards (`a_vector`: `a.vector` when the caller has it)."""
        if not a.norm or not b.norm:
            return None
        # The cheap guards first: most neighbours by term are out of the window or one outlet.
        if not self._windows_overlap(a, b) or not self._within_span(a, b):
            return None
        if len(a.outlets | b.outlets) < 2:
            # Stories told by one outlet alone do not merge by similarity: an outlet's own items
            # on a topic (a live blog, a series, boilerplate, the same programme in several of
            # its section feeds) stay apart until another outlet links them.
            return None
        # Half-agreement linkage: two stories merge when at least half of the pairs between
        # their cores match by the pair rule (cosine >= threshold, not resting on one unit), so
        # a story joins another only when it agrees with most of its core, not with a sum that
        # drifts toward generic terms as the story grows (chaining). First a cheap filter: the
        # centroids are sums of unit vectors, so their dot product over the pair count is the
        # mean cosine over all member pairs; it must reach half the threshold. (Two large
        # stories once had to reach all of it. Measured again on UCI, that bought no precision:
        # the merges it refused were one happening, mostly Mt. Gox's bankruptcy, which UCI
        # labels as two stories; with those two labels as one, pairwise precision is 0.972
        # with the rule and 0.970 without, and B-cubed recall 0.33 against 0.39.)
        threshold = self.settings.story_threshold
        pairs = len(a.members) * len(b.members)
        dot, _ = _dot(a.vector if a_vector is None else a_vector, b.pairs())
        # (Two single entries must reach the threshold itself: their centroids are their
        # vectors, so this is their cosine.)
        floor = threshold if pairs == 1 else threshold * _GUARD_SHARE
        if self._events and _event_keys(
            self._docs[self._core(a)[0]], self._docs[self._core(b)[0]], self._events
        ):
            # Entries naming their day's event match on less (see `_pair_rule`); with two
            # of its names, on those names alone.
            floor = 0.0
        if dot / pairs < floor:
            return None
        if a.decimals and b.decimals and not a.decimals & b.decimals:
            return None  # the numbers guard: both quote measurements and none agree
        if pairs == 1:  # two single entries: the centroids are their vectors
            cosine, passes = _pair_rule(
                a.vector if a_vector is None else a_vector,
                b.vector,
                threshold,
                (self._docs[a.members[0]], self._docs[b.members[0]]),
                self._events,
                self._chronic,
            )
            return cosine if passes else None
        vector_of, docs = self._vector_of, self._docs
        assert vector_of is not None, "stories are scored inside a merge pass"
        core_a, core_b = self._core(a), self._core(b)
        left = [(vector_of(e), docs[e].language, docs[e]) for e in core_a]
        agreeing: list[float] = []
        across: list[float] = []
        comparable = 0
        # In one language (most merges) every pair counts, so the merge is lost as soon as too
        # many pairs failed for half of them to agree: stop there.
        languages = {language for _, language, _ in left} | {docs[e].language for e in core_b}
        languages.discard(None)
        total = len(core_a) * len(core_b)
        allowed = total - (total + 1) // 2 if len(languages) <= 1 else total
        failed = 0
        for e in core_b:
            vb, language, doc = vector_of(e), docs[e].language, docs[e]
            for va, other_language, other in left:
                cosine, passes = _pair_rule(
                    va, vb, threshold, (other, doc), self._events, self._chronic
                )
                if passes and other.feed_id == doc.feed_id and not _headlines_meet(other, doc):
                    # One feed's two items that share no headline word agree only through the
                    # feed's own text (a programme's blurb under every episode): no evidence.
                    passes = False
                if not passes:
                    failed += 1
                    if failed > allowed:
                        return None
                # Words are evidence only within one language: a pair in two languages (both
                # known) neither counts for nor against the merge, unless no pair shares one.
                if language and other_language and language != other_language:
                    if passes:
                        across.append(cosine)
                    continue
                comparable += 1
                if passes:
                    agreeing.append(cosine)
        if not comparable:
            agreeing, comparable = across, len(core_a) * len(core_b)
        need = (comparable + 1) // 2
        if len(agreeing) < need:
            return None
        agreeing.sort(reverse=True)
        return agreeing[need - 1]  # the weakest of the agreeing half

    def _core(self, story: _Story) -> Sequence[int]:
        """The members closest to the story's centroid (all of a small story)."""
        if len(story.members) <= _CORE:
            return story.members  # most stories: nothing to rank or to keep
        if story.core is None:
            centroid = story.vector
            vector_of = self._vector_of
            assert vector_of is not None, "cores are ranked inside a merge pass"
            ranked = sorted(
                story.members,
                key=lambda e: (
                    -_dot(centroid, vector_of(e).items())[0],
                    self._docs[e].published,
                    self._docs[e].content_hash,
                ),
            )
            story.core = tuple(ranked[:_CORE])
        return story.core

    def _within_span(self, a: _Story, b: _Story) -> bool:
        """A story spans at most one window, first to last publication: a subject covered day
        after day ("présidentielle américaine", migrants in the Channel) would otherwise chain
        each day's items onto yesterday's story until it holds a week of different happenings
        (39 members over 7 days on the French corpus polled one day at a time)."""
        return max(a.latest, b.latest) - min(a.earliest, b.earliest) <= self._span

    def _windows_overlap(self, a: _Story, b: _Story) -> bool:
        """Two stories may merge only if some members are within the window of each other."""
        span = self._span
        # Differences, not sums: feeds carry dates near the ends of the calendar.
        return b.latest - a.earliest >= -span and a.latest - b.earliest >= -span

    @staticmethod
    def _closest_pair(
        source: _Story,
        into: _Story,
        vector_of: Callable[[int], Vector],
        similarity: Callable[[int, Vector], float],
    ) -> tuple[int, int]:
        """The member of `source` closest to `into`'s centroid, and its closest member of `into`."""
        centroid = into.vector
        entry_id = max(source.members, key=lambda e: (similarity(e, centroid), -e))
        entry = vector_of(entry_id)
        matched = max(into.members, key=lambda e: (similarity(e, entry), -e))
        return entry_id, matched

    # -- explaining ----------------------------------------------------------------------------------

    def explain_pair(self, a: ClusterDoc, b: ClusterDoc) -> Explanation:
        """Which rule joins two entries (or would), with the evidence, or why none does.

        Uses the IDF of the window in memory. `joined` says whether they share a story when both
        are in memory, otherwise whether a rule joins them directly."""
        stats = self._stats()
        boilerplate = _Boilerplate.of(self._docs.values())
        dup = self.near_duplicate(a, b)
        distance = (
            hamming(a.simhash, b.simhash)
            if a.simhash is not None and b.simhash is not None
            else None
        )
        va = _doc_vector(a, stats.idf, boilerplate)
        vb = _doc_vector(b, stats.idf, boilerplate)
        dot, top = _pair_match(va, vb)
        # (A rubric's grouping key weighs nothing: not a term a reader would recognise.)
        shared = tuple(
            sorted(
                (t for t in set(va) & set(vb) if va[t] and vb[t]), key=lambda t: (-va[t] * vb[t], t)
            )
        )
        guard = None
        if dot >= self.settings.story_threshold:
            guard = self._guard(dot, top, 1.0, _decimals(a.terms), _decimals(b.terms))
            if (
                guard is None
                and dot < self.settings.story_threshold * _PLAIN_SHARE
                and not _names_shared(va, vb, a, b)
            ):
                guard = "no_name"
            if guard is None and (standing := self._standing(a, b, va, vb, dot)):
                guard = "standing"
            if guard is None and _outlet(a) == _outlet(b):
                guard = "same_outlet"
        together = (
            a.entry_id in self._story_of
            and b.entry_id in self._story_of
            and self._story_of[a.entry_id] == self._story_of[b.entry_id]
        )
        score = round(dot, 4)
        if dup is not None:
            rule = dup[0]
            reason = {
                "url": "same canonical URL",
                "content_hash": "same content hash (identical text)",
                "simhash": f"simhash distance {distance} <= {self.settings.simhash_k} (near-copy)",
            }[rule]
        elif dot >= self.settings.story_threshold and guard is None:
            rule = "story_match"
            reason = f"story match: cosine {score} >= {self.settings.story_threshold} on {', '.join(shared[:6])}"
        elif (
            guard not in ("numbers", "same_outlet")
            and (event := self._event_reason(a, b, va, vb, dot)) is not None
        ):
            rule, guard, reason = "story_match", None, event
        else:
            rule = None
            if guard == "same_outlet":
                reason = (
                    "refused: both come from one outlet; its own items join a story"
                    " only through another outlet's report"
                )
            elif guard == "no_name":
                reason = (
                    f"refused: they share no name or number of their headlines, and"
                    f" cosine {score} < {round(self.settings.story_threshold * _PLAIN_SHARE, 4)}"
                )
            elif guard == "standing":
                reason = (
                    f"refused: without names in the headlines every day of the week before"
                    f" ({', '.join(standing)}), the match falls below"
                    f" {round(self.settings.story_threshold * _GUARD_SHARE, 4)}: the subject"
                    " of a run of stories, not one happening"
                )
            elif guard == "single_term":
                reason = f"refused: the match rests on one term ({shared[0]})"
            elif guard == "numbers":
                reason = (
                    f"refused: different measurements ({', '.join(sorted(_decimals(a.terms)))}"
                    f" vs {', '.join(sorted(_decimals(b.terms)))})"
                )
            else:
                reason = f"no rule: cosine {score} < {self.settings.story_threshold}"
                if distance is not None:
                    reason += f", simhash distance {distance} > {self.settings.simhash_k}"
            if together:
                reason += "; together through other members of the story"
        both_known = a.entry_id in self._story_of and b.entry_id in self._story_of
        if both_known and not together and rule is not None:
            reason += (
                "; yet they are in different stories: the pair matches but fewer than"
                " half of their stories' member pairs do"
                if rule == "story_match"
                else "; yet they are in different stories (recorded before this rule applied)"
            )
        return Explanation(
            joined=together if both_known else rule is not None,
            rule=rule,
            distance=distance,
            score=score,
            shared_terms=shared,
            guard=guard,
            reason=reason,
        )


# An updated entry whose headline keeps less than this share of its words (Jaccard) now reports
# something else: a live page or ticker that reuses its URL for the next happening.
_RETITLED = 0.5


def retitled(old_title: str, new_title: str) -> bool:
    """Whether an entry's new headline names another happening than its old one: it keeps
    less than half of the old one's words. A corrected figure or a reworded headline is the
    same item; a ticker that moved on from Musk to North Korea's troops is not."""
    old, new = _title_words(old_title), _title_words(new_title)
    union = old | new
    return bool(union) and len(old & new) < _RETITLED * len(union)


def summarise_story(
    story_id: int, members: Sequence[ClusterDoc], representative: str = "earliest"
) -> StorySummary:
    """The stories-table row for a story: representative, title, first/last seen, outlets.

    "earliest": the first published member (ties: smaller entry id). "complete": the member with
    the longest text, ties to the earliest."""
    if not members:
        raise ValueError(f"story {story_id} has no members")

    def key(d: ClusterDoc) -> tuple[bool, datetime, datetime, int]:
        # A ClusterDoc does not carry its feed's URL: ownership is the store's to judge.
        return representative_key(
            published=d.published,
            first_seen=d.first_seen,
            link=d.link,
            feed_url=None,
            entry_id=d.entry_id,
        )

    if representative == "complete":
        rep = min(members, key=lambda d: (-d.text_length, key(d)))
    elif representative == "earliest":
        rep = min(members, key=key)
    else:
        raise ValueError(f"representative must be 'earliest' or 'complete': {representative!r}")
    seen = [d.first_seen or d.published for d in members]
    return StorySummary(
        story_id=story_id,
        title=rep.title,
        representative_id=rep.entry_id,
        first_seen=min(seen),
        last_seen=max(seen),
        member_count=len(members),
        feed_count=len({d.feed_id for d in members}),
        host_count=len({d.host for d in members if d.host}),
    )
