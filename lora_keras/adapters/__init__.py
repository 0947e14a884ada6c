"""LoRA adapters on keras-hub T5 models: what an adapter is (`config`), the one layer that holds a
projection's adapters (`layer`), adding, setting and merging them (`lora`), and their files (`files`).

Example:
```python
from lora_keras.adapters import LoraConfig, add_lora, save_adapter
add_lora(backbone, LoraConfig(rank=4, targets=("q", "v")), seed=0)
save_adapter(backbone, "adapter.safetensors")
```
"""

from lora_keras.adapters.config import TARGETS, LoraConfig, check_rank, target_layers
from lora_keras.adapters.files import load_adapter, read_adapter, save_adapter
from lora_keras.adapters.layer import LoraDense, project
from lora_keras.adapters.lora import (
    activate_slots, adapter_config, adapter_variables, adapter_weights, add_lora, clear_slots, load_slot,
    lora_layers, lora_parameter_count, merge_lora, merged_weights, reset_lora, set_slot, slot_count,
)

__all__ = [
    "TARGETS", "LoraConfig", "LoraDense", "activate_slots", "adapter_config", "adapter_variables",
    "adapter_weights", "add_lora", "check_rank", "clear_slots", "load_adapter", "load_slot", "lora_layers",
    "lora_parameter_count", "merge_lora", "merged_weights", "project", "read_adapter", "reset_lora",
    "save_adapter", "set_slot", "slot_count", "target_layers",
]
