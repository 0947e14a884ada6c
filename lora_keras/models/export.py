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

import json
import pathlib

import keras

from lora_keras.errors import InputError
from lora_keras.models.hf.checkpoint import hf_config, hf_state_dict
from lora_keras.models.hf.tokenizer import SENTINEL, write_tokenizer_files
from lora_keras.adapters import TARGETS, load_adapter, merge_lora, target_layers
from lora_keras.models.tokenizer import check_vocabulary_fits

FORMATS = ("hf", "keras-hub")
T5_EXTRA_IDS = 100  # sentinels <extra_id_0..99> after the SentencePiece pieces, as in T5 checkpoints


def merged_backbone(base, adapter=None):
    """A LoRA-free `T5Backbone` of `base` with `adapter` (a file from `save_adapter`) merged in.

    Example: `merged_backbone(load_base("tiny"), "adapters/trial_0.safetensors")`.
    """
    backbone = base.build_backbone()
    if adapter is None:
        return backbone
    adapted = base.build_backbone()
    load_adapter(adapted, adapter)
    merge_lora(adapted)  # kernels now hold W + (alpha / rank) A B
    merged = target_layers(adapted, TARGETS)
    for path, dense in target_layers(backbone, TARGETS).items():
        dense.kernel.assign(keras.ops.convert_to_numpy(merged[path].kernel))
    return backbone


def _extra_ids(backbone, tokenizer):
    """T5's 100 sentinels when the model's vocabulary has room for them past the pieces, else 0."""
    pieces = tokenizer.vocabulary_size()
    has_sentinels = any(SENTINEL.fullmatch(piece) for piece in tokenizer.get_vocabulary()[-T5_EXTRA_IDS:])
    return T5_EXTRA_IDS if not has_sentinels and backbone.vocabulary_size >= pieces + T5_EXTRA_IDS else 0


def export_hf(backbone, tokenizer, directory):
    """Write `backbone` and `tokenizer` as a Hugging Face T5 checkpoint dir; returns its path.

    Example: `export_hf(merged_backbone(base, adapter), base.tokenizer, "out")`, then
    `transformers.T5ForConditionalGeneration.from_pretrained("out")`.
    """
    from safetensors.numpy import save_file

    check_vocabulary_fits(tokenizer, backbone.vocabulary_size, f"export to {directory}")
    directory = pathlib.Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "config.json").write_text(json.dumps(hf_config(backbone), indent=2))
    save_file(hf_state_dict(backbone), str(directory / "model.safetensors"), metadata={"format": "pt"})
    write_tokenizer_files(tokenizer.proto, directory, _extra_ids(backbone, tokenizer))
    return directory


def export_keras_hub(backbone, tokenizer, directory):
    """Write `backbone` and `tokenizer` as a keras-hub preset dir; returns its path.

    Example: `export_keras_hub(merged_backbone(base, adapter), base.tokenizer, "out")`, then
    `load_base("out")`.
    """
    directory = pathlib.Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    backbone.save_to_preset(str(directory))
    tokenizer.save_to_preset(str(directory))
    return directory


def export(base, directory, adapter=None, format="hf"):
    """Merge `adapter` (if any) into `base` and write it to `directory` as `format` (`hf` or `keras-hub`)."""
    if format not in FORMATS:
        raise InputError(f"--format {format}: choose from {' '.join(FORMATS)}")
    directory = pathlib.Path(directory)
    if directory.exists() and (not directory.is_dir() or any(directory.iterdir())):
        raise InputError(f"--out {directory} exists and is not an empty directory; pass a new directory")
    backbone = merged_backbone(base, adapter)
    writer = export_hf if format == "hf" else export_keras_hub
    return writer(backbone, base.tokenizer, directory)
