"""Tests for the measurement callbacks (tiny Dense models, CPU, a few seconds each)."""

import json
import math
import time

import keras
import numpy as np
import psutil
import pytest
import tensorflow as tf
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from callbacks import EpochTimer, FirstTrialStart, LossScalars, ParameterCount, PeakMemory, create_writer
from callbacks import peak_memory as peak_memory_module

EPOCHS = 2
BATCH = 32
TOKENS_PER_EPOCH = 10_000
MIB = 2**20


def make_data(n=256, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, 16)).astype("float32")
    y = rng.normal(size=(n, 1)).astype("float32")
    return x, y


def make_model():
    model = keras.Sequential([keras.Input((16,)), keras.layers.Dense(8), keras.layers.Dense(1)])
    model.compile(optimizer="adam", loss="mse")
    return model


def fit(model, callbacks, epochs=EPOCHS, validation=True):
    x, y = make_data()
    val = make_data(64, seed=1) if validation else None
    return model.fit(
        x, y, batch_size=BATCH, epochs=epochs, validation_data=val,
        callbacks=callbacks, verbose=0,
    )


def read_scalars(logdir):
    """{tag: [(step, value), ...]} from the TF2 (tensor-stored) scalars in logdir."""
    acc = EventAccumulator(str(logdir), size_guidance={"tensors": 0})
    acc.Reload()
    return {
        tag: [(e.step, tf.make_ndarray(e.tensor_proto).item()) for e in acc.Tensors(tag)]
        for tag in acc.Tags()["tensors"]
    }


def assert_plain(obj):
    """Only plain Python types (no numpy scalars), and strictly JSON-serialisable."""
    if isinstance(obj, dict):
        for v in obj.values():
            assert_plain(v)
    elif isinstance(obj, list):
        for v in obj:
            assert_plain(v)
    else:
        assert obj is None or type(obj) in (int, float, str), (obj, type(obj))
    json.dumps(obj, allow_nan=False)


@pytest.fixture(scope="module")
def shared_run(tmp_path_factory):
    """One fit with all four callbacks sharing one writer, as the lead uses them."""
    logdir = tmp_path_factory.mktemp("shared")
    writer = create_writer(str(logdir))
    cbs = {
        "timer": EpochTimer(TOKENS_PER_EPOCH, writer=writer),
        "memory": PeakMemory(writer=writer),
        "params": ParameterCount(writer=writer),
        "loss": LossScalars(writer=writer),
    }
    model = make_model()
    history = fit(model, list(cbs.values()))
    writer.close()
    return {"cbs": cbs, "history": history, "model": model, "scalars": read_scalars(logdir)}


def test_shared_writer_tags_one_value_per_epoch(shared_run):
    scalars = shared_run["scalars"]
    for tag in ["epoch_time_s", "tokens_per_s", "peak_memory_mb", "epoch_loss", "val_loss"]:
        assert [s for s, _ in scalars[tag]] == list(range(EPOCHS)), tag
    for tag in ["trainable_params", "total_params"]:
        assert [s for s, _ in scalars[tag]] == [0], tag


def test_results_are_plain_python(shared_run):
    for cb in shared_run["cbs"].values():
        assert_plain(cb.results())


def test_loss_scalars_match_history(shared_run):
    scalars, hist = shared_run["scalars"], shared_run["history"].history
    res = shared_run["cbs"]["loss"].results()
    assert set(res) == {"final_loss", "val_loss", "val_perplexity"}
    assert [v for _, v in scalars["epoch_loss"]] == pytest.approx(hist["loss"], abs=1e-6)
    assert [v for _, v in scalars["val_loss"]] == pytest.approx(hist["val_loss"], abs=1e-6)
    assert [v for _, v in scalars["val_perplexity"]] == pytest.approx(np.exp(hist["val_loss"]), rel=1e-6)
    assert res["val_perplexity"] == pytest.approx(np.exp(hist["val_loss"][-1]), rel=1e-9)
    assert res["final_loss"] == pytest.approx(hist["loss"][-1], abs=1e-6)
    assert res["val_loss"] == pytest.approx(hist["val_loss"][-1], abs=1e-6)


