"""One trial outside keras-tuner's `Tuner`: build, fit under the measurement callbacks, HParams session.

What `LoraSweepTuner.run_trial` does for a trial's training and figures, on any Keras
backend and without TensorFlow: the TensorBoard session (HParams start and end, the
callbacks' scalars) is written with TensorBoard's own event writer on backends other
than TensorFlow. Scoring (BLEU, chrF) is left out: generation is the sweep's. Used by
`scripts/gpu_check.py` (JAX on a GPU machine without TensorFlow) and its tests.

Example:
```python
figures = run_trial(hypermodel, {"rank": 4, "batch_size": 8, "learning_rate": 1e-3},
                    train_tokens, val_tokens, "logs/check/tensorboard/trial_0")
figures["val_loss"], figures["tokens_per_s"], figures["peak_memory_mb"]
```
"""

from __future__ import annotations

import math
import pathlib
import time

import keras
import keras_tuner
from tensorboard.compat.proto import event_pb2, summary_pb2
from tensorboard.plugins.hparams import api_pb2, metadata, plugin_data_pb2
from tensorboard.plugins.hparams import summary_v2 as hparams_summary
from tensorboard.summary.writer.event_file_writer import EventFileWriter

from callbacks import EpochTimer, FirstTrialStart, LossScalars, ParameterCount, PeakMemory, create_writer
from lora_keras.data.pipeline import TokenizedPairs
from tuners.hypermodel import LoraT5HyperModel


def _session_end_pb(status: int) -> summary_pb2.Summary:
    """The HParams session-end summary (TensorBoard's own `session_end_pb` imports TensorFlow)."""
    info = plugin_data_pb2.HParamsPluginData(
        session_end_info=plugin_data_pb2.SessionEndInfo(status=status, end_time_secs=time.time())
    )
    summary = summary_pb2.Summary()
    summary.value.add(tag=metadata.SESSION_END_INFO_TAG, metadata=metadata.create_summary_metadata(info),
                      tensor=metadata.NULL_TENSOR)
    return summary


def write_hparams_summary(logdir: str | pathlib.Path, summary: summary_pb2.Summary) -> None:
    """Append a raw `Summary` at step 0 to an event file of its own in `logdir` (no TensorFlow)."""
    writer = EventFileWriter(str(logdir))
    writer.add_event(event_pb2.Event(wall_time=time.time(), step=0, summary=summary))
    writer.close()


def run_trial(
    hypermodel: LoraT5HyperModel, values: dict, train_tokens: TokenizedPairs, val_tokens: TokenizedPairs,
    logdir: str | pathlib.Path, first_trial_start: FirstTrialStart | None = None, verbose: int = 0,
) -> dict:
    """Train one trial of `hypermodel` at `values` and return its figures.

    Args:
        hypermodel: what builds and fits the trial (its precision, XLA, epochs).
        values: the trial's searched values (`rank`, `batch_size`, `learning_rate`, ...).
        train_tokens: training pairs.
        val_tokens: validation pairs, evaluated after every epoch.
        logdir: the trial's TensorBoard session directory.
        first_trial_start: shared by a process's trials (host memory as if each ran alone).
        verbose: Keras's progress output.

    Returns:
        The trial's HParams values, `precision`, `jit_compile`, `trace_s` and every
        callback's results (`val_loss`, `final_loss`, `tokens_per_s`, `peak_memory_mb`, ...).

    Example:
    ```python
    run_trial(hypermodel, {"rank": 1, "batch_size": 8, "learning_rate": 1e-3}, train, val, "tb/trial_0")
    ```
    """
    hp = keras_tuner.HyperParameters()
    hypermodel.declare_hyperparameters(hp)
    for name, value in values.items():
        hp.values[name] = value
    hparams = hypermodel.space.trial_hparams(hp, hypermodel.epochs)
    logdir = pathlib.Path(logdir)
    logdir.mkdir(parents=True, exist_ok=True)
    write_hparams_summary(logdir, hparams_summary.hparams_pb(hparams, trial_id=logdir.name))
    writer = create_writer(str(logdir))
    measures = [
        EpochTimer(train_tokens.token_count, writer),
        PeakMemory(writer, first_trial_start=first_trial_start),
        ParameterCount(writer),
        LossScalars(writer),
    ]
    status = api_pb2.STATUS_FAILURE
    try:
        model = hypermodel.build(hp)
        trace_s = hypermodel.trace(hp, model, train_tokens, val_tokens)
        hypermodel.fit(hp, model, train_tokens, val_tokens,
                       callbacks=measures + [keras.callbacks.TerminateOnNaN()], verbose=verbose)
        figures = {**hparams, "precision": hypermodel.precision, "jit_compile": hypermodel.jit_compile,
                   "trace_s": trace_s}
        for measure in measures:
            figures.update(measure.results())
        if all(figures[name] is not None and math.isfinite(figures[name]) for name in ("final_loss", "val_loss")):
            status = api_pb2.STATUS_SUCCESS
        return figures
    finally:
        writer.flush()
        write_hparams_summary(logdir, _session_end_pb(status))
