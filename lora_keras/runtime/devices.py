"""Data parallelism within one training run: the devices a spec names, as a `MirroredStrategy`.

Example:
```python
strategy = mirrored_strategy("2")   # the first two GPUs; "gpu:1,gpu:3" names them; "cpu:2" splits the CPU
with strategy.scope():
    model = build_and_compile()     # variables mirrored on every device
    model.fit(dataset)              # each batch of the dataset is split across the replicas
```
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING

from lora_keras.errors import InputError

if TYPE_CHECKING:
    import tensorflow as tf

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


def mirrored_strategy(spec: str | None) -> tf.distribute.MirroredStrategy | None:
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


def strategy_gpus(strategy: tf.distribute.Strategy | None) -> list[str] | None:
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
