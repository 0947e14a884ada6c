"""Memory, per backend: GPU memory grown on demand, its allocator peak, and TensorFlow's gradient registry.

**GPU memory** is grown on demand (so workers share a GPU and a peak means something).

TensorFlow by default reserves nearly all of every GPU it sees when it starts, so a
second process on the same GPU gets nothing and the reserved size says nothing of what
a trial needs. With memory growth on, TensorFlow takes memory as it is allocated; its
allocator's peak, reset at each trial's start, is then that trial's. JAX preallocates
75% of the GPU unless `XLA_PYTHON_CLIENT_PREALLOCATE=false` is set before it starts;
its allocator peak (`peak_bytes_in_use`) cannot be reset, so under JAX the figure is the
process's peak so far (`memory_kind="gpu_process"`): a trial's own when the process runs
one trial, as `scripts/gpu_check.py` does.

**TensorFlow's gradient registry** keeps every traced train step's graph alive
(`CustomGradientRegistrations`): Keras's optimizer sums gradients with
`ReplicaContext.all_reduce` in every traced train step, even without a distribution strategy,
and in graph mode `all_reduce` wraps its op in `tf.custom_gradient`. That registers a gradient
function under a new global name (`CustomGradient-<uid>`) in TensorFlow's gradient registry;
the function holds the step's FuncGraph, and nothing ever unregisters it. So every model trained
in a process keeps its whole training graph alive (about 50 MB for the demo T5 on CPU) until the
process ends, and a sweep's memory grew with each LoRA config it built. Unregistering the names
a model added once that model is dropped lets its graph be freed. Other backends keep no such
registry.

Example:
```python
enable_memory_growth()          # first thing, before any model is built
reset_peak(["GPU:0"])           # True on TensorFlow
peak_mb(["GPU:0"])              # MiB since the reset
registrations = CustomGradientRegistrations()   # before a model is built and traced
registrations.release()                         # once it is dropped: its traced step's graph can be freed
```
"""

from __future__ import annotations

import gc
import os
from collections.abc import Sequence

from lora_keras import backends
from lora_keras.backends import uses_tensorflow

MIB = 2**20


def enable_memory_growth() -> int:
    """Make the backend take GPU memory as needed instead of all at start; returns the GPUs seen.

    TensorFlow: `set_memory_growth` on every GPU, which it allows only before it has
    initialised them (afterwards each GPU keeps the mode it started with). JAX: sets
    `XLA_PYTHON_CLIENT_PREALLOCATE=false` unless already set, which counts only if JAX's
    GPU client has not started yet.

    Example:
    ```python
    enable_memory_growth()   # 0 on a machine without GPUs
    ```
    """
    if uses_tensorflow():
        import tensorflow as tf

        gpus = tf.config.list_physical_devices("GPU")
        for gpu in gpus:
            try:
                tf.config.experimental.set_memory_growth(gpu, True)
            except RuntimeError:  # already initialised: it keeps its mode
                pass
        return len(gpus)
    os.environ.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")
    if backends.name() == "jax":
        import jax

        try:
            return len(jax.devices("gpu"))
        except RuntimeError:
            return 0
    return 0


def gpus_present() -> bool:
    """Whether the backend sees a GPU (TensorFlow's logical GPUs; JAX's `gpu` devices)."""
    if uses_tensorflow():
        import tensorflow as tf

        return bool(tf.config.list_logical_devices("GPU"))
    if backends.name() == "jax":
        import jax

        try:
            return bool(jax.devices("gpu"))
        except RuntimeError:
            return False
    return False


def _jax_device(name: str):
    import jax

    index = int(name.rsplit(":", 1)[-1])
    return jax.devices("gpu")[index]


def reset_peak(gpus: Sequence[str]) -> bool:
    """Reset the allocator peak of `gpus` (`"GPU:0"`, ...); False where it cannot be reset (JAX).

    Raises `ValueError` or `RuntimeError` where the backend tracks no statistics for a device.
    """
    if uses_tensorflow():
        import tensorflow as tf

        for gpu in gpus:
            tf.config.experimental.reset_memory_stats(gpu)
        return True
    for gpu in gpus:  # check the statistics exist
        if "peak_bytes_in_use" not in (_jax_device(gpu).memory_stats() or {}):
            raise RuntimeError(f"{gpu}: no memory statistics")
    return False


def peak_mb(gpus: Sequence[str]) -> float:
    """The highest allocator peak among `gpus`, in MiB (since `reset_peak` on TensorFlow; since start on JAX)."""
    if uses_tensorflow():
        import tensorflow as tf

        return max(tf.config.experimental.get_memory_info(gpu)["peak"] for gpu in gpus) / MIB
    return max(_jax_device(gpu).memory_stats()["peak_bytes_in_use"] for gpu in gpus) / MIB


PREFIX = "CustomGradient-"


def _registry() -> dict:
    if not uses_tensorflow():  # nothing of TensorFlow's to free on other backends
        return {}
    from tensorflow.python.framework import ops as _tf_ops  # the registry is not public API

    registry = getattr(getattr(_tf_ops, "_gradient_registry", None), "_registry", None)
    return registry if isinstance(registry, dict) else {}


def custom_gradient_names() -> set[str]:
    """The `tf.custom_gradient` registrations TensorFlow holds now.

    Example:
    ```python
    len(custom_gradient_names())   # grows by one per traced train step
    ```
    """
    return {name for name in _registry() if name.startswith(PREFIX)}


class CustomGradientRegistrations:
    """The custom-gradient registrations made after this object was created, and their release.

    Example:
    ```python
    registrations = CustomGradientRegistrations()
    model.fit(...)
    del model
    registrations.release()   # 1: the freed train step's
    ```
    """

    def __init__(self) -> None:
        self.before = custom_gradient_names()

    def release(self) -> int:
        """Unregister what was registered since creation (only for models no longer traced); returns the count."""
        registry = _registry()
        added = custom_gradient_names() - self.before
        for name in added:
            registry.pop(name, None)
        gc.collect()
        return len(added)
