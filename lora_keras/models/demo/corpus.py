"""Offline, deterministic English -> invented-language parallel corpus for the LoRA demo.

A small T5 learns the BASE task (English -> Velish) from scratch; LoRA then adapts it to
English -> Dravic.  Both languages share one lexicon and its inflections (the same word forms)
and differ only in word order, so the adaptation is what attention LoRA is for: moving words.

* Velish (base): SVO.  Articles/demonstratives/possessives agree with the noun
  (lo/la/los/las, un/una, esto/esta/..., mi/mis); the noun takes plural ``-i``; adjectives follow
  the noun and agree (``-o/-a/-os/-as``); numbers stand before the noun, tens first
  ("dua-ten tri" = 23); verbs take ``-et`` (past) / ``-an`` (present) or the auxiliary ``vor``
  (future), negation ``ne`` precedes the verb; PP and adverb follow the object.
* Dravic (adaptation): Velish's word forms in another order: SOV -- subject, object,
  postpositional phrase, adverb, then ``ne``/``vor`` and the verb last; adjectives precede the
  noun (still agreeing); numbers follow the noun, units first ("tri dua-ten" = 23); prepositions
  become postpositions.

Example pair, ``generate_pairs(language, 4, seed=0)[3]`` (run the module for more)::

    English  we do not kick our twenty four soft windows .
    Velish   nos ne vevan nors dua-ten kat bidudi zekodas .
    Dravic   nos nors zekodas bidudi kat dua-ten ne vevan .
"""
from __future__ import annotations

import random
import zlib
from dataclasses import dataclass

SOURCE_LANGUAGE = "English"
BASE_LANGUAGE = "Velish"
ADAPT_LANGUAGE = "Dravic"
LANGUAGES = (BASE_LANGUAGE, ADAPT_LANGUAGE)
SPLITS = ("train", "val")

# ----------------------------------------------------------------------------- English lexicon
_NOUNS = """dog cat bird horse cow pig goat rabbit mouse wolf fox bear lion tiger duck goose frog
snake monkey camel man woman child person boy girl teacher doctor farmer baker king queen soldier
sailor student friend brother sister mother father uncle aunt neighbour driver singer painter writer
hunter guard merchant book key cup plate bowl knife spoon fork chair table bed door window lamp box
bag hat coat shoe shirt ring coin letter map picture clock bell ball toy drum flute basket bottle
candle rope stone stick brush pen pencil boat cart wheel ladder blanket mirror river house garden
tree flower forest field hill mountain lake road bridge village city market school church tower
castle farm kitchen room wall roof fence island cave shop apple egg lemon orange pear carrot onion
potato tomato cookie pie leaf shelf foot tooth umbrella""".split()
_IRREGULAR_PLURALS = {"mouse": "mice", "wolf": "wolves", "goose": "geese", "man": "men",
                      "woman": "women", "child": "children", "person": "people", "knife": "knives",
                      "leaf": "leaves", "shelf": "shelves", "foot": "feet", "tooth": "teeth",
                      "potato": "potatoes", "tomato": "tomatoes"}
