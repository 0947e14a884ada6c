"""The loss every figure reports: mean negative log-likelihood per real (non-padding) target token.

Keras's default reduction (`sum_over_batch_size`) divides a batch's summed loss by
every position, padding included, and its `loss` log averages batch means weighted
by batch size. Here each training step minimises the batch's summed NLL over its
real target tokens (what `T5ForConditionalGeneration(labels=...)` returns, padding
at -100), and the `loss` Keras logs for an epoch or an `evaluate` is the summed NLL
of all its batches divided by all their real target tokens.

Example:
```python
model = TokenLossSeq2SeqLM(backbone=backbone, preprocessor=None)
model.compile(optimizer=keras.optimizers.Adam(3e-3))
model.evaluate(make_dataset(val_tokens, 64))   # mean NLL per real target token of the set
```
"""

from __future__ import annotations

import math
from typing import Any

import keras
import keras_hub
from keras import ops

from lora_keras.models.masking_warning import masking_warning_ignored
from lora_keras.runtime.backend import replicas_in_sync


# Recorded in every run's identity: runs whose losses were computed otherwise are not resumed.
LOSS_DEFINITION = "mean NLL per real target token"


def perplexity(loss: float | None) -> float | None:
    """`exp(loss)` of a mean NLL per token; None stays None, an overflow is inf.

    Example:
    ```python
    perplexity(2.0)   # 7.389...
    ```
    """
    if loss is None:
        return None
    try:
        return math.exp(loss)
    except OverflowError:
        return math.inf


def per_token_loss() -> keras.losses.Loss:
    """Sparse cross-entropy from logits, summed over real tokens and divided by their count, per batch.

    Example:
    ```python
    model.compile(optimizer="adam", loss=per_token_loss())
    ```
    """
    return keras.losses.SparseCategoricalCrossentropy(from_logits=True, reduction="mean_with_sample_weight")


class TokenMean(keras.metrics.Metric):
    """A sum divided by a count, both accumulated exactly over every update (batches of any size).

    Args:
        name: the metric's name in the logs.
        **kwargs: passed to `keras.metrics.Metric`.

    Example:
    ```python
    metric.update_state(nll_sum, token_count)   # per batch
    metric.result()                             # their ratio over all batches
    ```
    """

    def __init__(self, name: str = "loss", **kwargs: Any) -> None:
        super().__init__(name=name, **kwargs)
        self.total = self.add_variable(shape=(), initializer="zeros", dtype="float64", name="total",
                                       aggregation="sum")
        self.count = self.add_variable(shape=(), initializer="zeros", dtype="float64", name="count",
                                       aggregation="sum")

    def update_state(self, total: Any, count: Any) -> None:
        """Add a batch's `total` and `count` (tensors or numbers)."""
        self.total.assign_add(ops.cast(total, "float64"))
        self.count.assign_add(ops.cast(count, "float64"))

    def result(self) -> Any:
        """The summed total over the summed count, as a float32 scalar (0 before any count)."""
        return ops.cast(ops.divide_no_nan(self.total, self.count), "float32")

    def reset_state(self) -> None:
        """Start from zero."""
        self.total.assign(0.0)
        self.count.assign(0.0)


class TokenAccuracy(TokenMean):
    """Greedy next-token accuracy over real target tokens (`sample_weight` is the padding mask).

    Keras's `SparseCategoricalAccuracy` as a weighted metric averages each batch over its
    padded length first, so batches trimmed to different lengths weigh differently.

    Example:
    ```python
    model.compile(optimizer="adam", weighted_metrics=[TokenAccuracy()])
    ```
    """

    def __init__(self, name: str = "token_accuracy", **kwargs: Any) -> None:
        super().__init__(name=name, **kwargs)

    def update_state(self, y_true: Any, y_pred: Any, sample_weight: Any = None) -> None:
        """Add a batch: target ids, logits and the padding mask."""
        correct = ops.cast(ops.equal(ops.argmax(y_pred, axis=-1), ops.cast(y_true, "int64")), "float64")
        weight = ops.ones_like(correct) if sample_weight is None else ops.cast(sample_weight, "float64")
        super().update_state(ops.sum(correct * weight), ops.sum(weight))


