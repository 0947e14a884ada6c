"""lora-keras: LoRA fine-tuning of keras-hub T5 models, measured.

Example:
```python
from lora_keras import LoraConfig, add_lora, load_base
base = load_base("tiny")
backbone = base.build_backbone()
add_lora(backbone, LoraConfig(rank=4, targets=("q", "v")))
model = base.build_model(backbone)   # a TokenLossSeq2SeqLM: keras-hub's T5Seq2SeqLM, text in and out
model.generate("translate English to Dravic: the dog runs .")
```
"""

import importlib

# Public names -> their module; imported on first use so that `lora_keras.cli`
# (argument checks) answers without loading TensorFlow.
_EXPORTS = {
    "InputError": "lora_keras.errors",
    "LoraConfig": "lora_keras.adapters",
    "add_lora": "lora_keras.adapters",
    "load_adapter": "lora_keras.adapters",
    "lora_parameter_count": "lora_keras.adapters",
    "merge_lora": "lora_keras.adapters",
    "save_adapter": "lora_keras.adapters",
    "BaseModel": "lora_keras.models.base",
    "TokenLossSeq2SeqLM": "lora_keras.models.token_loss",
    "load_base": "lora_keras.models.sources",
    "load_hf_checkpoint": "lora_keras.models.hf.checkpoint",
    "export_hf": "lora_keras.models.export",
    "export_keras_hub": "lora_keras.models.export",
    "merged_backbone": "lora_keras.models.export",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name):
    if name not in _EXPORTS:
        raise AttributeError(f"module 'lora_keras' has no attribute {name!r}")
    return getattr(importlib.import_module(_EXPORTS[name]), name)
