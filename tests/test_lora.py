"""LoRA exactness, parameter formula, adapter save/load/merge, bad ranks, targets and slots."""

import json
import math

import keras
import keras_hub
import numpy as np
import pytest
import tensorflow as tf
from safetensors.numpy import save_file

from conftest import TINY_PREFIX, tiny_backbone_kwargs
from lora_keras.data.corpus import read_pairs
from lora_keras.data.pipeline import make_dataset, tokenize_pairs
from lora_keras.errors import InputError
from lora_keras.models.base import BaseModel
from lora_keras.models.sources import load_preset
from lora_keras.adapters import (
    LoraConfig,
    LoraDense,
    add_lora,
    adapter_variables,
    load_adapter,
    lora_layers,
    lora_parameter_count,
    merge_lora,
    read_adapter,
    save_adapter,
    set_slot,
    target_layers,
)

VOCAB = 120
# Unmerged (x·W + s·(x·A)·B) against merged (x·(W + s·A·B)): the same numbers up to float32 rounding.
RTOL, ATOL = 1e-5, 1e-6


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


def move_b(layers, std, seed=2):
    """Set every adapted layer's `B` (all slots) to N(0, std): as if trained."""
    rng = np.random.default_rng(seed)
    for layer in layers.values():
        layer.lora_b.assign(rng.normal(0, std, layer.lora_b.shape).astype("float32"))


def numpy_of(variable):
    return keras.ops.convert_to_numpy(variable)


def test_adapted_model_equals_base_at_init():
    backbone = make_backbone()
    inputs = make_inputs()
    before = decoder_output(backbone, inputs)
    add_lora(backbone, LoraConfig(rank=4, targets=("q", "k", "v", "o", "wi", "wo")), seed=0)
    np.testing.assert_array_equal(decoder_output(backbone, inputs), before)


def test_adapted_dense_computes_w_plus_scaled_a_b_in_inference_and_training():
    """Inference and training (no dropout) both compute `x·W + s·(x·A)·B`, i.e. `x·(W + s·A·B)`."""
    backbone = make_backbone()
    layers = add_lora(backbone, LoraConfig(rank=2, alpha=6, targets=("v",)), seed=0)
    layer = layers["decoder/1/cross_attention/v"]
    assert isinstance(layer, LoraDense) and layer.slots == 1
    assert layer.lora_a.shape == (1, 32, 2) and layer.lora_b.shape == (1, 2, 32)
    rng = np.random.default_rng(0)
    a = rng.normal(size=(32, 2)).astype("float32")
    b = rng.normal(size=(2, 32)).astype("float32")
    layer.lora_a.assign(a[None])
    layer.lora_b.assign(b[None])
    x = rng.normal(size=(5, 32)).astype("float32")
    w = numpy_of(layer.base.kernel)
    expected = x.astype("float64") @ (w.astype("float64") + 3.0 * a.astype("float64") @ b.astype("float64"))
    assert np.abs(expected - x @ w).min() > 1e-3  # the adapter moves every output
    atol = ATOL * np.abs(expected).max()
    # The merged kernel, as a plain Keras Dense computes with it.
    np.testing.assert_allclose(layer.merged_kernel(0), w + 3.0 * a @ b, rtol=RTOL, atol=ATOL)
    plain = keras.layers.Dense(layer.base.units, use_bias=False)
    plain.build((None, 32))
    plain.kernel.assign(layer.merged_kernel(0))
    inference = numpy_of(layer(x, training=False))
    training = numpy_of(layer(x, training=True))
    for outputs in (inference, training):
        np.testing.assert_allclose(outputs, expected, rtol=RTOL, atol=atol)
        np.testing.assert_allclose(outputs, numpy_of(plain(x)), rtol=RTOL, atol=atol)
    np.testing.assert_array_equal(training, inference)  # without dropout, one computation


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
    base_weights = {id(v) for v in backbone.weights}
    layers = add_lora(backbone, config)
    trainable = sum(int(np.prod(v.shape)) for v in backbone.trainable_weights)
    assert trainable == expected
    # What trains is each adapted layer's A and B, nothing of the base.
    assert {id(v) for v in backbone.trainable_weights} == {
        id(v) for layer in layers.values() for v in (layer.lora_a, layer.lora_b)}
    assert all(not v.trainable for v in backbone.weights if id(v) in base_weights)
    assert lora_parameter_count(backbone, config) == expected  # counted on the wrapped layers too


