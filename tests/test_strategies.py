"""Strategies as plug-ins: the registry, Hyperband over epochs, the cost-aware oracle, seeded order.

The oracles are driven directly with made-up trial results (no training). Tiny
real runs check what only training shows: a cost-aware sweep from the command line
over alpha, targets and dropout, with the metrics the oracle reads; and a Hyperband
sweep from the command line, killed with -9 during a continued trial and resumed,
whose continued trial starts from its parent's saved adapter, and whose adapter
translate.py and export.py take.
"""

import dataclasses
import functools
import importlib.util
import json
import math
import pathlib
import signal
import subprocess
import sys
import time

import keras
import keras_hub
import keras_tuner
import numpy as np
import pytest
from conftest import ROOT, TINY_PREFIX, require
from keras_tuner.engine.trial import TrialStatus
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from tensorboard.plugins.hparams import plugin_data_pb2
from test_tune_errors import load_tune

from lora_keras.errors import InputError
from lora_keras import evaluation
from lora_keras.evaluation import translate
from lora_keras.adapters import LoraConfig, adapter_weights, lora_parameter_count, read_adapter, target_layers
from lora_keras.models.sources import load_preset
from lora_keras.results.table import read_results_csv
from tuners.hypermodel import LoraT5HyperModel
from tuners.strategies import STRATEGIES, make_oracle, register
from tuners.strategies.cost_aware import CostAwareOracle
from tuners.strategies.hyperband import EpochHyperbandOracle
from tuners.trial_files import TrialFiles

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
    with pytest.raises(InputError, match="max_epochs=1: .* needs max_epochs of 2 or more"):
        make_oracle("hyperband", "val_loss", None, space(), 0, max_epochs=1)


# --- Tiny real runs. Each trial runs eagerly: tracing the train step cost about a
# minute per trial on the 2 shared cores, and the sweeps check wiring, not graph speed.


def run_trials_eagerly(monkeypatch):
    """Every model a hypermodel builds (`model_for`, which `build` calls) runs eagerly."""
    monkeypatch.setattr(LoraT5HyperModel, "model_for", _eager(LoraT5HyperModel.model_for))


def _eager(make_model):
    """`make_model` (a hypermodel's model factory) whose models run eagerly."""

    def eager(self, *args):
        model = make_model(self, *args)
        model.run_eagerly = True
        return model

    return eager


@pytest.fixture
def eager_trials(monkeypatch):
    run_trials_eagerly(monkeypatch)


def trial_metrics(run_dir, trial_id):
    state = json.loads((run_dir / "tuner" / f"trial_{trial_id}" / "trial.json").read_text())
    return {name: history["observations"][-1]["value"][0] for name, history in state["metrics"]["metrics"].items()}


def hparams_data(path, tag):
    accumulator = EventAccumulator(str(path))
    accumulator.Reload()
    return plugin_data_pb2.HParamsPluginData.FromString(accumulator.PluginTagToContent("hparams")[tag])


