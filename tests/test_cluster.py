"""Story clustering: near-duplicates, story matches, guards, order independence, evidence."""

from __future__ import annotations

import hashlib
import itertools
import json
from collections import defaultdict
from dataclasses import replace
from datetime import datetime
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from aggregator import fingerprint
from aggregator.cluster import StoryClusterer, summarise_story
from aggregator.model import ClusterDoc, ClusterSettings, Entry
from tests.docs import written as _written

DATA = Path(__file__).parent / "data" / "cluster"
FIXTURE = json.loads((DATA / "events.json").read_text(encoding="utf-8"))
ITEMS = {item["key"]: item for item in FIXTURE["items"]}
CROSS_LANGUAGE = {
    key for pair in FIXTURE["cross_language"] for key in pair if ITEMS[key].get("language")
}
FEEDS = {name: i for i, name in enumerate(sorted({i["feed"] for i in FIXTURE["items"]}), 1)}


def make_doc(key: str, entry_id: int) -> ClusterDoc:
    """The ClusterDoc the pipeline would build: normalised entry -> fingerprint -> doc."""
    item = ITEMS[key]
    text = " ".join(filter(None, (item["title"], item["summary"], item.get("content"))))
    entry = Entry(
        guid=key,
        link=item["link"],
        title=item["title"],
        summary=item["summary"],
        content=item.get("content", ""),
        text=text,
        published=datetime.fromisoformat(item["published"]),
        updated=None,
        author=None,
        language=item.get("language", "en"),
        content_hash=hashlib.sha256(text.encode()).hexdigest(),
    )
    fp = fingerprint.fingerprint(entry)
    return ClusterDoc(
        entry_id=entry_id,
        feed_id=FEEDS[item["feed"]],
        host=item["link"].split("/")[2],
        published=entry.published,
        link=entry.link,
        content_hash=fp.content_hash,
        simhash=fp.simhash,
        title=entry.title,
        terms=fp.terms,
        language=entry.language,
        story_id=None,
        text_length=len(text),
        **dict(
            zip(("title_terms", "rubric_terms"), fingerprint.title_layout(entry.title), strict=True)
        ),
    )


def run_cycle(
    keys: list[str], stored: dict[int, ClusterDoc] | None = None, next_story_id: int = 1
) -> tuple[dict[str, int], StoryClusterer]:
    """One poll cycle as the pipeline drives it: load stored docs, add the new ones in the given
    order (entry ids in arrival order), merge pass. Returns story id per key."""
    clusterer = StoryClusterer(ClusterSettings(), next_story_id)
    if stored:
        clusterer.load(stored.values())
    first_id = max(stored or {0: None}) + 1
    ids = {}
    for n, key in enumerate(keys):
        doc = make_doc(key, first_id + n)
        clusterer.add(doc, ())
        ids[key] = doc.entry_id
    clusterer.merge_pass()
    return {key: clusterer.story_of(eid) for key, eid in ids.items()}, clusterer


def partition(story_of: dict[str, int]) -> set[frozenset[str]]:
    groups: dict[int, set[str]] = defaultdict(set)
    for key, story in story_of.items():
        groups[story].add(key)
    return {frozenset(g) for g in groups.values()}


def expected_partition(keys: list[str]) -> set[frozenset[str]]:
    groups: dict[str, set[str]] = defaultdict(set)
    for key in keys:
        groups[ITEMS[key]["story"]].add(key)
    return {frozenset(g) for g in groups.values()}


ALL_KEYS = [i["key"] for i in FIXTURE["items"]]
MONOLINGUAL = [k for k in ALL_KEYS if k not in CROSS_LANGUAGE]


def test_fixture_stories_are_recovered_exactly() -> None:
    story_of, _ = run_cycle(MONOLINGUAL)
    assert partition(story_of) == expected_partition(MONOLINGUAL)


@settings(max_examples=25, deadline=None)
@given(st.permutations(MONOLINGUAL))
def test_stories_do_not_depend_on_arrival_order(order: list[str]) -> None:
    story_of, _ = run_cycle(list(order))
    assert partition(story_of) == expected_partition(MONOLINGUAL)


