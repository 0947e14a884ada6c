"""Packed LoRA: several adapters of one `LoraDense` per projection train in one step exactly as each alone."""

import keras
import keras_hub
import keras_tuner
import numpy as np
import pytest

from conftest import tiny_backbone_kwargs
from lora_keras.adapters import (
    LoraConfig, activate_slots, add_lora, load_adapter, lora_layers, merged_weights, reset_lora, save_adapter, set_slot,
    target_layers,
)
from lora_keras.data.pipeline import TokenizedPairs, make_dataset, repeat_for_slots, stack_for_slots
from lora_keras.models.token_loss import PairLosses, TokenLossSeq2SeqLM
from lora_keras.runtime.precision import reset_optimizer

VOCAB = 300
CONFIGS = (LoraConfig(1), LoraConfig(4), LoraConfig(16, alpha=8.0))  # scale 1, 1 and 0.5
BATCH, EPOCHS = 8, 2


def backbone():
    keras.utils.set_random_seed(0)
    return keras_hub.models.T5Backbone(**{**tiny_backbone_kwargs(VOCAB), "num_layers": 1})


def pairs(count=36, seed=0):
    rng = np.random.default_rng(seed)

    def ids(length):
        matrix = np.zeros((count, length), np.int32)
        for row in matrix:
            size = rng.integers(3, length + 1)
            row[:size] = rng.integers(3, VOCAB, size)
            row[size - 1] = 1
        return matrix

    return TokenizedPairs(ids(12), ids(10))


class StepLosses(keras.callbacks.Callback):
    def __init__(self, key):
        super().__init__()
        self.key, self.values = key, []

    def on_train_batch_end(self, batch, logs=None):
        self.values.append(float(logs[self.key]))


Q = "encoder/0/self_attention/q"


def train_alone(config, train, val, seed=0):
    """The trial alone: one adapter at the config's own rank (no padding), trained by Keras's own fit."""
    model = TokenLossSeq2SeqLM(backbone=backbone())
    add_lora(model.backbone, config, seed=seed)
    model.compile(optimizer=keras.optimizers.Adam(3e-3))
    losses = StepLosses("loss")
    model.fit(make_dataset(train, BATCH, shuffle=True, seed=seed), epochs=EPOCHS, verbose=0, callbacks=[losses])
    a, b = lora_layers(model.backbone)[Q].slot_weights(0)
    return {"losses": losses.values, "val_loss": model.evaluate(make_dataset(val, 16), verbose=0), "a": a, "b": b}


def packed_model(configs, slots=None, dropout=0.0):
    """One backbone whose every adapted projection holds a slot per config, padded to the largest rank."""
    model_backbone = backbone()
    configs = [LoraConfig(c.rank, c.alpha, c.targets, dropout) for c in configs]
    add_lora(model_backbone, configs[0], seed=0, slots=slots or len(configs), max_rank=max(c.rank for c in CONFIGS))
    for slot, config in enumerate(configs):
        set_slot(model_backbone, slot, config, seed=0)
    activate_slots(model_backbone, len(configs))
    model = TokenLossSeq2SeqLM(backbone=model_backbone)
    model.compile(optimizer=keras.optimizers.Adam(3e-3))
    return model


def train_packed(configs, train, val, dropout=0.0):
    model = packed_model(configs, dropout=dropout)
    slots = len(configs)
    losses = [StepLosses(f"loss_{slot}") for slot in range(slots)]
    model.fit(repeat_for_slots(make_dataset(train, BATCH, shuffle=True, seed=0), slots), epochs=EPOCHS,
              verbose=0, callbacks=losses)
    logs = model.evaluate(repeat_for_slots(make_dataset(val, 16), slots), verbose=0, return_dict=True)
    layer = lora_layers(model.backbone)[Q]
    a, b = (keras.ops.convert_to_numpy(v) for v in (layer.lora_a, layer.lora_b))
    return model, [{"losses": losses[slot].values, "val_loss": logs[f"loss_{slot}"], "a": a[slot], "b": b[slot]}
                   for slot in range(slots)]


