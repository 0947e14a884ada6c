"""Sentence pairs -> token ids (once per run) -> `tf.data` batches for `T5Seq2SeqLM`.

Example:
```python
tokens = tokenize_pairs(tokenizer, pairs, prefix="translate English to French: ")
dataset = make_dataset(tokens, batch_size=8, shuffle=True, seed=0)
```
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING

import numpy as np
import tensorflow as tf

if TYPE_CHECKING:
    import keras_hub

PAD_ID = 0
EOS_ID = 1


@dataclasses.dataclass(frozen=True)
class TokenizedPairs:
    """Padded `int32` id matrices: sources `(n, S)` and targets `(n, T)` ending in EOS.

    Args:
        source_ids: `(n, S)` source ids, padded with `PAD_ID`.
        target_ids: `(n, T)` target ids ending in `EOS_ID`, padded with `PAD_ID`.

    Example:
    ```python
    tokens = tokenize_pairs(tokenizer, [("the cat .", "le chat .")])
    len(tokens), tokens.token_count   # (1, 9)
    ```
    """

    source_ids: np.ndarray
    target_ids: np.ndarray

    def __len__(self) -> int:
        return len(self.source_ids)

    @property
    def token_count(self) -> int:
        """Real (non-padding) source plus target tokens: one epoch's work."""
        return int((self.source_ids != PAD_ID).sum() + (self.target_ids != PAD_ID).sum())

    def model_inputs(self) -> tuple[dict[str, np.ndarray], np.ndarray, np.ndarray]:
        """`(inputs, labels, sample_weight)` for `T5Seq2SeqLM.fit`, teacher forced.

        Example:
        ```python
        inputs, labels, sample_weight = tokens.model_inputs()
        model.fit(inputs, labels, sample_weight=sample_weight)
        ```
        """
        target = self.target_ids
        # T5 starts decoding from the pad id; the decoder reads the target shifted right.
        decoder_ids = np.concatenate(
            [np.full((len(target), 1), PAD_ID, np.int32), target[:, :-1]], axis=1
        )
        target_mask = (target != PAD_ID).astype(np.int32)
        inputs = {
            "encoder_token_ids": self.source_ids,
            "encoder_padding_mask": (self.source_ids != PAD_ID).astype(np.int32),
            "decoder_token_ids": decoder_ids,
            "decoder_padding_mask": target_mask,
        }
        return inputs, target, target_mask.astype(np.float32)


def _pad(rows: list[list[int]], length: int) -> np.ndarray:
    matrix = np.zeros((len(rows), length), np.int32)
    for index, row in enumerate(rows):
        matrix[index, : len(row)] = row
    return matrix


def encode(tokenizer: keras_hub.models.T5Tokenizer, texts: Iterable[str], max_length: int) -> list[list[int]]:
    """Token id lists, truncated to `max_length - 1` and ended with EOS.

    Example:
    ```python
    encode(tokenizer, ["the cat ."], 64)   # [[5, 9, 4, 1]]
    ```
    """
    ids = tokenizer(tf.constant(list(texts)))
    ids = ids.to_list() if hasattr(ids, "to_list") else ids  # ragged tensor or lists
    return [list(row[: max_length - 1]) + [EOS_ID] for row in ids]


def tokenize_pairs(
    tokenizer: keras_hub.models.T5Tokenizer,
    pairs: Sequence[tuple[str, str]],
    prefix: str = "",
    max_source_length: int = 64,
    max_target_length: int = 64,
) -> TokenizedPairs:
    """Tokenize `(source, target)` pairs with the task `prefix` on each source.

    Args:
        tokenizer: the base's tokenizer.
        pairs: `(source, target)` sentences, e.g. from `read_pairs`.
        prefix: the task prefix put before each source.
        max_source_length: source tokens kept, EOS included.
        max_target_length: target tokens kept, EOS included.

    Returns:
        The padded id matrices.

    Example:
    ```python
    tokens = tokenize_pairs(tokenizer, pairs, prefix="translate English to French: ")
    ```
    """
    sources = encode(tokenizer, [prefix + source for source, _ in pairs], max_source_length)
    targets = encode(tokenizer, [target for _, target in pairs], max_target_length)
    return TokenizedPairs(
        _pad(sources, max(map(len, sources))), _pad(targets, max(map(len, targets)))
    )


def make_dataset(tokens: TokenizedPairs, batch_size: int, shuffle: bool = False, seed: int = 0) -> tf.data.Dataset:
    """Batches of `(inputs, labels, sample_weight)`; reshuffled each epoch when `shuffle`.

    Each batch is cut to its longest source and target.

    Args:
        tokens: the tokenized pairs.
        batch_size: pairs per batch; the last batch may be smaller.
        shuffle: reshuffle the pairs every epoch.
        seed: the shuffle's seed.

    Returns:
        A `tf.data.Dataset` for `fit` and `evaluate`.

    Example:
    ```python
    model.fit(make_dataset(tokens, batch_size=8, shuffle=True, seed=0))
    ```
    """
    dataset = tf.data.Dataset.from_tensor_slices(tokens.model_inputs())
    if shuffle:
        dataset = dataset.shuffle(len(tokens), seed=seed, reshuffle_each_iteration=True)
    return dataset.batch(batch_size).map(_trim_padding).prefetch(tf.data.AUTOTUNE)


def _trim_padding(inputs: dict, labels: tf.Tensor, sample_weight: tf.Tensor) -> tuple[dict, tf.Tensor, tf.Tensor]:
    """Cut a batch to its longest source and target: padding costs compute."""
    source_length = tf.reduce_max(tf.reduce_sum(inputs["encoder_padding_mask"], axis=1))
    target_length = tf.reduce_max(tf.reduce_sum(inputs["decoder_padding_mask"], axis=1))
    trimmed = {
        name: value[:, :source_length] if name.startswith("encoder") else value[:, :target_length]
        for name, value in inputs.items()
    }
    return trimmed, labels[:, :target_length], sample_weight[:, :target_length]


def repeat_for_slots(dataset: tf.data.Dataset, slots: int) -> tf.data.Dataset:
    """Each batch of `dataset` repeated `slots` times along its rows: one copy per slot of a `LoraPack`.

    Configurations packed together share batch size and seed, so each sees the very batches
    it would see alone; slot `j` reads rows `j*b .. (j+1)*b - 1`.

    Example:
    ```python
    model.fit(repeat_for_slots(make_dataset(tokens, 8, shuffle=True), 3))   # batches of 24 rows
    ```
    """
    if slots == 1:
        return dataset

    def repeat(inputs, labels, sample_weight):
        copies = lambda value: tf.concat([value] * slots, axis=0)  # noqa: E731
        return {name: copies(value) for name, value in inputs.items()}, copies(labels), copies(sample_weight)

    return dataset.map(repeat)
