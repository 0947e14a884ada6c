"""T5 base models: where they come from (`sources`: the demo, keras-hub presets, Hugging Face
checkpoints in `hf/`), what a run keeps of them (`base.BaseModel`), the loss they train
with (`token_loss`), their tokenizer checks, and export of an adapted model (`export`).

Example:
```python
from lora_keras.models.sources import load_base
base = load_base("tiny")
model = base.build_model()
```
"""
