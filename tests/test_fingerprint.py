"""Fingerprints: simhash over word shingles, bands, u64<->i64, story terms."""

from __future__ import annotations

import random
from datetime import UTC, datetime

from hypothesis import given, settings
from hypothesis import strategies as st
from simhash import Simhash

from aggregator import fingerprint
from aggregator.fingerprint import bands, hamming, story_terms, to_signed, to_unsigned
from aggregator.model import Entry

u64 = st.integers(min_value=0, max_value=(1 << 64) - 1)
i64 = st.integers(min_value=-(1 << 63), max_value=(1 << 63) - 1)

ARTICLE = (
    "The European Central Bank cut its key interest rate by a quarter point on Thursday, the first "
    "reduction since 2019, but gave no commitment to further cuts as inflation in the euro zone "
    "remains above its target. President Christine Lagarde said future decisions would depend on "
    "the data and that the bank was not pre-committing to a particular rate path. Economists had "
    "expected the move after months of signals from policymakers, and markets barely reacted. "
    "Several members of the governing council argued for waiting until September, according to "
    "people familiar with the discussion, while others pushed for a faster pace of easing."
)
# A second paragraph: a light edit is only "light" relative to the length of the text.
LONGER = ARTICLE + (
    " Lagarde told reporters in Frankfurt that the council had been unanimous except for one "
    "member, whom she did not name, and that wage growth remained strong enough to keep services "
    "inflation high for several more quarters. The bank raised its inflation forecasts for this "
    "year and next, which analysts read as a sign that a second cut in July was unlikely. Bond "
    "yields rose slightly after the press conference while the euro held steady against the "
    "dollar. In Washington, the Federal Reserve is expected to keep its own rates unchanged next "
    "week, widening the gap between the two central banks for the first time in years. Business "
    "groups in Germany and Italy welcomed the decision but said borrowing costs were still too "
    "high for companies planning new investment, and housing associations asked for faster cuts."
)


def entry(text: str, title: str = "Title") -> Entry:
    return Entry(
        guid="g",
        link=None,
        title=title,
        summary="",
        content="",
        text=text,
        published=datetime(2024, 6, 6, tzinfo=UTC),
        updated=None,
        author=None,
        language="en",
        content_hash="h",
    )


@given(u64, u64, u64)
def test_hamming_is_a_metric(a: int, b: int, c: int) -> None:
    assert hamming(a, a) == 0
    assert (hamming(a, b) == 0) == (a == b)
    assert hamming(a, b) == hamming(b, a)
    assert hamming(a, c) <= hamming(a, b) + hamming(b, c)
    assert 0 <= hamming(a, b) <= 64


@given(u64)
def test_unsigned_to_signed_round_trips(u: int) -> None:
    s = to_signed(u)
    assert -(1 << 63) <= s < (1 << 63)
    assert to_unsigned(s) == u


@given(i64)
def test_signed_to_unsigned_round_trips(s: int) -> None:
    assert to_signed(to_unsigned(s)) == s


def test_out_of_range_values_are_refused() -> None:
    for bad in (-1, 1 << 64):
        try:
            to_signed(bad)
        except ValueError:
            pass
        else:
            raise AssertionError(f"to_signed accepted {bad}")
    for bad in (1 << 63, -(1 << 63) - 1):
        try:
            to_unsigned(bad)
        except ValueError:
            pass
        else:
            raise AssertionError(f"to_unsigned accepted {bad}")


def test_band_i_holds_bits_16i_to_16i_plus_15() -> None:
    assert bands(0x0123_4567_89AB_CDEF) == (0xCDEF, 0x89AB, 0x4567, 0x0123)
    assert bands(1 << 63) == (0, 0, 0, 0x8000)


@given(u64, st.sets(st.integers(min_value=0, max_value=63), max_size=3))
def test_bands_find_every_neighbour_within_three_bits(value: int, flipped: set[int]) -> None:
    other = value
    for bit in flipped:
        other ^= 1 << bit
    assert hamming(value, other) == len(flipped)
    assert any(x == y for x, y in zip(bands(value), bands(other), strict=True))


def test_four_flipped_bits_can_escape_every_band() -> None:
    # One bit in each band: the pigeonhole bound of the band table is exactly k = 3.
    value = 0
    other = value ^ (1 | 1 << 16 | 1 << 32 | 1 << 48)
    assert not any(x == y for x, y in zip(bands(value), bands(other), strict=True))