# base:past -- verbs whose past equals the base form (read, cut, ...) are left out on purpose,
# so that every English sentence has exactly one tense and therefore one translation.
_TRANSITIVE = dict(v.split(":") for v in """see:saw find:found buy:bought take:took make:made
give:gave bring:brought carry:carried catch:caught clean:cleaned close:closed cook:cooked draw:drew
drink:drank drop:dropped eat:ate fix:fixed follow:followed hear:heard help:helped hide:hid hold:held
keep:kept kick:kicked know:knew leave:left like:liked lose:lost love:loved meet:met move:moved
need:needed open:opened paint:painted pay:paid pull:pulled push:pushed sell:sold send:sent
show:showed steal:stole teach:taught throw:threw touch:touched visit:visited want:wanted
wash:washed watch:watched write:wrote build:built break:broke choose:chose feed:fed forget:forgot
remember:remembered call:called count:counted fill:filled miss:missed borrow:borrowed""".split())
_INTRANSITIVE = dict(v.split(":") for v in """sleep:slept run:ran sing:sang walk:walked wait:waited
laugh:laughed swim:swam dance:danced cry:cried sit:sat stand:stood play:played work:worked
arrive:arrived""".split())
_ADJECTIVES = """red blue green black white yellow brown grey small big tall short old young new
long heavy happy sad angry quiet loud clever brave lazy busy hungry tired strong weak rich poor kind
cruel warm cold hot dry wet proud dirty empty full soft hard round sharp bright dark strange famous
beautiful ugly cheap sweet""".split()
_ADVERBS = """quickly slowly quietly loudly happily sadly carefully suddenly easily again often
gently""".split()
_PREPOSITIONS = "near under behind with in on beside without".split()
_PRONOUNS = {"i": "yo", "you": "tu", "he": "el", "she": "ela", "we": "nos", "they": "ilos"}
_POSSESSIVES = {"my": "mi", "your": "ti", "his": "su", "her": "sa", "our": "nor", "their": "lor"}
_UNITS = "one two three four five six seven eight nine".split()
_TEENS = "ten eleven twelve thirteen fourteen fifteen sixteen seventeen eighteen nineteen".split()
_TENS = "twenty thirty forty fifty sixty seventy eighty ninety".split()

# ----------------------------------------------------------------------------- shared stems
_VEL_UNITS = "an dua tri kat pen ses sep ok nov".split()
_FUNCTION_WORDS = {"lo", "la", "los", "las", "un", "una", "vor", "ne", "zi", "zo", "ten", "kel",
                   *_VEL_UNITS, *_PRONOUNS.values(), *_POSSESSIVES.values()}


def _make_stems() -> tuple[dict[str, str], dict[str, str]]:
    """Invent one pronounceable stem per content word, plus noun genders.

    Stems end in l/r/d/v while every consonant-final suffix ends in k/t/n/m/s, so an inflected
    form can never be mistaken for another bare stem."""
    rng = random.Random(20240601)  # fixed: the lexicon never depends on the corpus seed
    stems: dict[str, str] = {}
    genders: dict[str, str] = {}
    taken = set(_FUNCTION_WORDS)
    for word in [*_NOUNS, *_TRANSITIVE, *_INTRANSITIVE, *_ADJECTIVES, *_ADVERBS, *_PREPOSITIONS]:
        stem = ""
        while not stem or stem in taken:
            syllables = rng.choice((1, 2, 2, 2))
            stem = "".join(rng.choice("bdfgklmnprstvz") + rng.choice("aeiou")
                           for _ in range(syllables)) + rng.choice("lrdv")
        taken.add(stem)
        stems[word] = stem
        if word in _NOUNS:
            genders[word] = rng.choice(("m", "f"))
    return stems, genders


_STEMS, _GENDERS = _make_stems()


# ----------------------------------------------------------------------------- sentence structure
@dataclass(frozen=True)
class _NounPhrase:
    noun: str                     # English singular noun
    plural: bool
    det: str | None = None        # "the", "a", "this", "that" or a key of _POSSESSIVES
    number: int | None = None     # 1..99
    adjectives: tuple[str, ...] = ()


@dataclass(frozen=True)
class _Clause:
    subject: _NounPhrase | str    # a noun phrase or a key of _PRONOUNS
    verb: str                     # English base form
    tense: str                    # "past" | "present" | "future"
    negated: bool = False
    obj: _NounPhrase | None = None
    preposition: str | None = None
    prep_object: _NounPhrase | None = None
    adverb: str | None = None


def _sample_noun_phrase(rng: random.Random) -> _NounPhrase:
    adjectives = tuple(rng.sample(_ADJECTIVES, rng.choices((0, 1, 2), (50, 35, 15))[0]))
    number = rng.randint(1, 99) if rng.random() < 0.2 else None
    plural = number > 1 if number else rng.random() < 0.35
    dets = ["the", "this", "that", *_POSSESSIVES]
    if number == 1:
        dets = [None]
    elif plural:
        dets.append(None)
    else:
        dets.append("a")
    return _NounPhrase(rng.choice(_NOUNS), plural, rng.choice(dets), number, adjectives)


