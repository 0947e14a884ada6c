"""Strategies as plug-ins: the registry, Hyperband over epochs, the cost-aware oracle, seeded order.

The oracles are driven directly with made-up trial results (no training). Two
tiny real runs check what only training shows: a Hyperband trial continuing its
parent's adapter, and a cost-aware sweep from the command line over alpha,
targets and dropout, with the metrics the oracle reads.
"""

import functools
import json
import math

import keras_tuner
import pytest
from conftest import TINY_PREFIX, require
from keras_tuner.engine.trial import Trial, TrialStatus
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from tensorboard.plugins.hparams import plugin_data_pb2
from test_tune_errors import load_tune

import tuners.sweep_tuner
from lora_keras.corpus import read_pairs
from lora_keras.data import tokenize_pairs
from lora_keras.errors import InputError
from lora_keras.lora import LoraConfig, lora_parameter_count, read_adapter
from lora_keras.models import load_preset
from lora_keras.report import read_results_csv
from tuners.hypermodel import LoraT5HyperModel, SearchSpace
from tuners.strategies import STRATEGIES, make_oracle, register
from tuners.strategies.cost_aware import CostAwareOracle
from tuners.strategies.hyperband import EpochHyperbandOracle
from tuners.sweep_tuner import LoraSweepTuner, ValidationTexts

RANKS, BATCH_SIZES = (1, 2, 4, 8, 16), (8, 16, 32, 64)
BASELINE = 3.0


def space(ranks=RANKS, batch_sizes=BATCH_SIZES):
    hp = keras_tuner.HyperParameters()
    hp.Choice("rank", list(ranks), ordered=True)
    hp.Choice("batch_size", list(batch_sizes), ordered=True)
    hp.Choice("learning_rate", [0.003], ordered=True)
    return hp


def new_oracle(name, directory, max_trials, hp=None, seed=0, **kwargs):
    oracle = make_oracle(name, keras_tuner.Objective("val_loss", "min"), max_trials, hp or space(), seed, **kwargs)
    oracle.verbose = 0
    oracle._set_project_dir(str(directory), "tuner")  # what a Tuner does
    return oracle


# Made-up measurements: loss falls with log(rank), rises a little with batch size;
# time grows as sqrt(rank) and falls with batch size. Both are exactly what the
# cost-aware oracle fits (linear / log-linear in log values).
def val_loss(rank, batch):
    return 2.5 - 0.15 * math.log2(rank) + 0.05 * math.log2(batch / 8)


def seconds(rank, batch):
    return 10 * rank**0.5 * (64 / batch) ** 0.8


def efficiency(combo):
    return (BASELINE - val_loss(*combo)) / seconds(*combo)


def combo(trial):
    return trial.hyperparameters.get("rank"), trial.hyperparameters.get("batch_size")


def finish(oracle, trial, metrics):
    oracle.update_trial(trial.trial_id, metrics)
    trial.status = TrialStatus.COMPLETED
    oracle.end_trial(trial)


def time_metrics(trial):
    rank, batch = combo(trial)
    return {"val_loss": val_loss(rank, batch), "training_time_s": seconds(rank, batch),
            "baseline_val_loss": BASELINE}


def run(oracle, metrics=time_metrics, stop_after=None):
    """Create and finish trials until the oracle stops (or `stop_after` trials); their combos."""
    seen = []
    while stop_after is None or len(seen) < stop_after:
        trial = oracle.create_trial("tuner0")
        if trial.status == TrialStatus.STOPPED:
            break
        seen.append(combo(trial))
        finish(oracle, trial, metrics(trial))
    return seen


def test_every_builtin_strategy_is_one_registered_oracle_class():
    for name, cls in (("grid", None), ("random", keras_tuner.oracles.RandomSearchOracle),
                      ("bayesian", keras_tuner.oracles.BayesianOptimizationOracle),
                      ("hyperband", EpochHyperbandOracle), ("cost_aware", CostAwareOracle)):
        assert issubclass(STRATEGIES[name], keras_tuner.Oracle)
        assert cls is None or STRATEGIES[name] is cls


