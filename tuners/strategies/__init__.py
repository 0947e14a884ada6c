"""Search strategies by name: built-ins here, installed plug-ins, or `module.path:OracleClass`.

`--strategy NAME` resolves NAME (`oracle_class`) as, in order:
- a built-in: each module in this package registers its `keras_tuner.Oracle` subclass with one line;
- a plug-in: an entry point of an installed distribution in the group `lora_keras.strategies`;
- `module.path:OracleClass`: any `keras_tuner.Oracle` subclass importable from the Python path,
  such as `keras_tuner.oracles:RandomSearchOracle`.

The name as given is what a run records (`run_config.json`'s `strategy`), so a resumed run, its
distributed workers and `tune.py`'s checks resolve it the same way. A module or plug-in that fails to
import is named in one line when it is chosen or listed; every other strategy still works.

Adding a built-in is one file in this package:
```python
import keras_tuner
from keras_tuner.engine.trial import TrialStatus

from tuners.strategies import register

class MySearchOracle(keras_tuner.Oracle):
    def populate_space(self, trial_id):
        return {"status": TrialStatus.STOPPED}   # or RUNNING with {"values": {...}}

register("my_search", MySearchOracle)
```
"""

import functools
import importlib
import importlib.metadata
import inspect
import math
import pkgutil
from collections.abc import Callable

import keras_tuner

from lora_keras.errors import InputError

STRATEGIES = {}  # the built-ins, by name
BROKEN_MODULES = {}  # a module of this package that failed to import -> why, in one line
ENTRY_POINT_GROUP = "lora_keras.strategies"
MODULE_CLASS = "module.path:OracleClass"
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


def import_builtins() -> dict[str, str]:
    """Import every module of this package; one that fails is kept in `BROKEN_MODULES`, not raised.

    Returns:
        `BROKEN_MODULES`: `{module file: why}` for each module that failed to import.

    Example: `import_builtins()` -> `{}`; with a syntax error in `tuners/strategies/mine.py`,
    `{"mine.py": "SyntaxError: invalid syntax (mine.py, line 3)"}`.
    """
    for module in pkgutil.iter_modules(__path__):
        try:
            importlib.import_module(f"{__name__}.{module.name}")
        except Exception as error:  # noqa: BLE001  (one broken strategy must not break the others)
            BROKEN_MODULES[f"{module.name}.py"] = _one_line(error)
    return BROKEN_MODULES


def plugin_names() -> list[str]:
    """The installed plug-ins' names (entry points in `ENTRY_POINT_GROUP`), none of them imported.

    Example: after `pip install -e examples/strategy_plugin`, `plugin_names()` -> `["cheapest_first"]`.
    """
    return sorted({entry.name for entry in _entry_points()} - set(STRATEGIES))


def choices() -> str:
    """Every strategy `--strategy` takes, in one line: built-ins, plug-ins, `module.path:OracleClass`.

    A module or plug-in that fails to import is named, not imported again and not raised.

    Example: `choices()` -> `"bayesian, cost_aware, grid, hyperband, random; or module.path:OracleClass
    (a keras_tuner.Oracle subclass on the Python path)"`.
    """
    text, plugins = ", ".join(sorted(STRATEGIES)), plugin_names()
    if plugins:
        text += f"; plug-ins: {', '.join(plugins)}"
    text += f"; or {MODULE_CLASS} (a keras_tuner.Oracle subclass on the Python path)"
    if BROKEN_MODULES:
        broken = (f"tuners/strategies/{file} ({why})" for file, why in BROKEN_MODULES.items())
        text += f"; not loaded: {', '.join(broken)}"
    return text


def oracle_class(name: str) -> type[keras_tuner.Oracle]:
    """The oracle class of strategy `name`: a built-in, a plug-in, or `module.path:OracleClass`.

    Args:
        name: as given to `--strategy` and recorded in `run_config.json`.

    Returns:
        The class (or, for a built-in, what was registered, e.g. a `functools.partial` of one).

    Raises:
        InputError: (`strategy`) no such strategy, or it failed to import, or it is not a
            `keras_tuner.Oracle` subclass; one line naming it.

    Example: `oracle_class("keras_tuner.oracles:RandomSearchOracle")` -> `RandomSearchOracle`.
    """
    if name in STRATEGIES:
        return STRATEGIES[name]
    entry = next((entry for entry in _entry_points() if entry.name == name), None)
    if entry is not None:
        found = _load(name, entry.load, f"plug-in {name} ({entry.value})")
    elif ":" in name:
        module, _, attribute = name.partition(":")
        found = _load(name, lambda: _import_attribute(name, module, attribute), f"module {module}")
    elif f"{name}.py" in BROKEN_MODULES:
        raise InputError(f"strategy {name}: tuners/strategies/{name}.py failed to import: "
                         f"{BROKEN_MODULES[name + '.py']}", parameter="strategy")
    else:
        raise InputError(f"strategy {name} is not registered; choose from {choices()}", parameter="strategy")
    target = found.func if isinstance(found, functools.partial) else found
    if not (isinstance(target, type) and issubclass(target, keras_tuner.Oracle)):
        what = f"class {found.__qualname__}" if isinstance(found, type) else f"a {type(found).__name__}"
        raise InputError(f"strategy {name}: {what} is not a keras_tuner.Oracle subclass; name one as "
                         f"{MODULE_CLASS}", parameter="strategy")
    return found


