"""Cost-aware search: spend trials where validation loss falls most per second of training.

This file is the whole strategy, the worked example of adding one: an `Oracle`
subclass and, at the bottom, its registration line; `--strategy cost_aware`
runs it.

The first trials probe the grid in a seeded random order. After them, each
trial is the untried combination with the highest predicted gain per predicted
cost: gain is `baseline_val_loss - val_loss` (how far LoRA moved the loss from
the unadapted base), cost is the trial's `training_time_s`, and both are
predicted by ridge regressions on the finished trials (val loss linear, cost
log-linear, in the log of each numeric hyperparameter and a one-hot of the
others). Everything is derived from `self.trials`, so a killed run resumes
with the same next choice.
"""

import math
import random
from collections.abc import Callable

import keras_tuner
import numpy as np
from keras_tuner.engine.trial import Trial, TrialStatus

from tuners.strategies import register
from tuners.strategies.grid import grid_values

RIDGE = 1e-2  # on standardised features: near-interpolation, yet solvable with two trials


def _same(values, taken):
    return all(taken.get(name) == value for name, value in values.items())


def _encoder(hyperparameters):
    """`values -> feature vector` (leading 1): standardised log of numbers, one-hot of the rest."""
    columns = []
    for hp in hyperparameters.space:
        options = list(hp.values) if hasattr(hp, "values") else [hp.value]
        if len(options) < 2:
            continue
        if all(isinstance(o, (int, float)) and not isinstance(o, bool) for o in options):
            logs = all(o > 0 for o in options)
            points = np.array([math.log(o) if logs else float(o) for o in options])
            columns.append((hp.name, "number", (logs, points.mean(), points.std() or 1.0)))
        else:
            for option in options[1:]:
                columns.append((hp.name, "is", option))

    def encode(values):
        features = [1.0]
        for name, kind, detail in columns:
            value = values[name]
            if kind == "is":
                features.append(float(value == detail))
            else:
                logs, mean, std = detail
                features.append(((math.log(value) if logs else float(value)) - mean) / std)
        return np.array(features)

    return encode


def _ridge(features, targets):
    penalty = RIDGE * np.eye(features.shape[1])
    penalty[0, 0] = 0.0  # the intercept is not shrunk
    return np.linalg.solve(features.T @ features + penalty, features.T @ np.asarray(targets, float))


class CostAwareOracle(keras_tuner.Oracle):
    """Tries combinations in order of predicted val-loss gain per second of training.

    `cost_metric` names the trial metric to spend (`training_time_s`, or e.g.
    `peak_memory_mb` for gain per MiB); `probe_trials` (default a third of the
    budget, at least 2) are sampled at random first. The objective is minimised.

    Args:
        *args: `keras_tuner.Oracle`'s.
        cost_metric: the trial metric to spend.
        probe_trials: trials sampled at random first; None for a third of the budget (at least 2).
        **kwargs: `keras_tuner.Oracle`'s (objective, max_trials, hyperparameters, seed, ...).

    Example: `CostAwareOracle(objective="val_loss", max_trials=6, hyperparameters=hp, seed=1)`.
    """

    def __init__(self, *args, cost_metric: str = "training_time_s", probe_trials: int | None = None, **kwargs):
        super().__init__(*args, **kwargs)
        self.cost_metric = cost_metric
        self.probe_trials = probe_trials

    def populate_space(self, trial_id: str) -> dict:
        """A probe at first, then the untried combination of the best predicted gain per cost."""
        candidates = grid_values(self.hyperparameters)
        taken = [trial.hyperparameters.values for trial in self.trials.values()]
        untried = [values for values in candidates if not any(_same(values, done) for done in taken)]
        if not untried:
            return {"status": TrialStatus.STOPPED}
        measured = self.measured_trials()
        if len(self.trials) < self.probe_count(len(candidates)) or len(measured) < 2:
            probe_order = random.Random(self.seed).sample(candidates, len(candidates))
            values = next(values for values in probe_order if values in untried)
        else:
            values = max(untried, key=self.efficiency(measured))  # the first of equals: grid order
        return {"status": TrialStatus.RUNNING, "values": values}

    def probe_count(self, n_candidates: int) -> int:
        """How many trials are random probes, of a space of `n_candidates` combinations."""
        budget = min(self.max_trials or n_candidates, n_candidates)
        return self.probe_trials or max(2, math.ceil(budget / 3))

    def measured_trials(self) -> list[Trial]:
        """The completed trials that reported the objective and the cost."""
        return [
            trial for trial in self.trials.values()
            if trial.status == TrialStatus.COMPLETED and trial.score is not None
            and trial.metrics.exists(self.cost_metric)
        ]

    def efficiency(self, measured: list[Trial]) -> Callable[[dict], tuple]:
        """`values -> sort key`: predicted gain per predicted cost (gain first when none gains)."""
        encode = _encoder(self.hyperparameters)
        features = np.array([encode(trial.hyperparameters.values) for trial in measured])
        loss = _ridge(features, [trial.score for trial in measured])
        costs = [max(trial.metrics.get_last_value(self.cost_metric), 1e-9) for trial in measured]
        log_cost = _ridge(features, np.log(costs))
        baselines = [
            trial.metrics.get_last_value("baseline_val_loss")
            for trial in measured if trial.metrics.exists("baseline_val_loss")
        ]
        # Without a baseline, gain is measured from the worst trial so far.
        reference = baselines[-1] if baselines else max(trial.score for trial in measured)

        def key(values):
            x = encode(values)
            gain = reference - float(x @ loss)
            return (gain > 0, gain / math.exp(float(x @ log_cost)) if gain > 0 else gain)

        return key


register("cost_aware", CostAwareOracle)
