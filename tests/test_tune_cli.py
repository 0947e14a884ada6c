"""`scripts/tune.py` end to end on a tiny preset: outputs, HParams read back, resume, bad input.

`main()` runs in this process (the entry point a process would run, without loading TensorFlow
again); the kill -9 test needs a process of its own.
"""

import csv
import itertools
import json
import math
import os
import shutil
import signal
import subprocess
import sys
import time

import numpy as np
import psutil
import pytest
import tensorflow as tf
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from tensorboard.plugins.hparams import plugin_data_pb2

from conftest import ROOT, require, run_main, run_script
from lora_keras.adapters import LoraConfig, lora_parameter_count
from lora_keras.models.sources import load_preset
from lora_keras.results.table import COLUMNS
from tuners.trial_files import TrialFiles

RANKS, BATCH_SIZES = (1, 2), (8, 16)
TARGET_LENGTH = 16
METRICS = ("epoch_loss", "val_loss", "val_perplexity", "epoch_time_s", "tokens_per_s", "peak_memory_mb",
           "trainable_params", "bleu")


def sweep_args(tiny_preset, tiny_corpus, logdir, *extra):
    train, val = tiny_corpus
    return ["--model", tiny_preset, "--train", train, "--val", val, "--source-lang", "English",
            "--target-lang", "Dravic", "--ranks", *RANKS, "--batch-sizes", *BATCH_SIZES,
            "--epochs", "1", "--logdir", logdir, "--name", "tiny", "--max-target-length", TARGET_LENGTH,
            "--quiet", *extra]


@pytest.fixture(scope="module")
def tiny_run(tiny_preset, tiny_corpus, tmp_path_factory):
    logdir = tmp_path_factory.mktemp("logs")
    code, stdout, stderr = run_main("tune.py", *sweep_args(tiny_preset, tiny_corpus, logdir))
    assert code == 0, stderr[-3000:]
    return logdir / "tiny", stdout


def read_rows(run_dir):
    with open(run_dir / "results.csv", newline="") as handle:
        return list(csv.DictReader(handle))


def plugin_content(path, tag):
    accumulator = EventAccumulator(str(path), size_guidance={"tensors": 0})
    accumulator.Reload()
    content = accumulator.PluginTagToContent("hparams")[tag]
    return plugin_data_pb2.HParamsPluginData.FromString(content), accumulator


def test_results_csv_has_every_column_and_combination(tiny_run, tiny_preset):
    run_dir, result = tiny_run
    with open(run_dir / "results.csv", newline="") as handle:
        assert next(csv.reader(handle)) == list(COLUMNS)
    rows = read_rows(run_dir)
    combos = sorted((int(r["rank"]), int(r["batch_size"])) for r in rows)
    assert combos == sorted(itertools.product(RANKS, BATCH_SIZES))
    base = load_preset(tiny_preset)
    base_params = sum(int(np.prod(w.shape)) for w in base.weights)
    backbone = base.build_backbone()
    resident_now = psutil.Process().memory_info().rss / 2**20  # this process ran the trials
    adjusted = []  # per later trial: its figure is not simply the process's peak
    for row in rows:
        rank = int(row["rank"])
        assert row["status"] == "COMPLETED"
        measured = json.loads((run_dir / "tuner" / f"trial_{row['trial_id']}" / "measurements.json").read_text())
        peak = float(row["peak_memory_mb"])
        assert row["memory_kind"] == "host_rss" and peak == pytest.approx(measured["peak_memory_mb"])
        # As if alone: not above this process's own peak during the trial's measured steps (they
        # start from the process's RSS before its first step, not from what earlier trials left,
        # after heap went back to the kernel). In MiB: kB or bytes would be 1024 times off the
        # resident size read independently.
        assert peak <= 1.02 * measured["process_peak_memory_mb"]
        adjusted.append(peak != pytest.approx(measured["process_peak_memory_mb"]))
        assert 0.5 * resident_now < peak < 2 * resident_now
        assert float(row["lora_alpha"]) == rank and int(row["epochs"]) == 1
        lora = lora_parameter_count(backbone, LoraConfig(rank, targets=("q", "v")))
        assert int(row["trainable_params"]) == lora
        assert int(row["total_params"]) == base_params + lora
        assert math.isclose(float(row["trainable_percent"]), 100 * lora / (base_params + lora), rel_tol=1e-6)
        # Training alone, validation excluded: the sum of its epochs' training parts (one epoch here).
        assert float(row["training_time_s"]) == pytest.approx(float(row["mean_epoch_time_s"]))
        assert float(row["training_time_s"]) > 0
        if not row["pack_group"]:  # the fit's wall time, validation included, is kept beside
            assert measured["fit_time_s"] > float(row["training_time_s"])
        assert float(row["tokens_per_s"]) > 0
        assert math.isfinite(float(row["final_loss"])) and math.isfinite(float(row["val_loss"]))
        assert 0 <= float(row["bleu"]) <= 100 and 0 <= float(row["chrf"]) <= 100
    assert any(adjusted)  # trials are measured from the process's start, not their own


