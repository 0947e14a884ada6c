"""Batches, per backend: `tf.data` pipelines on TensorFlow, Keras `PyDataset`s of numpy arrays on any other.

Both cut each batch to its longest source and target (rounded up to a multiple for XLA:
`lora_keras.runtime.xla.bucket_length`) and take the pairs in one order, chosen without the
backend (`lora_keras.data.pipeline.epoch_order`: epoch `e` of seed `s` is numpy's
`default_rng((s, e))` permutation), so a trial sees the same batches on every backend.
The public functions are `lora_keras.data.pipeline`'s (`make_dataset`, `repeat_for_slots`,
`stack_for_slots`, `labelled_inputs`); this module holds what they do per backend.

Example:
```python
batches = make_batches(tokens, 8, orders=EpochOrders(len(tokens), seed=0), length_multiple=16)
model.fit(repeat_batches(batches, 3))     # each batch three times along its rows: one per slot
```
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import keras
import numpy as np

from lora_keras.backends import uses_tensorflow
from lora_keras.runtime.xla import bucket_length

PREFETCH_BATCHES = 2  # batches made ahead of the step (on a CPU they share its cores)


class EpochOrders:
    """The order of the pairs in each epoch: call it for the next epoch's, from epoch 0.

    Args:
        count: the pairs.
        order: `order(epoch)` -> a permutation of `range(count)`; None keeps the pairs as given.

    Example: `orders = EpochOrders(4, lambda e: np.random.default_rng((0, e)).permutation(4)); orders()`.
    """

    def __init__(self, count: int, order: Callable[[int], np.ndarray] | None = None) -> None:
        self.count = count
        self.order = order
        self.epoch = 0

    @property
    def shuffles(self) -> bool:
        return self.order is not None

    def __call__(self) -> np.ndarray:
        rows = np.arange(self.count) if self.order is None else self.order(self.epoch)
        self.epoch += 1
        return rows


def make_batches(inputs: tuple[dict, np.ndarray, np.ndarray], batch_size: int, orders: EpochOrders,
                 length_multiple: int | None = None) -> Any:
    """The backend's batches of `(inputs, labels, sample_weight)` in `orders`' order, reshuffled each epoch.

    Example: `make_batches(tokens.model_inputs(), 8, EpochOrders(len(tokens)))`.
    """
    if uses_tensorflow():
        return _tf_batches(inputs, batch_size, orders, length_multiple)
    return NumpyBatches(inputs, batch_size, orders, length_multiple)


def repeat_batches(batches: Any, slots: int) -> Any:
    """Each batch repeated `slots` times along its rows (`lora_keras.data.pipeline.repeat_for_slots`)."""
    if slots == 1:
        return batches
    if isinstance(batches, keras.utils.PyDataset):
        return _Stacked([batches], [0] * slots)
    import tensorflow as tf

    def repeat(inputs, labels, sample_weight):
        copies = lambda value: tf.concat([value] * slots, axis=0)  # noqa: E731
        return {name: copies(value) for name, value in inputs.items()}, copies(labels), copies(sample_weight)

    return batches.map(repeat)


def stack_batches(datasets: Sequence[Any]) -> Any:
    """One batch of each per step, padded to the step's longest and stacked (`pipeline.stack_for_slots`)."""
    if len(datasets) == 1:
        return datasets[0]
    # A dataset given for several slots is iterated once: each iteration of a reshuffling dataset
    # draws the next order, so a second one would not read the first's batches.
    distinct = list({id(dataset): dataset for dataset in datasets}.values())
    sources = [next(i for i, d in enumerate(distinct) if d is dataset) for dataset in datasets]
    if isinstance(datasets[0], keras.utils.PyDataset):
        return _Stacked(distinct, sources)
    import tensorflow as tf

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


def endless_batches(batches: Any) -> Any:
    """`batches` over and over, reshuffled at each pass: for `fit(..., steps_per_epoch=N)`.

    Example: `model.fit(endless_batches(make_dataset(tokens, 8, shuffle=True)), epochs=2, steps_per_epoch=5)`.
    """
    if isinstance(batches, keras.utils.PyDataset):
        return _Endless(batches)
    return batches.repeat()


def labelled_batches(batches: Any) -> Any:
    """Each batch as one dict, labels and mask included (`pipeline.labelled_inputs`)."""
    if isinstance(batches, keras.utils.PyDataset):
        return _Labelled(batches)
    return batches.map(
        lambda inputs, labels, sample_weight: ({**inputs, "labels": labels, "sample_weight": sample_weight},))


