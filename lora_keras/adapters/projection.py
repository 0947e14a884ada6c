"""How a T5 projection computes, plain or LoRA-adapted: one `Projection` object per `Dense`.

Two things change how keras-hub's T5 projections compute, and both live here:

* **2-D matmuls.** Keras's `ops.matmul` of a `(batch, length, d_in)` input by a
  `(d_in, d_out)` kernel goes through `tf.tensordot`, about 24 graph ops (shape
  gathers, products, transposes and their inverse permutations for the gradient)
  around its one `MatMul`. A T5 training step has a few hundred of them: thousands
  of ops to create when Keras traces the step (seconds per LoRA config in a
  sweep) and to schedule on every step. `project` reshapes to 2-D, multiplies and
  reshapes back, the same numbers with a third fewer ops.
* **LoRA's unmerged training path.** Keras's `Dense.enable_lora` merges
  `W + scale * A @ B` on every call, so training forms the full `d_in x d_out`
  gradient of the merged kernel only to project it onto `A` and `B`. A `Projection`
  trains as PEFT does, `x @ W + scale * (dropout(x) @ A) @ B` (input gradient and
  two thin products), carrying PEFT's dropout on the LoRA branch, which Keras
  lacks; in inference it uses Keras's merged kernel, as `merge_lora` and export fold it.

A `Projection` is installed as the layer's `call`, so weights, names and the adapter
format stay Keras's own; `projection_of(dense)` returns it.

Example:
```python
lean_projections(backbone)                     # outputs unchanged, bit for bit
projection_of(backbone.encoder_transformer_layers[0].self_attention.query_projector)
```
"""

from __future__ import annotations

from typing import Any

import keras
from keras import ops

from lora_keras.adapters.config import TARGETS, target_layers

Tensor = Any  # a backend tensor or Keras variable


def project(inputs: Tensor, kernel: Tensor) -> Tensor:
    """`inputs @ kernel` over the last axis of `inputs`, as a single 2-D matmul.

    Example:
    ```python
    project(keras.ops.ones((2, 5, 8)), keras.ops.ones((8, 3))).shape   # (2, 5, 3)
    ```
    """
    d_in, d_out = kernel.shape
    outputs = ops.matmul(ops.reshape(inputs, (-1, d_in)), kernel)
    return ops.reshape(outputs, (*ops.shape(inputs)[:-1], d_out))


class Projection:
    """The computation of one `Dense` projection, installed as its `call`.

    Plain: `x @ W` as one 2-D matmul. LoRA-enabled (Keras's `enable_lora` state:
    `lora_kernel_a`, `lora_kernel_b`, `lora_rank`, `lora_alpha`): in training
    `x @ W + (alpha / rank) * (dropout(x) @ A) @ B`, in inference `x @ (W + (alpha / rank) * A @ B)`.
    Bias and activation follow as in `Dense`.

    Args:
        dense: the layer; its weights stay where Keras keeps them.
        dropout: dropout rate on the LoRA branch's input, in training only.
        seed: seed of the dropout masks (`reset` rewinds them).
        init: how the adapter's `A` was drawn (a key of `config.INITIALIZERS`), for the adapter file.

    Example:
    ```python
    projection = Projection(dense, dropout=0.1, seed=0)
    dense.call = projection
    ```
    """

    def __init__(self, dense: keras.layers.Dense, dropout: float = 0.0, seed: int | None = None,
                 init: str | None = None):
        self.dense = dense
        self.dropout = float(dropout)
        self.init = init
        # Outside Keras's attribute tracking: a built layer takes no new state.
        self.seed_generator = keras.random.SeedGenerator(seed) if dropout > 0 else None
        self._initial_seed_state = (
            None if self.seed_generator is None else ops.convert_to_numpy(self.seed_generator.state)
        )

    @property
    def adapted(self) -> bool:
        """Whether the layer carries a LoRA adapter."""
        return bool(self.dense.lora_enabled)

    def __call__(self, inputs: Tensor, training: bool | None = None) -> Tensor:
        dense = self.dense
        if not (training and self.adapted):  # Keras's merged kernel (plain W without LoRA)
            outputs = project(inputs, dense.kernel)
        else:
            lora_inputs = inputs
            if self.seed_generator is not None:
                lora_inputs = keras.random.dropout(inputs, self.dropout, seed=self.seed_generator)
            lora = project(project(lora_inputs, dense.lora_kernel_a), dense.lora_kernel_b)
            outputs = project(inputs, dense._kernel) + (dense.lora_alpha / dense.lora_rank) * lora
        if dense.bias is not None:
            outputs = outputs + dense.bias
        return dense.activation(outputs) if dense.activation is not None else outputs

    def reset(self) -> None:
        """Rewind the dropout masks to their first draw (nothing to do without dropout)."""
        if self.seed_generator is not None:
            self.seed_generator.state.assign(self._initial_seed_state)


def projection_of(dense: keras.layers.Dense) -> Projection | None:
    """The `Projection` installed on `dense`, or None if it computes as Keras's `Dense`."""
    call = dense.__dict__.get("call")
    return call if isinstance(call, Projection) else None


def install_projection(dense: keras.layers.Dense, dropout: float = 0.0, seed: int | None = None,
                       init: str | None = None) -> Projection:
    """Make `dense` compute through a new `Projection` (replacing any earlier one); returns it."""
    projection = Projection(dense, dropout=dropout, seed=seed, init=init)
    dense.call = projection
    return projection


def lean_projections(backbone: keras.Model) -> int:
    """Make every T5 projection of `backbone` without a `Projection` (and not quantized) use one.

    Adapted layers get theirs from `add_lora`. Returns the number of layers changed.

    Example:
    ```python
    lean_projections(backbone)   # e.g. 40 for a 2+2-layer gated T5
    ```
    """
    changed = 0
    for dense in target_layers(backbone, TARGETS).values():
        if getattr(dense, "quantization_mode", None) is None and projection_of(dense) is None:
            install_projection(dense)
            changed += 1
    return changed