def test_report_baseline_and_adapters(tiny_run):
    run_dir, result = tiny_run
    baseline = json.loads((run_dir / "baseline.json").read_text())
    assert math.isfinite(baseline["val_loss"]) and 0 <= baseline["bleu"] <= 100
    table = (run_dir / "results.md").read_text()
    assert "| rank | batch size | time (s) | final loss | val loss |" in table
    assert f"val loss {baseline['val_loss']:.4g}" in table
    assert "Best trial" in table and "overhead" in table
    # five sample translations: the base's (from baseline.json) beside the best trial's (its measurements)
    best = min(read_rows(run_dir), key=lambda row: float(row["val_loss"]))
    samples = json.loads((run_dir / "sample_translations.json").read_text())
    assert set(samples) == {row["trial_id"] for row in read_rows(run_dir)}
    assert f"Sample translations (validation set; best trial {best['trial_id']})" in table
    lines = [line for line in table.splitlines() if line.startswith(f"| {baseline['sample_sources'][0]} |")]
    assert lines == [f"| {baseline['sample_sources'][0]} | {baseline['sample_references'][0]} | "
                     f"{baseline['sample_translations'][0]} | {samples[best['trial_id']][0]} |"]
    assert len(baseline["sample_translations"]) == 5
    adapters = sorted((run_dir / "adapters").glob("*.safetensors"))
    assert len(adapters) == 4 and all(p.stat().st_size < 64 * 1024 for p in adapters)
    # keras-tuner's full-model checkpoints are replaced by the adapters.
    assert not list(run_dir.rglob("*.weights.h5")) and not list(run_dir.rglob("checkpoint*"))


def test_hparams_read_back_from_event_files(tiny_run):
    run_dir, _ = tiny_run
    experiment, _ = plugin_content(run_dir / "tensorboard", "_hparams_/experiment")
    infos = {info.name: info for info in experiment.experiment.hparam_infos}
    assert [v.number_value for v in infos["rank"].domain_discrete.values] == list(RANKS)
    assert [v.number_value for v in infos["batch_size"].domain_discrete.values] == list(BATCH_SIZES)
    assert {"learning_rate", "lora_alpha"} <= set(infos)
    assert [v.string_value for v in infos["precision"].domain_discrete.values] == ["float32"]
    declared = {m.name.tag: m for m in experiment.experiment.metric_infos}
    assert set(METRICS) | {"val_perplexity"} <= set(declared)
    assert "per real (non-padding) target token" in declared["val_loss"].description
    # What varies is marked so: TensorBoard's backend sorts by (not differs, name) and its
    # HParams table shows the first five as columns by default.
    # (alpha equals the rank here, so it varies too.)
    assert {name for name, info in infos.items() if info.differs} == {"rank", "batch_size", "lora_alpha"}
    shown = sorted(infos.values(), key=lambda info: (not info.differs, info.name))[:5]
    assert [info.name for info in shown[:3]] == ["batch_size", "lora_alpha", "rank"]

    rows = {r["trial_id"]: r for r in read_rows(run_dir)}
    sessions = sorted((run_dir / "tensorboard").glob("trial_*"))
    assert len(sessions) == 4
    for session in sessions:
        start, accumulator = plugin_content(session, "_hparams_/session_start_info")
        hparams = {k: v.number_value for k, v in start.session_start_info.hparams.items()}
        row = rows[session.name.removeprefix("trial_")]
        assert hparams["rank"] == int(row["rank"]) and hparams["batch_size"] == int(row["batch_size"])
        assert start.session_start_info.hparams["precision"].string_value == row["precision"] == "float32"
        assert row["jit_compile"] == "False"  # off on CPU by default
        assert set(METRICS) | {"chrf", "sample_translations"} <= set(accumulator.Tags()["tensors"])
        samples = tf.make_ndarray(accumulator.Tensors("sample_translations")[-1].tensor_proto).item().decode()
        assert "| source | reference | unadapted base | this trial |" in samples
        baseline = json.loads((run_dir / "baseline.json").read_text())
        first = samples.splitlines()[2]  # the base's translation beside the trial's, on the first source
        assert first.startswith(f"| {baseline['sample_sources'][0]} | {baseline['sample_references'][0]} | "
                                f"{baseline['sample_translations'][0]} | ")
        last = lambda tag: float(tf.make_ndarray(accumulator.Tensors(tag)[-1].tensor_proto))  # noqa: E731
        assert math.isclose(last("val_loss"), float(row["val_loss"]), rel_tol=1e-5)
        assert math.isclose(last("bleu"), float(row["bleu"]), rel_tol=1e-5)
        assert last("trainable_params") == int(row["trainable_params"])


