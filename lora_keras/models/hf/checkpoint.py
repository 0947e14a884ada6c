"""Hugging Face T5 / FLAN-T5 checkpoint directories as keras-hub `T5Backbone` weights, and back.

A checkpoint is `config.json`, `model.safetensors` or `pytorch_model.bin` (sharded or
not) and `spiece.model` or `tokenizer.json`. Every weight has one place in keras-hub's
`T5Backbone` (`weight_map`); what the backbone cannot represent is refused in one line.
The tied head of original T5 scales the decoder output by d_model^-0.5, as keras-hub's
`T5Seq2SeqLM` does for tied embeddings; an untied head that transformers still scales
gets the scale folded into its kernel.

Example:
```python
base = load_hf_checkpoint("path/to/flan-t5-small")       # a lora_keras BaseModel
logits = base.build_model()(inputs)                     # the logits transformers gives
```
"""

from __future__ import annotations

import json
import os
import pathlib
from collections.abc import Callable
from typing import TYPE_CHECKING

import keras
import numpy as np

from lora_keras.errors import InputError
from lora_keras.models.masking_warning import masking_warning_ignored
from lora_keras.models.tokenizer import check_vocabulary_fits

if TYPE_CHECKING:
    import keras_hub

    from lora_keras.models.base import BaseModel

CONFIG = "config.json"
SAFETENSORS = "model.safetensors"
PYTORCH_BIN = "pytorch_model.bin"
# What keras-hub's T5MultiHeadAttention hard-codes.
KERAS_HUB_BUCKETS, KERAS_HUB_MAX_DISTANCE = 32, 128
# transformers' T5Config defaults, for keys a config.json leaves out.
HF_DEFAULTS = {
    "vocab_size": 32128, "d_model": 512, "d_kv": 64, "d_ff": 2048, "num_layers": 6,
    "num_heads": 8, "relative_attention_num_buckets": 32, "relative_attention_max_distance": 128,
    "dropout_rate": 0.1, "layer_norm_epsilon": 1e-6, "feed_forward_proj": "relu",
}
# transformers' ACT2FN names -> Keras activations with the same formula.
ACTIVATIONS = {
    "relu": "relu",
    "gelu": "gelu",  # exact (erf), Keras's default
    "gelu_new": "keras_hub>gelu_approximate",  # tanh approximation
    "gelu_pytorch_tanh": "keras_hub>gelu_approximate",
    "silu": "silu",
    "swish": "silu",
}
# Weights a T5 checkpoint may hold that the model never reads or that copy `shared`.
IGNORED = (
    "encoder.embed_tokens.weight",
    "decoder.embed_tokens.weight",
    "decoder.block.0.layer.1.EncDecAttention.relative_attention_bias.weight",
)


def is_hf_checkpoint(path: str | os.PathLike) -> bool:
    """Whether `path` is a directory with a Hugging Face T5 `config.json`.

    Example:
    ```python
    is_hf_checkpoint("path/to/flan-t5-small")   # True
    ```
    """
    config = pathlib.Path(path) / CONFIG
    if not config.is_file() or (pathlib.Path(path) / "metadata.json").is_file():
        return False
    try:
        return json.loads(config.read_text()).get("model_type") == "t5"
    except json.JSONDecodeError:
        return False


def read_config(path: str | os.PathLike) -> dict:
    """The checkpoint's `config.json` with transformers' defaults filled in.

    Example:
    ```python
    read_config("path/to/flan-t5-small")["d_model"]   # 512
    ```
    """
    raw = json.loads((pathlib.Path(path) / CONFIG).read_text())
    return {**HF_DEFAULTS, **raw}


