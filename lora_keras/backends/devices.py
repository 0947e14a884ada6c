"""Devices, per backend: GPUs seen, data parallelism over several, waiting for queued work, compiled functions.

Data parallelism within one training run is TensorFlow's `MirroredStrategy` over the devices a
spec names; on other backends `--devices` is refused in one line (not built yet).

Example:
```python
strategy = mirrored_strategy("2")   # the first two GPUs; "gpu:1,gpu:3" names them; "cpu:2" splits the CPU
with strategy.scope():
    model = build_and_compile()     # variables mirrored on every device
    model.fit(dataset)              # each batch of the dataset is split across the replicas
gpu_count(); sync_devices()         # on any backend
```
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

from lora_keras import backends
from lora_keras.backends import uses_tensorflow
from lora_keras.errors import InputError

_GPU_NAME = re.compile(r"(?:/?(?:device:)?)gpu:(\d+)", re.IGNORECASE)
_CPU_SPLIT = re.compile(r"cpu:(\d+)", re.IGNORECASE)
HELP = "N (the first N GPUs), gpu:I,gpu:J (those GPUs), or cpu:N (the CPU split in N, to test without GPUs)"


def device_names(spec: str, gpu_count: int) -> list[str]:
    """The device names `spec` asks for, checked against `gpu_count` GPUs.

    Args:
        spec: the devices, as `HELP` says.
        gpu_count: how many GPUs this machine has.

    Returns:
        TensorFlow device names, `["/gpu:0", ...]` or `["/cpu:0", ...]`; an `InputError`
        (parameter `devices`) when `spec` is unusable here.

    Example:
    ```python
    device_names("gpu:0,gpu:2", 4)   # ["/gpu:0", "/gpu:2"]
    ```
    """
    text = spec.strip()
    split = _CPU_SPLIT.fullmatch(text)
    if split:
        count = int(split.group(1))
        if count < 1:
            raise InputError(f"devices {spec}: split the CPU into 1 or more devices", parameter="devices")
        return [f"/cpu:{index}" for index in range(count)]
    if text.isdigit():
        indices = list(range(int(text)))
        if not indices:
            raise InputError(f"devices {spec}: ask for 1 or more GPUs, or leave devices out", parameter="devices")
    else:
        matches = [_GPU_NAME.fullmatch(name.strip()) for name in text.split(",")]
        if not all(matches):
            raise InputError(f"devices {spec}: not understood; pass {HELP}", parameter="devices")
        indices = [int(match.group(1)) for match in matches]
        if len(set(indices)) != len(indices):
            raise InputError(f"devices {spec}: a GPU is named twice; name each once", parameter="devices")
    missing = [index for index in indices if index >= gpu_count]
    if missing:
        have = f"only {gpu_count} GPU(s) (gpu:0 to gpu:{gpu_count - 1})" if gpu_count else "no GPU"
        raise InputError(
            f"devices {spec}: this machine has {have}; ask for fewer, or cpu:N to test without GPUs",
            parameter="devices",
        )
    return [f"/gpu:{index}" for index in indices]


def mirrored_strategy(spec: str | None) -> Any:
    """A `tf.distribute.MirroredStrategy` over the devices `spec` names, or None when `spec` is None.

    `cpu:N` splits the CPU into N logical devices, which TensorFlow allows only before it starts:
    call this before building any model.

    Args:
        spec: the devices, as `HELP` says, or None for TensorFlow's default placement.

    Returns:
        The strategy, or None.

    Example:
    ```python
    with mirrored_strategy("cpu:2").scope():
        model = build()
    ```
    """
    if spec is None:
        return None
    if not uses_tensorflow():
        raise InputError(
            f"devices {spec}: data parallelism over several devices runs on TensorFlow's MirroredStrategy; "
            f"on Keras's {backends.name()} backend leave --devices out (one device per trial), or run on TensorFlow",
            parameter="devices",
        )
    import tensorflow as tf  # heavy: TensorFlow, imported only when devices are asked for

    names = device_names(spec, len(tf.config.list_physical_devices("GPU")))
    if names[0].startswith("/cpu"):
        cpu = tf.config.list_physical_devices("CPU")[0]
        try:
            tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * len(names))
        except RuntimeError:  # TensorFlow has started: usable only if already split this way
            if len(tf.config.list_logical_devices("CPU")) != len(names):
                raise InputError(
                    f"devices {spec}: TensorFlow has already started in this process; "
                    "choose the devices before building any model",
                    parameter="devices",
                ) from None
    return tf.distribute.MirroredStrategy(names)


def strategy_gpus(strategy: Any) -> list[str] | None:
    """The GPUs a strategy's replicas run on, as `["GPU:2", "GPU:3"]`; None without GPUs.

    Args:
        strategy: a strategy from `mirrored_strategy`, or None.

    Returns:
        The GPU names, or None.

    Example:
    ```python
    PeakMemory(writer, gpus=strategy_gpus(strategy))
    ```
    """
    if strategy is None:
        return None
    names = [device.rsplit("device:", 1)[-1] for device in strategy.extended.worker_devices]
    return [name for name in names if name.upper().startswith("GPU")] or None


def in_distribution_strategy() -> bool:
    """Whether a `tf.distribute` strategy is in scope (never on other backends)."""
    if not uses_tensorflow():
        return False
    import tensorflow as tf

    return tf.distribute.has_strategy()


def replicas_in_sync() -> int:
    """Replicas of the `tf.distribute` strategy in scope; 1 without one, and on other backends."""
    if not uses_tensorflow():
        return 1
    import tensorflow as tf

    return tf.distribute.get_strategy().num_replicas_in_sync


def sum_over_replicas(value: Any) -> Any:
    """`value` summed over the replicas of the strategy in scope; `value` itself with one replica.

    Example: `ops.sum(totals) / sum_over_replicas(count)`: a global batch's mean per real token.
    """
    if replicas_in_sync() == 1:
        return value
    import tensorflow as tf

    replica = tf.distribute.get_replica_context()  # None when Keras builds the loss symbolically
    return value if replica is None else replica.all_reduce(tf.distribute.ReduceOp.SUM, value)


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
    if backends.name() == "jax":
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
    elif backends.name() == "jax":
        import jax

        # JAX dispatches asynchronously: wait until every live array (the step's outputs among them) is computed.
        jax.block_until_ready(jax.live_arrays())


def compiled(function: Callable) -> Callable:
    """`function` (of backend tensors, through `keras.ops`) compiled as the backend compiles a step.

    `tf.function` on TensorFlow, `jax.jit` on JAX, as it is elsewhere.

    Example: `products = compiled(lambda: ops.matmul(a, b)); ops.convert_to_numpy(products())`.
    """
    if uses_tensorflow():
        import tensorflow as tf

        return tf.function(function)
    if backends.name() == "jax":
        import jax

        return jax.jit(function)
    return function


def enable_op_determinism() -> None:
    """Make TensorFlow's kernels deterministic (op determinism); other backends are left as they are (JAX's CPU kernels are)."""
    if uses_tensorflow():
        import tensorflow as tf

        tf.config.experimental.enable_op_determinism()


def static_shapes() -> bool:
    """Whether a traced step's shapes are fixed when traced (JAX's `jit`), so a count that shapes them is a
    Python number and a change means tracing again; TensorFlow's graphs take it from a variable.

    Example: `static_shapes()` -> `False` on TensorFlow, `True` on JAX.
    """
    return not uses_tensorflow()
