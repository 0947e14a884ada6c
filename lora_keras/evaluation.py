"""Translation quality: batched greedy decoding with keras-hub's cached `generate`, scored by sacrebleu.

Example:
```python
hypotheses = translate(backbone, tokenizer, ["translate English to Dravic: the dog runs ."])
scores = translation_scores(hypotheses, ["dog runri ."])   # {"bleu": ..., "chrf": ...}
```
"""

from __future__ import annotations

import dataclasses
import hashlib
from collections.abc import Sequence
from typing import Any

import keras
import keras_hub
import numpy as np
import sacrebleu
from keras import ops

from lora_keras.adapters import merged_weights
from lora_keras.models.hf.tokenizer import SENTINEL
from lora_keras.models.masking_warning import masking_warning_ignored


def _spelled_pieces(tokenizer: keras_hub.models.T5Tokenizer) -> int:
    """How many ids, from 0, print as text: the tokenizer's pieces up to T5's first sentinel `<extra_id_N>`."""
    vocabulary = tokenizer.get_vocabulary()
    return next((index for index, piece in enumerate(vocabulary) if SENTINEL.fullmatch(piece)), len(vocabulary))


class SpellablePreprocessor(keras_hub.models.T5Seq2SeqLMPreprocessor):
    """keras-hub's `T5Seq2SeqLMPreprocessor` that detokenizes only ids the tokenizer spells; packs each batch once.

    Hugging Face T5 models have more rows than SentencePiece pieces (T5's sentinels
    `<extra_id_N>` and padding rows); SentencePiece cannot spell those ids and would fail.
    A tokenizer read from `tokenizer.json` alone holds the sentinels as pieces; they are
    dropped too, as transformers' `decode(..., skip_special_tokens=True)` drops them.
    A sweep decodes the same validation sources after every trial, so the packed
    ids of the last `PACKED_BATCHES_KEPT` batches of strings are kept and reused.

    Example:
    ```python
    preprocessor = SpellablePreprocessor(tokenizer, encoder_sequence_length=64, decoder_sequence_length=64)
    keras_hub.models.T5Seq2SeqLM(backbone=backbone, preprocessor=preprocessor).generate("translate ...")
    ```
    """

    PACKED_BATCHES_KEPT = 64

    def generate_preprocess(self, x: Any, **kwargs: Any) -> Any:
        if not (isinstance(x, list) and all(isinstance(text, str) for text in x)):
            return super().generate_preprocess(x, **kwargs)
        packed = self.__dict__.setdefault("_packed_batches", {})  # not a Keras-tracked attribute
        key = (tuple(x), tuple(sorted(kwargs.items())))
        if key not in packed:
            if len(packed) >= self.PACKED_BATCHES_KEPT:
                packed.pop(next(iter(packed)))  # the oldest
            packed[key] = super().generate_preprocess(x, **kwargs)
        return packed[key]

    def generate_postprocess(self, x: dict) -> Any:
        if "_spelled" not in self.__dict__:
            self.__dict__["_spelled"] = _spelled_pieces(self.tokenizer)
        # keras-hub's own strips with TensorFlow's ragged tensors; this keeps the same ids in numpy,
        # on every backend: unmasked, spellable, and none of the tokenizer's special ids.
        ids = ops.convert_to_numpy(x["decoder_token_ids"])
        keep = ops.convert_to_numpy(x["decoder_padding_mask"]).astype(bool) & (ids < self.__dict__["_spelled"])
        keep &= ~np.isin(ids, list(self.tokenizer.special_token_ids))
        return self.tokenizer.detokenize([[int(i) for i in row[kept]] for row, kept in zip(ids, keep)])


