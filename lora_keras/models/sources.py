"""Where a base model comes from: `tiny` (the offline demo), a keras-hub preset dir,
a Hugging Face T5 checkpoint dir, or a hub id such as `google/flan-t5-small`.

Example:
```python
base = load_base("path/to/flan-t5-small")     # or "tiny", or a keras-hub preset dir
model = base.build_model()
```
"""

from __future__ import annotations

import json
import os
import pathlib

import keras_hub

from lora_keras.errors import InputError
from lora_keras.models.base import BaseModel
from lora_keras.models.demo import base as demo
from lora_keras.models.hf import checkpoint as hf_checkpoint
from lora_keras.models.hf import hub as hf_hub
from lora_keras.models.masking_warning import masking_warning_ignored
from lora_keras.models.tokenizer import check_vocabulary_fits


def _is_keras_hub_preset(path: pathlib.Path) -> bool:
    return (path / "metadata.json").is_file() and (path / "config.json").is_file()


def load_preset(path: str | os.PathLike, name: str | None = None, task: dict | None = None) -> BaseModel:
    """Read a keras-hub T5 preset directory into a `BaseModel`.

    Args:
        path: the preset directory (`config.json`, `metadata.json`, weights, tokenizer).
        name: the base's name; the path when None.
        task: the demo's languages and corpus, kept on the `BaseModel`.

    Returns:
        The `BaseModel`; an `InputError` (parameter `model`) for a preset that is no T5.

    Example:
    ```python
    base = load_preset("logs/exported-preset")
    ```
    """
    path = pathlib.Path(path)
    config = json.loads((path / "config.json").read_text())
    if config.get("class_name") != "T5Backbone":
        raise InputError(
            f"model: {path} holds a {config.get('class_name')}, not a T5Backbone; "
            "pass a T5 preset directory",
            parameter="model",
        )
    with masking_warning_ignored():
        backbone = keras_hub.models.T5Backbone.from_preset(str(path))
    tokenizer = keras_hub.models.T5Tokenizer.from_preset(str(path))
    check_vocabulary_fits(tokenizer, backbone.vocabulary_size, f"model {path}", "model")
    return BaseModel(
        name=name or str(path),
        backbone_config=backbone.get_config(),
        weights=backbone.get_weights(),
        tokenizer=tokenizer,
        task=task,
        layout=backbone,
    )


def load_base(spec: str, cache_root: str | os.PathLike | None = None, verbose: int = 1) -> BaseModel:
    """The base model named by `spec`: `tiny`, a local keras-hub preset or HF T5 checkpoint dir, or a hub id.

    Args:
        spec: `"tiny"`, a directory, or a hub id such as `google/flan-t5-small`.
        cache_root: where the `tiny` demo base is cached; the default cache when None.
        verbose: 1 to say when the demo base is built, 0 for silence.

    Returns:
        The `BaseModel`; an `InputError` (parameter `model`) when `spec` names no T5 model.

    Example:
    ```python
    base = load_base("google/flan-t5-small")   # downloads where the network allows
    ```
    """
    if spec == "tiny":
        preset = demo.ensure_demo_base(demo.DemoConfig(), cache_root, verbose=verbose)
        return load_preset(preset, name="tiny", task=demo.read_task(preset))
    path = pathlib.Path(spec)
    if hf_hub.is_hub_id(spec):
        path = hf_hub.download(spec)
    if not path.is_dir():
        raise InputError(
            f"model: {spec} is neither 'tiny' nor a directory; pass 'tiny', a local keras-hub "
            "preset or Hugging Face T5 checkpoint directory, or a hub id such as google/flan-t5-small",
            parameter="model",
        )
    if _is_keras_hub_preset(path):
        return load_preset(path, name=spec)
    if hf_checkpoint.is_hf_checkpoint(path):
        return hf_checkpoint.load_hf_checkpoint(path, name=spec)
    if (path / "config.json").is_file():
        raise InputError(
            f"model: {spec} holds a config.json that is neither a keras-hub preset nor a Hugging Face "
            "T5 config (model_type t5); pass a T5 or FLAN-T5 checkpoint directory",
            parameter="model",
        )
    raise InputError(
        f"model: {spec} has no keras-hub preset (metadata.json, config.json) nor Hugging Face "
        "checkpoint (config.json); pass 'tiny', a keras-hub T5 preset or a T5 checkpoint directory",
        parameter="model",
    )