def test_targets_pick_t5_layers_by_name():
    backbone = make_backbone()
    layers = target_layers(backbone, ["q", "wi"])
    paths = sorted(layers)
    assert "encoder/0/self_attention/q" in paths
    assert "decoder/1/cross_attention/q" in paths
    assert "decoder/0/feed_forward/wi_1" in paths  # gated: both input projections
    assert len(paths) == 6 + 8
    relu = make_backbone(use_gated_activation=False, activation="relu")
    assert len(target_layers(relu, ["wi"])) == 4
    # Once wrapped, the same paths give the same Dense layers (the LoraDense's base).
    add_lora(backbone, LoraConfig(rank=2, targets=("q",)), seed=0)
    wrapped = target_layers(backbone, ["q", "wi"])
    assert list(wrapped) == list(layers)
    assert all(wrapped[path] is layers[path] and type(wrapped[path]) is keras.layers.Dense for path in layers)


def test_adapter_round_trip_alone(tmp_path):
    backbone = make_backbone()
    config = LoraConfig(rank=3, alpha=5, targets=("q", "v"))
    move_b(add_lora(backbone, config, seed=0), 0.05)
    inputs = make_inputs()
    adapted = decoder_output(backbone, inputs)
    assert np.abs(adapted - decoder_output(make_backbone(), inputs)).max() > 1e-2  # B moved the outputs
    path = tmp_path / "adapter.safetensors"
    save_adapter(backbone, path)
    # Only the LoRA matrices are stored: a few kilobytes, not the model.
    assert path.stat().st_size < 4 * lora_parameter_count(make_backbone(), config) + 4096

    fresh = make_backbone()  # same seed -> same base weights
    loaded = load_adapter(fresh, path)
    assert loaded == LoraConfig(3, 5.0, ("q", "v"))
    np.testing.assert_allclose(decoder_output(fresh, inputs), adapted, atol=1e-6)


# The adapter file as lora-keras writes it (the format of the release before LoraDense): one
# `<path>/lora_a` (d_in, rank) and `<path>/lora_b` (rank, d_out) per adapted layer, float32, and the
# config as JSON in the `lora_config` metadata.
QV_PATHS = [f"encoder/{i}/self_attention/{t}" for i in range(2) for t in "qv"] + [
    f"decoder/{i}/{attention}/{t}" for i in range(2) for attention in ("self_attention", "cross_attention")
    for t in "qv"]


def dense_at(backbone, path):
    """The keras-hub `Dense` a q or v path names, found without lora-keras."""
    stack, index, attention, target = path.split("/")
    blocks = backbone.encoder_transformer_layers if stack == "encoder" else backbone.decoder_transformer_layers
    block = blocks[int(index)]
    attention_layer = block.self_attention if attention == "self_attention" else block.cross_attention
    return getattr(attention_layer, {"q": "query_projector", "v": "value_projector"}[target])


def test_an_adapter_file_of_the_current_format_loads(tmp_path):
    rank, alpha = 3, 12.0
    scale = alpha / rank
    rng = np.random.default_rng(5)
    weights = {}
    for path in QV_PATHS:
        weights[f"{path}/lora_a"] = rng.uniform(-32**-0.5, 32**-0.5, (32, rank)).astype("float32")
        weights[f"{path}/lora_b"] = rng.normal(0, 0.3, (rank, 32)).astype("float32")
    file = tmp_path / "written_by_hand.safetensors"
    config = {"rank": rank, "alpha": alpha, "targets": ["q", "v"], "dropout": 0.0, "init": "peft"}
    save_file(weights, str(file), metadata={"lora_config": json.dumps(config)})

    inputs = make_inputs()
    base = decoder_output(make_backbone(), inputs)
    loaded = make_backbone()
    assert load_adapter(loaded, file) == LoraConfig(rank, alpha, ("q", "v"), 0.0, "peft")
    assert sorted(lora_layers(loaded)) == sorted(QV_PATHS)
    ours = decoder_output(loaded, inputs)
    # The same model computed independently: a plain backbone whose q and v kernels are W + scale * A @ B.
    reference = make_backbone()
    for path in QV_PATHS:
        dense = dense_at(reference, path)
        w = numpy_of(dense.kernel).astype("float64")
        a, b = (weights[f"{path}/lora_{ab}"].astype("float64") for ab in "ab")
        dense.kernel.assign((w + scale * a @ b).astype("float32"))
    expected = decoder_output(reference, inputs)
    assert np.abs(expected - base).max() > 0.1  # the adapter changes the model
    np.testing.assert_allclose(ours, expected, rtol=RTOL, atol=ATOL * np.abs(expected).max())


