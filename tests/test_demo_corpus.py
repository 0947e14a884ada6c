"""Tests for the offline demo corpora: seven base languages and Dravic, built from shared features."""
import doctest

import pytest

from lora_keras.models.demo import corpus as demo_corpus
import dataclasses

import sacrebleu

from lora_keras.models.demo.corpus import (ADAPT_LANGUAGE, BASE_LANGUAGES, GRAMMARS, LANGUAGES, Grammar,
                                           generate_pairs, vocabulary_words)
from lora_keras.models.demo.corpus import _Clause, _NounPhrase, _render, _GENDERS, _STEMS

S = _STEMS  # English word -> the stem every invented language shares


@pytest.fixture(scope="module")
def corpora():
    return {lang: generate_pairs(lang, 5000, seed=0) for lang in ("Velish", "Korvan", ADAPT_LANGUAGE)}


def _noun(gender):
    """A noun of the given gender with a plain English "-s" plural."""
    return next(n for n in vocabulary_words()["nouns"] if _GENDERS[n] == gender
                and demo_corpus._english_plural(n) == n + "s")


def test_languages_and_docstring_example():
    assert LANGUAGES == (*BASE_LANGUAGES, ADAPT_LANGUAGE) and len(BASE_LANGUAGES) == 7
    example = "we do not kick our twenty four soft windows ."
    assert generate_pairs("Velish", 4, seed=0)[3] == (
        example, "nos ne vevan nors dua-ten kat bidudi zekodas .")
    assert generate_pairs("Korvan", 4, seed=0)[3] == (
        example, "nos nors zekodas dua-ten kat bidudi ne vevan .")
    assert generate_pairs("Dravic", 4, seed=0)[3] == (
        example, "nos nors zekode biduden kat dua-ten nai vevis .")
    assert doctest.testmod(demo_corpus).failed == 0


def test_dravic_is_a_new_combination_of_features_the_base_languages_have():
    features = [field.name for field in dataclasses.fields(Grammar)]
    dravic = set(GRAMMARS[ADAPT_LANGUAGE].features())
    assert dravic == set(features)
    seen = [set(GRAMMARS[language].features()) for language in BASE_LANGUAGES]
    assert set().union(*seen) == dravic  # every piece of Dravic is in some base language
    assert all(len(dravic - mine) >= 5 for mine in seen)  # none is close to it
    assert len({frozenset(mine) for mine in seen}) == len(seen)


def test_base_languages_score_low_against_dravic_and_differ_from_each_other():
    """What a base that ignores the unknown language name, and writes a language it knows, would score."""
    dravic = [t for _, t in generate_pairs(ADAPT_LANGUAGE, 300, seed=0, split="val")]
    bleu = {}
    for language in BASE_LANGUAGES:
        hypotheses = [t for _, t in generate_pairs(language, 300, seed=0, split="val")]
        bleu[language] = sacrebleu.corpus_bleu(hypotheses, [dravic], force=True).score
    assert max(bleu.values()) < 10 and min(bleu.values()) < 3, bleu
    assert sacrebleu.corpus_bleu(dravic, [dravic], force=True).score == pytest.approx(100)


