"""`LoraDense`: one T5 projection and its LoRA adapters, as PEFT's `lora.Linear` holds them.

A `LoraDense` wraps a frozen `Dense` (its `base`) and owns everything LoRA adds to it:
`A` of shape `(slots, d_in, max_rank)`, `B` of `(slots, max_rank, d_out)`, a scale
`alpha / rank` per slot, the dropout on the LoRA branch's input and that dropout's seed.
Each slot is one adapter. A plain adapter is one slot; several slots are PEFT's
multi-adapter case, which is how packed trials train: a batch of `active * b` rows holds
slot `j`'s examples in rows `j*b .. (j+1)*b - 1`, and those rows get slot `j`'s adapter:

    y = x @ W + scale[j] * (dropout(x) @ A[j]) @ B[j]

in training and inference alike (`merge_lora` folds an adapter into `W` for export).
A rank `r` below `max_rank` has zero columns in `A` and zero rows in `B`: their
gradients are exactly zero, so Adam never moves them, and every slot trains as its
own rank would alone. With no slots the layer is the plain projection.

Every projection computes `x @ W` as one 2-D matmul: Keras's `ops.matmul` of a
`(batch, length, d_in)` input goes through `tf.tensordot`, about 24 graph ops around
its one `MatMul`; the 2-D form is 20 ops per projection against 26 in a forward pass, with
the same numbers, and a T5 step has hundreds of projections.

Example:
```python
layer = LoraDense(dense, slots=3, max_rank=16, dropout=0.1, seed=0)
layer.set_slot(1, LoraConfig(rank=4), seed=0)
layer.activate(2)          # batches of 2 * b rows: slots 0 and 1
layer.slot_weights(1)      # (A (d_in, 4), B (4, d_out)) as numpy arrays
```
"""

from __future__ import annotations

from typing import Any

import keras
import numpy as np
from keras import ops

from lora_keras.adapters.config import INITIALIZERS, LoraConfig
from lora_keras.backends.devices import static_shapes
from lora_keras.errors import InputError

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


