"""TensorFlow's search for GPUs, made quietly on a machine without an NVIDIA driver.

TensorFlow looks for GPUs once, when it first lists or uses devices; without a driver its CUDA
platform logs `failed call to cuInit` as an error on stderr, past `TF_CPP_MIN_LOG_LEVEL` 2, in
every CPU run. Only there is the search made now with stderr hidden: with a driver installed, what
the search prints (a driver too old, a GPU that fails) is a real error, and stays on stderr.

Example:
```python
import keras_hub               # loads TensorFlow
probe_gpus_quietly()           # CPU machine: no `E0000 ... failed call to cuInit` line, now or later
```
"""

import importlib
import os
import shutil
import sys

from lora_keras.cli import native_stderr_silenced

NVIDIA_DRIVER_DIR = "/proc/driver/nvidia"  # the kernel driver's files, on Linux


def nvidia_driver_installed() -> bool:
    """Whether this machine has an NVIDIA driver: its kernel files, or `nvidia-smi` on the PATH.

    Example: `nvidia_driver_installed()` -> `False` on a machine without GPUs.
    """
    return os.path.isdir(NVIDIA_DRIVER_DIR) or shutil.which("nvidia-smi") is not None


def probe_gpus_quietly() -> None:
    """Let a loaded TensorFlow search for GPUs now, with stderr hidden where no NVIDIA driver is installed.

    The search runs once per process: what uses devices later prints nothing more of it. With a
    driver this does nothing, so a GPU machine's search, and anything it says, happens as before; nor
    does it where TensorFlow is not loaded (another backend without it).

    Example: `probe_gpus_quietly()`; then `tf.config.list_physical_devices("GPU")` -> `[]`, silently.
    """
    if "tensorflow" not in sys.modules or nvidia_driver_installed():
        return
    from lora_keras.backends.devices import gpu_count

    with native_stderr_silenced():
        gpu_count()


def load_backend_quietly(module: str = "keras_hub") -> None:
    """Import `module` (which loads TensorFlow) with its start-up notices hidden, and its GPU search quiet.

    What every entry point does before its first model: no absl/CUDA notices, and on a machine
    without an NVIDIA driver no `failed call to cuInit` line (`probe_gpus_quietly`).

    Example: `load_backend_quietly()` at the top of a script's `main`, before `load_base`.
    """
    with native_stderr_silenced():
        importlib.import_module(module)
    probe_gpus_quietly()