class TokenLossSeq2SeqLM(keras_hub.models.T5Seq2SeqLM):
    """keras-hub's `T5Seq2SeqLM`, trained on and reporting the mean NLL per real target token.

    `compile` defaults the loss to `per_token_loss()`; the `loss` it logs (training,
    `val_loss`, `evaluate`) is the token-weighted mean over the whole epoch or set.
    Expects the padding mask of the targets as `sample_weight` (see `lora_keras.data.pipeline`).

    Example:
    ```python
    model = TokenLossSeq2SeqLM(backbone=backbone, preprocessor=None)
    model.compile(optimizer=keras.optimizers.Adam(3e-3))
    history = model.fit(train, validation_data=val)   # history["loss"], ["val_loss"]: per real token
    ```
    """

    def __init__(self, backbone: keras_hub.models.T5Backbone, preprocessor: Any = None, **kwargs: Any) -> None:
        with masking_warning_ignored():  # building the functional graph calls the attention layers
            super().__init__(backbone=backbone, preprocessor=preprocessor, **kwargs)

    # keras-hub's `fit`/`evaluate` turn anything but a tf.data or grain dataset into one (tf.data without
    # grain, so TensorFlow): a `PyDataset` of ready batches (`NumpyBatches`, other backends) goes to Keras's own.
    def fit(self, x: Any = None, *args: Any, **kwargs: Any) -> Any:
        # Adam's moments before the first traced step rather than in it: TensorFlow traces a step
        # that creates variables twice (seconds per model).
        if self.optimizer is not None and not self.optimizer.built:
            self.optimizer.build(self.trainable_variables)
        if isinstance(x, keras.utils.PyDataset):
            return keras.Model.fit(self, x, *args, **kwargs)
        return super().fit(x, *args, **kwargs)

    def evaluate(self, x: Any = None, *args: Any, **kwargs: Any) -> Any:
        if isinstance(x, keras.utils.PyDataset):
            return keras.Model.evaluate(self, x, *args, **kwargs)
        return super().evaluate(x, *args, **kwargs)

    # Traced steps call the attention layers, which warn at trace time.
    def train_step(self, *args: Any, **kwargs: Any) -> Any:
        with masking_warning_ignored():
            return super().train_step(*args, **kwargs)

    def test_step(self, *args: Any, **kwargs: Any) -> Any:
        with masking_warning_ignored():
            return super().test_step(*args, **kwargs)

    def predict_step(self, *args: Any, **kwargs: Any) -> Any:
        with masking_warning_ignored():
            return super().predict_step(*args, **kwargs)

    def compile(
        self, optimizer: Any = "auto", loss: Any = "auto", *, weighted_metrics: tuple | list = (), **kwargs: Any
    ) -> None:
        """Keras's `compile`, the loss defaulting to `per_token_loss()` and `loss` logged per real token."""
        super().compile(
            optimizer=optimizer,
            loss=per_token_loss() if loss == "auto" else loss,
            weighted_metrics=list(weighted_metrics),
            **kwargs,
        )
        self.token_loss = TokenMean(name="loss")

    def compute_loss(
        self, x: Any = None, y: Any = None, y_pred: Any = None, sample_weight: Any = None, training: bool = True
    ) -> Any:
        """The batch's per-token loss; also adds its summed NLL and token count to the logged `loss`."""
        loss = super().compute_loss(x, y, y_pred, sample_weight, training=training)
        tokens = ops.cast(ops.sum(sample_weight) if sample_weight is not None else ops.size(y), loss.dtype)
        replicas = replicas_in_sync()
        # Keras divides a replica's mean by the replica count: undo it for this replica's sum.
        nll_sum = loss * replicas * tokens
        self.token_loss.update_state(nll_sum, tokens)
        if replicas > 1:  # data parallel (tf.distribute only): the global batch's mean, as one device's
            import tensorflow as tf

            replica = tf.distribute.get_replica_context()  # None when Keras builds the loss symbolically
            if replica is not None:
                all_tokens = replica.all_reduce(tf.distribute.ReduceOp.SUM, tokens)
                loss = ops.divide_no_nan(nll_sum, all_tokens)  # replicas' gradients are summed
        return loss

    @property
    def metrics(self) -> list[keras.metrics.Metric]:
        # The token-weighted mean takes the place of Keras's batch-weighted `loss` tracker.
        own = getattr(self, "token_loss", None)
        others = [metric for metric in super().metrics if metric.name != "loss"]
        return others if own is None else [own, *others]


