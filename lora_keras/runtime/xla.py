"""XLA for the train step: when it is on by default, and the bounded batch shapes it compiles for.

XLA compiles a step once per input shape. Batches cut to their own longest sequence
take almost as many shapes as there are batches; padded up to a multiple of
`LENGTH_MULTIPLE` they take a handful (lengths 1..64 give 4 per side), so a trial
compiles a few times, not once per batch. Without XLA lengths are still rounded up
the same way when `jit_compile` is on, and cut exactly when it is off.

Example:
```python
bucket_length(17, 16, 64)           # 32
default_jit_compile(gpu_count=1)    # True: on for GPUs
```
"""

from __future__ import annotations

LENGTH_MULTIPLE = 16


def bucket_length(length: int, multiple: int | None, cap: int) -> int:
    """`length` rounded up to a multiple of `multiple` (None or 1: unchanged), at most `cap`.

    Example:
    ```python
    bucket_length(33, 16, 40)   # 40: the padded width caps it
    ```
    """
    if not multiple or multiple <= 1:
        return min(length, cap)
    return min(-(-length // multiple) * multiple, cap)


def default_jit_compile(gpu_count: int) -> bool:
    """XLA for training by default: on with a GPU, off on CPU on TensorFlow (where it measured no gain).

    On Keras's other backends always on: JAX without `jit` runs a step op by op, far slower.

    Example:
    ```python
    default_jit_compile(0)   # False on TensorFlow, True on JAX
    ```
    """
    from lora_keras import backends

    return gpu_count > 0 or not backends.uses_tensorflow()


def length_multiple(jit_compile: bool) -> int | None:
    """How batch lengths are rounded: to `LENGTH_MULTIPLE` under XLA, else cut exactly (None)."""
    return LENGTH_MULTIPLE if jit_compile else None
