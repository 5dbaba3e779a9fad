"""Fingerprints of one entry: content hash, 64-bit word-shingle simhash, bands, story terms.

The only home of the `simhash` package. Everything here is pure and cheap enough to run in the
worker processes next to parse and normalise.

Two kinds of evidence come out of an entry:

* ``simhash``: a 64-bit simhash over word 2-shingles of the normalised text (title + summary +
  content), each shingle hashed with xxh64. It finds copies: wire stories republished verbatim or
  lightly edited. Four 16-bit bands index it so that every neighbour within Hamming distance 3 is
  found by exact band equality (pigeonhole: 3 differing bits leave at least one band untouched).
* ``terms``: the informative tokens of the title and the lead of the text, for matching different
  write-ups of one event. Plain terms are lower-cased, accent-folded, lightly stemmed words with
  English/French/German stop-words removed. Two kinds of special terms are added:
  ``#<number>`` for numbers (``#7.1``, ``#2014``) and ``a_b`` for multi-word names written with
  capitals in running text (``fc_magdeburg``) so that a name is matched as a unit.
"""

from __future__ import annotations

import logging
import re
import unicodedata
from collections.abc import Iterable, Sequence
from functools import lru_cache

import numpy as np
import xxhash
from simhash import Simhash

from aggregator import model

U64_MASK = (1 << 64) - 1
_LOG = logging.getLogger(__name__)
_I64_MIN = -(1 << 63)
_I64_MAX = (1 << 63) - 1

#: Fewer word tokens than this and a text gets no simhash. With 2-shingles, a 24-word text has 23
#: features; below roughly 20 features a single changed word moves 15% or more of the feature mass
#: and Hamming distance stops tracking similarity (a one-word edit lands anywhere from 0 to 15 bits)
#: while short template texts ("Gas up 2 cents in Ohio") collide. Exact copies of short texts are
#: still found through the content hash and the canonical URL.
MIN_SIMHASH_TOKENS = 24
#: Shingle width in words. Two, not three: a one-word edit changes `SHINGLE_WORDS` features, and
#: on a 240-word article a one-word edit moved 3-shingle simhashes by 2-7 bits (median 4.5, so k=3
#: missed most light edits) but 2-shingle simhashes by 1-3 bits; word order is still encoded.
SHINGLE_WORDS = 2
#: Words of the text beyond this are ignored for the simhash. 20k words is a book chapter; it bounds
#: the CPU a hostile feed can cost without changing the fingerprint of any real article.
MAX_SIMHASH_TOKENS = 20_000
#: Word tokens of the text (title included) that contribute story terms.
LEAD_TOKENS = 60

_SIMHASH_TOKEN = re.compile(r"[^\W_]+")
# A number (with decimal or thousands separators), a hyphenated word, or a run of letters/digits.
# Apostrophes split words: "Fed's" -> "Fed", "s"; "l'UNRWA" -> "l", "UNRWA".
# Hyphenated words stay one term: "Val-de-Marne", "Proche-Orient", "Île-de-France" name one
# place; as two or three terms they would pass for independent evidence.
_TERM_TOKEN = re.compile(r"\d+(?:[.,]\d+)*|[^\W\d_]+(?:-[^\W\d_]+)+|[^\W_]+")
# A calendar date written with slashes ("23/10", "28/10/2024", "8/5/20"): every item of a day
# shares it, and outlets stamp it on programmes ("... - 23/10"), so it is no story evidence.
_SLASH_DATE = re.compile(r"(?<![\w/])\d{1,2}/\d{1,2}(?:/\d{2,4})?(?![\w/])")


def _tokens(text: str) -> list[str]:
    """Word and number tokens of `text`, slash dates left out."""
    if "/" in text:
        text = _SLASH_DATE.sub(" ", text)
    return _TERM_TOKEN.findall(text)


_THOUSANDS = re.compile(r"\d{1,3}(?:([.,])\d{3})(?:\1\d{3})*")

