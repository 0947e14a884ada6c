"""Translation scores equal sacrebleu's, batched decoding returns one line per input, and greedy and
beam search decode the ids transformers decodes."""

import shutil

import keras_hub
import numpy as np
import pytest
import sacrebleu
from conftest import TINY_PREFIX, require
from hf_models import cut_at_eos

from lora_keras.models.demo import corpus as demo_corpus
from lora_keras import evaluation
from lora_keras.data.pipeline import EOS_ID
from lora_keras.evaluation import MergedTranslator, Translator, translate, translation_scores
from lora_keras.adapters import LoraConfig, add_lora
from lora_keras.models.sources import load_base, load_preset

HYPOTHESES = ["the cat sat on the mat .", "a dog runs in the park ."]
REFERENCES = ["the cat sat on the mat .", "the dog runs in a park ."]


def test_scores_equal_sacrebleu():
    scores = translation_scores(HYPOTHESES, REFERENCES)
    assert scores["bleu"] == sacrebleu.corpus_bleu(HYPOTHESES, [REFERENCES]).score
    assert scores["chrf"] == sacrebleu.corpus_chrf(HYPOTHESES, [REFERENCES]).score
    assert translation_scores(REFERENCES, REFERENCES)["bleu"] == pytest.approx(100.0)


DOGS = [f"translate English to Dravic: the {n} dogs run ." for n in ("two", "three", "four")]


@pytest.fixture(scope="module")
def plain_dogs(tiny_preset):
    """The unadapted tiny base and its plain (not XLA) translations of `DOGS` in batches of 2."""
    base = load_preset(tiny_preset)
    return base, translate(base.build_backbone(), base.tokenizer, DOGS, max_new_tokens=8, batch_size=2)


def test_translate_batches_in_order(plain_dogs):
    base, translations = plain_dogs
    assert len(translations) == 3 and all(isinstance(t, str) for t in translations)
    alone = translate(base.build_backbone(), base.tokenizer, DOGS[2:], max_new_tokens=8)
    assert translations[2] == alone[0]  # batching does not change a translation


def test_xla_translator_pads_the_last_batch_and_decodes_as_the_plain_one(plain_dogs):
    base, plain = plain_dogs
    sources = DOGS
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
    spare = base.take_layout()  # the backbone the loader built: decoded with, not copied
    assert base.layout is None
    merged.adopt(spare)
    assert merged(base.build_backbone(), sources) == unadapted
    translator = merged._translator
    assert translator.backbone is spare
    rng = np.random.default_rng(0)
    for rank, targets in ((1, ("q", "v")), (4, ("q", "k", "v", "o"))):
        backbone = base.build_backbone()
        for layer in add_lora(backbone, LoraConfig(rank, targets=targets), seed=0).values():  # as if trained
            layer.lora_b.assign(rng.normal(0, 3.0, layer.lora_b.shape).astype("float32"))
        adapted = translate(backbone, base.tokenizer, sources, max_new_tokens=8)
        assert adapted != unadapted  # the adapters change the translations ...
        assert merged(backbone, sources) == adapted  # ... and the merged copy decodes them as the adapters do
        assert merged._translator is translator  # with the generate traced for the first model


# --- Beam search against transformers, on a tiny random FLAN-like checkpoint whose EOS row of
# lm_head is scaled up, so that beams end (and greedy and beam search part) within a few tokens.

# Seed 6: sentences on which a beam result depends on the batch (asserted below; most seeds have none).
BEAM_SOURCES = [TINY_PREFIX + source for source, _ in demo_corpus.generate_pairs("Dravic", 8, seed=6, split="val")]
BEAM_NEW_TOKENS = 8


@pytest.fixture(scope="module")
def eos_prone(hf_t5, tmp_path_factory):
    """`(reference, base, backbone)`: `hf_t5("flan")` with its EOS logit five times as large, loaded by
    transformers (`(model, tokenizer)`) and by us."""
    torch = require("torch")
    transformers = require("transformers")
    from safetensors.numpy import load_file, save_file

    directory = tmp_path_factory.mktemp("eos_prone") / "flan"
    shutil.copytree(hf_t5("flan"), directory)
    state = load_file(str(directory / "model.safetensors"))
    state["lm_head.weight"][EOS_ID] *= 5
    save_file(state, str(directory / "model.safetensors"), metadata={"format": "pt"})
    reference = (transformers.T5ForConditionalGeneration.from_pretrained(str(directory)).eval(),
                 transformers.AutoTokenizer.from_pretrained(str(directory)))
    base = load_base(str(directory))
    # One thread: beside TensorFlow's on a busy 2-core machine, torch's default two made each tiny
    # generate call about 20 times slower.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield reference, base, base.build_backbone()
    torch.set_num_threads(threads)


@pytest.fixture
def decoded_ids(monkeypatch):
    """`decoded_ids(call)`: the ids a `Translator` generated during `call()`, per source, cut after EOS."""
    batches = []
    postprocess = evaluation.SpellablePreprocessor.generate_postprocess

    def recording(self, x):
        batches.append([cut_at_eos(row[1:]) for row in np.asarray(x["decoder_token_ids"]).tolist()])
        return postprocess(self, x)

    monkeypatch.setattr(evaluation.SpellablePreprocessor, "generate_postprocess", recording)

    def decoded(call):
        batches.clear()
        call()
        return [row for batch in batches for row in batch]

    return decoded


