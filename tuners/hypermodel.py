"""The keras-tuner `HyperModel`: LoRA rank in `build`, batch size in `fit`."""

import dataclasses
import gc
import time

import keras
import keras_tuner
import numpy as np

from lora_keras.data import TokenizedPairs, make_dataset
from lora_keras.lora import LoraConfig, add_lora, reset_lora

EVAL_BATCH_SIZE = 64


@dataclasses.dataclass(frozen=True)
class SearchSpace:
    """The values each hyperparameter may take; `lora_alpha=None` means alpha = rank.

    Example: `SearchSpace(ranks=(1, 4, 16), batch_sizes=(8, 64, 128), learning_rates=(3e-3,))`.
    """

    ranks: tuple = (1, 4, 16)
    batch_sizes: tuple = (8, 64, 128)
    learning_rates: tuple = (3e-3,)
    lora_alpha: float | None = None
    targets: tuple = ("q", "v")

    def alpha_for(self, rank):
        return float(rank if self.lora_alpha is None else self.lora_alpha)

    @property
    def alphas(self):
        return tuple(sorted({self.alpha_for(rank) for rank in self.ranks}))

    @property
    def size(self):
        return len(self.ranks) * len(self.batch_sizes) * len(self.learning_rates)


class _TrialModel:
    """A compiled model that can be put back to its state right after `build`.

    Building a model and tracing its train, eval and generate steps costs
    seconds per trial; resetting the adapters, the optimizer and the dropout
    seeds costs milliseconds, and a trial then trains exactly as it would on
    a fresh model. That lets the steps be traced before a trial's clock starts,
    and lets the next trial with the same LoRA config use the model again.
    """

    def __init__(self, config, model, seed):
        self.config = config
        self.model = model
        self.seed = seed
        self.traced = False
        self.seed_states = [
            (variable, keras.ops.convert_to_numpy(variable))
            for variable in model.variables
            if "seed_generator" in variable.path
        ]

    def reset(self, learning_rate):
        reset_lora(self.model.backbone, self.config, self.seed)
        for variable, value in self.seed_states:
            variable.assign(value)
        optimizer = self.model.optimizer
        for variable in optimizer.variables:
            if variable is not optimizer._learning_rate:
                variable.assign(np.zeros(variable.shape, variable.dtype))
        optimizer.learning_rate = learning_rate
        return self.model


class LoraT5HyperModel(keras_tuner.HyperModel):
    """Builds a LoRA-adapted `T5Seq2SeqLM` per trial and trains it.

    Every hyperparameter is declared up front (`declare_hyperparameters`), so
    the first trial logs them all and the tuner never builds a model just to
    discover the space. With `reuse_models` (the default), consecutive trials
    with the same LoRA config (rank, alpha, targets) share one compiled model,
    reset to its freshly built state, so only the first of them pays for
    building and tracing; results are identical to building anew.

    Example:
    ```python
    hypermodel = LoraT5HyperModel(base, SearchSpace(ranks=(4,)), epochs=2, seed=0)
    hp = keras_tuner.HyperParameters()
    hypermodel.declare_hyperparameters(hp)
    model = hypermodel.build(hp)
    hypermodel.fit(hp, model, train_tokens, val_tokens)
    ```
    """

    def __init__(self, base, space, epochs=2, seed=0, reuse_models=True, jit_compile=False):
        super().__init__(name="lora_t5")
        self.base = base
        self.space = space
        self.epochs = epochs
        self.seed = seed
        self.reuse_models = reuse_models
        self.jit_compile = jit_compile  # XLA: one compile per batch shape; no gain measured on CPU
        self._current = None

    def declare_hyperparameters(self, hp):
        hp.Choice("rank", list(self.space.ranks), ordered=True)
        hp.Choice("batch_size", list(self.space.batch_sizes), ordered=True)
        hp.Choice("learning_rate", list(self.space.learning_rates), ordered=True)

    def lora_config(self, hp):
        rank = hp.get("rank")
        return LoraConfig(rank, self.space.alpha_for(rank), tuple(self.space.targets))

    def build(self, hp):
        self.declare_hyperparameters(hp)
        config = self.lora_config(hp)
        current = self._current
        if self.reuse_models and current is not None and current.config == config:
            return current.reset(hp.get("learning_rate"))
        self.release()
        keras.utils.set_random_seed(self.seed)  # same init for a trial whatever ran before
        backbone = self.base.build_backbone()
        add_lora(backbone, config, seed=self.seed)
        model = self.base.build_model(backbone)
        model.compile(
            optimizer=keras.optimizers.Adam(hp.get("learning_rate")),
            loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
            weighted_metrics=[],
            jit_compile=self.jit_compile,
        )
        self._current = _TrialModel(config, model, self.seed)
        return model

    def release(self):
        """Drop the kept model and free what TensorFlow holds for it."""
        if self._current is None:
            return
        self._current = None
        keras.backend.clear_session()
        gc.collect()

    def trace(self, hp, model, train_tokens, val_tokens):
        """Trace `model`'s train and eval steps on one batch, then reset it to its built state.

        `fit` calls this first, so every trial's clock measures training, not tracing,
        whether its model is new or reused. Returns the seconds spent (0 if already traced).
        """
        current = self._current
        if current is None or current.model is not model or current.traced:
            return 0.0
        started = time.perf_counter()
        batch_size = hp.get("batch_size")
        head = TokenizedPairs(train_tokens.source_ids[:batch_size], train_tokens.target_ids[:batch_size])
        model.fit(make_dataset(head, batch_size), epochs=1, verbose=0, shuffle=False)
        val_head = TokenizedPairs(val_tokens.source_ids[:EVAL_BATCH_SIZE], val_tokens.target_ids[:EVAL_BATCH_SIZE])
        model.evaluate(make_dataset(val_head, EVAL_BATCH_SIZE), verbose=0)
        current.reset(hp.get("learning_rate"))
        current.traced = True
        return time.perf_counter() - started

    def fit(self, hp, model, train_tokens, val_tokens, callbacks=None, verbose=1, **kwargs):
        self.trace(hp, model, train_tokens, val_tokens)
        return model.fit(
            make_dataset(train_tokens, hp.get("batch_size"), shuffle=True, seed=self.seed),
            validation_data=make_dataset(val_tokens, EVAL_BATCH_SIZE),
            epochs=self.epochs,
            shuffle=False,  # the dataset reshuffles itself each epoch
            callbacks=callbacks,
            verbose=verbose,
            **kwargs,
        )