@pytest.fixture(scope="module")
def runs():
    train, val = pairs(), pairs(16, seed=1)
    alone = [train_alone(config, train, val) for config in CONFIGS]
    model, packed = train_packed(CONFIGS, train, val)  # ranks 1 and 4 padded to 16
    return alone, packed, model


def test_packed_slots_train_exactly_as_each_alone(runs):
    alone, packed, _ = runs
    steps = EPOCHS * -(-36 // BATCH)
    for config, own, slot in zip(CONFIGS, alone, packed):
        assert len(slot["losses"]) == len(own["losses"]) == steps
        np.testing.assert_allclose(slot["losses"], own["losses"], rtol=1e-5)
        np.testing.assert_allclose(slot["val_loss"], own["val_loss"], rtol=1e-5)
        # Adam divides by the root of tiny second moments: float noise in the gradients shows at 1e-6.
        np.testing.assert_allclose(slot["a"][:, : config.rank], own["a"], rtol=1e-5, atol=2e-6)
        np.testing.assert_allclose(slot["b"][: config.rank], own["b"], rtol=1e-5, atol=2e-6)
        assert np.abs(own["b"]).max() > 1e-4  # B moved: the comparison means something
        # The padding of a smaller rank stays exactly zero under Adam.
        assert not slot["a"][:, config.rank:].any() and not slot["b"][config.rank:].any()
    # Slots not crossed: the three trainings differ from each other.
    assert len({round(slot["val_loss"], 6) for slot in packed}) == 3


def test_repeats_packed_train_as_each_seed_alone():
    """Seeds of two configurations in one step, each slot on its own seed's batches: each equals its seed alone."""
    train, val = pairs(), pairs(16, seed=1)
    plan = [(CONFIGS[0], 0), (CONFIGS[0], 1), (CONFIGS[1], 1), (CONFIGS[1], 2)]
    alone = [train_alone(config, train, val, seed) for config, seed in plan]
    model_backbone = backbone()
    add_lora(model_backbone, CONFIGS[0], seed=0, slots=len(plan), max_rank=4)
    for slot, (config, seed) in enumerate(plan):
        set_slot(model_backbone, slot, config, seed=seed)
    activate_slots(model_backbone, len(plan))
    model = TokenLossSeq2SeqLM(backbone=model_backbone)
    model.compile(optimizer=keras.optimizers.Adam(3e-3))
    losses = [StepLosses(f"loss_{slot}") for slot in range(len(plan))]
    # One dataset per seed, as `fit_group` makes them: slots 1 and 2 share seed 1's (read once per step).
    by_seed = {seed: make_dataset(train, BATCH, shuffle=True, seed=seed) for _, seed in plan}
    model.fit(stack_for_slots([by_seed[seed] for _, seed in plan]), epochs=EPOCHS, verbose=0, callbacks=losses)
    logs = model.evaluate(repeat_for_slots(make_dataset(val, 16), len(plan)), verbose=0, return_dict=True)
    nll, tokens = PairLosses(model).of(val, slots=len(plan), batch_size=16)
    assert nll.shape == (len(plan), len(val)) and tokens.sum() == (val.target_ids != 0).sum()
    for slot, own in enumerate(alone):
        np.testing.assert_allclose(losses[slot].values, own["losses"], rtol=1e-5)
        np.testing.assert_allclose(logs[f"loss_{slot}"], own["val_loss"], rtol=1e-5)
        # The per-pair losses add up to the val loss the trial alone evaluated (a second computation).
        np.testing.assert_allclose(nll[slot].sum() / tokens.sum(), own["val_loss"], rtol=1e-5)
    # Another seed is another training: the repeats of one configuration differ.
    assert abs(alone[0]["val_loss"] - alone[1]["val_loss"]) > 1e-4
    assert abs(alone[2]["val_loss"] - alone[3]["val_loss"]) > 1e-4


def test_slot_adapter_file_loads_as_a_plain_adapter(runs, tmp_path):
    _, _, model = runs
    inputs, _, _ = pairs(4, seed=2).model_inputs()
    for slot, config in enumerate(CONFIGS):
        path = tmp_path / f"slot{slot}.safetensors"
        save_adapter(model.backbone, path, slot=slot)
        loaded = backbone()
        assert load_adapter(loaded, path).to_dict() == config.to_dict()
        assert lora_layers(loaded)[Q].max_rank == config.rank  # saved at its own rank, not padded
        merged = backbone()
        merged.set_weights(merged_weights(model.backbone, slot))
        np.testing.assert_allclose(
            keras.ops.convert_to_numpy(loaded(inputs)["decoder_sequence_output"]),
            keras.ops.convert_to_numpy(merged(inputs)["decoder_sequence_output"]), rtol=1e-4, atol=1e-5)


def test_unused_slots_are_the_base_and_counts_follow_the_formula():
    model = packed_model(CONFIGS[:1], slots=3)
    layers = target_layers(model.backbone, ("q", "v"))
    assert len(lora_layers(model.backbone)) == len(layers)
    trainable = sum(int(np.prod(v.shape)) for v in model.trainable_weights)
    assert trainable == sum(3 * 16 * (d.kernel.shape[0] + d.kernel.shape[1]) for d in layers.values())
    for layer in lora_layers(model.backbone).values():  # slot 0 moved off the base: its rows differ
        layer.lora_b.assign(np.full(layer.lora_b.shape, 0.05, "float32"))
        layer.clear_slot(1), layer.clear_slot(2)
    # Slots 1 and 2 hold nothing: a batch of three slots computes slot 0's adapter, then the base twice.
    inputs, _, _ = repeat_for_slots(make_dataset(pairs(4, seed=3), 4), 3).take(1).get_single_element()
    activate_slots(model.backbone, 3)
    packed = keras.ops.convert_to_numpy(model.backbone(inputs)["decoder_sequence_output"])
    alone = keras.ops.convert_to_numpy(backbone()(inputs)["decoder_sequence_output"])
    np.testing.assert_allclose(packed[4:], alone[4:], rtol=1e-5, atol=1e-6)
    assert np.abs(packed[:4] - alone[:4]).max() > 1e-3


DROPOUT_CONFIGS = (LoraConfig(4, dropout=0.3), LoraConfig(16, dropout=0.3))
MASK_DRAWS = 5


def alone_val_losses_over_mask_draws(config, train, val):
    """The trial alone (same A, same data order) under MASK_DRAWS different draws of its dropout masks."""
    model = TokenLossSeq2SeqLM(backbone=backbone())
    add_lora(model.backbone, config, seed=0)
    model.compile(optimizer=keras.optimizers.Adam(3e-3))
    layers = list(lora_layers(model.backbone).values())
    val_losses = []
    for draw in range(MASK_DRAWS):
        reset_lora(model.backbone, config, seed=0)
        reset_optimizer(model.optimizer, 3e-3)
        for offset, layer in enumerate(layers):
            layer.seed_generator.state.assign(keras.random.SeedGenerator(1000 * (draw + 1) + offset).state)
        model.fit(make_dataset(train, BATCH, shuffle=True, seed=0), epochs=EPOCHS, verbose=0, shuffle=False)
        val_losses.append(model.evaluate(make_dataset(val, 16), verbose=0))
    return np.array(val_losses)


@pytest.mark.e2e  # 35 s of training: in CI's second tier, which runs every e2e test
def test_with_dropout_packed_trials_agree_with_alone_within_the_mask_spread():
    """A packed step cannot draw an alone run's masks; its trials must still land among the alone runs'."""
    train, val = pairs(), pairs(16, seed=1)
    model, packed = train_packed(DROPOUT_CONFIGS, train, val, dropout=0.3)
    inputs, _, _ = repeat_for_slots(make_dataset(val, 8), len(DROPOUT_CONFIGS)).take(1).get_single_element()
    outputs = [keras.ops.convert_to_numpy(model.backbone(inputs, training=training)["decoder_sequence_output"])
               for training in (True, False)]
    assert np.abs(outputs[0] - outputs[1]).max() > 1e-4  # the packed step does drop out
    for config, slot in zip(DROPOUT_CONFIGS, packed):
        alone = alone_val_losses_over_mask_draws(config, train, val)
        spread = alone.std(ddof=1)
        assert spread > 1e-5  # the masks change the training: the comparison means something
        assert abs(slot["val_loss"] - alone.mean()) <= 3 * spread, (slot["val_loss"], alone)