def feed_forward(config: dict, where: str) -> tuple[str | Callable, bool]:
    """`(keras activation, gated)` of a config's feed-forward, read as transformers reads it.

    `feed_forward_proj` is `ACT` or `gated-ACT` (`gated-gelu` means tanh GELU); an explicit
    `dense_act_fn` / `is_gated_act` in config.json wins, as in transformers 5.

    Args:
        config: an HF T5 config, as `read_config` returns it.
        where: what an `InputError`'s message starts with, e.g. `"model path/to/dir"`.

    Returns:
        The Keras activation (a name or a function) and whether the feed-forward is gated.

    Example:
    ```python
    feed_forward({"feed_forward_proj": "gated-gelu"}, "model x")   # (gelu_approximate, True)
    ```
    """
    proj = config["feed_forward_proj"]
    parts = proj.split("-")
    if len(parts) > 2 or (len(parts) == 2 and parts[0] != "gated"):
        raise InputError(
            f"{where}: feed_forward_proj {proj!r} is neither 'ACT' nor 'gated-ACT'; "
            "pass a T5 checkpoint (relu, gated-gelu, ...)",
            parameter="model",
        )
    act = config.get("dense_act_fn") or ("gelu_new" if proj == "gated-gelu" else parts[-1])
    gated = bool(config.get("is_gated_act", parts[0] == "gated"))
    if act not in ACTIVATIONS:
        raise InputError(
            f"{where}: activation {act!r} (feed_forward_proj {proj!r}) is not one keras-hub's T5Backbone "
            f"runs; pass a checkpoint using {', '.join(sorted(ACTIVATIONS))}, gated or not",
            parameter="model",
        )
    return keras.saving.get_registered_object(ACTIVATIONS[act]) or ACTIVATIONS[act], gated


def scales_decoder_output(config: dict) -> bool:
    """Whether transformers multiplies the decoder output by d_model^-0.5 before the head.

    Example:
    ```python
    scales_decoder_output({"tie_word_embeddings": False})   # False (T5 v1.1, FLAN-T5)
    ```
    """
    if "scale_decoder_outputs" in config:  # written by transformers 5
        return bool(config["scale_decoder_outputs"])
    return config.get("tie_word_embeddings", True) is not False


def backbone_kwargs(config: dict, tied: bool, where: str) -> dict:
    """`T5Backbone` arguments for an HF T5 config, or `InputError` naming what does not fit.

    Args:
        config: an HF T5 config, as `read_config` returns it.
        tied: whether the head shares the token embedding.
        where: what an `InputError`'s message starts with, e.g. `"model path/to/dir"`.

    Returns:
        Keyword arguments of `keras_hub.models.T5Backbone`.

    Example:
    ```python
    backbone = keras_hub.models.T5Backbone(**backbone_kwargs(read_config(path), False, f"model {path}"))
    ```
    """
    if config.get("model_type") != "t5" or not config.get("is_encoder_decoder", True):
        raise InputError(
            f"{where}: model_type {config.get('model_type')!r} is not a T5 encoder-decoder; "
            "pass a T5 or FLAN-T5 checkpoint",
            parameter="model",
        )
    decoder_layers = config.get("num_decoder_layers") or config["num_layers"]
    if decoder_layers != config["num_layers"]:
        raise InputError(
            f"{where}: num_decoder_layers {decoder_layers} != num_layers {config['num_layers']}, "
            "which keras-hub's T5Backbone cannot represent; pass a T5 with as many decoder as encoder layers",
            parameter="model",
        )
    for key, supported in (("relative_attention_num_buckets", KERAS_HUB_BUCKETS),
                           ("relative_attention_max_distance", KERAS_HUB_MAX_DISTANCE)):
        if config[key] != supported:
            raise InputError(
                f"{where}: {key} {config[key]} is not keras-hub's fixed {supported}; "
                f"pass a T5 checkpoint with {key}={supported}",
                parameter="model",
            )
    activation, gated = feed_forward(config, where)
    return dict(
        vocabulary_size=config["vocab_size"],
        num_layers=config["num_layers"],
        num_heads=config["num_heads"],
        hidden_dim=config["d_model"],
        intermediate_dim=config["d_ff"],
        key_value_dim=config["d_kv"],
        dropout=config["dropout_rate"],
        activation=activation,
        use_gated_activation=gated,
        layer_norm_epsilon=config["layer_norm_epsilon"],
        tie_embedding_weights=tied,
    )


