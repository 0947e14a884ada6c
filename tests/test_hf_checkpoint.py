"""Hugging Face T5 checkpoints: parity with transformers (logits, greedy ids), tokenizer ids, refusals."""

import json
import shutil
import sys

import keras
import keras_hub
import numpy as np
import pytest
from conftest import TINY_PREFIX, require
from hf_models import (
    VARIANTS,
    cut_at_eos,
    load_reference,
    model_inputs,
    reference_greedy,
    reference_logits,
    save_hf_t5,
)

from lora_keras.cli import flag_message
from lora_keras.errors import InputError
from lora_keras.models.hf.checkpoint import hf_config, load_hf_checkpoint
from lora_keras.models.sources import load_base

torch = require("torch")

SOURCES = [
    TINY_PREFIX + "the red dog saw a small cat .",
    TINY_PREFIX + "my sister will buy seven old books .",
    TINY_PREFIX + "the teacher did not see the river .",
]
SENTENCES = [
    "the red dog saw a small cat .",
    "translate English to Dravic: my sister will buy seven old books .",
    "The Teacher, did NOT see 3 rivers!",
    "  two   spaces  and\ttabs  ",
    "naïve café in Zürich — 42 km",
    "unknownwordzzz qqq xx",
    "dogs' cats; birds: (fish) [trees]",
    "a",
    "",
    "the old man will not walk to the big house tomorrow .",
]
MAX_NEW_TOKENS = 6


@pytest.fixture(scope="module", params=sorted(VARIANTS))
def variant(request, hf_t5):
    return request.param, hf_t5(request.param)


def keras_logits(backbone, ids, mask, decoder):
    """Logits of a `T5Seq2SeqLM` on `backbone` (no new backbone: building one takes seconds here)."""
    model = keras_hub.models.T5Seq2SeqLM(backbone=backbone, preprocessor=None)
    inputs = {"encoder_token_ids": ids, "encoder_padding_mask": mask,
              "decoder_token_ids": decoder, "decoder_padding_mask": np.ones_like(decoder)}
    return keras.ops.convert_to_numpy(model(inputs))


def keras_greedy(backbone, ids, mask, max_new_tokens):
    model = keras_hub.models.T5Seq2SeqLM(backbone=backbone, preprocessor=None)
    model.compile(sampler="greedy")
    decoder = np.zeros((len(ids), max_new_tokens + 1), np.int32)
    padding = np.zeros_like(decoder)
    padding[:, 0] = 1
    out = model.generate({"encoder_token_ids": ids, "encoder_padding_mask": mask,
                          "decoder_token_ids": decoder, "decoder_padding_mask": padding}, stop_token_ids=[1])
    return [cut_at_eos(row[1:]) for row in np.asarray(out["decoder_token_ids"]).tolist()]


def test_logits_and_greedy_ids_match_transformers(variant):
    name, directory = variant
    reference = load_reference(directory)
    head_is_shared = reference.lm_head.weight.data_ptr() == reference.shared.weight.data_ptr()
    assert head_is_shared == (name == "t5")  # the reference really has the head we think it has
    assert reference.config.scale_decoder_outputs == (name != "flan")
    base = load_hf_checkpoint(directory)
    assert base.backbone_config["tie_embedding_weights"] == (name == "t5")
    assert base.backbone_config["use_gated_activation"] == (name != "t5")
    ids, mask, decoder = model_inputs(base.tokenizer, SOURCES)
    assert mask.min() == 0  # one row is padded

    backbone = base.build_backbone()
    ours = keras_logits(backbone, ids, mask, decoder)
    theirs = reference_logits(reference, ids, mask, decoder)
    difference = float(np.abs(ours - theirs).max())
    print(f"\n{name}: max abs logit difference {difference:.3g} (logits up to {np.abs(theirs).max():.3g})")
    assert ours.shape == theirs.shape and difference < 1e-4

    generated = keras_greedy(backbone, ids, mask, MAX_NEW_TOKENS)
    expected = reference_greedy(reference, ids, mask, MAX_NEW_TOKENS)
    assert generated == expected
    assert len({tuple(row) for row in expected}) > 1 or len(set(expected[0])) > 1  # not one token repeated


