"""The keras-tuner `HyperModel`: builds a LoRA-adapted T5 per trial (`build`) and trains it (`fit`).

What a trial's hyperparameters mean (its values, epochs, LoRA config) is the `SearchSpace`'s;
this builds and fits with them.

Example:
```python
hypermodel = LoraT5HyperModel(base, SearchSpace(ranks=(4,), batch_sizes=(8,)), epochs=1)
```
"""

import time

import keras
import keras_tuner

from lora_keras.data.pipeline import TokenizedPairs, make_dataset
from lora_keras.runtime import precision as precisions
from lora_keras.runtime.backend import in_distribution_strategy
from lora_keras.runtime.graph_memory import CustomGradientRegistrations
from lora_keras.runtime.heap import freeze_long_lived, thaw
from lora_keras.runtime.xla import length_multiple
from lora_keras.adapters import LoraConfig, add_lora, reset_lora
from lora_keras.adapters import lean_projections
from lora_keras.models.base import BaseModel
from tuners.search_space import SearchSpace

EVAL_BATCH_SIZE = 64


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

    def reset(self, learning_rate: float) -> keras.Model:
        """The model as right after `build`, its optimizer at `learning_rate`."""
        reset_lora(self.model.backbone, self.config, self.seed)
        for variable, value in self.seed_states:
            variable.assign(value)
        precisions.reset_optimizer(self.model.optimizer, learning_rate)
        return self.model


