"""The resumable grid: every combination once, in order, across a reload."""

import itertools

import keras_tuner
from keras_tuner.engine.trial import TrialStatus

from tuners.packing import FASTEST
from tuners.strategies import STRATEGIES, make_oracle
from tuners.strategies.grid import GridOracle, grid_values, ordered_grid


def space():
    hp = keras_tuner.HyperParameters()
    hp.Choice("rank", [1, 4, 16], ordered=True)
    hp.Choice("batch_size", [8, 64], ordered=True)
    hp.Choice("learning_rate", [0.003], ordered=True)
    return hp


def new_oracle(directory, fastest=FASTEST):
    oracle = make_oracle("grid", keras_tuner.Objective("val_loss", "min"), 6, space(), seed=0, fastest=fastest)
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


DECLARED_ORDER = list(itertools.product([1, 4, 16], [8, 64]))  # the last name declared varies fastest
PACKABLE_ORDER = [(rank, batch) for batch in (8, 64) for rank in (1, 4, 16)]  # rank fastest


def test_ordered_grid_varies_the_given_names_fastest():
    assert [(v["rank"], v["batch_size"]) for v in ordered_grid(space())] == DECLARED_ORDER
    assert [(v["rank"], v["batch_size"]) for v in ordered_grid(space(), FASTEST)] == PACKABLE_ORDER
    # Several fastest names keep their declaration order among themselves; the others stay slowest.
    hp = space()
    hp.Choice("lora_alpha", [2.0, 8.0], ordered=True)
    order = [(v["rank"], v["batch_size"], v["lora_alpha"]) for v in ordered_grid(hp, FASTEST)]
    assert order == [(r, b, a) for b in (8, 64) for r in (1, 4, 16) for a in (2.0, 8.0)]
    assert sorted(order) == sorted((v["rank"], v["batch_size"], v["lora_alpha"]) for v in grid_values(hp))


def run_to_the_end(oracle):
    seen = []
    while True:
        trial = oracle.create_trial("tuner0")
        if trial.status == TrialStatus.STOPPED:
            return seen
        seen.append(combo(trial))
        finish(oracle, trial)


def test_every_combination_once_then_stop(tmp_path):
    # As a sweep asks for it (tuners.prepare.make_sweep_oracle): the ranks of a batch size one after
    # another, to train together.
    assert run_to_the_end(new_oracle(tmp_path / "sweep")) == PACKABLE_ORDER


def test_the_grid_s_own_order_is_declaration_order(tmp_path):
    assert run_to_the_end(new_oracle(tmp_path / "made", fastest=())) == DECLARED_ORDER
    oracle = GridOracle(objective=keras_tuner.Objective("val_loss", "min"), hyperparameters=space(), max_trials=6)
    oracle._set_project_dir(str(tmp_path / "plain"), "tuner")
    assert oracle.fastest == () and run_to_the_end(oracle) == DECLARED_ORDER


def test_a_sweep_s_grid_varies_rank_alpha_and_seed_fastest():
    from tuners.prepare import make_sweep_oracle
    from tuners.search_space import SearchSpace
    from tuners.sweep_config import SweepConfig

    oracle = make_sweep_oracle(SweepConfig(space=SearchSpace(ranks=(1, 4), batch_sizes=(8, 16))))
    assert isinstance(oracle, GridOracle) and oracle.fastest == FASTEST == ("rank", "lora_alpha", "seed")
    # --repeats 2 from --seed 5: a configuration's seeds come in a row, each batch size's trials together.
    oracle = make_sweep_oracle(SweepConfig(space=SearchSpace(ranks=(1, 4), batch_sizes=(8, 16)), seed=5, repeats=2))
    order = [(v["batch_size"], v["rank"], v["seed"]) for v in ordered_grid(oracle.hyperparameters, oracle.fastest)]
    assert order == [(8, 1, 5), (8, 1, 6), (8, 4, 5), (8, 4, 6), (16, 1, 5), (16, 1, 6), (16, 4, 5), (16, 4, 6)]


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