@pytest.mark.e2e  # two sweeps in processes of their own: a process's first sweep is what a user runs
def test_figures_do_not_depend_on_the_order_of_the_trials(tiny_preset, tiny_corpus, tmp_path):
    """The grid and the grid reversed: each configuration's losses to float rounding, its peak memory within 5%."""
    runs = {}
    for name, order in (("forward", 1), ("reverse", -1)):
        args = sweep_args(tiny_preset, tiny_corpus, tmp_path)
        args[args.index("--name") + 1] = name
        args[args.index("--ranks") + 1: args.index("--ranks") + 3] = RANKS[::order]
        args[args.index("--batch-sizes") + 1: args.index("--batch-sizes") + 3] = BATCH_SIZES[::order]
        result = run_script("tune.py", *args)
        assert result.returncode == 0, result.stderr[-3000:]
        runs[name] = {(r["rank"], r["batch_size"]): r for r in read_rows(tmp_path / name)}
    forward, reverse = runs["forward"], runs["reverse"]
    assert list(forward) != list(reverse) and set(forward) == set(reverse)
    for key, row in forward.items():
        # Other slots in the pack: other rows of one step, the same arithmetic to float rounding.
        assert float(reverse[key]["val_loss"]) == pytest.approx(float(row["val_loss"]), rel=1e-5), key
        assert float(reverse[key]["peak_memory_mb"]) == pytest.approx(float(row["peak_memory_mb"]), rel=0.05), key


def test_rerun_resumes_without_repeating_a_trial(tiny_run, tiny_preset, tiny_corpus):
    run_dir, _ = tiny_run
    before = read_rows(run_dir)
    code, stdout, stderr = run_main("tune.py", *sweep_args(tiny_preset, tiny_corpus, run_dir.parent))
    assert code == 0, stderr[-3000:]
    assert "Running Trial" not in stdout
    assert read_rows(run_dir) == before


def test_rerun_with_other_settings_is_refused(tiny_run, tiny_preset, tiny_corpus):
    run_dir, _ = tiny_run
    args = sweep_args(tiny_preset, tiny_corpus, run_dir.parent)
    args[args.index("--ranks") + 1] = "4"
    code, _, stderr = run_main("tune.py", *args)
    assert code == 2
    assert stderr.strip().count("\n") == 0 and "--overwrite" in stderr


def test_plots_recommendations_and_tensorboard_images(tiny_run):
    run_dir, _ = tiny_run
    for name in ("loss_vs_rank.png", "time_vs_batch_size.png", "val_loss_vs_params.png",
                 "memory_vs_batch_size.png"):
        assert (run_dir / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", name
    recommendations = (run_dir / "recommendations.md").read_text()
    assert "Pareto front" in recommendations and "Measured trends" in recommendations
    accumulator = EventAccumulator(str(run_dir / "tensorboard" / "report"), size_guidance={"tensors": 0})
    accumulator.Reload()
    assert {"loss_vs_rank", "time_vs_batch_size"} <= set(accumulator.Tags()["tensors"])


def test_report_script_rebuilds_reports_without_training(tiny_run, tmp_path):
    run_dir, _ = tiny_run
    copy = tmp_path / "copy"
    copy.mkdir()
    for name in ("results.csv", "baseline.json", "run_summary.json", "sample_translations.json"):
        (copy / name).write_bytes((run_dir / name).read_bytes())
    shutil.copytree(run_dir / "validation", copy / "validation")  # the paired tests' per-pair files
    code, _, stderr = run_main("report.py", copy, "--memory-budget-mb", "1")
    assert code == 0, stderr[-2000:]
    assert (copy / "results.md").read_text() == (run_dir / "results.md").read_text()
    assert (copy / "loss_vs_rank.png").is_file()
    assert (copy / "summary.csv").read_text() == (run_dir / "summary.csv").read_text()
    assert "no configuration fits" in (copy / "recommendations.md").read_text().lower()
    code, _, stderr = run_main("report.py", tmp_path / "nothing")
    assert code == 2 and "has no results.csv" in stderr
    assert stderr.strip().count("\n") == 0


@pytest.fixture
def started():
    """`start(command)`: a process that is killed when the test ends, whatever its outcome."""
    processes = []

    def start(command):
        processes.append(subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=ROOT))
        return processes[-1]

    yield start
    for process in processes:
        if process.poll() is None:
            process.kill()
        process.wait()