def test_merge_keeps_outputs_and_drops_the_adapter_effect():
    backbone = make_backbone()
    config = LoraConfig(rank=2, targets=("q", "v", "wo"))
    layers = add_lora(backbone, config, seed=0)
    move_b(layers, 0.1)
    inputs = make_inputs()
    adapted = decoder_output(backbone, inputs)
    assert np.abs(adapted - decoder_output(make_backbone(), inputs)).max() > 1e-2  # the adapter moved them
    expected_kernels = {}
    for path, layer in layers.items():
        a, b = numpy_of(layer.lora_a[0]), numpy_of(layer.lora_b[0])
        expected_kernels[path] = numpy_of(layer.base.kernel) + config.scale * a @ b
    merge_lora(backbone)
    np.testing.assert_allclose(decoder_output(backbone, inputs), adapted, rtol=RTOL,
                               atol=ATOL * np.abs(adapted).max())
    for path, layer in lora_layers(backbone).items():
        assert not np.any(numpy_of(layer.lora_b))
        np.testing.assert_allclose(numpy_of(layer.base.kernel), expected_kernels[path], rtol=RTOL, atol=ATOL)


def test_merge_refuses_a_backbone_of_several_slots():
    backbone = make_backbone()
    layers = add_lora(backbone, LoraConfig(rank=2, targets=("q", "v")), seed=0, slots=3)
    move_b(layers, 0.1)
    kernels = [numpy_of(layer.base.kernel) for layer in layers.values()]
    with pytest.raises(InputError, match="^backbone: it holds several adapters per layer") as caught:
        merge_lora(backbone)
    assert caught.value.parameter == "backbone"
    assert all(np.array_equal(numpy_of(layer.base.kernel), kernel) for layer, kernel in zip(layers.values(), kernels))


@pytest.mark.parametrize("config", [LoraConfig(rank=2, targets=("q", "k")), LoraConfig(rank=2, targets=("q",)),
                                    LoraConfig(rank=5, targets=("q", "v")),
                                    LoraConfig(rank=2, targets=("q", "v"), dropout=0.1)])
def test_set_slot_refuses_a_config_that_does_not_fit_the_layers(config):
    """Other targets, a rank above max_rank or another dropout: not this backbone's adapters."""
    backbone = make_backbone()
    layers = add_lora(backbone, LoraConfig(rank=2, targets=("q", "v")), seed=0, slots=2, max_rank=4)
    before = [numpy_of(v) for v in adapter_variables(backbone)]
    with pytest.raises(InputError, match="^config: .* does not fit adapters of q,v, rank up to 4") as caught:
        set_slot(backbone, 1, config, seed=0)
    assert caught.value.parameter == "config"
    assert all(np.array_equal(numpy_of(v), value) for v, value in zip(adapter_variables(backbone), before))
    assert all(layer.configs[1] is None for layer in layers.values())
    set_slot(backbone, 1, LoraConfig(rank=4, targets=("q", "v")), seed=0)  # one that fits does


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
        (LoraConfig(rank=2, targets=("q", "x")), "^targets: unknown LoRA target"),
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
    layers = add_lora(backbone, LoraConfig(rank=2, alpha=4, targets=("q", "v", "wo"), dropout=dropout), seed=seed)
    move_b(layers, 0.5)
    return backbone


def training_output(backbone, inputs):
    return keras.ops.convert_to_numpy(backbone(inputs, training=True)["decoder_sequence_output"])


