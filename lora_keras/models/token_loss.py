"""The loss every figure reports: mean negative log-likelihood per real (non-padding) target token.

Keras's default reduction (`sum_over_batch_size`) divides a batch's summed loss by
every position, padding included, and its `loss` log averages batch means weighted
by batch size. Here each training step minimises the batch's summed NLL over its
real target tokens (what `T5ForConditionalGeneration(labels=...)` returns, padding
at -100), and the `loss` Keras logs for an epoch or an `evaluate` is the summed NLL
of all its batches divided by all their real target tokens.

Example:
```python
model = base.build_model(backbone)   # a TokenLossSeq2SeqLM with keras-hub's T5 preprocessor
model.compile(optimizer=keras.optimizers.Adam(3e-3))
model.evaluate(make_dataset(val_tokens, 64))   # mean NLL per real target token of the set
model.evaluate(x={"encoder_text": sources, "decoder_text": targets}, batch_size=64)   # the same, from text
```
"""

from __future__ import annotations

import math
from typing import Any

import keras
import keras_hub
import numpy as np
from keras import ops

from lora_keras.adapters.lora import active_slots, slot_count
from lora_keras.backends.devices import static_shapes
from lora_keras.data.pipeline import PAD_ID, labelled_inputs
from lora_keras.models.masking_warning import masking_warning_ignored
from lora_keras.backends.devices import replicas_in_sync, sum_over_replicas


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
        # float32 sums with Kahan compensation: float64's accuracy on every backend (JAX has no float64
        # unless told to); counts are whole numbers, exact in float32 up to 2**24.
        self.total, self.total_error, self.count = (
            self.add_variable(shape=(), initializer="zeros", dtype="float32", name=name_, aggregation="sum")
            for name_ in ("total", "total_error", "count"))

    def update_state(self, total: Any, count: Any) -> None:
        """Add a batch's `total` and `count` (tensors or numbers)."""
        corrected = ops.cast(total, "float32") - self.total_error
        added = self.total + corrected
        self.total_error.assign((added - self.total) - corrected)  # what the addition lost
        self.total.assign(added)
        self.count.assign_add(ops.cast(count, "float32"))

    def result(self) -> Any:
        """The summed total over the summed count, as a float32 scalar (0 before any count)."""
        return ops.divide_no_nan(self.total - self.total_error, self.count)

    def reset_state(self) -> None:
        """Start from zero."""
        for variable in (self.total, self.total_error, self.count):
            variable.assign(0.0)


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
        correct = ops.cast(ops.equal(ops.argmax(y_pred, axis=-1), ops.cast(y_true, "int64")), "float32")
        weight = ops.ones_like(correct) if sample_weight is None else ops.cast(sample_weight, "float32")
        super().update_state(ops.sum(correct * weight), ops.sum(weight))


def follow_slot_count(model: keras.Model, backbone: keras.Model | None = None) -> None:
    """Trace `model`'s steps again when the slots in use changed, where traced shapes are static (JAX).

    There a traced step holds the slot count as a number (`lora_keras.adapters.lora.active_slots`);
    TensorFlow's read it from a variable and never need this.

    Example: `activate_slots(backbone, 2); follow_slot_count(model)` before the next `fit`.
    """
    backbone = model.backbone if backbone is None else backbone
    if not static_shapes() or slot_count(backbone) <= 1:
        return
    count = active_slots(backbone)
    if model.__dict__.get("_traced_slot_count", count) != count:
        model.train_function = model.test_function = model.predict_function = None
    model.__dict__["_traced_slot_count"] = count  # not a Keras-tracked attribute


