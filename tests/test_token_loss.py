"""Losses per real target token: the step's loss, the epoch's `loss` log, `val_loss` and `evaluate`."""

import keras
import keras_hub
import numpy as np
import pytest

from conftest import tiny_backbone_kwargs
from lora_keras.data.pipeline import TokenizedPairs, make_dataset
from lora_keras.models.token_loss import TokenAccuracy, TokenLossSeq2SeqLM, perplexity

VOCAB = 60


@pytest.fixture(scope="module")
def model_and_pairs():
    """A tiny random T5 and 21 pairs of very different lengths (batches trim to different widths)."""
    keras.utils.set_random_seed(0)
    model = TokenLossSeq2SeqLM(backbone=keras_hub.models.T5Backbone(**tiny_backbone_kwargs(VOCAB)), preprocessor=None)
    rng = np.random.default_rng(0)
    sources, targets = np.zeros((21, 12), np.int32), np.zeros((21, 10), np.int32)
    for row in range(21):
        for matrix in (sources, targets):
            length = int(rng.integers(2, matrix.shape[1] + 1)) if row % 3 else 2
            matrix[row, :length] = rng.integers(3, VOCAB, length)
            matrix[row, length - 1] = 1
    return model, TokenizedPairs(sources, targets)


def numpy_nll(model, pairs):
    """Per-token negative log-likelihoods and the padding mask, computed outside Keras (float64)."""
    inputs, labels, mask = pairs.model_inputs()
    logits = np.asarray(model(inputs, training=False), np.float64)
    shifted = logits - logits.max(-1, keepdims=True)
    log_probs = shifted - np.log(np.exp(shifted).sum(-1, keepdims=True))
    return -np.take_along_axis(log_probs, labels[..., None], -1)[..., 0], mask, logits


def test_logged_losses_are_summed_nll_over_all_real_tokens(model_and_pairs):
    model, pairs = model_and_pairs
    nll, mask, _ = numpy_nll(model, pairs)
    per_token = (nll * mask).sum() / mask.sum()
    # What the old reduction reported: each batch's sum over every position, padding included.
    padded_positions = np.mean([(nll[i:i + 4] * mask[i:i + 4]).sum() / mask[i:i + 4].size for i in range(0, 21, 4)])
    model.compile(optimizer=keras.optimizers.Adam(0.0))  # weights stay: every pass sees one model
    history = model.fit(make_dataset(pairs, 4), validation_data=make_dataset(pairs, 5), epochs=1, verbose=0)
    for batch_size in (7, 64):  # padded batches of different shapes; the fit above used 4 and 5
        assert model.evaluate(make_dataset(pairs, batch_size), verbose=0) == pytest.approx(per_token, rel=1e-6)
    assert history.history["loss"][0] == pytest.approx(per_token, rel=1e-6)
    assert history.history["val_loss"][0] == pytest.approx(per_token, rel=1e-6)
    assert abs(padded_positions - per_token) > 0.1 * per_token  # the definitions really differ here


def test_each_step_minimises_its_batch_mean_per_real_token(model_and_pairs):
    model, pairs = model_and_pairs
    nll, mask, _ = numpy_nll(model, pairs)
    inputs, labels, weights = next(iter(make_dataset(pairs, 6)))
    model.compile(optimizer=keras.optimizers.Adam(0.0))
    step_loss = model.compute_loss(inputs, labels, model(inputs, training=False), weights, training=False)
    expected = (nll[:6] * mask[:6]).sum() / mask[:6].sum()
    assert float(step_loss) == pytest.approx(expected, rel=1e-6)


def test_token_accuracy_counts_real_tokens(model_and_pairs):
    model, pairs = model_and_pairs
    _, mask, logits = numpy_nll(model, pairs)
    labels = pairs.model_inputs()[1]
    expected = ((logits.argmax(-1) == labels) * mask).sum() / mask.sum()
    accuracy = TokenAccuracy()
    for start in range(0, 21, 4):
        batch = slice(start, start + 4)
        width = int(mask[batch].sum(1).max())
        accuracy.update_state(labels[batch, :width], logits[batch, :width], mask[batch, :width])
    assert float(accuracy.result()) == pytest.approx(expected, rel=1e-6)


def test_perplexity():
    assert perplexity(None) is None
    assert perplexity(np.log(7.0)) == pytest.approx(7.0)
    assert perplexity(1e4) == float("inf")


@pytest.mark.e2e
def test_a_data_parallel_step_is_the_one_device_step():
    """Mirrored over two CPU devices whose halves of the batch hold 32 and 8 real tokens (own process)."""
    import json
    import subprocess
    import sys

    from conftest import ROOT

    result = subprocess.run([sys.executable, str(ROOT / "tests" / "mirrored_step.py")], capture_output=True,
                            text=True, timeout=300, cwd=ROOT)
    assert result.returncode == 0, result.stderr[-3000:]
    figures = json.loads(result.stdout.strip().splitlines()[-1])
    assert figures["eval"][1] == pytest.approx(figures["eval"][0], rel=1e-6)
    assert figures["train"][1] == pytest.approx(figures["train"][0], rel=1e-6)
    # Per-replica means averaged would move B by about 1e-3 more here.
    assert figures["max_weight_difference"] < 1e-6 < 1e-3 < figures["max_weight_change"]


def test_token_mean_sums_as_exactly_as_float64_in_float32_variables():
    """Kahan-compensated float32 sums (every backend; JAX has no float64 by default) against math.fsum."""
    import math

    from lora_keras.models.token_loss import TokenMean

    rng = np.random.default_rng(0)
    totals = np.concatenate([[3e5], rng.uniform(0.001, 0.01, 3000)]).astype(np.float32)
    metric = TokenMean()
    for total in totals:
        metric.update_state(total, 1.0)
    exact = math.fsum(float(t) for t in totals) / len(totals)
    naive = float(np.cumsum(totals, dtype=np.float32)[-1]) / len(totals)
    assert abs(naive - exact) / exact > 1e-6  # a plain float32 sum loses the small ones here
    assert float(metric.result()) == pytest.approx(exact, rel=1e-7)
