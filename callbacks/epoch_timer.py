"""Per-epoch training wall time and token throughput."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

import keras

from lora_keras.backends.devices import sync_devices

from ._summary import flush, write_scalars

if TYPE_CHECKING:
    from tensorboard.summary import Writer


def _sync():
    # GPU kernels run asynchronously: without a sync, the clock could stop
    # while training steps are still queued on the device.
    sync_devices()


class EpochTimer(keras.callbacks.Callback):
    """Times each epoch's training phase (validation excluded) and the whole fit.

    An epoch's training time runs from `on_epoch_begin` to the first
    `on_test_begin` of that epoch (validation start) or, without
    validation, to `on_epoch_end`. The whole-fit time
    (`on_train_begin`..`on_train_end`) includes validation and tracing.

    Scalars per epoch: `epoch_time_s`, `tokens_per_s`.

    Args:
        tokens_per_epoch: the real tokens one epoch trains on, for `tokens_per_s`.
        writer: a TensorBoard summary writer, or None for no scalars.

    Example:
    ``python
    timer = EpochTimer(tokens_per_epoch=123_456, writer=writer)
    model.fit(ds, validation_data=val_ds, epochs=3, callbacks=[timer])
    timer.results()["tokens_per_s"]
    ``
    """

    def __init__(self, tokens_per_epoch: int, writer: Writer | None = None) -> None:
        super().__init__()
        self.tokens_per_epoch = int(tokens_per_epoch)
        self.writer = writer
        self.epoch_times_s = []
        self._train_start = None
        self._train_time_s = None
        self._epoch_start = None

    def on_train_begin(self, logs: dict | None = None) -> None:
        self.epoch_times_s = []
        self._train_time_s = None
        self._epoch_start = None
        self._train_start = time.perf_counter()

    def on_epoch_begin(self, epoch: int, logs: dict | None = None) -> None:
        self._epoch_start = time.perf_counter()

    def _stop_epoch_clock(self) -> None:
        # Only the first stop per epoch counts; evaluate() calls outside an
        # epoch (no running clock) are ignored.
        if self._epoch_start is None:
            return
        _sync()
        self.epoch_times_s.append(time.perf_counter() - self._epoch_start)
        self._epoch_start = None

    def on_test_begin(self, logs: dict | None = None) -> None:
        self._stop_epoch_clock()

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        self._stop_epoch_clock()
        if not self.epoch_times_s:
            return
        t = self.epoch_times_s[-1]
        write_scalars(
            self.writer,
            {"epoch_time_s": t, "tokens_per_s": self._rate(1, t)},
            step=epoch,
        )

    def on_train_end(self, logs: dict | None = None) -> None:
        if self._train_start is not None:
            self._train_time_s = time.perf_counter() - self._train_start
        flush(self.writer)

    def _rate(self, n_epochs: int, seconds: float) -> float:
        return self.tokens_per_epoch * n_epochs / seconds if seconds > 0 else 0.0

    def results(self) -> dict:
        """Final figures as plain Python types.

        `tokens_per_s` is steady-state: the first epoch carries graph
        tracing, so with >= 2 epochs it is computed over epochs 2..n only.
        """
        times = [float(t) for t in self.epoch_times_s]
        steady = times[1:] if len(times) >= 2 else times
        if self._train_time_s is not None:
            total = self._train_time_s
        elif self._train_start is not None:  # queried mid-fit
            total = time.perf_counter() - self._train_start
        else:
            total = 0.0
        return {
            "training_time_s": float(total),
            "mean_epoch_time_s": sum(times) / len(times) if times else 0.0,
            "tokens_per_s": float(self._rate(len(steady), sum(steady))),
            "epoch_times_s": times,
        }