class TokenLossSeq2SeqLM(keras_hub.models.T5Seq2SeqLM):
    """keras-hub's `T5Seq2SeqLM`, trained on and reporting the mean NLL per real target token.

    Its loss is the batch's summed NLL over its real target tokens, divided by their count
    (with several adapter slots, each slot's, summed); the `loss` it logs (training,
    `val_loss`, `evaluate`) is the token-weighted mean over the whole epoch or set.
    Expects the padding mask of the targets as `sample_weight` (see `lora_keras.data.pipeline`).

    With a `preprocessor` (`BaseModel.build_model` attaches one), `fit`, `evaluate` and
    `generate` take text as keras-hub's `Seq2SeqLM` tasks do; batches already tokenized
    (`make_dataset`'s, whose inputs hold `encoder_token_ids`) pass it by untouched.
    `generate` is greedy unless `compile` is given another `sampler`.

    Example:
    ```python
    model = TokenLossSeq2SeqLM(backbone=backbone, preprocessor=preprocessor)
    model.compile(optimizer=keras.optimizers.Adam(3e-3))
    history = model.fit(train, validation_data=val)   # history["loss"], ["val_loss"]: per real token
    model.fit(x={"encoder_text": sources, "decoder_text": targets}, batch_size=8)
    model.generate("translate English to French: the cat .")
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
        follow_slot_count(self)
        if isinstance(x, keras.utils.PyDataset):
            with masking_warning_ignored():  # Keras builds the model symbolically first (JAX): the layers warn
                return keras.Model.fit(self, x, *args, **kwargs)
        return super().fit(x, *args, **kwargs)

    def evaluate(self, x: Any = None, *args: Any, **kwargs: Any) -> Any:
        follow_slot_count(self)
        if isinstance(x, keras.utils.PyDataset):
            with masking_warning_ignored():
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

    def preprocess_samples(self, x: Any, y: Any = None, sample_weight: Any = None) -> Any:
        """keras-hub's preprocessing of text; token batches (a dict with `encoder_token_ids`) as they are.

        keras-hub maps this over every dataset `fit` and `evaluate` get, tokenized or not.
        """
        if isinstance(x, dict) and "encoder_token_ids" in x:
            return keras.utils.pack_x_y_sample_weight(x, y, sample_weight)
        return super().preprocess_samples(x, y, sample_weight)

    def generate(self, inputs: Any, max_length: int | None = None, **kwargs: Any) -> Any:
        """keras-hub's `generate`; by default up to the preprocessor's `decoder_sequence_length` new tokens.

        keras-hub's `max_length` counts T5's start token, so its default would stop one token short of
        the longest target the model trains on; `lora_keras.evaluation.translate(max_new_tokens=n)`
        decodes as `generate(max_length=n + 1)`.
        """
        if max_length is None and self.preprocessor is not None:
            max_length = self.preprocessor.decoder_sequence_length + 1
        with masking_warning_ignored():  # the first call traces the attention layers
            return super().generate(inputs, max_length=max_length, **kwargs)

    def compile(
        self, optimizer: Any = "auto", *, weighted_metrics: tuple | list = (), sampler: Any = "greedy", **kwargs: Any
    ) -> None:
        """Keras's `compile`, with the loss per real target token (per slot, for several adapters per layer).

        `sampler` is `generate`'s (keras-hub's default is "top_k"; greedy decodes as `translate`).
        """
        super().compile(optimizer=optimizer, loss=None, weighted_metrics=list(weighted_metrics), sampler=sampler,
                        **kwargs)
        self.token_loss = TokenMean(name="loss")
        slots = slot_count(self.backbone)
        self.slot_losses = SlotTokenMeans(slots) if slots > 1 else None

    @property
    def active_slots(self) -> Any:
        """The number of adapter slots the batches hold (a variable read by the traced steps), or 1."""
        return 1 if self.slot_losses is None else active_slots(self.backbone)

    def compute_loss(
        self, x: Any = None, y: Any = None, y_pred: Any = None, sample_weight: Any = None, training: bool = True
    ) -> Any:
        """The batch's mean NLL per real target token; with several slots, the sum of each slot's.

        A batch of several slots holds each slot's examples in turn (`lora_keras.adapters.layer`),
        so each slot's adapter gets the gradient of its own loss alone. The summed NLL and token
        count also go to the logged `loss` (and `loss_<slot>`).
        """
        nll = keras.losses.sparse_categorical_crossentropy(y, ops.cast(y_pred, "float32"), from_logits=True)
        weight = ops.ones_like(nll) if sample_weight is None else ops.cast(sample_weight, nll.dtype)
        totals = ops.sum(ops.reshape(nll * weight, (self.active_slots, -1)), axis=1)
        counts = ops.sum(ops.reshape(weight, (self.active_slots, -1)), axis=1)
        if self.slot_losses is not None:
            self.slot_losses.update_state(totals, counts)
        self.token_loss.update_state(ops.sum(totals), ops.sum(counts))
        if replicas_in_sync() > 1:  # data parallel (one slot): the global batch's mean, as replicas' gradients are summed
            return ops.divide_no_nan(ops.sum(totals), sum_over_replicas(counts[0]))
        return ops.sum(ops.divide_no_nan(totals, counts))

    @property
    def metrics(self) -> list[keras.metrics.Metric]:
        # The token-weighted mean takes the place of Keras's batch-weighted `loss` tracker.
        own = getattr(self, "token_loss", None)
        others = [metric for metric in super().metrics if metric.name != "loss"]
        slot_losses = getattr(self, "slot_losses", None)
        others = [metric for metric in others if metric is not slot_losses]
        return ([] if own is None else [own]) + others + ([] if slot_losses is None else [slot_losses])


class SlotTokenMeans(keras.metrics.Metric):
    """Per adapter slot (`lora_keras.adapters.layer.LoraDense`): a summed NLL over a token count, logged as `loss_0`, `loss_1`, ...

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
        # float32 with Kahan compensation, as `TokenMean`.
        self.total, self.total_error, self.count = (
            self.add_variable(shape=(self.slots,), initializer="zeros", dtype="float32", name=name_)
            for name_ in ("total", "total_error", "count"))

    def update_state(self, totals: Any, counts: Any) -> None:
        """Add each slot in use its batch's summed NLL and token count (vectors of the slots in use)."""
        # (used, slots): slot j's value in column j. A select, not a product: one slot's NaN stays its own.
        spread = ops.one_hot(ops.arange(ops.shape(totals)[0]), self.slots, dtype="float32") > 0

        def per_slot(values):
            values = ops.cast(values, "float32")[:, None]
            return ops.sum(ops.where(spread, values, ops.zeros_like(values)), axis=0)

        corrected = per_slot(totals) - self.total_error
        added = self.total + corrected
        self.total_error.assign((added - self.total) - corrected)
        self.total.assign(added)
        self.count.assign_add(per_slot(counts))

    def result(self) -> dict:
        """`{"loss_<slot>": summed NLL / tokens}` for every slot (0 for one without tokens)."""
        means = ops.divide_no_nan(self.total - self.total_error, self.count)
        return {f"{self.prefix}_{slot}": means[slot] for slot in range(self.slots)}

    def reset_state(self) -> None:
        """Start every slot from zero."""
        for variable in (self.total, self.total_error, self.count):
            variable.assign(ops.zeros((self.slots,), "float32"))


