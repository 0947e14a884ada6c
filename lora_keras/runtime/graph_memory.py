"""Free the training graphs TensorFlow's gradient registry keeps of every traced Keras train step.

Keras's optimizer sums gradients with `ReplicaContext.all_reduce` in every traced
train step, even without a distribution strategy, and in graph mode `all_reduce`
wraps its op in `tf.custom_gradient`. That registers a gradient function under a
new global name (`CustomGradient-<uid>`) in TensorFlow's gradient registry; the
function holds the step's FuncGraph, and nothing ever unregisters it. So every
model trained in a process keeps its whole training graph alive (about 50 MB for
the demo T5 on CPU) until the process ends, and a sweep's memory grew with each
LoRA config it built. Unregistering the names a model added once that model is
dropped lets its graph be freed.

Example:
```python
registrations = CustomGradientRegistrations()   # before a model is built and traced
model.fit(...)
del model
registrations.release()                         # its traced step's graph can now be freed
```
"""

from __future__ import annotations

import gc

from lora_keras.runtime.backend import uses_tensorflow

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
