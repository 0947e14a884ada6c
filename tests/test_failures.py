"""In-process sweeps: failed trials (out of memory, NaN loss) are recorded FAILED and the sweep goes on;
an error in our own code stops it with its traceback.

The unadapted baseline is not under test here: each run starts with a `baseline.json` written beforehand,
which the sweep reads as a resumed run does (tests/test_tune_cli.py measures it). A non-grid strategy's
trial budget is checked through the CLI (tests/test_strategies.py, cost-aware) and per oracle.
"""

import csv
import json

import numpy as np
import pytest
import tensorflow as tf
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from tensorboard.plugins.hparams import api_pb2, plugin_data_pb2

from lora_keras.adapters import lora_layers
from tuners.failures import SweepStopped
from tuners.hypermodel import LoraT5HyperModel
from tuners.search_space import SearchSpace
from tuners.sweep import SweepConfig, run_sweep

ORIGINAL_BUILD = LoraT5HyperModel.build
ORIGINAL_START = LoraT5HyperModel.start
OUT_OF_MEMORY = "FAILED: FailedTrialError: out of memory (ResourceExhaustedError: OOM when allocating tensor with shape[8,64]); try a smaller batch size or rank"


def config(tiny_preset, tiny_corpus, logdir, ranks=(1,), batch_sizes=(8, 16, 32)):
    train, val = tiny_corpus
    (logdir / "f").mkdir(parents=True, exist_ok=True)
    (logdir / "f" / "baseline.json").write_text(json.dumps(BASELINE))
    return SweepConfig(
        model=str(tiny_preset), train=str(train), val=str(val), source_lang="English", target_lang="Dravic",
        space=SearchSpace(ranks=ranks, batch_sizes=batch_sizes), epochs=1, logdir=str(logdir), name="f",
        max_train_examples=32, max_val_examples=8, max_target_length=16, verbose=0,
    )


BASELINE = {"val_loss": 5.0, "val_perplexity": 148.4, "bleu": 0.0, "chrf": 1.0}


def out_of_memory():
    return tf.errors.ResourceExhaustedError(None, None, "OOM when allocating tensor with shape[8,64]")


def flaky_build(self, hp):
    """Batch 16 runs out of memory while its model is built."""
    if hp.get("batch_size") == 16:
        raise out_of_memory()
    return ORIGINAL_BUILD(self, hp)


def nan_start(self, model, hps, parents=None):
    """Batch 32 starts with a NaN LoRA scale: its loss diverges to NaN (on the model the others trained)."""
    ORIGINAL_START(self, model, hps, parents)
    if hps[0].get("batch_size") == 32:
        for layer in lora_layers(model.backbone).values():
            layer.lora_scale.assign(np.full(layer.lora_scale.shape, np.nan, "float32"))


def read_status(run_dir):
    with open(run_dir / "results.csv", newline="") as handle:
        return {(int(r["rank"]), int(r["batch_size"])): r["status"] for r in csv.DictReader(handle)}


def session_status(run_dir, trial_id):
    accumulator = EventAccumulator(str(run_dir / "tensorboard" / f"trial_{trial_id}"))
    accumulator.Reload()
    content = accumulator.PluginTagToContent("hparams")["_hparams_/session_end_info"]
    return plugin_data_pb2.HParamsPluginData.FromString(content).session_end_info.status


def oracle_status(run_dir):
    """Each trial's status as the oracle saved it: `{trial_id: status}`."""
    return {path.parent.name.removeprefix("trial_"): json.loads(path.read_text())["status"]
            for path in (run_dir / "tuner").glob("trial_*/trial.json")}


def test_failed_trials_are_recorded_and_the_sweep_goes_on(tiny_preset, tiny_corpus, tmp_path, monkeypatch):
    monkeypatch.setattr(LoraT5HyperModel, "build", flaky_build)
    monkeypatch.setattr(LoraT5HyperModel, "start", nan_start)
    run_sweep(config(tiny_preset, tiny_corpus, tmp_path))
    status = read_status(tmp_path / "f")
    assert status[1, 8] == "COMPLETED"
    assert status[1, 16] == OUT_OF_MEMORY
    assert status[1, 32].startswith("FAILED: FailedTrialError: loss diverged to nan")
    # TensorBoard marks the failed sessions (trials 1 and 2, in grid order) as failed, the other as a success.
    assert session_status(tmp_path / "f", "0") == api_pb2.STATUS_SUCCESS
    for key in ("1", "2"):
        assert session_status(tmp_path / "f", key) == api_pb2.STATUS_FAILURE
    assert oracle_status(tmp_path / "f") == {"0": "COMPLETED", "1": "FAILED", "2": "FAILED"}