class PairLosses(keras.Model):
    """Per sentence pair, the summed NLL (nats) of its real target tokens under each active adapter slot.

    The validation loss as a sample: `nll.sum() / tokens.sum()` over a set is its `val_loss`,
    and the pairs' own values let a bootstrap resample the set (`lora_keras.results.stats`).
    Wraps a compiled `TokenLossSeq2SeqLM` (or a plain `T5Seq2SeqLM`); `predict` traces it once.

    Args:
        seq2seq: the model whose losses are wanted, its slots activated for the batches' rows.

    Example:
    ```python
    nll, tokens = PairLosses(model).of(val_tokens, slots=3)   # nll: (3, n) ; tokens: (n,)
    nll[0].sum() / tokens.sum()                               # slot 0's val loss
    ```
    """

    FEATURES = ("encoder_token_ids", "encoder_padding_mask", "decoder_token_ids", "decoder_padding_mask")

    def __init__(self, seq2seq: keras_hub.models.T5Seq2SeqLM, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.seq2seq = seq2seq

    def call(self, inputs: dict) -> Any:
        with masking_warning_ignored():
            logits = self.seq2seq({name: inputs[name] for name in self.FEATURES}, training=False)
        nll = keras.losses.sparse_categorical_crossentropy(inputs["labels"], ops.cast(logits, "float32"),
                                                           from_logits=True)
        totals = ops.sum(nll * ops.cast(inputs["sample_weight"], "float32"), axis=1)  # (slots * b,)
        return ops.transpose(ops.reshape(totals, (active_slots(self.seq2seq.backbone), -1)))  # (b, slots): `predict` stacks the rows

    def of(self, tokens: Any, slots: int = 1, batch_size: int = 64, length_multiple: int | None = None) -> tuple:
        """`(nll, tokens)`: `(slots, n)` summed NLL per pair and slot, `(n,)` real target tokens per pair.

        Args:
            tokens: the `TokenizedPairs` to score, in order.
            slots: the active slots (each reads the same pairs).
            batch_size: pairs per forward pass.
            length_multiple: as `make_dataset`'s (XLA's bounded shapes).
        """
        follow_slot_count(self, self.seq2seq.backbone)
        nll = self.predict(labelled_inputs(tokens, batch_size, slots, length_multiple), verbose=0)
        counts = (np.asarray(tokens.target_ids) != PAD_ID).sum(axis=1)
        return np.asarray(nll, "float64").T.reshape(slots, len(tokens)), counts
