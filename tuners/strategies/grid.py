"""A grid oracle that survives a kill: the next combination is derived from the trials on disk.

keras-tuner's `GridSearch` keeps its cursor in memory (keras-tuner issue 1055);
this oracle keeps none, so a rerun continues where the last run stopped.
"""

import itertools

import keras_tuner
from keras_tuner.engine import trial as trial_module

from tuners.strategies import register


def grid_values(hyperparameters: keras_tuner.HyperParameters) -> list[dict]:
    """Every combination of the space's `Choice`/`Fixed` values, in declaration order.

    Args:
        hyperparameters: the declared space.

    Returns:
        One `{name: value}` per combination, the last name varying fastest.

    Example: `grid_values(hp)` -> `[{"rank": 1, "batch_size": 8}, {"rank": 1, "batch_size": 16}, ...]`.
    """
    names, options = [], []
    for hp in hyperparameters.space:
        names.append(hp.name)
        options.append(list(hp.values) if hasattr(hp, "values") else [hp.value])
    return [dict(zip(names, combo)) for combo in itertools.product(*options)]


def ordered_grid(hyperparameters: keras_tuner.HyperParameters, fastest: tuple[str, ...] = ()) -> list[dict]:
    """`grid_values`, reordered so that the names in `fastest` vary fastest (the others in declaration order).

    Example: `[(v["rank"], v["batch_size"]) for v in ordered_grid(hp, fastest=("rank",))]` ->
    `[(1, 8), (4, 8), (16, 8), (1, 64), ...]`.
    """
    positions = {
        hp.name: {value: index for index, value in enumerate(hp.values if hasattr(hp, "values") else [hp.value])}
        for hp in hyperparameters.space
    }
    others = [name for name in positions if name not in fastest]
    return sorted(grid_values(hyperparameters), key=lambda v: [positions[name][v[name]] for name in others])


class GridOracle(keras_tuner.Oracle):
    """Runs every combination exactly once, in a fixed order: declaration order, `fastest` varying fastest.

    Args:
        fastest: names to vary fastest (a caller that trains neighbours together asks for its own).
        **kwargs: `keras_tuner.Oracle`'s.

    Example: `GridOracle(objective="val_loss", hyperparameters=hp, fastest=("rank",))`.
    """

    def __init__(self, *args, fastest: tuple[str, ...] = (), **kwargs):
        super().__init__(*args, **kwargs)
        self.fastest = tuple(fastest)

    def populate_space(self, trial_id: str) -> dict:
        """The first combination no trial has taken; `STOPPED` when every one has."""
        taken = [trial.hyperparameters.values for trial in self.trials.values()]
        for values in ordered_grid(self.hyperparameters, self.fastest):
            if not any(all(done.get(k) == v for k, v in values.items()) for done in taken):
                return {"status": trial_module.TrialStatus.RUNNING, "values": values}
        return {"status": trial_module.TrialStatus.STOPPED}


register("grid", GridOracle)
