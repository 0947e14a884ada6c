"""Peak memory of one trial: GPU allocator peak, else host RSS high-water as if the trial ran alone."""

from __future__ import annotations

import ctypes
import gc
import threading
from collections.abc import Sequence
from typing import TYPE_CHECKING

import keras

from lora_keras.backends import memory as gpu_memory

from ._summary import flush, write_scalars

if TYPE_CHECKING:
    from tensorboard.summary import Writer

MIB = 2**20
# Module-level so tests can point them elsewhere (e.g. to force the fallback).
CLEAR_REFS_PATH = "/proc/self/clear_refs"
STATUS_PATH = "/proc/self/status"


def _reset_hwm():
    """Reset the kernel's RSS high-water mark (VmHWM); False if impossible.

    Writing "5" to clear_refs sets VmHWM back to the current RSS (Linux >=
    4.0), so the mark afterwards covers only this trial, not earlier ones.
    """
    try:
        with open(CLEAR_REFS_PATH, "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def _return_freed_memory():
    """Collect garbage and hand freed heap pages back to the kernel (glibc `malloc_trim`).

    Otherwise memory an earlier trial freed stays in the resident set, and a trial
    that reuses it shows a lower peak than the same trial run first.
    """
    gc.collect()
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):  # not glibc
        pass


class FirstTrialStart:
    """The host RSS at the start of the first trial a process runs, shared by its trials' `PeakMemory`.

    Every trial of a process starts from TensorFlow, the base model and the data; later
    trials also start from what earlier ones left (caches, allocator arenas). A trial's
    host peak is reported as this first start plus the trial's own rise above its start:
    the peak the trial shows in a process that runs it alone, whatever ran before it here.

    Example:
    ``python
    start = FirstTrialStart()
    PeakMemory(first_trial_start=start)   # for every trial of the process
    ``
    """

    def __init__(self) -> None:
        self.rss_mb = None

    def record(self) -> None:
        """Take the process's RSS now as the start, once (freed heap pages returned first); nothing on a GPU.

        Called before a process's first training step (its first trace), so that the start is
        the same whichever trial, and batch size, comes first.
        """
        if self.rss_mb is not None or gpu_memory.gpus_present():
            return
        _return_freed_memory()
        self.rss_mb = _read_rss_mb()


def _read_rss_mb():
    """VmRSS of this process in MiB, or None when unavailable."""
    return _read_status_mb("VmRSS:")


def _read_hwm_mb():
    """VmHWM of this process in MiB, or None when unavailable."""
    return _read_status_mb("VmHWM:")


def _read_status_mb(field):
    try:
        with open(STATUS_PATH) as f:
            for line in f:
                if line.startswith(field):
                    return int(line.split()[1]) * 1024 / MIB  # value is in kB
    except OSError:
        pass
    return None


class _RssSampler:
    """Daemon thread keeping the max RSS seen (fallback without clear_refs)."""

    def __init__(self, interval_s):
        import psutil

        self._proc = psutil.Process()
        self._interval_s = interval_s
        self._stop = threading.Event()
        self.peak_bytes = 0
        self.sample()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def sample(self):
        self.peak_bytes = max(self.peak_bytes, self._proc.memory_info().rss)

    def _run(self):
        while not self._stop.wait(self._interval_s):
            self.sample()

    def stop(self):
        self._stop.set()
        self._thread.join()
        self.sample()