def weight_map(backbone: keras_hub.models.T5Backbone) -> dict[str, tuple[keras.Variable, bool]]:
    """`{hf_name: (keras_variable, transposed)}` for every weight of a T5 backbone but the head.

    HF linear weights are (out, in), Keras kernels (in, out): those are `transposed`.
    The one table serves loading and export, so the two directions cannot drift apart.

    Example:
    ```python
    variable, transposed = weight_map(backbone)["encoder.block.0.layer.0.SelfAttention.q.weight"]
    ```
    """
    names = {"shared.weight": (backbone.token_embedding.embeddings, False)}
    stacks = (("encoder", backbone.encoder_transformer_layers, backbone.encoder_layer_norm),
              ("decoder", backbone.decoder_transformer_layers, backbone.decoder_layer_norm))
    for stack, layers, final_norm in stacks:
        for index, block in enumerate(layers):
            prefix = f"{stack}.block.{index}.layer"
            parts = [("0.SelfAttention", block.self_attention, block.self_attention_layer_norm)]
            if block.is_decoder:
                parts.append(("1.EncDecAttention", block.cross_attention, block.cross_attention_layer_norm))
            for name, attention, norm in parts:
                for short, dense in (("q", attention.query_projector), ("k", attention.key_projector),
                                     ("v", attention.value_projector), ("o", attention.output_projector)):
                    names[f"{prefix}.{name}.{short}.weight"] = (dense.kernel, True)
                if attention.use_relative_attention_bias:
                    names[f"{prefix}.{name}.relative_attention_bias.weight"] = (
                        attention.relative_attention_bias, False)
                names[f"{prefix}.{name.split('.')[0]}.layer_norm.weight"] = (norm.weight, False)
            ff = f"{prefix}.{len(parts)}"
            if block.use_gated_activation:
                names[f"{ff}.DenseReluDense.wi_0.weight"] = (block.input_projector.kernel, True)
                names[f"{ff}.DenseReluDense.wi_1.weight"] = (block.gate_projector.kernel, True)
            else:
                names[f"{ff}.DenseReluDense.wi.weight"] = (block.input_projector.kernel, True)
            names[f"{ff}.DenseReluDense.wo.weight"] = (block.output_projector.kernel, True)
            names[f"{ff}.layer_norm.weight"] = (block.layer_norm.weight, False)
        names[f"{stack}.final_layer_norm.weight"] = (final_norm.weight, False)
    return names


def read_state_dict(path: str | os.PathLike) -> dict[str, np.ndarray]:
    """`{name: float32 array}` from `model.safetensors` or `pytorch_model.bin`, sharded or not.

    Example:
    ```python
    read_state_dict("path/to/flan-t5-small")["shared.weight"].shape   # (32128, 512)
    ```
    """
    path = pathlib.Path(path)
    for single, reader in ((SAFETENSORS, _read_safetensors), (PYTORCH_BIN, _read_torch_bin)):
        files = [path / single]
        index = path / f"{single}.index.json"
        if index.is_file():
            files = [path / name for name in sorted(set(json.loads(index.read_text())["weight_map"].values()))]
        if all(f.is_file() for f in files):
            state = {}
            for file in files:
                state.update(reader(file))
            return {name: np.asarray(value, dtype=np.float32) for name, value in state.items()}
    raise InputError(
        f"model {path}: no weights ({SAFETENSORS} or {PYTORCH_BIN}); "
        "copy the checkpoint's weight files into that directory",
        parameter="model",
    )


