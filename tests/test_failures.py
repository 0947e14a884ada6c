"""In-process sweeps: failed trials (out of memory, NaN loss) are recorded FAILED and the sweep goes on.

The unadapted baseline is not under test here: each run starts with a `baseline.json` written beforehand,
which the sweep reads as a resumed run does (tests/test_tune_cli.py measures it). A non-grid strategy's
trial budget is checked through the CLI (tests/test_strategies.py, cost-aware) and per oracle.
"""

import csv
import json

import keras
import numpy as np
import pytest
import tensorflow as tf
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from tensorboard.plugins.hparams import api_pb2, plugin_data_pb2

from tuners.failures import SweepStopped
from tuners.hypermodel import LoraT5HyperModel
from tuners.packing import PackedLoraHyperModel
from tuners.search_space import SearchSpace
from tuners.sweep import SweepConfig, run_sweep

ORIGINAL_BUILD = LoraT5HyperModel.build
ORIGINAL_BUILD_PACK = PackedLoraHyperModel.build_pack
ORIGINAL_START = PackedLoraHyperModel.start


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
    """Batch 16 runs out of memory; batch 32, after it, diverges to NaN (one model, trained twice)."""
    if hp.get("batch_size") == 16:
        raise out_of_memory()
    model = ORIGINAL_BUILD(self, hp)
    if hp.get("batch_size") == 32:
        nan_loss = lambda y_true, y_pred: keras.ops.sum(y_pred) * float("nan")  # noqa: E731
        model.compile(optimizer="adam", loss=nan_loss)
    return model


def flaky_build_pack(self, hps):
    """`flaky_build` for the packed model every trial trains on: batch 16 runs out of memory."""
    if hps[0].get("batch_size") == 16:
        raise out_of_memory()
    return ORIGINAL_BUILD_PACK(self, hps)


def nan_start(self, hps, parents=None):
    """Batch 32 starts with a NaN LoRA scale: its loss diverges to NaN."""
    ORIGINAL_START(self, hps, parents)
    if hps[0].get("batch_size") == 32:
        for projection in self._model.pack.layers.values():
            projection.lora_scale.assign(np.full(projection.lora_scale.shape, np.nan, "float32"))


def read_status(run_dir):
    with open(run_dir / "results.csv", newline="") as handle:
        return {(int(r["rank"]), int(r["batch_size"])): r["status"] for r in csv.DictReader(handle)}


def test_failed_trials_are_recorded_and_the_sweep_goes_on(tiny_preset, tiny_corpus, tmp_path, monkeypatch):
    monkeypatch.setattr(LoraT5HyperModel, "build", flaky_build)
    monkeypatch.setattr(PackedLoraHyperModel, "build_pack", flaky_build_pack)
    monkeypatch.setattr(PackedLoraHyperModel, "start", nan_start)
    run_sweep(config(tiny_preset, tiny_corpus, tmp_path))
    status = read_status(tmp_path / "f")
    assert status[1, 8] == "COMPLETED"
    assert status[1, 16] == "FAILED: ResourceExhaustedError: OOM when allocating tensor with shape[8,64]"
    assert status[1, 32].startswith("FAILED: FailedTrialError: loss diverged to nan")
    # TensorBoard marks the failed sessions (trials 1 and 2, in grid order) as failed.
    for key in ("1", "2"):
        accumulator = EventAccumulator(str(tmp_path / "f" / "tensorboard" / f"trial_{key}"))
        accumulator.Reload()
        content = accumulator.PluginTagToContent("hparams")["_hparams_/session_end_info"]
        end = plugin_data_pb2.HParamsPluginData.FromString(content).session_end_info
        assert end.status == api_pb2.STATUS_FAILURE


def test_too_many_failures_in_a_row_stop_the_sweep(tiny_preset, tiny_corpus, tmp_path, monkeypatch):
    def always_oom(self, hp):
        raise out_of_memory()

    monkeypatch.setattr(LoraT5HyperModel, "build", always_oom)
    monkeypatch.setattr(PackedLoraHyperModel, "build_pack", always_oom)
    with pytest.raises(SweepStopped, match="stopped after 3 failed trials in a row"):
        run_sweep(config(tiny_preset, tiny_corpus, tmp_path, ranks=(1, 2, 3)))
    status = read_status(tmp_path / "f")
    assert len(status) == 3 and all(s.startswith("FAILED: ResourceExhaustedError") for s in status.values())