@settings(max_examples=15, deadline=None)
@given(st.permutations(MONOLINGUAL), st.integers(min_value=1, max_value=len(MONOLINGUAL) - 1))
def test_two_cycles_give_the_same_stories_whichever_half_comes_first(
    order: list[str], cut: int
) -> None:
    first, c1 = run_cycle(list(order[:cut]))
    # The store between cycles: every entry with its (final) story id.
    stored = {eid: replace(doc, story_id=c1.story_of(eid)) for eid, doc in c1._docs.items()}
    entry_of = {
        key: eid for eid, doc in c1._docs.items() for key in first if doc.link == ITEMS[key]["link"]
    }
    second, c2 = run_cycle(list(order[cut:]), stored, next_story_id=max(first.values()) + 1)
    final = {key: c2.story_of(eid) for key, eid in entry_of.items()} | second
    assert partition(final) == expected_partition(MONOLINGUAL)


@settings(max_examples=15, deadline=None)
@given(st.permutations(MONOLINGUAL), st.integers(min_value=1, max_value=len(MONOLINGUAL) - 1))
def test_a_cycle_killed_before_its_merge_pass_ends_like_a_clean_run(
    order: list[str], cut: int
) -> None:
    killed = StoryClusterer(ClusterSettings(), 1)
    for n, key in enumerate(order[:cut], 1):
        killed.add(make_doc(key, n), ())  # recorded by the store; no merge pass
    stored = {eid: replace(doc, story_id=killed.story_of(eid)) for eid, doc in killed._docs.items()}
    resumed = StoryClusterer(ClusterSettings(), max(d.story_id or 0 for d in stored.values()) + 1)
    resumed.load(stored.values())
    published = [d.published for d in stored.values()]
    resumed.touch_range(min(published), max(published))  # the store's pending-merge marker
    for n, key in enumerate(order[cut:], cut + 1):
        resumed.add(make_doc(key, n), ())
    resumed.merge_pass()
    keys = {n: key for n, key in enumerate(order, 1)}
    assert partition({keys[e]: resumed.story_of(e) for e in keys}) == expected_partition(
        MONOLINGUAL
    )


def test_hard_negatives_stay_apart() -> None:
    story_of, _ = run_cycle(MONOLINGUAL)
    apart = [
        ("fc-magdeburg", "mgd-attack-1"),
        ("intel-magdeburg", "mgd-attack-2"),
        ("quake-jp-1", "quake-cl-1"),
        ("quake-jp-2", "quake-cl-2"),
        ("lyon-fire", "lyon-tram"),
    ]
    for a, b in apart:
        assert story_of[a] != story_of[b], (a, b)


def test_wire_copies_join_as_near_duplicates() -> None:
    clusterer = StoryClusterer(ClusterSettings(), 1)
    orig = make_doc("wire-orig", 1)
    first = clusterer.add(orig, ())
    copy = clusterer.add(make_doc("wire-copy", 2), ())
    edit = clusterer.add(make_doc("wire-edit", 3), ())
    assert first.rule == "new"
    assert copy.story_id == edit.story_id == first.story_id
    assert copy.rule == "simhash" and copy.distance is not None and copy.distance <= 3
    assert edit.rule == "simhash" and edit.matched_entry_id in (1, 2)


def test_independent_write_ups_join_through_the_merge_pass() -> None:
    story_of, clusterer = run_cycle(["quake-jp-1", "quake-jp-2", "quake-jp-3"])
    assert len(set(story_of.values())) == 1
    rules = {clusterer.assignment(e).rule for e in clusterer.added()}
    assert "story_match" in rules


