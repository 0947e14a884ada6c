"""Base T5 models from a model spec: `tiny` (the offline demo), a keras-hub preset dir,
a Hugging Face T5 checkpoint dir, or a hub id such as `google/flan-t5-small`.

The base is read once per run and kept as a config plus weights, so each trial
builds a fresh `T5Seq2SeqLM` without touching the disk.

Example:
```python
base = load_base("path/to/flan-t5-small")     # or "tiny", or a keras-hub preset dir
model = base.build_model()                 # keras_hub.models.T5Seq2SeqLM, no preprocessor
ids = base.tokenizer(["translate English to German: hello ."])
```
"""

import dataclasses
import json
import pathlib
import warnings

import keras_hub

from lora_keras.errors import InputError
from lora_keras.token_loss import TokenLossSeq2SeqLM
from lora_keras.tokenizer import check_vocabulary_fits

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


def _is_keras_hub_preset(path):
    return (path / "metadata.json").is_file() and (path / "config.json").is_file()


def load_preset(path, name=None, task=None):
    """Read a keras-hub T5 preset directory into a `BaseModel`."""
    path = pathlib.Path(path)
    config = json.loads((path / "config.json").read_text())
    if config.get("class_name") != "T5Backbone":
        raise InputError(
            f"--model: {path} holds a {config.get('class_name')}, not a T5Backbone; "
            "pass a T5 preset directory"
        )
    backbone = keras_hub.models.T5Backbone.from_preset(str(path))
    tokenizer = keras_hub.models.T5Tokenizer.from_preset(str(path))
    check_vocabulary_fits(tokenizer, backbone.vocabulary_size, f"--model {path}")
    return BaseModel(
        name=name or str(path),
        backbone_config=backbone.get_config(),
        weights=backbone.get_weights(),
        tokenizer=tokenizer,
        task=task,
    )


def load_base(spec, cache_root=None, verbose=1):
    """The base model named by `spec`: `tiny`, a local keras-hub preset or HF T5 checkpoint dir, or a hub id.

    Example: `load_base("google/flan-t5-small")` (downloads where the network allows).
    """
    from lora_keras import hf_checkpoint, hf_hub

    if spec == "tiny":
        from lora_keras import demo

        preset = demo.ensure_demo_base(demo.DemoConfig(), cache_root, verbose=verbose)
        return load_preset(preset, name="tiny", task=demo.read_task(preset))
    path = pathlib.Path(spec)
    if hf_hub.is_hub_id(spec):
        path = hf_hub.download(spec)
    if not path.is_dir():
        raise InputError(
            f"--model: {spec} is neither 'tiny' nor a directory; pass 'tiny', a local keras-hub "
            "preset or Hugging Face T5 checkpoint directory, or a hub id such as google/flan-t5-small"
        )
    if _is_keras_hub_preset(path):
        return load_preset(path, name=spec)
    if hf_checkpoint.is_hf_checkpoint(path):
        return hf_checkpoint.load_hf_checkpoint(path, name=spec)
    if (path / "config.json").is_file():
        raise InputError(
            f"--model: {spec} holds a config.json that is neither a keras-hub preset nor a Hugging Face "
            "T5 config (model_type t5); pass a T5 or FLAN-T5 checkpoint directory"
        )
    raise InputError(
        f"--model: {spec} has no keras-hub preset (metadata.json, config.json) nor Hugging Face "
        "checkpoint (config.json); pass 'tiny', a keras-hub T5 preset or a T5 checkpoint directory"
    )
