"""The trial path on Keras's JAX backend with TensorFlow unimportable, as on GPU machines that have JAX but no TensorFlow."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from conftest import ROOT, TINY_PREFIX
from lora_keras.data.pipeline import make_dataset, tokenize_pairs
from lora_keras.models.demo import corpus as demo_corpus
from lora_keras.runtime.xla import bucket_length


def test_keras_hubs_tokenizer_gives_sentencepieces_own_ids(tiny_preset):
    """keras-hub's T5Tokenizer (what every backend tokenizes with) against `sentencepiece` itself."""
    import keras_hub
    import sentencepiece

    keras_tokenizer = keras_hub.models.T5Tokenizer.from_preset(str(tiny_preset))
    processor = sentencepiece.SentencePieceProcessor(
        model_proto=(tiny_preset / "assets" / "tokenizer" / "vocabulary.spm").read_bytes())
    pairs = demo_corpus.generate_pairs("Dravic", 40, seed=5, split="val")
    tokens = tokenize_pairs(keras_tokenizer, pairs, TINY_PREFIX)
    for row, (source, _) in zip(tokens.source_ids, pairs):
        assert list(row[row != 0]) == processor.encode(TINY_PREFIX + source) + [1]  # EOS added by encode


def as_numpy(batch):
    import keras

    return keras.tree.map_structure(np.asarray, batch)


def test_numpy_batches_match_the_tf_data_batches():
    """Every backend's batches: the same rows, cut, padding and order, epoch after epoch, repeated and stacked."""
    import keras_hub

    from lora_keras.backends.batches import EpochOrders, NumpyBatches, repeat_batches, stack_batches
    from lora_keras.data.pipeline import epoch_order, repeat_for_slots, stack_for_slots
    from lora_keras.models.tokenizer import train_sentencepiece

    pairs = demo_corpus.generate_pairs("Dravic", 50, seed=1)
    tokenizer = keras_hub.models.T5Tokenizer(
        proto=train_sentencepiece([s for s, _ in pairs] + [t for _, t in pairs], 200))
    tokens = tokenize_pairs(tokenizer, pairs, TINY_PREFIX)

    def numpy_batches(multiple, seed=None):
        order = None if seed is None else (lambda e: epoch_order(len(tokens), seed, e))
        return NumpyBatches(tokens.model_inputs(), 16, EpochOrders(len(tokens), order), multiple)

    def same(ours, theirs_pass):
        theirs = [as_numpy(batch) for batch in theirs_pass]
        assert len(ours) == len(theirs) == 4
        for index, (tf_inputs, tf_labels, tf_weights) in enumerate(theirs):
            inputs, labels, weights = ours[index]
            for name in inputs:
                np.testing.assert_array_equal(inputs[name], tf_inputs[name])
            np.testing.assert_array_equal(labels, tf_labels)
            np.testing.assert_array_equal(weights, tf_weights)

    for multiple in (None, 16):
        same(numpy_batches(multiple), make_dataset(tokens, 16, length_multiple=multiple))  # TensorFlow here
        if multiple:
            width = tokens.source_ids.shape[1]
            assert {b[0]["encoder_token_ids"].shape[1] for b in numpy_batches(multiple)} <= {
                bucket_length(n, 16, width) for n in range(1, 65)}
    # Shuffled: epoch after epoch, the same order on both (numpy's permutation for (seed, epoch)).
    ours, theirs = numpy_batches(None, seed=3), make_dataset(tokens, 16, shuffle=True, seed=3)
    first = [ours[i][1] for i in range(len(ours))]
    for _ in range(3):
        same(ours, theirs)
        ours.on_epoch_end()
    assert not np.array_equal(first[0], ours[0][1])  # another order each epoch
    # Packed slots: repeated rows, and two seeds' batches stacked (padded to the step's longest).
    same(repeat_batches(numpy_batches(16), 3), repeat_for_slots(make_dataset(tokens, 16, length_multiple=16), 3))
    same(stack_batches([numpy_batches(None, seed=1), numpy_batches(None, seed=2)]),
         stack_for_slots([make_dataset(tokens, 16, shuffle=True, seed=s) for s in (1, 2)]))


