"""Which Keras backend runs a trial, and what TensorFlow-only code asks of it.

TensorFlow is the default backend. The trial path (data, model, LoRA, the callbacks'
measurements, TensorBoard scalars) also runs under `KERAS_BACKEND=jax` on a machine
without TensorFlow (a GPU machine with JAX only): there each question below is answered
without importing TensorFlow.

Example:
```python
uses_tensorflow()          # True unless KERAS_BACKEND names another backend
replicas_in_sync()         # 1 outside a tf.distribute strategy, and on JAX
```
"""

from __future__ import annotations

import sys

import keras


def uses_tensorflow() -> bool:
    """Whether Keras runs on TensorFlow (its backend, read once per process).

    Example:
    ```python
    import tensorflow as tf if uses_tensorflow() else None
    ```
    """
    return keras.backend.backend() == "tensorflow"


def tensorflow_loaded() -> bool:
    """Whether TensorFlow is imported in this process (never imported by this check)."""
    return "tensorflow" in sys.modules


def in_distribution_strategy() -> bool:
    """Whether a `tf.distribute` strategy is in scope (never on JAX)."""
    if not uses_tensorflow():
        return False
    import tensorflow as tf

    return tf.distribute.has_strategy()


def replicas_in_sync() -> int:
    """Replicas of the `tf.distribute` strategy in scope; 1 without one, and on JAX."""
    if not uses_tensorflow():
        return 1
    import tensorflow as tf

    return tf.distribute.get_strategy().num_replicas_in_sync


def gpu_count() -> int:
    """GPUs the backend sees (TensorFlow's physical GPUs; JAX's `gpu` devices).

    Example:
    ```python
    jit_compile = gpu_count() > 0
    ```
    """
    if uses_tensorflow():
        import tensorflow as tf

        return len(tf.config.list_physical_devices("GPU"))
    if keras.backend.backend() == "jax":
        import jax

        try:
            return len(jax.devices("gpu"))
        except RuntimeError:  # no GPU platform
            return 0
    return 0


def sync_devices() -> None:
    """Wait for queued device work (GPU kernels run asynchronously), so a clock read after it is honest."""
    if uses_tensorflow():
        import tensorflow as tf

        tf.test.experimental.sync_devices()
    elif keras.backend.backend() == "jax":
        import jax

        # JAX dispatches asynchronously: wait until every live array (the step's outputs among them) is computed.
        jax.block_until_ready(jax.live_arrays())