@pytest.mark.e2e
def test_kill_9_mid_trial_then_rerun_completes_each_combination_once(tiny_preset, tiny_corpus, tmp_path, started):
    args = sweep_args(tiny_preset, tiny_corpus, tmp_path)
    args[args.index("--ranks") + 1: args.index("--ranks") + 3] = [1]  # two trials of one model suffice
    run_dir = tmp_path / "tiny"
    process = started([sys.executable, str(ROOT / "scripts" / "tune.py"), *map(str, args)])
    deadline = time.time() + 300
    # Kill once the first trial is on disk and the second has started.
    while not (run_dir / "tuner" / "trial_1").exists():
        assert process.poll() is None and time.time() < deadline, "the sweep ended before it could be killed"
        time.sleep(0.2)
    os.kill(process.pid, signal.SIGKILL)
    process.wait()
    assert len(read_rows(run_dir)) == 1  # the finished trial survived the kill
    # The killed attempt's session: in its attempt's directory, never moved into place.
    killed = {path.name for path in TrialFiles(run_dir, "1").staged_session.glob("events.out.tfevents*")}
    assert not (run_dir / "tensorboard" / "trial_1").exists()

    code, _, stderr = run_main("tune.py", *args)  # the rerun: any process resumes it
    assert code == 0, stderr[-3000:]
    rows = read_rows(run_dir)
    assert sorted((int(r["rank"]), int(r["batch_size"])) for r in rows) == [(1, b) for b in BATCH_SIZES]
    assert all(r["status"] == "COMPLETED" for r in rows) and len({r["trial_id"] for r in rows}) == 2
    # The interrupted trial's TensorBoard session holds its rerun only.
    start, _ = plugin_content(run_dir / "tensorboard" / "trial_1", "_hparams_/session_start_info")
    assert start.session_start_info.hparams["batch_size"].number_value == BATCH_SIZES[1]
    events = {path.name for path in (run_dir / "tensorboard" / "trial_1").glob("events.out.tfevents*")}
    assert events and not events & killed  # the killed attempt's event files were dropped
    assert not (run_dir / "attempts").exists()
    accumulator = EventAccumulator(str(run_dir / "tensorboard" / "trial_1"), size_guidance={"tensors": 0})
    accumulator.Reload()
    assert len(accumulator.Tensors("_hparams_/session_start_info")) == 1  # one session: the rerun's


def test_translate_script_with_a_trial_adapter(tiny_run, tiny_preset):
    run_dir, _ = tiny_run
    adapter = sorted((run_dir / "adapters").glob("*.safetensors"))[0]
    lines = ["translate English to Dravic: the dog runs .", "translate English to Dravic: a cat ."]
    # Beam search from the command line (its ids against transformers: test_evaluation; greedy: test_hf_scripts).
    code, stdout, stderr = run_main("translate.py", "--model", tiny_preset, "--adapter", adapter,
                                    "--max-new-tokens", "6", "--num-beams", "2", *lines)
    assert code == 0, stderr[-2000:]
    assert len(stdout.strip().splitlines()) == 2
    code, _, stderr = run_main("translate.py", "--model", tiny_preset, "--adapter", run_dir / "nope.safetensors", "x")
    assert code == 2 and "cannot read adapter" in stderr
    assert stderr.strip().count("\n") == 0


def test_val_loss_is_what_transformers_computes_on_the_exported_trial(tiny_run, tiny_preset, tiny_corpus, tmp_path):
    """results.csv's val_loss = transformers' T5 loss (mean NLL per real target token) on the export."""
    torch = require("torch")
    import transformers

    from conftest import TINY_PREFIX
    from lora_keras.data.corpus import read_pairs

    run_dir, _ = tiny_run
    row = min(read_rows(run_dir), key=lambda r: float(r["val_loss"]))
    out = tmp_path / "exported"
    code, _, stderr = run_main("export.py", "--model", tiny_preset, "--adapter",
                               run_dir / "adapters" / f"trial_{row['trial_id']}.safetensors", "--out", out)
    assert code == 0, stderr[-2000:]
    model = transformers.T5ForConditionalGeneration.from_pretrained(str(out)).eval()
    tokenizer = transformers.AutoTokenizer.from_pretrained(str(out))
    pairs = read_pairs(tiny_corpus[1])
    sources = tokenizer([TINY_PREFIX + s for s, _ in pairs], padding=True, return_tensors="pt")
    # --max-target-length as in sweep_args: that many tokens less one, and EOS
    labels = tokenizer([t for _, t in pairs], padding=True, truncation=True, max_length=TARGET_LENGTH,
                       return_tensors="pt")
    labels = labels.input_ids.masked_fill(labels.attention_mask == 0, -100)
    with torch.no_grad():
        reference = float(model(**sources, labels=labels).loss)  # one batch: the set's mean per real token
    ours = float(row["val_loss"])
    print(f"\nval loss: ours {ours:.6f}, transformers on the export {reference:.6f}")
    assert math.isclose(ours, reference, rel_tol=1e-4)
    assert math.isclose(float(row["val_perplexity"]), math.exp(ours), rel_tol=1e-6)