@pytest.mark.parametrize("backend", ["tensorflow", "jax"])
def test_fit_trains_on_each_epochs_order_on_every_backend(backend):
    """What `fit` trains on, epoch e: `epoch_order(seed, e)`. Keras on JAX peeks at a first batch and ends
    a "pass" before training; that peek must not cost the first epoch its order."""
    from lora_keras.data.pipeline import epoch_order

    path = [str(ROOT / "tests" / "no_tensorflow")] if backend == "jax" else []
    env = {**os.environ, "KERAS_BACKEND": backend, "PYTHONPATH": os.pathsep.join([*path, str(ROOT)])}
    done = subprocess.run([sys.executable, str(ROOT / "tests" / "fit_order.py")], capture_output=True, text=True,
                          timeout=600, env=env, cwd=ROOT)
    assert done.returncode == 0, done.stderr[-3000:]
    seen = json.loads(next(line for line in done.stdout.splitlines() if line.startswith("RESULT "))[7:])
    assert seen == [[int(i) + 3 for i in epoch_order(24, 5, epoch)] for epoch in range(3)]


@pytest.mark.e2e
def test_a_trial_runs_on_jax_without_tensorflow(tmp_path):
    env = {**os.environ, "KERAS_BACKEND": "jax",
           "PYTHONPATH": os.pathsep.join([str(ROOT / "tests" / "no_tensorflow"), str(ROOT)])}
    done = subprocess.run([sys.executable, str(ROOT / "tests" / "backend_trial.py"), str(tmp_path)],
                          capture_output=True, text=True, timeout=1800, env=env, cwd=ROOT)
    assert done.returncode == 0, done.stderr[-3000:]
    line = next(line for line in done.stdout.splitlines() if line.startswith("RESULT "))
    report = json.loads(line[len("RESULT "):])
    print("\n" + json.dumps({k: report[k] for k in ("shapes_bound", "exact_shapes")}))
    for name in ("xla", "eager", "bf16"):
        print(name, {k: report[name][k] for k in ("final_loss", "val_loss", "train_step_compiles", "tokens_per_s")})
    assert report["backend"] == "jax" and report["tensorflow_loaded"] is False

    xla, eager, bf16 = report["xla"], report["eager"], report["bf16"]
    # XLA changes how the step runs, not what it computes (padding to 16 is masked out).
    assert xla["final_loss"] == pytest.approx(eager["final_loss"], rel=1e-4)
    assert xla["val_loss"] == pytest.approx(eager["val_loss"], rel=1e-4)
    assert eager["train_step_compiles"] == 0
    # A handful of compiles, within the bound the ids alone give, not one per batch.
    # (cut exactly, the batches would take more shapes than that bound: the count can fail)
    assert 1 <= xla["train_step_compiles"] <= report["shapes_bound"] < report["exact_shapes"]
    assert bf16["val_loss"] == pytest.approx(xla["val_loss"], abs=0.02)
    assert xla["val_loss"] < np.log(300)  # it learned
    assert xla["peak_memory_mb"] > 0 and xla["memory_kind"] == "host_rss"
    assert xla["trainable_params"] == 6 * 4 * (32 + 32)  # q, v of encoder self, decoder self and cross attention

    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    from tensorboard.util.tensor_util import make_ndarray

    events = EventAccumulator(str(tmp_path / "xla"), size_guidance={"tensors": 0, "scalars": 0})
    events.Reload()
    tags = events.Tags()
    assert {"_hparams_/session_start_info", "_hparams_/session_end_info"} <= set(tags["tensors"])  # HParams row
    # TensorBoard's own writer stores scalars as tensors (as tf.summary does)
    written = {tag: [float(make_ndarray(e.tensor_proto)) for e in events.Tensors(tag)]
               for tag in tags["tensors"] if not tag.startswith("_hparams_")}
    assert written["val_loss"][-1] == pytest.approx(xla["val_loss"], rel=1e-6)
    assert written["tokens_per_s"][-1] == pytest.approx(xla["epoch_times_s"] and
                                                       report["train"] / xla["epoch_times_s"][-1], rel=1e-6)