@pytest.mark.e2e  # a 33 s CLI sweep: in CI's second tier, keeping the default run under 8 minutes
def test_cost_aware_cli_sweep_over_alpha_targets_and_dropout(tiny_preset, tiny_corpus, tmp_path, eager_trials):
    train, val = tiny_corpus
    load_tune().main([str(a) for a in (
        "--model", tiny_preset, "--train", train, "--val", val, "--source-lang", "English", "--target-lang",
        "Dravic", "--ranks", 2, "--batch-sizes", 16, "--lora-alpha", 2, 8, "--targets", "q,v", "q,",
        "--lora-dropouts", 0, 0.1, "--strategy", "cost_aware", "--max-trials", 2, "--epochs", 1,
        "--max-train-examples", 16, "--max-val-examples", 4, "--max-target-length", 16,  # 16: the generate other CLI sweeps compile
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


# --- Hyperband from the command line: one run, shared by the tests below. It starts in a
# subprocess, is killed with -9 once its first continued (child) trial has started, and is
# resumed in this process, which records each trial's adapter as its training begins. Only the
# learning rate varies, so one LoRA config (one model) serves every trial.

HYPERBAND_LEARNING_RATES = (1e-3, 3e-3, 1e-2, 3e-2)
# `python -c EAGER_TUNE scripts/tune.py ARGS`: tune.py as its own `__main__`, its trials run eagerly
# as in `eager_trials` (tracing the train step took 20 of the 60 s this process ran before the kill).
EAGER_TUNE = """
import runpy, sys
from tuners.hypermodel import LoraT5HyperModel
model_for = LoraT5HyperModel.model_for
def eager_model_for(self, config):
    model = model_for(self, config)
    model.run_eagerly = True
    return model
LoraT5HyperModel.model_for = eager_model_for
sys.argv = sys.argv[1:]
runpy.run_path(sys.argv[0], run_name="__main__")
"""
TRANSLATE_LINES = [TINY_PREFIX + "the dog runs .", TINY_PREFIX + "my sister will buy seven old books ."]


def load_script(name):
    """`scripts/<name>.py` as a module, to call its `main(argv)` in this process."""
    spec = importlib.util.spec_from_file_location(f"{name}_script", ROOT / "scripts" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def running_child(run_dir):
    """`(id, events files)` of the first trial that continues a parent (Hyperband's `tuner/trial_id`)
    once its training has begun (its TensorBoard session is written), else None."""
    for path in sorted((run_dir / "tuner").glob("trial_*/trial.json")):
        try:
            state = json.loads(path.read_text())
        except (OSError, ValueError):  # being written
            continue
        if state["hyperparameters"]["values"].get("tuner/trial_id") is not None:
            # A running trial writes its session in its attempt's directory (tuners.trial_files).
            session = TrialFiles(run_dir, state["trial_id"]).staged_session
            events = sorted(path.name for path in session.glob("events.out.tfevents*"))
            return (state["trial_id"], events) if events else None
    return None


@dataclasses.dataclass
class HyperbandRun:
    run_dir: pathlib.Path
    child: str  # the trial running when the first process was killed
    killed_events: list  # its TensorBoard events files' names then
    rows_at_kill: list
    starts: list  # per trial the resumed process ran: (hyperparameter values, adapter weights at its first step)


@pytest.fixture(scope="module")
def hyperband_run(tiny_preset, tiny_corpus, tmp_path_factory):
    logdir = tmp_path_factory.mktemp("hyperband")
    train, val = tiny_corpus
    args = [str(a) for a in (
        "--model", tiny_preset, "--train", train, "--val", val, "--source-lang", "English", "--target-lang", "Dravic",
        "--ranks", 2, "--batch-sizes", 8, "--learning-rates", *HYPERBAND_LEARNING_RATES,
        "--strategy", "hyperband", "--epochs", 2, "--max-train-examples", 16, "--max-val-examples", 4,
        "--max-target-length", 12, "--logdir", logdir, "--name", "hb", "--quiet",
    )]
    run_dir = logdir / "hb"
    with open(logdir / "killed.log", "w") as log:
        process = subprocess.Popen([sys.executable, "-c", EAGER_TUNE, str(ROOT / "scripts" / "tune.py"), *args],
                                   stdout=log, stderr=subprocess.STDOUT, cwd=ROOT)
    try:
        deadline = time.monotonic() + 300
        while (running := running_child(run_dir)) is None:
            assert process.poll() is None, (logdir / "killed.log").read_text()[-3000:]
            assert time.monotonic() < deadline, "no child trial training within 300 s"
            time.sleep(0.05)
        process.send_signal(signal.SIGKILL)
    finally:
        if process.poll() is None:
            process.kill()
        process.wait()
    child, killed_events = running
    rows_at_kill = read_results_csv(run_dir / "results.csv")

    starts = []

    class AdapterAtTrainBegin(keras.callbacks.Callback):
        def __init__(self, hp, slot):
            super().__init__()
            self.hp, self.slot = hp, slot

        def on_train_begin(self, logs=None):
            starts.append((dict(self.hp.values), adapter_weights(self.model.backbone, self.slot)))

    fit_group = LoraT5HyperModel.fit_group

    def recording_fit(self, hps, model, *fit_args, callbacks=None, **kwargs):
        recorders = [AdapterAtTrainBegin(hp, slot) for slot, hp in enumerate(hps)]
        return fit_group(self, hps, model, *fit_args, callbacks=[*(callbacks or []), *recorders], **kwargs)

    with pytest.MonkeyPatch.context() as patch:
        run_trials_eagerly(patch)
        patch.setattr(LoraT5HyperModel, "fit_group", recording_fit)
        load_tune().main(args)
    return HyperbandRun(run_dir, child, killed_events, rows_at_kill, starts)


@pytest.mark.e2e
def test_hyperband_from_the_cli_resumes_after_kill_9_and_runs_each_trial_once(hyperband_run):
    run_dir, child = hyperband_run.run_dir, hyperband_run.child
    # Killed while the child ran: the two 1-epoch trials were finished, the child was not.
    assert len(hyperband_run.rows_at_kill) == 2
    assert child not in {row["trial_id"] for row in hyperband_run.rows_at_kill}
    rows = {row["trial_id"]: row for row in read_results_csv(run_dir / "results.csv")}
    assert len(rows) == 5 and all(row["status"] == "COMPLETED" for row in rows.values())
    # Factor 2 over 2 epochs: two 1-epoch trials, the better continued to epoch 2, two new 2-epoch trials.
    schedule = [(row["epochs"], row["initial_epoch"], row["parent_trial_id"]) for _, row in sorted(rows.items())]
    first, second = sorted(rows)[:2]
    better = min((first, second), key=lambda trial_id: float(rows[trial_id]["val_loss"]))
    assert schedule == [("1", "0", ""), ("1", "0", ""), ("2", "1", better), ("2", "0", ""), ("2", "0", "")]
    assert child == sorted(rows)[2]
    assert len({row["learning_rate"] for row in rows.values()}) == 4  # four combinations, one continued
    # The resumed process ran the interrupted child again, then the two new trials: nothing twice.
    assert [values.get("tuner/trial_id") for values, _ in hyperband_run.starts] == [better, None, None]
    session = run_dir / "tensorboard" / f"trial_{child}"
    events = [path.name for path in session.glob("events.out.tfevents*")]
    assert events and not set(events) & set(hyperband_run.killed_events)  # the killed attempt's: dropped
    # The child trained one epoch more, logged as epoch 2, and reported what a strategy reads.
    measured = json.loads((run_dir / "tuner" / f"trial_{child}" / "measurements.json").read_text())
    assert (measured["epochs"], measured["initial_epoch"], measured["parent_trial_id"]) == (2, 1, better)
    assert len(measured["epoch_times_s"]) == 1
    baseline = json.loads((run_dir / "baseline.json").read_text())["val_loss"]
    reported = ("val_loss", "final_loss", "training_time_s", "peak_memory_mb")
    assert trial_metrics(run_dir, child) == pytest.approx(
        {**{name: measured[name] for name in reported}, "baseline_val_loss": baseline})
    start = hparams_data(session, "_hparams_/session_start_info")
    assert start.session_start_info.hparams["epochs"].number_value == 2
    assert "tuner/epochs" not in start.session_start_info.hparams
    accumulator = EventAccumulator(str(session), size_guidance={"tensors": 0})
    accumulator.Reload()
    assert [event.step for event in accumulator.Tensors("val_loss")] == [1]  # epoch 2, counted from 0
    assert len(accumulator.Tensors("_hparams_/session_start_info")) == 1  # one session: the resumed attempt's


@pytest.mark.e2e
def test_hyperband_child_starts_from_its_parent_s_saved_adapter(hyperband_run):
    (child_values, at_child_start), *fresh = hyperband_run.starts
    parent = child_values["tuner/trial_id"]
    _, saved = read_adapter(hyperband_run.run_dir / "adapters" / f"trial_{parent}.safetensors")
    assert at_child_start.keys() == saved.keys()
    for name, value in saved.items():
        np.testing.assert_array_equal(at_child_start[name], value, err_msg=name)
    # New trials start from the initialisation: B zero, A as drawn; the parent's trained A and B differ from it.
    assert len(fresh) == 2
    for _, weights in fresh:
        for name, value in weights.items():
            if name.endswith("lora_b"):
                assert not value.any(), name
            else:
                np.testing.assert_array_equal(value, fresh[0][1][name], err_msg=name)
    assert all(saved[name].any() for name in saved if name.endswith("lora_b"))
    assert any(not np.array_equal(saved[name], fresh[0][1][name]) for name in saved if name.endswith("lora_a"))


@pytest.mark.e2e
def test_translate_and_export_scripts_with_a_child_trial_s_adapter(hyperband_run, tiny_preset, capsys, tmp_path,
                                                                   monkeypatch):
    adapter = hyperband_run.run_dir / "adapters" / f"trial_{hyperband_run.child}.safetensors"
    config, weights = read_adapter(adapter)
    base = load_preset(tiny_preset)
    # export.py: each adapted kernel is W + (alpha / r) A B, every other weight the base's.
    out = tmp_path / "exported"
    load_script("export").main(["--model", str(tiny_preset), "--adapter", str(adapter), "--out", str(out),
                                "--format", "keras-hub"])
    capsys.readouterr()
    exported = keras_hub.models.T5Backbone.from_preset(str(out))
    kernels = {id(dense.kernel): path for path, dense in target_layers(exported, config.targets).items()}
    adapted = 0
    for variable, expected in zip(exported.weights, base.weights, strict=True):  # one config: one order
        path = kernels.get(id(variable))
        if path is not None:
            expected = expected + config.scale * weights[f"{path}/lora_a"] @ weights[f"{path}/lora_b"]
            adapted += 1
        np.testing.assert_allclose(keras.ops.convert_to_numpy(variable), expected, rtol=1e-6, atol=1e-7,
                                   err_msg=variable.path)
    assert adapted == len(kernels) > 0
    # translate.py decodes with the adapter's weights (the tiny random base's translations are
    # one word repeated, with or without it, so the weights are what can tell).
    decoded_by = []

    def recording_translate(backbone, *translate_args, **kwargs):
        decoded_by.append(adapter_weights(backbone))
        return translate(backbone, *translate_args, **kwargs)

    monkeypatch.setattr(evaluation, "translate", recording_translate)
    load_script("translate").main(["--model", str(tiny_preset), "--adapter", str(adapter), "--max-new-tokens", "6",
                                   *TRANSLATE_LINES])
    assert len(capsys.readouterr().out.strip().splitlines()) == len(TRANSLATE_LINES)
    assert len(decoded_by) == 1 and decoded_by[0].keys() == weights.keys()
    for name, value in weights.items():
        np.testing.assert_array_equal(decoded_by[0][name], value, err_msg=name)