def _read_safetensors(file: pathlib.Path) -> dict[str, np.ndarray]:
    import ml_dtypes  # noqa: F401  (comes with TensorFlow; lets numpy read bfloat16 checkpoints)
    from safetensors import safe_open  # heavy: safetensors, only to read a checkpoint's weights

    with safe_open(str(file), framework="numpy") as handle:
        return {name: handle.get_tensor(name) for name in handle.keys()}  # noqa: SIM118 (a handle, not a dict)


def _read_torch_bin(file: pathlib.Path) -> dict[str, np.ndarray]:
    try:
        import torch  # optional: PyTorch, only for pytorch_model.bin checkpoints
    except ImportError:
        raise InputError(
            f"model: {file} needs PyTorch to read; pip install torch==2.13.0 (the CPU build), "
            f"or convert it to {SAFETENSORS}",
            parameter="model",
        ) from None
    state = torch.load(str(file), map_location="cpu", weights_only=True)
    return {name: tensor.float().numpy() for name, tensor in state.items()}


def _assign(variable: keras.Variable, value: np.ndarray, name: str, where: str) -> None:
    if tuple(value.shape) != tuple(variable.shape):
        raise InputError(
            f"{where}: weight {name} has shape {tuple(value.shape)}, config.json implies "
            f"{tuple(variable.shape)}; pass a checkpoint whose config matches its weights",
            parameter="model",
        )
    variable.assign(value)


def load_hf_checkpoint(path: str | os.PathLike, name: str | None = None) -> BaseModel:
    """A `BaseModel` (keras-hub T5 config, weights, tokenizer) from a Hugging Face T5 checkpoint dir.

    Args:
        path: the checkpoint directory.
        name: the base's name; the path when None.

    Returns:
        The `BaseModel`; an `InputError` (parameter `model`) naming what does not fit.

    Example:
    ```python
    base = load_hf_checkpoint("flan-t5-small")
    model = base.build_model()
    ```
    """
    import keras_hub  # heavy: TensorFlow, imported only when a checkpoint is loaded

    from lora_keras.models.base import BaseModel
    from lora_keras.models.hf.tokenizer import read_tokenizer

    path = pathlib.Path(path)
    where = f"model {path}"
    config = read_config(path)
    kwargs = backbone_kwargs(config, False, where)  # refuse what cannot be represented before reading weights
    state = read_state_dict(path)
    shared = state.get("shared.weight")
    if shared is None:
        raise InputError(f"{where}: the weights have no shared.weight; pass a T5 checkpoint", parameter="model")
    for copy in IGNORED[:2]:
        if copy in state and not np.array_equal(state[copy], shared):
            raise InputError(
                f"{where}: {copy} differs from shared.weight, which keras-hub's T5Backbone "
                "cannot represent (one embedding for encoder and decoder); pass a standard T5 checkpoint",
                parameter="model",
            )
    scale = scales_decoder_output(config)
    head = state.get("lm_head.weight")
    tied = scale and (head is None or np.array_equal(head, shared))
    tokenizer = read_tokenizer(path)  # bad tokenizers fail before the model is built
    check_vocabulary_fits(tokenizer, config["vocab_size"], where, "model")

    with masking_warning_ignored():
        backbone = keras_hub.models.T5Backbone(**{**kwargs, "tie_embedding_weights": tied})
    mapping = weight_map(backbone)
    unknown = sorted(set(state) - set(mapping) - set(IGNORED) - {"lm_head.weight"})
    if unknown:
        raise InputError(
            f"{where}: weight {unknown[0]} (and {len(unknown) - 1} more) has no place in keras-hub's "
            "T5Backbone; pass a T5 checkpoint (T5ForConditionalGeneration)",
            parameter="model",
        )
    missing = sorted(set(mapping) - set(state))
    if missing:
        raise InputError(f"{where}: the weights lack {missing[0]}; pass a complete T5 checkpoint", parameter="model")
    for hf_name, (variable, transposed) in mapping.items():
        value = state[hf_name]
        _assign(variable, value.T if transposed else value, hf_name, where)
    if not tied:
        head = shared if head is None else head
        if scale:  # an untied head transformers still scales: fold d_model^-0.5 into it
            head = head * np.float32(config["d_model"] ** -0.5)
        _assign(backbone.token_embedding.reverse_embeddings, head.T, "lm_head.weight", where)
    return BaseModel(
        name=name or str(path),
        backbone_config=backbone.get_config(),
        weights=backbone.get_weights(),
        tokenizer=tokenizer,
        layout=backbone,
    )


