"""`LoraDense` without slots, the plain projection `add_lora` puts everywhere else: the same numbers as
Keras's `Dense`, in a smaller traced graph."""

import keras
import numpy as np
import tensorflow as tf

from lora_keras.adapters import TARGETS, LoraConfig, LoraDense, add_lora, lora_layers, project, target_layers
from lora_keras.adapters.lora import all_projections
from test_lora import decoder_output, make_backbone, make_inputs


def test_project_equals_keras_matmul_bit_for_bit():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(3, 5, 32)).astype("float32")
    kernel = rng.normal(size=(32, 48)).astype("float32")
    np.testing.assert_array_equal(
        keras.ops.convert_to_numpy(project(x, kernel)), keras.ops.convert_to_numpy(keras.ops.matmul(x, kernel))
    )


def test_add_lora_wraps_every_projection_the_untargeted_ones_plain_and_equal_to_keras_dense():
    backbone = make_backbone()
    dense = target_layers(backbone, TARGETS)
    layers = add_lora(backbone, LoraConfig(rank=2, targets=("q", "v")), seed=0)
    projections = all_projections(backbone)
    assert list(projections) == list(dense)  # every T5 projection, in the same order
    assert all(isinstance(p, LoraDense) and p.base is dense[path] for path, p in projections.items())
    # The adapted q and v of each attention hold one slot; k and o there, wi_0 (GELU), wi_1 and wo none.
    assert {path for path, p in projections.items() if p.slots} == set(layers) == set(lora_layers(backbone))
    plain = {path: p for path, p in projections.items() if not p.slots}
    assert len(plain) == len(dense) - len(target_layers(backbone, ("q", "v"))) == 24
    assert all({id(v) for v in p.weights} == {id(v) for v in p.base.weights} for p in plain.values())  # nothing added
    x = np.random.default_rng(1).normal(size=(3, 5, 32)).astype("float32")
    for path, layer in plain.items():
        inputs = x if layer.base.kernel.shape[0] == 32 else np.tile(x, (1, 1, layer.base.kernel.shape[0] // 32))
        for training in (False, True):  # the 2-D matmul, bias and activation: Keras's Dense call, bit for bit
            np.testing.assert_array_equal(keras.ops.convert_to_numpy(layer(inputs, training=training)),
                                          keras.ops.convert_to_numpy(layer.base(inputs)), err_msg=path)


def _graph_op_count(backbone, inputs):
    spec = {name: tf.TensorSpec([None, None], tf.int32) for name in inputs}

    @tf.function
    def step(batch):
        with tf.GradientTape() as tape:
            outputs = backbone(batch, training=True)["decoder_sequence_output"]
            loss = tf.reduce_sum(outputs**2)
        return tape.gradient(loss, backbone.trainable_variables)

    return len(step.get_concrete_function(spec).graph.get_operations())


def _as_keras_dense(backbone, monkeypatch):
    """Make each plain projection of `backbone` compute as Keras's `Dense` does (`ops.matmul`, 3-D)."""
    for layer in all_projections(backbone).values():
        if not layer.slots:
            monkeypatch.setattr(layer, "call", layer.base.call)


def test_plain_projections_train_and_infer_as_keras_dense_in_fewer_graph_ops(monkeypatch):
    inputs = make_inputs()
    config = LoraConfig(rank=2, targets=("q", "v"))
    reference, lean = make_backbone(dropout=0.0), make_backbone(dropout=0.0)
    add_lora(reference, config, seed=0)
    add_lora(lean, config, seed=0)
    _as_keras_dense(reference, monkeypatch)
    np.testing.assert_array_equal(decoder_output(lean, inputs), decoder_output(reference, inputs))
    for backbone in (reference, lean):
        for layer in lora_layers(backbone).values():  # as if trained: B away from zero
            layer.lora_b.assign(np.full(layer.lora_b.shape, 0.1, "float32"))
    adapted = decoder_output(lean, inputs)
    np.testing.assert_array_equal(adapted, decoder_output(reference, inputs))
    assert np.abs(adapted - decoder_output(make_backbone(dropout=0.0), inputs)).max() > 1e-2  # B moved them
    batch = {name: tf.constant(value) for name, value in inputs.items()}
    with tf.GradientTape() as tape:
        loss = tf.reduce_sum(lean(batch, training=True)["decoder_sequence_output"] ** 2)
    lean_grads = tape.gradient(loss, lean.trainable_variables)
    with tf.GradientTape() as tape:
        loss = tf.reduce_sum(reference(batch, training=True)["decoder_sequence_output"] ** 2)
    reference_grads = tape.gradient(loss, reference.trainable_variables)
    assert len(lean_grads) == len(reference_grads) == 2 * 12  # A and B of 12 q and v projections
    for ours, theirs in zip(lean_grads, reference_grads, strict=True):
        assert np.abs(theirs.numpy()).max() > 0
        np.testing.assert_allclose(ours.numpy(), theirs.numpy(), rtol=1e-5, atol=1e-6)
    # Keras's 3-D matmul is about 26 graph ops to the 2-D form's 20 in a forward pass; with the input
    # gradient, 8 fewer per projection (measured: 3731 against 3923 ops, 24 plain projections).
    lean_ops, reference_ops = _graph_op_count(lean, inputs), _graph_op_count(reference, inputs)
    plain = sum(not layer.slots for layer in all_projections(lean).values())
    print(f"\ntraced training step: {lean_ops} graph ops with 2-D projections, {reference_ops} as Keras's Dense "
          f"({plain} plain projections)")
    assert reference_ops - lean_ops >= 6 * plain == 6 * 24
