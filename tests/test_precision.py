"""Mixed precision: 16-bit compute, float32 LoRA weights and optimizer state, float32 adapters, loss scaling."""

import keras
import keras_tuner
import numpy as np
import pytest

from lora_keras.adapters import load_adapter, save_adapter
from lora_keras.adapters import lora_layers
from lora_keras.data.pipeline import TokenizedPairs, make_dataset
from lora_keras.errors import InputError
from lora_keras.runtime import precision as precisions
from lora_keras.runtime.benchmark import reference_base
from tuners.hypermodel import LoraT5HyperModel
from tuners.search_space import SearchSpace

SMALL = dict(vocabulary_size=200, num_layers=1, num_heads=2, hidden_dim=32, intermediate_dim=64,
             key_value_dim=16, dropout=0.0)
# bfloat16 keeps 8 bits of mantissa (about 0.4% per value); a per-token mean over a few hundred tokens
# after a few steps stays within this of float32's (measured: about 0.001 here).
BF16_VAL_LOSS_TOLERANCE = 0.02


@pytest.fixture(scope="module")
def base():
    return reference_base(0, **SMALL)


@pytest.fixture(scope="module")
def data():
    return padded_tokens(64, 0), padded_tokens(32, 1)


@pytest.fixture(scope="module")
def float32_history(base, data):
    """The float32 trial every other precision is compared with."""
    return train(base, "float32", *data)[1]


def padded_tokens(count, seed):
    """Random ids with random lengths (padding included), so masks matter."""
    rng = np.random.default_rng(seed)
    source = rng.integers(2, 200, (count, 12), dtype=np.int32)
    target = rng.integers(2, 200, (count, 10), dtype=np.int32)
    for row in range(count):
        source[row, rng.integers(4, 13):] = 0
        target[row, rng.integers(3, 11):] = 0
    return TokenizedPairs(source, target)


def train(base, precision, tokens, val):
    hypermodel = LoraT5HyperModel(base, SearchSpace(ranks=(4,), batch_sizes=(16,)), epochs=2, precision=precision)
    hp = keras_tuner.HyperParameters()
    hypermodel.declare_hyperparameters(hp)
    hp.values.update(rank=4, batch_size=16, learning_rate=3e-3)
    model = hypermodel.build(hp)
    history = hypermodel.fit(hp, model, tokens, val, verbose=0)
    return model, history.history


def test_unknown_precision_is_an_input_error():
    with pytest.raises(InputError, match="precision float8: not one of float32, mixed_bfloat16, mixed_float16"):
        precisions.check_precision("float8")


def test_float16_scales_the_loss_and_a_reset_restores_the_scale():
    optimizer = precisions.optimizer("mixed_float16", 1e-3)
    assert isinstance(optimizer, keras.optimizers.LossScaleOptimizer)
    assert not isinstance(precisions.optimizer("mixed_bfloat16", 1e-3), keras.optimizers.LossScaleOptimizer)
    weight = keras.Variable(np.ones(3, "float32"))
    optimizer.apply([np.full(3, np.inf, "float32")], [weight])  # overflow: the scale halves, no step
    assert float(optimizer.dynamic_scale.numpy()) == 2.0**14
    precisions.reset_optimizer(optimizer, 5e-4)
    assert float(optimizer.dynamic_scale.numpy()) == 2.0**15
    assert int(optimizer.iterations.numpy()) == 0
    assert optimizer.learning_rate.numpy() == pytest.approx(5e-4)


@pytest.mark.e2e  # two trainings (a minute on 2 cores): CI's e2e run, beside the default one
def test_bfloat16_trains_near_float32_and_its_adapter_loads_into_a_float32_model(base, data, float32_history,
                                                                                tmp_path):
    reference, (tokens, val) = float32_history, data
    model, history = train(base, "mixed_bfloat16", tokens, val)
    print(f"\nval loss per real target token: float32 {reference['val_loss']}, mixed_bfloat16 {history['val_loss']}"
          f"; training loss {history['loss']}")
    # It trained: the adapters moved off zero. Random pairs teach nothing a validation set could show:
    # its loss stays at the ids' own entropy, about log(198) (a broken model would leave it).
    moved = max(np.abs(keras.ops.convert_to_numpy(layer.lora_b)).max() for layer in lora_layers(model.backbone).values())
    assert moved > 1e-3
    assert abs(history["val_loss"][-1] - np.log(198)) < 0.1
    assert abs(history["val_loss"][-1] - reference["val_loss"][-1]) < BF16_VAL_LOSS_TOLERANCE

    query = lora_layers(model.backbone)["encoder/0/self_attention/q"]
    assert query is model.backbone.encoder_transformer_layers[0].self_attention.query_projector
    assert query.compute_dtype == query.base.compute_dtype == "bfloat16"  # the base computes in 16 bits ...
    assert {v.dtype for layer in lora_layers(model.backbone).values()
            for v in (layer.lora_a, layer.lora_b, layer.lora_scale)} == {"float32"}  # ... LoRA is kept in float32
    assert query.base.kernel.dtype == "float32"
    assert {v.dtype for v in model.optimizer.variables} == {"float32", "int64"}  # moments float32, step count

    path = tmp_path / "adapter.safetensors"
    save_adapter(model.backbone, path)
    float32_backbone = base.build_backbone()
    load_adapter(float32_backbone, path)
    loaded = lora_layers(float32_backbone)["encoder/0/self_attention/q"]
    assert loaded.compute_dtype == "float32" and loaded.lora_b.dtype == "float32"
    assert np.abs(query.lora_b.numpy()).max() > 0  # trained
    np.testing.assert_array_equal(loaded.lora_b.numpy(), query.lora_b.numpy())
    np.testing.assert_array_equal(loaded.lora_a.numpy(), query.lora_a.numpy())
    float32_model = base.build_model(float32_backbone)
    float32_model.compile()
    float32_loss = float32_model.evaluate(make_dataset(val, 64), verbose=0)
    assert float32_loss == pytest.approx(history["val_loss"][-1], abs=BF16_VAL_LOSS_TOLERANCE)


@pytest.mark.e2e
def test_float16_trains_to_finite_losses_near_float32(base, data, float32_history):
    """keras-hub 0.32's T5 attention mask turns into NaN in float16: attention computes in float32 there."""
    reference = float32_history
    model, history = train(base, "mixed_float16", *data)
    assert isinstance(model.optimizer, keras.optimizers.LossScaleOptimizer)
    assert np.isfinite(history["loss"]).all() and np.isfinite(history["val_loss"]).all()
    assert abs(history["val_loss"][-1] - reference["val_loss"][-1]) < BF16_VAL_LOSS_TOLERANCE


def test_results_rows_read_back_precision_and_xla_as_written():
    from lora_keras.results.table import typed_rows

    row = typed_rows([{"precision": "mixed_bfloat16", "jit_compile": "True", "val_loss": "1.5", "rank": "4"}])[0]
    assert row == {"precision": "mixed_bfloat16", "jit_compile": True, "val_loss": 1.5, "rank": 4}