class LoraDense(keras.layers.Layer):
    """A frozen `Dense` and `slots` LoRA adapters of rank up to `max_rank` (none: the plain projection).

    Args:
        base: the `Dense` it wraps (built; its weights stay where they are, frozen by `add_lora`).
        slots: how many adapters it holds; 0 for none.
        max_rank: the rank every slot is padded to.
        dropout: dropout rate on the LoRA branch's input, in training only (one rate for every slot).
        seed: seed of the dropout masks (`reset_dropout` rewinds them).
        targets: the projections the adapters were added to (what a slot's `LoraConfig` must name).
        init: how a slot's `A` is drawn (a key of `config.INITIALIZERS`).

    Example:
    ```python
    layer = LoraDense(dense, slots=1, max_rank=4)
    layer.set_slot(0, LoraConfig(rank=4), seed=0)
    ```
    """

    def __init__(self, base: keras.layers.Dense, slots: int = 0, max_rank: int = 0, dropout: float = 0.0,
                 seed: int | None = None, targets: tuple[str, ...] = (), init: str = "peft", **kwargs: Any):
        super().__init__(name=f"{base.name}_lora", dtype=base.dtype_policy, **kwargs)
        self.base = base
        self.active_count = 1  # slots in use; `active` holds it too, for TensorFlow's traced steps
        self.slots = int(slots)
        self.max_rank = int(max_rank)
        self.dropout = float(dropout)
        self.targets = tuple(targets)
        self.init = init
        self.configs: list[LoraConfig | None] = [None] * self.slots  # what each slot holds
        d_in, d_out = base.kernel.shape
        if self.slots:
            self.lora_a = self.add_weight(name="lora_a", shape=(self.slots, d_in, self.max_rank),
                                          initializer="zeros")
            self.lora_b = self.add_weight(name="lora_b", shape=(self.slots, self.max_rank, d_out),
                                          initializer="zeros")
            self.lora_scale = self.add_weight(name="lora_scale", shape=(self.slots,), initializer="zeros",
                                              trainable=False)
        if self.slots > 1:  # read by the traced steps: changing it needs no new trace
            self.active = self.add_weight(name="active_slots", shape=(), dtype="int32", initializer="ones",
                                          trainable=False)
        self.seed_generator = keras.random.SeedGenerator(seed) if self.slots and dropout > 0 else None
        self._first_seed = (None if self.seed_generator is None
                            else ops.convert_to_numpy(self.seed_generator.state))
        self.built = True

    def call(self, inputs: Tensor, training: bool | None = None) -> Tensor:
        base = self.base
        outputs = project(inputs, base.kernel)
        if self.slots:
            lora_inputs = inputs
            if training and self.seed_generator is not None:
                lora_inputs = keras.random.dropout(inputs, self.dropout, seed=self.seed_generator)
            outputs = outputs + self._lora(lora_inputs, ops.shape(outputs))
        if base.bias is not None:
            outputs = outputs + base.bias
        return base.activation(outputs) if base.activation is not None else outputs

    def _lora(self, inputs: Tensor, shape: tuple) -> Tensor:
        if self.slots == 1:  # static shapes: any backend, XLA included; a reshape costs fewer ops than a slice
            a = ops.reshape(self.lora_a, self.lora_a.shape[1:])
            b = ops.reshape(self.lora_b, self.lora_b.shape[1:])
            return project(project(inputs, a), b) * ops.reshape(self.lora_scale, ())
        d_in, d_out = self.base.kernel.shape
        if static_shapes():  # the count is a number in the traced step: plain slices
            active = self.active_count
            a, b, scale = (ops.convert_to_tensor(v)[:active] for v in (self.lora_a, self.lora_b, self.lora_scale))
        else:
            active = ops.cast(self.active, "int32")
            a = ops.slice(self.lora_a, (0, 0, 0), (active, d_in, self.max_rank))
            b = ops.slice(self.lora_b, (0, 0, 0), (active, self.max_rank, d_out))
            scale = ops.slice(self.lora_scale, (0,), (active,))
        slot_rows = ops.reshape(inputs, (active, -1, d_in))  # slot j's examples, flattened
        scale = ops.reshape(scale, (active, 1, 1))
        return ops.reshape(ops.matmul(ops.matmul(slot_rows, a), b) * scale, shape)

    # --- slots ---------------------------------------------------------------------------------

    def fits(self, config: LoraConfig) -> bool:
        """Whether `config` can take a slot: the layer's targets, dropout and init, rank at most `max_rank`."""
        return (self.slots > 0 and set(config.targets) == set(self.targets) and float(config.dropout) == self.dropout
                and config.init == self.init and config.rank <= self.max_rank)

    def set_slot(self, slot: int, config: LoraConfig, seed: int | None) -> None:
        """Put slot `slot` at `config`'s initial adapter: `A` drawn by its init (seeded `seed`), `B` zero.

        `A`'s first `rank` columns hold the draw, the rest zero; the scale is `alpha / rank`.

        Example: `layer.set_slot(0, LoraConfig(rank=4), seed=7)`.
        """
        d_in, d_out = self.base.kernel.shape
        a = INITIALIZERS[config.init](seed)((d_in, config.rank))
        self.load_slot(slot, config, a, np.zeros((config.rank, d_out), "float32"))

    def load_slot(self, slot: int, config: LoraConfig, a: np.ndarray, b: np.ndarray) -> None:
        """Set slot `slot` to `config` with `A` `(d_in, rank)` and `B` `(rank, d_out)`, padded with zeros.

        Example: `layer.load_slot(0, config, a, b)` (what `load_adapter` does per layer).
        """
        self._check_slot(slot)
        if not self.fits(config):
            raise InputError(
                f"config: rank {config.rank}, targets {','.join(config.targets)}, dropout {config.dropout}, "
                f"init {config.init} does not fit adapters of {','.join(self.targets)}, rank up to {self.max_rank}, "
                f"dropout {self.dropout}, init {self.init}; add LoRA again with this config", parameter="config")
        padded_a = np.zeros(self.lora_a.shape[1:], "float32")
        padded_b = np.zeros(self.lora_b.shape[1:], "float32")
        padded_a[:, : config.rank] = a
        padded_b[: config.rank] = b
        self._assign(slot, padded_a, padded_b, config.scale)
        self.configs[slot] = config

    def clear_slot(self, slot: int) -> None:
        """Empty slot `slot`: zero `A`, `B` and scale (its rows then compute the base)."""
        self._check_slot(slot)
        self._assign(slot, np.zeros(self.lora_a.shape[1:], "float32"), np.zeros(self.lora_b.shape[1:], "float32"),
                     0.0)
        self.configs[slot] = None

    def slot_weights(self, slot: int) -> tuple[np.ndarray, np.ndarray]:
        """Slot `slot`'s `A` `(d_in, rank)` and `B` `(rank, d_out)` at its own rank, as contiguous arrays."""
        rank = self.slot_config(slot).rank
        # Contiguous copies: safetensors writes an array's buffer, and a column slice's is the whole.
        a = np.ascontiguousarray(ops.convert_to_numpy(self.lora_a)[slot][:, :rank])
        b = np.ascontiguousarray(ops.convert_to_numpy(self.lora_b)[slot][:rank])
        return a, b

    def merged_kernel(self, slot: int) -> np.ndarray:
        """`W + scale * A @ B` of slot `slot`: the kernel a plain `Dense` computes this slot's outputs with."""
        config = self.slot_config(slot)
        a, b = self.slot_weights(slot)
        return ops.convert_to_numpy(self.base.kernel) + config.scale * (a @ b)

    def activate(self, count: int) -> None:
        """Use the first `count` slots: batches then hold `count` equal parts, one per slot."""
        if not 1 <= count <= max(self.slots, 1):
            raise InputError(f"slots: {count} asked of a layer with {self.slots}; use 1 to {self.slots}",
                             parameter="slots")
        if self.slots > 1:
            self.active.assign(count)
        self.active_count = count  # what steps traced with static shapes (JAX) read: `static_shapes()`

    def reset_dropout(self) -> None:
        """Rewind the dropout masks to their first draw (nothing to do without dropout)."""
        if self.seed_generator is not None:
            self.seed_generator.state.assign(self._first_seed)

    @property
    def adapter_variables(self) -> list:
        """`A`, `B`, the scales and the slot count: the weights LoRA adds to the base's."""
        added = [self.lora_a, self.lora_b, self.lora_scale] if self.slots else []
        return added + [self.active] if self.slots > 1 else added

    def slot_config(self, slot: int) -> LoraConfig:
        """The `LoraConfig` slot `slot` holds; `InputError` if it holds none."""
        self._check_slot(slot)
        if self.configs[slot] is None:
            raise InputError(f"slot: slot {slot} holds no adapter; set or load one first", parameter="slot")
        return self.configs[slot]

    def _check_slot(self, slot):
        if not 0 <= slot < self.slots:
            raise InputError(f"slot: {slot} is not a slot of a layer with {self.slots}; use 0 to {self.slots - 1}",
                             parameter="slot")

    def _assign(self, slot, a, b, scale):
        for variable, value in ((self.lora_a, a), (self.lora_b, b), (self.lora_scale, scale)):
            values = ops.convert_to_numpy(variable).copy()
            values[slot] = value
            variable.assign(values)
