"""Offline, deterministic English -> invented-language parallel corpora for the LoRA demo.

A small T5 learns seven languages (the base languages) from scratch; LoRA then adapts it to an
eighth, Dravic. All share one lexicon of invented stems and differ in eight features of word
order, agreement and affixes (`Grammar`): verb-final order, adjectives before the noun,
postpositions, numbers after the noun (units first), plural ``-en``, tense ``-uk``/``-is``,
invariant adjectives in ``-e``, and the particles ``do/da/dos/das`` (the), ``nai`` (not), ``sal``
(will). Each base language has at most three of them; Dravic has all eight, a combination the
base never saw, so the adaptation is a pretrained model meeting a new language pair: it knows
every piece and must learn to put them together.

* Velish (no feature): SVO.  Articles/demonstratives/possessives agree with the noun
  (lo/la/los/las, un/una, esto/esta/..., mi/mis); the noun takes plural ``-i``; adjectives follow
  the noun and agree (``-o/-a/-os/-as``); numbers stand before the noun, tens first
  ("dua-ten tri" = 23); verbs take ``-et`` (past) / ``-an`` (present) or the auxiliary ``vor``
  (future), negation ``ne`` precedes the verb; PP and adverb follow the object.
* Dravic (every feature): subject, object, postpositional phrase, adverb, then ``nai``/``sal``
  and the verb last; invariant adjectives before the noun; numbers after it, units first.

Example pair, ``generate_pairs(language, 4, seed=0)[3]`` (run the module for more)::

    English  we do not kick our twenty four soft windows .
    Velish   nos ne vevan nors dua-ten kat bidudi zekodas .
    Korvan   nos nors zekodas dua-ten kat bidudi ne vevan .
    Dravic   nos nors zekode biduden kat dua-ten nai vevis .
"""
from __future__ import annotations

import dataclasses
import functools
import random
import zlib
from dataclasses import dataclass

SOURCE_LANGUAGE = "English"
BASE_LANGUAGES = ("Velish", "Korvan", "Mirese", "Tolani", "Zerish", "Pavesh", "Ostran")  # the base learns these
ADAPT_LANGUAGE = "Dravic"  # LoRA adapts the base to this one
LANGUAGES = (*BASE_LANGUAGES, ADAPT_LANGUAGE)
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
_FUNCTION_WORDS = {"lo", "la", "los", "las", "do", "da", "dos", "das", "un", "una", "vor", "ne",
                   "nai", "sal", "zi", "zo", "ten", "kel",
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


# ----------------------------------------------------------------------------- the invented languages
@dataclass(frozen=True)
class Grammar:
    """The features that tell the invented languages apart; all share one lexicon of stems.

    Each flag, when set, changes one thing against Velish (where every flag is off).
    """

    verb_final: bool = False          # SOV: ``ne``/``vor`` and the verb after object, PP, adverb
    adjective_first: bool = False     # adjectives before the noun
    postpositions: bool = False       # the adposition after its noun phrase
    number_after: bool = False        # numbers after the noun, units first ("tri dua-ten" = 23)
    plural_en: bool = False           # plural nouns in ``-en`` (else ``-i``)
    tense_uk_is: bool = False         # past ``-uk``, present ``-is`` (else ``-et``, ``-an``)
    adjective_invariant: bool = False  # adjectives end in ``-e`` (else they agree: ``-o/-a/-os/-as``)
    particles_b: bool = False         # articles ``di/de/dis/des``, ``nai`` (not), ``sal`` (will)

    def features(self) -> tuple[str, ...]:
        """The names of the flags that are set."""
        return tuple(f.name for f in dataclasses.fields(self) if getattr(self, f.name))


# The base learns these; the adaptation language sets every flag, a combination none of them has.
# Each base language has at most three flags, so it differs from Dravic in five or more: its
# sentences score under 10 BLEU against Dravic's (tests/test_demo_corpus.py).
GRAMMARS = {
    "Velish": Grammar(),
    "Korvan": Grammar(verb_final=True, adjective_first=True),
    "Mirese": Grammar(adjective_invariant=True, particles_b=True, plural_en=True),
    "Tolani": Grammar(adjective_first=True, plural_en=True, tense_uk_is=True),
    "Zerish": Grammar(adjective_first=True, number_after=True, particles_b=True),
    "Pavesh": Grammar(adjective_invariant=True, postpositions=True, tense_uk_is=True),
    "Ostran": Grammar(verb_final=True, number_after=True),
    "Dravic": Grammar(*[True] * 8),
}


def _number(n: int, grammar: Grammar) -> list[str]:
    tens, units = divmod(n, 10)
    head = [] if tens == 0 else ["ten"] if tens == 1 else [f"{_VEL_UNITS[tens - 1]}-ten"]
    words = head + ([_VEL_UNITS[units - 1]] if units else [])
    return words[::-1] if grammar.number_after else words


def _noun_phrase(np: _NounPhrase, g: Grammar) -> list[str]:
    agree = {("m", False): "o", ("f", False): "a", ("m", True): "os", ("f", True): "as"}
    suffix = agree[_GENDERS[np.noun], np.plural]
    det = {"the": ("d" if g.particles_b else "l") + suffix, "a": "un" if suffix == "o" else "una",
           "this": "est" + suffix, "that": "kel" + suffix, None: None}.get(np.det)
    if np.det in _POSSESSIVES:
        det = _POSSESSIVES[np.det] + ("s" if np.plural else "")
    noun = _STEMS[np.noun] + (("en" if g.plural_en else "i") if np.plural else "")
    adjectives = [_STEMS[a] + ("e" if g.adjective_invariant else suffix) for a in np.adjectives]
    number = _number(np.number, g) if np.number else []
    words = [det] if det else []
    words += adjectives if g.adjective_first else []
    words += [] if g.number_after else number
    words.append(noun)
    words += [] if g.adjective_first else adjectives
    return words + (number if g.number_after else [])


def _translate(c: _Clause, g: Grammar) -> list[str]:
    subject = [_PRONOUNS[c.subject]] if isinstance(c.subject, str) else _noun_phrase(c.subject, g)
    stem = _STEMS[c.verb]
    past, present = ("uk", "is") if g.tense_uk_is else ("et", "an")
    not_, will = ("nai", "sal") if g.particles_b else ("ne", "vor")
    verb = [not_] if c.negated else []
    verb += [will, stem] if c.tense == "future" else [stem + (past if c.tense == "past" else present)]
    rest = _noun_phrase(c.obj, g) if c.obj else []
    if c.preposition:
        phrase = _noun_phrase(c.prep_object, g)
        adposition = [_STEMS[c.preposition]]
        rest += phrase + adposition if g.postpositions else adposition + phrase
    rest += [_STEMS[c.adverb]] if c.adverb else []
    return subject + rest + verb if g.verb_final else subject + verb + rest


_RENDERERS = {SOURCE_LANGUAGE: _english,
              **{name: functools.partial(_translate, g=grammar) for name, grammar in GRAMMARS.items()}}


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
