"""Merge a LoRA adapter into its base and export the result for deployment.

`merged_backbone` folds the adapter into the kernels of a fresh backbone with no LoRA
left (its outputs equal the adapted model's); `export_hf` writes a Hugging Face T5
checkpoint (`config.json`, `model.safetensors`, `spiece.model`, `tokenizer.json`) that
`transformers.T5ForConditionalGeneration.from_pretrained` loads; `export_keras_hub`
writes a keras-hub preset that `load_base` and `keras_hub.models.T5Backbone.from_preset` read.

Example:
```python
base = load_base("path/to/flan-t5-small")
backbone = merged_backbone(base, "logs/sweep/adapters/trial_3.safetensors")
export_hf(backbone, base.tokenizer, "flan-t5-small-dravic")
```
"""

from __future__ import annotations

import json
import os
import pathlib
from typing import TYPE_CHECKING


from lora_keras.adapters import load_adapter, merged_weights
from lora_keras.errors import InputError
from lora_keras.models.hf.checkpoint import hf_config, hf_state_dict
from lora_keras.models.hf.tokenizer import SENTINEL, write_tokenizer_files
from lora_keras.models.tokenizer import check_vocabulary_fits

if TYPE_CHECKING:
    import keras_hub

    from lora_keras.models.base import BaseModel

FORMATS = ("hf", "keras-hub")
T5_EXTRA_IDS = 100  # sentinels <extra_id_0..99> after the SentencePiece pieces, as in T5 checkpoints


def merged_backbone(base: BaseModel, adapter: str | os.PathLike | None = None) -> keras_hub.models.T5Backbone:
    """A LoRA-free `T5Backbone` of `base` with `adapter` (a file from `save_adapter`) merged in.

    Args:
        base: the base the adapter was trained on.
        adapter: the adapter file; None gives the base's own backbone.

    Returns:
        A backbone whose outputs equal the adapted model's, with no LoRA left.

    Example:
    ```python
    backbone = merged_backbone(load_base("tiny"), "adapters/trial_0.safetensors")
    ```
    """
    backbone = base.build_backbone()
    if adapter is None:
        return backbone
    adapted = base.build_backbone()
    load_adapter(adapted, adapter)
    backbone.set_weights(merged_weights(adapted))  # each adapted kernel W + (alpha / rank) A B
    return backbone


def _extra_ids(backbone: keras_hub.models.T5Backbone, tokenizer: keras_hub.models.T5Tokenizer) -> int:
    """T5's 100 sentinels when the model's vocabulary has room for them past the pieces, else 0."""
    pieces = tokenizer.vocabulary_size()
    has_sentinels = any(SENTINEL.fullmatch(piece) for piece in tokenizer.get_vocabulary()[-T5_EXTRA_IDS:])
    return T5_EXTRA_IDS if not has_sentinels and backbone.vocabulary_size >= pieces + T5_EXTRA_IDS else 0


def export_hf(
    backbone: keras_hub.models.T5Backbone, tokenizer: keras_hub.models.T5Tokenizer, directory: str | os.PathLike
) -> pathlib.Path:
    """Write `backbone` and `tokenizer` as a Hugging Face T5 checkpoint dir.

    Args:
        backbone: a backbone without LoRA (`merged_backbone`).
        tokenizer: its tokenizer.
        directory: where to write; created if missing.

    Returns:
        The directory's path.

    Example:
    ```python
    export_hf(merged_backbone(base, adapter), base.tokenizer, "out")
    transformers.T5ForConditionalGeneration.from_pretrained("out")
    ```
    """
    from safetensors.numpy import save_file  # heavy: safetensors, imported only on export

    check_vocabulary_fits(tokenizer, backbone.vocabulary_size, f"export to {directory}")
    directory = pathlib.Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "config.json").write_text(json.dumps(hf_config(backbone), indent=2))
    save_file(hf_state_dict(backbone), str(directory / "model.safetensors"), metadata={"format": "pt"})
    write_tokenizer_files(tokenizer.proto, directory, _extra_ids(backbone, tokenizer))
    return directory


def export_keras_hub(
    backbone: keras_hub.models.T5Backbone, tokenizer: keras_hub.models.T5Tokenizer, directory: str | os.PathLike
) -> pathlib.Path:
    """Write `backbone` and `tokenizer` as a keras-hub preset dir.

    Args:
        backbone: a backbone without LoRA (`merged_backbone`).
        tokenizer: its tokenizer.
        directory: where to write; created if missing.

    Returns:
        The directory's path.

    Example:
    ```python
    export_keras_hub(merged_backbone(base, adapter), base.tokenizer, "out")
    load_base("out")
    ```
    """
    directory = pathlib.Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    backbone.save_to_preset(str(directory))
    tokenizer.save_to_preset(str(directory))
    return directory


def export(
    base: BaseModel, directory: str | os.PathLike, adapter: str | os.PathLike | None = None, format: str = "hf"
) -> pathlib.Path:
    """Merge `adapter` (if any) into `base` and write it to `directory` as `format`.

    Args:
        base: the base the adapter was trained on.
        directory: a new or empty directory to write.
        adapter: the adapter file from `save_adapter`; None exports the base.
        format: one of `FORMATS`: `hf` (a Hugging Face checkpoint) or `keras-hub` (a preset).

    Returns:
        The directory's path; an `InputError` (parameter `format` or `directory`) before
        anything is written when either is unusable.

    Example:
    ```python
    export(load_base("tiny"), "out", "adapters/trial_0.safetensors", format="keras-hub")
    ```
    """
    if format not in FORMATS:
        raise InputError(f"format {format}: choose from {' '.join(FORMATS)}", parameter="format")
    directory = pathlib.Path(directory)
    if directory.exists() and (not directory.is_dir() or any(directory.iterdir())):
        raise InputError(
            f"directory {directory} exists and is not an empty directory; pass a new directory",
            parameter="directory",
        )
    backbone = merged_backbone(base, adapter)
    writer = export_hf if format == "hf" else export_keras_hub
    return writer(backbone, base.tokenizer, directory)
