"""Tests for the offline English -> Velish / Dravic demo corpus."""
import doctest

import pytest

from lora_keras.models.demo import corpus as demo_corpus
from lora_keras.models.demo.corpus import (ADAPT_LANGUAGE, BASE_LANGUAGE, LANGUAGES, generate_pairs,
                                    vocabulary_words)
from lora_keras.models.demo.corpus import _Clause, _NounPhrase, _render, _GENDERS, _STEMS

S = _STEMS  # English word -> shared Velish/Dravic stem


@pytest.fixture(scope="module")
def corpora():
    return {lang: generate_pairs(lang, 5000, seed=0) for lang in LANGUAGES}


def _noun(gender):
    """A noun of the given gender with a plain English "-s" plural."""
    return next(n for n in vocabulary_words()["nouns"] if _GENDERS[n] == gender
                and demo_corpus._english_plural(n) == n + "s")


def test_languages_and_docstring_example():
    assert LANGUAGES == ("Velish", "Dravic") == (BASE_LANGUAGE, ADAPT_LANGUAGE)
    example = "we do not kick our twenty four soft windows ."
    assert generate_pairs("Velish", 4, seed=0)[3] == (
        example, "nos ne vevan nors dua-ten kat bidudi zekodas .")
    assert generate_pairs("Dravic", 4, seed=0)[3] == (
        example, "nos nors zekodas bidudi kat dua-ten ne vevan .")
    assert doctest.testmod(demo_corpus).failed == 0


def test_deterministic_and_seed_dependent():
    a = generate_pairs("Velish", 300, seed=7)
    assert a == generate_pairs("Velish", 300, seed=7)
    assert generate_pairs("Velish", 100, seed=7) == a[:100]  # count only truncates
    b = generate_pairs("Velish", 300, seed=8)
    assert len({e for e, _ in a} & {e for e, _ in b}) < 10


@pytest.mark.parametrize("split", ["train", "val"])
def test_english_side_identical_across_languages(split):
    velish = generate_pairs("Velish", 500, seed=3, split=split)
    dravic = generate_pairs("Dravic", 500, seed=3, split=split)
    assert [e for e, _ in velish] == [e for e, _ in dravic]
    assert [t for _, t in velish] != [t for _, t in dravic]


def test_val_and_train_are_disjoint():
    train = {e for e, _ in generate_pairs("Dravic", 3000, seed=0, split="train")}
    val = {e for e, _ in generate_pairs("Dravic", 400, seed=0, split="val")}
    assert len(val) > 390 and len(train) > 2900
    assert not train & val


def test_constructed_transitive_clause():
    masc, fem = _noun("m"), _noun("f")
    river_article = "lo" if _GENDERS["river"] == "m" else "la"
    clause = _Clause(
        subject=_NounPhrase(masc, plural=False, det="the", adjectives=("red",)),
        verb="see", tense="past",
        obj=_NounPhrase(fem, plural=True, det="my", number=23, adjectives=("small", "old")),
        preposition="near", prep_object=_NounPhrase("river", plural=False, det="the"),
        adverb="quickly")
    assert _render(clause, "English") == (
        f"the red {masc} saw my twenty three small old {fem}s near the river quickly .")
    # Velish: SVO, adjectives after the noun agreeing in gender/number, number before the noun.
    assert _render(clause, "Velish") == (
        f"lo {S[masc]} {S['red']}o {S['see']}et mis dua-ten tri {S[fem]}i {S['small']}as "
        f"{S['old']}as {S['near']} {river_article} {S['river']} {S['quickly']} .")
    # Dravic: the same word forms; SOV, adjectives before the noun, units-first number after
    # the noun, postposition, verb last.
    assert _render(clause, "Dravic") == (
        f"lo {S['red']}o {S[masc]} mis {S['small']}as {S['old']}as {S[fem]}i tri dua-ten "
        f"{river_article} {S['river']} {S['near']} {S['quickly']} {S['see']}et .")


