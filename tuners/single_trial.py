"""One trial outside keras-tuner's `Tuner`, on any Keras backend and without TensorFlow.

The trial goes through the one trial runner (`tuners.trial_runner`) as the group of one: the
same build, fit, measurement callbacks and HParams session as a sweep's trial. Scoring (BLEU,
chrF) is left out, and nothing is kept but the session. Used by `scripts/gpu_check.py` (JAX on
a GPU machine without TensorFlow) and its tests.

Example:
```python
figures = run_trial(hypermodel, {"rank": 4, "batch_size": 8, "learning_rate": 1e-3},
                    train_tokens, val_tokens, "logs/check/tensorboard/trial_0")
figures["val_loss"], figures["tokens_per_s"], figures["peak_memory_mb"]
```
"""

from __future__ import annotations

import pathlib

import keras_tuner

from lora_keras.data.pipeline import TokenizedPairs
from tuners.hypermodel import LoraT5HyperModel
from tuners.trial_runner import TrialPlan, TrialRunner


def run_trial(
    hypermodel: LoraT5HyperModel, values: dict, train_tokens: TokenizedPairs, val_tokens: TokenizedPairs,
    logdir: str | pathlib.Path, runner: TrialRunner | None = None, verbose: int = 0,
) -> dict:
    """Train one trial of `hypermodel` at `values` and return its figures.

    Args:
        hypermodel: what builds and fits the trial (its precision, XLA, epochs).
        values: the trial's searched values (`rank`, `batch_size`, `learning_rate`, ...).
        train_tokens: training pairs.
        val_tokens: validation pairs, evaluated after every epoch.
        logdir: the trial's TensorBoard session directory.
        runner: a runner shared by a process's trials (host memory as if each ran alone); a new one when None.
        verbose: Keras's progress output.

    Returns:
        The trial's HParams values, `precision`, `jit_compile`, `trace_s` and every callback's
        results (`val_loss`, `final_loss`, `tokens_per_s`, `peak_memory_mb`, ...). A diverged
        trial raises its `keras_tuner.errors.FailedTrialError`.

    Example:
    ```python
    run_trial(hypermodel, {"rank": 1, "batch_size": 8, "learning_rate": 1e-3}, train, val, "tb/trial_0")
    ```
    """
    hp = keras_tuner.HyperParameters()
    hypermodel.declare_hyperparameters(hp)
    for name, value in values.items():
        hp.values[name] = value
    logdir = pathlib.Path(logdir)
    runner = runner or TrialRunner(hypermodel, hypermodel.space, hypermodel.epochs, verbose=verbose)
    trial_id = logdir.name.removeprefix("trial_")
    outcome = runner.run([TrialPlan(trial_id, hp, logdir)], train_tokens, val_tokens)[trial_id]
    if isinstance(outcome, Exception):
        raise outcome
    return outcome
