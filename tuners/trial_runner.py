"""The one trial runner: a group of 1..N trials trained in one fit, each measured and recorded as its own.

For every trial of the group it opens and closes the HParams session, runs the measurement
callbacks, checks the losses for divergence, scores the translations (when given the
validation texts) and writes its measurements and adapter. A trial alone is the group of one;
`LoraTuner.run_trial` and the JAX path (`tuners.single_trial`) both run trials here.

Cost figures are each trial's own and mean the same whether it trained alone or packed. Every
configuration first trains alone for a few steps on the same traced step, after a warm-up
(`LoraT5HyperModel.measure_alone`): its `peak_memory_mb` is the peak of those steps. Its
`training_time_s` is its epochs' training time, validation excluded: measured in its own fit
when alone, its mean alone step time times its steps when packed; the group's own fit is
recorded beside (`pack_training_time_s`, `pack_tokens_per_s`).

Every trial's val loss is also kept per validation pair (`PairLosses`), with its translations,
in `validation_path`: the sample its 95% confidence intervals (`val_loss_ci_*`, `bleu_ci_*`,
`chrf_ci_*`) and the report's paired tests resample (`lora_keras.results.stats`).

Expected failures (out of memory, a diverged loss, keras-tuner's `FailedTrialError`) are a
trial's outcome; any other error is a bug and propagates with its traceback.

Example:
```python
runner = TrialRunner(hypermodel, space, max_epochs=2)
outcomes = runner.run([TrialPlan("0", hp, pathlib.Path("tb/trial_0"))], train_tokens, val_tokens, val_texts)
outcomes["0"]["val_loss"]          # or a FailedTrialError
```
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import math
import pathlib
import time

import keras
import keras_tuner
from keras_tuner.errors import FailedTrialError

from callbacks import EpochTimer, FirstTrialStart, LossScalars, ParameterCount, PeakMemory, create_writer
from callbacks._summary import flush, write_scalars
from lora_keras.adapters import merged_weights, save_adapter
from lora_keras.data.pipeline import TokenizedPairs
from lora_keras.evaluation import SAMPLE_TRANSLATIONS, ValidationTexts
from lora_keras.results.configurations import REFERENCES_FILE
from lora_keras.results.stats import translation_intervals, val_loss_interval
from lora_keras.runtime.atomic_files import write_atomically
from tuners.failures import is_out_of_memory
from tuners.hparams import end_session, start_session, write_summary
from tuners.hypermodel import LoraT5HyperModel
from tuners.search_space import SearchSpace


@dataclasses.dataclass(frozen=True)
class TrialPlan:
    """One trial to run and where its records go.

    Args:
        trial_id: the trial's id (its HParams session is `trial_<id>`).
        hyperparameters: its values.
        session_dir: its TensorBoard session directory.
        adapter_path: where its adapter is saved, or None to keep none.
        measurements_path: where its figures are written as JSON, or None.
        parent_adapter: the adapter it continues from (a Hyperband child), or None.
        validation_path: where its per-pair val losses and translations are written as JSON, or None.
        settings: extra fields for its figures (e.g. the `attempt` a distributed worker runs).
        references_path: where the run's validation sources and references are kept, once per run;
            None: beside `validation_path`.

    Example: `TrialPlan("3", hp, run_dir / "tensorboard" / "trial_3", run_dir / "adapters" / "trial_3.safetensors")`.
    """

    trial_id: str
    hyperparameters: keras_tuner.HyperParameters
    session_dir: pathlib.Path
    adapter_path: pathlib.Path | None = None
    measurements_path: pathlib.Path | None = None
    parent_adapter: pathlib.Path | None = None
    validation_path: pathlib.Path | None = None
    settings: dict = dataclasses.field(default_factory=dict)
    references_path: pathlib.Path | None = None


class TrialRunner:
    """Trains groups of trials of a `LoraT5HyperModel`, each measured and recorded as its own.

    Args:
        hypermodel: builds and fits the trials.
        space: what a trial's values mean.
        max_epochs: the sweep's epochs per trial.
        strategy: a `tf.distribute.Strategy` to build and train in, or None.
        gpus: the GPUs a trial's peak memory is read from (None: the default).
        verbose: Keras's progress output.
        base_translations: the unadapted base's first translations, shown beside each trial's.
        settings: extra fields for every trial's figures (e.g. `tuner_id`).

    Example: `TrialRunner(hypermodel, space, max_epochs=2).run(plans, train_tokens, val_tokens)`.
    """

    def __init__(self, hypermodel: LoraT5HyperModel, space: SearchSpace, max_epochs: int, strategy=None,
                 gpus=None, verbose: int = 0, base_translations: tuple = (), settings: dict | None = None):
        self.hypermodel = hypermodel
        self.space = space
        self.max_epochs = max_epochs
        self.strategy = strategy
        self.gpus = gpus
        self.verbose = verbose
        self.base_translations = tuple(base_translations)
        self.settings = dict(settings or {})
        self.first_trial_start = FirstTrialStart()  # host memory: each trial as if it ran alone

    def run(self, plans: list[TrialPlan], train_tokens: TokenizedPairs, val_tokens: TokenizedPairs,
            val_texts: ValidationTexts | None = None) -> dict[str, dict | FailedTrialError]:
        """Train `plans` together (one slot each) and record each; trial id -> its figures or its failure.

        Args:
            plans: 1 to `hypermodel.slots` trials sharing a `tuners.packing.pack_key`.
            train_tokens: training pairs.
            val_tokens: validation pairs, evaluated after every epoch.
            val_texts: the validation set as text, for BLEU and chrF; None scores nothing.

        Returns:
            Per trial id, its figures (`val_loss`, `final_loss`, `training_time_s`, `peak_memory_mb`,
            ...) or the `FailedTrialError` that ended it.
        """
        hypermodel = self.hypermodel
        hps = [plan.hyperparameters for plan in plans]
        hparams = [{**self.space.trial_hparams(hp, self.max_epochs), "precision": hypermodel.precision} for hp in hps]
        for plan, values in zip(plans, hparams):
            start_session(plan.session_dir, values, f"trial_{plan.trial_id}")
        writers = [create_writer(str(plan.session_dir)) for plan in plans]
        packed = len(plans) > 1
        slot_keys = hypermodel.slots > 1
        timer = EpochTimer(train_tokens.token_count * len(plans), None if packed else writers[0])
        losses = [LossScalars(writer, slot=slot if slot_keys else None) for slot, writer in enumerate(writers)]
        parameters = [ParameterCount(writer, slot=slot) for slot, writer in enumerate(writers)]
        callbacks = [timer, *parameters, *losses]
        if not packed:
            callbacks.append(keras.callbacks.TerminateOnNaN())  # a diverged trial alone stops at once
        self.first_trial_start.record()  # before any step of this process, whichever batch size comes first
        try:
            with self.strategy.scope() if self.strategy else contextlib.nullcontext():
                model = hypermodel.build(hps[0])
                trace_s = hypermodel.trace(model, train_tokens, val_tokens, hps[0].get("batch_size"))
                alone = [self._measure_alone(hp, model, train_tokens, writer, estimate_time=packed)
                         for hp, writer in zip(hps, writers)]
                hypermodel.fit_group(hps, model, train_tokens, val_tokens, callbacks=callbacks, verbose=self.verbose,
                                     parents=[plan.parent_adapter for plan in plans])
                pair_nll, pair_tokens = hypermodel.pair_losses(model, val_tokens, len(plans))
        except Exception as error:
            for plan, writer in zip(plans, writers):
                flush(writer)
                end_session(plan.session_dir, succeeded=False)
            if not is_out_of_memory(error):
                raise
            reason = (str(error).strip().splitlines() or [""])[0]
            failure = FailedTrialError(f"out of memory ({type(error).__name__}: {reason}); "
                                       "try a smaller batch size or rank")
            return {plan.trial_id: failure for plan in plans}
        fit = timer.results()
        # A trial's own training: its epochs' training parts, validation excluded (as a packed trial's estimate).
        own_fit = {**fit, "training_time_s": sum(fit["epoch_times_s"]), "fit_time_s": fit["training_time_s"]}
        outcomes = {}
        for slot, (plan, hp, writer) in enumerate(zip(plans, hps, writers)):
            figures = {**self._figures(hp, hparams[slot], [parameters[slot], losses[slot]]), **plan.settings}
            figures.update(alone[slot] if packed else {**own_fit, **alone[slot]}, trace_s=trace_s)
            if packed:
                figures.update(pack_group="+".join(p.trial_id for p in plans),
                               pack_training_time_s=fit["training_time_s"], pack_tokens_per_s=fit["tokens_per_s"])
            outcomes[plan.trial_id] = self._record(plan, model, slot, figures, writer, val_texts,
                                                   (pair_nll[slot], pair_tokens))
        return outcomes

    def _figures(self, hp, hparams, measures):
        """A trial's settings and every measure's results."""
        figures = {
            **hparams, "lora_init": self.hypermodel.lora_init,
            "initial_epoch": self.space.trial_epochs(hp, self.max_epochs)[0],
            "parent_trial_id": hp.values.get("tuner/trial_id"),
            "jit_compile": self.hypermodel.jit_compile,
            "num_replicas": self.strategy.num_replicas_in_sync if self.strategy else 1,
            **self.settings,
        }
        for measure in measures:
            figures.update(measure.results())
        return figures

    def _record(self, plan, model, slot, figures, writer, val_texts, pairs):
        """Check, score and keep one trial: its figures, or the `FailedTrialError` of a diverged loss.

        `pairs` is `(nll, tokens)` per validation pair: the val loss's confidence interval, and
        with the translations, the trial's validation file.
        """
        if not all(figures[k] is not None and math.isfinite(figures[k]) for k in ("final_loss", "val_loss")):
            flush(writer)
            end_session(plan.session_dir, succeeded=False)
            return FailedTrialError(
                f"loss diverged to {figures['final_loss']} (val {figures['val_loss']}); try a lower learning rate")
        end_session(plan.session_dir, succeeded=True)
        nll, tokens = pairs
        step = figures["epochs"] - 1
        low, high = val_loss_interval(nll, tokens)
        figures.update(val_loss_ci_low=low, val_loss_ci_high=high)
        write_scalars(writer, {"val_loss_ci_low": low, "val_loss_ci_high": high}, step=step)
        translations = []
        if val_texts is not None:
            translations = self._score(model, slot, val_texts, figures, plan.session_dir, writer, step=step)
        flush(writer)
        if plan.validation_path is not None:
            self._keep_pairs(plan, nll, tokens, translations, val_texts)
        if plan.adapter_path is not None:
            plan.adapter_path.parent.mkdir(parents=True, exist_ok=True)
            save_adapter(model.backbone, plan.adapter_path, slot=slot)  # atomically
        if plan.measurements_path is not None:
            write_atomically(plan.measurements_path, json.dumps(figures, indent=2))
        return figures

    def _score(self, model, slot, val_texts, figures, session_dir, writer, step):
        """BLEU and chrF into `figures` and, with sample translations, into the trial's session."""
        from tensorboard.plugins.text import summary_v2 as text_summary

        scores, translations = val_texts.scores(model.backbone, self.hypermodel.base.tokenizer,
                                                merged_weights(model.backbone, slot))
        if self.base_translations:
            val_texts = dataclasses.replace(val_texts, base_translations=self.base_translations)
        intervals = translation_intervals(translations, val_texts.references)
        figures.update(scores, **intervals)
        figures["sample_translations"] = translations[:SAMPLE_TRANSLATIONS]
        write_scalars(writer, {**scores, **intervals}, step=step)
        write_summary(session_dir, text_summary.text_pb("sample_translations", val_texts.samples_markdown(translations)),
                      step=step)
        return translations

    @staticmethod
    def _keep_pairs(plan, nll, tokens, translations, val_texts):
        """The trial's per-pair val losses and translations; the run's references (`plan.references_path`), once."""
        path = plan.validation_path
        path.parent.mkdir(parents=True, exist_ok=True)
        references = plan.references_path or path.parent / REFERENCES_FILE
        references.parent.mkdir(parents=True, exist_ok=True)
        if val_texts is not None and not references.is_file():
            texts = {"sources": list(val_texts.sources), "references": list(val_texts.references)}
            write_atomically(references, json.dumps(texts))
        pairs = {"nll": [float(v) for v in nll], "tokens": [int(v) for v in tokens], "translations": translations}
        write_atomically(path, json.dumps(pairs))

    def _measure_alone(self, hp, model, train_tokens, writer, estimate_time):
        """The configuration's own cost, a few steps alone: its peak memory; with `estimate_time`, its time.

        The time estimate (a packed trial's) is its mean step time alone times its steps.
        """
        hypermodel = self.hypermodel
        started = time.perf_counter()
        steps = hypermodel.alone_timer(estimate_time)
        memory = self._peak_memory(writer)
        hypermodel.measure_alone(hp, model, train_tokens, [memory, steps])
        step_s = steps.results()["mean_step_s"]
        figures = {"alone_step_s": step_s, "alone_steps": steps.results()["timed_steps"], **memory.results()}
        if estimate_time:
            initial_epoch, epochs = self.space.trial_epochs(hp, self.max_epochs)
            epoch_s = step_s * hypermodel.steps_per_epoch(hp, train_tokens)
            tokens_per_s = train_tokens.token_count / epoch_s if epoch_s > 0 else 0.0
            for epoch in range(initial_epoch, epochs):
                write_scalars(writer, {"epoch_time_s": epoch_s, "tokens_per_s": tokens_per_s}, step=epoch)
            figures.update(training_time_s=epoch_s * (epochs - initial_epoch), mean_epoch_time_s=epoch_s,
                           tokens_per_s=tokens_per_s, epoch_times_s=[epoch_s] * (epochs - initial_epoch))
        return {**figures, "cost_measure_s": time.perf_counter() - started}

    def _peak_memory(self, writer):
        return PeakMemory(writer, gpus=self.gpus, first_trial_start=self.first_trial_start)