class Translator:
    """keras-hub's cached `generate` on one backbone, traced once and reused across calls.

    It reads the backbone's variables at each call, so it follows training.
    With `jit_compile`, `generate` is compiled with XLA and a short last batch
    is padded to the size of the others (with copies of its last source, whose
    translations are dropped) so one compile serves all. On the demo model
    and a CPU: the first call takes about 5 s more, every later one about
    60% of the time. Worth it when a translator decodes many times, as a
    sweep's does.

    Args:
        backbone: the `T5Backbone` to decode with (adapted or not).
        tokenizer: its tokenizer.
        max_source_length: source tokens kept; longer sources are cut.
        max_new_tokens: the longest translation, in tokens.
        num_beams: beam width; 1 is greedy.
        jit_compile: compile `generate` with XLA.

    Example:
    ```python
    Translator(backbone, tokenizer)(["translate English to Dravic: the dog runs ."])
    ```
    """

    def __init__(
        self,
        backbone: keras_hub.models.T5Backbone,
        tokenizer: keras_hub.models.T5Tokenizer,
        max_source_length: int = 64,
        max_new_tokens: int = 64,
        num_beams: int = 1,
        jit_compile: bool = False,
    ) -> None:
        self.backbone = backbone
        self.decoder_length = max_new_tokens + 1  # the start token takes the first place
        preprocessor = SpellablePreprocessor(
            tokenizer=tokenizer,
            encoder_sequence_length=max_source_length,
            decoder_sequence_length=self.decoder_length,
        )
        with masking_warning_ignored():
            self.model = keras_hub.models.T5Seq2SeqLM(backbone=backbone, preprocessor=preprocessor)
        sampler = keras_hub.samplers.BeamSampler(num_beams=num_beams) if num_beams > 1 else "greedy"
        self.model.compile(sampler=sampler, jit_compile=jit_compile)
        self.jit_compile = jit_compile

    def __call__(self, sources: Sequence[str], batch_size: int = 64) -> list[str]:
        """The translations of `sources`, in order, decoded `batch_size` at a time."""
        translations = []
        batch_size = max(1, min(batch_size, len(sources)))
        for start in range(0, len(sources), batch_size):
            batch = list(sources[start : start + batch_size])
            size = len(batch)
            if self.jit_compile:  # one shape, one XLA compile
                batch += batch[-1:] * (batch_size - size)
            with masking_warning_ignored():  # the first call traces the attention layers
                generated = self.model.generate(batch, max_length=self.decoder_length)
            translations.extend(str(text).strip() for text in generated[:size])
        return translations


class MergedTranslator:
    """Decodes for any adapted backbone of one shape with a single traced `generate`.

    A `Translator` traces `generate` for its backbone, and a new LoRA config
    means a new backbone: seconds of tracing per config. This one decodes with
    an unadapted copy of the backbone into which each call folds the current
    adapters (`merged_weights`), so a sweep traces `generate` once, for the
    baseline and every trial, and compiles it with XLA (`Translator`'s
    `jit_compile`) since it serves so many decodes; the translations are the
    adapted backbone's.

    Args:
        tokenizer: the tokenizer of every backbone it decodes for.
        max_source_length: source tokens kept; longer sources are cut.
        max_new_tokens: the longest translation, in tokens.

    Example:
    ```python
    MergedTranslator(tokenizer)(model.backbone, ["translate English to Dravic: the dog runs ."])
    ```
    """

    def __init__(
        self, tokenizer: keras_hub.models.T5Tokenizer, max_source_length: int = 64, max_new_tokens: int = 64
    ) -> None:
        self.tokenizer = tokenizer
        self.lengths = (max_source_length, max_new_tokens)
        self._config = None
        self._translator = None
        self._spare = None

    def adopt(self, backbone: keras_hub.models.T5Backbone) -> None:
        """Decode with `backbone` (its weights get overwritten) rather than build a copy of this config.

        Building a T5 backbone costs seconds; a run that already holds a spare one (e.g.
        `BaseModel.take_layout()`) hands it over.

        Example: `shared_translator(base.tokenizer).adopt(base.take_layout())`.
        """
        self._spare = backbone

    def __call__(
        self, backbone: keras_hub.models.T5Backbone, sources: Sequence[str], batch_size: int = 64,
        weights: list | None = None,
    ) -> list[str]:
        """The translations of `sources` by `backbone` with its current adapters merged in.

        `weights`, in an unadapted backbone's order, replace the merge (e.g. one slot of a `LoraPack`).
        """
        config = backbone.get_config()
        if config != self._config:
            spare, self._spare = self._spare, None
            if spare is not None and spare.get_config() == config:
                copy = spare
            else:
                with masking_warning_ignored():
                    copy = type(backbone).from_config(config)
            self._translator = Translator(copy, self.tokenizer, *self.lengths, jit_compile=True)
            self._config = config
        self._translator.backbone.set_weights(merged_weights(backbone) if weights is None else weights)
        return self._translator(sources, batch_size)


_SHARED_TRANSLATORS = {}  # (vocabulary, lengths) -> MergedTranslator: the process's one


