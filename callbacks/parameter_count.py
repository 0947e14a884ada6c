"""Trainable / total parameter counts of the model being fitted."""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import TYPE_CHECKING

import keras

from ._summary import flush, write_scalars

if TYPE_CHECKING:
    from tensorboard.summary import Writer


def count_params(variables: Iterable[keras.Variable]) -> int:
    """Sum of the element counts of `variables`.

    Example:
    ``python
    count_params(model.trainable_weights)
    ``
    """
    return int(sum(math.prod(int(d) for d in v.shape) for v in variables))


class ParameterCount(keras.callbacks.Callback):
    """Counts `self.model`'s trainable and total parameters at train begin.

    Counting at `on_train_begin` (not construction) sees the model as
    fitted: LoRA adapters added and frozen kernels (`trainable=False`)
    excluded from `trainable_weights` but still in `weights`. For a model with
    lora-keras adapters (`LoraDense`), the trainable parameters are one adapter's
    at its own rank (`lora_parameter_count`), not the padded slots the model holds,
    and the total is the base's plus that adapter's.

    Scalars (step 0): `trainable_params`, `total_params`.

    Args:
        writer: a TensorBoard summary writer, or None for no scalars.
        slot: which adapter of a model with several (0 for one).

    Example:
    ``python
    counter = ParameterCount(writer=writer)
    model.fit(ds, epochs=1, callbacks=[counter])
    counter.results()["trainable_percent"]
    ``
    """

    def __init__(self, writer: Writer | None = None, slot: int = 0) -> None:
        super().__init__()
        self.writer = writer
        self.slot = slot
        self.trainable_params = 0
        self.total_params = 0

    def on_train_begin(self, logs: dict | None = None) -> None:
        from lora_keras.adapters import adapter_config, adapter_variables, lora_layers, lora_parameter_count

        backbone = getattr(self.model, "backbone", None)
        if backbone is not None and lora_layers(backbone):
            base = count_params(self.model.weights) - count_params(adapter_variables(backbone))
            self.trainable_params = lora_parameter_count(backbone, adapter_config(backbone, self.slot))
            self.total_params = base + self.trainable_params
        else:
            self.trainable_params = count_params(self.model.trainable_weights)
            self.total_params = count_params(self.model.weights)
        write_scalars(
            self.writer,
            {
                "trainable_params": self.trainable_params,
                "total_params": self.total_params,
            },
            step=0,
        )
        flush(self.writer)

    def results(self) -> dict[str, float]:
        """`trainable_params`, `total_params` and `trainable_percent`."""
        total = self.total_params
        return {
            "trainable_params": int(self.trainable_params),
            "total_params": int(total),
            "trainable_percent": (
                100.0 * self.trainable_params / total if total else 0.0
            ),
        }
