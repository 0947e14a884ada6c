"""Sentence pairs -> token ids (once per run) -> batches for `T5Seq2SeqLM`.

Batches are a `tf.data.Dataset` on TensorFlow (the default backend) and a Keras
`PyDataset` of numpy arrays on any other backend (JAX), which imports no TensorFlow.

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

import keras
import numpy as np

from lora_keras.runtime.backend import uses_tensorflow
from lora_keras.runtime.xla import bucket_length

if TYPE_CHECKING:
    import keras_hub
    import tensorflow as tf

PAD_ID = 0
EOS_ID = 1
PREFETCH_BATCHES = 2  # batches made ahead of the step (on a CPU they share its cores)


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
    texts = list(texts)
    if isinstance(tokenizer, keras.layers.Layer):  # keras-hub's tokenizers (TensorFlow) take string tensors
        import tensorflow as tf

        texts = tf.constant(texts)
    ids = tokenizer(texts)
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


def make_dataset(
    tokens: TokenizedPairs, batch_size: int, shuffle: bool = False, seed: int = 0, length_multiple: int | None = None,
) -> tf.data.Dataset | NumpyBatches:
    """Batches of `(inputs, labels, sample_weight)`; reshuffled each epoch when `shuffle`.

    Each batch is cut to its longest source and target, rounded up to a multiple of
    `length_multiple` (bounded shapes for XLA: `lora_keras.runtime.xla`).

    Args:
        tokens: the tokenized pairs.
        batch_size: pairs per batch; the last batch may be smaller.
        shuffle: reshuffle the pairs every epoch.
        seed: the shuffle's seed.
        length_multiple: round batch lengths up to a multiple of this; None cuts them exactly.

    Returns:
        A `tf.data.Dataset` for `fit` and `evaluate` on TensorFlow; a `NumpyBatches` on other backends.

    Example:
    ```python
    model.fit(make_dataset(tokens, batch_size=8, shuffle=True, seed=0))
    ```
    """
    if not uses_tensorflow():
        return NumpyBatches(tokens, batch_size, shuffle=shuffle, seed=seed, length_multiple=length_multiple)
    import tensorflow as tf

    dataset = tf.data.Dataset.from_tensor_slices(tokens.model_inputs())
    if shuffle:
        dataset = dataset.shuffle(len(tokens), seed=seed, reshuffle_each_iteration=True)
    widths = (tokens.source_ids.shape[1], tokens.target_ids.shape[1])
    return (
        dataset.batch(batch_size)
        .map(lambda *batch: _trim_padding(*batch, widths=widths, multiple=length_multiple))
        .prefetch(PREFETCH_BATCHES)
        .with_options(_options())
    )


def _options() -> tf.data.Options:
    """No tf.data autotuning: its model thread made freeing an iterator wait ~4 s.

    On the demo, `fit` returned 4.3 s after its last callback in most calls, blocked while it
    deleted its iterators (`prefetch(AUTOTUNE)`'s tuning thread); without autotuning it returns
    at once, and the step times are the same (docs/measured.md, "tf.data, the collector and the
    install").
    """
    import tensorflow as tf

    options = tf.data.Options()
    options.autotune.enabled = False
    return options


def _rounded(length: tf.Tensor, multiple: int | None, width: int) -> tf.Tensor:
    import tensorflow as tf

    if not multiple or multiple <= 1:
        return length
    return tf.minimum((length + multiple - 1) // multiple * multiple, width)


def _trim_padding(
    inputs: dict, labels: tf.Tensor, sample_weight: tf.Tensor, widths: tuple[int, int] = (0, 0),
    multiple: int | None = None,
) -> tuple[dict, tf.Tensor, tf.Tensor]:
    """Cut a batch to its longest source and target (rounded up to `multiple`): padding costs compute."""
    import tensorflow as tf

    source_length = _rounded(tf.reduce_max(tf.reduce_sum(inputs["encoder_padding_mask"], axis=1)), multiple, widths[0])
    target_length = _rounded(tf.reduce_max(tf.reduce_sum(inputs["decoder_padding_mask"], axis=1)), multiple, widths[1])
    trimmed = {
        name: value[:, :source_length] if name.startswith("encoder") else value[:, :target_length]
        for name, value in inputs.items()
    }
    return trimmed, labels[:, :target_length], sample_weight[:, :target_length]


def repeat_for_slots(dataset: tf.data.Dataset, slots: int) -> tf.data.Dataset:
    """Each batch of `dataset` repeated `slots` times along its rows: one copy per slot of a `LoraPack`.

    Configurations packed together with one seed share batch size and data order, so each sees
    the very batches it would see alone; slot `j` reads rows `j*b .. (j+1)*b - 1`.

    Example:
    ```python
    model.fit(repeat_for_slots(make_dataset(tokens, 8, shuffle=True), 3))   # batches of 24 rows
    ```
    """
    if slots == 1:
        return dataset
    import tensorflow as tf

    def repeat(inputs, labels, sample_weight):
        copies = lambda value: tf.concat([value] * slots, axis=0)  # noqa: E731
        return {name: copies(value) for name, value in inputs.items()}, copies(labels), copies(sample_weight)

    return dataset.map(repeat)


def stack_for_slots(datasets: Sequence[tf.data.Dataset]) -> tf.data.Dataset:
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
    if len(datasets) == 1:
        return datasets[0]
    import tensorflow as tf

    # A dataset given for several slots is iterated once: each iterator of a reshuffling dataset
    # draws the next order, so a second one would not read the first's batches.
    distinct = list({id(dataset): dataset for dataset in datasets}.values())
    sources = [next(i for i, d in enumerate(distinct) if d is dataset) for dataset in datasets]

    def stack(*distinct_batches):
        batches = [distinct_batches[source] for source in sources]
        source = tf.reduce_max([tf.shape(inputs["encoder_token_ids"])[1] for inputs, _, _ in batches])
        target = tf.reduce_max([tf.shape(labels)[1] for _, labels, _ in batches])

        def padded(value, length):
            return tf.pad(value, [[0, 0], [0, length - tf.shape(value)[1]]])

        inputs = {
            name: tf.concat([padded(b[0][name], source if name.startswith("encoder") else target) for b in batches], 0)
            for name in batches[0][0]
        }
        return (inputs, tf.concat([padded(b[1], target) for b in batches], 0),
                tf.concat([padded(b[2], target) for b in batches], 0))

    return tf.data.Dataset.zip(tuple(distinct)).map(stack).prefetch(PREFETCH_BATCHES).with_options(_options())


def labelled_inputs(
    tokens: TokenizedPairs, batch_size: int, slots: int = 1, length_multiple: int | None = None,
) -> tf.data.Dataset | keras.utils.PyDataset:
    """`make_dataset`'s batches in order as single dicts, labels and mask included: inputs for `predict`.

    `PairLosses` scores them: `predict` passes a model only its inputs, and a pair's loss
    needs its labels too. With `slots`, each batch is repeated for every slot (`repeat_for_slots`).

    Example: `PairLosses(model).predict(labelled_inputs(val_tokens, 64))`.
    """
    batches = make_dataset(tokens, batch_size, length_multiple=length_multiple)
    if isinstance(batches, NumpyBatches):
        return _Labelled(batches)
    return repeat_for_slots(batches, slots).map(
        lambda inputs, labels, sample_weight: ({**inputs, "labels": labels, "sample_weight": sample_weight},))


class NumpyBatches(keras.utils.PyDataset):
    """The batches of `make_dataset` as numpy arrays, for backends other than TensorFlow.

    The same cut to each batch's longest source and target (rounded up to `length_multiple`);
    with `shuffle`, epoch `e` takes the pairs in the order of `numpy.random.default_rng((seed, e))`.

    Example:
    ```python
    batches = NumpyBatches(tokens, batch_size=8, shuffle=True, seed=0)
    inputs, labels, sample_weight = batches[0]
    ```
    """

    def __init__(self, tokens: TokenizedPairs, batch_size: int, shuffle: bool = False, seed: int = 0,
                 length_multiple: int | None = None) -> None:
        super().__init__()
        self.inputs, self.labels, self.sample_weight = tokens.model_inputs()
        self.count = len(tokens)
        self.batch_size = batch_size
        self.shuffle = shuffle
        self.seed = seed
        self.length_multiple = length_multiple
        self.epoch = 0
        self.order = self._order()

    def _order(self) -> np.ndarray:
        if not self.shuffle:
            return np.arange(self.count)
        return np.random.default_rng((self.seed, self.epoch)).permutation(self.count)

    def __len__(self) -> int:
        return -(-self.count // self.batch_size)

    def __getitem__(self, index: int) -> tuple[dict, np.ndarray, np.ndarray]:
        rows = self.order[index * self.batch_size:(index + 1) * self.batch_size]
        inputs = {name: value[rows] for name, value in self.inputs.items()}
        source_width, target_width = inputs["encoder_token_ids"].shape[1], inputs["decoder_token_ids"].shape[1]
        source = bucket_length(int(inputs["encoder_padding_mask"].sum(axis=1).max()), self.length_multiple,
                               source_width)
        target = bucket_length(int(inputs["decoder_padding_mask"].sum(axis=1).max()), self.length_multiple,
                               target_width)
        trimmed = {
            name: value[:, :source] if name.startswith("encoder") else value[:, :target]
            for name, value in inputs.items()
        }
        return trimmed, self.labels[rows, :target], self.sample_weight[rows, :target]

    def on_epoch_end(self) -> None:
        self.epoch += 1
        self.order = self._order()


class _Labelled(keras.utils.PyDataset):
    """`NumpyBatches` as single dicts with labels and mask (`labelled_inputs` on other backends)."""

    def __init__(self, batches: NumpyBatches) -> None:
        super().__init__()
        self.batches = batches

    def __len__(self) -> int:
        return len(self.batches)

    def __getitem__(self, index: int) -> tuple[dict]:
        inputs, labels, sample_weight = self.batches[index]
        return ({**inputs, "labels": labels, "sample_weight": sample_weight},)