def _sample_clause(rng: random.Random) -> _Clause:
    subject = rng.choice(list(_PRONOUNS)) if rng.random() < 0.25 else _sample_noun_phrase(rng)
    transitive = rng.random() < 0.8
    verb = rng.choice(list(_TRANSITIVE if transitive else _INTRANSITIVE))
    with_pp = rng.random() < 0.4
    return _Clause(subject, verb, rng.choice(("past", "present", "future")), rng.random() < 0.25,
                   _sample_noun_phrase(rng) if transitive else None,
                   rng.choice(_PREPOSITIONS) if with_pp else None,
                   _sample_noun_phrase(rng) if with_pp else None,
                   rng.choice(_ADVERBS) if rng.random() < 0.3 else None)


# ----------------------------------------------------------------------------- English
def _english_number(n: int) -> list[str]:
    if n < 10:
        return [_UNITS[n - 1]]
    if n < 20:
        return [_TEENS[n - 10]]
    return [_TENS[n // 10 - 2]] + ([_UNITS[n % 10 - 1]] if n % 10 else [])


def _english_plural(noun: str) -> str:
    if noun in _IRREGULAR_PLURALS:
        return _IRREGULAR_PLURALS[noun]
    if noun.endswith(("s", "x", "z", "ch", "sh")):
        return noun + "es"
    if noun.endswith("y") and noun[-2] not in "aeiou":
        return noun[:-1] + "ies"
    return noun + "s"


def _english_np(np: _NounPhrase) -> list[str]:
    words = [*(_english_number(np.number) if np.number else []), *np.adjectives,
             _english_plural(np.noun) if np.plural else np.noun]
    det = {"this": "these", "that": "those"}.get(np.det, np.det) if np.plural else np.det
    if det == "a" and words[0][0] in "aeiou":
        det = "an"
    return ([det] if det else []) + words


def _english(c: _Clause) -> list[str]:
    if isinstance(c.subject, str):
        words, third_singular = [c.subject], c.subject in ("he", "she")
    else:
        words, third_singular = _english_np(c.subject), not c.subject.plural
    verbs = {**_TRANSITIVE, **_INTRANSITIVE}
    if c.tense == "future":
        words += ["will", "not", c.verb] if c.negated else ["will", c.verb]
    elif c.negated:
        aux = "did" if c.tense == "past" else ("does" if third_singular else "do")
        words += [aux, "not", c.verb]
    elif c.tense == "past":
        words.append(verbs[c.verb])
    else:
        words.append(_english_plural(c.verb) if third_singular else c.verb)  # sees, catches, cries
    words += _english_np(c.obj) if c.obj else []
    words += [c.preposition, *_english_np(c.prep_object)] if c.preposition else []
    return words + ([c.adverb] if c.adverb else [])


# ----------------------------------------------------------------------------- Velish / Dravic
def _velish_number(n: int) -> list[str]:
    tens, units = divmod(n, 10)
    head = [] if tens == 0 else ["ten"] if tens == 1 else [f"{_VEL_UNITS[tens - 1]}-ten"]
    return head + ([_VEL_UNITS[units - 1]] if units else [])


def _velish_np(np: _NounPhrase) -> list[str]:
    agree = {("m", False): "o", ("f", False): "a", ("m", True): "os", ("f", True): "as"}
    suffix = agree[_GENDERS[np.noun], np.plural]
    det = {"the": "l" + suffix, "a": "un" if suffix == "o" else "una",
           "this": "est" + suffix, "that": "kel" + suffix, None: None}.get(np.det)
    if np.det in _POSSESSIVES:
        det = _POSSESSIVES[np.det] + ("s" if np.plural else "")
    words = [det] if det else []
    words += _velish_number(np.number) if np.number else []
    words.append(_STEMS[np.noun] + ("i" if np.plural else ""))
    return words + [_STEMS[a] + suffix for a in np.adjectives]


def _velish(c: _Clause) -> list[str]:
    words = [_PRONOUNS[c.subject]] if isinstance(c.subject, str) else _velish_np(c.subject)
    words += ["ne"] if c.negated else []
    stem = _STEMS[c.verb]
    if c.tense == "future":
        words += ["vor", stem]
    else:
        words.append(stem + ("et" if c.tense == "past" else "an"))
    words += _velish_np(c.obj) if c.obj else []
    words += [_STEMS[c.preposition], *_velish_np(c.prep_object)] if c.preposition else []
    return words + ([_STEMS[c.adverb]] if c.adverb else [])


def _dravic_np(np: _NounPhrase) -> list[str]:
    words = _velish_np(np)  # Velish word forms, Dravic order:
    count = len(_velish_number(np.number)) if np.number else 0
    head = 1 if len(words) > count + 1 + len(np.adjectives) else 0  # a determiner
    det, number = words[:head], words[head:head + count]
    noun, adjectives = words[head + count], words[head + count + 1:]
    return det + adjectives + [noun] + number[::-1]  # adjectives first, number last, units first


def _dravic(c: _Clause) -> list[str]:
    words = [_PRONOUNS[c.subject]] if isinstance(c.subject, str) else _dravic_np(c.subject)
    words += _dravic_np(c.obj) if c.obj else []
    words += [*_dravic_np(c.prep_object), _STEMS[c.preposition]] if c.preposition else []
    words += [_STEMS[c.adverb]] if c.adverb else []
    words += ["ne"] if c.negated else []
    stem = _STEMS[c.verb]
    if c.tense == "future":
        return words + ["vor", stem]
    return words + [stem + ("et" if c.tense == "past" else "an")]


_RENDERERS = {SOURCE_LANGUAGE: _english, BASE_LANGUAGE: _velish, ADAPT_LANGUAGE: _dravic}


def _render(clause: _Clause, language: str) -> str:
    return " ".join(_RENDERERS[language](clause)) + " ."


# ----------------------------------------------------------------------------- public API
def generate_pairs(language: str, count: int, seed: int,
                   split: str = "train") -> list[tuple[str, str]]:
    """Return ``count`` deterministic (english, translation) pairs for ``language`` and ``split``.

    Example::

        >>> english, velish = generate_pairs("Velish", 1, seed=0)[0]
        >>> english.endswith(" .") and velish.endswith(" .")
        True
    """
    if language not in LANGUAGES:
        raise ValueError(f"unknown language {language!r}; expected one of {LANGUAGES}")
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}; expected one of {SPLITS}")
    if not isinstance(count, int) or count < 1:
        raise ValueError(f"count must be a positive integer, got {count!r}")
    # One stream per seed, shared by both languages and both splits; a stable hash of the English
    # sentence routes it to val (1 in 10) or train, so the splits can never overlap.
    rng = random.Random(f"lora-keras-demo-corpus:{seed}")
    want_val = split == "val"
    pairs: list[tuple[str, str]] = []
    while len(pairs) < count:
        clause = _sample_clause(rng)
        english = _english(clause)
        targets = {name: _RENDERERS[name](clause) for name in LANGUAGES}
        if not 4 <= len(english) <= 14 or any(not 3 <= len(t) <= 20 for t in targets.values()):
            continue  # decided on all languages so the English side never depends on `language`
        sentence = " ".join(english) + " ."
        if (zlib.crc32(sentence.encode("utf-8")) % 10 == 0) == want_val:
            pairs.append((sentence, " ".join(targets[language]) + " ."))
    return pairs


def vocabulary_words() -> dict[str, list[str]]:
    """Return the English lexicon by category; each content word has one Velish/Dravic stem.

    Example::

        >>> len(vocabulary_words()["nouns"]) >= 120
        True
    """
    return {"nouns": list(_NOUNS), "verbs": [*_TRANSITIVE, *_INTRANSITIVE],
            "transitive_verbs": list(_TRANSITIVE), "intransitive_verbs": list(_INTRANSITIVE),
            "adjectives": list(_ADJECTIVES), "adverbs": list(_ADVERBS),
            "prepositions": list(_PREPOSITIONS), "pronouns": list(_PRONOUNS),
            "determiners": ["the", "a", "this", "that", *_POSSESSIVES],
            "numbers": [" ".join(_english_number(n)) for n in range(1, 100)]}


if __name__ == "__main__":
    for lang in LANGUAGES:
        for en, tgt in generate_pairs(lang, 5, seed=0):
            print(f"EN  {en}\n{lang[:3].upper()} {tgt}\n")