@pytest.mark.parametrize("name", ["random", "bayesian", "cost_aware"])
def test_seed_zero_gives_the_same_order_every_time(tmp_path, name):
    if name == "bayesian":
        require("sklearn")  # keras-tuner's Gaussian process needs scipy and scikit-learn
    # keras-tuner alone would draw a random seed for seed 0 (`seed or randint`).
    orders = [run(new_oracle(name, tmp_path / str(i), 5)) for i in range(2)]
    assert orders[0] == orders[1] and len(set(orders[0])) == 5


@pytest.mark.parametrize("seed", [0, 1])
def test_cost_aware_spends_the_budget_where_loss_falls_fastest_per_second(tmp_path, seed):
    oracle = new_oracle("cost_aware", tmp_path, 8, seed=seed)
    seen = run(oracle)
    assert len(seen) == 8 == len(set(seen))  # the whole budget, no combination twice
    probes = oracle.probe_count(len(RANKS) * len(BATCH_SIZES))
    assert probes == 3
    # After the probes, each trial is the most efficient combination not yet tried.
    by_efficiency = sorted(((r, b) for r in RANKS for b in BATCH_SIZES), key=efficiency, reverse=True)
    assert seen[probes:] == [c for c in by_efficiency if c not in seen[:probes]][: 8 - probes]
    assert max(by_efficiency, key=efficiency) in seen
    # A grid of the same budget spends it on rank 1 and 2 at every batch size, cheap or not.
    assert sum(map(efficiency, seen)) > 1.5 * sum(map(efficiency, by_efficiency[::-1][:8]))


def test_cost_aware_resumes_with_the_same_choices(tmp_path):
    straight = run(new_oracle("cost_aware", tmp_path / "straight", 7))
    first = new_oracle("cost_aware", tmp_path / "killed", 7)
    before = run(first, stop_after=4)
    interrupted = first.create_trial("tuner0")  # killed while this trial ran
    first.save()
    resumed = new_oracle("cost_aware", tmp_path / "killed", 7)
    resumed.reload()
    after = run(resumed)
    assert after[0] == combo(interrupted)
    assert before + after == straight


def test_cost_per_mebibyte_is_one_registration_away(tmp_path):
    name = "cost_aware_memory_test"
    register(name, functools.partial(CostAwareOracle, cost_metric="peak_memory_mb"))
    try:
        # Loss falls with rank alone, memory grows with batch size alone; no baseline is
        # reported, so gain is counted from the worst trial so far.
        def memory_metrics(trial):
            rank, batch = combo(trial)
            return {"val_loss": 2.5 - 0.15 * math.log2(rank), "peak_memory_mb": 100.0 * batch}

        oracle = new_oracle(name, tmp_path, 6, seed=3)
        seen = run(oracle, memory_metrics)
    finally:
        del STRATEGIES[name]
    assert oracle.cost_metric == "peak_memory_mb" and len(set(seen)) == 6
    probes = oracle.probe_count(len(RANKS) * len(BATCH_SIZES))
    # Most gain per MiB: the highest ranks at the smallest batch, then the runners-up.
    assert seen[probes:probes + 2] == [(16, 8), (8, 8)]
    assert set(seen[probes:]) <= {(16, 8), (8, 8), (4, 8), (16, 16), (8, 16)}


def hyperband_trials(oracle, losses):
    """Run a Hyperband oracle to its end; `(combo, epochs, initial_epoch, parent)` per trial."""
    trials = []
    while True:
        trial = oracle.create_trial("tuner0")
        if trial.status == TrialStatus.STOPPED:
            return trials
        values = trial.hyperparameters.values
        trials.append((combo(trial), values["tuner/epochs"], values["tuner/initial_epoch"],
                       values.get("tuner/trial_id"), trial.trial_id))
        finish(oracle, trial, {"val_loss": losses[combo(trial)] - 0.1 * values["tuner/epochs"]})