# Stop-words: function words of English, French and German, plus a handful of words that appear in
# news headlines of every topic and carry no event ("says", "video", "live"). Written accent-folded
# and lower-case, as tokens are compared after folding.
_STOP_EN = """
a about above after again against all also am an and any are aren as at be because been before
being below between both but by can cannot could couldn did didn do does doesn doing don down
during each few for from further had hasn has have haven having he her here hers herself him
himself his how i if in into is isn it its itself just let ll me more most mustn my myself no nor
not now of off on once only or other ought our ours ourselves out over own re same shan she should
shouldn so some such than that the their theirs them themselves then there these they this those
through to too under until up upon ve very was wasn we were weren what when where which while who
whom why will with won would wouldn you your yours yourself yourselves via vs per amid among
within without across along around toward towards onto
says say said saying tells told according report reports reported new news latest update updates
live video videos watch photo photos pictures here how what why breaking exclusive
expected expects issued issue issues warned warns advised advise area areas
""".split()
_STOP_FR = """
au aux avec ce ces cet cette dans de des du elle elles en et eux il ils je la le les leur leurs lui
ma mais me meme mes moi mon ne nos notre nous on ou par pas pour qu que qui sa se ses son sur ta te
tes toi ton tu un une vos votre vous est sont ete etre avoir fait faire plus moins tres selon apres
avant depuis entre contre chez sans sous vers lors dont ainsi aussi alors donc car comme ont avait
sera seront ni cela ca celui celle ceux celles quand comment pourquoi tout tous toute toutes
direct
""".split()
_STOP_DE = """
aber als am an auch auf aus bei bin bis bist da dadurch daher darum das dass dein deine dem den der
des dessen deshalb die dies diese dieser dieses doch dort du durch ein eine einem einen einer eines
er es euer eure fur hatte hatten hattest hattet hier hinter ich ihr ihre im in ist ja jede jedem
jeden jeder jedes jener jenes jetzt kann kannst konnen konnt machen mein meine mit muss musst nach
nachdem nein nicht noch nun oder seid sein seine sich sie sind soll sollen sollst sollt sonst soweit
sowie und uns unser unsere unter vom von vor wann warum was weiter weitere wenn wer werde werden
werdet weshalb wie wieder wieso wir wird wirst wo woher wohin zu zum zur uber gegen beim zwei wurde
wurden worden hat haben ohne seit sei mehr schon einen nur wegen zwischen wahrend trotz laut rund
etwa bereits dabei damit denn dann sowohl wobei bislang ab innerhalb ausserhalb
""".split()
# Counting and calendar words occur in stories of every kind ("at least two people", "at least two
# years", "Midday: August 5"); in a small window their IDF is as high as a name's, so they would
# carry false matches. Months too, except French "mars", which is also a planet.
_STOP_COMMON = """
one two three four five six seven eight nine ten dozen dozens hundred hundreds thousand thousands
million millions billion first second third last next least many several much more most still
year years month months week weeks day days today yesterday tomorrow time
monday tuesday wednesday thursday friday saturday sunday morning evening night
january february march april may june july august september october november december
un une deux trois quatre cinq dix premiere dernier annee annees mois semaine jour jours
lundi mardi mercredi jeudi vendredi samedi dimanche hier aujourd demain pendant malgre environ
janvier fevrier avril mai juin juillet aout septembre octobre novembre decembre
deja encore weekend wochenende
eins zwei drei vier funf zehn erste ersten letzte letzten jahr jahre jahren monat woche tag tage
tagen heute gestern morgen montag dienstag mittwoch donnerstag freitag samstag sonntag
januar februar marz juni juli oktober dezember
""".split()
STOP_WORDS: frozenset[str] = frozenset(_STOP_EN + _STOP_FR + _STOP_DE + _STOP_COMMON)


def hamming(a: int, b: int) -> int:
    """Number of differing bits between two unsigned 64-bit simhashes."""
    return ((a ^ b) & U64_MASK).bit_count()


def bands(simhash: int) -> tuple[int, int, int, int]:
    """The four 16-bit bands of a simhash; band i holds bits 16*i .. 16*i+15."""
    return model.simhash_bands(simhash)


def to_signed(u: int) -> int:
    """An unsigned 64-bit value as the signed 64-bit integer SQLite stores (same bits)."""
    if not 0 <= u <= U64_MASK:
        raise ValueError(f"not an unsigned 64-bit value: {u}")
    return u - (1 << 64) if u > _I64_MAX else u


def to_unsigned(s: int) -> int:
    """The inverse of `to_signed`: a signed 64-bit integer back to its unsigned value."""
    if not _I64_MIN <= s <= _I64_MAX:
        raise ValueError(f"not a signed 64-bit value: {s}")
    return s & U64_MASK


