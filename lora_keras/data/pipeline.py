"""Sentence pairs -> token ids (once per run) -> batches for `T5Seq2SeqLM`.

Batches are a `tf.data.Dataset` on TensorFlow (the default backend) and a Keras
`PyDataset` of numpy arrays on any other backend (JAX): `lora_keras.backends.batches`, in one
order on every backend (`epoch_order`).

Example:
```python
tokens = tokenize_pairs(tokenizer, pairs, prefix="translate English to French: ")
dataset = make_dataset(tokens, batch_size=8, shuffle=True, seed=0)
```
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from lora_keras.backends.batches import EpochOrders, labelled_batches, make_batches, repeat_batches, stack_batches

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
    ids = tokenizer(list(texts))  # keras-hub's tokenizers take lists on every backend
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


def epoch_order(count: int, seed: int, epoch: int) -> np.ndarray:
    """The order of `count` pairs in `epoch` of a run shuffled with `seed`: the same on every backend.

    Example: `epoch_order(5, seed=0, epoch=1)` -> a permutation of `range(5)`, numpy's `default_rng((0, 1))`.
    """
    return np.random.default_rng((seed, epoch)).permutation(count)


def make_dataset(
    tokens: TokenizedPairs, batch_size: int, shuffle: bool = False, seed: int = 0, length_multiple: int | None = None,
) -> Any:
    """Batches of `(inputs, labels, sample_weight)`; reshuffled each epoch when `shuffle`.

    Each batch is cut to its longest source and target, rounded up to a multiple of
    `length_multiple` (bounded shapes for XLA: `lora_keras.runtime.xla`). With `shuffle`, the
    dataset's `e`-th pass takes the pairs in `epoch_order(len(tokens), seed, e)`, on every backend.

    Args:
        tokens: the tokenized pairs.
        batch_size: pairs per batch; the last batch may be smaller.
        shuffle: reshuffle the pairs every epoch.
        seed: the shuffle's seed.
        length_multiple: round batch lengths up to a multiple of this; None cuts them exactly.

    Returns:
        A `tf.data.Dataset` on TensorFlow; a Keras `PyDataset` of numpy arrays on other backends
        (`lora_keras.backends.batches`).

    Example:
    ```python
    model.fit(make_dataset(tokens, batch_size=8, shuffle=True, seed=0))
    ```
    """
    count = len(tokens)
    orders = EpochOrders(count, (lambda epoch: epoch_order(count, seed, epoch)) if shuffle else None)
    return make_batches(tokens.model_inputs(), batch_size, orders, length_multiple)


def repeat_for_slots(dataset: Any, slots: int) -> Any:
    """Each batch of `dataset` repeated `slots` times along its rows: one copy per slot of a `LoraPack`.

    Configurations packed together with one seed share batch size and data order, so each sees
    the very batches it would see alone; slot `j` reads rows `j*b .. (j+1)*b - 1`.

    Example:
    ```python
    model.fit(repeat_for_slots(make_dataset(tokens, 8, shuffle=True), 3))   # batches of 24 rows
    ```
    """
    return repeat_batches(dataset, slots)


def stack_for_slots(datasets: Sequence[Any]) -> Any:
    """One batch of each dataset per step, stacked along the rows: slot `j` reads `datasets[j]`.

    Repeats of a configuration (`--repeats`) train in one step, each on its own seed's data
    order: each slot's batch is padded to the step's longest source and target (padding is
    masked out of every loss, so a slot trains as it would alone), then the slots' batches are
    concatenated. Slots of one seed take the same dataset (read once per step); when every slot
    does, `repeat_for_slots` is the cheaper form.

    Example:
    ```python
    orders = [make_dataset(tokens, 8, shuffle=True, seed=seed) for seed in (0, 1, 2)]
    model.fit(stack_for_slots(orders))   # batches of 24 rows: seed 0's, then 1's, then 2's
    ```
    """
    return stack_batches(datasets)


def labelled_inputs(
    tokens: TokenizedPairs, batch_size: int, slots: int = 1, length_multiple: int | None = None,
) -> Any:
    """`make_dataset`'s batches in order as single dicts, labels and mask included: inputs for `predict`.

    `PairLosses` scores them: `predict` passes a model only its inputs, and a pair's loss
    needs its labels too. With `slots`, each batch is repeated for every slot (`repeat_for_slots`).

    Example: `PairLosses(model).predict(labelled_inputs(val_tokens, 64))`.
    """
    return labelled_batches(repeat_for_slots(make_dataset(tokens, batch_size, length_multiple=length_multiple), slots))
