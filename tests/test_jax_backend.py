"""The trial path on Keras's JAX backend with TensorFlow unimportable, as on GPU machines that have JAX but no TensorFlow."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from conftest import ROOT, TINY_PREFIX
from lora_keras.data.pipeline import NumpyBatches, make_dataset, tokenize_pairs
from lora_keras.models.demo import corpus as demo_corpus
from lora_keras.models.tokenizer import SentencePieceIds, train_sentencepiece
from lora_keras.runtime.xla import bucket_length


def test_sentencepiece_alone_gives_keras_hubs_ids(tiny_preset):
    import keras_hub

    keras_tokenizer = keras_hub.models.T5Tokenizer.from_preset(str(tiny_preset))
    plain = SentencePieceIds((tiny_preset / "assets" / "tokenizer" / "vocabulary.spm").read_bytes())
    pairs = demo_corpus.generate_pairs("Dravic", 40, seed=5, split="val")
    for tokenizer_a, tokenizer_b in ((keras_tokenizer, plain),):
        a = tokenize_pairs(tokenizer_a, pairs, TINY_PREFIX)
        b = tokenize_pairs(tokenizer_b, pairs, TINY_PREFIX)
        np.testing.assert_array_equal(a.source_ids, b.source_ids)
        np.testing.assert_array_equal(a.target_ids, b.target_ids)
    assert plain.vocabulary_size() == keras_tokenizer.vocabulary_size()


def test_numpy_batches_match_the_tf_data_batches():
    pairs = demo_corpus.generate_pairs("Dravic", 50, seed=1)
    tokenizer = SentencePieceIds(train_sentencepiece([s for s, _ in pairs] + [t for _, t in pairs], 200))
    tokens = tokenize_pairs(tokenizer, pairs, TINY_PREFIX)
    for multiple in (None, 16):
        ours = NumpyBatches(tokens, 16, length_multiple=multiple)
        theirs = list(make_dataset(tokens, 16, length_multiple=multiple))  # TensorFlow backend here
        assert len(ours) == len(theirs) == 4
        for (inputs, labels, weights), (tf_inputs, tf_labels, tf_weights) in zip(ours, theirs):
            for name in inputs:
                np.testing.assert_array_equal(inputs[name], tf_inputs[name].numpy())
            np.testing.assert_array_equal(labels, tf_labels.numpy())
            np.testing.assert_array_equal(weights, tf_weights.numpy())
            if multiple:
                width = tokens.source_ids.shape[1]
                assert inputs["encoder_token_ids"].shape[1] in {bucket_length(n, 16, width) for n in range(1, 65)}
    shuffled = NumpyBatches(tokens, 50, shuffle=True, seed=3)
    first = shuffled[0][1]
    shuffled.on_epoch_end()
    assert sorted(map(tuple, first)) == sorted(map(tuple, shuffled[0][1]))  # the same pairs ...
    assert not np.array_equal(first, shuffled[0][1])  # ... in another order each epoch


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
