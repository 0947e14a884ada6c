"""LoRA adapters on Keras `Dense` layers of keras-hub T5 models: what they are (`config`),
how an adapted layer computes (`projection`), adding and merging them (`lora`), and
their files (`files`).

Example:
```python
from lora_keras.adapters import LoraConfig, add_lora, save_adapter
add_lora(backbone, LoraConfig(rank=4, targets=("q", "v")), seed=0)
save_adapter(backbone, "adapter.safetensors")
```
"""

from lora_keras.adapters.config import TARGETS, LoraConfig, check_rank, target_layers
from lora_keras.adapters.files import load_adapter, read_adapter, save_adapter
from lora_keras.adapters.lora import (
    adapted_layers, adapter_weights, add_lora, lora_parameter_count, merge_lora, merged_weights, reset_lora,
)
from lora_keras.adapters.projection import Projection, lean_projections, project, projection_of

__all__ = [
    "TARGETS", "LoraConfig", "Projection", "adapted_layers", "adapter_weights", "add_lora", "check_rank",
    "lean_projections", "load_adapter", "lora_parameter_count", "merge_lora", "merged_weights", "project",
    "projection_of", "read_adapter", "reset_lora", "save_adapter", "target_layers",
]
