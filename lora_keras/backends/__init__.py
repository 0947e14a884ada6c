"""The one seam between lora-keras and Keras's backend: everything that differs per backend lives here.

TensorFlow is the default backend; the whole study also runs on JAX (`KERAS_BACKEND=jax`) where
TensorFlow is not installed. The backend is read once, on first use (`name()`: Keras's own choice,
`KERAS_BACKEND` or `~/.keras/keras.json`), and no module outside this package imports `tensorflow`
or `jax` (`tests/test_backends.py` checks the source). One module per concern:

| module | what differs | TensorFlow | any other backend (JAX) |
|---|---|---|---|
| `batches` | training and evaluation batches | `tf.data` pipelines | Keras `PyDataset`s of numpy arrays |
| `devices` | GPUs, data parallelism, waiting for queued work, determinism, compiled functions, whether traced shapes are static | `tf.config`, `tf.distribute`, `tf.function` | `jax.devices`, `jax.block_until_ready`, `jax.jit` |
| `memory` | GPU memory growth and allocator peaks; TensorFlow's gradient registry | `tf.config.experimental` | `jax.Device.memory_stats` |

What needs no seam: the model, LoRA and losses are Keras ops; keras-hub's `T5Tokenizer` runs
SentencePiece on every backend (without TensorFlow it calls `sentencepiece` itself);
TensorBoard files are written with TensorBoard's own protos and event writer
(`callbacks/_summary.py`, `tuners/hparams.py`).

A PyTorch backend would add its branch to: `batches.make_batches` (the numpy batches serve it as
they are), `devices.gpu_count`, `devices.sync_devices`, `devices.compiled`, `devices.static_shapes`,
`memory.enable_memory_growth`, `memory.reset_peak` and `memory.peak_mb` (`torch.cuda`'s allocator
statistics), and `devices.mirrored_strategy` (or refuse `--devices`, as JAX does now).

Example:
```python
from lora_keras import backends
backends.name()             # "tensorflow", or "jax" under KERAS_BACKEND=jax
backends.uses_tensorflow()  # whether the TensorFlow branches run
```
"""

from __future__ import annotations

import functools
import sys


@functools.cache
def name() -> str:
    """Keras's backend in this process, read once (importing Keras, which loads the backend, on first call).

    Example: `name()` -> `"jax"` under `KERAS_BACKEND=jax`.
    """
    import keras

    return keras.backend.backend()


def uses_tensorflow() -> bool:
    """Whether Keras runs on TensorFlow in this process (`name()`).

    Example: `uses_tensorflow()` -> `True` unless `KERAS_BACKEND` names another backend.
    """
    return name() == "tensorflow"


def tensorflow_loaded() -> bool:
    """Whether TensorFlow is imported in this process (never imported by this check)."""
    return "tensorflow" in sys.modules
