"""Make this Python behave as on a machine without TensorFlow (a GPU machine with JAX only): its import fails.

Put this folder first on `PYTHONPATH`; Python runs `sitecustomize` at start-up. Importing TensorFlow
raises `ModuleNotFoundError`, and `importlib.util.find_spec` (how transformers and others probe for
it) answers None, as where it is not installed.
"""

import importlib.abc
import importlib.util
import sys

BLOCKED = ("tensorflow", "tensorflow_text", "tf_keras")


def _blocked(name):
    return name.split(".")[0] in BLOCKED


class _NoTensorFlow(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path, target=None):
        if _blocked(name):
            raise ModuleNotFoundError(f"No module named {name!r} (blocked: no TensorFlow here)", name=name)
        return None


_find_spec = importlib.util.find_spec


def _find_spec_without_tensorflow(name, package=None):
    if _blocked(name):
        return None
    return _find_spec(name, package)


importlib.util.find_spec = _find_spec_without_tensorflow
sys.meta_path.insert(0, _NoTensorFlow())
