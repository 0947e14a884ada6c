"""keras-tuner's own state files written whole, and read back consistent after a kill.

**Written whole:** `oracle.json`, each `trial_<id>/trial.json`, `tuner0.json`.

keras-tuner writes them (and a chief's `chief.json`) through `keras_tuner.src.utils.save_json`,
which truncates the file and then writes it: a process killed, or a disk filling up, in between
leaves a file a resume cannot parse ("Expecting value: line 1 column 1"). Its callers look the
function up on the module at call time (`utils.save_json(...)` in `engine/stateful.py` and
`engine/tuner.py`), so replacing it there, once, when `tuners.tuner` is imported, makes every one of
those saves atomic (`lora_keras.runtime.atomic_files`). Checked against keras-tuner 1.4.8, the
version `setup.cfg` pins (`<1.5`): recheck those call sites before widening the pin. Local paths
only, as every run directory here is (keras-tuner's own also wrote `gs://` through TensorFlow).

**Read back consistent:** keras-tuner saves a trial's file and the oracle's in two writes, so a
kill between them leaves the two disagreeing. `create_trial` writes `trial.json` before
`oracle.json` records the trial: a trial no one was told of, which the oracle would count as
taken and never run (`forget_unrecorded_trials`). `end_trial` writes the ended `trial.json`
before `oracle.json` notes the end (`note_unrecorded_ends`). `repair_after_kill` does both after a
reload.

Example:
```python
make_keras_tuner_saves_atomic()       # done when `tuners.tuner` is imported
oracle.save()                         # oracle.json: the old one or the new one, never half
oracle.reload(); repair_after_kill(oracle)
```
"""

import json
import os
import pathlib

from keras_tuner.engine.trial import TrialStatus

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


_ENDED = (TrialStatus.COMPLETED, TrialStatus.FAILED)  # an INVALID trial waits in the retry queue


def forget_unrecorded_trials(oracle) -> list[str]:
    """Drop the trials `oracle.json` never recorded (`trial.json` written, then a kill); their ids.

    No one was told of such a trial (the chief answers after both writes), so the oracle goes
    back to where it was before it created it, and creates it again.

    Example: `forget_unrecorded_trials(oracle)` -> `["2"]` after a kill inside `create_trial`.
    """
    recorded = set(oracle.start_order)
    unrecorded = [trial_id for trial_id in oracle.trials if trial_id not in recorded]
    for trial_id in unrecorded:
        del oracle.trials[trial_id]
        trial_dir = pathlib.Path(oracle._get_trial_dir(trial_id))  # private: keras-tuner is pinned (setup.cfg)
        (trial_dir / "trial.json").unlink(missing_ok=True)
        try:
            trial_dir.rmdir()
        except OSError:  # not empty: leave what else is there
            pass
    return unrecorded


def note_unrecorded_ends(oracle) -> list[str]:
    """Note in the oracle the trials whose `trial.json` says they ended but `oracle.json` does not; their ids.

    Example: `note_unrecorded_ends(oracle)` -> `["1"]` after a kill inside `end_trial`.
    """
    ended = set(oracle.end_order)
    unnoted = [trial_id for trial_id in oracle.start_order
               if trial_id in oracle.trials and oracle.trials[trial_id].status in _ENDED and trial_id not in ended]
    oracle.end_order.extend(unnoted)
    for tuner_id, trial in list(oracle.ongoing_trials.items()):
        if trial.trial_id in unnoted:
            del oracle.ongoing_trials[tuner_id]
    oracle._retry_queue = [t for t in oracle._retry_queue if t not in unnoted]  # private: see above
    return unnoted


def repair_after_kill(oracle) -> None:
    """Make a reloaded oracle agree with its trials' files (`forget_unrecorded_trials`, `note_unrecorded_ends`).

    Example: `oracle.reload(); repair_after_kill(oracle)`.
    """
    if forget_unrecorded_trials(oracle) + note_unrecorded_ends(oracle):
        oracle.save()
