"""The tuner of a sweep: keras-tuner's `BaseTuner`, whose `run_trial` trains the trial and its pack.

Example:
```python
tuner = LoraTuner(oracle, "logs/sweep", space, max_epochs=2, hypermodel=hypermodel, packing=Packing(3, 96))
tuner.search(train_tokens, val_tokens, val_texts)
tuner.trial_rows()  # one dict per ended trial, as results.csv shows them
```
"""

import json
import pathlib
import sys
from collections.abc import Callable

import keras
import keras_tuner
from keras_tuner.engine.base_tuner import BaseTuner
from keras_tuner.engine.trial import Trial, TrialStatus
from keras_tuner.errors import FailedTrialError

from lora_keras.adapters import load_adapter
from lora_keras.data.pipeline import TokenizedPairs
from lora_keras.evaluation import ValidationTexts
from lora_keras.backends.devices import strategy_gpus
from lora_keras.runtime.heap import thaw
from tuners.atomic_state import make_keras_tuner_saves_atomic, repair_after_kill
from tuners.cluster import Cluster, is_worker
from tuners.failures import TrialError, failure_reason
from tuners.hypermodel import LoraT5HyperModel
from tuners.packing import Packing, PackScheduler
from tuners.search_space import SearchSpace
from tuners.trial_files import TrialFiles, check_trial_id
from tuners.trial_runner import TrialPlan, TrialRunner

make_keras_tuner_saves_atomic()  # every run's keras-tuner state is saved through a LoraTuner