def test_hyperband_budgets_in_epochs_and_continues_the_best(tmp_path):
    hp = space(ranks=(1, 2), batch_sizes=(8, 16))
    losses = {(1, 8): 2.0, (1, 16): 2.2, (2, 8): 1.9, (2, 16): 2.1}
    trials = hyperband_trials(new_oracle("hyperband", tmp_path, None, hp, max_epochs=2), losses)
    # Factor 2 over 2 epochs: two 1-epoch trials, the better continued from epoch 1 to 2,
    # then the two untried combinations at 2 epochs.
    assert [t[1:3] for t in trials] == [(1, 0), (1, 0), (2, 1), (2, 0), (2, 0)]
    first, second = trials[0], trials[1]
    better = first if losses[first[0]] < losses[second[0]] else second
    assert trials[2][0] == better[0] and trials[2][3] == better[4]  # tuner/trial_id: the parent
    first, second = first[0], second[0]
    assert sorted(t[0] for t in trials[3:]) == sorted(set(losses) - {first, second})
    capped = hyperband_trials(new_oracle("hyperband", tmp_path / "capped", 3, hp, max_epochs=2), losses)
    assert len(capped) == 3


def test_hyperband_needs_two_epochs_or_more():
    with pytest.raises(InputError, match="pass --epochs 2 or more"):
        make_oracle("hyperband", "val_loss", None, space(), 0, max_epochs=1)


# --- Two tiny real runs. Each trial runs eagerly: tracing the train step cost about a
# minute per trial on the 2 shared cores, and the sweeps check wiring, not graph speed.


@pytest.fixture
def eager_trials(monkeypatch):
    build = LoraT5HyperModel.build

    def eager_build(self, hp):
        model = build(self, hp)
        model.run_eagerly = True
        return model

    monkeypatch.setattr(LoraT5HyperModel, "build", eager_build)


def trial_metrics(run_dir, trial_id):
    state = json.loads((run_dir / "tuner" / f"trial_{trial_id}" / "trial.json").read_text())
    return {name: history["observations"][-1]["value"][0] for name, history in state["metrics"]["metrics"].items()}


def test_hyperband_trial_trains_on_from_its_parent_adapter(tiny_preset, tiny_corpus, tmp_path, monkeypatch,
                                                         eager_trials):
    loaded, load_adapter = [], tuners.sweep_tuner.load_adapter

    def recording_load_adapter(backbone, path):
        loaded.append(path)
        return load_adapter(backbone, path)

    monkeypatch.setattr(tuners.sweep_tuner, "load_adapter", recording_load_adapter)
    base = load_preset(tiny_preset)
    train, val = (read_pairs(path, "corpus")[:n] for path, n in zip(tiny_corpus, (16, 4)))
    tokens = [tokenize_pairs(base.tokenizer, pairs, TINY_PREFIX, max_target_length=12) for pairs in (train, val)]
    texts = ValidationTexts([TINY_PREFIX + s for s, _ in val], [t for _, t in val], max_target_length=12)
    space = SearchSpace(ranks=(1,), batch_sizes=(8,))
    hp = keras_tuner.HyperParameters()
    space.declare(hp)
    oracle = make_oracle("hyperband", keras_tuner.Objective("val_loss", "min"), None, hp, 0, max_epochs=2)
    tuner = LoraSweepTuner(LoraT5HyperModel(base, space, epochs=2), oracle, tmp_path, verbose=0, baseline_val_loss=9.0)

    def hyperband_trial(trial_id, budget):  # as HyperbandOracle.populate_space writes them
        trial_hp = hp.copy()
        trial_hp.values = {**hp.values, **{f"tuner/{name}": value for name, value in budget.items()}}
        return Trial(trial_hp, trial_id=trial_id)

    tuner.run_trial(hyperband_trial("0", {"epochs": 1, "initial_epoch": 0, "bracket": 1, "round": 0}), *tokens, texts)
    child_budget = {"epochs": 2, "initial_epoch": 1, "bracket": 1, "round": 1, "trial_id": "0"}
    metrics = tuner.run_trial(hyperband_trial("1", child_budget), *tokens, texts)
    assert loaded == [tmp_path / "adapters" / "trial_0.safetensors"]  # the child starts from its parent
    parent, child = (json.loads(tuner.measurements_path(i).read_text()) for i in ("0", "1"))
    assert (parent["epochs"], parent["initial_epoch"], parent["parent_trial_id"]) == (1, 0, None)
    assert (child["epochs"], child["initial_epoch"], child["parent_trial_id"]) == (2, 1, "0")
    assert len(child["epoch_times_s"]) == 1  # one more epoch, not two
    # What a strategy reads: time, memory and the baseline next to the objective.
    reported = ("val_loss", "final_loss", "training_time_s", "peak_memory_mb")
    assert metrics == {**{name: child[name] for name in reported}, "baseline_val_loss": 9.0}
    start = hparams_data(tmp_path / "tensorboard" / "trial_1", "_hparams_/session_start_info")
    assert start.session_start_info.hparams["epochs"].number_value == 2
    assert "tuner/epochs" not in start.session_start_info.hparams
    accumulator = EventAccumulator(str(tmp_path / "tensorboard" / "trial_1"), size_guidance={"tensors": 0})
    accumulator.Reload()
    assert [event.step for event in accumulator.Tensors("val_loss")] == [1]  # epoch 2, counted from 0


