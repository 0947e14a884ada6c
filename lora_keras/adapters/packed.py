"""Several LoRA adapters on one frozen T5, trained in one step: each slot its own A, B and scale.

A `LoraPack` gives every targeted `Dense` of a backbone `slots` adapters, padded to
`max_rank`: `A` of shape `(slots, d_in, max_rank)`, `B` of `(slots, max_rank, d_out)` and a
scale `alpha / rank` per slot. A batch of `active * b` rows holds slot `j`'s examples in rows
`j*b .. (j+1)*b - 1`; each adapted layer computes, for slot `j`'s rows,
`x @ W + scale[j] * (dropout(x) @ A[j]) @ B[j]`.

Why this trains each slot exactly as alone:
* a rank `r` below `max_rank` has zero columns in `A` and zero rows in `B`; their gradients
  are exactly zero (`x @ A` is zero there, and so is `B`'s row), so Adam never moves them;
* slots share no trainable variable element, and Adam acts element by element, so summing
  the slots' losses gives each slot's adapter the gradient of its own loss alone.

The number of slots in use (`active`) is a variable, so one traced step serves one
configuration alone (`active = 1`) or several together, at any rank up to `max_rank`.

Example:
```python
pack = add_packed_lora(backbone, slots=3, max_rank=16, targets=("q", "v"))
for slot, rank in enumerate((1, 4, 16)):
    pack.set_slot(slot, LoraConfig(rank=rank), seed=0)
pack.activate(3)
pack.slot_weights(1, rank=4)      # {"encoder/0/self_attention/q/lora_a": (d_in, 4) array, ...}
```
"""

from __future__ import annotations

import json
import os

import keras
import numpy as np
from keras import ops
from safetensors.numpy import save_file

from lora_keras.adapters.config import INITIALIZERS, LoraConfig, target_layers
from lora_keras.adapters.projection import Projection, Tensor, project


class PackedProjection(Projection):
    """One `Dense` computing with a `LoraPack`'s slots, installed as its `call`.

    Owns the layer's packed adapter state: `lora_a` `(slots, d_in, max_rank)`, `lora_b`
    `(slots, max_rank, d_out)` (trainable) and `lora_scale` `(slots,)` (not trainable),
    tracked by the layer so the model trains and counts them. In training and inference alike
    the LoRA branch stays unmerged: each slot's rows get their own adapter.

    Args:
        dense: the layer (built, frozen).
        pack: the `LoraPack` it belongs to (the slot count in use).
        dropout: dropout on the LoRA branch's input, in training only.
        seed: seed of the dropout masks.

    Example: `PackedProjection(dense, pack, dropout=0.0, seed=0)` (made by `add_packed_lora`).
    """

    def __init__(self, dense: keras.layers.Dense, pack: LoraPack, dropout: float = 0.0, seed: int | None = None):
        super().__init__(dense, dropout=dropout, seed=seed)
        self.pack = pack
        d_in, d_out = dense.kernel.shape
        dense._tracker.unlock()  # as Keras's own `enable_lora` does on a built layer
        self.lora_a = dense.add_weight(
            name="packed_lora_a", shape=(pack.slots, d_in, pack.max_rank), initializer="zeros")
        self.lora_b = dense.add_weight(
            name="packed_lora_b", shape=(pack.slots, pack.max_rank, d_out), initializer="zeros")
        self.lora_scale = dense.add_weight(
            name="packed_lora_scale", shape=(pack.slots,), initializer="zeros", trainable=False)
        dense._tracker.lock()

    @property
    def adapted(self) -> bool:
        return False  # not Keras's `enable_lora` state: `adapted_layers` and `merge_lora` leave it alone

    def __call__(self, inputs: Tensor, training: bool | None = None) -> Tensor:
        dense = self.dense
        outputs = project(inputs, dense.kernel)
        lora_inputs = inputs
        if training and self.seed_generator is not None:
            lora_inputs = keras.random.dropout(inputs, self.dropout, seed=self.seed_generator)
        active = ops.cast(self.pack.active, "int32")
        d_in, d_out = dense.kernel.shape
        rank = self.pack.max_rank
        slot_rows = ops.reshape(lora_inputs, (active, -1, d_in))  # slot j's examples, flattened
        a = ops.slice(self.lora_a, (0, 0, 0), (active, d_in, rank))
        b = ops.slice(self.lora_b, (0, 0, 0), (active, rank, d_out))
        scale = ops.reshape(ops.slice(self.lora_scale, (0,), (active,)), (active, 1, 1))
        lora = scale * ops.matmul(ops.matmul(slot_rows, a), b)
        outputs = outputs + ops.reshape(lora, ops.shape(outputs))
        if dense.bias is not None:
            outputs = outputs + dense.bias
        return dense.activation(outputs) if dense.activation is not None else outputs


