"""The packing scheduler draws a trial's companions from the oracle and tells its extra tuner ids when it is over."""

import keras_tuner
from keras_tuner.engine.trial import TrialStatus

from tuners import packing
from tuners.packing import FASTEST, Packing, PackScheduler, policy_for
from tuners.search_space import SearchSpace
from tuners.strategies.grid import GridOracle
from tuners.sweep_config import SweepConfig


def grid(tmp_path, space):
    hp = keras_tuner.HyperParameters()
    space.declare(hp)
    oracle = GridOracle(objective="val_loss", hyperparameters=hp, max_trials=100, fastest=FASTEST)
    oracle._set_project_dir(str(tmp_path), "p")  # what a tuner does for its oracle
    return oracle


def values(group):
    return [(t.hyperparameters.get("rank"), t.hyperparameters.get("batch_size")) for t in group]


def end(oracle, group):
    for trial in group:
        oracle.update_trial(trial.trial_id, {"val_loss": 1.0})
        trial.status = TrialStatus.COMPLETED
        oracle.end_trial(trial)


def test_companions_share_the_step_and_a_misfit_starts_the_next_group(tmp_path):
    space = SearchSpace(ranks=(1, 4), batch_sizes=(8, 16), learning_rates=(3e-3,))
    oracle = grid(tmp_path, space)
    scheduler = PackScheduler(oracle, "t", Packing(3), space, max_epochs=1)
    groups = []
    for group in scheduler.groups(oracle.create_trial("t")):  # keras-tuner's own draw, then the scheduler's
        groups.append(values(group))
        end(oracle, group)
    # (1, 16) was drawn for the first group, did not fit it, and led the second.
    assert groups == [[(1, 8), (4, 8)], [(1, 16), (4, 16)]]
    assert list(scheduler.release()) == []  # nothing left to run
    assert set(scheduler.used) == scheduler.stopped  # every extra id was told the search is over
    assert oracle.tuner_ids == {"t"}  # only keras-tuner's own id, which its loop tells


def test_the_row_limit_and_the_policy(tmp_path, monkeypatch):
    space = SearchSpace(ranks=(1, 4, 16), batch_sizes=(8, 64), learning_rates=(3e-3,))
    oracle = grid(tmp_path, space)
    scheduler = PackScheduler(oracle, "t", Packing(3, max_rows=96), space, max_epochs=1)
    first = [values(g) for g in scheduler.groups(oracle.create_trial("t"))]
    assert first == [[(1, 8), (4, 8), (16, 8)]]
    assert policy_for(SweepConfig(space=space), jit_compile=False, devices=None) == Packing(3, 96)
    assert policy_for(SweepConfig(space=space, pack=2), jit_compile=False, devices=None) == Packing(2)
    assert policy_for(SweepConfig(space=space, strategy="random"), jit_compile=False, devices=None) == Packing(1)
    assert policy_for(SweepConfig(space=space, precision="mixed_bfloat16"), False, None) == Packing(1)
    assert policy_for(SweepConfig(space=space), jit_compile=True, devices=None) == Packing(1)
    # Under XLA: never on TensorFlow (its traced steps read the slot count from a variable); on JAX
    # (a number in the traced step) when asked for, not by default.
    assert policy_for(SweepConfig(space=space, pack=2), jit_compile=True, devices=None) == Packing(1)
    monkeypatch.setattr(packing, "static_shapes", lambda: True)
    assert policy_for(SweepConfig(space=space, pack=2), jit_compile=True, devices=None) == Packing(2)
    assert policy_for(SweepConfig(space=space), jit_compile=True, devices=None) == Packing(1)
    assert policy_for(SweepConfig(space=space), jit_compile=False, devices=object()) == Packing(1)
