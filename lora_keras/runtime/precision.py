"""Training precision: Keras dtype policies, LoRA weights and optimizer state kept in float32.

`mixed_bfloat16` and `mixed_float16` compute in 16 bits and keep every variable in
float32 (Keras's mixed policies): the frozen base, LoRA's A and B, Adam's moments. The
loss is computed in float32 (Keras losses cast the logits to their own float32 dtype).
float16's narrow range needs loss scaling: its optimizer is wrapped in Keras's
`LossScaleOptimizer`; and keras-hub 0.32's T5 attention builds its mask as
`(1 - mask) * -1e9` in the compute dtype, which float16 turns into `0 * -inf = NaN`
on every position, so under `mixed_float16` the attention layers themselves (masks,
position bias, softmax) compute in float32 while their projections stay float16
(`build_backbone`). Adapters are saved from the float32 variables, so an adapter trained
in any precision loads into a float32 model.

Example:
```python
backbone = build_backbone(base, "mixed_bfloat16")
model.compile(optimizer=optimizer("mixed_float16", 1e-3))   # a LossScaleOptimizer around Adam
```
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

from lora_keras.errors import InputError

if TYPE_CHECKING:  # Keras loads its backend: imported where used, so the CLI checks flags without it
    import keras

PRECISIONS = ("float32", "mixed_bfloat16", "mixed_float16")
DEFAULT = "float32"


def check_precision(name: str) -> str:
    """`name` if it is one of `PRECISIONS`, else an `InputError` (parameter `precision`).

    Example:
    ```python
    check_precision("mixed_bfloat16")   # "mixed_bfloat16"
    ```
    """
    if name not in PRECISIONS:
        raise InputError(f"precision {name}: not one of {', '.join(PRECISIONS)}; pass one of them",
                         parameter="precision")
    return name


def dtype_policy(precision: str) -> keras.DTypePolicy:
    """The Keras dtype policy of `precision` (variables float32, computations float32 or 16 bits).

    Example:
    ```python
    dtype_policy("mixed_bfloat16").compute_dtype   # "bfloat16"
    ```
    """
    import keras

    return keras.dtype_policies.get(check_precision(precision))


def build_backbone(base: Any, precision: str) -> keras.Model:
    """`base.build_backbone()` in `precision`'s dtype policy (float16: attention's mask and softmax in float32).

    Args:
        base: a `lora_keras.models.base.BaseModel`.
        precision: one of `PRECISIONS`.

    Example:
    ```python
    backbone = build_backbone(base, "mixed_float16")
    ```
    """
    backbone = base.build_backbone(dtype=dtype_policy(precision))
    if precision == "mixed_float16":
        for stack in (backbone.encoder_transformer_layers, backbone.decoder_transformer_layers):
            for block in stack:
                for name in ("self_attention", "cross_attention"):
                    attention = getattr(block, name, None)
                    if attention is not None:
                        attention.dtype_policy = "float32"  # its projections keep their own float16 policy
    return backbone


def optimizer(precision: str, learning_rate: float) -> keras.optimizers.Optimizer:
    """Adam at `learning_rate`; for `mixed_float16`, inside a `LossScaleOptimizer`.

    Example:
    ```python
    model.compile(optimizer=optimizer("float32", 3e-3))
    ```
    """
    import keras

    adam = keras.optimizers.Adam(learning_rate)
    if check_precision(precision) == "mixed_float16":
        return keras.optimizers.LossScaleOptimizer(adam)
    return adam


def reset_optimizer(optimizer: keras.optimizers.Optimizer, learning_rate: float) -> None:
    """Put an optimizer from `optimizer(...)` back to its state before its first step, at `learning_rate`.

    Step counts and moments go to zero; a `LossScaleOptimizer`'s scale back to its initial scale.

    Example:
    ```python
    reset_optimizer(model.optimizer, 1e-3)
    ```
    """
    inner = getattr(optimizer, "inner_optimizer", optimizer)
    initial = {}
    if inner is not optimizer and optimizer.built:
        initial[id(optimizer.dynamic_scale)] = optimizer.initial_scale
    for variable in optimizer.variables:  # the learning rate's too: it is set below
        value = initial.get(id(variable), 0)
        variable.assign(np.full(variable.shape, value, variable.dtype))
    inner.learning_rate = learning_rate