def budgets_in_epochs(name: str) -> bool:
    """Whether strategy `name` sets each trial's epochs (its constructor takes `max_epochs`, as Hyperband's).

    Args:
        name: a strategy, as `oracle_class` resolves it.

    Returns:
        True when its trials train to different epochs.

    Example: `budgets_in_epochs("hyperband")` -> `True`; `budgets_in_epochs("grid")` -> `False`.
    """
    return "max_epochs" in inspect.signature(oracle_class(name)).parameters


def make_oracle(
    name: str, objective: keras_tuner.Objective | str, max_trials: int | None,
    hyperparameters: keras_tuner.HyperParameters, seed: int, max_epochs: int = 1, fastest: tuple[str, ...] = (),
) -> keras_tuner.Oracle:
    """The oracle of strategy `name` over `hyperparameters`; `InputError` if `name` resolves to none.

    The class (`oracle_class`) gets, of these keyword arguments, those its constructor names
    (all of them when it takes `**kwargs`): `objective`, `max_trials`, `hyperparameters`,
    `seed`, `allow_new_entries=False` and `tune_new_entries=False` (the space is the sweep's
    alone); `max_epochs` only when its constructor names it (as Hyperband's does: such an
    oracle budgets in epochs and sets its own number of trials, which `max_trials` only caps);
    `fastest` only when its constructor names it (as the grid's does). For the others
    `max_trials=None` becomes one trial per combination of the space.

    Args:
        name: a strategy: built-in, plug-in or `module.path:OracleClass`.
        objective: what the oracle optimises.
        max_trials: the trial budget; None for one trial per combination (or the strategy's own).
        hyperparameters: the declared search space.
        seed: the strategy's seed; 0 is a seed like any other (see `SEED_FOR_ZERO`).
        max_epochs: the most epochs a trial trains to, for strategies that budget in epochs.
        fastest: names to vary fastest, for strategies that take an order; the others ignore it.

    Returns:
        The oracle.

    Example: `make_oracle("grid", keras_tuner.Objective("val_loss", "min"), 9, hp, seed=0)`.
    """
    factory = oracle_class(name)
    parameters = inspect.signature(factory).parameters
    kwargs = dict(
        objective=objective, max_trials=max_trials, hyperparameters=hyperparameters,
        seed=seed if seed else SEED_FOR_ZERO, allow_new_entries=False, tune_new_entries=False,
    )
    if "max_epochs" in parameters:
        kwargs["max_epochs"] = max_epochs
    elif max_trials is None:
        kwargs["max_trials"] = math.prod(len(getattr(hp, "values", [None])) for hp in hyperparameters.space)
    if "fastest" in parameters:
        kwargs["fastest"] = tuple(fastest)
    if not any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters.values()):
        kwargs = {key: value for key, value in kwargs.items() if key in parameters}
    try:
        inspect.signature(factory).bind(**kwargs)
    except TypeError as error:
        raise InputError(f"strategy {name}: its constructor cannot take the registry's arguments ({error}); "
                         f"it is given {', '.join(kwargs)}", parameter="strategy") from None
    return factory(**kwargs)


def _entry_points() -> list[importlib.metadata.EntryPoint]:
    return list(importlib.metadata.entry_points(group=ENTRY_POINT_GROUP))


def _one_line(error: BaseException) -> str:
    return f"{type(error).__name__}: {' '.join(str(error).split())}"


def _import_attribute(name: str, module: str, attribute: str) -> object:
    if not module or not attribute:
        raise InputError(f"strategy {name}: write it as {MODULE_CLASS}", parameter="strategy")
    try:
        found = importlib.import_module(module)
    except ModuleNotFoundError as error:
        if error.name and (module == error.name or module.startswith(error.name + ".")):
            raise InputError(f"strategy {name}: no module {error.name} on the Python path; install it or add "
                             "its directory to PYTHONPATH", parameter="strategy") from None
        raise
    for part in attribute.split("."):
        if not hasattr(found, part):
            raise InputError(f"strategy {name}: module {module} has no {attribute}", parameter="strategy")
        found = getattr(found, part)
    return found


def _load(name: str, load: Callable[[], object], what: str) -> object:
    """`load()`; any failure to import becomes one line naming `what` failed."""
    try:
        return load()
    except InputError:
        raise
    except Exception as error:  # noqa: BLE001  (a plug-in's own bug: named, never a traceback)
        raise InputError(f"strategy {name}: {what} failed to import: {_one_line(error)}",
                         parameter="strategy") from None


import_builtins()