def test_constructed_tense_negation_and_determiners():
    fem = _noun("f")
    she = _Clause("she", "sleep", "future", negated=True)
    assert _render(she, "English") == "she will not sleep ."
    assert _render(she, "Velish") == f"ela ne vor {S['sleep']} ."
    assert _render(she, "Dravic") == f"ela ne vor {S['sleep']} ."

    these = _NounPhrase(fem, plural=True, det="this", adjectives=("big",))
    present = _Clause(these, "watch", "present", obj=_NounPhrase("apple", plural=False, det="a"))
    assert _render(present, "English") == f"these big {fem}s watch an apple ."
    apple_article = "un" if _GENDERS["apple"] == "m" else "una"
    assert _render(present, "Velish") == (
        f"estas {S[fem]}i {S['big']}as {S['watch']}an {apple_article} {S['apple']} .")
    assert _render(present, "Dravic") == (
        f"estas {S['big']}as {S[fem]}i {apple_article} {S['apple']} {S['watch']}an .")

    one = _NounPhrase("dog", plural=False, number=1)
    negated = _Clause(one, "watch", "present", negated=True, obj=_NounPhrase("key", True, "their"))
    assert _render(negated, "English") == "one dog does not watch their keys ."
    assert _render(negated, "Velish") == f"an {S['dog']} ne {S['watch']}an lors {S['key']}i ."
    assert _render(negated, "Dravic") == f"{S['dog']} an lors {S['key']}i ne {S['watch']}an ."


def test_generated_word_order_and_agreement(corpora):
    stem_to_noun = {S[n]: n for n in vocabulary_words()["nouns"]}
    adj_stems = {S[a] for a in vocabulary_words()["adjectives"]}
    suffix = {("m", False): "o", ("f", False): "a", ("m", True): "os", ("f", True): "as"}
    checked = 0
    for _, velish in corpora["Velish"]:
        words = velish.split()
        for prev, word in zip(words, words[1:]):
            stem = word.rstrip("oas")
            if stem in adj_stems and word in {stem + s for s in suffix.values()}:
                noun_stem = prev.removesuffix("i")
                if noun_stem in stem_to_noun:  # adjective directly after its noun: must agree
                    gender = _GENDERS[stem_to_noun[noun_stem]]
                    assert word == stem + suffix[gender, prev != noun_stem], velish
                    checked += 1
                else:  # otherwise it follows another (agreeing) adjective
                    assert prev.rstrip("oas") in adj_stems, velish
    assert checked > 1000

    verb_stems = {S[v] for v in vocabulary_words()["verbs"]}
    verb_forms = {v + t for v in verb_stems for t in ("et", "an", "")}
    velish_adjectives = {a + s for a in adj_stems for s in suffix.values()}
    for (english, velish), (_, dravic) in zip(corpora["Velish"], corpora["Dravic"]):
        words = dravic.split()
        assert sorted(words) == sorted(velish.split()), (velish, dravic)  # same forms, reordered
        assert words[-1] == "." and words[-2] in verb_forms, dravic  # verb last
        assert ("ne" in words) == (" not " in english), (english, dravic)
        for word, nxt in zip(words, words[1:]):
            if word in velish_adjectives:  # adjectives precede the noun (or another adjective)
                assert nxt in velish_adjectives or nxt.removesuffix("i") in stem_to_noun, dravic


def test_lexicon_and_corpus_size(corpora):
    vocab = vocabulary_words()
    assert len(vocab["nouns"]) >= 120 and len(vocab["verbs"]) >= 50
    assert len(vocab["adjectives"]) >= 40
    content = [w for cat in ("nouns", "verbs", "adjectives", "adverbs", "prepositions")
               for w in vocab[cat]]
    assert len({S[w] for w in content}) == len(content)  # one distinct stem per word
    assert set(_GENDERS.values()) == {"m", "f"}
    for lang, pairs in corpora.items():
        english = [e for e, _ in pairs]
        assert len(set(english)) > 0.95 * len(english)
        assert len({w for _, t in pairs for w in t.split()}) > 300, lang
        for e, t in pairs:
            assert 4 <= len(e.split()) - 1 <= 14 and 3 <= len(t.split()) - 1 <= 20, (e, t)
            assert e == e.lower() and e.endswith(" .") and t.endswith(" .")


@pytest.mark.parametrize("kwargs, bad", [
    (dict(language="Klingon", count=5, seed=0), "Klingon"),
    (dict(language="English", count=5, seed=0), "English"),
    (dict(language="Velish", count=5, seed=0, split="test"), "test"),
    (dict(language="Dravic", count=0, seed=0), "0"),
    (dict(language="Dravic", count=-3, seed=0), "-3"),
])
def test_bad_arguments(kwargs, bad):
    with pytest.raises(ValueError, match=bad):
        generate_pairs(**kwargs)