def shared_translator(
    tokenizer: keras_hub.models.T5Tokenizer, max_source_length: int = 64, max_new_tokens: int = 64
) -> MergedTranslator:
    """The process's `MergedTranslator` for this vocabulary and these lengths.

    Sweeps run one after another in one process (a notebook, a test session) then
    decode with one compiled `generate` rather than compiling it once each. One is kept:
    each holds a copy of a base model.

    Example:
    ```python
    shared_translator(base.tokenizer)(model.backbone, sources)
    ```
    """
    key = (hashlib.sha256(tokenizer.proto).hexdigest(), max_source_length, max_new_tokens)
    if key not in _SHARED_TRANSLATORS:
        _SHARED_TRANSLATORS.clear()
        _SHARED_TRANSLATORS[key] = MergedTranslator(tokenizer, max_source_length, max_new_tokens)
    return _SHARED_TRANSLATORS[key]


def translate(
    backbone: keras_hub.models.T5Backbone,
    tokenizer: keras_hub.models.T5Tokenizer,
    sources: Sequence[str],
    max_source_length: int = 64,
    max_new_tokens: int = 64,
    batch_size: int = 64,
    num_beams: int = 1,
) -> list[str]:
    """Translations of `sources` (used as given: include any task prefix); greedy unless `num_beams` > 1.

    Args:
        backbone: the `T5Backbone` to decode with (adapted or not).
        tokenizer: its tokenizer.
        sources: the sentences, with any task prefix.
        max_source_length: source tokens kept; longer sources are cut.
        max_new_tokens: the longest translation, in tokens.
        batch_size: sentences decoded at once.
        num_beams: beam width; 1 is greedy.

    Returns:
        One translation per source, in order.

    Example:
    ```python
    translate(backbone, tokenizer, ["translate English to Dravic: the dog runs ."])   # ["dog runri ."]
    ```
    """
    translator = Translator(backbone, tokenizer, max_source_length, max_new_tokens, num_beams)
    return translator(sources, batch_size)


def translation_scores(hypotheses: Sequence[str], references: Sequence[str]) -> dict[str, float]:
    """Corpus BLEU and chrF (sacrebleu's defaults) of `hypotheses` against one reference each.

    `force=True` only silences sacrebleu's warning about references that end in " ." (the
    demo's languages write their full stop as a word); the score is the same.

    Example:
    ```python
    translation_scores(["dog runri ."], ["dog runri ."])   # {"bleu": 100.0, "chrf": 100.0}
    ```
    """
    return {
        "bleu": float(sacrebleu.corpus_bleu(hypotheses, [list(references)], force=True).score),
        "chrf": float(sacrebleu.corpus_chrf(hypotheses, [list(references)]).score),
    }


SAMPLE_TRANSLATIONS = 5  # sources, references and translations shown per trial


@dataclasses.dataclass(frozen=True)
class ValidationTexts:
    """The validation set as text, for translation scores: prefixed sources and references.

    Example: `ValidationTexts(["translate English to French: hello ."], ["bonjour ."])`.
    """

    sources: list
    references: list
    max_source_length: int = 64
    max_target_length: int = 64
    base_translations: tuple = ()  # the unadapted base's first translations, once `baseline.json` has them

    def scores(
        self, backbone: keras.Model, tokenizer: keras_hub.models.T5Tokenizer, weights: list | None = None,
    ) -> tuple[dict, list[str]]:
        """BLEU and chrF of `backbone`'s greedy translations of these sources (with `weights`, when given).

        The process's `shared_translator` serves every call, so `generate` is compiled
        once per process (per model shape), not once per LoRA config or run.

        Args:
            backbone: a `T5Backbone`, adapted or not.
            tokenizer: the base's `T5Tokenizer`.
            weights: the weights to decode with, in an unadapted backbone's order; default `backbone`'s, merged.

        Returns:
            `({"bleu": ..., "chrf": ...}, translations)`.

        Example: `scores, translations = val_texts.scores(model.backbone, base.tokenizer)`.
        """
        translations = shared_translator(tokenizer, self.max_source_length, self.max_target_length)(
            backbone, self.sources, weights=weights)
        return translation_scores(translations, self.references), translations

    def samples_markdown(self, translations: list[str]) -> str:
        """The first sources, references, the base's and this trial's translations as a markdown table.

        (TensorBoard's TEXT tab; the base's column is there once the baseline is measured.)
        """
        base = list(self.base_translations) or [None] * SAMPLE_TRANSLATIONS
        with_base = bool(self.base_translations)
        rows = ["| source | reference | " + ("unadapted base | " if with_base else "") + "this trial |",
                "|---|---|" + ("---|" if with_base else "") + "---|"]
        for source, reference, before, after in list(
            zip(self.sources, self.references, base, translations)
        )[:SAMPLE_TRANSLATIONS]:
            rows.append(f"| {source} | {reference} | " + (f"{before} | " if with_base else "") + f"{after} |")
        return "\n".join(rows)