# -- TensorFlow ---------------------------------------------------------------------------------
def _tf_batches(inputs, batch_size, orders, length_multiple):
    import tensorflow as tf

    columns = tf.nest.map_structure(tf.constant, inputs)
    count = orders.count
    if orders.shuffles:
        # tf.data reads the generator again at every iteration (every epoch): the next epoch's order.
        rows = tf.data.Dataset.from_generator(
            lambda: iter((orders(),)), output_signature=tf.TensorSpec([count], tf.int64)).unbatch()
    else:
        rows = tf.data.Dataset.range(count)
    widths = (inputs[0]["encoder_token_ids"].shape[1], inputs[1].shape[1])
    batches = rows.batch(batch_size).map(lambda index: tf.nest.map_structure(lambda c: tf.gather(c, index), columns))
    return (
        batches.map(lambda *batch: _trim_padding(*batch, widths=widths, multiple=length_multiple))
        .apply(tf.data.experimental.assert_cardinality(-(-count // batch_size)))
        .prefetch(PREFETCH_BATCHES)
        .with_options(_options())
    )


def _options():
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


def _rounded(length, multiple, width):
    import tensorflow as tf

    if not multiple or multiple <= 1:
        return length
    return tf.minimum((length + multiple - 1) // multiple * multiple, width)


def _trim_padding(inputs, labels, sample_weight, widths=(0, 0), multiple=None):
    """Cut a batch to its longest source and target (rounded up to `multiple`): padding costs compute."""
    import tensorflow as tf

    source_length = _rounded(tf.reduce_max(tf.reduce_sum(inputs["encoder_padding_mask"], axis=1)), multiple, widths[0])
    target_length = _rounded(tf.reduce_max(tf.reduce_sum(inputs["decoder_padding_mask"], axis=1)), multiple, widths[1])
    trimmed = {
        name: value[:, :source_length] if name.startswith("encoder") else value[:, :target_length]
        for name, value in inputs.items()
    }
    return trimmed, labels[:, :target_length], sample_weight[:, :target_length]


# -- any other backend: numpy ---------------------------------------------------------------------
class NumpyBatches(keras.utils.PyDataset):
    """`make_batches` as numpy arrays, for backends other than TensorFlow: the same cut, padding and order.

    Example:
    ```python
    batches = NumpyBatches(tokens.model_inputs(), 8, EpochOrders(len(tokens)))
    inputs, labels, sample_weight = batches[0]
    ```
    """

    def __init__(self, inputs: tuple[dict, np.ndarray, np.ndarray], batch_size: int, orders: EpochOrders,
                 length_multiple: int | None = None) -> None:
        super().__init__()
        self.inputs, self.labels, self.sample_weight = inputs
        self.batch_size = batch_size
        self.orders = orders
        self.length_multiple = length_multiple
        self.order = orders()
        self.read = set()  # batches read in this order

    def __len__(self) -> int:
        return -(-self.orders.count // self.batch_size)

    def __getitem__(self, index: int) -> tuple[dict, np.ndarray, np.ndarray]:
        self.read.add(index)
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
        # The next order only after a whole pass: Keras also ends a "pass" after peeking at the
        # first batch (JAX's symbolic build), which must not cost the first epoch its order.
        if self.orders.shuffles and len(self.read) == len(self):
            self.order = self.orders()
            self.read = set()


class _Stacked(keras.utils.PyDataset):
    """Slot `j` reads `distinct[sources[j]]`'s batch, padded to the step's longest and stacked along the rows."""

    def __init__(self, distinct: list[keras.utils.PyDataset], sources: list[int]) -> None:
        super().__init__()
        self.distinct, self.sources = distinct, sources

    def __len__(self) -> int:
        return len(self.distinct[0])

    def __getitem__(self, index: int) -> tuple[dict, np.ndarray, np.ndarray]:
        read = [dataset[index] for dataset in self.distinct]
        batches = [read[source] for source in self.sources]
        source = max(inputs["encoder_token_ids"].shape[1] for inputs, _, _ in batches)
        target = max(labels.shape[1] for _, labels, _ in batches)

        def padded(value, length):
            return np.pad(value, [(0, 0), (0, length - value.shape[1])])

        inputs = {name: np.concatenate([padded(b[0][name], source if name.startswith("encoder") else target)
                                        for b in batches]) for name in batches[0][0]}
        return (inputs, np.concatenate([padded(b[1], target) for b in batches]),
                np.concatenate([padded(b[2], target) for b in batches]))

    def on_epoch_end(self) -> None:
        for dataset in self.distinct:
            dataset.on_epoch_end()


class _Endless(keras.utils.PyDataset):
    """A `PyDataset` read over and over (Keras reads one whose `num_batches` is None until told to stop)."""

    def __init__(self, batches: keras.utils.PyDataset) -> None:
        super().__init__()
        self.batches, self.passes = batches, 0

    @property
    def num_batches(self) -> None:
        return None

    def __getitem__(self, index: int) -> tuple:
        passes, within = divmod(index, len(self.batches))
        while self.passes < passes:  # the next pass: the next order
            self.batches.on_epoch_end()
            self.passes += 1
        return self.batches[within]


class _Labelled(keras.utils.PyDataset):
    """`NumpyBatches` as single dicts with labels and mask (`labelled_batches` on other backends)."""

    def __init__(self, batches: keras.utils.PyDataset) -> None:
        super().__init__()
        self.batches = batches

    def __len__(self) -> int:
        return len(self.batches)

    def __getitem__(self, index: int) -> tuple[dict]:
        inputs, labels, sample_weight = self.batches[index]
        return ({**inputs, "labels": labels, "sample_weight": sample_weight},)