class LoraTuner(BaseTuner):
    """Runs trials of a `LoraT5HyperModel` under any keras-tuner oracle, and lists the trials ended.

    `run_trial` trains the trial, together with the trials the packing policy lets share its
    step (`tuners.packing`: drawn from the oracle as other workers' trials; each reported to
    the oracle as its own), through the one `TrialRunner`. Per trial: a TensorBoard HParams
    session in `<run_dir>/tensorboard/trial_<id>/` with the measurement callbacks' scalars, the
    LoRA weights alone in `<run_dir>/adapters/trial_<id>.safetensors` (no full-model
    checkpoint), and every figure in the trial's `measurements.json` (with the `tuner_id` that
    ran it, and its `attempt`). Each attempt writes them in its own staging directory, moved into
    place when the trial ends (`tuners.trial_files`): here in a local run, by the chief for a
    worker (which drops them if the chief refuses the attempt). The oracle gets `val_loss`, `final_loss`, `training_time_s`, `peak_memory_mb` and
    `baseline_val_loss` (when given), so a strategy can weigh loss against cost. A Hyperband
    trial (`tuner/trial_id`) trains from its parent trial's adapter to its epoch budget.
    Without a hypermodel (a distributed sweep's chief) it runs no trial: it holds the oracle's
    state in `run_dir` and lists the trials (`trial_rows`).

    Args:
        oracle: the strategy's `keras_tuner.Oracle`, over `space` as declared.
        run_dir: the run's directory (`LOGDIR/NAME`).
        space: the search space; a trial's values and epochs are read there.
        max_epochs: the sweep's epochs per trial (Hyperband: the most a trial gets).
        hypermodel: builds and fits each trial's model; None where no trial runs.
        packing: how many trials may share a step (`tuners.packing.policy_for`); one by default.
        overwrite: drop the oracle's saved state instead of resuming it.
        verbose: Keras's progress output.
        on_trial_done: called after every trial that ends here (the tables, for a local run).
        baseline_val_loss: the unadapted base's val loss, reported to the oracle with every trial.
        strategy: a `tf.distribute.Strategy` to build and train each trial in, or None.
        base_translations: the unadapted base's first translations, shown beside each trial's.
        cluster: a distributed worker's part (its chief's address, token, id); None otherwise.

    Example:
    ```python
    tuner = LoraTuner(GridOracle(objective="val_loss", hyperparameters=hp), "logs/sweep",
                      space, max_epochs=2, hypermodel=hypermodel)
    tuner.search(train_tokens, val_tokens, val_texts)
    ```
    """

    def __init__(
        self, oracle: keras_tuner.Oracle, run_dir: str | pathlib.Path, space: SearchSpace, max_epochs: int,
        hypermodel: LoraT5HyperModel | None = None, packing: Packing = Packing(), overwrite: bool = False,
        verbose: int = 1, on_trial_done: Callable[[], object] | None = None, baseline_val_loss: float | None = None,
        strategy=None, base_translations: tuple = (), cluster: Cluster | None = None,
    ):
        self.run_dir = pathlib.Path(run_dir)
        self.space = space
        self.max_epochs = max_epochs
        self.packing = packing
        self.on_trial_done = on_trial_done
        self.baseline_val_loss = baseline_val_loss
        self.trials_run = []
        super().__init__(oracle=oracle, hypermodel=hypermodel, directory=str(self.run_dir), project_name="tuner",
                         overwrite=overwrite)
        if is_worker():  # keras-tuner's client, with leases, attempts, a heartbeat and the token
            from tuners.worker_client import LeasedOracleClient

            self.oracle = LeasedOracleClient(self.oracle._oracle, cluster)
        self.scheduler = PackScheduler(self.oracle, self.tuner_id, packing, space, max_epochs)
        self.runner = None if hypermodel is None else TrialRunner(
            hypermodel, space, max_epochs, strategy=strategy, gpus=strategy_gpus(strategy), verbose=verbose,
            base_translations=base_translations,
            settings={"tuner_id": self.tuner_id})

    def trial_files(self, trial_id: str) -> TrialFiles:
        """The trial's files, and where this process's attempt at it writes them."""
        attempt = self.oracle.attempt(trial_id) if is_worker() else 1
        return TrialFiles(self.run_dir, trial_id, attempt)

    def _populate_initial_space(self):
        # keras-tuner reloads a run only when this tuner id's own file exists (`tuner0.json`
        # locally, `chief.json` for a chief): a run resumed in the other mode must keep its trials.
        if not is_worker() and (self.run_dir / "tuner" / "oracle.json").is_file():
            self.oracle.reload()
            repair_after_kill(self.oracle)
            self._search_declared_space()
            return
        # keras-tuner's default builds a whole model to discover the space;
        # ours is declared up front, so declaring is enough.
        hp = self.oracle.get_space()
        self.space.declare(hp)
        self.oracle.update_space(hp)

    def reload(self) -> None:
        """keras-tuner's reload (this tuner id's own file exists), then the space declared now."""
        super().reload()
        if not is_worker():
            repair_after_kill(self.oracle)
            self._search_declared_space()

    def _search_declared_space(self):
        # keras-tuner restores the space the run was saved with; a grown run (more values on an
        # axis, `tuners.run_files.run_changes`) searches the one declared now, its old values included.
        hp = keras_tuner.HyperParameters()
        self.space.declare(hp)
        self.oracle.hyperparameters = hp

    def search(self, *fit_args, **fit_kwargs) -> None:
        """keras-tuner's search; then the packing scheduler's extra tuner ids are told it is over."""
        try:
            super().search(*fit_args, **fit_kwargs)
            for group in self.scheduler.release():
                self._run_group(group, *fit_args, **fit_kwargs)
        finally:
            if is_worker():
                self.oracle.close()  # the heartbeat stops with the search

    def run_trial(
        self, trial: Trial, train_tokens: TokenizedPairs, val_tokens: TokenizedPairs,
        val_texts: ValidationTexts | None = None,
    ) -> dict:
        """Train, measure and score the trial (and its pack's other trials); keep each adapter and figures.

        Args:
            trial: the oracle's trial.
            train_tokens: training pairs.
            val_tokens: validation pairs.
            val_texts: the validation set as text, for BLEU and chrF.

        Returns:
            The metrics the oracle gets: `val_loss`, `final_loss`, `training_time_s`,
            `peak_memory_mb` (and `baseline_val_loss` when known). A failed trial raises its
            `FailedTrialError`.
        """
        outcome = None
        try:
            for group in self.scheduler.groups(trial):
                outcomes = self._train(group, train_tokens, val_tokens, val_texts)
                for other in group:
                    if other.trial_id == trial.trial_id:
                        outcome = outcomes[other.trial_id]
                    else:  # drawn by the scheduler: reported here, as keras-tuner's loop reports its own
                        self._report(other, outcomes[other.trial_id])
        except Exception as error:  # not a trial's own failure: keras-tuner would record it and go on
            raise TrialError(f"trial {trial.trial_id} stopped the sweep: {type(error).__name__}: {error}") from error
        if isinstance(outcome, Exception):
            raise outcome
        return self._oracle_metrics(outcome)

    def _run_group(self, group, train_tokens, val_tokens, val_texts=None):
        """Train a group none of whose trials is keras-tuner's own, and report each."""
        outcomes = self._train(group, train_tokens, val_tokens, val_texts)
        for trial in group:
            self._report(trial, outcomes[trial.trial_id])

    def _train(self, group, train_tokens, val_tokens, val_texts):
        self.trials_run.extend(trial.trial_id for trial in group)
        plans = [self._plan(trial) for trial in group]
        try:
            return self.runner.run(plans, train_tokens, val_tokens, val_texts)
        except Exception:
            if not is_worker():  # the sweep stops here: keep the trials' sessions, ended as failed, in place
                for trial in group:
                    self.trial_files(trial.trial_id).commit()
            raise

    def _plan(self, trial):
        parent = trial.hyperparameters.values.get("tuner/trial_id")
        files = self.trial_files(trial.trial_id)
        files.discard()  # what a killed attempt of this number left
        return TrialPlan(
            trial.trial_id, trial.hyperparameters, files.staged_session, files.staged_adapter,
            files.staged_measurements, None if parent is None else TrialFiles(self.run_dir, check_trial_id(parent)).adapter,
            files.staged_validation, settings={"attempt": files.attempt}, references_path=files.references,
        )

    def _report(self, trial, outcome):
        """End a trial this tuner drew for a pack: its metrics to the oracle, or its failure."""
        self.on_trial_begin(trial)
        if isinstance(outcome, FailedTrialError):
            trial.status = TrialStatus.FAILED
            trial.message = f"{type(outcome).__module__}.{type(outcome).__name__}: {outcome}"
        else:
            self.oracle.update_trial(trial.trial_id, self._oracle_metrics(outcome))
            trial.status = TrialStatus.COMPLETED
        self.on_trial_end(trial)

    def _oracle_metrics(self, figures):
        metrics = {name: figures[name] for name in ("val_loss", "final_loss", "training_time_s", "peak_memory_mb")}
        if self.baseline_val_loss is not None:
            metrics["baseline_val_loss"] = self.baseline_val_loss
        return metrics

    def save_model(self, trial_id: str, model: keras.Model, step: int = 0) -> None:
        """keras-tuner's hook: nothing, the runner keeps each trial's adapter alone (no full checkpoint)."""

    def load_model(self, trial: Trial) -> keras.Model:
        """The trial's adapted model: the base rebuilt plus the saved adapter."""
        backbone = self.hypermodel.base.build_backbone()
        load_adapter(backbone, TrialFiles(self.run_dir, trial.trial_id).adapter)
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
        """The attempt's files into place (a local run; a worker's chief does it), keras-tuner's end, `on_trial_done`.

        A worker whose report the chief refused drops the attempt's files: another attempt holds the trial.
        """
        files = self.trial_files(trial.trial_id)
        if not is_worker():
            files.commit()
        try:
            super().on_trial_end(trial)
        finally:
            if is_worker():
                if self.oracle.was_refused(trial.trial_id):
                    print(f"Trial {trial.trial_id}: the chief refused attempt {files.attempt} "
                          f"({self.oracle.refused[trial.trial_id]}); its files are dropped", file=sys.stderr)
                files.discard()  # nothing left once the chief moved them into place
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
            path = TrialFiles(self.run_dir, trial_id).measurements
            if trial.status == TrialStatus.COMPLETED and path.is_file():
                row.update(json.loads(path.read_text()))
                row["status"] = "COMPLETED"
            else:
                row["status"] = f"FAILED: {failure_reason(trial.message)}"
            rows.append(row)
        return rows
