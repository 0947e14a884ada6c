"""Per-epoch training / validation loss scalars, and the validation perplexity."""

import keras

from lora_keras.models.token_loss import perplexity

from ._summary import flush, write_scalars


class LossScalars(keras.callbacks.Callback):
    """Writes ``epoch_loss``, ``val_loss`` and ``val_perplexity`` (when validating) per epoch.

    The losses are whatever the model logs as ``loss`` and ``val_loss``; with
    `lora_keras.models.token_loss.TokenLossSeq2SeqLM` that is the mean negative
    log-likelihood per real target token over the epoch (training, with dropout,
    as the weights moved) or over the validation set (at the epoch's end).

    Example:
        losses = LossScalars(writer=writer)
        model.fit(ds, validation_data=val_ds, epochs=3, callbacks=[losses])
        losses.results()  # {"final_loss": ..., "val_loss": ..., "val_perplexity": ...}
    """

    def __init__(self, writer=None):
        super().__init__()
        self.writer = writer
        self.final_loss = None
        self.val_loss = None

    def on_train_begin(self, logs=None):
        self.final_loss = None
        self.val_loss = None

    def on_epoch_end(self, epoch, logs=None):
        logs = logs or {}
        if "loss" in logs:
            self.final_loss = float(logs["loss"])
        if "val_loss" in logs:
            self.val_loss = float(logs["val_loss"])
        write_scalars(
            self.writer,
            {
                "epoch_loss": logs.get("loss"),
                "val_loss": logs.get("val_loss"),
                "val_perplexity": perplexity(logs.get("val_loss")),
            },
            step=epoch,
        )

    def on_train_end(self, logs=None):
        flush(self.writer)

    def results(self):
        return {"final_loss": self.final_loss, "val_loss": self.val_loss, "val_perplexity": perplexity(self.val_loss)}