def transformers_ids(reference, sources, **generate_kwargs):
    """transformers' `generate` ids for `sources` in one batch, after the start token, cut after EOS."""
    torch = require("torch")
    model, tokenizer = reference
    with torch.no_grad():
        out = model.generate(**tokenizer(sources, return_tensors="pt", padding=True), do_sample=False,
                             max_new_tokens=BEAM_NEW_TOKENS, **generate_kwargs)
    return [cut_at_eos(row[1:]) for row in out.numpy().tolist()]


def keras_hub_beam_search(reference, sources, num_beams):
    """transformers' beam search run as keras-hub's `BeamSampler` runs it (see the test below)."""
    torch = require("torch")
    transformers = require("transformers")

    class EveryBeamHasEos(transformers.StoppingCriteria):
        """BeamSampler's `cond`: stop once every beam of every sentence in the batch holds an EOS."""

        def __call__(self, input_ids, scores, **kwargs):
            # Each sentence's 2k best candidates, best first (torch.topk); the first k are its next beams.
            has_eos = (input_ids[:, 1:] == EOS_ID).any(-1).view(-1, 2 * num_beams)[:, :num_beams]
            return torch.full((len(input_ids),), bool(has_eos.all()), device=input_ids.device)

    return transformers_ids(reference, sources, num_beams=num_beams, eos_token_id=None, early_stopping=True,
                            stopping_criteria=transformers.StoppingCriteriaList([EveryBeamHasEos()]))


def test_beam_search_decodes_transformers_beam_search_with_keras_hub_s_stopping(eos_prone, decoded_ids):
    """`translate(..., num_beams=k)` = transformers' `generate(num_beams=k, do_sample=False, eos_token_id=None,
    stopping_criteria=[every beam of every sentence holds an EOS])`, token for token.

    keras-hub's `BeamSampler` ranks beams by their summed log-probabilities, with no length
    normalisation, and does not set a finished beam aside: a beam that has produced EOS keeps its
    place among the k and goes on being extended, adding the log-probabilities of the tokens decoded
    after its EOS (cut off in the output); the search stops when every beam of every sentence in the
    batch holds an EOS, or at the length limit, and returns each sentence's best beam.
    transformers' beam search moves a beam that ends in EOS to a separate set of finished hypotheses,
    its score frozen (divided by length ** length_penalty), and goes on with k live beams; no
    `length_penalty` / `early_stopping` reproduces the post-EOS log-probabilities, and its default
    settings give other ids for some of these sentences (asserted below). With `eos_token_id=None`
    EOS is an ordinary token, so EOS-ended beams run on as in keras-hub, and the stopping criterion
    is keras-hub's; every hypothesis then ends at the same length, so `length_penalty` and
    `early_stopping` make no difference. The stop being batch-wide, a sentence's beam result can
    depend on the sentences decoded with it, in keras-hub as in this transformers run (asserted below).
    """
    reference, base, backbone = eos_prone
    greedy = transformers_ids(reference, BEAM_SOURCES, num_beams=1)
    decode = lambda batch_size: decoded_ids(lambda: translate(  # noqa: E731
        backbone, base.tokenizer, BEAM_SOURCES, max_new_tokens=BEAM_NEW_TOKENS, batch_size=batch_size, num_beams=3))
    batched = decode(len(BEAM_SOURCES))
    assert batched == keras_hub_beam_search(reference, BEAM_SOURCES, 3)
    assert batched != greedy  # the beams are searched, ...
    assert any(row[-1] == EOS_ID for row in batched)  # ... some end in EOS before the limit, ...
    assert batched != transformers_ids(reference, BEAM_SOURCES, num_beams=3)  # ... where transformers' own stop differs
    # One sentence per batch: another beam wins for some sentence, in both.
    alone = decode(1)
    assert alone == [keras_hub_beam_search(reference, [source], 3)[0] for source in BEAM_SOURCES]
    assert alone != batched


def test_beam_width_one_decodes_greedy_ids(eos_prone, decoded_ids):
    """`BeamSampler(num_beams=1)` gives greedy's ids: those of `translate(num_beams=1)` and transformers."""
    reference, base, backbone = eos_prone
    greedy = decoded_ids(lambda: translate(backbone, base.tokenizer, BEAM_SOURCES, max_new_tokens=BEAM_NEW_TOKENS))
    translator = Translator(backbone, base.tokenizer, max_new_tokens=BEAM_NEW_TOKENS)
    translator.model.compile(sampler=keras_hub.samplers.BeamSampler(num_beams=1))
    assert decoded_ids(lambda: translator(BEAM_SOURCES)) == greedy
    assert greedy == transformers_ids(reference, BEAM_SOURCES, num_beams=1)
    assert any(row[-1] == EOS_ID for row in greedy) and any(row[-1] != EOS_ID for row in greedy)
