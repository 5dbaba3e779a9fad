"""The event rule and the span bound of the story tier, in the pure core and through real polls.

A name bursting in the day's headlines ("Ballon d'Or" on the night of the ceremony) lets the
sub-stories of that happening join on less evidence; a name that is in the news every day does
not; a database without a week of headline counts goes without the rule. A story never spans
more than one window.
"""

from __future__ import annotations

import hashlib
import sqlite3
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from pathlib import Path
from xml.sax.saxutils import escape

from aggregator.cluster import StoryClusterer
from aggregator.model import ClusterDoc, ClusterSettings
from aggregator.pipeline import backfill_steps
from aggregator.store import MIGRATIONS, Store
from tests.docs import written

CLI = [sys.executable, "-m", "aggregator"]
DAY = datetime(2024, 10, 28, tzinfo=UTC)

# The night of the ceremony: two sub-stories (Real Madrid's boycott, Rodri's trophy) and the
# women's award, told by four outlets; they share the ceremony's name and little else.
CEREMONY = [
    (
        "a",
        18,
        "Ballon d'Or : le Real boycotte la cérémonie au Châtelet",
        "Le club madrilène n'enverra personne à la cérémonie parisienne, convaincu que son joueur"
        " ne sera pas sacré.",
    ),
    (
        "b",
        19,
        "Le Real Madrid boycotte la soirée du Ballon d'Or",
        "Convaincu que son attaquant ne gagnera pas, le club reste à Madrid et snobe la cérémonie.",
    ),
    (
        "c",
        21,
        "Ballon d'Or : l'Espagnol Rodri est sacré devant son rival",
        "Le milieu de Manchester City reçoit le trophée lors de la cérémonie parisienne.",
    ),
    (
        "d",
        22,
        "Rodri remporte le Ballon d'Or, une première pour son club",
        "Le milieu espagnol de Manchester City devance ses rivaux au classement final de la"
        " cérémonie.",
    ),
    (
        "a",
        23,
        "Ballon d'Or : Aitana Bonmatí conserve son trophée",
        "La Barcelonaise est sacrée pour la deuxième année de suite lors de la cérémonie.",
    ),
]
# What every day of the week before holds: other news, from the same outlets.
FILLER = [
    "Le budget de la Sécurité sociale arrive à l'Assemblée {n}",
    "Tempête sur la Bretagne : vigilance orange pour la journée {n}",
    "Le prix de l'essence recule pour la semaine {n}",
    "Un nouveau musée ouvre ses portes à Lyon, visite {n}",
]


def doc(
    entry_id: int, outlet: str, hour: int, title: str, summary: str, day: datetime = DAY
) -> ClusterDoc:
    """One outlet's headline at `hour` of `day`, built as the pipeline builds a doc."""
    return written(
        entry_id,
        f"{outlet}.example",
        title,
        summary,
        published=(day + timedelta(hours=hour)).isoformat(),
    )


def week_counts(ballon_per_day: int, volume: int = 40) -> dict[tuple[str, str], int]:
    """Headline counts of the ceremony day and the week before it."""
    counts = {(DAY.date().isoformat(), ""): volume, (DAY.date().isoformat(), "ballon"): 5}
    for n in range(1, 8):
        day = (DAY - timedelta(days=n)).date().isoformat()
        counts[day, ""] = volume
        if ballon_per_day:
            counts[day, "ballon"] = ballon_per_day
    return counts


def cluster(counts: dict[tuple[str, str], int] | None) -> tuple[list[int], StoryClusterer]:
    clusterer = StoryClusterer(ClusterSettings(), 1)
    for n, (outlet, hour, title, summary) in enumerate(CEREMONY, 1):
        clusterer.add(doc(n, outlet, hour, title, summary))
    request = clusterer.headline_request()
    if counts is not None:
        assert request is not None and "ballon" in request[0]
        assert (request[1], request[2]) == ("2024-10-21", "2024-10-28")
        clusterer.use_headline_counts(counts)
    clusterer.merge_pass()
    return [clusterer.story_of(n) for n in range(1, len(CEREMONY) + 1)], clusterer