def test_new_entry_joins_a_stored_story_by_story_match() -> None:
    first, clusterer = run_cycle(["mgd-attack-1", "mgd-attack-2"])
    stored = {
        eid: replace(d, story_id=clusterer.story_of(eid)) for eid, d in clusterer._docs.items()
    }
    c2 = StoryClusterer(ClusterSettings(), max(first.values()) + 1)
    c2.load(stored.values())
    assert c2.add(make_doc("mgd-attack-3", 10), ()).rule == "new"  # story matching is the pass's
    merges = c2.merge_pass()
    assert [(m.from_story_id, m.into_story_id) for m in merges] == [
        (merges[0].from_story_id, first["mgd-attack-1"])
    ]
    a = c2.assignment(10)
    assert a.rule == "story_match" and a.story_id == first["mgd-attack-1"]
    assert a.score is not None and a.score >= ClusterSettings().story_threshold
    assert a.matched_entry_id in stored
    assert c2.evidence_updates()[10] == a


def test_same_url_and_same_content_are_near_duplicates() -> None:
    clusterer = StoryClusterer(ClusterSettings(), 1)
    a = make_doc("lyon-tram", 1)
    clusterer.add(a, ())
    same_url = replace(make_doc("lyon-fire", 2), link=a.link, feed_id=99)
    assert clusterer.add(same_url, ()).rule == "url"
    same_text = replace(a, entry_id=3, link="https://mirror.example/tram", feed_id=98)
    assert clusterer.add(same_text, ()).rule == "content_hash"


def test_short_recurring_heading_in_one_feed_is_not_a_copy() -> None:
    clusterer = StoryClusterer(ClusterSettings(), 1)
    base = replace(
        make_doc("lyon-tram", 1),
        title="Morning briefing",
        terms=("morning", "briefing"),
        content_hash="same",
        simhash=None,
    )
    clusterer.add(base, ())
    later = replace(base, entry_id=2, link="https://local.example/briefing-2")
    assert clusterer.add(later, ()).rule == "new"


def test_bridging_entry_merges_stories_and_keeps_the_older_id() -> None:
    clusterer = StoryClusterer(ClusterSettings(), 1)
    a = clusterer.add(make_doc("lyon-tram", 1), ())
    b = clusterer.add(make_doc("quake-cl-1", 2), ())
    # An entry that carries the URL of one (and its date: a URL joins within the window) and
    # the exact text of the other bridges them.
    lyon = make_doc("lyon-tram", 1)
    bridge = replace(
        make_doc("quake-cl-1", 3), link=lyon.link, published=lyon.published, feed_id=77
    )
    result = clusterer.add(bridge, ())
    # The Chile story was first seen in March, the Lyon one in October: the older id survives.
    assert result.story_id == b.story_id
    assert result.absorbed == (a.story_id,)
    assert clusterer.story_of(1) == clusterer.story_of(2) == clusterer.story_of(3)


def test_candidates_from_the_store_outside_memory_are_joined() -> None:
    clusterer = StoryClusterer(ClusterSettings(), 50)
    stored = replace(make_doc("wire-orig", 7), story_id=42)
    a = clusterer.add(make_doc("wire-copy", 8), [stored])
    assert a.story_id == 42 and a.rule == "simhash" and a.matched_entry_id == 7


def test_re_adding_and_re_running_changes_nothing() -> None:
    story_of, clusterer = run_cycle(MONOLINGUAL)
    before = clusterer.stories()
    again = clusterer.add(make_doc(MONOLINGUAL[0], clusterer.added()[0]), ())
    assert again.story_id == story_of[MONOLINGUAL[0]]
    assert clusterer.merge_pass() == []
    assert clusterer.stories() == before


def test_reloading_stored_stories_and_polling_nothing_new_changes_nothing() -> None:
    story_of, clusterer = run_cycle(MONOLINGUAL)
    stored = {
        eid: replace(d, story_id=clusterer.story_of(eid)) for eid, d in clusterer._docs.items()
    }
    c2 = StoryClusterer(ClusterSettings(), max(story_of.values()) + 1)
    c2.load(stored.values())
    assert c2.merge_pass() == []
    assert c2.stories() == clusterer.stories()