def test_too_many_failures_in_a_row_stop_the_sweep(tiny_preset, tiny_corpus, tmp_path, monkeypatch):
    def always_oom(self, hp):
        raise out_of_memory()

    monkeypatch.setattr(LoraT5HyperModel, "build", always_oom)
    with pytest.raises(SweepStopped, match="stopped after 3 failed trials in a row"):
        run_sweep(config(tiny_preset, tiny_corpus, tmp_path, ranks=(1, 2, 3)))
    status = read_status(tmp_path / "f")
    assert len(status) == 3 and all(s == OUT_OF_MEMORY for s in status.values())


def test_an_error_in_our_own_code_stops_the_sweep_with_its_traceback(tiny_preset, tiny_corpus, tmp_path,
                                                                      monkeypatch):
    def buggy_build(self, hp):
        if hp.get("batch_size") == 16:
            raise TypeError("bug")
        return ORIGINAL_BUILD(self, hp)

    monkeypatch.setattr(LoraT5HyperModel, "build", buggy_build)
    with pytest.raises(TypeError, match="^bug$") as raised:
        run_sweep(config(tiny_preset, tiny_corpus, tmp_path))
    assert any(entry.name == "buggy_build" for entry in raised.traceback)  # raised where the bug is
    run_dir = tmp_path / "f"
    # Not a FAILED row: the sweep stopped at the bug; the trial finished before it is kept as it ended.
    assert read_status(run_dir) == {(1, 8): "COMPLETED"}
    assert oracle_status(run_dir)["0"] == "COMPLETED"
    assert json.loads((run_dir / "tuner" / "trial_0" / "measurements.json").read_text())["val_loss"] > 0
    assert (run_dir / "adapters" / "trial_0.safetensors").is_file()
    assert "2" not in oracle_status(run_dir)  # no trial after the bug
    assert session_status(run_dir, "1") == api_pb2.STATUS_FAILURE  # its session is not left running


# --- Packs: trials trained in one step (tuners.packing) fail as their own.


def test_a_diverged_trial_in_a_pack_fails_alone(tiny_preset, tiny_corpus, tmp_path, monkeypatch):
    def nan_rank_2(self, model, hps, parents=None):
        """Rank 2's slot starts with a NaN LoRA scale; rank 1's, beside it in the pack, as built."""
        ORIGINAL_START(self, model, hps, parents)
        for slot, hp in enumerate(hps):
            if hp.get("rank") == 2:
                for layer in lora_layers(model.backbone).values():
                    scale = np.array(layer.lora_scale.numpy())
                    scale[slot] = np.nan
                    layer.lora_scale.assign(scale)

    monkeypatch.setattr(LoraT5HyperModel, "start", nan_rank_2)
    run_sweep(config(tiny_preset, tiny_corpus, tmp_path, ranks=(1, 2), batch_sizes=(8,)))
    with open(tmp_path / "f" / "results.csv", newline="") as handle:
        rows = {int(row["rank"]): row for row in csv.DictReader(handle)}
    assert rows[2]["status"].startswith("FAILED: FailedTrialError: loss diverged to nan")
    assert rows[1]["status"] == "COMPLETED", rows[1]["status"]
    assert rows[1]["pack_group"] == "0+1" and np.isfinite(float(rows[1]["val_loss"]))


def test_too_many_failures_within_one_pack_stop_the_sweep_too(tiny_preset, tiny_corpus, tmp_path, monkeypatch):
    def always_oom(self, hp):
        raise out_of_memory()

    monkeypatch.setattr(LoraT5HyperModel, "build", always_oom)
    with pytest.raises(SweepStopped, match="stopped after 3 failed trials in a row"):
        run_sweep(config(tiny_preset, tiny_corpus, tmp_path, ranks=(1, 2, 3, 4)))  # one pack of four
    status = read_status(tmp_path / "f")
    assert len(status) >= 3 and all(s == OUT_OF_MEMORY for s in status.values())
