"""Content hash, 64-bit simhash and story terms (first version). The only simhash user."""

from __future__ import annotations

import re

import xxhash
from simhash import Simhash

from .model import Entry, Fingerprint

_WORD = re.compile(r"\w+", re.UNICODE)
MIN_WORDS = 20


def _hash(feature: str) -> int:
    return int(xxhash.xxh64_intdigest(feature))


def fingerprint(entry: Entry) -> Fingerprint:
    words = [w.lower() for w in _WORD.findall(entry.text)]
    simhash = None
    if len(words) >= MIN_WORDS:
        shingles = [" ".join(words[i:i + 3]) for i in range(len(words) - 2)]
        simhash = Simhash(shingles, hashfunc=_hash).value
    terms = tuple(sorted({w for w in (x.lower() for x in _WORD.findall(entry.title)) if len(w) > 3}))
    return Fingerprint(content_hash=entry.content_hash, simhash=simhash, terms=terms)


def hamming(a: int, b: int) -> int:
    return (a ^ b).bit_count()
