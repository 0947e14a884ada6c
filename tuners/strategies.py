"""Search strategies by name: each a factory of a keras-tuner `Oracle`.

Add one with a decorated factory:
```python
@register("my_search")
def my_search(objective, max_trials, hyperparameters, seed):
    return MyOracle(objective=objective, max_trials=max_trials,
                    hyperparameters=hyperparameters, seed=seed)
```
"""

import keras_tuner

from tuners.grid_oracle import GridOracle

STRATEGIES = {}


def register(name):
    def decorate(factory):
        STRATEGIES[name] = factory
        return factory

    return decorate


def make_oracle(name, objective, max_trials, hyperparameters, seed):
    """The oracle of strategy `name`; `KeyError` if none is registered."""
    return STRATEGIES[name](objective, max_trials, hyperparameters, seed)


@register("grid")
def grid(objective, max_trials, hyperparameters, seed):
    return GridOracle(
        objective=objective, max_trials=max_trials, hyperparameters=hyperparameters,
        allow_new_entries=False, tune_new_entries=False, seed=seed,
    )


@register("random")
def random(objective, max_trials, hyperparameters, seed):
    return keras_tuner.oracles.RandomSearchOracle(
        objective=objective, max_trials=max_trials, hyperparameters=hyperparameters,
        allow_new_entries=False, tune_new_entries=False, seed=seed,
    )


@register("bayesian")
def bayesian(objective, max_trials, hyperparameters, seed):
    return keras_tuner.oracles.BayesianOptimizationOracle(
        objective=objective, max_trials=max_trials, hyperparameters=hyperparameters,
        allow_new_entries=False, tune_new_entries=False, seed=seed,
    )