def test_a_name_bursting_in_the_days_headlines_joins_the_happenings_sub_stories() -> None:
    stories, clusterer = cluster(week_counts(ballon_per_day=0))
    assert clusterer.event_names() == {"2024-10-28": frozenset({"ballon"})}
    # The boycott and the trophy are one story; the women's award shares too little.
    assert len(set(stories[:4])) == 1, stories
    explained = clusterer.explain_pair(
        clusterer.members(stories[0])[0], clusterer.members(stories[0])[2]
    )
    assert explained.joined and "event of the day" in explained.reason
    assert "ballon" in explained.reason


def test_a_name_in_the_news_every_day_is_no_event() -> None:
    # The same headlines on a day like any other (the name in five headlines a day all week).
    every_day, clusterer = cluster(week_counts(ballon_per_day=5))
    assert clusterer.event_names() == {}
    without, _ = cluster(None)
    assert every_day == without
    # Without the rule the boycott and the trophy stay apart.
    assert len(set(without[:4])) > 1, without


def test_a_database_without_a_week_of_headlines_goes_without_the_event_rule() -> None:
    counts = week_counts(ballon_per_day=0)
    for n in (3, 4, 5):  # three days of the week missing: a new database
        del counts[(DAY - timedelta(days=n)).date().isoformat(), ""]
    stories, clusterer = cluster(counts)
    assert clusterer.event_names() == {}
    assert stories == cluster(None)[0]


def test_a_story_spans_at_most_one_window() -> None:
    # One subject told every day by two outlets, each day's items like the day before's.
    clusterer = StoryClusterer(ClusterSettings(window_hours=48), 1)
    ids = []
    for n in range(5):
        day = DAY + timedelta(days=n)
        for outlet in "ab":
            entry_id = len(ids) + 1
            clusterer.add(
                doc(
                    entry_id,
                    outlet,
                    12,
                    f"Présidentielle américaine : Kamala Harris"
                    f" et Donald Trump en meeting, jour {n} de campagne {outlet}",
                    "Les deux candidats à la Maison Blanche se disputent les États"
                    " clés à quelques jours du scrutin.",
                    day,
                )
            )
            ids.append(entry_id)
    clusterer.merge_pass()
    for story_id, members in clusterer.stories().items():
        published = [clusterer.members(story_id)[i].published for i in range(len(members))]
        assert max(published) - min(published) <= timedelta(hours=48), story_id
    assert len(clusterer.stories()) >= 2


# -- through real polls ---------------------------------------------------------------------------


def write_day(folder: Path, day: datetime, items: dict[str, list[tuple[int, str, str]]]) -> None:
    for outlet in "abcd":
        parts = [
            '<?xml version="1.0" encoding="UTF-8"?><rss version="2.0"><channel>'
            f"<title>Outlet {outlet}</title><link>https://{outlet}.example/</link>"
            "<description>d</description><language>fr</language>"
        ]
        for hour, title, summary in items.get(outlet, []):
            link = (
                f"https://{outlet}.example/{day:%Y%m%d}/{hashlib.md5(title.encode()).hexdigest()}"
            )
            parts.append(
                f"<item><guid>{link}</guid><link>{link}</link>"
                f"<title>{escape(title)}</title><description>{escape(summary)}"
                f"</description><pubDate>"
                f"{format_datetime(day + timedelta(hours=hour), usegmt=True)}"
                "</pubDate></item>"
            )
        parts.append("</channel></rss>")
        (folder / f"{outlet}.xml").write_text("".join(parts), encoding="utf-8")


def four_outlets(tmp_path: Path) -> tuple[Path, Path, Path]:
    """A config of the four outlets' feed files: (their folder, the database, the config)."""
    feeds = tmp_path / "feeds"
    feeds.mkdir()
    database = tmp_path / "agg.db"
    config = tmp_path / "aggregator.toml"
    config.write_text(
        f'[storage]\ndatabase = "{database}"\n\n'
        + "".join(f'[[feeds]]\nurl = "{(feeds / f"{o}.xml").as_uri()}"\n\n' for o in "abcd")
    )
    return feeds, database, config


