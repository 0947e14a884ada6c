"""`BaseModel.build_model` as keras-hub's task: `fit`/`evaluate` on text give the study's loss, `generate` is
`translate`."""

import keras
import numpy as np
import pytest
from conftest import TINY_PREFIX

from lora_keras.adapters import LoraConfig, add_lora
from lora_keras.data.pipeline import make_dataset, tokenize_pairs
from lora_keras.evaluation import SpellablePreprocessor, translate
from lora_keras.models.base import BaseModel
from lora_keras.models.demo import corpus as demo_corpus
from lora_keras.models.sources import load_base, load_preset
from lora_keras.models.token_loss import PairLosses

# Short lengths, so that some pairs are cut: text is cut where `tokenize_pairs` cuts it.
SOURCE_LENGTH, TARGET_LENGTH = 16, 12
PAIRS = demo_corpus.generate_pairs("Dravic", 20, seed=3, split="val") + [
    ("the old hunter will swim with her yellow driver and my friends near their heavy farmers .",
     "el sa solare boter foded sal vabil mis batoden sa fadav nai memivis lor zupiv kelos ."),
]


def as_text(pairs):
    """`pairs` as keras-hub's `Seq2SeqLM` takes them: the prefixed sources and the targets."""
    return {"encoder_text": [TINY_PREFIX + source for source, _ in pairs], "decoder_text": [t for _, t in pairs]}


def study_val_loss(model, tokens):
    """The val loss as the sweep computes it: summed NLL over real target tokens (`PairLosses`), and `evaluate`."""
    nll, counts = PairLosses(model).of(tokens)
    return nll.sum() / counts.sum(), model.evaluate(make_dataset(tokens, 64), verbose=0)


def adapted(base, seed=0):
    """The base's backbone with LoRA on q and v, B drawn at random: a model other than the base."""
    backbone = base.build_backbone()
    rng = np.random.default_rng(seed)
    for layer in add_lora(backbone, LoraConfig(rank=4, targets=("q", "v")), seed=seed).values():
        layer.lora_b.assign(rng.normal(0, 0.05, layer.lora_b.shape).astype("float32"))
    return backbone


@pytest.fixture(scope="module")
def base(tiny_preset):
    return load_preset(tiny_preset)


def test_fit_and_evaluate_on_text_give_the_study_s_loss_per_real_target_token(base):
    backbone = base.build_backbone()
    add_lora(backbone, LoraConfig(rank=4, targets=("q", "v")), seed=0)
    model = base.build_model(backbone, max_source_length=SOURCE_LENGTH, max_target_length=TARGET_LENGTH)
    model.compile(optimizer=keras.optimizers.Adam(1e-2))
    history = model.fit(x=as_text(PAIRS), batch_size=8, epochs=2, verbose=0)
    assert history.history["loss"][1] < history.history["loss"][0]  # it trained on the text
    tokens = tokenize_pairs(base.tokenizer, PAIRS, TINY_PREFIX, SOURCE_LENGTH, TARGET_LENGTH)
    assert tokens.target_ids.shape[1] == TARGET_LENGTH and tokens.source_ids.shape[1] == SOURCE_LENGTH  # some cut
    pair_losses, evaluated = study_val_loss(model, tokens)
    assert evaluated == pytest.approx(pair_losses, rel=1e-5)
    for batch_size in (8, 32):
        from_text = model.evaluate(x=as_text(PAIRS), batch_size=batch_size, verbose=0)
        assert from_text == pytest.approx(pair_losses, rel=1e-4)


def test_token_batches_pass_the_preprocessor_by(base, monkeypatch):
    """The sweep's batches (`make_dataset`) are not preprocessed: text is, and fails here."""

    def refuse(self, *args, **kwargs):
        raise AssertionError("the preprocessor ran")

    monkeypatch.setattr(SpellablePreprocessor, "call", refuse)
    model = base.build_model()
    model.compile(optimizer=keras.optimizers.Adam(0.0))
    tokens = tokenize_pairs(base.tokenizer, PAIRS[:6], TINY_PREFIX)
    model.fit(make_dataset(tokens, 4), validation_data=make_dataset(tokens, 4), verbose=0)
    assert model.evaluate(make_dataset(tokens, 4), verbose=0) > 0
    with pytest.raises(AssertionError, match="the preprocessor ran"):
        model.evaluate(x=as_text(PAIRS[:6]), batch_size=4, verbose=0)


def test_generate_decodes_translate_s_greedy_output():
    """On the demo base (trained, so its translations differ), adapted."""
    base = load_base("tiny", verbose=0)
    backbone = adapted(base)
    sources = as_text(PAIRS[:5])["encoder_text"]
    model = base.build_model(backbone, max_source_length=SOURCE_LENGTH, max_target_length=TARGET_LENGTH)
    model.compile(optimizer=keras.optimizers.Adam(3e-3))  # greedy, not keras-hub's top_k
    expected = translate(backbone, base.tokenizer, sources, SOURCE_LENGTH, max_new_tokens=TARGET_LENGTH)
    assert len(set(expected)) == len(sources)
    assert [str(text).strip() for text in model.generate(sources)] == expected
    assert str(model.generate(sources[1])).strip() == expected[1]  # one string in, one string out


def test_a_hugging_face_base_with_rows_past_its_pieces(hf_t5_wide):
    """FLAN-like: `generate` drops ids past the tokenizer's pieces as `translate` does; the loss is the study's."""
    directory, _ = hf_t5_wide
    base = load_base(str(directory))
    model = base.build_model(max_source_length=SOURCE_LENGTH, max_target_length=TARGET_LENGTH)
    sources = as_text(PAIRS[:4])["encoder_text"]
    expected = translate(base.build_backbone(), base.tokenizer, sources, SOURCE_LENGTH, max_new_tokens=TARGET_LENGTH)
    assert [str(text).strip() for text in model.generate(sources)] == expected
    tokens = tokenize_pairs(base.tokenizer, PAIRS, TINY_PREFIX, SOURCE_LENGTH, TARGET_LENGTH)
    pair_losses, _ = study_val_loss(model, tokens)
    assert model.evaluate(x=as_text(PAIRS), batch_size=8, verbose=0) == pytest.approx(pair_losses, rel=1e-4)
