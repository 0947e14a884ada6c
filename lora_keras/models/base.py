"""`BaseModel`: a frozen T5 kept as config plus weights, from which each trial builds a fresh model.

The base is read once per run (`lora_keras.models.sources.load_base`), so each
trial builds a fresh `T5Seq2SeqLM` without touching the disk.

Example:
```python
base = load_base("path/to/flan-t5-small")     # or "tiny", or a keras-hub preset dir
model = base.build_model()                 # keras_hub.models.T5Seq2SeqLM with its T5 preprocessor
model.generate("translate English to German: hello .")
ids = base.tokenizer(["translate English to German: hello ."])
```
"""

from __future__ import annotations

import dataclasses

import keras
import keras_hub
import numpy as np

from lora_keras.evaluation import SpellablePreprocessor
from lora_keras.models.masking_warning import masking_warning_ignored
from lora_keras.models.token_loss import TokenLossSeq2SeqLM


@dataclasses.dataclass
class BaseModel:
    """A frozen starting point: backbone config, weights and tokenizer.

    Args:
        name: what the base was loaded from (`"tiny"`, a path or a hub id).
        backbone_config: the `T5Backbone` config.
        weights: the backbone's weights, in `get_weights` order.
        tokenizer: its tokenizer.
        task: the demo's default languages and corpus, else None.

    Example:
    ```python
    base = load_base("tiny")
    model = base.build_model()   # a fresh TokenLossSeq2SeqLM with the base weights
    ```
    """

    name: str
    backbone_config: dict
    weights: list[np.ndarray]
    tokenizer: keras_hub.models.T5Tokenizer
    task: dict | None = None
    # A backbone a loader already built, for reading layer shapes only (`layout_backbone`).
    layout: keras_hub.models.T5Backbone | None = dataclasses.field(default=None, repr=False, compare=False)

    def layout_backbone(self) -> keras_hub.models.T5Backbone:
        """A backbone of the base's layout, to read (layer names and shapes), never to train or change.

        The one the loader built when it read the base, else one built once and kept: building a
        T5 backbone costs seconds, and checking a sweep's LoRA configs needs only its shapes.

        Example:
        ```python
        check_rank(base.layout_backbone(), LoraConfig(rank=4))
        ```
        """
        if self.layout is None:
            self.layout = self.build_backbone()
        return self.layout

    def take_layout(self) -> keras_hub.models.T5Backbone:
        """`layout_backbone()`, handed over: the caller may change it (the base forgets it).

        Example: `shared_translator(base.tokenizer).adopt(base.take_layout())`.
        """
        backbone, self.layout = self.layout_backbone(), None
        return backbone

    def build_backbone(self, dtype: str | keras.DTypePolicy | None = None) -> keras_hub.models.T5Backbone:
        """A new `T5Backbone` holding the base weights, in the base's dtype policy or `dtype`.

        Args:
            dtype: a dtype policy, e.g. `"mixed_bfloat16"` (variables stay float32); None keeps the base's.

        Example:
        ```python
        add_lora(base.build_backbone(), LoraConfig(rank=4))
        ```
        """
        config = self.backbone_config if dtype is None else {**self.backbone_config, "dtype": dtype}
        with masking_warning_ignored():
            backbone = keras_hub.models.T5Backbone.from_config(config)
        backbone.set_weights(self.weights)
        return backbone

    def build_model(
        self, backbone: keras_hub.models.T5Backbone | None = None, *, max_source_length: int = 64,
        max_target_length: int = 64,
    ) -> TokenLossSeq2SeqLM:
        """A `T5Seq2SeqLM` on `backbone` (or a new one) with a `T5Seq2SeqLMPreprocessor` for the base's tokenizer.

        Its loss, trained and reported, is the mean NLL per real target token (`TokenLossSeq2SeqLM`).
        `fit`/`evaluate` take `{"encoder_text": [...], "decoder_text": [...]}` as keras-hub documents,
        packed as `tokenize_pairs` packs them, and `make_dataset`'s token batches as they are;
        `generate` decodes text greedily, as `lora_keras.evaluation.translate`. On every backend
        (keras-hub's tokenizer runs `sentencepiece` itself where TensorFlow is absent).

        Args:
            backbone: the backbone, e.g. with adapters; a new one from `build_backbone` when None.
            max_source_length: source tokens kept from text, EOS included (as `tokenize_pairs`).
            max_target_length: target tokens kept from text, EOS included; `generate`'s most new tokens.

        Returns:
            The model, not compiled.

        Example:
        ```python
        model = base.build_model()
        model.compile(optimizer=keras.optimizers.Adam(3e-3))
        model.fit(x={"encoder_text": ["translate English to German: hello ."], "decoder_text": ["hallo ."]})
        ```
        """
        backbone = backbone or self.build_backbone()
        preprocessor = SpellablePreprocessor(
            tokenizer=self.tokenizer, encoder_sequence_length=max_source_length,
            decoder_sequence_length=max_target_length,
        )
        return TokenLossSeq2SeqLM(backbone=backbone, preprocessor=preprocessor)