class PeakMemory(keras.callbacks.Callback):
    """Peak memory during `fit`, reset at `on_train_begin`.

    With a GPU visible: TF's allocator peak on `GPU:0`, or the highest
    peak among `gpus` (those a mirrored model trains on)
    (`memory_kind="gpu"`); under JAX, whose peak cannot be reset, the
    process's allocator peak so far (`memory_kind="gpu_process"`). Otherwise host RSS (`memory_kind="host_rss"`):
    garbage is collected and freed heap pages returned to the kernel, the
    process's high-water mark (VmHWM) reset through `/proc/self/clear_refs`
    (if that cannot be written, a daemon thread samples RSS every
    `sample_interval_s` and may miss very short spikes), and the figure is
    the RSS at the start plus the rise above it during `fit`. With a shared
    `FirstTrialStart`, the start is the first trial's of the process, so each
    trial reads as if it ran in a process of its own. VmHWM is per process:
    run one trial at a time per process.

    Scalar per epoch: `peak_memory_mb` (MiB, peak so far).

    Args:
        writer: a TensorBoard summary writer, or None for no scalars.
        force_sampling: sample host RSS even where VmHWM can be reset.
        sample_interval_s: the sampler's period.
        gpus: the GPUs to read, e.g. `strategy_gpus(strategy)`; `GPU:0` when None.
        first_trial_start: shared by a process's trials, so each reads as if alone.

    Example:
    ``python
    mem = PeakMemory(writer=writer, first_trial_start=FirstTrialStart())
    model.fit(ds, epochs=2, callbacks=[mem])
    mem.results()  # {"peak_memory_mb": 1234.5, "memory_kind": "host_rss", ...}
    ``
    """

    def __init__(
        self,
        writer: Writer | None = None,
        force_sampling: bool = False,
        sample_interval_s: float = 0.02,
        gpus: Sequence[str] | None = None,
        first_trial_start: FirstTrialStart | None = None,
    ) -> None:
        super().__init__()
        self.writer = writer
        self.force_sampling = force_sampling
        self.sample_interval_s = sample_interval_s
        self.gpus = tuple(gpus or ("GPU:0",))
        self.first_trial_start = first_trial_start
        self.memory_kind = None
        self.peak_memory_mb = 0.0
        self.process_peak_mb = 0.0  # host: this process's own high-water during fit
        self.start_rss_mb = None
        self.method = None  # "gpu" | "vmhwm" | "sampling"
        self._sampler = None

    def on_train_begin(self, logs: dict | None = None) -> None:
        if self._sampler is not None:  # a previous fit died before train end
            self._sampler.stop()
            self._sampler = None
        self.peak_memory_mb = self.process_peak_mb = 0.0
        self.method = None
        if gpu_memory.gpus_present():
            try:
                reset = gpu_memory.reset_peak(self.gpus)
                self.method = "gpu"
                self.memory_kind = "gpu" if reset else "gpu_process"  # JAX: the process's peak so far
            except (ValueError, RuntimeError):
                pass  # stats not tracked for this device: measure host RSS
        if self.method is None:
            self.memory_kind = "host_rss"
            _return_freed_memory()
            if not self.force_sampling and _reset_hwm() and _read_hwm_mb() is not None:
                self.method = "vmhwm"
                self.start_rss_mb = _read_hwm_mb()  # just reset to the current RSS
            else:
                self.method = "sampling"
                self._sampler = _RssSampler(self.sample_interval_s)
                self.start_rss_mb = self._sampler.peak_bytes / MIB
            if self.first_trial_start is not None and self.first_trial_start.rss_mb is None:
                self.first_trial_start.rss_mb = self.start_rss_mb

    def _measure(self):
        if self.method == "gpu":
            peak = gpu_memory.peak_mb(self.gpus)
            self.peak_memory_mb = max(self.peak_memory_mb, float(peak))
            return self.peak_memory_mb
        if self.method == "vmhwm":
            peak = _read_hwm_mb() or 0.0
        else:
            self._sampler.sample()
            peak = self._sampler.peak_bytes / MIB
        self.process_peak_mb = max(self.process_peak_mb, float(peak))
        start = self.first_trial_start.rss_mb if self.first_trial_start is not None else self.start_rss_mb
        self.peak_memory_mb = start + self.process_peak_mb - self.start_rss_mb
        return self.peak_memory_mb

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        write_scalars(self.writer, {"peak_memory_mb": self._measure()}, step=epoch)

    def on_train_end(self, logs: dict | None = None) -> None:
        self._measure()
        if self._sampler is not None:
            self._sampler.stop()
            self._measure()
            self._sampler = None
        flush(self.writer)

    def results(self) -> dict:
        """`peak_memory_mb` and `memory_kind`; on the host also `process_peak_memory_mb`."""
        figures = {"peak_memory_mb": float(self.peak_memory_mb), "memory_kind": str(self.memory_kind)}
        if self.memory_kind == "host_rss":
            figures["process_peak_memory_mb"] = float(self.process_peak_mb)
        return figures