class SlotTokenMeans(keras.metrics.Metric):
    """Per slot of a `LoraPack`: a summed NLL over a token count, logged as `loss_0`, `loss_1`, ...

    Args:
        slots: the pack's slots; slots not in use keep their sums.
        name: the prefix of the logged names.

    Example:
    ```python
    metric.update_state(nll_sums, token_counts)   # vectors over the slots in use
    metric.result()                               # {"loss_0": ..., "loss_1": ...}
    ```
    """

    def __init__(self, slots: int, name: str = "loss", **kwargs: Any) -> None:
        super().__init__(name=f"{name}_slots", **kwargs)
        self.slots = int(slots)
        self.prefix = name
        self.total = self.add_variable(shape=(self.slots,), initializer="zeros", dtype="float64", name="total")
        self.count = self.add_variable(shape=(self.slots,), initializer="zeros", dtype="float64", name="count")

    def update_state(self, totals: Any, counts: Any) -> None:
        """Add each slot in use its batch's summed NLL and token count (vectors of the slots in use)."""
        spread = ops.one_hot(ops.arange(ops.shape(totals)[0]), self.slots, dtype="float64")  # (used, slots)
        self.total.assign_add(ops.matmul(ops.cast(totals, "float64")[None, :], spread)[0])
        self.count.assign_add(ops.matmul(ops.cast(counts, "float64")[None, :], spread)[0])

    def result(self) -> dict:
        """`{"loss_<slot>": summed NLL / tokens}` for every slot (0 for one without tokens)."""
        means = ops.cast(ops.divide_no_nan(self.total, self.count), "float32")
        return {f"{self.prefix}_{slot}": means[slot] for slot in range(self.slots)}

    def reset_state(self) -> None:
        """Start every slot from zero."""
        self.total.assign(ops.zeros((self.slots,), "float64"))
        self.count.assign(ops.zeros((self.slots,), "float64"))


class PackedTokenLossSeq2SeqLM(TokenLossSeq2SeqLM):
    """A `TokenLossSeq2SeqLM` training the slots of a `LoraPack` together, each on its own loss.

    A batch of `pack.active * b` rows holds each slot's `b` examples in turn; the training
    objective is the sum over the slots in use of each slot's mean NLL per real target token,
    so each slot's adapter gets the gradient of its own loss alone. Logs `loss_<slot>` (and
    `val_loss_<slot>`) per slot; `loss` is the mean over all the batch's tokens.

    Args:
        backbone: a `T5Backbone` with `add_packed_lora`'s adapters.
        pack: the `LoraPack` on it.

    Example:
    ```python
    pack = add_packed_lora(backbone, slots=3, max_rank=16)
    model = PackedTokenLossSeq2SeqLM(backbone, pack)
    model.compile(optimizer=keras.optimizers.Adam(3e-3))
    ```
    """

    def __init__(self, backbone: keras_hub.models.T5Backbone, pack: Any, **kwargs: Any) -> None:
        object.__setattr__(self, "_pack", pack)  # before Keras's __init__ compiles; a plain object, untracked
        super().__init__(backbone=backbone, preprocessor=None, **kwargs)

    @property
    def pack(self) -> Any:
        """The `LoraPack` the model trains."""
        return self._pack

    def compile(self, optimizer: Any = "auto", loss: Any = "auto", **kwargs: Any) -> None:
        """`TokenLossSeq2SeqLM.compile`, plus the per-slot losses."""
        super().compile(optimizer=optimizer, loss=loss, **kwargs)
        self.slot_losses = SlotTokenMeans(self.pack.slots)

    def compute_loss(
        self, x: Any = None, y: Any = None, y_pred: Any = None, sample_weight: Any = None, training: bool = True
    ) -> Any:
        """The sum over the slots in use of each slot's mean NLL per real target token."""
        nll = keras.losses.sparse_categorical_crossentropy(y, y_pred, from_logits=True)
        weight = ops.cast(sample_weight, nll.dtype)
        active = ops.cast(self.pack.active, "int32")
        totals = ops.sum(ops.reshape(nll * weight, (active, -1)), axis=1)
        counts = ops.sum(ops.reshape(weight, (active, -1)), axis=1)
        self.slot_losses.update_state(totals, counts)
        self.token_loss.update_state(ops.sum(totals), ops.sum(counts))
        return ops.sum(ops.divide_no_nan(totals, counts))

    @property
    def metrics(self) -> list[keras.metrics.Metric]:
        metrics = super().metrics
        slot_losses = getattr(self, "slot_losses", None)
        if slot_losses is None:
            return metrics
        return [m for m in metrics if m is not slot_losses] + [slot_losses]
