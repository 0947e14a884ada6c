"""Translation scores equal sacrebleu's, and batched decoding returns one line per input."""

import keras_hub
import numpy as np
import pytest
import sacrebleu

from lora_keras.evaluation import MergedTranslator, Translator, translate, translation_scores
from lora_keras.lora import LoraConfig, adapted_layers, add_lora
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


def test_xla_translator_pads_the_last_batch_and_decodes_as_the_plain_one(tiny_preset):
    base = load_preset(tiny_preset)
    sources = [f"translate English to Dravic: the {n} dogs run ." for n in ("two", "three", "four")]
    plain = translate(base.build_backbone(), base.tokenizer, sources, max_new_tokens=8, batch_size=2)
    compiled = Translator(base.build_backbone(), base.tokenizer, max_new_tokens=8, jit_compile=True)
    assert compiled(sources, batch_size=2) == plain  # the padded copy of "four" is dropped
    assert compiled(sources[:1], batch_size=2) == plain[:1]


def test_translator_packs_each_batch_of_sources_once(tiny_preset, monkeypatch):
    packed = []
    pack = keras_hub.models.T5Seq2SeqLMPreprocessor.generate_preprocess

    def counted(self, x, **kwargs):
        packed.append(list(x))
        return pack(self, x, **kwargs)

    monkeypatch.setattr(keras_hub.models.T5Seq2SeqLMPreprocessor, "generate_preprocess", counted)
    base = load_preset(tiny_preset)
    sources = [f"translate English to Dravic: the {n} dogs run ." for n in ("two", "three", "four")]
    translator = Translator(base.build_backbone(), base.tokenizer, max_new_tokens=8)
    first = translator(sources, batch_size=2)
    assert packed == [sources[:2], sources[2:]]
    assert translator(sources, batch_size=2) == first  # a sweep's next trial: nothing packed again
    assert len(packed) == 2
    translator(sources[1:], batch_size=2)  # new batches are packed
    assert packed[2:] == [sources[1:]]


def test_merged_translator_decodes_every_lora_config_with_one_trace(tiny_preset):
    base = load_preset(tiny_preset)
    sources = [f"translate English to Dravic: the {n} dogs run ." for n in ("two", "three", "four")]
    unadapted = translate(base.build_backbone(), base.tokenizer, sources, max_new_tokens=8)
    merged = MergedTranslator(base.tokenizer, max_new_tokens=8)
    assert merged(base.build_backbone(), sources) == unadapted
    translator = merged._translator
    rng = np.random.default_rng(0)
    for rank, targets in ((1, ("q", "v")), (4, ("q", "k", "v", "o"))):
        backbone = base.build_backbone()
        add_lora(backbone, LoraConfig(rank, targets=targets), seed=0)
        for dense in adapted_layers(backbone).values():  # as if trained
            dense.lora_kernel_b.assign(rng.normal(0, 3.0, dense.lora_kernel_b.shape).astype("float32"))
        adapted = translate(backbone, base.tokenizer, sources, max_new_tokens=8)
        assert adapted != unadapted  # the adapters change the translations ...
        assert merged(backbone, sources) == adapted  # ... and the merged copy decodes them exactly
        assert merged._translator is translator  # with the generate traced for the first model