class LoraT5HyperModel(keras_tuner.HyperModel):
    """Builds a LoRA-adapted `T5Seq2SeqLM` per trial and trains it.

    Every hyperparameter is declared up front (`declare_hyperparameters`), so
    the first trial logs them all and the tuner never builds a model just to
    discover the space. With `reuse_models` (the default), consecutive trials
    with the same LoRA config (rank, alpha, targets, dropout) share one compiled model,
    reset to its freshly built state, so only the first of them pays for
    building and tracing; results are identical to building anew.

    Args:
        base: the frozen T5 each trial starts from.
        space: the search space; what a trial's values mean is read there.
        epochs: epochs per trial, unless the strategy sets a trial's (Hyperband).
        seed: initialisation, dropout and data order of every trial.
        reuse_models: share one compiled model among consecutive trials of one LoRA config.
        jit_compile: XLA for the train step, batch lengths padded to multiples of 16 so it compiles
            a few shapes (`lora_keras.runtime.xla`); no gain measured on CPU.
        lora_init: how LoRA's A is drawn (`lora_keras.adapters.config.INITIALIZERS`).
        precision: `float32`, `mixed_bfloat16` or `mixed_float16` (`lora_keras.runtime.precision`).

    Example:
    ```python
    hypermodel = LoraT5HyperModel(base, SearchSpace(ranks=(4,)), epochs=2, seed=0)
    hp = keras_tuner.HyperParameters()
    hypermodel.declare_hyperparameters(hp)
    model = hypermodel.build(hp)
    hypermodel.fit(hp, model, train_tokens, val_tokens)
    ```
    """

    def __init__(
        self, base: BaseModel, space: SearchSpace, epochs: int = 2, seed: int = 0, reuse_models: bool = True,
        jit_compile: bool = False, lora_init: str = "peft", precision: str = precisions.DEFAULT,
    ):
        super().__init__(name="lora_t5")
        self.base = base
        self.space = space
        self.epochs = epochs
        self.seed = seed
        self.lora_init = lora_init
        self.reuse_models = reuse_models
        self.jit_compile = jit_compile
        self.precision = precisions.check_precision(precision)
        self.length_multiple = length_multiple(jit_compile)  # bounded batch shapes under XLA
        self._current = None

    def declare_hyperparameters(self, hp: keras_tuner.HyperParameters) -> None:
        """Declare the search space on `hp` (keras-tuner's hook; the space does it)."""
        self.space.declare(hp)

    def lora_config(self, hp: keras_tuner.HyperParameters) -> LoraConfig:
        """The `LoraConfig` that `build(hp)` adapts the model with."""
        return self.space.lora_config(hp, self.lora_init)

    def build(self, hp: keras_tuner.HyperParameters) -> keras.Model:
        """A compiled, LoRA-adapted model for the trial `hp`: new, or the kept one reset.

        Args:
            hp: the trial's hyperparameters.

        Returns:
            A `T5Seq2SeqLM` with LoRA at the trial's config, compiled with Adam at its learning rate.
        """
        self.declare_hyperparameters(hp)
        config = self.lora_config(hp)
        current = self._current
        if self.reuse_models and current is not None and current.config == config:
            return current.reset(hp.get("learning_rate"))
        self.release()
        registrations = CustomGradientRegistrations()
        keras.utils.set_random_seed(self.seed)  # same init for a trial whatever ran before
        backbone = precisions.build_backbone(self.base, self.precision)
        add_lora(backbone, config, seed=self.seed)
        lean_projections(backbone)
        model = self.base.build_model(backbone)
        model.compile(optimizer=precisions.optimizer(self.precision, hp.get("learning_rate")),
                      jit_compile=self.jit_compile)
        self._current = _TrialModel(config, model, self.seed, registrations)
        return model

    def release(self) -> None:
        """Drop the kept model and free what TensorFlow holds for it."""
        thaw()  # the model may have been frozen out of the collector's reach after its trace
        if self._current is None:
            return
        registrations = self._current.registrations
        self._current = None
        if not in_distribution_strategy():  # inside a strategy's scope, clearing breaks the scope
            keras.backend.clear_session()
        registrations.release()  # else TensorFlow keeps the model's training graph to the end

    def trace(
        self, hp: keras_tuner.HyperParameters, model: keras.Model, train_tokens: TokenizedPairs,
        val_tokens: TokenizedPairs,
    ) -> float:
        """Trace `model`'s train and eval steps on one batch, then reset it to its built state.

        `fit` calls this first, so every trial's clock measures training, not tracing,
        whether its model is new or reused.

        Args:
            hp: the trial's hyperparameters (its batch size and learning rate).
            model: the model `build(hp)` returned.
            train_tokens: training pairs; their first batch is traced.
            val_tokens: validation pairs; their first batch is traced.

        Returns:
            The seconds spent (0 if already traced).
        """
        current = self._current
        if current is None or current.model is not model or current.traced:
            return 0.0
        started = time.perf_counter()
        batch_size = hp.get("batch_size")
        head = TokenizedPairs(train_tokens.source_ids[:batch_size], train_tokens.target_ids[:batch_size])
        model.fit(make_dataset(head, batch_size, length_multiple=self.length_multiple), epochs=1, verbose=0,
                  shuffle=False)
        val_head = TokenizedPairs(val_tokens.source_ids[:EVAL_BATCH_SIZE], val_tokens.target_ids[:EVAL_BATCH_SIZE])
        model.evaluate(make_dataset(val_head, EVAL_BATCH_SIZE, length_multiple=self.length_multiple), verbose=0)
        current.reset(hp.get("learning_rate"))
        current.traced = True
        freeze_long_lived()  # later trials' memory clean-up then skips the model and its graphs
        return time.perf_counter() - started

    def fit(
        self, hp: keras_tuner.HyperParameters, model: keras.Model, train_tokens: TokenizedPairs,
        val_tokens: TokenizedPairs, callbacks: list | None = None, verbose: int = 1, **kwargs,
    ) -> keras.callbacks.History:
        """Train `model` for the trial `hp`: its batch size, over its epochs (`SearchSpace.trial_epochs`).

        Args:
            hp: the trial's hyperparameters.
            model: the model `build(hp)` returned.
            train_tokens: training pairs, reshuffled every epoch.
            val_tokens: validation pairs, evaluated after every epoch.
            callbacks: Keras callbacks of the trial.
            verbose: Keras's progress output.
            **kwargs: passed on to `keras.Model.fit`.

        Returns:
            Keras's `History` of the trial.
        """
        self.trace(hp, model, train_tokens, val_tokens)
        initial_epoch, epochs = self.space.trial_epochs(hp, self.epochs)
        return model.fit(
            make_dataset(train_tokens, hp.get("batch_size"), shuffle=True, seed=self.seed,
                         length_multiple=self.length_multiple),
            validation_data=make_dataset(val_tokens, EVAL_BATCH_SIZE, length_multiple=self.length_multiple),
            epochs=epochs,
            initial_epoch=initial_epoch,
            shuffle=False,  # the dataset reshuffles itself each epoch
            callbacks=callbacks,
            verbose=verbose,
            **kwargs,
        )