def simhash_of(text: str, *, vectorised: bool = True) -> int | None:
    """64-bit simhash of word 2-shingles hashed with xxh64, or None when the text is too short.

    Words are case-folded but keep their accents: copies keep their spelling, and stripping
    accents character by character would cost more than the rest of the fingerprint."""
    tokens = _SIMHASH_TOKEN.findall(text.casefold())
    if len(tokens) < MIN_SIMHASH_TOKENS:
        return None
    if len(tokens) > MAX_SIMHASH_TOKENS:
        del tokens[MAX_SIMHASH_TOKENS:]
    shingles = [f"{a} {b}".encode() for a, b in zip(tokens, tokens[1:], strict=False)]
    # A list with repeats weighs each shingle by its count, as the package does.
    if vectorised:
        return int(_VectorisedSimhash(shingles, f=64, hashfunc=xxhash.xxh64_digest, log=_LOG).value)
    return int(
        Simhash([s.decode() for s in shingles], f=64, hashfunc=xxhash.xxh64_digest, log=_LOG).value
    )


class _VectorisedSimhash(Simhash):  # type: ignore[misc]  # simhash ships no types
    """The package's Simhash with its per-feature Python loop done as one numpy pass.

    Same arithmetic as `Simhash.build_by_features` for unweighted features hashed with xxh64:
    bit i of the value is set when more than half the features' hashes have bit i set (the package
    unpacks each big-endian digest and compares the column sums with count / 2). The loop costs
    about 0.3 us per feature in the package; this keeps the package's type, distance and semantics
    and is what brings fingerprinting past 10x the default. Tests check both give equal values."""

    def build_by_features(self, features: Iterable[bytes]) -> None:
        encoded = list(features)
        n = len(encoded)
        hashes = np.fromiter(map(xxhash.xxh64_intdigest, encoded), dtype=np.uint64, count=n)
        bits = np.unpackbits(hashes.astype(">u8").view(np.uint8)).reshape(n, 64)
        counts = bits.sum(axis=0, dtype=np.int64)
        self.value = int.from_bytes(np.packbits(counts > n / 2).tobytes(), "big")


def fingerprint(entry: model.Entry) -> model.Fingerprint:
    """Content hash, simhash (None for short texts) and story terms of one normalised entry."""
    return model.Fingerprint(
        content_hash=entry.content_hash,
        simhash=simhash_of(entry.text),
        terms=story_terms(entry.title, entry.text),
    )


_BULLET = "\u2022"


def story_terms(title: str, text: str = "", lead_tokens: int = LEAD_TOKENS) -> tuple[str, ...]:
    """Informative terms of the title and the lead of the text, title terms first, no repeats.

    `text` normally starts with the title (Entry.text is title + summary + content); the lead is the
    first `lead_tokens` word tokens of it. Multi-word names are only taken from text that is not
    written in headline Title Case, where capitals do not mark names.
    """
    title_tokens = _tokens(title)
    # A bulleted list in a summary ("• Trump fumbles over death toll numbers • Birx stung by
    # ...") is, in news feeds, a list of links to other stories: the lead stops before it.
    text = text.partition(_BULLET)[0]
    # Only the lead is read: ~16 characters per token is generous for any alphabetic language.
    text_tokens = _tokens(text[: lead_tokens * 16])[:lead_tokens] if text else []
    seen = dict.fromkeys(t for t in map(_term, title_tokens) if t is not None)
    for term in map(_term, text_tokens):
        if term is not None and term not in seen:
            seen[term] = None
    for tokens in (title_tokens, text_tokens):
        if not _is_title_case(tokens):
            for phrase in _name_phrases(tokens):
                if phrase not in seen:
                    seen[phrase] = None
    return tuple(seen)


# A rubric: a short label before a colon, pipe or dash at the start of a headline ("Guerre en
# Ukraine : ...", "Budget 2025 | ..."). Up to six words; the separator must have a space after it.
_RUBRIC = re.compile(r"^\s*([^:|\u2013\u2014]{2,60}?)\s*(?::|\||\s[\u2013\u2014-])\s")


def title_layout(title: str) -> tuple[int, int]:
    """How the first story terms of an entry came from its title: (title terms, rubric terms).

    `story_terms` puts the title's words first, so `terms[:title]` are the headline's words and
    `terms[:rubric]` those of a leading label such as "Guerre en Ukraine :" (0 when there is
    none). The story tier weighs headline words above the text's and treats a label that one
    outlet puts on many headlines as that outlet's boilerplate."""
    seen = dict.fromkeys(t for t in map(_term, _tokens(title)) if t is not None)
    rubric = 0
    match = _RUBRIC.match(title)
    if match and len(match.group(1).split()) <= 6:
        words = dict.fromkeys(t for t in map(_term, _tokens(match.group(1))) if t is not None)
        rubric = len(words)
        if list(seen)[:rubric] != list(words):  # cannot happen; keep the contract safe
            rubric = 0
    return len(seen), rubric