def test_merge_pass_reports_merges_with_evidence() -> None:
    clusterer = StoryClusterer(ClusterSettings(), 1)
    for n, key in enumerate(["quake-jp-1", "quake-jp-2", "quake-jp-3"], 1):
        clusterer.add(make_doc(key, n), ())
    merges = clusterer.merge_pass()
    assert merges and all(m.reason == "merge_pass" for m in merges)
    for m in merges:
        assert m.into_story_id < m.from_story_id  # the older story (first seen) survives
        assert m.score is not None and m.score >= ClusterSettings().story_threshold
        assert m.entry_id is not None and m.matched_entry_id is not None
    updates = clusterer.evidence_updates()
    assert updates and all(a.rule == "story_match" for a in updates.values())


def test_explain_pair_names_the_guard_for_fc_magdeburg() -> None:
    _, clusterer = run_cycle(MONOLINGUAL)
    why = clusterer.explain_pair(make_doc("fc-magdeburg", 100), make_doc("mgd-attack-1", 101))
    assert not why.joined and why.rule is None
    assert "magdeburg" in why.shared_terms
    assert why.guard == "single_term" or (why.score or 0) < ClusterSettings().story_threshold
    same = clusterer.explain_pair(make_doc("wire-orig", 102), make_doc("wire-copy", 103))
    assert same.joined and same.rule == "simhash" and same.distance is not None
    story = clusterer.explain_pair(make_doc("quake-jp-1", 104), make_doc("quake-jp-3", 105))
    assert story.rule == "story_match" and "hokkaido" in story.shared_terms


def test_explain_pair_names_the_numbers_guard_for_two_earthquakes() -> None:
    _, clusterer = run_cycle(MONOLINGUAL)
    why = clusterer.explain_pair(make_doc("quake-jp-1", 100), make_doc("quake-cl-1", 101))
    assert not why.joined
    assert why.guard == "numbers" or (why.score or 0) < ClusterSettings().story_threshold


def test_story_summary_picks_the_representative() -> None:
    docs = [make_doc("wire-orig", 1), make_doc("ecb-analysis", 2), make_doc("wire-copy", 3)]
    earliest = summarise_story(9, docs, "earliest")
    assert earliest.representative_id == 1 and earliest.title == docs[0].title
    assert earliest.member_count == 3 and earliest.feed_count == 3 and earliest.host_count == 3
    assert earliest.first_seen == docs[0].published and earliest.last_seen == docs[1].published
    assert summarise_story(9, docs, "complete").representative_id == 3
    with pytest.raises(ValueError):
        summarise_story(9, docs, "loudest")


def test_merge_steps_pause_in_a_big_window_and_merge_as_merge_pass_does() -> None:
    """The daemon drives the merge pass step by step from its event loop (watchdog pings and
    signals in between); stepping must not change a single merge."""
    from datetime import timedelta

    docs = []
    for block in range(60):  # 60 copies of the fixture with their own words, ten days apart
        for key in MONOLINGUAL:
            n = len(docs) + 1
            doc = make_doc(key, n)
            docs.append(
                replace(
                    doc,
                    story_id=n,
                    published=doc.published + timedelta(days=10 * block),
                    link=f"{doc.link}?block={block}",
                    content_hash=f"{doc.content_hash}-{block}",
                    terms=tuple(f"{t}~{block}" for t in doc.terms),
                )
            )

    def loaded() -> StoryClusterer:
        clusterer = StoryClusterer(ClusterSettings(), len(docs) + 1)
        clusterer.load(docs)
        clusterer.touch(d.entry_id for d in docs)
        return clusterer

    whole = loaded().merge_pass()
    steps = loaded().merge_steps()
    pauses = 0
    while True:
        try:
            next(steps)
            pauses += 1
        except StopIteration as done:
            stepped = done.value
            break
    assert whole and stepped == whole
    assert pauses >= 5


def _stories(docs: list[ClusterDoc]) -> set[frozenset[int]]:
    clusterer = StoryClusterer(ClusterSettings(), 1)
    for doc in docs:
        clusterer.add(doc, ())
    clusterer.merge_pass()
    return {frozenset(m) for m in clusterer.stories().values()}


