"""`--repeats N`: each configuration trained with N seeds on the same pairs, packed, each slot its own seed.

Two sweeps of the tiny preset (ranks 1 and 2, batch 8, seeds 3 and 4): packed (one step of four
slots, each reading its own seed's batches) and one trial at a time. Each (configuration, seed)
must train the same way in both; the validation files must add up to the val loss; the CIs must
bracket it; and a seed must change the training but never the pairs.
"""

import csv
import json
import math

import numpy as np
import pytest
import tensorflow as tf
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from tensorboard.plugins.hparams import plugin_data_pb2

from conftest import run_main
from tuners.prepare import _file_pairs
from tuners.sweep_config import SweepConfig

SEEDS = (3, 4)


def args(tiny_preset, tiny_corpus, logdir, name, *extra):
    train, val = tiny_corpus
    return ["--model", tiny_preset, "--train", train, "--val", val, "--source-lang", "English",
            "--target-lang", "Dravic", "--ranks", 1, 2, "--batch-sizes", 8, "--epochs", 1, "--logdir", logdir,
            "--name", name, "--max-target-length", 16, "--quiet", "--seed", SEEDS[0], "--repeats", len(SEEDS),
            *extra]


def rows(run_dir):
    with open(run_dir / "results.csv", newline="") as handle:
        return {(int(r["rank"]), int(r["seed"])): r for r in csv.DictReader(handle)}


@pytest.fixture(scope="module")
def runs(tiny_preset, tiny_corpus, tmp_path_factory):
    logdir = tmp_path_factory.mktemp("repeats")
    for name, extra in (("packed", ()), ("alone", ("--no-pack",))):
        code, _, stderr = run_main("tune.py", *args(tiny_preset, tiny_corpus, logdir, name, *extra))
        assert code == 0, stderr[-3000:]
    return logdir / "packed", logdir / "alone"


def test_each_seed_packed_trains_as_that_seed_alone(runs):
    packed, alone = (rows(run_dir) for run_dir in runs)
    assert set(packed) == set(alone) == {(rank, seed) for rank in (1, 2) for seed in SEEDS}
    assert len({r["pack_group"] for r in packed.values()}) == 1  # one step of four slots
    assert not any(r["pack_group"] for r in alone.values())
    differences = {}
    for key, row in packed.items():
        assert row["status"] == alone[key]["status"] == "COMPLETED"
        for column in ("final_loss", "val_loss"):
            differences[key, column] = abs(float(row[column]) / float(alone[key][column]) - 1)
    assert max(differences.values()) <= 1e-5, differences
    for row in alone.values():  # alone, `time` is the fit's training parts (validation excluded), as packed
        measured = json.loads((runs[1] / "tuner" / f"trial_{row['trial_id']}" / "measurements.json").read_text())
        assert math.isclose(float(row["training_time_s"]), sum(measured["epoch_times_s"]), rel_tol=1e-9)
        assert measured["fit_time_s"] > float(row["training_time_s"])
    # Another seed, another training: initialisation, dropout masks and data order.
    for rank in (1, 2):
        assert abs(float(packed[rank, SEEDS[0]]["val_loss"]) - float(packed[rank, SEEDS[1]]["val_loss"])) > 1e-5


def test_validation_files_add_up_and_the_intervals_bracket_each_figure(runs):
    run_dir = runs[0]
    references = json.loads((run_dir / "validation" / "references.json").read_text())
    assert len(references["references"]) == 24
    for row in rows(run_dir).values():
        pairs = json.loads((run_dir / "validation" / f"trial_{row['trial_id']}.json").read_text())
        nll, tokens = np.array(pairs["nll"]), np.array(pairs["tokens"])
        assert len(nll) == len(tokens) == len(pairs["translations"]) == 24
        # The per-pair losses are a second computation of the val loss (a predict pass, not fit's evaluate).
        assert math.isclose(nll.sum() / tokens.sum(), float(row["val_loss"]), rel_tol=1e-5)
        for name in ("val_loss", "bleu", "chrf"):
            low, high = float(row[f"{name}_ci_low"]), float(row[f"{name}_ci_high"])
            assert low <= float(row[name]) <= high and (high > low or name != "val_loss"), (name, row)


def test_seed_is_an_hparams_hyperparameter_and_the_intervals_are_metrics(runs):
    run_dir = runs[0]
    experiment = EventAccumulator(str(run_dir / "tensorboard"), size_guidance={"tensors": 0})
    experiment.Reload()
    content = experiment.PluginTagToContent("hparams")["_hparams_/experiment"]
    infos = {i.name: i for i in plugin_data_pb2.HParamsPluginData.FromString(content).experiment.hparam_infos}
    assert [v.number_value for v in infos["seed"].domain_discrete.values] == list(SEEDS) and infos["seed"].differs
    by_id = {r["trial_id"]: r for r in rows(run_dir).values()}
    for session in sorted((run_dir / "tensorboard").glob("trial_*")):
        accumulator = EventAccumulator(str(session), size_guidance={"tensors": 0})
        accumulator.Reload()
        start = plugin_data_pb2.HParamsPluginData.FromString(
            accumulator.PluginTagToContent("hparams")["_hparams_/session_start_info"])
        row = by_id[session.name.removeprefix("trial_")]
        assert start.session_start_info.hparams["seed"].number_value == int(row["seed"])
        last = lambda tag: float(tf.make_ndarray(accumulator.Tensors(tag)[-1].tensor_proto))  # noqa: E731
        for tag in ("val_loss_ci_low", "val_loss_ci_high", "bleu_ci_low", "chrf_ci_high"):
            assert math.isclose(last(tag), float(row[tag]), rel_tol=1e-5), tag


def test_summary_has_one_row_per_configuration_over_its_seeds(runs):
    run_dir = runs[0]
    with open(run_dir / "summary.csv", newline="") as handle:
        summary = list(csv.DictReader(handle))
    assert len(summary) == 2
    trials = rows(run_dir)
    for row in summary:
        rank = int(row["rank"])
        losses = [float(trials[rank, seed]["val_loss"]) for seed in SEEDS]
        assert int(row["n"]) == len(SEEDS)
        assert math.isclose(float(row["val_loss_mean"]), np.mean(losses), rel_tol=1e-6)
        assert math.isclose(float(row["val_loss_std"]), np.std(losses, ddof=1), rel_tol=1e-6)


def test_a_rerun_resumes_every_configuration_and_seed(runs, tiny_preset, tiny_corpus):
    run_dir = runs[0]
    before = (run_dir / "results.csv").read_text()
    code, stdout, stderr = run_main("tune.py", *args(tiny_preset, tiny_corpus, run_dir.parent, "packed"))
    assert code == 0, stderr[-3000:]
    assert "Running Trial" not in stdout and (run_dir / "results.csv").read_text() == before
    code, _, stderr = run_main("tune.py", *args(tiny_preset, tiny_corpus, run_dir.parent, "packed", "--repeats", 3))
    assert code == 2 and "--overwrite" in stderr  # other seeds: another run (args' last --repeats wins)


def test_a_seed_never_changes_the_held_out_pairs(tiny_corpus):
    train, _ = tiny_corpus
    held_out = [_file_pairs(SweepConfig(train=train, seed=seed, repeats=2))[1] for seed in (0, 1, 7)]
    assert held_out[0] == held_out[1] == held_out[2]
    assert _file_pairs(SweepConfig(train=train, data_seed=1))[1] != held_out[0]  # --data-seed draws others
