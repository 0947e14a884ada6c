"""The tuner that runs one LoRA trial: measure, log to TensorBoard, keep the adapter alone.

Example:
```python
tuner = LoraSweepTuner(oracle, "logs/sweep", space, max_epochs=2, hypermodel=hypermodel)
tuner.search(train_tokens, val_tokens, val_texts)
tuner.trial_rows()  # one dict per ended trial, as results.csv shows them
```
"""

import contextlib
import dataclasses
import json
import math
import pathlib
import shutil
from collections.abc import Callable

import keras
import keras_hub
import keras_tuner
import tensorflow as tf
from keras_tuner.engine.base_tuner import BaseTuner
from keras_tuner.engine.trial import Trial, TrialStatus
from keras_tuner.errors import FailedTrialError
from tensorboard.plugins.hparams import api as hparams_api
from tensorboard.plugins.hparams import api_pb2
from tensorboard.plugins.hparams import summary as hparams_summary

from callbacks import EpochTimer, FirstTrialStart, LossScalars, ParameterCount, PeakMemory
from lora_keras.runtime.devices import strategy_gpus
from lora_keras.runtime.heap import thaw
from lora_keras.evaluation import SAMPLE_TRANSLATIONS, ValidationTexts
from lora_keras.adapters import LoraConfig, load_adapter, save_adapter
from lora_keras.data.pipeline import TokenizedPairs
from tuners.cluster import is_worker
from tuners.failures import failure_reason
from tuners.hypermodel import LoraT5HyperModel
from tuners.search_space import SearchSpace

MEASUREMENTS_FILE = "measurements.json"


def _end_session(writer, status):
    with writer.as_default():
        tf.summary.experimental.write_raw_pb(
            hparams_summary.session_end_pb(status).SerializeToString(), step=0
        )
    writer.flush()


