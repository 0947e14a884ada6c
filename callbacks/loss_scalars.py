"""Per-epoch training / validation loss scalars."""

import keras

from ._summary import flush, write_scalars


class LossScalars(keras.callbacks.Callback):
    """Writes ``epoch_loss`` and (when validating) ``val_loss`` per epoch.

    Example:
        losses = LossScalars(writer=writer)
        model.fit(ds, validation_data=val_ds, epochs=3, callbacks=[losses])
        losses.results()  # {"final_loss": ..., "val_loss": ... or None}
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
            {"epoch_loss": logs.get("loss"), "val_loss": logs.get("val_loss")},
            step=epoch,
        )

    def on_train_end(self, logs=None):
        flush(self.writer)

    def results(self):
        return {"final_loss": self.final_loss, "val_loss": self.val_loss}
