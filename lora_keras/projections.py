"""T5's projections as one 2-D matmul each: the same numbers in a smaller graph.

Keras's `ops.matmul` of a `(batch, length, d_in)` input by a `(d_in, d_out)`
kernel goes through `tf.tensordot`, which builds about 24 graph ops (shape
gathers, products, transposes and their inverse permutations for the
gradient) around its one `MatMul`. A T5 training step has a few hundred of
them: thousands of ops to create when Keras traces the step (seconds per
LoRA config in a sweep) and to schedule on every step. `project` reshapes to
2-D, multiplies and reshapes back, which is what `tensordot` computes, with
a third fewer ops; `lean_projections` makes a backbone's frozen projections
use it.

Example:
```python
backbone = keras_hub.models.T5Backbone(vocabulary_size=300, num_layers=2,
    num_heads=2, hidden_dim=32, intermediate_dim=64)
lean_projections(backbone)   # outputs unchanged, bit for bit
```
"""

from keras import ops


def project(inputs, kernel):
    """`inputs @ kernel` over the last axis of `inputs`, as a single 2-D matmul."""
    d_in, d_out = kernel.shape
    outputs = ops.matmul(ops.reshape(inputs, (-1, d_in)), kernel)
    return ops.reshape(outputs, (*ops.shape(inputs)[:-1], d_out))


def lean_projections(backbone):
    """Make every projection of `backbone` without LoRA (and not quantized) use `project`.

    Adapted layers get their own call from `lora.add_lora`; any other `Dense`
    is left as it is. Returns the number of layers changed.
    """
    from lora_keras.lora import TARGETS, target_layers

    changed = 0
    for dense in target_layers(backbone, TARGETS).values():
        plain = getattr(dense, "quantization_mode", None) is None and not dense.lora_enabled
        if plain and "call" not in dense.__dict__:
            dense.call = _lean_call(dense)
            changed += 1
    return changed


def _lean_call(dense):
    def call(inputs, training=None):
        outputs = project(inputs, dense.kernel)
        if dense.bias is not None:
            outputs = outputs + dense.bias
        return dense.activation(outputs) if dense.activation is not None else outputs

    return call