@pytest.mark.parametrize("feature, velish, changed", [
    ("verb_final", "el {see}et lo {dog} .", "el lo {dog} {see}et ."),
    ("adjective_first", "lo {dog} {red}o {see}an .", "lo {red}o {dog} {see}an ."),
    ("postpositions", "el {walk}et {near} lo {dog} .", "el {walk}et lo {dog} {near} ."),
    ("number_after", "dua-ten tri {dog}i {walk}et .", "{dog}i tri dua-ten {walk}et ."),
    ("plural_en", "los {dog}i {walk}et .", "los {dog}en {walk}et ."),
    ("tense_uk_is", "el {walk}et . el {walk}an .", "el {walk}uk . el {walk}is ."),
    ("adjective_invariant", "lo {dog} {red}o {see}an .", "lo {dog} {red}e {see}an ."),
    ("particles_b", "lo {dog} ne vor {walk} .", "do {dog} nai sal {walk} ."),
])
def test_each_feature_changes_what_it_says(feature, velish, changed):
    dog = _noun("m")  # a masculine noun, whatever its English word
    the_dog = _NounPhrase(dog, plural=False, det="the")
    clauses = {
        "verb_final": [_Clause("he", "see", "past", obj=the_dog)],
        "adjective_first": [_Clause(_NounPhrase(dog, False, "the", adjectives=("red",)), "see", "present")],
        "postpositions": [_Clause("he", "walk", "past", preposition="near", prep_object=the_dog)],
        "number_after": [_Clause(_NounPhrase(dog, True, None, number=23), "walk", "past")],
        "plural_en": [_Clause(_NounPhrase(dog, True, "the"), "walk", "past")],
        "tense_uk_is": [_Clause("he", "walk", "past"), _Clause("he", "walk", "present")],
        "adjective_invariant": [_Clause(_NounPhrase(dog, False, "the", adjectives=("red",)), "see", "present")],
        "particles_b": [_Clause(the_dog, "walk", "future", negated=True)],
    }[feature]
    grammar = Grammar(**{feature: True})
    text = " ".join(" ".join(demo_corpus._translate(c, grammar)) + " ." for c in clauses)
    stems = {"dog": S[dog], **{w: S[w] for w in ("see", "walk", "near", "red")}}
    assert " ".join(_render(c, "Velish") for c in clauses) == velish.format(**stems)
    assert text == changed.format(**stems)


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
    # Dravic: SOV, invariant adjectives before the noun, units-first number after the noun,
    # plural -en, postposition, past -uk and the verb last, article d-.
    river_article = "d" + river_article[1:]
    assert _render(clause, "Dravic") == (
        f"do {S['red']}e {S[masc]} mis {S['small']}e {S['old']}e {S[fem]}en tri dua-ten "
        f"{river_article} {S['river']} {S['near']} {S['quickly']} {S['see']}uk .")


def test_constructed_tense_negation_and_determiners():
    fem = _noun("f")
    she = _Clause("she", "sleep", "future", negated=True)
    assert _render(she, "English") == "she will not sleep ."
    assert _render(she, "Velish") == f"ela ne vor {S['sleep']} ."
    assert _render(she, "Dravic") == f"ela nai sal {S['sleep']} ."

    these = _NounPhrase(fem, plural=True, det="this", adjectives=("big",))
    present = _Clause(these, "watch", "present", obj=_NounPhrase("apple", plural=False, det="a"))
    assert _render(present, "English") == f"these big {fem}s watch an apple ."
    apple_article = "un" if _GENDERS["apple"] == "m" else "una"
    assert _render(present, "Velish") == (
        f"estas {S[fem]}i {S['big']}as {S['watch']}an {apple_article} {S['apple']} .")
    assert _render(present, "Dravic") == (
        f"estas {S['big']}e {S[fem]}en {apple_article} {S['apple']} {S['watch']}is .")

    one = _NounPhrase("dog", plural=False, number=1)
    negated = _Clause(one, "watch", "present", negated=True, obj=_NounPhrase("key", True, "their"))
    assert _render(negated, "English") == "one dog does not watch their keys ."
    assert _render(negated, "Velish") == f"an {S['dog']} ne {S['watch']}an lors {S['key']}i ."
    assert _render(negated, "Dravic") == f"{S['dog']} an lors {S['key']}en nai {S['watch']}is ."


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
    verb_forms = {v + t for v in verb_stems for t in ("uk", "is", "")}
    dravic_adjectives = {a + "e" for a in adj_stems}
    for (english, velish), (_, dravic), (_, korvan) in zip(corpora["Velish"], corpora["Dravic"], corpora["Korvan"]):
        words = dravic.split()
        assert len(words) == len(velish.split()) == len(korvan.split())  # the same words, other forms
        assert words[-1] == "." and words[-2] in verb_forms, dravic  # verb last
        assert korvan.split()[-2].removesuffix("et").removesuffix("an") in verb_stems, korvan
        assert ("nai" in words) == (" not " in english), (english, dravic)
        assert ("sal" in words) == (" will " in f" {english}"), (english, dravic)
        for word, nxt in zip(words, words[1:]):
            if word in dravic_adjectives:  # adjectives precede the noun (or another adjective)
                assert nxt in dravic_adjectives or nxt.removesuffix("en") in stem_to_noun, dravic


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
