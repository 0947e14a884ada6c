"""`BaseModel`: a frozen T5 kept as config plus weights, from which each trial builds a fresh model.

The base is read once per run (`lora_keras.models.sources.load_base`), so each
trial builds a fresh `T5Seq2SeqLM` without touching the disk.

Example:
```python
base = load_base("path/to/flan-t5-small")     # or "tiny", or a keras-hub preset dir
model = base.build_model()                 # keras_hub.models.T5Seq2SeqLM, no preprocessor
ids = base.tokenizer(["translate English to German: hello ."])
```
"""

import dataclasses
import warnings

import keras_hub

from lora_keras.models.token_loss import TokenLossSeq2SeqLM

# keras-hub's T5 attention warns on every call that it drops Keras masks; it
# uses explicit padding masks instead, so the warning says nothing here.
warnings.filterwarnings("ignore", message=".*does not support masking.*")


@dataclasses.dataclass
class BaseModel:
    """A frozen starting point: backbone config, weights and tokenizer.

    `task` holds the default languages and corpus of the demo, else None.
    """

    name: str
    backbone_config: dict
    weights: list
    tokenizer: keras_hub.models.T5Tokenizer
    task: dict | None = None

    def build_backbone(self):
        """A new `T5Backbone` holding the base weights."""
        backbone = keras_hub.models.T5Backbone.from_config(self.backbone_config)
        backbone.set_weights(self.weights)
        return backbone

    def build_model(self, backbone=None):
        """A `T5Seq2SeqLM` (logits out, no preprocessor) on `backbone` or a new one.

        Its loss, trained and reported, is the mean NLL per real target token (`TokenLossSeq2SeqLM`).
        """
        backbone = backbone or self.build_backbone()
        return TokenLossSeq2SeqLM(backbone=backbone, preprocessor=None)
