"""Packing: which trials train together in one step. The whole policy, and the draws from the oracle.

Trials that share batch size, learning rate, epochs, targets, dropout and init (`pack_key`; in
the default grid, the ranks of a batch size and their seeds) can train in one step on one frozen
base, each in its own adapter slot (`lora_keras.adapters.layer`) reading its own seed's batches,
each the same training as alone. Here:

* **eligibility**: packing needs float32 without XLA on the default devices (`policy_for`);
* **slots**: by default, every rank (and alpha) of the grid and every seed of it (`--repeats`), `--pack N`
  otherwise;
* **the row limit**: by default a pack stays within `DEFAULT_MAX_ROWS` rows per step;
* **the order asked of a strategy**: rank, alpha and seed varying fastest (`FASTEST`), so that
  packable trials come one after another from strategies that take a `fastest` order;
* **the draws**: `PackScheduler` asks the oracle for a trial's companions under extra tuner ids
  (`<id>~1`, `<id>~2`, ...), as distributed workers would ask, and tells those ids when the
  search is over.

Example:
```python
policy = policy_for(config, jit_compile=False, devices=None)     # Packing(slots=3, max_rows=96)
scheduler = PackScheduler(oracle, "tuner0", policy, space, max_epochs=2)
for group in scheduler.groups(trial):   # [trial, companions...], then any drawn trial that did not fit
    ...
```
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Iterator

import keras_tuner
from keras_tuner.engine.trial import Trial, TrialStatus

from lora_keras.backends.devices import static_shapes
from tuners.search_space import SearchSpace

# The default pack holds at most this many rows per step. On the 2-core CPU a step's time per row is
# lowest at 64-128 rows, and grows beyond: three trials of batch 64 in one step (192 rows) took longer
# than the three alone, three of batch 8 or 32 took 0.5-0.65 of their time (docs/measured.md).
DEFAULT_MAX_ROWS = 96
# Varied fastest by strategies that take an order, so that trials that can share a step come in a row.
FASTEST = ("rank", "lora_alpha", "seed")
IDLE_WAIT_S = 1.0


def pack_key(space: SearchSpace, hp: keras_tuner.HyperParameters, max_epochs: int) -> tuple:
    """What trials must share to train in one step: all but rank, alpha and seed.

    Example: `pack_key(space, hp, 2)` -> `(8, 0.003, "q,v", 0.0, 0, 2)`.
    """
    values = space.trial_values(hp)
    return (values["batch_size"], values["learning_rate"], values["targets"], values["lora_dropout"],
            *space.trial_epochs(hp, max_epochs))


@dataclasses.dataclass(frozen=True)
class Packing:
    """How many trials may train in one step.

    Args:
        slots: the most trials in one step (1: one at a time).
        max_rows: the most rows (trials x batch size) in one step; None for no limit.

    Example: `Packing(3, 96).slots_for(hp)` -> 3 at batch size 8 or 32, 1 at 64 or 128.
    """

    slots: int = 1
    max_rows: int | None = None

    def slots_for(self, hp: keras_tuner.HyperParameters) -> int:
        """How many trials of `hp`'s batch size may share its step."""
        if self.max_rows is None:
            return self.slots
        return max(1, min(self.slots, self.max_rows // hp.get("batch_size")))


def policy_for(config, jit_compile: bool, devices: object | None) -> Packing:
    """The sweep's packing: `config.pack` if given (no row limit), else every rank (and alpha) and seed of a grid.

    Only the grid packs by default: it hands out a batch size's ranks in a row, and no later trial
    depends on an earlier one's result. Packing needs float32 on the default devices, and on
    TensorFlow no XLA (several trials' rows in one batch: TensorFlow reads the slot count from a
    variable, which XLA's static shapes cannot, a replica's share of the rows and loss scaling are
    not per trial), so elsewhere every trial trains alone. On JAX the count is a number in the
    traced step (`lora_keras.backends.devices.static_shapes`): packing works under XLA there, when
    asked for (`--pack N`); not by default, as each slot count compiles the step again (its
    configurations' steps alone too), which their timed steps would carry.

    Args:
        config: the sweep (`tuners.sweep_config.SweepConfig`).
        jit_compile: whether trials train under XLA.
        devices: the trials' distribution strategy, or None for the default devices.

    Example: `policy_for(SweepConfig(), False, None)` -> `Packing(slots=3, max_rows=96)`.
    """
    if devices is not None or config.precision != "float32":
        return Packing(1)
    if jit_compile and not (static_shapes() and config.pack is not None):
        return Packing(1)
    if config.pack is not None:
        return Packing(config.pack)
    if config.strategy != "grid":
        return Packing(1)
    space = config.space
    return Packing(len(space.ranks) * max(1, len(space.lora_alphas)) * len(space.seeds), DEFAULT_MAX_ROWS)


class PackScheduler:
    """Draws from the oracle the trials that train with a given one, under extra tuner ids.

    The oracle hands out one trial per tuner id; the scheduler asks for more under
    `<tuner_id>~1`, `<tuner_id>~2`, ... while the drawn trials share a `pack_key`, up to the
    policy's slots. A drawn trial that does not fit starts the next group. A kill leaves the
    drawn trials running in the oracle's state, and a resumed run retries them, as a worker's.

    Args:
        oracle: the sweep's oracle (local, or a distributed worker's client).
        tuner_id: the tuner's own id.
        policy: how many trials may share a step.
        space: the search space (what a trial's values mean).
        max_epochs: the sweep's epochs per trial.

    Example: `[len(g) for g in PackScheduler(oracle, "tuner0", Packing(3), space, 2).groups(trial)]` -> `[3]`.
    """

    def __init__(self, oracle: keras_tuner.Oracle, tuner_id: str, policy: Packing, space: SearchSpace,
                 max_epochs: int):
        self.oracle = oracle
        self.tuner_id = tuner_id
        self.policy = policy
        self.space = space
        self.max_epochs = max_epochs
        self.used: list[str] = []  # extra tuner ids asked with, in order
        self.stopped: set[str] = set()  # those told the search is over

    def groups(self, trial: Trial) -> Iterator[list[Trial]]:
        """`trial` and its companions, then the group of each drawn trial that did not fit, in turn."""
        while trial is not None:
            group, trial = self._draw(trial)
            yield group

    def release(self) -> Iterator[list[Trial]]:
        """Tell every extra tuner id that the search is over (the chief waits for each); groups still to run.

        The oracle answers an extra id with a trial only if one turned up after the tuner's own id
        was told the search is over (a retried trial): those are yielded, to be run.
        """
        for tuner_id in self.used:
            while tuner_id not in self.stopped:
                trial = self.oracle.create_trial(tuner_id)
                if trial.status == TrialStatus.STOPPED:
                    self.stopped.add(tuner_id)
                elif trial.status == TrialStatus.IDLE:
                    if not getattr(self.oracle, "paces_idle", False):  # a worker's client waits itself
                        time.sleep(IDLE_WAIT_S)
                else:
                    yield from self.groups(trial)

    def _draw(self, first):
        """(first and the trials drawn to share its step, the first drawn that does not fit or None)."""
        group = [first]
        key = pack_key(self.space, first.hyperparameters, self.max_epochs)
        busy = {first.trial_id}
        for tuner_id in self._extra_ids():
            if len(group) >= self.policy.slots_for(first.hyperparameters) or tuner_id in self.stopped:
                break
            trial = self.oracle.create_trial(tuner_id)
            if tuner_id not in self.used:
                self.used.append(tuner_id)
            if trial.status == TrialStatus.STOPPED:
                self.stopped.add(tuner_id)
                break
            if trial.status == TrialStatus.IDLE:
                break  # nothing to add now: the group goes as it is
            if trial.trial_id in busy:
                continue  # this id holds a trial of the group already (one that did not fit before)
            busy.add(trial.trial_id)
            if pack_key(self.space, trial.hyperparameters, self.max_epochs) != key:
                return group, trial
            group.append(trial)
        return group, None

    def _extra_ids(self):
        slot = 1
        while True:
            yield f"{self.tuner_id}~{slot}"
            slot += 1
