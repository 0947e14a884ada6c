"""LoRA exactness, parameter formula, adapter save/load/merge, bad ranks and targets."""

import math

import keras
import keras_hub
import numpy as np
import pytest
import tensorflow as tf

from conftest import TINY_PREFIX, tiny_backbone_kwargs
from lora_keras.data.corpus import read_pairs
from lora_keras.data.pipeline import make_dataset, tokenize_pairs
from lora_keras.errors import InputError
from lora_keras.models.base import BaseModel
from lora_keras.models.sources import load_preset
from lora_keras.adapters import (
    LoraConfig,
    add_lora,
    adapted_layers,
    load_adapter,
    lora_parameter_count,
    merge_lora,
    read_adapter,
    save_adapter,
    target_layers,
)

VOCAB = 120


def make_backbone(**overrides):
    keras.utils.set_random_seed(0)
    return keras_hub.models.T5Backbone(**{**tiny_backbone_kwargs(VOCAB), **overrides})


def make_inputs(batch=3, length=7, seed=1):
    rng = np.random.default_rng(seed)
    ids = rng.integers(3, VOCAB, (batch, length)).astype("int32")
    mask = np.ones((batch, length), "int32")
    mask[0, -2:] = 0
    return {"encoder_token_ids": ids, "encoder_padding_mask": mask,
            "decoder_token_ids": ids[:, ::-1].copy(), "decoder_padding_mask": np.ones_like(mask)}


def decoder_output(backbone, inputs):
    return keras.ops.convert_to_numpy(backbone(inputs)["decoder_sequence_output"])


def test_adapted_model_equals_base_at_init():
    backbone = make_backbone()
    inputs = make_inputs()
    before = decoder_output(backbone, inputs)
    add_lora(backbone, LoraConfig(rank=4, targets=("q", "k", "v", "o", "wi", "wo")), seed=0)
    np.testing.assert_array_equal(decoder_output(backbone, inputs), before)


