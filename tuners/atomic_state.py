"""keras-tuner's own state files written whole: `oracle.json`, each `trial_<id>/trial.json`, `tuner0.json`.

keras-tuner writes them (and a chief's `chief.json`) through `keras_tuner.src.utils.save_json`,
which truncates the file and then writes it: a process killed, or a disk filling up, in between
leaves a file a resume cannot parse ("Expecting value: line 1 column 1"). Its callers look the
function up on the module at call time (`utils.save_json(...)` in `engine/stateful.py` and
`engine/tuner.py`), so replacing it there, once, when `tuners.tuner` is imported, makes every one of
those saves atomic (`lora_keras.runtime.atomic_files`). Checked against keras-tuner 1.4.8, the
version `setup.cfg` pins (`<1.5`): recheck those call sites before widening the pin. Local paths
only, as every run directory here is (keras-tuner's own also wrote `gs://` through TensorFlow).

Example:
```python
make_keras_tuner_saves_atomic()       # done when `tuners.tuner` is imported
oracle.save()                         # oracle.json: the old one or the new one, never half
```
"""

import json
import os

from keras_tuner.src import utils as keras_tuner_utils

from lora_keras.runtime.atomic_files import write_atomically


def save_json_atomically(path: str | os.PathLike, obj: object) -> str:
    """keras-tuner's `save_json`, replacing the file whole: `obj` as JSON to `path`; returns the JSON.

    Example: `save_json_atomically("logs/sweep/tuner/oracle.json", oracle.get_state())`.
    """
    text = json.dumps(obj)
    write_atomically(path, text)
    return text


def make_keras_tuner_saves_atomic() -> None:
    """Make keras-tuner save its state with `save_json_atomically` (idempotent).

    Example: `make_keras_tuner_saves_atomic()`; then `keras_tuner.src.utils.save_json is save_json_atomically`.
    """
    keras_tuner_utils.save_json = save_json_atomically
