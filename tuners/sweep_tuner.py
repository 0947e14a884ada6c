"""The tuner that runs one LoRA trial: measure, log to TensorBoard, keep the adapter alone."""

import contextlib
import dataclasses
import json
import math
import pathlib
import shutil

import keras
import tensorflow as tf
from keras_tuner.engine.base_tuner import BaseTuner
from keras_tuner.engine.trial import TrialStatus
from keras_tuner.errors import FailedTrialError
from tensorboard.plugins.hparams import api as hparams_api
from tensorboard.plugins.hparams import api_pb2
from tensorboard.plugins.hparams import summary as hparams_summary

from callbacks import EpochTimer, FirstTrialStart, LossScalars, ParameterCount, PeakMemory
from lora_keras.runtime.devices import strategy_gpus
from lora_keras.evaluation import shared_translator, translation_scores
from lora_keras.adapters import load_adapter, save_adapter
from tuners.cluster import is_worker
from tuners.hparams import trial_hparams

MEASUREMENTS_FILE = "measurements.json"
SAMPLE_TRANSLATIONS = 5


@dataclasses.dataclass(frozen=True)
class ValidationTexts:
    """The validation set as text, for translation scores: prefixed sources and references."""

    sources: list
    references: list
    max_source_length: int = 64
    max_target_length: int = 64

    def scores(self, backbone, tokenizer):
        """`({"bleu", "chrf"}, translations)` of `backbone` on these sources.

        The process's `shared_translator` serves every call, so `generate` is compiled
        once per process (per model shape), not once per LoRA config or run.
        """
        translations = shared_translator(tokenizer, self.max_source_length, self.max_target_length)(
            backbone, self.sources)
        return translation_scores(translations, self.references), translations

    def samples_markdown(self, translations):
        rows = ["| source | translation | reference |", "|---|---|---|"]
        for source, hypothesis, reference in list(
            zip(self.sources, translations, self.references)
        )[:SAMPLE_TRANSLATIONS]:
            rows.append(f"| {source} | {hypothesis} | {reference} |")
        return "\n".join(rows)


def failure_reason(message):
    """`"ResourceExhaustedError: OOM when ..."` from a failed trial's traceback."""
    last = (message or "unknown error").strip().splitlines()[-1]
    name, _, text = last.partition(": ")
    return f"{name.rsplit('.', 1)[-1]}: {text}" if text else last


def _end_session(writer, status):
    with writer.as_default():
        tf.summary.experimental.write_raw_pb(
            hparams_summary.session_end_pb(status).SerializeToString(), step=0
        )
    writer.flush()


