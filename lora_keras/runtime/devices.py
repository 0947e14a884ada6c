"""Data parallelism within one training run: the devices of `--devices` as a `MirroredStrategy`.

Example:
```python
strategy = mirrored_strategy("2")   # the first two GPUs; "gpu:1,gpu:3" names them; "cpu:2" splits the CPU
with strategy.scope():
    model = build_and_compile()     # variables mirrored on every device
    model.fit(dataset)              # each batch of the dataset is split across the replicas
```
"""

import re

from lora_keras.errors import InputError

_GPU_NAME = re.compile(r"(?:/?(?:device:)?)gpu:(\d+)", re.IGNORECASE)
_CPU_SPLIT = re.compile(r"cpu:(\d+)", re.IGNORECASE)
HELP = "N (the first N GPUs), gpu:I,gpu:J (those GPUs), or cpu:N (the CPU split in N, to test without GPUs)"


def device_names(spec, gpu_count):
    """The device names `spec` asks for, checked against `gpu_count` GPUs; `InputError` if unusable.

    Example: `device_names("gpu:0,gpu:2", 4) == ["/gpu:0", "/gpu:2"]`.
    """
    text = spec.strip()
    split = _CPU_SPLIT.fullmatch(text)
    if split:
        count = int(split.group(1))
        if count < 1:
            raise InputError(f"--devices {spec}: split the CPU into 1 or more devices")
        return [f"/cpu:{index}" for index in range(count)]
    if text.isdigit():
        indices = list(range(int(text)))
        if not indices:
            raise InputError(f"--devices {spec}: ask for 1 or more GPUs, or leave --devices out")
    else:
        matches = [_GPU_NAME.fullmatch(name.strip()) for name in text.split(",")]
        if not all(matches):
            raise InputError(f"--devices {spec}: not understood; pass {HELP}")
        indices = [int(match.group(1)) for match in matches]
        if len(set(indices)) != len(indices):
            raise InputError(f"--devices {spec}: a GPU is named twice; name each once")
    missing = [index for index in indices if index >= gpu_count]
    if missing:
        have = f"only {gpu_count} GPU(s) (gpu:0 to gpu:{gpu_count - 1})" if gpu_count else "no GPU"
        raise InputError(
            f"--devices {spec}: this machine has {have}; ask for fewer, or cpu:N to test without GPUs"
        )
    return [f"/gpu:{index}" for index in indices]


def mirrored_strategy(spec):
    """A `tf.distribute.MirroredStrategy` over the devices `spec` names, or None when `spec` is None.

    `cpu:N` splits the CPU into N logical devices, which TensorFlow allows only before it starts:
    call this before building any model.

    Example: `with mirrored_strategy("cpu:2").scope(): model = build()`.
    """
    if spec is None:
        return None
    import tensorflow as tf

    names = device_names(spec, len(tf.config.list_physical_devices("GPU")))
    if names[0].startswith("/cpu"):
        cpu = tf.config.list_physical_devices("CPU")[0]
        try:
            tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * len(names))
        except RuntimeError:  # TensorFlow has started: usable only if already split this way
            if len(tf.config.list_logical_devices("CPU")) != len(names):
                raise InputError(
                    f"--devices {spec}: TensorFlow has already started in this process; "
                    "choose the devices before building any model"
                ) from None
    return tf.distribute.MirroredStrategy(names)


def strategy_gpus(strategy):
    """The GPUs a strategy's replicas run on, as `["GPU:2", "GPU:3"]`; None without GPUs.

    Example: `PeakMemory(writer, gpus=strategy_gpus(strategy))`.
    """
    if strategy is None:
        return None
    names = [device.rsplit("device:", 1)[-1] for device in strategy.extended.worker_devices]
    return [name for name in names if name.upper().startswith("GPU")] or None
