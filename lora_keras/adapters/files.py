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
from lora_keras.adapters.lora import adapted_layers, adapter_config, adapter_weights, add_lora
from lora_keras.errors import InputError


def save_adapter(backbone: keras.Model, path: str | os.PathLike, config: LoraConfig | None = None) -> None:
    """Write the adapter weights of `backbone` alone (a safetensors file, config in its metadata).

    Args:
        backbone: a backbone with adapters from `add_lora`.
        path: the file to write.
        config: the adapters' config; read from the layers when None.

    Example:
    ```python
    save_adapter(backbone, "logs/sweep/adapters/trial_0.safetensors", config)
    ```
    """
    if not adapted_layers(backbone):
        raise ValueError("the backbone has no LoRA adapters to save")
    config = config or adapter_config(backbone)
    metadata = {"lora_config": json.dumps(config.to_dict())}
    save_file(adapter_weights(backbone), str(path), metadata=metadata)


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
        raise InputError(f"cannot read adapter {path}: {error}; pass a file written by lora-keras")
    if "lora_config" not in metadata:
        raise InputError(f"{path} has no lora_config metadata; pass a file written by lora-keras")
    raw = json.loads(metadata["lora_config"])
    config = LoraConfig(
        int(raw["rank"]), float(raw["alpha"]), tuple(raw["targets"]), float(raw.get("dropout", 0.0)),
        raw.get("init", "keras"),  # adapters written before the PEFT initialisation drew A as Keras does
    )
    return config, weights


def load_adapter(backbone: keras.Model, path: str | os.PathLike, seed: int | None = None) -> LoraConfig:
    """Add LoRA to a fresh `backbone` as saved in `path` and set its weights; returns the config.

    Example:
    ```python
    load_adapter(backbone, "adapters/trial_0.safetensors")
    ```
    """
    config, weights = read_adapter(path)
    layers = adapted_layers(backbone) or add_lora(backbone, config, seed=seed)
    expected = {f"{p}/lora_{ab}" for p in layers for ab in ("a", "b")}
    if expected != set(weights):
        raise InputError(
            f"adapter {path} does not fit this model (layers differ); "
            "pass the base model it was trained on"
        )
    for path_, dense in layers.items():
        for name, variable in (("a", dense.lora_kernel_a), ("b", dense.lora_kernel_b)):
            value = weights[f"{path_}/lora_{name}"]
            if tuple(value.shape) != tuple(variable.shape):
                raise InputError(
                    f"adapter {path} has {path_}/lora_{name} of shape {value.shape}, "
                    f"the model needs {tuple(variable.shape)}; pass the matching base model"
                )
            variable.assign(value)
    return config