def test_short_text_gets_no_simhash_but_terms() -> None:
    fp = fingerprint.fingerprint(entry("Magdeburg attack: driver arrested", "Magdeburg attack"))
    assert fp.simhash is None
    assert "magdeburg" in fp.terms
    assert fp.content_hash == "h"


def test_simhash_is_unsigned_64_bit_and_deterministic() -> None:
    a = fingerprint.fingerprint(entry(ARTICLE)).simhash
    assert a is not None and 0 <= a < 1 << 64
    assert fingerprint.fingerprint(entry(ARTICLE)).simhash == a


def test_light_edit_stays_within_three_bits_and_unrelated_text_does_not() -> None:
    base = fingerprint.simhash_of(LONGER)
    edited = fingerprint.simhash_of(LONGER.replace("barely reacted", "hardly reacted"))
    assert base is not None and edited is not None
    assert hamming(base, edited) <= 3
    words = LONGER.split()
    random.Random(1).shuffle(words)
    shuffled = fingerprint.simhash_of(" ".join(words))
    assert shuffled is not None and hamming(base, shuffled) > 10


@settings(max_examples=60, deadline=None)
@given(
    st.lists(
        st.sampled_from("the a bank rate cut élysée 2019 straße news Kursk x y z".split()),
        min_size=24,
        max_size=400,
    )
)
def test_vectorised_simhash_equals_the_package_loop(words: list[str]) -> None:
    text = " ".join(words)
    assert fingerprint.simhash_of(text) == fingerprint.simhash_of(text, vectorised=False)


def test_vectorised_simhash_equals_the_package_loop_on_an_article() -> None:
    assert fingerprint.simhash_of(LONGER) == fingerprint.simhash_of(LONGER, vectorised=False)


def test_word_shingles_keep_word_boundaries() -> None:
    # The package's default features drop spaces before taking 4-grams: "the rapist" equals
    # "therapist" for it. Word shingles keep them apart.
    filler = " ".join(f"word{i}" for i in range(30))
    a = f"{filler} the rapist was seen {filler}"
    b = f"{filler} therapist was seen {filler}"
    assert Simhash(a).value == Simhash(b).value
    assert fingerprint.simhash_of(a) != fingerprint.simhash_of(b)


def test_terms_drop_stop_words_in_three_languages_and_fold_accents() -> None:
    terms = story_terms("Le Parlement israélien vote contre l'UNRWA und die Welt says the report")
    assert "parlement" in terms and "israelien" in terms and "unrwa" in terms
    for stop in ("le", "contre", "und", "die", "the", "says", "report"):
        assert stop not in terms


def test_terms_encode_numbers_and_names() -> None:
    terms = story_terms(
        "Magnitude 6.1 quake", "Magnitude 6.1 quake. The FC Magdeburg coach said 1,200 fans left"
    )
    assert "#6.1" in terms and "#1200" in terms
    assert "fc_magdeburg" in terms
    assert "quake" in terms and "magnitude" in terms


def test_title_case_headlines_give_no_name_phrases() -> None:
    terms = story_terms("Apple Releases New Iphone Software Update Today")
    assert not any("_" in t for t in terms)


def test_plural_stripping_is_light() -> None:
    assert story_terms("attacks stories glass") == ("attack", "story", "glass")


def test_a_summary_listing_other_headlines_adds_no_story_terms() -> None:
    # CNN's video items carry a bulleted list of related stories as their summary: those are
    # other happenings, not evidence about this one.
    title = "Trump on America's Covid-19 death toll"
    text = f"{title} • Trump fumbles over the numbers • Birx stung by first public attack"
    terms = fingerprint.story_terms(title, text)
    assert "trump" in terms and "toll" in terms
    assert not {"birx", "stung", "fumble"} & set(terms)


def test_french_headline_full_of_names_still_tells_names_apart() -> None:
    # As many capitals as a German headline, but "au" and "du" say it is French: its capitals
    # are names, which the story tier's names guard and event rule rely on.
    assert fingerprint.title_names("Granit Xhaka classé 16e au Ballon d'or") == {
        "granit",
        "xhaka",
        "ballon",
    }
    names = fingerprint.title_names(
        "Ballon d’or 2024 : Lamine Yamal lauréat logique du trophée Kopa, Neves et Zaïre-Emery"
    )
    assert names is not None and {"ballon", "yamal", "kopa"} <= names


def test_german_headline_capitals_say_nothing_about_names() -> None:
    assert fingerprint.title_names("Anschlag auf Weihnachtsmarkt Magdeburg: Was wir wissen") is None
    assert fingerprint.title_names("Scholz stellt Vertrauensfrage im Bundestag") is None
