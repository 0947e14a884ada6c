"""Hyperband with epochs as the budget: many short trials, the best continued for longer.

keras-tuner's `HyperbandOracle` with the sweep's epochs (`--epochs`) as `max_epochs` and a halving
factor of 2 (LoRA sweeps train a few epochs, where keras-tuner's default of 3
leaves a single bracket). Its trials carry `tuner/epochs` (the epoch to train
to), `tuner/initial_epoch` and, when one continues an earlier trial,
`tuner/trial_id`; `LoraTuner.run_trial` then starts from that trial's
saved adapter. The brackets are saved with the oracle after every trial, so a
killed run resumes where it stopped.
"""

import math

import keras_tuner

from lora_keras.errors import InputError
from tuners.strategies import register

FACTOR = 2


class EpochHyperbandOracle(keras_tuner.oracles.HyperbandOracle):
    """One Hyperband iteration up to `max_epochs`: `schedule_trials()` trials, or `max_trials` if fewer.

    Args:
        objective: what the oracle minimises or maximises, e.g. `"val_loss"`.
        max_trials: a cap on the iteration's trials; None for all of them.
        max_epochs: the most epochs a trial trains to (2 or more, else `InputError`).
        factor: Hyperband's halving factor.
        **kwargs: `keras_tuner.Oracle`'s (hyperparameters, seed, ...).

    Example: `EpochHyperbandOracle(objective="val_loss", max_epochs=4, hyperparameters=hp)`
    runs 4 trials of 1 epoch, the best 2 on to 2 epochs and the best of those on to 4;
    then 3 new trials of 2 epochs, the best 2 on to 4; then 3 new trials of 4 epochs.
    """

    def __init__(
        self, objective: keras_tuner.Objective | str | None = None, max_trials: int | None = None,
        max_epochs: int = 2, factor: int = FACTOR, **kwargs,
    ):
        if max_epochs < 2:
            raise InputError(
                f"max_epochs={max_epochs}: Hyperband budgets each trial in epochs and halves them, "
                "so it needs max_epochs of 2 or more"
            )
        super().__init__(objective=objective, max_epochs=max_epochs, factor=factor, **kwargs)
        # keras-tuner's HyperbandOracle takes no max_trials: it stops when its brackets are done.
        self.max_trials = min(max_trials or math.inf, self.schedule_trials())

    def schedule_trials(self) -> int:
        """The trials of one iteration: every round of every bracket (fewer if combinations run out)."""
        return sum(
            self._get_size(bracket, round_)
            for bracket in range(self._get_num_brackets())
            for round_ in range(self._get_num_rounds(bracket))
        )


register("hyperband", EpochHyperbandOracle)