def poll(config: Path) -> None:
    result = subprocess.run(
        [*CLI, "--config", str(config), "poll", "--all"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr


def poll_days(tmp_path: Path, history: int) -> Path:
    feeds, database, config = four_outlets(tmp_path)
    for n in range(history, -1, -1):
        day = DAY - timedelta(days=n)
        items: dict[str, list[tuple[int, str, str]]] = {}
        for i, outlet in enumerate("abcd"):
            items[outlet] = [
                (
                    8 + k,
                    FILLER[(i + k) % 4].format(n=f"{n}-{k}{outlet}"),
                    "Rien à voir avec le football.",
                )
                for k in range(3)
            ]
        if n == 0:
            for outlet, hour, title, summary in CEREMONY:
                items[outlet].append((hour, title, summary))
        write_day(feeds, day, items)
        poll(config)
    return database


def ceremony_stories(database: Path) -> list[int]:
    with sqlite3.connect(database) as conn:
        found = dict(conn.execute("SELECT title, story_id FROM entries"))
    conn.close()
    return [found[title] for _, _, title, _ in CEREMONY]


def test_after_a_week_of_polls_the_ceremony_is_one_story_and_explain_says_why(
    tmp_path: Path,
) -> None:
    database = poll_days(tmp_path, history=7)
    stories = ceremony_stories(database)
    assert len(set(stories[:4])) == 1, stories
    with sqlite3.connect(database) as conn:
        # Every headline was counted once, on its day, as the pipeline stored it.
        (today,) = conn.execute(
            "SELECT entries FROM headline_terms WHERE day = '2024-10-28' AND term = ''"
        ).fetchone()
        (ballon,) = conn.execute(
            "SELECT entries FROM headline_terms WHERE day = '2024-10-28' AND term = 'ballon'"
        ).fetchone()
        first, last = conn.execute(
            "SELECT id FROM entries WHERE title = ? OR title = ? ORDER BY id",
            (CEREMONY[0][2], CEREMONY[2][2]),
        ).fetchall()
    conn.close()
    assert (today, ballon) == (12 + len(CEREMONY), 5)
    out = subprocess.run(
        [
            *CLI,
            "--config",
            str(tmp_path / "aggregator.toml"),
            "explain",
            str(first[0]),
            str(last[0]),
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 0, out.stderr
    assert "event of the day" in out.stdout and "ballon" in out.stdout


def test_the_same_night_polled_by_a_new_database_keeps_its_sub_stories_apart(
    tmp_path: Path,
) -> None:
    stories = ceremony_stories(poll_days(tmp_path, history=0))
    assert len(set(stories[:4])) > 1, stories


def test_entries_stored_before_the_headline_counts_are_counted_once(tmp_path: Path) -> None:
    database = poll_days(tmp_path, history=2)
    with sqlite3.connect(database) as conn:
        before = sorted(conn.execute("SELECT day, term, entries FROM headline_terms"))
    conn.close()
    with Store.open(database) as store:
        # As an upgraded database finds itself: no counts yet, every entry still to count.
        with store.transaction():
            store.execute("DELETE FROM headline_terms")
            store.execute(
                "INSERT INTO meta (key, value) SELECT 'headline_backfill_until',"
                " max(id) FROM entries"
            )
            store.execute("INSERT INTO meta (key, value) VALUES ('headline_backfill_done', '0')")
        assert len(list(backfill_steps(store, batch=7))) > 1  # several batches
        assert store.headline_backfill() is None
        assert list(backfill_steps(store)) == []  # done: nothing counted twice
    with sqlite3.connect(database) as conn:
        assert sorted(conn.execute("SELECT day, term, entries FROM headline_terms")) == before
    conn.close()


def test_a_subject_polled_every_day_never_makes_a_story_longer_than_the_window(
    tmp_path: Path,
) -> None:
    feeds, database, config = four_outlets(tmp_path)
    for n in range(6):  # the same subject every day, told alike by two outlets
        day = DAY + timedelta(days=n)
        write_day(
            feeds,
            day,
            {
                o: [
                    (
                        12,
                        f"Présidentielle américaine : Kamala Harris et Donald"
                        f" Trump en meeting dans le Michigan, étape {n}{o}",
                        "Les deux candidats à la Maison Blanche se disputent les"
                        " États clés à quelques jours du scrutin.",
                    )
                ]
                for o in "ab"
            },
        )
        poll(config)
    with sqlite3.connect(database) as conn:
        spans = conn.execute(
            "SELECT story_id, count(*), julianday(max(published))"
            " - julianday(min(published)) FROM entries GROUP BY story_id"
        ).fetchall()
    conn.close()
    assert max(n for _, n, _ in spans) >= 4  # the days do join, within the window
    assert all(days * 24 <= 72 for _, _, days in spans), spans


def test_pruning_keeps_the_headline_counts_of_the_week_before_the_oldest_kept_day(
    tmp_path: Path,
) -> None:
    now = datetime(2024, 12, 1, tzinfo=UTC)
    with Store.open(tmp_path / "agg.db") as store:
        with store.transaction():
            store.count_headlines([(now - timedelta(days=n), ("ballon",)) for n in range(60)])
        store.prune(30, now, now=now)
        days = [d for (d,) in store.execute("SELECT DISTINCT day FROM headline_terms ORDER BY day")]
    assert days[0] == (now - timedelta(days=38)).date().isoformat()
    assert days[-1] == now.date().isoformat() and len(days) == 39


def test_a_database_upgraded_from_version_6_counts_its_stored_headlines_once(
    tmp_path: Path,
) -> None:
    database = poll_days(tmp_path, history=2)
    with sqlite3.connect(database) as conn:
        before = sorted(conn.execute("SELECT day, term, entries FROM headline_terms"))
        # As version 6 left it: no table, no backfill marks.
        conn.execute("DROP TABLE headline_terms")
        conn.execute("DELETE FROM meta WHERE key LIKE 'headline_backfill%'")
        conn.execute("DROP TABLE enclosures")  # and without what later versions added
        conn.execute("ALTER TABLE entries DROP COLUMN image")
        conn.execute("PRAGMA user_version = 6")
    conn.close()
    with Store.open(database) as store:  # migration 7 runs and notes what is to count
        assert store.schema_version == len(MIGRATIONS)
        assert store.headline_backfill() is not None
    # The next poll cycle counts them (its feeds are unchanged: nothing new is stored).
    poll(tmp_path / "aggregator.toml")
    with sqlite3.connect(database) as conn:
        assert sorted(conn.execute("SELECT day, term, entries FROM headline_terms")) == before
        assert conn.execute(
            "SELECT count(*) FROM meta WHERE key LIKE 'headline_backfill%'"
        ).fetchone() == (0,)
    conn.close()


# A week before the election: campaign pieces of three outlets that share only the candidates'
# names, and two reports of one rally that share its place as well.
CAMPAIGN = [
    (
        "a",
        8,
        "Donald Trump vs Kamala Harris : ce que disent les sondages à une semaine du vote",
        "Donald Trump et Kamala Harris sont au coude-à-coude dans les sondages.",
    ),
    (
        "b",
        9,
        "Donald Trump ou Kamala Harris, qui l'emportera ? Les cinq scénarios",
        "Kamala Harris ou Donald Trump : les scénarios possibles du scrutin.",
    ),
    (
        "c",
        10,
        "Kamala Harris face à Donald Trump : le combat des colistiers",
        "Derrière Kamala Harris et Donald Trump, leurs colistiers font campagne.",
    ),
    (
        "a",
        20,
        "Au Madison Square Garden, Donald Trump attaque Kamala Harris",
        "Le meeting de Donald Trump au Madison Square Garden de New York contre Kamala Harris.",
    ),
    (
        "b",
        21,
        "Meeting de Donald Trump au Madison Square Garden : Kamala Harris dénonce",
        "Kamala Harris réagit au meeting de Donald Trump au Madison Square Garden.",
    ),
]


def campaign(candidates_per_day: int) -> tuple[list[int], StoryClusterer]:
    clusterer = StoryClusterer(ClusterSettings(), 1)
    for n, (outlet, hour, title, summary) in enumerate(CAMPAIGN, 1):
        clusterer.add(doc(n, outlet, hour, title, summary))
    request = clusterer.headline_request()
    assert request is not None and {"trump", "harris"} <= request[0]
    counts = {(DAY.date().isoformat(), ""): 40}
    for word in ("donald", "trump", "kamala", "harris"):
        counts[DAY.date().isoformat(), word] = 5
    for n in range(1, 8):
        day = (DAY - timedelta(days=n)).date().isoformat()
        counts[day, ""] = 40
        for word in ("donald", "trump", "kamala", "harris"):
            counts[day, word] = candidates_per_day
    clusterer.use_headline_counts(counts)
    clusterer.merge_pass()
    return [clusterer.story_of(n) for n in range(1, len(CAMPAIGN) + 1)], clusterer


def test_pieces_sharing_only_names_in_the_news_all_week_stay_apart() -> None:
    stories, clusterer = campaign(candidates_per_day=4)
    # Three campaign pieces: three stories. The rally: one story (its place is evidence).
    assert len({stories[0], stories[1], stories[2]}) == 3, stories
    assert stories[3] == stories[4], stories
    pieces = [clusterer.members(s)[0] for s in stories[:2]]
    explained = clusterer.explain_pair(*pieces)
    assert not explained.joined
    assert explained.guard == "standing"
    assert "every day of the week before" in explained.reason and "trump" in explained.reason


def test_names_new_this_week_are_evidence_for_the_topic_guard() -> None:
    # The same pieces when the candidates were not in the headlines the week before: the names
    # are no standing subject, and the pieces match as they always did.
    stories, _ = campaign(candidates_per_day=0)
    assert len({stories[0], stories[1], stories[2]}) < 3, stories


# The day of a disaster: four angles from three outlets that share only its two names.
FLOODS = [
    (
        "a",
        7,
        "Inondations en Espagne : après le déluge, l'enfer de la boue",
        "Des rues entières restent couvertes de boue, les habitants déblaient à la pelle.",
    ),
    (
        "b",
        9,
        "Inondations en Espagne : au moins 158 morts, des dizaines de disparus",
        "Le bilan provisoire ne cesse de s'alourdir, les secours fouillent les décombres.",
    ),
    (
        "c",
        12,
        "Inondations en Espagne : la colère monte contre l'alerte tardive",
        "Les autorités régionales sont critiquées pour leur message envoyé trop tard.",
    ),
    (
        "a",
        15,
        "Le Real Madrid offre un million après les inondations en Espagne",
        "Le club madrilène annonce un don pour les sinistrés de la région.",
    ),
]


def floods(per_day: dict[str, int]) -> tuple[list[int], StoryClusterer]:
    clusterer = StoryClusterer(ClusterSettings(), 1)
    for n, (outlet, hour, title, summary) in enumerate(FLOODS, 1):
        clusterer.add(doc(n, outlet, hour, title, summary))
    request = clusterer.headline_request()
    assert request is not None and {"inondation", "espagne"} <= request[0]
    counts = {(DAY.date().isoformat(), ""): 40}
    counts[DAY.date().isoformat(), "inondation"] = 4
    counts[DAY.date().isoformat(), "espagne"] = 4
    for n in range(1, 8):
        day = (DAY - timedelta(days=n)).date().isoformat()
        counts[day, ""] = 40
        for word, count in per_day.items():
            counts[day, word] = count
    clusterer.use_headline_counts(counts)
    clusterer.merge_pass()
    return [clusterer.story_of(n) for n in range(1, len(FLOODS) + 1)], clusterer


def test_headlines_sharing_two_names_of_the_days_event_are_one_story() -> None:
    stories, clusterer = floods({})
    assert clusterer.event_names()["2024-10-28"] >= {"inondation", "espagne"}
    assert len(set(stories)) == 1, stories
    first, second = clusterer.members(stories[0])[:2]
    explained = clusterer.explain_pair(first, second)
    assert explained.joined and "espagne, inondation" in explained.reason


def test_one_bursting_name_alone_does_not_join_the_angles() -> None:
    # Spain is in the news every day of the week: only "inondation" bursts, and one name
    # shared by headlines that share nothing else is not enough.
    stories, clusterer = floods({"espagne": 4})
    assert "espagne" not in clusterer.event_names().get("2024-10-28", frozenset())
    assert len(set(stories)) > 1, stories
