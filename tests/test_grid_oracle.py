"""The resumable grid: every combination once, in order, across a reload."""

import itertools

import keras_tuner
from keras_tuner.engine.trial import TrialStatus

from tuners.strategies.grid import GridOracle, grid_values
from tuners.strategies import STRATEGIES, make_oracle


def space():
    hp = keras_tuner.HyperParameters()
    hp.Choice("rank", [1, 4, 16], ordered=True)
    hp.Choice("batch_size", [8, 64], ordered=True)
    hp.Choice("learning_rate", [0.003], ordered=True)
    return hp


def new_oracle(directory):
    oracle = make_oracle("grid", keras_tuner.Objective("val_loss", "min"), 6, space(), seed=0)
    oracle._set_project_dir(str(directory), "tuner")  # what a Tuner does
    return oracle


def finish(oracle, trial, loss=1.0):
    oracle.update_trial(trial.trial_id, {"val_loss": loss})
    trial.status = TrialStatus.COMPLETED
    oracle.end_trial(trial)


def combo(trial):
    return (trial.hyperparameters.get("rank"), trial.hyperparameters.get("batch_size"))


def test_grid_values_in_declaration_order():
    values = grid_values(space())
    assert [(v["rank"], v["batch_size"]) for v in values] == list(itertools.product([1, 4, 16], [8, 64]))


PACKABLE_ORDER = [(rank, batch) for batch in (8, 64) for rank in (1, 4, 16)]


def test_every_combination_once_then_stop(tmp_path):
    oracle = new_oracle(tmp_path)
    seen = []
    while True:
        trial = oracle.create_trial("tuner0")
        if trial.status == TrialStatus.STOPPED:
            break
        seen.append(combo(trial))
        finish(oracle, trial)
    assert seen == PACKABLE_ORDER  # the ranks of a batch size one after another, to train together


def test_resume_reruns_the_interrupted_trial_only(tmp_path):
    oracle = new_oracle(tmp_path)
    for _ in range(2):
        finish(oracle, oracle.create_trial("tuner0"))
    interrupted = oracle.create_trial("tuner0")  # killed while running
    oracle.save()

    resumed = new_oracle(tmp_path)
    resumed.reload()
    runs = []
    while True:
        trial = resumed.create_trial("tuner0")
        if trial.status == TrialStatus.STOPPED:
            break
        runs.append(combo(trial))
        finish(resumed, trial)
    assert runs[0] == combo(interrupted)
    assert sorted(runs) == sorted(PACKABLE_ORDER[2:])
    assert len(resumed.trials) == 6


def test_registry_has_the_builtin_strategies():
    assert {"grid", "random", "bayesian", "hyperband", "cost_aware"} <= set(STRATEGIES)
    assert STRATEGIES["grid"] is GridOracle
    assert isinstance(make_oracle("grid", None, 1, space(), 0), GridOracle)
