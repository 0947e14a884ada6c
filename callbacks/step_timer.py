"""Wall time of each training step after a few warm-up steps: a configuration's own step cost."""

from __future__ import annotations

import statistics
import time

import keras

from lora_keras.backends.devices import sync_devices


class StepTimer(keras.callbacks.Callback):
    """Times every training batch of a `fit` after the first `warmup` ones; stops it once it has enough.

    Used to measure a configuration alone: its mean step time, scaled to its steps, estimates
    its own training time when it trains packed with others. With `min_steps` or `min_time_s`,
    the fit stops once at least `min_steps` steps were timed and they took `min_time_s` in all:
    short steps are timed in greater number, so the mean's noise stays small.

    Args:
        warmup: batches not timed (allocator warm-up, a longest batch for the memory peak).
        min_steps: timed steps before the fit may stop; 0 never stops it.
        min_time_s: timed seconds before the fit may stop.

    Example:
    ``python
    timer = StepTimer(warmup=1, min_steps=6, min_time_s=1.0)
    model.fit(dataset, callbacks=[timer])          # stops after 6 timed steps and 1 s, or at the end
    timer.results()["mean_step_s"]
    ``
    """

    def __init__(self, warmup: int = 1, min_steps: int = 0, min_time_s: float = 0.0) -> None:
        super().__init__()
        self.warmup = int(warmup)
        self.min_steps = int(min_steps)
        self.min_time_s = float(min_time_s)
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
            if self.min_steps and len(self.step_times_s) >= self.min_steps and sum(
                    self.step_times_s) >= self.min_time_s:
                self.model.stop_training = True  # Keras ends the fit after this batch
        self._batch += 1

    def results(self) -> dict:
        """`mean_step_s` and `median_step_s` over the timed steps (0 without any) and `timed_steps`."""
        times = self.step_times_s
        return {"mean_step_s": statistics.fmean(times) if times else 0.0,
                "median_step_s": statistics.median(times) if times else 0.0, "timed_steps": len(times)}
