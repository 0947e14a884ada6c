"""The tuner that trains several trials in one step: it takes them from the oracle one by one, as workers would.

The oracle hands out trials one at a time; this tuner asks for the next under another tuner
id (`<id>`, `<id>~1`, `<id>~2`, ...) while the trials drawn share a `pack_key`, up to its
slots, then runs them as one packed fit (`tuners.packing`) and reports each to the oracle as
its own trial. A trial that does not fit is held for the next pack. A kill leaves the drawn
trials running in the oracle's state; a resumed run retries them, as for any worker.

Example:
```python
tuner = PackingSweepTuner(oracle, "logs/sweep", space, max_epochs=2, hypermodel=PackedLoraHyperModel(...))
tuner.search(train_tokens, val_tokens, val_texts)
```
"""

import json
import math
import time

from keras_tuner.engine.trial import TrialStatus
from keras_tuner.errors import FailedTrialError
from tensorboard.plugins.hparams import api_pb2

from callbacks import EpochTimer, LossScalars, PeakMemory, StepTimer
from callbacks._summary import write_scalars
from callbacks.parameter_count import count_params
from lora_keras.runtime.devices import strategy_gpus
from tuners.packing import pack_key
from tuners.sweep_tuner import LoraSweepTuner, _end_session


class PackingSweepTuner(LoraSweepTuner):
    """A `LoraSweepTuner` whose trials train packed: those sharing a `pack_key` in one step.

    Each trial keeps everything a `LoraSweepTuner` trial has (its HParams session, adapter,
    `measurements.json`, oracle metrics); its cost figures are measured alone (`tuners.packing`),
    and `measurements.json` adds `pack_group` (the trial ids trained together) and
    `pack_training_time_s` (that packed fit's wall time, validation included).

    Example: as `LoraSweepTuner`, with a `PackedLoraHyperModel`.
    """

    def search(self, *fit_args, **fit_kwargs) -> None:
        """Run packs of trials until the oracle says the search is over, to every tuner id used."""
        self.on_search_begin()
        held, busy, stopped = None, {}, set()
        used = []  # tuner ids this tuner asked with, in order
        while True:
            group, held = self._draw(held, busy, stopped, used)
            if not group:
                # The oracle counts every tuner id that asked as a worker still to be told the
                # search is over (a distributed chief waits for them all): tell each.
                waiting = [tuner_id for tuner_id in used if tuner_id not in stopped]
                if not waiting:
                    break
                trial = self.oracle.create_trial(waiting[0])
                if trial.status == TrialStatus.STOPPED:
                    stopped.add(waiting[0])
                elif trial.status == TrialStatus.IDLE:
                    time.sleep(1)
                else:  # a trial to retry turned up
                    held, busy[trial.trial_id] = trial, waiting[0]
                continue
            self._pending = self._run_pack(group, *fit_args)
            for trial in group:
                self.on_trial_begin(trial)
                self._try_run_and_update_trial(trial, *fit_args, **fit_kwargs)
                self.on_trial_end(trial)
                busy.pop(trial.trial_id, None)
        self.on_search_end()

    def _draw(self, held, busy, stopped, used):
        """(trials sharing a pack key, the first drawn that did not fit or None); no trials once the oracle stopped."""
        group = [held] if held is not None else []
        while not stopped and (not group or len(group) < self.hypermodel.slots_for(group[0].hyperparameters)):
            tuner_id = next(tid for tid in self._tuner_ids() if tid not in busy.values())
            if tuner_id not in used:
                used.append(tuner_id)
            trial = self.oracle.create_trial(tuner_id)
            if trial.status == TrialStatus.STOPPED:
                stopped.add(tuner_id)
                break
            if trial.status == TrialStatus.IDLE:
                if group:
                    break
                time.sleep(1)
                continue
            busy[trial.trial_id] = tuner_id
            if group and pack_key(self.space, trial.hyperparameters, self.max_epochs) != pack_key(
                    self.space, group[0].hyperparameters, self.max_epochs):
                return group, trial
            group.append(trial)
        return group, None

    def _tuner_ids(self):
        yield self.tuner_id
        slot = 1
        while True:
            yield f"{self.tuner_id}~{slot}"
            slot += 1

    def run_trial(self, trial, *args, **kwargs) -> dict:
        """The trial's oracle metrics from its pack's fit (or the error its pack or its own loss raised)."""
        result = self._pending[trial.trial_id]
        if isinstance(result, Exception):
            raise result
        return result

    def _run_pack(self, group, train_tokens, val_tokens, val_texts):
        """Measure each trial alone, train them together, score and save each; trial id -> metrics or error."""
        hypermodel = self.hypermodel
        hps = [trial.hyperparameters for trial in group]
        ids = [trial.trial_id for trial in group]
        hparams = [{**self.space.trial_hparams(hp, self.max_epochs), "precision": hypermodel.precision} for hp in hps]
        writers = [self._open_session(trial_id, values) for trial_id, values in zip(ids, hparams)]
        self.trials_run.extend(ids)
        losses = [LossScalars(writer, slot=slot) for slot, writer in enumerate(writers)]
        packed = len(group) > 1
        # A trial trained alone is measured in its own fit; packed ones each alone beforehand.
        timer = EpochTimer(train_tokens.token_count * len(group), None if packed else writers[0])
        # The memory callback first: its clean-up before a fit (gc, malloc_trim) stays off the trial's clock.
        measures = [] if packed else [self._peak_memory(writers[0]), timer]
        try:
            model = hypermodel.build_pack(hps)
            hypermodel.trace(model, train_tokens, val_tokens)
            alone = [self._measure_alone(hp, model, train_tokens, writer) if packed else {}
                     for hp, writer in zip(hps, writers)]
            parents = [hp.values.get("tuner/trial_id") for hp in hps]
            hypermodel.start(hps, [self.adapter_path(p) if p is not None else None for p in parents])
            callbacks = [*measures, *losses] if measures else [timer, *losses]
            hypermodel.fit_pack(hps, model, train_tokens, val_tokens, callbacks=callbacks, verbose=self.verbose)
        except Exception as error:
            for writer in writers:
                _end_session(writer, api_pb2.STATUS_FAILURE)
                writer.close()
            return {trial_id: error for trial_id in ids}
        pack = model.pack
        fit = timer.results()
        results = {}
        for slot, (trial_id, hp, writer) in enumerate(zip(ids, hps, writers)):
            figures = {**self._figures(hp, hparams[slot], [*measures, losses[slot]]), **alone[slot]}
            if packed:
                figures.update(pack_group="+".join(ids), pack_training_time_s=fit["training_time_s"],
                               pack_tokens_per_s=fit["tokens_per_s"])
            else:
                figures.update(self._parameters(hp, model, writer))
            if not all(figures[k] is not None and math.isfinite(figures[k]) for k in ("final_loss", "val_loss")):
                _end_session(writer, api_pb2.STATUS_FAILURE)
                writer.close()
                results[trial_id] = FailedTrialError(
                    f"loss diverged to {figures['final_loss']} (val {figures['val_loss']}); try a lower learning rate")
                continue
            _end_session(writer, api_pb2.STATUS_SUCCESS)
            self._score_weights(model, pack.merged_weights(model.backbone, slot), val_texts, figures, writer,
                                step=hparams[slot]["epochs"] - 1)
            writer.close()
            self.adapters_dir.mkdir(parents=True, exist_ok=True)
            pack.save_slot(slot, hypermodel.lora_config(hp), self.adapter_path(trial_id))
            with open(self.measurements_path(trial_id), "w") as handle:
                json.dump(figures, handle, indent=2)
            results[trial_id] = self._oracle_metrics(figures)
        return results

    def _measure_alone(self, hp, model, train_tokens, writer):
        """The trial's own cost: a few steps of its configuration alone, scaled to its steps; its peak memory."""
        hypermodel = self.hypermodel
        started = time.perf_counter()
        steps = StepTimer(warmup=1)
        memory = self._peak_memory(writer)
        hypermodel.measure_alone(hp, model, train_tokens, [steps, memory])
        step_s = steps.results()["median_step_s"]
        memory_figures = memory.results()
        initial_epoch, epochs = self.space.trial_epochs(hp, self.max_epochs)
        epoch_s = step_s * hypermodel.steps_per_epoch(hp, train_tokens)
        tokens_per_s = train_tokens.token_count / epoch_s if epoch_s > 0 else 0.0
        for epoch in range(initial_epoch, epochs):
            write_scalars(writer, {"epoch_time_s": epoch_s, "tokens_per_s": tokens_per_s}, step=epoch)
        return {
            "training_time_s": epoch_s * (epochs - initial_epoch), "mean_epoch_time_s": epoch_s,
            "tokens_per_s": tokens_per_s, "epoch_times_s": [epoch_s] * (epochs - initial_epoch),
            "alone_step_s": step_s, "alone_steps": steps.results()["timed_steps"],
            "cost_measure_s": time.perf_counter() - started, **memory_figures,
            **self._parameters(hp, model, writer),
        }

    def _peak_memory(self, writer):
        return PeakMemory(writer, gpus=strategy_gpus(self.strategy), first_trial_start=self.first_trial_start)

    def _parameters(self, hp, model, writer):
        """The trial's own parameter counts (its rank, not the packed model's slots), also as scalars."""
        config = self.hypermodel.lora_config(hp)
        trainable = sum(config.rank * sum(p.dense.kernel.shape) for p in model.pack.layers.values())
        total = count_params(model.weights) - count_params(model.pack.variables) + trainable
        write_scalars(writer, {"trainable_params": trainable, "total_params": total}, step=0)
        return {"trainable_params": trainable, "total_params": total, "trainable_percent": 100.0 * trainable / total}
