"""The search space from the command line: target sets, swept dimensions, HParams domains, the table."""

import itertools

import keras_tuner
import pytest
from test_tune_errors import load_tune

from lora_keras.results.table import results_table
from tuners.hparams import experiment_hparams
from tuners.search_space import SearchSpace
from tuners.strategies import STRATEGIES
from tuners.strategies.grid import grid_values

SWEPT = SearchSpace(
    ranks=(1, 4), batch_sizes=(8,), learning_rates=(1e-3, 3e-3), lora_alphas=(4, 16),
    target_sets=(("q", "v"), ("q", "k", "v", "o")), lora_dropouts=(0.0, 0.1),
)


def test_targets_name_one_set_or_several():
    target_sets = load_tune().target_sets
    assert target_sets(["q", "v"]) == (("q", "v"),)  # the contract: `--targets q v` is one set
    assert target_sets(["q,v", "q,k,v,o"]) == (("q", "v"), ("q", "k", "v", "o"))
    assert target_sets(["q,", "v,"]) == (("q",), ("v",))
    assert target_sets(["q,v", "v,q", "q,q,v"]) == (("q", "v"),)  # one set, however written
    assert target_sets([","]) is None and target_sets(["q,v", ","]) is None


def test_help_lists_every_registered_strategy(capsys):
    with pytest.raises(SystemExit) as stop:
        load_tune().main(["--help"])
    assert stop.value.code == 0
    text = " ".join(capsys.readouterr().out.split())
    assert "--strategy STRATEGY search strategy: " + ", ".join(sorted(STRATEGIES)) in text


def test_grid_covers_the_product_of_every_swept_value():
    hp = keras_tuner.HyperParameters()
    SWEPT.declare(hp)
    combos = grid_values(hp)
    assert len(combos) == 2 * 1 * 2 * 2 * 2 * 2
    assert {(c["lora_alpha"], c["targets"], c["lora_dropout"]) for c in combos} == set(
        itertools.product((4.0, 16.0), ("q,v", "q,k,v,o"), (0.0, 0.1))
    )
    hp.values = combos[-1]
    assert SWEPT.trial_values(hp) == {"rank": 4, "batch_size": 8, "learning_rate": 3e-3, "lora_alpha": 16.0,
                                      "targets": "q,k,v,o", "lora_dropout": 0.1, "seed": 0}


def test_single_values_are_settings_not_dimensions():
    space = SearchSpace(ranks=(2, 8), batch_sizes=(16,), lora_alphas=(32,), target_sets=(("k", "o"),),
                        lora_dropouts=(0.05,))
    hp = keras_tuner.HyperParameters()
    space.declare(hp)
    assert [p.name for p in hp.space] == ["rank", "batch_size", "learning_rate"]
    hp.values = {"rank": 8, "batch_size": 16, "learning_rate": 3e-3}
    assert SearchSpace().trial_values(hp)["lora_alpha"] == 8.0  # no alpha given: alpha = rank
    assert space.trial_values(hp) == {"rank": 8, "batch_size": 16, "learning_rate": 3e-3, "lora_alpha": 32.0,
                                      "targets": "k,o", "lora_dropout": 0.05, "seed": 0}


def test_hparams_domains_hold_every_swept_value():
    domains = {hparam.name: hparam.domain for hparam in experiment_hparams(SWEPT, max_epochs=3)}
    assert domains["rank"].values == [1, 4] and domains["learning_rate"].values == [1e-3, 3e-3]
    assert domains["lora_alpha"].values == [4.0, 16.0]
    assert domains["targets"].values == ["q,k,v,o", "q,v"]  # tensorboard sorts a discrete domain
    assert domains["lora_dropout"].values == [0.0, 0.1]
    assert (domains["epochs"].min_value, domains["epochs"].max_value) == (1, 3)
    default = {hparam.name: hparam.domain for hparam in experiment_hparams(SearchSpace(), max_epochs=2)}
    assert default["lora_alpha"].values == [1.0, 4.0, 16.0]  # alpha = rank


def test_table_shows_the_hyperparameters_that_differ():
    row = {"rank": 4, "batch_size": 8, "learning_rate": 3e-3, "lora_alpha": 4.0, "targets": "q,v",
           "lora_dropout": 0.0, "epochs": 2, "status": "COMPLETED"}
    header = results_table([row, {**row, "rank": 16, "lora_alpha": 16.0}]).splitlines()[0]
    assert header.startswith("| rank | batch size | time (s) |")  # alpha = rank is no sweep
    swept = [row, {**row, "targets": "q,k,v,o", "lora_dropout": 0.1, "epochs": 1, "lora_alpha": 8.0}]
    header = results_table(swept).splitlines()[0]
    assert header.startswith("| rank | batch size | alpha | targets | dropout | epochs | time (s) |")
