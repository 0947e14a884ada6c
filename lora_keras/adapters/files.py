"""Adapter files: the LoRA weights alone, as safetensors with the `LoraConfig` in the metadata.

Example:
```python
save_adapter(backbone, "logs/sweep/adapters/trial_0.safetensors")
config = load_adapter(base.build_backbone(), "logs/sweep/adapters/trial_0.safetensors")
```
"""

from __future__ import annotations

import json
import os

import keras
import numpy as np
from safetensors import SafetensorError, safe_open
from safetensors.numpy import save_file

from lora_keras.adapters.config import LoraConfig
from lora_keras.adapters.lora import adapter_config, adapter_weights, add_lora, load_slot, lora_layers
from lora_keras.errors import InputError
from lora_keras.runtime.atomic_files import replace_atomically


def save_adapter(backbone: keras.Model, path: str | os.PathLike, slot: int = 0) -> None:
    """Write one adapter of `backbone` alone: a safetensors file, its `LoraConfig` in the metadata.

    The file is replaced whole (`replace_atomically`): a kill mid-write leaves the old one or none.

    Args:
        backbone: a backbone with adapters from `add_lora`.
        path: the file to write.
        slot: which of a packed backbone's adapters (0 for a plain one).

    Example:
    ```python
    save_adapter(backbone, "logs/sweep/adapters/trial_0.safetensors")
    ```
    """
    metadata = {"lora_config": json.dumps(adapter_config(backbone, slot).to_dict())}
    with replace_atomically(path) as temporary:
        save_file(adapter_weights(backbone, slot), str(temporary), metadata=metadata)


def read_adapter(path: str | os.PathLike) -> tuple[LoraConfig, dict[str, np.ndarray]]:
    """`(LoraConfig, {name: array})` from a file written by `save_adapter`.

    Example:
    ```python
    config, weights = read_adapter("adapters/trial_0.safetensors")
    ```
    """
    try:
        with safe_open(str(path), framework="numpy") as handle:
            metadata = handle.metadata() or {}
            weights = {name: handle.get_tensor(name) for name in handle.keys()}
    except (OSError, SafetensorError) as error:  # missing, or not a safetensors file
        raise InputError(f"cannot read adapter {path}: {error}; pass a file written by lora-keras", parameter="adapter")
    if "lora_config" not in metadata:
        raise InputError(f"{path} has no lora_config metadata; pass a file written by lora-keras", parameter="adapter")
    raw = json.loads(metadata["lora_config"])
    config = LoraConfig(
        int(raw["rank"]), float(raw["alpha"]), tuple(raw["targets"]), float(raw.get("dropout", 0.0)),
        raw.get("init", "keras"),  # adapters written before the PEFT initialisation drew A as Keras does
    )
    return config, weights


def load_adapter(backbone: keras.Model, path: str | os.PathLike, seed: int | None = None,
                 slot: int = 0) -> LoraConfig:
    """Put the adapter saved in `path` on `backbone` (adding LoRA to a fresh one first); returns its config.

    Args:
        backbone: a backbone without adapters, or one whose adapters the file's config fits.
        path: a file written by `save_adapter`.
        seed: seeds the dropout masks of adapters added here.
        slot: the slot to load it into (0 for a plain backbone).

    Example:
    ```python
    load_adapter(backbone, "adapters/trial_0.safetensors")
    ```
    """
    config, weights = read_adapter(path)
    if not lora_layers(backbone):
        add_lora(backbone, config, seed=seed)
    load_slot(backbone, slot, config, weights, source=str(path))
    return config