def test_loss_scalars_without_validation(tmp_path):
    writer = create_writer(str(tmp_path))
    cb = LossScalars(writer=writer)
    history = fit(make_model(), [cb], epochs=1, validation=False)
    writer.close()
    scalars = read_scalars(tmp_path)
    assert "val_loss" not in scalars
    assert cb.results()["val_loss"] is None
    assert cb.results()["final_loss"] == pytest.approx(history.history["loss"][-1], abs=1e-6)


def test_epoch_timer_scalars_match_results(shared_run):
    scalars = shared_run["scalars"]
    res = shared_run["cbs"]["timer"].results()
    assert set(res) == {"training_time_s", "mean_epoch_time_s", "tokens_per_s", "epoch_times_s"}
    times = res["epoch_times_s"]
    assert len(times) == EPOCHS
    assert [v for _, v in scalars["epoch_time_s"]] == pytest.approx(times, rel=1e-6)
    assert [v for _, v in scalars["tokens_per_s"]] == pytest.approx(
        [TOKENS_PER_EPOCH / t for t in times], rel=1e-6
    )
    assert res["mean_epoch_time_s"] == pytest.approx(sum(times) / EPOCHS)
    # Steady state: epochs after the first (which carries graph tracing).
    assert res["tokens_per_s"] == pytest.approx(
        TOKENS_PER_EPOCH * (EPOCHS - 1) / sum(times[1:])
    )
    assert res["training_time_s"] >= sum(times)


def test_epoch_timer_single_epoch_throughput():
    cb = EpochTimer(TOKENS_PER_EPOCH)  # writer=None: no TensorBoard output
    fit(make_model(), [cb], epochs=1, validation=False)
    res = cb.results()
    assert len(res["epoch_times_s"]) == 1
    assert res["tokens_per_s"] == pytest.approx(TOKENS_PER_EPOCH / res["epoch_times_s"][0])


class SlowValidation(keras.callbacks.Callback):
    """Makes validation slow, so including it in epoch time would be obvious."""

    def __init__(self, sleep_s):
        super().__init__()
        self.sleep_s = sleep_s
        self.total_sleep_s = 0.0

    def on_test_batch_end(self, batch, logs=None):
        time.sleep(self.sleep_s)
        self.total_sleep_s += self.sleep_s


def test_epoch_timer_excludes_validation():
    slow = SlowValidation(sleep_s=1.0)  # 2 val batches/epoch -> 2 s/epoch, far above a loaded CPU's epoch
    timer = EpochTimer(TOKENS_PER_EPOCH)
    fit(make_model(), [slow, timer])
    res = timer.results()
    per_epoch_sleep = slow.total_sleep_s / EPOCHS
    assert slow.total_sleep_s == pytest.approx(2 * 1.0 * EPOCHS)
    # The steady-state epoch trains in far less than its validation sleeps.
    assert res["epoch_times_s"][-1] < per_epoch_sleep
    # The whole fit includes validation; epoch times must not (were the sleep
    # counted in them, the sum plus the sleep would exceed the fit time).
    assert res["training_time_s"] >= slow.total_sleep_s
    assert sum(res["epoch_times_s"]) + slow.total_sleep_s <= res["training_time_s"]


def test_epoch_timer_ignores_evaluate_outside_fit():
    model = make_model()
    timer = EpochTimer(TOKENS_PER_EPOCH)
    fit(model, [timer], epochs=1)
    before = timer.results()["epoch_times_s"]
    model.evaluate(*make_data(64), callbacks=[timer], verbose=0)
    assert timer.results()["epoch_times_s"] == before