def test_an_outlets_recurring_rubric_is_not_evidence_of_one_happening() -> None:
    # One outlet files unrelated war news under the same label; another outlet reports one of
    # the happenings. Only that happening may join: the label alone links nothing.
    docs = [
        _written(1, "lexpress.fr", "Guerre en Ukraine : Moscou revendique une avancée à Donetsk"),
        _written(2, "lexpress.fr", "Guerre en Ukraine : l'alcool russe visé par des drones"),
        _written(3, "lexpress.fr", "Guerre en Ukraine : Izioum renaît de ses cendres"),
        _written(
            4,
            "lefigaro.fr",
            "Guerre en Ukraine : Moscou revendique une avancée à Donetsk",
            "L'armée russe dit avoir pris un village près de Pokrovsk.",
        ),
        _written(5, "la-croix.fr", "Guerre en Ukraine : le pape appelle à la paix"),
    ]
    stories = _stories(docs)
    assert frozenset({1, 4}) in stories  # the same happening, told by two outlets
    assert {2} in [set(s) for s in stories] and {3} in [set(s) for s in stories]
    assert frozenset({5}) in stories  # the rubric word "Ukraine" alone joins nothing


def test_a_headline_listed_twice_is_not_a_rubric() -> None:
    # A feed that lists one item twice does not make its "label: quote" headline a rubric: the
    # words before the colon are the news, and another outlet's report of it joins.
    title = "Trump on the Covid-19 death toll: 'It is what it is'"
    first = _written(1, "cnn.com", title)
    again = replace(_written(2, "cnn.com", title), link="https://cnn.com/again")
    other = _written(3, "dailymail.co.uk", "Trump shrugs off the Covid-19 death toll")
    assert frozenset({1, 2, 3}) in _stories([first, again, other])


def test_a_chain_of_partial_overlaps_does_not_collapse_into_one_story() -> None:
    # Each headline shares two rare names with the next one only: centroid linkage let such a
    # chain grow into one story; a story joins another only when most member pairs agree.
    names = ["Zorvan", "Kelbrin", "Maduvek", "Tarsolo", "Ubrecht", "Vinsaldo", "Quarnel"]
    docs = [
        _written(i + 1, f"outlet{i}.example", f"{names[i]} et {names[i + 1]} signent")
        for i in range(len(names) - 1)
    ]
    stories = _stories(docs)
    assert max(len(s) for s in stories) < len(docs)
    assert max(len(s) for s in stories) <= 3


def test_hyphenated_names_are_one_story_term() -> None:
    terms = fingerprint.story_terms("Val-de-Marne : un foyer évacué en Île-de-France")
    assert "val-de-marne" in terms and "ile-de-france" in terms
    assert not {"val", "marne", "ile", "france"} & set(terms)


def test_one_outlets_section_feeds_count_as_one_outlet() -> None:
    # The same programme in two section feeds of one broadcaster is not two outlets agreeing.
    a = _written(1, "www.deutschlandfunk.de", "Künstliche Intelligenz - Der Stromhunger der KI")
    b = replace(
        _written(
            2,
            "www.deutschlandfunk.de",
            "Künstliche Intelligenz - Neue Möglichkeiten der KI im Sport",
        ),
        feed_id=a.feed_id + 1,
    )
    assert len(_stories([a, b])) == 2


def test_a_shared_topic_label_and_its_acronym_are_one_piece_of_evidence() -> None:
    # Two broadcasters file different pieces under "Künstliche Intelligenz"; "KI" is the same
    # name again, so the two headlines share one unit and stay apart.
    a = _written(1, "www.deutschlandfunk.de", "Künstliche Intelligenz - Der Stromhunger der KI")
    b = _written(
        2,
        "www.deutschlandfunkkultur.de",
        "Künstliche Intelligenz - Neue Möglichkeiten der KI im Sport",
    )
    assert len(_stories([a, b])) == 2