class LoraSweepTuner(BaseTuner):
    """Runs trials of a `LoraT5HyperModel` under any keras-tuner oracle, and lists the trials ended.

    Per trial: a TensorBoard HParams session in `<run_dir>/tensorboard/trial_<id>/`
    with the measurement callbacks' scalars, the LoRA weights alone in
    `<run_dir>/adapters/trial_<id>.safetensors` (no full-model checkpoint), and
    every figure in the trial's `measurements.json`. The oracle gets `val_loss`,
    `final_loss`, `training_time_s`, `peak_memory_mb` and `baseline_val_loss`
    (when given), so a strategy can weigh loss against cost. A Hyperband trial
    (`tuner/epochs`, `tuner/initial_epoch`, `tuner/trial_id`) trains from its
    parent trial's adapter to its epoch budget.
    Each trial's `measurements.json` also records the `tuner_id` that ran it and its
    `num_replicas`. With a `strategy` (a `tf.distribute.MirroredStrategy`), each trial builds
    and trains its model in the strategy's scope: the batch size is the global batch.
    Without a hypermodel (a distributed sweep's chief) it runs no trial: it holds the oracle's
    state in `run_dir` and lists the trials (`trial_rows`).

    Args:
        oracle: the strategy's `keras_tuner.Oracle`, over `space` as declared.
        run_dir: the run's directory (`LOGDIR/NAME`).
        space: the search space; a trial's values and epochs are read there.
        max_epochs: the sweep's epochs per trial (Hyperband: the most a trial gets).
        hypermodel: builds and fits each trial's model; None where no trial runs.
        overwrite: drop the oracle's saved state instead of resuming it.
        verbose: Keras's progress output.
        on_trial_done: called after every trial that ends here (the tables, for a local run).
        baseline_val_loss: the unadapted base's val loss, reported to the oracle with every trial.
        strategy: a `tf.distribute.Strategy` to build and train each trial in, or None.
        base_translations: the unadapted base's first translations (`baseline.json`), shown beside
            each trial's in its sample translations.

    Example:
    ```python
    tuner = LoraSweepTuner(GridOracle(objective="val_loss", hyperparameters=hp), "logs/sweep",
                           space, max_epochs=2, hypermodel=hypermodel)
    tuner.search(train_tokens, val_tokens, val_texts)
    ```
    """

    def __init__(
        self, oracle: keras_tuner.Oracle, run_dir: str | pathlib.Path, space: SearchSpace, max_epochs: int,
        hypermodel: LoraT5HyperModel | None = None, overwrite: bool = False, verbose: int = 1,
        on_trial_done: Callable[[], object] | None = None, baseline_val_loss: float | None = None,
        strategy: tf.distribute.Strategy | None = None, base_translations: tuple = (),
    ):
        self.run_dir = pathlib.Path(run_dir)
        self.base_translations = tuple(base_translations)
        self.space = space
        self.max_epochs = max_epochs
        self.verbose = verbose
        self.on_trial_done = on_trial_done
        self.baseline_val_loss = baseline_val_loss
        self.strategy = strategy
        self.trials_run = []
        self.first_trial_start = FirstTrialStart()  # host memory: each trial as if it ran alone
        super().__init__(
            oracle=oracle,
            hypermodel=hypermodel,
            directory=str(self.run_dir),
            project_name="tuner",
            overwrite=overwrite,
        )

    @property
    def tensorboard_dir(self) -> pathlib.Path:
        """The run's TensorBoard directory: one HParams session per trial."""
        return self.run_dir / "tensorboard"

    @property
    def adapters_dir(self) -> pathlib.Path:
        """Where each trial's LoRA weights are saved alone."""
        return self.run_dir / "adapters"

    def _populate_initial_space(self):
        # keras-tuner reloads a run only when this tuner id's own file exists (`tuner0.json`
        # locally, `chief.json` for a chief): a run resumed in the other mode must keep its trials.
        if not is_worker() and (self.run_dir / "tuner" / "oracle.json").is_file():
            self.oracle.reload()
            return
        # keras-tuner's default builds a whole model to discover the space;
        # ours is declared up front, so declaring is enough.
        hp = self.oracle.get_space()
        self.space.declare(hp)
        self.oracle.update_space(hp)

    def adapter_path(self, trial_id: str) -> pathlib.Path:
        """The trial's LoRA weights: `<run_dir>/adapters/trial_<id>.safetensors`."""
        return self.adapters_dir / f"trial_{trial_id}.safetensors"

    def measurements_path(self, trial_id: str) -> pathlib.Path:
        """The trial's figures: `measurements.json` in keras-tuner's trial directory."""
        return pathlib.Path(self.get_trial_dir(trial_id)) / MEASUREMENTS_FILE

    def run_trial(
        self, trial: Trial, train_tokens: TokenizedPairs, val_tokens: TokenizedPairs,
        val_texts: ValidationTexts,
    ) -> dict:
        """Train, measure and score one trial; keep its adapter and `measurements.json`.

        Args:
            trial: the oracle's trial.
            train_tokens: training pairs.
            val_tokens: validation pairs.
            val_texts: the validation set as text, for BLEU and chrF.

        Returns:
            The metrics the oracle gets: `val_loss`, `final_loss`, `training_time_s`,
            `peak_memory_mb` (and `baseline_val_loss` when known).
        """
        hp = trial.hyperparameters
        hparams = {**self.space.trial_hparams(hp, self.max_epochs), "precision": self.hypermodel.precision}
        writer = self._open_session(trial.trial_id, hparams)
        measures = self._measures(train_tokens, writer)  # the losses last: `_train` reads them
        self.trials_run.append(trial.trial_id)
        try:
            model = self._train(hp, measures, train_tokens, val_tokens)
        except Exception:
            _end_session(writer, api_pb2.STATUS_FAILURE)
            writer.close()
            raise
        _end_session(writer, api_pb2.STATUS_SUCCESS)
        figures = self._figures(hp, hparams, measures)
        self._score(model, val_texts, figures, writer, step=hparams["epochs"] - 1)
        writer.close()
        self.save_model(trial.trial_id, model, config=self.hypermodel.lora_config(hp))
        with open(self.measurements_path(trial.trial_id), "w") as handle:
            json.dump(figures, handle, indent=2)
        del model
        if not self.hypermodel.reuse_models:
            self.hypermodel.release()  # the next trial starts from a clean graph
        return self._oracle_metrics(figures)

    def _open_session(self, trial_id, hparams):
        """A new TensorBoard writer for the trial, its HParams session started (its end says how it went)."""
        session_dir = self.tensorboard_dir / f"trial_{trial_id}"
        shutil.rmtree(session_dir, ignore_errors=True)  # drop a killed attempt's events
        writer = tf.summary.create_file_writer(str(session_dir))
        with writer.as_default():
            hparams_api.hparams(hparams, trial_id=f"trial_{trial_id}")
        return writer

    def _measures(self, train_tokens, writer):
        """The trial's measurement callbacks, each writing its scalars to the trial's session."""
        return [
            # Memory first: its clean-up before a fit (gc, malloc_trim) stays off the trial's clock.
            PeakMemory(writer, gpus=strategy_gpus(self.strategy), first_trial_start=self.first_trial_start),
            EpochTimer(train_tokens.token_count, writer),
            ParameterCount(writer),
            LossScalars(writer),
        ]

    def _train(self, hp, measures, train_tokens, val_tokens):
        """Build and fit the trial's model under the measures; `FailedTrialError` if its loss diverged."""
        parent = hp.values.get("tuner/trial_id")
        callbacks = measures + [keras.callbacks.TerminateOnNaN()]  # a diverged trial stops at once
        with self.strategy.scope() if self.strategy else contextlib.nullcontext():
            model = self.hypermodel.build(hp)
            # Trace before the clock starts (and before a parent's adapter: tracing resets).
            self.hypermodel.trace(hp, model, train_tokens, val_tokens)
            if parent is not None:  # Hyperband continues the parent trial's training
                load_adapter(model.backbone, self.adapter_path(parent))
            self.hypermodel.fit(hp, model, train_tokens, val_tokens, callbacks=callbacks, verbose=self.verbose)
        losses = measures[-1].results()
        if not all(losses[name] is not None and math.isfinite(losses[name]) for name in ("final_loss", "val_loss")):
            raise FailedTrialError(
                f"loss diverged to {losses['final_loss']} (val {losses['val_loss']}); try a lower learning rate"
            )
        return model

    def _figures(self, hp, hparams, measures):
        """What `measurements.json` holds before the scores: the trial's settings and every measure's results."""
        figures = {
            **hparams, "lora_init": self.hypermodel.lora_init,
            "initial_epoch": self.space.trial_epochs(hp, self.max_epochs)[0],
            "parent_trial_id": hp.values.get("tuner/trial_id"), "tuner_id": self.tuner_id,
            "jit_compile": self.hypermodel.jit_compile,
            "num_replicas": self.strategy.num_replicas_in_sync if self.strategy else 1,
        }
        for measure in measures:
            figures.update(measure.results())
        return figures

    def _score(self, model, val_texts, figures, writer, step):
        """BLEU and chrF into `figures` and, with sample translations, into the trial's session."""
        self._score_weights(model, None, val_texts, figures, writer, step)

    def _score_weights(self, model, weights, val_texts, figures, writer, step):
        """`_score`, decoding with `weights` (an unadapted backbone's, adapter merged) when given."""
        scores, translations = val_texts.scores(model.backbone, self.hypermodel.base.tokenizer, weights)
        if self.base_translations:
            val_texts = dataclasses.replace(val_texts, base_translations=self.base_translations)
        figures.update(scores)
        figures["sample_translations"] = translations[:SAMPLE_TRANSLATIONS]
        with writer.as_default():
            tf.summary.scalar("bleu", scores["bleu"], step=step)
            tf.summary.scalar("chrf", scores["chrf"], step=step)
            tf.summary.text("sample_translations", val_texts.samples_markdown(translations), step=step)

    def _oracle_metrics(self, figures):
        metrics = {name: figures[name] for name in ("val_loss", "final_loss", "training_time_s", "peak_memory_mb")}
        if self.baseline_val_loss is not None:
            metrics["baseline_val_loss"] = self.baseline_val_loss
        return metrics

    def save_model(self, trial_id: str, model: keras.Model, step: int = 0, config: LoraConfig | None = None) -> None:
        """Save the trial's LoRA weights alone (keras-tuner's hook; no full checkpoint)."""
        self.adapters_dir.mkdir(parents=True, exist_ok=True)
        save_adapter(model.backbone, self.adapter_path(trial_id), config)

    def load_model(self, trial: Trial) -> keras.Model:
        """The trial's adapted model: the base rebuilt plus the saved adapter."""
        backbone = self.hypermodel.base.build_backbone()
        load_adapter(backbone, self.adapter_path(trial.trial_id))
        return self.hypermodel.base.build_model(backbone)

    def save(self) -> None:
        """Save the oracle's state, except in a worker: the chief's oracle holds the run."""
        if not is_worker():
            super().save()

    def on_search_end(self) -> None:
        """Let the collector reach the objects a trace froze (`lora_keras.runtime.heap`) again."""
        super().on_search_end()
        thaw()

    def on_trial_end(self, trial: Trial) -> None:
        """keras-tuner's end of a trial, then `on_trial_done`."""
        super().on_trial_end(trial)
        if self.on_trial_done is not None:
            self.on_trial_done()

    def trial_rows(self) -> list[dict]:
        """One dict per ended trial: its hyperparameters, epochs, status and measurements.

        Returns:
            Rows in trial-id order, as `results.csv` holds them; `status` is `COMPLETED` or
            `FAILED: <reason>`.

        Example: `tuner.trial_rows()[0]["status"]` -> `"COMPLETED"`.
        """
        rows = []
        for trial_id in sorted(self.oracle.trials):
            trial = self.oracle.trials[trial_id]
            if trial.status == TrialStatus.RUNNING:
                continue
            hp = trial.hyperparameters
            row = {
                "trial_id": trial_id, **self.space.trial_hparams(hp, self.max_epochs),
                "initial_epoch": self.space.trial_epochs(hp, self.max_epochs)[0],
                "parent_trial_id": hp.values.get("tuner/trial_id"),
            }
            path = self.measurements_path(trial_id)
            if trial.status == TrialStatus.COMPLETED and path.is_file():
                row.update(json.loads(path.read_text()))
                row["status"] = "COMPLETED"
            else:
                row["status"] = f"FAILED: {failure_reason(trial.message)}"
            rows.append(row)
        return rows
