"""Search strategies by name: each a keras-tuner `Oracle` subclass in its own module here.

Adding one is one file in this package: the `Oracle` subclass (its heart is
`populate_space`) and one registration line. Every module here is imported
below, so `--strategy NAME` finds it with nothing else changed:
```python
class MySearchOracle(keras_tuner.Oracle):
    def populate_space(self, trial_id):
        ...

register("my_search", MySearchOracle)
```
"""

import importlib
import inspect
import math
import pkgutil
from collections.abc import Callable

import keras_tuner

STRATEGIES = {}
# keras-tuner reads seed 0 as "no seed" and draws one at random (`seed or randint`),
# which would make `--seed 0`, the default, give a different order on every run.
SEED_FOR_ZERO = 104_729


def register(
    name: str, oracle_class: type[keras_tuner.Oracle] | None = None,
) -> type[keras_tuner.Oracle] | Callable[[type], type]:
    """Make `oracle_class` the strategy `name`; without a class, a class decorator.

    Args:
        name: the strategy's name (`--strategy NAME`).
        oracle_class: a `keras_tuner.Oracle` subclass; None to decorate one.

    Returns:
        `oracle_class`, or the decorator.

    Example: `register("cost_aware", CostAwareOracle)`, or `@register("my_search")` on the class.
    """
    if oracle_class is None:
        return lambda cls: register(name, cls)
    STRATEGIES[name] = oracle_class
    return oracle_class


def budgets_in_epochs(name: str) -> bool:
    """Whether strategy `name` sets each trial's epochs (its constructor takes `max_epochs`, as Hyperband's).

    Args:
        name: a registered strategy.

    Returns:
        True when its trials train to different epochs.

    Example: `budgets_in_epochs("hyperband")` -> `True`; `budgets_in_epochs("grid")` -> `False`.
    """
    return "max_epochs" in inspect.signature(STRATEGIES[name]).parameters


def make_oracle(
    name: str, objective: keras_tuner.Objective | str, max_trials: int | None,
    hyperparameters: keras_tuner.HyperParameters, seed: int, max_epochs: int = 1, fastest: tuple[str, ...] = (),
) -> keras_tuner.Oracle:
    """The oracle of strategy `name` over `hyperparameters`; `KeyError` if none is registered.

    Oracles that budget in epochs (their constructor takes `max_epochs`, as
    Hyperband's does) get `max_epochs` and set their own number of trials, which
    `max_trials` only caps; for the others `max_trials=None` means one trial per
    combination of the space.

    Args:
        name: a registered strategy.
        objective: what the oracle optimises.
        max_trials: the trial budget; None for one trial per combination (or the strategy's own).
        hyperparameters: the declared search space.
        seed: the strategy's seed; 0 is a seed like any other (see `SEED_FOR_ZERO`).
        max_epochs: the most epochs a trial trains to, for strategies that budget in epochs.
        fastest: names to vary fastest, for strategies that take an order (their constructor takes
            `fastest`, as the grid's does); the others ignore it.

    Returns:
        The oracle.

    Example: `make_oracle("grid", keras_tuner.Objective("val_loss", "min"), 9, hp, seed=0)`.
    """
    oracle_class = STRATEGIES[name]
    kwargs = dict(
        objective=objective, max_trials=max_trials, hyperparameters=hyperparameters,
        seed=seed if seed else SEED_FOR_ZERO, allow_new_entries=False, tune_new_entries=False,
    )
    if budgets_in_epochs(name):
        kwargs["max_epochs"] = max_epochs
    elif max_trials is None:
        kwargs["max_trials"] = math.prod(len(getattr(hp, "values", [None])) for hp in hyperparameters.space)
    if "fastest" in inspect.signature(oracle_class).parameters:
        kwargs["fastest"] = tuple(fastest)
    return oracle_class(**kwargs)


for _module in pkgutil.iter_modules(__path__):
    importlib.import_module(f"{__name__}.{_module.name}")