def test_tokenizer_ids_match_transformers(hf_t5, tmp_path):
    import transformers

    directory = hf_t5("flan")
    reference = transformers.AutoTokenizer.from_pretrained(str(directory))
    expected = reference(SENTENCES, add_special_tokens=False)["input_ids"]
    ours = load_hf_checkpoint(directory).tokenizer
    assert [list(np.asarray(ours(text))) for text in SENTENCES] == expected
    assert any(2 in row for row in expected)  # unknown characters are in the sample

    # Only tokenizer.json: converted back to SentencePiece, same ids.
    json_only = tmp_path / "json_only"
    shutil.copytree(directory, json_only)
    (json_only / "spiece.model").unlink()
    converted = load_hf_checkpoint(json_only).tokenizer
    assert [list(np.asarray(converted(text))) for text in SENTENCES] == expected


def test_pytorch_bin_sharded_and_bfloat16_checkpoints_load_like_safetensors(hf_t5, tmp_path, tiny_proto):
    from safetensors.numpy import load_file, save_file

    bin_dir = save_hf_t5(tmp_path / "bin", "flan", tiny_proto, weights="bin")
    assert (bin_dir / "pytorch_model.bin").is_file() and not (bin_dir / "model.safetensors").exists()
    sharded = tmp_path / "sharded"
    shutil.copytree(hf_t5("flan"), sharded)
    state = load_file(str(sharded / "model.safetensors"))
    (sharded / "model.safetensors").unlink()
    names = sorted(state)
    weight_map = {}
    for number, part in enumerate((names[: len(names) // 2], names[len(names) // 2 :])):
        file = f"model-{number + 1:05d}-of-00002.safetensors"
        save_file({name: state[name] for name in part}, str(sharded / file))
        weight_map.update(dict.fromkeys(part, file))
    (sharded / "model.safetensors.index.json").write_text(json.dumps({"metadata": {}, "weight_map": weight_map}))

    bfloat16 = tmp_path / "bfloat16"
    shutil.copytree(hf_t5("flan"), bfloat16)
    from safetensors.torch import save_file as save_torch

    save_torch({name: torch.from_numpy(value).to(torch.bfloat16) for name, value in state.items()},
               str(bfloat16 / "model.safetensors"))

    expected = load_base(str(hf_t5("flan"))).weights
    for directory in (bin_dir, sharded, bfloat16):
        weights = load_base(str(directory)).weights
        assert len(weights) == len(expected)
        for a, b in zip(weights, expected):
            if directory == bfloat16:  # 8 significant bits
                assert a.dtype == np.float32
                np.testing.assert_allclose(a, b, rtol=2**-8, atol=0)
            else:
                np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize(
    "change, message",
    [
        ({"num_decoder_layers": 1}, "num_decoder_layers 1 != num_layers 2"),
        ({"feed_forward_proj": "gated-mish", "dense_act_fn": "mish"}, "activation 'mish' (feed_forward_proj"),
        ({"feed_forward_proj": "gelu-relu-x"}, "feed_forward_proj 'gelu-relu-x' is neither"),
        ({"relative_attention_num_buckets": 16}, "relative_attention_num_buckets 16 is not keras-hub's fixed 32"),
        ({"relative_attention_max_distance": 64}, "relative_attention_max_distance 64 is not keras-hub's fixed 128"),
        ({"is_encoder_decoder": False}, "model_type 't5' is not a T5 encoder-decoder; pass a T5 or FLAN-T5"),
        ({"model_type": "bart"}, "neither a keras-hub preset nor a Hugging Face T5 config"),
        ({"d_model": 48}, "config.json implies"),
    ],
)
def test_what_keras_hub_cannot_represent_is_refused(hf_t5, tmp_path, change, message):
    directory = tmp_path / "changed"
    shutil.copytree(hf_t5("flan"), directory)
    config = json.loads((directory / "config.json").read_text())
    (directory / "config.json").write_text(json.dumps({**config, **change}))
    with pytest.raises(InputError) as caught:
        load_base(str(directory))
    assert message in str(caught.value) and "\n" not in str(caught.value)


def edit_state(directory, edit):
    from safetensors.numpy import load_file, save_file

    state = load_file(str(directory / "model.safetensors"))
    edit(state)
    save_file(state, str(directory / "model.safetensors"), metadata={"format": "pt"})


SHARED = "shared.weight"
NORM = "decoder.final_layer_norm.weight"


@pytest.mark.parametrize(
    "edit, message",
    [
        (lambda state: state.pop(SHARED), "the weights have no shared.weight; pass a T5 checkpoint"),
        (lambda state: state.update({"encoder.embed_tokens.weight": state[SHARED] + 1}),
         "encoder.embed_tokens.weight differs from shared.weight, which keras-hub's T5Backbone cannot represent"),
        (lambda state: state.update({"decoder.embed_tokens.weight": state[SHARED][::-1].copy()}),
         "decoder.embed_tokens.weight differs from shared.weight"),
        (lambda state: state.update({"encoder.block.0.layer.0.SelfAttention.x.weight": state[NORM],
                                     "pooler.weight": state[NORM]}),
         "weight encoder.block.0.layer.0.SelfAttention.x.weight (and 1 more) has no place in keras-hub's T5Backbone"),
        (lambda state: state.pop(NORM), f"the weights lack {NORM}; pass a complete T5 checkpoint"),
        (lambda state: state.update({"lm_head.weight": state["lm_head.weight"][:-1].copy()}),
         "weight lm_head.weight has shape (32, 299), config.json implies (32, 300)"),
    ],
    ids=["no-shared", "encoder-embedding", "decoder-embedding", "unknown", "missing", "head-shape"],
)
def test_weights_that_do_not_fit_are_refused(hf_t5, tmp_path, edit, message):
    directory = tmp_path / "edited"
    shutil.copytree(hf_t5("flan"), directory)
    edit_state(directory, edit)
    with pytest.raises(InputError) as caught:
        load_base(str(directory))
    assert str(caught.value).startswith(f"model {directory}: ") and message in str(caught.value)
    assert caught.value.parameter == "model"
    assert "\n" not in str(caught.value)


@pytest.mark.parametrize("files", ["none", "bin-without-torch"])
def test_weights_that_cannot_be_read_are_refused(hf_t5, tmp_path, monkeypatch, files):
    directory = tmp_path / files
    shutil.copytree(hf_t5("flan"), directory)
    (directory / "model.safetensors").unlink()
    if files == "none":
        message = f"model {directory}: no weights (model.safetensors or pytorch_model.bin); copy the checkpoint's"
    else:
        (directory / "pytorch_model.bin").write_bytes(b"")
        monkeypatch.setitem(sys.modules, "torch", None)  # `import torch` raises ImportError
        message = (f"model: {directory / 'pytorch_model.bin'} needs PyTorch to read; pip install torch==2.13.0 "
                   "(the CPU build), or convert it to model.safetensors")
    with pytest.raises(InputError) as caught:
        load_base(str(directory))
    assert str(caught.value).startswith(message) and "\n" not in str(caught.value)


def test_hf_export_refuses_an_activation_transformers_t5_lacks():
    backbone = keras_hub.models.T5Backbone(vocabulary_size=8, num_layers=1, num_heads=1, hidden_dim=4,
                                           intermediate_dim=4, activation="tanh")
    with pytest.raises(InputError) as caught:
        hf_config(backbone)
    assert str(caught.value) == ("format hf: the backbone's activation 'tanh' has no transformers T5 equivalent "
                                 "(those are gelu, keras_hub>gelu_approximate, relu, silu); use format keras-hub")
    assert flag_message(caught.value).startswith("--format hf: the backbone's activation 'tanh'")


def test_hub_id_loads_from_the_hub_cache(hf_t5, tmp_path, monkeypatch):
    """`owner/name` goes through huggingface_hub: here offline, from a cache holding the snapshot."""
    import huggingface_hub

    snapshot = tmp_path / "hub" / "models--someone--tiny-t5" / "snapshots" / ("0" * 40)
    shutil.copytree(hf_t5("flan"), snapshot)
    (tmp_path / "hub" / "models--someone--tiny-t5" / "refs").mkdir()
    (tmp_path / "hub" / "models--someone--tiny-t5" / "refs" / "main").write_text("0" * 40)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    base = load_base("someone/tiny-t5")
    assert base.name == "someone/tiny-t5"
    for ours, theirs in zip(base.weights, load_hf_checkpoint(hf_t5("flan")).weights):
        np.testing.assert_array_equal(ours, theirs)
    with pytest.raises(InputError, match="someone/other: cannot download from the Hugging Face hub"):
        load_base("someone/other")