class BigAllocation(keras.callbacks.Callback):
    """Allocates and touches ~200 MiB during epoch 0, then frees it."""

    def __init__(self, mib=200):
        super().__init__()
        self.mib = mib
        self.baseline_mb = None

    def on_epoch_begin(self, epoch, logs=None):
        if epoch != 0:
            return
        self.baseline_mb = psutil.Process().memory_info().rss / MIB
        block = np.ones(self.mib * MIB // 8)  # np.ones writes every page
        time.sleep(0.2)  # long enough for the ~20 ms sampler to see it
        del block


def test_peak_memory_host_rss_and_per_trial_reset(tmp_path):
    writer = create_writer(str(tmp_path))
    big = BigAllocation()
    mem1 = PeakMemory(writer=writer)
    fit(make_model(), [big, mem1])
    writer.close()
    res1 = mem1.results()
    assert res1["memory_kind"] == "host_rss"
    assert mem1.method == "vmhwm"
    assert res1["peak_memory_mb"] >= big.baseline_mb + 180
    per_epoch = [v for _, v in read_scalars(tmp_path)["peak_memory_mb"]]
    assert len(per_epoch) == EPOCHS
    assert per_epoch == sorted(per_epoch)  # peak so far never decreases
    assert per_epoch[-1] == pytest.approx(res1["peak_memory_mb"], rel=1e-6)

    # A second trial without the allocation must not inherit the first's peak.
    mem2 = PeakMemory()
    fit(make_model(), [mem2])
    assert mem2.results()["peak_memory_mb"] < res1["peak_memory_mb"] - 150


def test_peak_memory_of_a_later_trial_leaves_out_what_earlier_ones_left():
    """With a shared FirstTrialStart, memory held from before a trial does not count as the trial's."""
    start = FirstTrialStart()
    first = PeakMemory(first_trial_start=start)
    fit(make_model(), [first])
    left_over = np.ones(300 * MIB // 8)  # what an earlier trial might have left resident
    big = BigAllocation()
    second = PeakMemory(first_trial_start=start)
    fit(make_model(), [big, second])
    figures = second.results()
    print(f"\nfirst trial's start {start.rss_mb:.0f} MiB; second trial reported {figures['peak_memory_mb']:.0f}, "
          f"its process peak {figures['process_peak_memory_mb']:.0f}")
    assert figures["process_peak_memory_mb"] >= start.rss_mb + 300 + 180
    assert start.rss_mb + 180 <= figures["peak_memory_mb"] <= start.rss_mb + 280
    assert first.results()["peak_memory_mb"] < start.rss_mb + 100
    del left_over


@pytest.mark.parametrize("how", ["unwritable_clear_refs", "force_sampling"])
def test_peak_memory_sampling_fallback(how, monkeypatch):
    if how == "unwritable_clear_refs":
        monkeypatch.setattr(peak_memory_module, "CLEAR_REFS_PATH", "/nonexistent/dir/clear_refs")
        mem = PeakMemory()
    else:
        mem = PeakMemory(force_sampling=True)
    big = BigAllocation()
    fit(make_model(), [big, mem])
    res = mem.results()
    assert mem.method == "sampling"
    assert res["memory_kind"] == "host_rss"
    assert res["peak_memory_mb"] >= big.baseline_mb + 180
    assert mem._sampler is None  # thread stopped at train end
    assert_plain(res)


def test_peak_memory_gpu_path_with_fake_device(monkeypatch, tmp_path):
    # No GPU here: fake TF's device list and memory stats, drive the hooks directly.
    calls = []
    peaks = iter([3 * MIB, 5 * MIB])
    monkeypatch.setattr(tf.config, "list_logical_devices", lambda kind=None: ["GPU:0"])
    monkeypatch.setattr(tf.config.experimental, "reset_memory_stats", calls.append)
    monkeypatch.setattr(
        tf.config.experimental, "get_memory_info", lambda dev: {"current": 0, "peak": next(peaks)}
    )
    writer = create_writer(str(tmp_path))
    mem = PeakMemory(writer=writer)
    mem.on_train_begin()
    mem.on_epoch_end(0)
    mem.on_train_end()
    writer.close()
    assert calls == ["GPU:0"]
    assert mem.results() == {"peak_memory_mb": 5.0, "memory_kind": "gpu"}
    assert read_scalars(tmp_path)["peak_memory_mb"] == [(0, 3.0)]


def lora_model():
    model = keras.Sequential(
        [
            keras.Input((16,)),
            keras.layers.Dense(32, name="frozen"),
            keras.layers.Dense(8, name="lora"),
            keras.layers.Dense(1, name="head"),
        ]
    )
    model.get_layer("frozen").trainable = False
    model.get_layer("lora").enable_lora(2)
    model.compile(optimizer="adam", loss="mse")
    return model


def test_parameter_count_lora_and_frozen(tmp_path):
    model = lora_model()
    writer = create_writer(str(tmp_path))
    cb = ParameterCount(writer=writer)
    fit(model, [cb], epochs=1, validation=False)
    writer.close()

    frozen = 16 * 32 + 32  # kernel + bias, layer frozen
    lora_kernel = 32 * 8  # frozen by enable_lora
    lora_adapters = 32 * 2 + 2 * 8  # lora_kernel_a (32x2) + lora_kernel_b (2x8)
    lora_bias = 8  # the bias stays trainable under LoRA
    head = 8 * 1 + 1
    trainable = lora_adapters + lora_bias + head
    total = frozen + lora_kernel + lora_adapters + lora_bias + head

    res = cb.results()
    assert res == {
        "trainable_params": trainable,
        "total_params": total,
        "trainable_percent": pytest.approx(100 * trainable / total),
    }
    assert res["total_params"] == model.count_params()
    assert_plain(res)
    scalars = read_scalars(tmp_path)
    assert scalars["trainable_params"] == [(0, trainable)]
    assert scalars["total_params"] == [(0, total)]


def test_callbacks_without_writer_and_before_fit():
    # results() before any fit must still be plain values, not crash.
    for cb in [EpochTimer(1), PeakMemory(), ParameterCount(), LossScalars()]:
        assert_plain(cb.results())
    assert not math.isnan(EpochTimer(1).results()["tokens_per_s"])


class WithBackbone(keras.Model):
    """A model holding a keras-hub backbone as `backbone`, as lora-keras's `TokenLossSeq2SeqLM` does."""

    def __init__(self, backbone):
        super().__init__()
        self.backbone = backbone

    def call(self, inputs):
        return self.backbone(inputs)


def test_parameter_count_of_lora_adapters_is_one_adapter_at_its_own_rank(tmp_path):
    """A backbone of 3 slots padded to rank 8: each slot counts as an adapter of its rank trained alone."""
    import keras_hub
    from conftest import tiny_backbone_kwargs

    from lora_keras.adapters import LoraConfig, add_lora, set_slot

    keras.utils.set_random_seed(0)
    backbone = keras_hub.models.T5Backbone(**tiny_backbone_kwargs(120))
    base = sum(int(np.prod(v.shape)) for v in backbone.weights)
    add_lora(backbone, LoraConfig(rank=2, targets=("q", "v")), seed=0, slots=3, max_rank=8)
    set_slot(backbone, 1, LoraConfig(rank=8, targets=("q", "v")), seed=1)
    model = WithBackbone(backbone)
    # q and v of 6 attentions (2 encoder self, 2 x 2 decoder self and cross), each 32 x 32: rank * (32 + 32).
    per_rank = 6 * 2 * (32 + 32)
    padded = sum(int(np.prod(v.shape)) for v in model.trainable_weights)
    assert padded == 3 * 8 * per_rank  # what the model holds: 3 slots of rank 8
    for slot, rank in ((0, 2), (1, 8)):
        writer = create_writer(str(tmp_path / f"slot_{slot}"))
        cb = ParameterCount(writer=writer, slot=slot)
        cb.set_model(model)
        cb.on_train_begin()
        writer.close()
        trainable, total = rank * per_rank, base + rank * per_rank
        assert cb.results() == {"trainable_params": trainable, "total_params": total,
                                "trainable_percent": pytest.approx(100 * trainable / total)}
        assert_plain(cb.results())
        scalars = read_scalars(tmp_path / f"slot_{slot}")
        assert scalars["trainable_params"] == [(0, trainable)] and scalars["total_params"] == [(0, total)]
