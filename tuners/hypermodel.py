"""The keras-tuner `HyperModel`: LoRA rank in `build`, batch size in `fit`."""

import dataclasses
import gc

import keras
import keras_tuner
import numpy as np

from lora_keras.data import make_dataset
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


class _ReusableModel:
    """A compiled model kept for the next trial with the same LoRA config.

    Building a model and tracing its train, eval and generate steps costs
    seconds per trial; resetting the adapters, the optimizer and the dropout
    seeds to their state right after `build` costs milliseconds, and the
    trial then trains exactly as it would on a fresh model.
    """

    def __init__(self, config, model, seed):
        self.config = config
        self.model = model
        self.seed = seed
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
        self._reusable = None

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
        if self._reusable is not None and self._reusable.config == config:
            return self._reusable.reset(hp.get("learning_rate"))
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
        if self.reuse_models:
            self._reusable = _ReusableModel(config, model, self.seed)
        return model

    def release(self):
        """Drop the kept model and free what TensorFlow holds for it."""
        self._reusable = None
        keras.backend.clear_session()
        gc.collect()

    def fit(self, hp, model, train_tokens, val_tokens, callbacks=None, verbose=1, **kwargs):
        return model.fit(
            make_dataset(train_tokens, hp.get("batch_size"), shuffle=True, seed=self.seed),
            validation_data=make_dataset(val_tokens, EVAL_BATCH_SIZE),
            epochs=self.epochs,
            shuffle=False,  # the dataset reshuffles itself each epoch
            callbacks=callbacks,
            verbose=verbose,
            **kwargs,
        )