class LoraSweepTuner(BaseTuner):
    """Runs trials of a `LoraT5HyperModel` under any keras-tuner oracle.

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

    Example:
    ```python
    tuner = LoraSweepTuner(hypermodel, GridOracle(objective="val_loss", hyperparameters=hp),
                           run_dir="logs/sweep")
    tuner.search(train_tokens, val_tokens)
    ```
    """

    def __init__(
        self, hypermodel, oracle, run_dir, overwrite=False, verbose=1, on_trial_done=None,
        baseline_val_loss=None, strategy=None,
    ):
        self.run_dir = pathlib.Path(run_dir)
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
    def tensorboard_dir(self):
        return self.run_dir / "tensorboard"

    @property
    def adapters_dir(self):
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
        self.hypermodel.declare_hyperparameters(hp)
        self.oracle.update_space(hp)

    def adapter_path(self, trial_id):
        return self.adapters_dir / f"trial_{trial_id}.safetensors"

    def measurements_path(self, trial_id):
        return pathlib.Path(self.get_trial_dir(trial_id)) / MEASUREMENTS_FILE

    def run_trial(self, trial, train_tokens, val_tokens, val_texts):
        hp = trial.hyperparameters
        session_dir = self.tensorboard_dir / f"trial_{trial.trial_id}"
        shutil.rmtree(session_dir, ignore_errors=True)  # drop a killed attempt's events
        writer = tf.summary.create_file_writer(str(session_dir))
        initial_epoch, epochs = self.hypermodel.trial_epochs(hp)
        parent = hp.values.get("tuner/trial_id")
        hparams = trial_hparams(hp, self.hypermodel.space, epochs)
        measures = [
            EpochTimer(train_tokens.token_count, writer),
            PeakMemory(writer, gpus=strategy_gpus(self.strategy), first_trial_start=self.first_trial_start),
            ParameterCount(writer),
            LossScalars(writer),
        ]
        callbacks = measures + [keras.callbacks.TerminateOnNaN()]  # a diverged trial stops at once
        with writer.as_default():  # the HParams session: its end says whether the trial succeeded
            hparams_api.hparams(hparams, trial_id=f"trial_{trial.trial_id}")
        self.trials_run.append(trial.trial_id)
        try:
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
                    f"loss diverged to {losses['final_loss']} (val {losses['val_loss']}); "
                    "try a lower learning rate"
                )
        except Exception:
            _end_session(writer, api_pb2.STATUS_FAILURE)
            writer.close()
            raise
        _end_session(writer, api_pb2.STATUS_SUCCESS)
        figures = {**hparams, "lora_init": self.hypermodel.lora_init, "initial_epoch": initial_epoch,
                   "parent_trial_id": parent, "tuner_id": self.tuner_id,
                   "num_replicas": self.strategy.num_replicas_in_sync if self.strategy else 1}
        for measure in measures:
            figures.update(measure.results())
        scores, translations = val_texts.scores(model.backbone, self.hypermodel.base.tokenizer)
        figures.update(scores)
        with writer.as_default():
            step = epochs - 1
            tf.summary.scalar("bleu", scores["bleu"], step=step)
            tf.summary.scalar("chrf", scores["chrf"], step=step)
            tf.summary.text("sample_translations", val_texts.samples_markdown(translations), step=step)
        writer.close()
        self.save_model(trial.trial_id, model, config=self.hypermodel.lora_config(hp))
        with open(self.measurements_path(trial.trial_id), "w") as handle:
            json.dump(figures, handle, indent=2)
        del model
        if not self.hypermodel.reuse_models:
            self.hypermodel.release()  # the next trial starts from a clean graph
        metrics = {name: figures[name] for name in ("val_loss", "final_loss", "training_time_s", "peak_memory_mb")}
        if self.baseline_val_loss is not None:
            metrics["baseline_val_loss"] = self.baseline_val_loss
        return metrics

    def save_model(self, trial_id, model, step=0, config=None):
        self.adapters_dir.mkdir(parents=True, exist_ok=True)
        save_adapter(model.backbone, self.adapter_path(trial_id), config)

    def load_model(self, trial):
        """The trial's adapted model: the base rebuilt plus the saved adapter."""
        backbone = self.hypermodel.base.build_backbone()
        load_adapter(backbone, self.adapter_path(trial.trial_id))
        return self.hypermodel.base.build_model(backbone)

    def save(self):
        if not is_worker():  # a worker keeps no state: the chief's oracle holds the run
            super().save()

    def on_trial_end(self, trial):
        super().on_trial_end(trial)
        if self.on_trial_done is not None:
            self.on_trial_done()

    def trial_rows(self):
        """One dict per trial with hyperparameters, status and measurements."""
        rows = []
        for trial_id in sorted(self.oracle.trials):
            trial = self.oracle.trials[trial_id]
            if trial.status == TrialStatus.RUNNING:
                continue
            hp = trial.hyperparameters
            initial_epoch, epochs = self.hypermodel.trial_epochs(hp)
            row = {
                "trial_id": trial_id, **trial_hparams(hp, self.hypermodel.space, epochs),
                "initial_epoch": initial_epoch, "parent_trial_id": hp.values.get("tuner/trial_id"),
            }
            path = self.measurements_path(trial_id)
            if trial.status == TrialStatus.COMPLETED and path.is_file():
                row.update(json.loads(path.read_text()))
                row["status"] = "COMPLETED"
            else:
                row["status"] = f"FAILED: {failure_reason(trial.message)}"
            rows.append(row)
        return rows