def test_lora_dropout_acts_in_training_only():
    inputs = make_inputs()
    dropped, plain = adapted_pair(0.5), adapted_pair(0.0)  # same seed: same A, same B
    # Inference: dropout off, the same computation as the adapter without dropout.
    np.testing.assert_array_equal(decoder_output(dropped, inputs), decoder_output(plain, inputs))
    # Training: each call draws a new mask on the LoRA branch, in eager and in a traced step alike.
    first, second = training_output(dropped, inputs), training_output(dropped, inputs)
    assert np.abs(first - second).max() > 1e-3
    layer = lora_layers(dropped)["decoder/1/cross_attention/v"]
    traced = tf.function(lambda x: layer(x, training=True))
    x = np.random.default_rng(4).normal(size=(8, 32)).astype("float32")
    assert np.abs(traced(x).numpy() - traced(x).numpy()).max() > 1e-3
    # Without dropout, training equals inference with B away from zero.
    trained = training_output(plain, inputs)
    np.testing.assert_allclose(trained, decoder_output(plain, inputs), atol=1e-5)
    # Only the LoRA branch is dropped: with B = 0 training equals inference, the frozen base.
    for layer in lora_layers(dropped).values():
        layer.lora_b.assign(np.zeros(layer.lora_b.shape, "float32"))
    base = decoder_output(dropped, inputs)
    np.testing.assert_allclose(training_output(dropped, inputs), base, atol=1e-5)
    assert np.abs(trained - base).max() > 1e-2  # the B compared above moved the output


def test_lora_dropout_is_peft_s_formula_on_one_layer():
    # Full rank (32 on a 32x32 projection) makes A and B invertible, so drop(x) can be read back.
    backbone = make_backbone()
    layer = add_lora(backbone, LoraConfig(rank=32, alpha=64, targets=("q",), dropout=0.25), seed=0)[
        "encoder/0/self_attention/q"]
    rng = np.random.default_rng(3)
    layer.lora_b.assign(rng.normal(0, 0.2, layer.lora_b.shape).astype("float32"))
    x = rng.normal(size=(16, 32)).astype("float32")
    w = numpy_of(layer.base.kernel).astype("float64")
    a, b = (m.astype("float64") for m in layer.slot_weights(0))
    assert a.shape == b.shape == (32, 32)
    y = keras.ops.convert_to_numpy(layer(x, training=True)).astype("float64")
    # y = x W + (alpha / r) (drop(x) A) B, drop(x) keeping each entry as x / (1 - p) or zeroing it.
    dropped = (y - x @ w) / 2 @ np.linalg.inv(b) @ np.linalg.inv(a)
    kept = np.isclose(dropped, x / 0.75, atol=2e-3)
    zeroed = np.isclose(dropped, 0, atol=2e-3)
    assert np.all(kept | zeroed)
    assert 0.15 < zeroed.mean() < 0.35  # about p of the entries


def test_merge_with_dropout_is_exact_to_rounding_and_dropout_is_saved(tmp_path):
    backbone = adapted_pair(0.3)
    inputs = make_inputs()
    adapted = decoder_output(backbone, inputs)
    save_adapter(backbone, tmp_path / "a.safetensors")
    config, _ = read_adapter(tmp_path / "a.safetensors")
    assert config == LoraConfig(2, 4.0, ("q", "v", "wo"), 0.3)
    merge_lora(backbone)
    merged = decoder_output(backbone, inputs)
    np.testing.assert_allclose(merged, adapted, rtol=RTOL, atol=ATOL * np.abs(adapted).max())
    assert np.abs(merged - decoder_output(make_backbone(), inputs)).max() > 1e-2  # the merge kept the adapter
    # B is zero after merging: the dropped branch adds nothing, training equals inference.
    np.testing.assert_array_equal(training_output(backbone, inputs), merged)


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
    # Only the adapters moved: the base's weights, in an unadapted backbone's order, are the base's.
    added = {id(v) for v in adapter_variables(adapted)}
    frozen = [keras.ops.convert_to_numpy(v) for v in adapted.weights if id(v) not in added]
    assert all(np.array_equal(a, b) for a, b in zip(frozen, base.weights, strict=True))
