"""Per-epoch training / validation loss scalars, and the validation perplexity."""

from __future__ import annotations

from typing import TYPE_CHECKING

import keras

from lora_keras.models.token_loss import perplexity

from ._summary import flush, write_scalars

if TYPE_CHECKING:
    from tensorboard.summary import Writer


class LossScalars(keras.callbacks.Callback):
    """Writes `epoch_loss`, `val_loss` and `val_perplexity` (when validating) per epoch.

    The losses are whatever the model logs as `loss` and `val_loss`; with
    `lora_keras.models.token_loss.TokenLossSeq2SeqLM` that is the mean negative
    log-likelihood per real target token over the epoch (training, with dropout,
    as the weights moved) or over the validation set (at the epoch's end).

    Args:
        writer: a TensorBoard summary writer, or None for no scalars.
        slot: read one slot's losses of a packed model (`loss_<slot>`, `val_loss_<slot>`), else None.

    Example:
    ``python
    losses = LossScalars(writer=writer)
    model.fit(ds, validation_data=val_ds, epochs=3, callbacks=[losses])
    losses.results()  # {"final_loss": ..., "val_loss": ..., "val_perplexity": ...}
    ``
    """

    def __init__(self, writer: Writer | None = None, slot: int | None = None) -> None:
        super().__init__()
        self.writer = writer
        self.loss_key = "loss" if slot is None else f"loss_{slot}"
        self.final_loss = None
        self.val_loss = None

    def on_train_begin(self, logs: dict | None = None) -> None:
        self.final_loss = None
        self.val_loss = None

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        logs = logs or {}
        loss, val_loss = logs.get(self.loss_key), logs.get(f"val_{self.loss_key}")
        if loss is not None:
            self.final_loss = float(loss)
        if val_loss is not None:
            self.val_loss = float(val_loss)
        write_scalars(
            self.writer,
            {"epoch_loss": loss, "val_loss": val_loss, "val_perplexity": perplexity(val_loss)},
            step=epoch,
        )

    def on_train_end(self, logs: dict | None = None) -> None:
        flush(self.writer)

    def results(self) -> dict[str, float | None]:
        """`final_loss`, `val_loss` and `val_perplexity` of the last epoch (None when not logged)."""
        return {"final_loss": self.final_loss, "val_loss": self.val_loss, "val_perplexity": perplexity(self.val_loss)}
