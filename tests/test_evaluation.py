"""Translation scores equal sacrebleu's, and batched decoding returns one line per input."""

import pytest
import sacrebleu

from lora_keras.evaluation import translate, translation_scores
from lora_keras.models import load_preset

HYPOTHESES = ["the cat sat on the mat .", "a dog runs in the park ."]
REFERENCES = ["the cat sat on the mat .", "the dog runs in a park ."]


def test_scores_equal_sacrebleu():
    scores = translation_scores(HYPOTHESES, REFERENCES)
    assert scores["bleu"] == sacrebleu.corpus_bleu(HYPOTHESES, [REFERENCES]).score
    assert scores["chrf"] == sacrebleu.corpus_chrf(HYPOTHESES, [REFERENCES]).score
    assert translation_scores(REFERENCES, REFERENCES)["bleu"] == pytest.approx(100.0)


def test_translate_batches_in_order(tiny_preset):
    base = load_preset(tiny_preset)
    sources = [f"translate English to Dravic: the {n} dogs run ." for n in ("two", "three", "four")]
    translations = translate(base.build_backbone(), base.tokenizer, sources, max_new_tokens=8, batch_size=2)
    assert len(translations) == 3 and all(isinstance(t, str) for t in translations)
    alone = translate(base.build_backbone(), base.tokenizer, sources[2:], max_new_tokens=8)
    assert translations[2] == alone[0]  # batching does not change a translation
