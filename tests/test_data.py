"""Tokenization once per run and the tf.data batches fed to T5Seq2SeqLM."""

import keras_hub
import numpy as np

from conftest import TINY_PREFIX
from lora_keras.data.pipeline import EOS_ID, PAD_ID, TokenizedPairs, make_dataset, tokenize_pairs
from lora_keras.models.tokenizer import train_sentencepiece

PAIRS = [("the red dog runs .", "reve dog ri ."), ("a cat .", "cat ."), ("my two big houses fall .", "x y z w v u .")]


def make_tokenizer():
    texts = [TINY_PREFIX + s for s, _ in PAIRS] * 20 + [t for _, t in PAIRS] * 20
    return keras_hub.models.T5Tokenizer(proto=train_sentencepiece(texts, 40))


def test_sentencepiece_has_t5_special_ids():
    tokenizer = make_tokenizer()
    assert tokenizer.id_to_token(0) == "<pad>"
    assert tokenizer.id_to_token(1) == "</s>"
    assert tokenizer.id_to_token(2) == "<unk>"
    assert train_sentencepiece(["a b c"] * 30, 12) == train_sentencepiece(["a b c"] * 30, 12)


def test_tokenize_pads_ends_with_eos_and_truncates():
    tokenizer = make_tokenizer()
    tokens = tokenize_pairs(tokenizer, PAIRS, TINY_PREFIX, max_source_length=64, max_target_length=4)
    assert tokens.target_ids.shape == (3, 4)
    for row in tokens.target_ids:
        real = row[row != PAD_ID]
        assert real[-1] == EOS_ID and len(real) <= 4
    assert tokens.token_count == int((tokens.source_ids != 0).sum() + (tokens.target_ids != 0).sum())


def test_batches_are_teacher_forced_and_trimmed():
    tokens = tokenize_pairs(make_tokenizer(), PAIRS, TINY_PREFIX)
    inputs, labels, weights = next(iter(make_dataset(tokens, batch_size=2)))
    labels = labels.numpy()
    decoder = inputs["decoder_token_ids"].numpy()
    assert (decoder[:, 0] == PAD_ID).all()
    np.testing.assert_array_equal(decoder[:, 1:], labels[:, :-1])
    np.testing.assert_array_equal(weights.numpy(), (labels != PAD_ID).astype("float32"))
    longest = int((tokens.target_ids[:2] != PAD_ID).sum(axis=1).max())
    assert labels.shape == (2, longest)  # padded to the batch's longest, not the corpus's


def order(dataset):
    """The examples of one pass over `dataset`, by the number each carries as its first source id."""
    return [int(row[0]) for inputs, _, _ in dataset for row in inputs["encoder_token_ids"].numpy()]


def test_shuffle_is_seeded_and_reshuffles_each_epoch():
    # Thirty distinct examples: example i has source ids (i + 3, 1), so its order can be read back.
    ids = np.stack([np.arange(3, 33), np.ones(30)], axis=1).astype(np.int32)
    tokens = TokenizedPairs(ids, ids.copy())
    assert order(make_dataset(tokens, 4)) == list(range(3, 33))  # unshuffled: as given
    dataset = make_dataset(tokens, 4, shuffle=True, seed=3)
    epochs = [order(dataset) for _ in range(3)]  # each pass is an epoch of `fit`
    assert all(sorted(epoch) == list(range(3, 33)) for epoch in epochs)  # every example once
    assert all(epoch != list(range(3, 33)) for epoch in epochs)
    assert epochs[0] != epochs[1] != epochs[2] != epochs[0]  # a new order each epoch
    # Epoch e's order is numpy's permutation for (seed, e), whatever the backend (`epoch_order`).
    assert epochs == [[int(i) + 3 for i in np.random.default_rng((3, e)).permutation(30)] for e in range(3)]
    again = make_dataset(tokens, 4, shuffle=True, seed=3)
    assert [order(again) for _ in range(3)] == epochs  # the same seed, the same orders
    assert order(make_dataset(tokens, 4, shuffle=True, seed=4)) != epochs[0]


def test_batches_run_without_tf_data_autotuning():
    """With autotuning, deleting an iterator waited ~4 s for its tuning thread: `fit` returned 4 s late."""
    from lora_keras.data.pipeline import repeat_for_slots

    tokens = tokenize_pairs(make_tokenizer(), PAIRS, TINY_PREFIX)
    for dataset in (make_dataset(tokens, 2), make_dataset(tokens, 2, shuffle=True),
                    repeat_for_slots(make_dataset(tokens, 2), 3)):
        assert dataset.options().autotune.enabled is False
