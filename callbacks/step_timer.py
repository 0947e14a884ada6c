"""Wall time of each training step after a few warm-up steps: a configuration's own step cost."""

from __future__ import annotations

import statistics
import time

import keras

from lora_keras.runtime.backend import sync_devices


class StepTimer(keras.callbacks.Callback):
    """Times every training batch of a `fit` after the first `warmup` ones.

    Used to measure a configuration alone for a few steps when it trains packed with others:
    its median step time, scaled to its steps, is its own training time.

    Args:
        warmup: batches not timed (allocator warm-up, a longest batch for the memory peak).

    Example:
    ``python
    timer = StepTimer(warmup=1)
    model.fit(dataset.take(6), callbacks=[timer])
    timer.results()["median_step_s"]
    ``
    """

    def __init__(self, warmup: int = 1) -> None:
        super().__init__()
        self.warmup = int(warmup)
        self.step_times_s = []
        self._batch = 0
        self._start = None

    def on_train_begin(self, logs: dict | None = None) -> None:
        self.step_times_s = []
        self._batch = 0

    def on_train_batch_begin(self, batch: int, logs: dict | None = None) -> None:
        self._start = time.perf_counter() if self._batch >= self.warmup else None

    def on_train_batch_end(self, batch: int, logs: dict | None = None) -> None:
        if self._start is not None:
            sync_devices()  # GPU steps run asynchronously
            self.step_times_s.append(time.perf_counter() - self._start)
        self._batch += 1

    def results(self) -> dict:
        """`median_step_s` over the timed steps (0 without any) and `timed_steps`."""
        times = self.step_times_s
        return {"median_step_s": statistics.median(times) if times else 0.0, "timed_steps": len(times)}
