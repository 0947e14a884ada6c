"""The keras-tuner `HyperModel`: LoRA rank in `build`, batch size in `fit`."""

import dataclasses
import time

import keras
import keras_tuner
import numpy as np
import tensorflow as tf

from lora_keras.data.pipeline import TokenizedPairs, make_dataset
from lora_keras.runtime.graph_memory import CustomGradientRegistrations
from lora_keras.adapters import LoraConfig, add_lora, reset_lora
from lora_keras.adapters import lean_projections

EVAL_BATCH_SIZE = 64


def targets_name(targets):
    """The name of a set of LoRA targets as HParams and results.csv show it: `("q", "v")` -> `"q,v"`."""
    return ",".join(targets)


@dataclasses.dataclass(frozen=True)
class SearchSpace:
    """The values each hyperparameter may take; no `lora_alphas` means alpha = rank (scale 1).

    `target_sets` holds one or more sets of projections to adapt, each swept as one value.

    Example: `SearchSpace(ranks=(1, 4, 16), batch_sizes=(8, 64, 128), learning_rates=(3e-3,),
    lora_alphas=(8, 16), target_sets=(("q", "v"), ("q", "k", "v", "o")), lora_dropouts=(0.0, 0.1))`.
    """

    ranks: tuple = (1, 4, 16)
    batch_sizes: tuple = (8, 64, 128)
    learning_rates: tuple = (3e-3,)
    lora_alphas: tuple = ()
    target_sets: tuple = (("q", "v"),)
    lora_dropouts: tuple = (0.0,)

    @property
    def alphas(self):
        """Every alpha a trial may use: the given ones, else the ranks."""
        return tuple(sorted({float(a) for a in (self.lora_alphas or self.ranks)}))

    def declare(self, hp):
        """Declare the searched hyperparameters on `hp` (a `keras_tuner.HyperParameters`).

        Rank, batch size and learning rate always; alpha, targets and dropout
        only when given several values: one value is a setting, not a dimension
        to search (and keeps the search space, random draws included, as before).
        """
        hp.Choice("rank", list(self.ranks), ordered=True)
        hp.Choice("batch_size", list(self.batch_sizes), ordered=True)
        hp.Choice("learning_rate", list(self.learning_rates), ordered=True)
        if len(self.lora_alphas) > 1:
            hp.Choice("lora_alpha", [float(a) for a in self.lora_alphas], ordered=True)
        if len(self.target_sets) > 1:
            hp.Choice("targets", [targets_name(t) for t in self.target_sets], ordered=False)
        if len(self.lora_dropouts) > 1:
            hp.Choice("lora_dropout", [float(p) for p in self.lora_dropouts], ordered=True)

    def trial_values(self, hp):
        """A trial's six hyperparameters: searched ones from `hp`, the others fixed here.

        Example: `{"rank": 4, "batch_size": 8, "learning_rate": 0.003, "lora_alpha": 4.0,
        "targets": "q,v", "lora_dropout": 0.0}`.
        """
        values = hp.values
        rank = int(values["rank"])
        fixed_alpha = self.lora_alphas[0] if self.lora_alphas else rank
        return {
            "rank": rank,
            "batch_size": int(values["batch_size"]),
            "learning_rate": float(values["learning_rate"]),
            "lora_alpha": float(values.get("lora_alpha", fixed_alpha)),
            "targets": values.get("targets", targets_name(self.target_sets[0])),
            "lora_dropout": float(values.get("lora_dropout", self.lora_dropouts[0])),
        }


class _TrialModel:
    """A compiled model that can be put back to its state right after `build`.

    Building a model and tracing its train, eval and generate steps costs
    seconds per trial; resetting the adapters, the optimizer and the dropout
    seeds costs milliseconds, and a trial then trains exactly as it would on
    a fresh model. That lets the steps be traced before a trial's clock starts,
    and lets the next trial with the same LoRA config use the model again.
    """

    def __init__(self, config, model, seed, registrations):
        self.config = config
        self.model = model
        self.seed = seed
        self.registrations = registrations  # what TensorFlow keeps of its traced steps, released with it
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
    with the same LoRA config (rank, alpha, targets, dropout) share one compiled model,
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

    def __init__(self, base, space, epochs=2, seed=0, reuse_models=True, jit_compile=False, lora_init="peft"):
        super().__init__(name="lora_t5")
        self.base = base
        self.space = space
        self.epochs = epochs
        self.seed = seed
        self.lora_init = lora_init  # how A is drawn: `lora_keras.adapters.config.INITIALIZERS`
        self.reuse_models = reuse_models
        self.jit_compile = jit_compile  # XLA: one compile per batch shape; no gain measured on CPU
        self._current = None

    def declare_hyperparameters(self, hp):
        self.space.declare(hp)

    def lora_config(self, hp):
        values = self.space.trial_values(hp)
        return LoraConfig(
            values["rank"], values["lora_alpha"], tuple(values["targets"].split(",")), values["lora_dropout"],
            self.lora_init,
        )

    def trial_epochs(self, hp):
        """`(initial_epoch, epochs)` of a trial: 0 to `self.epochs`, unless Hyperband set a budget."""
        return int(hp.values.get("tuner/initial_epoch", 0)), int(hp.values.get("tuner/epochs", self.epochs))

    def build(self, hp):
        self.declare_hyperparameters(hp)
        config = self.lora_config(hp)
        current = self._current
        if self.reuse_models and current is not None and current.config == config:
            return current.reset(hp.get("learning_rate"))
        self.release()
        registrations = CustomGradientRegistrations()
        keras.utils.set_random_seed(self.seed)  # same init for a trial whatever ran before
        backbone = self.base.build_backbone()
        add_lora(backbone, config, seed=self.seed)
        lean_projections(backbone)
        model = self.base.build_model(backbone)
        model.compile(optimizer=keras.optimizers.Adam(hp.get("learning_rate")), jit_compile=self.jit_compile)
        self._current = _TrialModel(config, model, self.seed, registrations)
        return model

    def release(self):
        """Drop the kept model and free what TensorFlow holds for it."""
        if self._current is None:
            return
        registrations = self._current.registrations
        self._current = None
        if not tf.distribute.has_strategy():  # inside a strategy's scope, clearing breaks the scope
            keras.backend.clear_session()
        registrations.release()  # else TensorFlow keeps the model's training graph to the end

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
        initial_epoch, epochs = self.trial_epochs(hp)
        return model.fit(
            make_dataset(train_tokens, hp.get("batch_size"), shuffle=True, seed=self.seed),
            validation_data=make_dataset(val_tokens, EVAL_BATCH_SIZE),
            epochs=epochs,
            initial_epoch=initial_epoch,
            shuffle=False,  # the dataset reshuffles itself each epoch
            callbacks=callbacks,
            verbose=verbose,
            **kwargs,
        )
