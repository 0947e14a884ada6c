"""Lean projections: the same numbers as Keras's `Dense`, in a smaller traced graph."""

import keras
import numpy as np
import tensorflow as tf

from lora_keras.adapters import LoraConfig, add_lora, target_layers, TARGETS
from lora_keras.adapters import lean_projections, project
from test_lora import decoder_output, make_backbone, make_inputs


def test_project_equals_keras_matmul_bit_for_bit():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(3, 5, 32)).astype("float32")
    kernel = rng.normal(size=(32, 48)).astype("float32")
    np.testing.assert_array_equal(
        keras.ops.convert_to_numpy(project(x, kernel)), keras.ops.convert_to_numpy(keras.ops.matmul(x, kernel))
    )


def _graph_op_count(backbone, inputs):
    spec = {name: tf.TensorSpec([None, None], tf.int32) for name in inputs}

    @tf.function
    def step(batch):
        with tf.GradientTape() as tape:
            outputs = backbone(batch, training=True)["decoder_sequence_output"]
            loss = tf.reduce_sum(outputs**2)
        return tape.gradient(loss, backbone.trainable_variables)

    return len(step.get_concrete_function(spec).graph.get_operations())


def test_lean_backbone_trains_and_infers_as_before_in_fewer_graph_ops():
    inputs = make_inputs()
    config = LoraConfig(rank=2, targets=("q", "v"))
    reference, lean = make_backbone(dropout=0.0), make_backbone(dropout=0.0)
    add_lora(reference, config, seed=0)
    add_lora(lean, config, seed=0)
    changed = lean_projections(lean)
    # Every projection but the adapted q and v of each attention: k and o there, wi_0 (GELU), wi_1, wo.
    assert changed == len(target_layers(lean, TARGETS)) - len(target_layers(lean, ("q", "v")))
    assert lean_projections(lean) == 0  # once is enough
    np.testing.assert_array_equal(decoder_output(lean, inputs), decoder_output(reference, inputs))
    for backbone in (reference, lean):
        for variable in backbone.trainable_variables:  # as if trained: B away from zero
            if "lora_kernel_b" in variable.path:
                variable.assign(np.full(variable.shape, 0.1, "float32"))
    np.testing.assert_array_equal(decoder_output(lean, inputs), decoder_output(reference, inputs))
    batch = {name: tf.constant(value) for name, value in inputs.items()}
    with tf.GradientTape() as tape:
        loss = tf.reduce_sum(lean(batch, training=True)["decoder_sequence_output"] ** 2)
    lean_grads = tape.gradient(loss, lean.trainable_variables)
    with tf.GradientTape() as tape:
        loss = tf.reduce_sum(reference(batch, training=True)["decoder_sequence_output"] ** 2)
    reference_grads = tape.gradient(loss, reference.trainable_variables)
    for ours, theirs in zip(lean_grads, reference_grads):
        np.testing.assert_allclose(ours.numpy(), theirs.numpy(), rtol=1e-5, atol=1e-6)
    assert _graph_op_count(lean, inputs) < 0.95 * _graph_op_count(reference, inputs)