def headline_words(terms: Sequence[str], title_terms: int) -> tuple[str, ...]:
    """The headline's plain story terms (no numbers, no name phrases), as the story tier counts
    them per day to tell a name bursting today from one that is in the news every day."""
    return tuple(t for t in terms[:title_terms] if t[0] != "#" and "_" not in t)


def _fold(text: str) -> str:
    """Case-fold and strip accents: 'Élysée' -> 'elysee', 'Straße' -> 'strasse'."""
    text = unicodedata.normalize("NFKD", text.casefold())
    if text.isascii():
        return text
    return "".join(c for c in text if not unicodedata.combining(c))


@lru_cache(maxsize=1 << 16)
def _term(token: str) -> str | None:
    if token[0].isdigit():
        return "#" + _number(token)
    word = _fold(token)
    if len(word) < 2 or word in STOP_WORDS:
        return None
    return _stem(word)


def _number(token: str) -> str:
    """'1,200' and '1.200' -> '1200'; '0,25' -> '0.25'; '3.00' -> '3' (one spelling per value)."""
    if _THOUSANDS.fullmatch(token) and len(token) > 4:
        return token.replace(",", "").replace(".", "")
    number = token.replace(",", ".")
    if "." in number:
        number = number.rstrip("0").rstrip(".") or "0"
    return number


def _stem(word: str) -> str:
    """Light plural stripping for English/French ('attacks' -> 'attack', 'stories' -> 'story')."""
    if len(word) > 4 and word.endswith("ies"):
        return word[:-3] + "y"
    if len(word) > 3 and word[-1] == "s" and word[-2] not in "su" and word[-2:] != "is":
        return word[:-1]
    return word


def _is_capitalised(token: str) -> bool:
    return token[0].isupper()


@lru_cache(maxsize=4096)
def title_names(title: str) -> frozenset[str] | None:
    """The story terms of a headline's capitalised words: its names ("Volkswagen", "Allemagne"
    in "Trois usines Volkswagen menacées de fermeture en Allemagne", acronyms, "l'Iran"), and
    the first word of each clause, which may be one. None when capitals say nothing: a Title
    Case headline, or a language that capitalises every noun (German)."""
    tokens = _tokens(title)
    if _is_title_case(tokens) or _capitalises_nouns(tokens):
        return None
    return frozenset(
        term
        for t in tokens
        if t[0].isalpha() and _is_capitalised(t)
        if (term := _term(t)) is not None
    )


def _longer_words(tokens: list[str]) -> list[str]:
    return [t for t in tokens if len(t) > 3 and t[0].isalpha()]


# Function words that tell a German headline from a French or English one. A headline of names
# ("Granit Xhaka classé 16e au Ballon d'or") has as many capitals as a German one; its "au"
# says it is not German, so its capitals still tell names apart.
_GERMAN_MARKS = frozenset(
    "der das und nicht mit fur für ist sich auf dem den ein eine einen einem einer im vom zum"
    " zur bei nach uber über wie aus gegen wird werden sind hat haben auch noch nur von zu".split()
)
_OTHER_MARKS = frozenset(
    "le la les du de et au aux pour sur une un est dans par avec qui que the of and to for on"
    " with is at by from".split()
)


def _capitalises_nouns(tokens: list[str]) -> bool:
    """German headlines capitalise every noun: more than half of the longer words after the
    first start with a capital, and no French or English function word says otherwise."""
    words = _longer_words(tokens)[1:]
    if len(words) < 3 or sum(map(_is_capitalised, words)) <= 0.5 * len(words):
        return False
    marks = {t.casefold() for t in tokens}
    return not marks.isdisjoint(_GERMAN_MARKS) or marks.isdisjoint(_OTHER_MARKS)


def _is_title_case(tokens: list[str]) -> bool:
    """True for headline Title Case: nearly every longer word starts with a capital."""
    words = _longer_words(tokens)
    if len(words) < 3:
        return False
    return sum(map(_is_capitalised, words)) >= 0.8 * len(words)


def _name_phrases(tokens: list[str]) -> Iterable[str]:
    """Runs of two or more capitalised words (stop-words trimmed) as 'a_b' terms."""
    run: list[str] = []
    for token in [*tokens, ""]:
        if token and token[0].isalpha() and _is_capitalised(token):
            run.append(token)
            continue
        if len(run) >= 2:
            words = [_fold(t) for t in run]
            while words and words[0] in STOP_WORDS:
                words.pop(0)
            while words and words[-1] in STOP_WORDS:
                words.pop()
            if len(words) >= 2:
                yield "_".join(map(_stem, words))
        run = []