def _assign_slot(variable, slot, value):
    values = keras.ops.convert_to_numpy(variable).copy()
    values[slot] = value
    variable.assign(values)


class LoraPack:
    """The slots of packed adapters on one backbone (`add_packed_lora` makes it).

    Args:
        slots: how many adapters each targeted layer holds.
        max_rank: the rank every slot is padded to.
        targets: the projections adapted (one set for every slot).
        dropout: LoRA dropout (one rate for every slot).
        init: how a slot's `A` is drawn (a key of `INITIALIZERS`).

    Example: `pack.activate(2)` trains or evaluates slots 0 and 1 on batches of `2 * b` rows.
    """

    def __init__(self, slots: int, max_rank: int, targets: tuple[str, ...], dropout: float = 0.0,
                 init: str = "peft"):
        self.slots = int(slots)
        self.max_rank = int(max_rank)
        self.targets = tuple(targets)
        self.dropout = float(dropout)
        self.init = init
        self.layers: dict[str, PackedProjection] = {}
        # Read by the traced steps: changing it needs no new trace.
        self.active = keras.Variable(1, dtype="int32", trainable=False, name="active_slots")

    def fits(self, config: LoraConfig) -> bool:
        """Whether `config` can take a slot: same targets, dropout and init, rank at most `max_rank`."""
        return (tuple(config.targets) == self.targets and float(config.dropout) == self.dropout
                and config.init == self.init and config.rank <= self.max_rank)

    def activate(self, slots: int) -> None:
        """Use the first `slots` slots: batches then hold `slots` equal parts, one per slot."""
        if not 1 <= slots <= self.slots:
            raise ValueError(f"{slots} slots asked of a pack of {self.slots}")
        self.active.assign(slots)

    def set_slot(self, slot: int, config: LoraConfig, seed: int) -> None:
        """Put slot `slot` at `add_lora(backbone, config, seed)`'s initial adapter, padded to `max_rank`.

        `A`'s first `rank` columns get the values `add_lora` draws (layer `i` seeded `seed + i`),
        the rest zero; `B` is zero; the scale is `alpha / rank`.

        Example: `pack.set_slot(0, LoraConfig(rank=4), seed=0)`.
        """
        if not self.fits(config):
            raise ValueError(f"{config} does not fit a pack of {self.targets}, rank {self.max_rank}, "
                             f"dropout {self.dropout}, init {self.init}")
        for offset, projection in enumerate(self.layers.values()):
            d_in = projection.lora_a.shape[1]
            a = np.zeros((d_in, self.max_rank), "float32")
            a[:, : config.rank] = keras.ops.convert_to_numpy(
                INITIALIZERS[config.init](seed + offset)((d_in, config.rank)))
            _assign_slot(projection.lora_a, slot, a)
            _assign_slot(projection.lora_b, slot, 0.0)
            _assign_slot(projection.lora_scale, slot, config.scale)

    def load_slot(self, slot: int, weights: dict[str, np.ndarray]) -> None:
        """Set slot `slot`'s `A` and `B` from an adapter's weights (`read_adapter`), padded with zeros."""
        for path, projection in self.layers.items():
            a, b = weights[f"{path}/lora_a"], weights[f"{path}/lora_b"]
            padded_a = np.zeros(projection.lora_a.shape[1:], "float32")
            padded_b = np.zeros(projection.lora_b.shape[1:], "float32")
            padded_a[:, : a.shape[1]] = a
            padded_b[: b.shape[0]] = b
            _assign_slot(projection.lora_a, slot, padded_a)
            _assign_slot(projection.lora_b, slot, padded_b)

    def reset_dropout(self) -> None:
        """Rewind every layer's dropout masks to their first draw."""
        for projection in self.layers.values():
            projection.reset()

    def slot_weights(self, slot: int, rank: int) -> dict[str, np.ndarray]:
        """Slot `slot`'s adapter at rank `rank`, as `adapter_weights` names an `add_lora` backbone's.

        Example: `save_file(pack.slot_weights(0, rank=4), "adapter.safetensors")`.
        """
        weights = {}
        for path, projection in self.layers.items():
            # Contiguous copies: safetensors writes an array's buffer, and a column slice's is the whole.
            weights[f"{path}/lora_a"] = np.ascontiguousarray(keras.ops.convert_to_numpy(projection.lora_a[slot])[:, :rank])
            weights[f"{path}/lora_b"] = np.ascontiguousarray(keras.ops.convert_to_numpy(projection.lora_b[slot])[:rank])
        return weights

    def save_slot(self, slot: int, config: LoraConfig, path: str | os.PathLike) -> None:
        """Write slot `slot`'s adapter as `save_adapter` writes an `add_lora` backbone's (`load_adapter` reads it)."""
        metadata = {"lora_config": json.dumps(config.to_dict())}
        save_file(self.slot_weights(slot, config.rank), str(path), metadata=metadata)

    def merged_weights(self, backbone: keras.Model, slot: int) -> list[np.ndarray]:
        """`backbone`'s weights with slot `slot` folded in (`W + scale * A @ B`), in an unadapted backbone's order.

        Example: `copy.set_weights(pack.merged_weights(backbone, 0))`.
        """
        merged = {}
        packed = set()
        for projection in self.layers.values():
            kernel = projection.dense._kernel
            scale = float(keras.ops.convert_to_numpy(projection.lora_scale[slot]))
            a = keras.ops.convert_to_numpy(projection.lora_a[slot])
            b = keras.ops.convert_to_numpy(projection.lora_b[slot])
            merged[id(kernel)] = keras.ops.convert_to_numpy(kernel) + scale * (a @ b)
            packed.update(id(v) for v in (projection.lora_a, projection.lora_b, projection.lora_scale))
        return [
            merged[id(v)] if id(v) in merged else keras.ops.convert_to_numpy(v)
            for v in backbone.weights
            if id(v) not in packed
        ]

    @property
    def variables(self) -> list:
        """Every packed adapter variable (A, B and scale of each layer)."""
        return [v for p in self.layers.values() for v in (p.lora_a, p.lora_b, p.lora_scale)]