def hparams_data(path, tag):
    accumulator = EventAccumulator(str(path))
    accumulator.Reload()
    return plugin_data_pb2.HParamsPluginData.FromString(accumulator.PluginTagToContent("hparams")[tag])


def test_cost_aware_cli_sweep_over_alpha_targets_and_dropout(tiny_preset, tiny_corpus, tmp_path, eager_trials):
    train, val = tiny_corpus
    load_tune().main([str(a) for a in (
        "--model", tiny_preset, "--train", train, "--val", val, "--source-lang", "English", "--target-lang",
        "Dravic", "--ranks", 2, "--batch-sizes", 16, "--lora-alpha", 2, 8, "--targets", "q,v", "q,",
        "--lora-dropouts", 0, 0.1, "--strategy", "cost_aware", "--max-trials", 2, "--epochs", 1,
        "--max-train-examples", 16, "--max-val-examples", 4, "--max-target-length", 12,
        "--logdir", tmp_path, "--name", "ca", "--quiet",
    )])
    run_dir = tmp_path / "ca"
    rows = read_results_csv(run_dir / "results.csv")
    assert len(rows) == 2 and all(row["status"] == "COMPLETED" for row in rows)
    backbone = load_preset(tiny_preset).build_backbone()
    for row in rows:
        targets, alpha, dropout = tuple(row["targets"].split(",")), float(row["lora_alpha"]), float(row["lora_dropout"])
        assert targets in {("q", "v"), ("q",)} and alpha in {2.0, 8.0} and dropout in {0.0, 0.1}
        assert int(row["trainable_params"]) == lora_parameter_count(backbone, LoraConfig(2, targets=targets))
        config, _ = read_adapter(run_dir / "adapters" / f"trial_{row['trial_id']}.safetensors")
        assert config == LoraConfig(2, alpha, targets, dropout)
        start = hparams_data(run_dir / "tensorboard" / f"trial_{row['trial_id']}", "_hparams_/session_start_info")
        hparams = start.session_start_info.hparams
        assert hparams["targets"].string_value == row["targets"]
        assert hparams["lora_dropout"].number_value == pytest.approx(dropout)
        assert hparams["lora_alpha"].number_value == alpha
    space = json.loads((run_dir / "run_config.json").read_text())["space"]
    assert space["lora_alphas"] == [2.0, 8.0] and space["target_sets"] == [["q", "v"], ["q"]]
    assert space["lora_dropouts"] == [0.0, 0.1]
    # The cost-aware oracle read each trial's time and the baseline next to its val loss.
    baseline = json.loads((run_dir / "baseline.json").read_text())["val_loss"]
    for row in rows:
        metrics = trial_metrics(run_dir, row["trial_id"])
        assert metrics["baseline_val_loss"] == pytest.approx(baseline)
        assert metrics["training_time_s"] == pytest.approx(float(row["training_time_s"]))
        assert metrics["val_loss"] == pytest.approx(float(row["val_loss"]))