def test_write_ups_sharing_only_common_words_need_a_name_or_a_much_closer_match() -> None:
    # A Swiss munitions factory and Volkswagen's plants are both "usines menacées de
    # fermeture": without a shared name or number that is not one happening.
    vw = _written(
        1,
        "lemonde.fr",
        "Trois usines Volkswagen menacées de fermeture en Allemagne",
        "Le groupe a lancé un plan qui menace trois sites en Allemagne.",
    )
    ammo = _written(
        2,
        "20min.ch",
        "La dernière usine de munitions du pays menacée de fermeture",
        "Quelque 400 emplois pourraient disparaître si le dernier site fermait.",
    )
    other_vw = _written(
        3, "la-croix.com", "Volkswagen envisage de fermer trois usines en Allemagne"
    )
    # The rest of the day's news, so that these words are as common as on a real day.
    towns = [
        "Brest",
        "Nancy",
        "Dijon",
        "Amiens",
        "Limoges",
        "Poitiers",
        "Tours",
        "Rouen",
        "Nîmes",
        "Pau",
        "Metz",
        "Caen",
        "Annecy",
        "Vannes",
        "Colmar",
        "Cahors",
    ]
    day = [vw, ammo, other_vw] + [
        _written(
            10 + i,
            f"local{i}.example",
            f"{town} : le conseil municipal vote le budget",
            "Une usine, un site et des emplois au menu de la séance.",
        )
        for i, town in enumerate(towns)
    ]
    stories = _stories(day)
    assert frozenset({2}) in stories
    assert frozenset({1, 3}) in stories
    clusterer = StoryClusterer(ClusterSettings(), 1)
    for doc in day:
        clusterer.add(doc, ())
    explanation = clusterer.explain_pair(vw, ammo)
    assert explanation.guard == "no_name" and "no name or number" in explanation.reason


def test_episodes_of_a_programme_with_one_description_are_not_copies() -> None:
    blurb = (
        "Daily devotional programme with music, prayer and a short message for viewers "
        "from our studio; subscribe to the channel for every new episode and share it"
    )
    a = _written(1, "www.youtube.com", "Hilari Henriques | Maranatha 8/3/2020", blurb)
    b = _written(2, "www.youtube.com", "Hilari Henriques | Maranatha 8/4/2020", blurb)
    b = replace(b, feed_id=a.feed_id, content_hash=a.content_hash)  # one feed, one text hash
    clusterer = StoryClusterer(ClusterSettings(), 1)
    assert clusterer.near_duplicate(a, b) is None
    assert len(_stories([a, b])) == 2
    same_day = replace(b, entry_id=3, title=a.title)  # the same episode again is a copy
    assert clusterer.near_duplicate(a, same_day) == ("content_hash", None)


def test_a_programmes_blurb_does_not_pull_its_other_episodes_into_a_story() -> None:
    # A broadcaster puts one blurb under every episode of its evening show, each episode titled
    # after a different topic. One episode is about a story another outlet reports: that one
    # joins it, the other episodes stay out (they share only the feed's own text).
    blurb = (
        "À 22h, Perrine Storme fait le tour des images marquantes et des déclarations "
        "fortes de la journée, avec chroniqueurs, invités et éditorialistes."
    )
    docs = [
        _written(
            1,
            "lefigaro.fr",
            "Enlèvement de Santiago : la voiture des parents retrouvée",
            "La voiture des parents du nourrisson a été retrouvée en Belgique.",
        ),
        _written(
            2,
            "bfmtv.com",
            "Enlèvement de Santiago : la voiture des parents retrouvée - 23/10",
            blurb,
        ),
        _written(3, "bfmtv.com", "Agriculteurs : plus dure sera la colère ? - 23/10", blurb),
        _written(
            4, "bfmtv.com", "Sandrine Rousseau : Barnier veut faire durer le débat - 23/10", blurb
        ),
    ]
    stories = _stories(docs)
    assert frozenset({1, 2}) in stories
    assert frozenset({3}) in stories and frozenset({4}) in stories