def add_packed_lora(
    backbone: keras.Model, slots: int, max_rank: int, targets: tuple[str, ...] = ("q", "v"),
    dropout: float = 0.0, seed: int | None = None, init: str = "peft",
) -> LoraPack:
    """Freeze `backbone` and give each targeted layer `slots` LoRA adapters padded to `max_rank`.

    Every slot starts at zero (the base model); `LoraPack.set_slot` puts a configuration in one.

    Args:
        backbone: a keras-hub `T5Backbone`.
        slots: adapters per layer, trained together.
        max_rank: the largest rank a slot may hold.
        targets: projections to adapt (`TARGETS`).
        dropout: LoRA dropout of every slot.
        seed: seeds the dropout masks (layer `i`: `seed + i`, as `add_lora`).
        init: how `set_slot` draws `A`.

    Returns:
        The `LoraPack`.

    Example: `pack = add_packed_lora(backbone, slots=3, max_rank=16)`.
    """
    pack = LoraPack(slots, max_rank, targets, dropout, init)
    for variable in backbone.weights:
        variable.trainable = False
    for offset, (path, dense) in enumerate(target_layers(backbone, targets).items()):
        projection = PackedProjection(dense, pack, dropout, None if seed is None else seed + offset)
        dense.call = projection
        pack.layers[path] = projection
    return pack