def hf_config(backbone: keras_hub.models.T5Backbone) -> dict:
    """The `config.json` transformers (4 and 5) reads as this backbone's T5.

    Example:
    ```python
    (directory / "config.json").write_text(json.dumps(hf_config(backbone), indent=2))
    ```
    """
    activation = keras.activations.serialize(backbone.activation)
    activation = activation if isinstance(activation, str) else activation.get("config")
    hf_act = {keras_name: hf for hf, keras_name in ACTIVATIONS.items() if hf not in ("gelu_pytorch_tanh", "swish")}
    if activation not in hf_act:
        raise InputError(
            f"format hf: the backbone's activation {activation!r} has no transformers T5 equivalent "
            f"(those are {', '.join(sorted(hf_act))}); use format keras-hub",
            parameter="format",
        )
    act = hf_act[activation]
    # "gated-gelu" is tanh GELU to transformers; dense_act_fn below says which GELU it is.
    proj = f"gated-{'gelu' if act == 'gelu_new' else act}" if backbone.use_gated_activation else act
    return {
        "architectures": ["T5ForConditionalGeneration"],
        "model_type": "t5",
        "vocab_size": backbone.vocabulary_size,
        "d_model": backbone.hidden_dim,
        "d_kv": backbone.key_value_dim or backbone.hidden_dim // backbone.num_heads,
        "d_ff": backbone.intermediate_dim,
        "num_layers": backbone.num_layers,
        "num_decoder_layers": backbone.num_layers,
        "num_heads": backbone.num_heads,
        "relative_attention_num_buckets": KERAS_HUB_BUCKETS,
        "relative_attention_max_distance": KERAS_HUB_MAX_DISTANCE,
        "dropout_rate": backbone.dropout,
        "layer_norm_epsilon": backbone.layer_norm_epsilon,
        "initializer_factor": 1.0,
        "feed_forward_proj": proj,
        "dense_act_fn": act,
        "is_gated_act": backbone.use_gated_activation,
        # A tied head is scaled by d_model^-0.5 (original T5); an untied one is not (T5 v1.1, FLAN).
        "tie_word_embeddings": backbone.tie_embedding_weights,
        "scale_decoder_outputs": backbone.tie_embedding_weights,
        "is_encoder_decoder": True,
        "pad_token_id": 0,
        "eos_token_id": 1,
        "decoder_start_token_id": 0,
        "use_cache": True,
        "torch_dtype": "float32",
    }


def hf_state_dict(backbone: keras_hub.models.T5Backbone) -> dict[str, np.ndarray]:
    """`{hf_name: float32 array}` of a backbone without LoRA, `lm_head.weight` when untied.

    Example:
    ```python
    safetensors.numpy.save_file(hf_state_dict(backbone), "out/model.safetensors")
    ```
    """
    state = {}
    for hf_name, (variable, transposed) in weight_map(backbone).items():
        value = keras.ops.convert_to_numpy(variable).astype(np.float32)
        state[hf_name] = np.ascontiguousarray(value.T if transposed else value)
    if not backbone.tie_embedding_weights:
        head = keras.ops.convert_to_numpy(backbone.token_embedding.reverse_embeddings)
        state["lm_head.weight"] = np.ascontiguousarray(head.T.astype(np.float32))
    return state