def test_a_slash_date_is_not_story_evidence() -> None:
    # "- 23/10" stamped on a programme's headlines, "28/10/2024" in a dateline: every item of
    # the day shares them, so they are no terms (an ordinary number still is).
    assert fingerprint.story_terms("Agriculteurs : la colère - 23/10") == ("agriculteur", "colere")
    assert "#2024" not in fingerprint.story_terms("Bilan du 28/10/2024 à Paris")
    assert "#478" in fingerprint.story_terms("L'armée russe a avancé de 478 km² en octobre")
    assert fingerprint.title_layout("Agriculteurs : la colère - 23/10") == (2, 1)


_MADE_UP = [
    "".join(p)
    for p in itertools.product("bcdfglmnprstv", "aeiou", "lmnrst", "aeiou", "bdgklmnprstv", "aeiou")
]


def _made_up_words(count: int, start: int) -> list[str]:
    """Distinct pronounceable non-words ("balabe", ...), so that each piece's own angle shares
    nothing with any other's."""
    return _MADE_UP[start : start + count]


def _large_story(
    first: int, story_id: int, headline: str, members: int, host: str
) -> list[ClusterDoc]:
    """A stored story of `members` outlets: every fourth one runs `headline`, the others only
    its subject ("Mt. Gox : ...") with an angle of their own and a long text of their own."""
    subject = headline.split(":")[0].split(",")[0].strip()
    docs = []
    for i in range(members):
        n = first + i
        own = " ".join(_made_up_words(80, n * 80))
        title = (
            headline if i % 4 == 0 else f"{subject} : {' '.join(_made_up_words(6, 40000 + n * 6))}"
        )
        docs.append(
            replace(
                _written(n, f"{host}{i}.example", title, "" if i % 4 == 0 else own),
                story_id=story_id,
            )
        )
    return docs


def test_two_large_stories_of_one_happening_merge_when_their_cores_agree() -> None:
    # Two stories of 21 and 20 members about Mt. Gox's US bankruptcy: their central members
    # agree, but most members are angles of their own, so the mean over all 420 member pairs
    # is low. Such halves once stayed apart (two large stories had to agree as wholes); a
    # story about the bitcoin price, sharing only "bitcoin", still stays apart.
    filing = _large_story(
        1, 1, "Mt. Gox, la plateforme bitcoin, se déclare en faillite aux États-Unis", 21, "a"
    )
    protection = _large_story(
        100,
        2,
        "Faillite de Mt. Gox : la plateforme bitcoin demande la protection des États-Unis",
        20,
        "b",
    )
    price = _large_story(
        200, 3, "Bitcoin : le cours de la monnaie virtuelle rebondit après la chute", 21, "c"
    )
    # The rest of the window, so that the story's words are rare enough to be searched.
    rest = [
        replace(
            _written(
                1000 + i,
                f"z{i % 50}.example",
                " ".join(_made_up_words(4, 30000 + i * 4)).capitalize(),
            ),
            story_id=100 + i,
        )
        for i in range(800)
    ]
    clusterer = StoryClusterer(ClusterSettings(), 1000)
    clusterer.load(filing + protection + price + rest)
    clusterer.touch([1, 2, 3])
    merges = clusterer.merge_pass()
    assert [(m.from_story_id, m.into_story_id) for m in merges] == [(2, 1)]
    assert len(clusterer.members(1)) == 41 and len(clusterer.members(3)) == 21


def test_a_corrected_headline_stays_the_entry_a_new_one_is_a_retitle() -> None:
    from aggregator.cluster import retitled

    # A corrected figure or a reworded headline is the same item.
    assert not retitled(
        "Floods in Valencia: at least 95 dead", "Floods in Valencia: at least 158 dead"
    )
    assert not retitled("Dordogne : disparition inquiétante", "Dordogne : disparition inquiétante")
    # A ticker that moved on is not.
    assert retitled(
        "Ukraine: un homme se suicide dans un centre d'enrôlement",
        "Poutine ne dément pas le déploiement de soldats nord-coréens",
    )
