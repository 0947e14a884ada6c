"""A lora-keras strategy plug-in: untried combinations, cheapest first (smallest rank, then largest batch)."""

import keras_tuner
from keras_tuner.engine.trial import TrialStatus

from tuners.strategies.grid import grid_values  # every combination of the space, in declaration order


class CheapestFirstOracle(keras_tuner.Oracle):
    """Each trial is the untried combination with the smallest rank, then the largest batch size.

    Nothing is kept but `self.trials` (which keras-tuner saves), so a killed run resumes in order.

    Example: `python scripts/tune.py --strategy cheapest_first --max-trials 3` once this package is
    installed, or `--strategy cheapest_first:CheapestFirstOracle` with its directory on PYTHONPATH.
    """

    def __init__(self, largest_batch_first: bool = True, **kwargs):
        # lora-keras passes objective, max_trials, hyperparameters, seed, allow_new_entries and
        # tune_new_entries (max_epochs and fastest only to a constructor that names them).
        super().__init__(**kwargs)
        self.largest_batch_first = largest_batch_first

    def cost(self, values: dict) -> tuple:
        batch_size = values.get("batch_size", 0)
        return values.get("rank", 0), -batch_size if self.largest_batch_first else batch_size

    def populate_space(self, trial_id: str) -> dict:
        taken = [trial.hyperparameters.values for trial in self.trials.values()]
        for values in sorted(grid_values(self.hyperparameters), key=self.cost):
            if not any(all(done.get(name) == value for name, value in values.items()) for done in taken):
                return {"status": TrialStatus.RUNNING, "values": values}
        return {"status": TrialStatus.STOPPED}