def test_adapted_dense_computes_w_plus_scaled_a_b_in_inference_and_training():
    """Inference (Keras's merged kernel) and training (unmerged `x·W + s·(x·A)·B`) both give `x·(W + s·A·B)`."""
    backbone = make_backbone()
    layers = add_lora(backbone, LoraConfig(rank=2, alpha=6, targets=("v",)), seed=0)
    dense = layers["decoder/1/cross_attention/v"]
    rng = np.random.default_rng(0)
    a = rng.normal(size=dense.lora_kernel_a.shape).astype("float32")
    b = rng.normal(size=dense.lora_kernel_b.shape).astype("float32")
    dense.lora_kernel_a.assign(a)
    dense.lora_kernel_b.assign(b)
    x = rng.normal(size=(5, 32)).astype("float32")
    plain = keras.layers.Dense(dense.units, use_bias=False)
    plain.build((None, 32))
    w = keras.ops.convert_to_numpy(dense._kernel)
    plain.kernel.assign(w + (6 / 2) * a @ b)
    inference = keras.ops.convert_to_numpy(dense(x, training=False))
    np.testing.assert_allclose(inference, keras.ops.convert_to_numpy(plain(x)), atol=1e-5)
    # The training path, unmerged, against the merged formula in float64.
    expected = x.astype("float64") @ (w.astype("float64") + 3.0 * a.astype("float64") @ b.astype("float64"))
    assert np.abs(expected - x @ w).min() > 1e-3  # the adapter moves every output
    training = keras.ops.convert_to_numpy(dense(x, training=True))
    np.testing.assert_allclose(training, expected, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(training, inference, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("targets, rank", [(("q", "v"), 1), (("q", "v"), 4), (("k", "o", "wi", "wo"), 3)])
def test_trainable_parameters_follow_formula(targets, rank):
    backbone = make_backbone()
    # encoder: 2 layers x self-attention; decoder: 2 layers x (self + cross).
    attention_layers = 2 * 1 + 2 * 2
    d, inner, ff = 32, 2 * 16, 64
    shapes = {"q": [(d, inner)], "k": [(d, inner)], "v": [(d, inner)], "o": [(inner, d)],
              "wi": [(d, ff), (d, ff)], "wo": [(ff, d)]}
    expected = 0
    for target in targets:
        copies = attention_layers if target in "qkvo" else 4  # feed-forwards: 2 enc + 2 dec
        expected += copies * sum(rank * (i + o) for i, o in shapes[target])
    config = LoraConfig(rank=rank, targets=targets)
    assert lora_parameter_count(backbone, config) == expected
    add_lora(backbone, config)
    trainable = sum(int(np.prod(v.shape)) for v in backbone.trainable_weights)
    assert trainable == expected
    assert all(not v.trainable for v in backbone.weights if "lora" not in v.path)


def test_targets_pick_t5_layers_by_name():
    backbone = make_backbone()
    paths = sorted(target_layers(backbone, ["q", "wi"]))
    assert "encoder/0/self_attention/q" in paths
    assert "decoder/1/cross_attention/q" in paths
    assert "decoder/0/feed_forward/wi_1" in paths  # gated: both input projections
    assert len(paths) == 6 + 8
    relu = make_backbone(use_gated_activation=False, activation="relu")
    assert len(target_layers(relu, ["wi"])) == 4


def test_adapter_round_trip_alone(tmp_path):
    backbone = make_backbone()
    config = LoraConfig(rank=3, alpha=5, targets=("q", "v"))
    add_lora(backbone, config, seed=0)
    for dense in adapted_layers(backbone).values():
        dense.lora_kernel_b.assign(np.full(dense.lora_kernel_b.shape, 0.05, "float32"))
    inputs = make_inputs()
    adapted = decoder_output(backbone, inputs)
    path = tmp_path / "adapter.safetensors"
    save_adapter(backbone, path, config)
    # Only the LoRA matrices are stored: a few kilobytes, not the model.
    assert path.stat().st_size < 4 * lora_parameter_count(make_backbone(), config) + 4096

    fresh = make_backbone()  # same seed -> same base weights
    loaded = load_adapter(fresh, path)
    assert loaded == LoraConfig(3, 5.0, ("q", "v"))
    np.testing.assert_allclose(decoder_output(fresh, inputs), adapted, atol=1e-6)


def test_merge_keeps_outputs_and_drops_the_adapter_effect():
    backbone = make_backbone()
    add_lora(backbone, LoraConfig(rank=2, targets=("q", "v", "wo")), seed=0)
    for dense in adapted_layers(backbone).values():
        dense.lora_kernel_b.assign(np.full(dense.lora_kernel_b.shape, 0.1, "float32"))
    inputs = make_inputs()
    adapted = decoder_output(backbone, inputs)
    merge_lora(backbone)
    np.testing.assert_allclose(decoder_output(backbone, inputs), adapted, atol=1e-5)
    for dense in adapted_layers(backbone).values():
        assert not np.any(keras.ops.convert_to_numpy(dense.lora_kernel_b))


def test_adapter_for_another_model_is_refused(tmp_path):
    backbone = make_backbone()
    add_lora(backbone, LoraConfig(rank=2, targets=("q",)))
    save_adapter(backbone, tmp_path / "a.safetensors")
    other = make_backbone(num_layers=1)
    with pytest.raises(InputError, match="does not fit this model"):
        load_adapter(other, tmp_path / "a.safetensors")


@pytest.mark.parametrize(
    "config, message",
    [
        (LoraConfig(rank=0), "positive integer"),
        (LoraConfig(rank=33), "rank 33 is wider than layer"),
        (LoraConfig(rank=2, targets=("q", "x")), "unknown LoRA target"),
        (LoraConfig(rank=2, alpha=-1), "alpha must be positive"),
        (LoraConfig(rank=2, dropout=1.0), "dropout must be at least 0 and below 1"),
    ],
)
def test_bad_configs_raise_input_error(config, message):
    with pytest.raises(InputError, match=message):
        add_lora(make_backbone(), config)


def test_unreadable_adapter_files_raise_input_error(tmp_path):
    (tmp_path / "text.safetensors").write_text("not an adapter")
    for name in ("missing.safetensors", "text.safetensors"):
        with pytest.raises(InputError, match="cannot read adapter"):
            load_adapter(make_backbone(), tmp_path / name)


def adapted_pair(dropout, seed=0):
    """A backbone with LoRA (q, v, wo) at `dropout` and B set away from zero, and its inputs."""
    backbone = make_backbone()
    add_lora(backbone, LoraConfig(rank=2, alpha=4, targets=("q", "v", "wo"), dropout=dropout), seed=seed)
    rng = np.random.default_rng(2)
    for dense in adapted_layers(backbone).values():
        dense.lora_kernel_b.assign(rng.normal(0, 0.5, dense.lora_kernel_b.shape).astype("float32"))
    return backbone


def training_output(backbone, inputs):
    return keras.ops.convert_to_numpy(backbone(inputs, training=True)["decoder_sequence_output"])


def test_lora_dropout_acts_in_training_only():
    inputs = make_inputs()
    dropped, plain = adapted_pair(0.5), adapted_pair(0.0)  # same seed: same A, same B
    # Inference: dropout off, the exact merged path, equal to the adapter without dropout.
    np.testing.assert_array_equal(decoder_output(dropped, inputs), decoder_output(plain, inputs))
    # Training: each call draws a new mask on the LoRA branch, in eager and in a traced step alike.
    first, second = training_output(dropped, inputs), training_output(dropped, inputs)
    assert np.abs(first - second).max() > 1e-3
    dense = adapted_layers(dropped)["decoder/1/cross_attention/v"]
    traced = tf.function(lambda x: dense(x, training=True))
    x = np.random.default_rng(4).normal(size=(8, 32)).astype("float32")
    assert np.abs(traced(x).numpy() - traced(x).numpy()).max() > 1e-3
    # Without dropout, training (unmerged) equals inference (merged) with B away from zero.
    trained = training_output(plain, inputs)
    np.testing.assert_allclose(trained, decoder_output(plain, inputs), atol=1e-5)
    # Only the LoRA branch is dropped: with B = 0 training equals inference, the frozen base.
    for dense in adapted_layers(dropped).values():
        dense.lora_kernel_b.assign(np.zeros(dense.lora_kernel_b.shape, "float32"))
    base = decoder_output(dropped, inputs)
    np.testing.assert_allclose(training_output(dropped, inputs), base, atol=1e-5)
    assert np.abs(trained - base).max() > 1e-2  # the B compared above moved the output


def test_lora_dropout_is_peft_s_formula_on_one_layer():
    # Full rank (32 on a 32x32 projection) makes A and B invertible, so drop(x) can be read back.
    backbone = make_backbone()
    dense = add_lora(backbone, LoraConfig(rank=32, alpha=64, targets=("q",), dropout=0.25), seed=0)[
        "encoder/0/self_attention/q"]
    rng = np.random.default_rng(3)
    dense.lora_kernel_b.assign(rng.normal(0, 0.2, dense.lora_kernel_b.shape).astype("float32"))
    x = rng.normal(size=(16, 32)).astype("float32")
    w, a, b = (keras.ops.convert_to_numpy(v).astype("float64") for v in
               (dense._kernel, dense.lora_kernel_a, dense.lora_kernel_b))
    y = keras.ops.convert_to_numpy(dense(x, training=True)).astype("float64")
    # y = x W + (alpha / r) (drop(x) A) B, drop(x) keeping each entry as x / (1 - p) or zeroing it.
    dropped = (y - x @ w) / 2 @ np.linalg.inv(b) @ np.linalg.inv(a)
    kept = np.isclose(dropped, x / 0.75, atol=2e-3)
    zeroed = np.isclose(dropped, 0, atol=2e-3)
    assert np.all(kept | zeroed)
    assert 0.15 < zeroed.mean() < 0.35  # about p of the entries


def test_merge_with_dropout_is_still_exact_and_dropout_is_saved(tmp_path):
    backbone = adapted_pair(0.3)
    inputs = make_inputs()
    adapted = decoder_output(backbone, inputs)
    save_adapter(backbone, tmp_path / "a.safetensors")
    config, _ = read_adapter(tmp_path / "a.safetensors")
    assert config == LoraConfig(2, 4.0, ("q", "v", "wo"), 0.3)
    merge_lora(backbone)
    np.testing.assert_allclose(decoder_output(backbone, inputs), adapted, atol=1e-5)
    # B is zero after merging: the dropped branch adds nothing, training equals inference.
    np.testing.assert_allclose(training_output(backbone, inputs), decoder_output(backbone, inputs), atol=1e-5)


def test_a_few_dozen_lora_steps_lower_the_validation_loss(tiny_preset, tiny_corpus):
    """24 steps of LoRA (q, v, rank 4) on 96 English->Dravic pairs: the per-token loss on 24 held-out
    pairs falls well below the unadapted base's and below a uniform guess over the vocabulary.

    keras-hub's `T5Backbone` draws its embeddings with `TruncatedNormal(1.0)`, a mean of 1 (the
    argument is the mean, not the spread), so a fresh one gives every token nearly the same
    embedding and LoRA on q and v barely moves its output. The base here is the tiny preset with
    embeddings drawn as T5's own initialisation draws them: N(0, 1) in, N(0, 1/d_model) out.
    """
    preset = load_preset(tiny_preset)
    backbone = preset.build_backbone()
    rng = np.random.default_rng(0)
    embedding = backbone.token_embedding
    vocabulary, width = embedding.embeddings.shape
    embedding.embeddings.assign(rng.normal(0, 1, (vocabulary, width)).astype("float32"))
    embedding.reverse_embeddings.assign(rng.normal(0, width**-0.5, (width, vocabulary)).astype("float32"))
    base = BaseModel("t5-init", backbone.get_config(), backbone.get_weights(), preset.tokenizer)
    train, val = (tokenize_pairs(base.tokenizer, read_pairs(path), TINY_PREFIX, max_target_length=16)
                  for path in tiny_corpus)
    keras.utils.set_random_seed(0)
    adapted = base.build_backbone()
    add_lora(adapted, LoraConfig(rank=4, targets=("q", "v")), seed=0)
    model = base.build_model(adapted)
    model.compile(optimizer=keras.optimizers.Adam(2e-2))
    validation = make_dataset(val, 24)
    before = model.evaluate(validation, verbose=0)  # B = 0: the unadapted base
    model.fit(make_dataset(train, 8, shuffle=True, seed=0), epochs=2, shuffle=False, verbose=0)  # 2 x 12 steps
    after = model.evaluate(validation, verbose=0)
    uniform = math.log(vocabulary)
    print(f"\nval loss per token: base {before:.3f}, after 24 LoRA steps {after:.3f}, uniform {uniform:.3f}")
    assert after < before - 0.5
    assert after < uniform - 0.3  # it learned the targets, not only to undo a random head
    # Only the adapters moved.
    frozen = [keras.ops.convert_to_numpy(v) for v in adapted.weights if "lora" not in v.path]
    assert all(np.array_equal(a, b) for a, b in zip(frozen, base.weights, strict=True))
