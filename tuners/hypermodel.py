"""The keras-tuner `HyperModel`: builds a LoRA-adapted T5 per trial (`build`) and trains it (`fit`).

One model serves every trial of one set of targets, dropout and init: each adapted projection
holds `slots` adapters padded to the sweep's largest rank (`lora_keras.adapters.layer`), so its
train and eval steps are traced once, whatever the rank or alpha. A trial is put in a slot
and trains from its own initial adapter; `fit_group` trains several trials of one batch size
and learning rate in one step, each on its own rows and its own loss (`fit` is the group of
one). What a trial's hyperparameters mean (values, epochs, LoRA config) is the `SearchSpace`'s.

keras-tuner's own tuners drive it on plain `(source, target)` string pairs: input no trial can
train on raises `SearchInputError` (a `keras_tuner.errors.FatalError`) from `search` at once.

Example:
```python
hypermodel = LoraT5HyperModel(base, SearchSpace(ranks=(1, 4, 16), batch_sizes=(8,)), epochs=2, slots=3)
model = hypermodel.build(hp)                                  # compiled, the trial in slot 0
hypermodel.fit(hp, model, train_tokens, val_tokens)           # one trial
hypermodel.fit_group([hp1, hp4, hp16], model, train_tokens, val_tokens)   # three in one step

tuner = keras_tuner.RandomSearch(LoraT5HyperModel(base, ranks=[1, 4], batch_sizes=[8]), "val_loss", max_trials=2)
tuner.search(train_pairs, validation_data=val_pairs, epochs=1)   # [("the cat .", "le chat ."), ...]
```
"""

import dataclasses
import itertools
import os
import time

import keras
import keras_tuner
import numpy as np

from callbacks import StepTimer
from lora_keras.adapters import (
    LoraConfig, activate_slots, adapter_weights, add_lora, check_rank, clear_slots, load_slot, read_adapter, set_slot,
)
from lora_keras.data.pipeline import (
    TokenizedPairs, epoch_order, make_dataset, repeat_for_slots, stack_for_slots, tokenize_pairs,
)
from lora_keras.errors import InputError
from lora_keras.models.base import BaseModel
from lora_keras.models.token_loss import PairLosses
from lora_keras.runtime import precision as precisions
from lora_keras.backends.devices import in_distribution_strategy, static_shapes
from lora_keras.backends.memory import CustomGradientRegistrations
from lora_keras.runtime.heap import freeze_long_lived, thaw
from lora_keras.runtime.xla import length_multiple
from tuners.search_space import SearchSpace

EVAL_BATCH_SIZE = 64
# A configuration alone: a warm-up (`measure_alone`), then (measured) its longest batch and ALONE_UNTIMED of its own batches
# untimed (their pages come back after the memory clean-up), then at least ALONE_STEPS timed steps that take at
# least ALONE_TIME_S in all (at batch 8 on the 2-core CPU, 6 steps of 30 ms moved the estimate by 20% between runs).
ALONE_UNTIMED = 2
ALONE_STEPS = 6
ALONE_TIME_S = 1.0
# `keras.Model.fit` arguments each trial sets itself (its targets, batch size and data order), and the fix.
FIT_ARGUMENTS_OF_THE_TRIAL = {
    "y": "pairs hold their targets; pass search(train_pairs, validation_data=val_pairs)",
    "batch_size": "it is a hyperparameter: give batch_sizes=[...] to LoraT5HyperModel",
    "validation_split": "pass the held-out pairs as validation_data=val_pairs",
    "shuffle": "each trial reshuffles its pairs every epoch with its seed; drop it",
}


class SearchInputError(keras_tuner.errors.FatalValueError, InputError):
    """Input no trial can train on: keras-tuner's `search` stops at once (a `FatalError`), not per trial.

    An `InputError` too: one line naming the argument (`parameter`), the problem and the fix.

    Example:
    ```python
    tuner.search(np.zeros((4, 8)), validation_data=val_pairs)
    # SearchInputError: x: a numpy.ndarray; pass a list of (source, target) string pairs or TokenizedPairs
    ```
    """


def task_prefix(base: BaseModel) -> str:
    """The prefix put before each source: `translate <source> to <target>: ` for a base with a task, else none.

    Example: `task_prefix(load_base("tiny"))` -> `"translate English to Dravic: "`.
    """
    task = base.task or {}
    if task.get("source_lang") and task.get("target_lang"):
        return f"translate {task['source_lang']} to {task['target_lang']}: "
    return ""


def check_space_fits(base: BaseModel, space: SearchSpace, lora_init: str = "peft") -> None:
    """`InputError` (`rank`) when a configuration of `space` does not fit the base's layers (a rank too wide).

    Example: `check_space_fits(load_base("tiny"), SearchSpace(ranks=(512,)))` raises.
    """
    backbone = base.layout_backbone()
    for rank, alpha, targets, dropout in itertools.product(
            space.ranks, space.lora_alphas or (None,), space.target_sets, space.lora_dropouts):
        check_rank(backbone, LoraConfig(rank, alpha, targets, dropout, lora_init))


class _KeptModel:
    """A compiled model and what puts it back to its state right after `build`."""

    def __init__(self, key, model, registrations):
        self.key = key
        self.model = model
        self.registrations = registrations  # what TensorFlow keeps of its traced steps, released with it
        self.traced = False
        self.pair_losses = None  # its `PairLosses`, made at first use
        self.warm_orders = set()  # the (batch size, seed) `measure_alone` has warmed up with a whole pass


class LoraT5HyperModel(keras_tuner.HyperModel):
    """Builds a LoRA-adapted `T5Seq2SeqLM` per trial and trains it, alone or with others in one step.

    Every hyperparameter is declared up front (`declare_hyperparameters`), so the first trial
    logs them all and the tuner never builds a model just to discover the space. Trials with
    the same targets, dropout and init share one compiled model (`reuse_models`), reset to its
    freshly built state with the trial's adapter in its slot: results are identical to building
    anew, and only the first pays for building and tracing.

    Args:
        base: the frozen T5 each trial starts from.
        space: the search space; its largest rank pads every adapter. None builds it from the
            keywords `ranks`, `batch_sizes`, `learning_rates`, `lora_alphas`, `target_sets`,
            `lora_dropouts` and `seeds` (`SearchSpace`'s fields; its defaults for those not given).
        epochs: epochs per trial, unless the strategy sets a trial's (Hyperband).
        seed: the seed of every trial (LoRA initialisation, dropout masks, data order) when `space`
            has one seed; None keeps the space's. With several (`space.seeds`, `--repeats`),
            each trial trains with its own.
        slots: the most trials trained in one step (`fit_group`); 1 trains one at a time.
        reuse_models: share one compiled model among trials of one targets, dropout and init.
        jit_compile: XLA for the train step, batch lengths padded to multiples of 16 so it compiles
            a few shapes (`lora_keras.runtime.xla`); one slot only.
        lora_init: how LoRA's A is drawn (`lora_keras.adapters.config.INITIALIZERS`).
        precision: `float32`, `mixed_bfloat16` or `mixed_float16` (`lora_keras.runtime.precision`).
        prefix: put before each source when `fit` tokenizes string pairs; None: the base's task
            prefix (`task_prefix`).
        max_source_length: source tokens kept when `fit` tokenizes string pairs, EOS included.
        max_target_length: target tokens kept likewise.

    Example:
    ```python
    hypermodel = LoraT5HyperModel(base, SearchSpace(ranks=(4,)), epochs=2, seed=0)
    hp = keras_tuner.HyperParameters()
    hypermodel.declare_hyperparameters(hp)
    model = hypermodel.build(hp)
    hypermodel.fit(hp, model, train_tokens, val_tokens)

    # keras-tuner's own tuners, on string pairs (or TokenizedPairs):
    tuner = keras_tuner.GridSearch(LoraT5HyperModel(base, ranks=[1, 4], batch_sizes=[8]), objective="val_loss")
    tuner.search(train_pairs, validation_data=val_pairs, epochs=1)
    model = tuner.get_best_models()[0]
    ```
    """

    def __init__(
        self, base: BaseModel, space: SearchSpace | None = None, epochs: int = 2, seed: int | None = None,
        slots: int = 1, reuse_models: bool = True, jit_compile: bool = False, lora_init: str = "peft",
        precision: str = precisions.DEFAULT, *, prefix: str | None = None, max_source_length: int = 64,
        max_target_length: int = 64, **space_values,
    ):
        super().__init__(name="lora_t5")
        if space is None:  # the keywords' space: a rank wider than a layer fails here, not in every trial's build
            space = _space(space_values)
            check_space_fits(base, space, lora_init)
        elif space_values:
            _space(space_values)  # an unknown keyword is named as such first
            raise InputError(f"{sorted(space_values)[0]}: given with a space; pass the space or its values, "
                             "not both", parameter="space")
        if slots > 1 and jit_compile and not static_shapes():
            raise InputError("slots: several trials per step need shapes XLA cannot compile; use 1 with jit_compile",
                             parameter="slots")
        if seed is not None and len(space.seeds) == 1:
            space = dataclasses.replace(space, seeds=(int(seed),))
        self.base = base
        self.space = space
        self.epochs = epochs
        self.seed = space.seeds[0]  # the model's build; each trial then starts from its own seed
        self.slots = int(slots)
        self.reuse_models = reuse_models
        self.jit_compile = jit_compile
        self.lora_init = lora_init
        self.precision = precisions.check_precision(precision)
        self.length_multiple = length_multiple(jit_compile)  # bounded batch shapes under XLA
        self.prefix = task_prefix(base) if prefix is None else prefix
        self.max_source_length = int(max_source_length)
        self.max_target_length = int(max_target_length)
        self._kept = None
        self._tokenized = {}  # string pairs -> their TokenizedPairs: a search's every trial tokenizes them once

    def declare_hyperparameters(self, hp: keras_tuner.HyperParameters) -> None:
        """Declare the search space on `hp` (keras-tuner's hook; the space does it)."""
        self.space.declare(hp)

    def trial_seed(self, hp: keras_tuner.HyperParameters) -> int:
        """The seed the trial `hp` trains with: its LoRA initialisation, dropout masks and data order."""
        return self.space.trial_values(hp)["seed"]

    def lora_config(self, hp: keras_tuner.HyperParameters) -> LoraConfig:
        """The `LoraConfig` of the trial `hp`."""
        return self.space.lora_config(hp, self.lora_init)

    def build(self, hp: keras_tuner.HyperParameters) -> keras.Model:
        """A compiled, LoRA-adapted model for the trial `hp`: new, or the kept one reset.

        Args:
            hp: the trial's hyperparameters.

        Returns:
            A `T5Seq2SeqLM` whose slot 0 holds the trial's initial adapter (the other slots
            empty), compiled with Adam at its learning rate.
        """
        self.declare_hyperparameters(hp)
        model = self.model_for(self.lora_config(hp))
        self.start(model, [hp])
        return model

    def model_for(self, config: LoraConfig) -> keras.Model:
        """The compiled model that can train `config`: the kept one, or a new one (every slot empty).

        Until `start` puts trials in it, it computes the base's outputs.
        """
        key = (tuple(config.targets), float(config.dropout), config.init)
        if self.reuse_models and self._kept is not None and self._kept.key == key:
            return self._kept.model
        self.release()
        registrations = CustomGradientRegistrations()
        keras.utils.set_random_seed(self.seed)  # same init for a trial whatever ran before
        backbone = precisions.build_backbone(self.base, self.precision)
        add_lora(backbone, config, seed=self.seed, slots=self.slots, max_rank=max(self.space.ranks))
        clear_slots(backbone)
        model = self.base.build_model(backbone)
        model.compile(optimizer=precisions.optimizer(self.precision, self.space.learning_rates[0]),
                      jit_compile=self.jit_compile)
        self._kept = _KeptModel(key, model, registrations)
        return model

    def release(self) -> None:
        """Drop the kept model and free what TensorFlow holds for it."""
        thaw()  # the model may have been frozen out of the collector's reach after its trace
        if self._kept is None:
            return
        registrations = self._kept.registrations
        self._kept = None
        if not in_distribution_strategy():  # inside a strategy's scope, clearing breaks the scope
            keras.backend.clear_session()
        registrations.release()  # else TensorFlow keeps the model's training graph to the end

    def start(self, model: keras.Model, hps: list, parents: list | None = None) -> None:
        """Put trial `j` of `hps` in slot `j` at its initial adapter (or its parent's), the model as built.

        Args:
            model: a model from `model_for` or `build`.
            hps: the trials, at most `slots`.
            parents: per trial, what it continues from (Hyperband): an adapter file or its
                `(LoraConfig, weights)`; or None.
        """
        if not 1 <= len(hps) <= self.slots:
            raise InputError(f"slots: {len(hps)} trials for a model of {self.slots} slots", parameter="slots")
        backbone = model.backbone
        clear_slots(backbone, first=len(hps))  # empty slots: no gradient, no update
        for slot, hp in enumerate(hps):
            set_slot(backbone, slot, self.lora_config(hp), self.trial_seed(hp))
            parent = parents[slot] if parents else None
            if isinstance(parent, (str, os.PathLike)):
                load_slot(backbone, slot, *read_adapter(parent), source=str(parent))
            elif parent is not None:
                load_slot(backbone, slot, *parent)
        activate_slots(backbone, len(hps))
        # Dropout masks (LoRA's and the base's) drawn from the first trial's seed: the same
        # whatever ran before, and another seed's masks for another seed.
        seed_states = [v for v in model.variables if "seed_generator" in v.path]
        for index, variable in enumerate(seed_states):
            state = np.random.SeedSequence((self.trial_seed(hps[0]), index)).generate_state(1)[0] % 2**31
            variable.assign(np.array([state, 0], keras.backend.standardize_dtype(variable.dtype)))
        precisions.reset_optimizer(model.optimizer, hps[0].get("learning_rate"))

    def trace(self, model: keras.Model, train_tokens: TokenizedPairs, val_tokens: TokenizedPairs,
              batch_size: int = 2) -> float:
        """Trace `model`'s train and eval steps once (any rank, batch size and slot count); seconds spent.

        `fit_group` calls it first, so a trial's clock measures training, not tracing. With one
        slot it traces on `batch_size` rows (XLA and JAX compile per shape: the trial's own), with
        several on two rows per slot (TensorFlow's traced step takes any batch then). Leaves every
        slot empty: `start` puts the trials in.
        """
        kept = self._kept
        if kept is None or kept.model is not model or kept.traced:
            return 0.0
        started = time.perf_counter()
        backbone = model.backbone
        rows, val_rows = (2, 2) if self.slots > 1 else (batch_size, EVAL_BATCH_SIZE)
        head = TokenizedPairs(train_tokens.source_ids[:rows], train_tokens.target_ids[:rows])
        val_head = TokenizedPairs(val_tokens.source_ids[:val_rows], val_tokens.target_ids[:val_rows])
        # One slot too: the first configuration measured alone then runs as warm as the next ones.
        for slots in dict.fromkeys((self.slots, 1)):
            activate_slots(backbone, slots)
            model.fit(repeat_for_slots(make_dataset(head, rows, length_multiple=self.length_multiple), slots),
                      epochs=1, verbose=0, shuffle=False)
        activate_slots(backbone, self.slots)
        model.evaluate(repeat_for_slots(make_dataset(val_head, val_rows, length_multiple=self.length_multiple),
                                        self.slots), verbose=0)
        clear_slots(backbone)
        activate_slots(backbone, 1)
        kept.traced = True
        freeze_long_lived()  # later trials' memory clean-up then skips the model and its graphs
        return time.perf_counter() - started

    def fit_group(
        self, hps: list, model: keras.Model, train_tokens: TokenizedPairs, val_tokens: TokenizedPairs,
        callbacks: list | None = None, verbose: int = 1, parents: list | None = None, epochs: int | None = None,
        **kwargs,
    ) -> keras.callbacks.History:
        """Train the trials `hps` together: slot `j` for `hps[j]`, each batch holding each trial's batch once.

        They must share batch size, learning rate and epochs (`tuners.packing.pack_key`); each
        sees the batches its seed gives it alone, in that order.

        Args:
            hps: the trials.
            model: a model from `build` or `model_for`.
            train_tokens: training pairs, reshuffled every epoch: `TokenizedPairs` or `(source, target)`
                strings (`tokenize`).
            val_tokens: validation pairs, evaluated after every epoch; the same kinds.
            callbacks: Keras callbacks; with several trials, `loss_<slot>` and `val_loss_<slot>`
                are each trial's losses.
            verbose: Keras's progress output.
            parents: per trial, the adapter file it continues from, or None.
            epochs: the epochs to train to, as keras-tuner's `search(..., epochs=N)` passes them; the
                hypermodel's `epochs` when None (a Hyperband trial's own budget either way).
            **kwargs: passed on to `keras.Model.fit`.

        Returns:
            Keras's `History`.
        """
        train_tokens, val_tokens = self.tokenize(train_tokens, "x"), self.tokenize(val_tokens, "validation_data")
        max_epochs = self.epochs if epochs is None else int(epochs)
        shared = {(hp.get("batch_size"), hp.get("learning_rate"), self.space.trial_epochs(hp, max_epochs))
                  for hp in hps}
        if len(shared) > 1:
            raise InputError("hps: trials trained together need one batch size, learning rate and epochs",
                             parameter="hps")
        self.trace(model, train_tokens, val_tokens, hps[0].get("batch_size"))
        self.start(model, hps, parents)
        slots = len(hps)
        initial_epoch, epochs = self.space.trial_epochs(hps[0], max_epochs)
        seeds = [self.trial_seed(hp) for hp in hps]
        orders = {seed: make_dataset(train_tokens, hps[0].get("batch_size"), shuffle=True, seed=seed,
                                     length_multiple=self.length_multiple) for seed in seeds}
        # One data order for every slot: one pipeline, repeated; else each slot reads its own seed's.
        train = repeat_for_slots(orders[seeds[0]], slots) if len(orders) == 1 else stack_for_slots(
            [orders[seed] for seed in seeds])
        val = make_dataset(val_tokens, EVAL_BATCH_SIZE, length_multiple=self.length_multiple)
        return model.fit(
            train, validation_data=repeat_for_slots(val, slots),
            epochs=epochs, initial_epoch=initial_epoch,
            shuffle=False,  # the dataset reshuffles itself each epoch
            callbacks=callbacks, verbose=verbose, **kwargs,
        )

    def fit(
        self, hp: keras_tuner.HyperParameters, model: keras.Model, x=None, validation_data=None,
        callbacks: list | None = None, verbose: int = 1, epochs: int | None = None, initial_epoch: int | None = None,
        **kwargs,
    ) -> keras.callbacks.History:
        """Train `model` for the trial `hp`: its batch size, over its epochs (the group of one).

        keras-tuner's `Tuner.run_trial` calls it with what `search` was given, its callbacks added.

        Args:
            hp: the trial's hyperparameters.
            model: the trial's model from `build`; for a continued Hyperband trial (`tuner/trial_id`),
                with keras-tuner's checkpoint of its parent loaded, which the trial continues from.
            x: the training pairs: `(source, target)` strings, tokenized with the base's tokenizer
                (`prefix`, `max_source_length`, `max_target_length`), or `TokenizedPairs`.
            validation_data: the validation pairs, the same kinds; every trial is scored on them (`val_loss`).
            callbacks: Keras callbacks.
            verbose: Keras's progress output.
            epochs: the epochs to train to (`search(..., epochs=N)`); the hypermodel's when None.
            initial_epoch: Hyperband's; the trial's own (`SearchSpace.trial_epochs`) is used.
            **kwargs: passed on to `keras.Model.fit`, except what the trial sets itself (`batch_size`, ...).

        Returns:
            Keras's `History`, whose `val_loss` keras-tuner reads.

        Raises:
            SearchInputError: input no trial can train on, before any training.

        Example: `hypermodel.fit(hp, hypermodel.build(hp), train_pairs, validation_data=val_pairs, epochs=1)`.
        """
        for name, fix in FIT_ARGUMENTS_OF_THE_TRIAL.items():
            if name in kwargs:
                raise SearchInputError(f"{name}: set by each trial, not search; {fix}", parameter=name)
        train_tokens, val_tokens = self.tokenize(x, "x"), self.tokenize(validation_data, "validation_data")
        parents = None
        if "tuner/trial_id" in hp.values:  # stock Hyperband loaded the parent's checkpoint: continue from its adapter
            parents = [(self.lora_config(hp), adapter_weights(model.backbone, 0))]
        return self.fit_group([hp], model, train_tokens, val_tokens, callbacks=callbacks, verbose=verbose,
                              parents=parents, epochs=epochs, **kwargs)

    def tokenize(self, pairs, argument: str = "x") -> TokenizedPairs:
        """`pairs` as `TokenizedPairs`: string pairs tokenized with the base's tokenizer (once), tokens as given.

        Args:
            pairs: `(source, target)` string pairs (a list or tuple), or `TokenizedPairs`.
            argument: the `search` argument they came as, named in errors.

        Returns:
            The tokenized pairs.

        Raises:
            SearchInputError: `pairs` None, empty, or not of those kinds.

        Example: `len(hypermodel.tokenize([("the cat .", "le chat .")]))` -> `1`.
        """
        if isinstance(pairs, TokenizedPairs):
            if not len(pairs):
                raise SearchInputError(f"{argument}: empty TokenizedPairs; pass at least one pair", parameter=argument)
            return pairs
        if pairs is None:
            what = "no training pairs" if argument == "x" else "no validation pairs (every trial is scored on them)"
            raise SearchInputError(f"{argument}: {what}; call search(train_pairs, validation_data=val_pairs)",
                                   parameter=argument)
        if not isinstance(pairs, (list, tuple)):
            raise SearchInputError(f"{argument}: a {type(pairs).__module__}.{type(pairs).__qualname__}; pass a list "
                                   "of (source, target) string pairs or TokenizedPairs", parameter=argument)
        if not pairs:
            raise SearchInputError(f"{argument}: an empty list; pass at least one (source, target) pair",
                                   parameter=argument)
        for index, pair in enumerate(pairs):
            if not (isinstance(pair, (list, tuple)) and len(pair) == 2 and all(isinstance(t, str) for t in pair)):
                raise SearchInputError(f"{argument}: item {index} is {pair!r:.60}, not a (source, target) pair of "
                                       "strings; pass a list of (source, target) string pairs", parameter=argument)
        key = tuple(map(tuple, pairs))
        if key not in self._tokenized:
            if len(self._tokenized) >= 4:  # a search's train and val pairs, and a few more
                self._tokenized.clear()
            self._tokenized[key] = tokenize_pairs(self.base.tokenizer, key, self.prefix, self.max_source_length,
                                                  self.max_target_length)
        return self._tokenized[key]

    def measure_alone(
        self, hp: keras_tuner.HyperParameters, model: keras.Model, train_tokens: TokenizedPairs, callbacks: list,
        steps: int | None = None,
    ) -> None:
        """Train the trial's configuration alone (one slot) for a few steps under `callbacks`.

        Under `callbacks`: the training set's longest pairs (the memory peak of any of its
        batches), then up to `steps` (None: an epoch's) batches of the pairs in its seed's order
        (the trial's first epoch's, `lora_keras.data.pipeline.epoch_order`), unless
        a callback stops the fit sooner (`alone_timer`'s `StepTimer` does, once it has timed
        enough). Before them, outside `callbacks`, a warm-up: the first time the model trains
        on these batches (this batch size and seed), those very steps (stopped by a fresh
        `alone_timer`); after that, one step on the longest pairs. What new shapes allocate once
        (TensorFlow's caches, the allocator's arenas) is then no trial's cost, whichever trial of
        its batch size, of its seed, or of the process, comes first. Leaves the model for `start`
        to reset.
        """
        batch_size = hp.get("batch_size")
        lengths = (train_tokens.source_ids != 0).sum(1) + (train_tokens.target_ids != 0).sum(1)
        longest = np.argsort(-lengths, kind="stable")[:batch_size]
        most = self.steps_per_epoch(hp, train_tokens) if steps is None else steps
        # The longest pairs, then the trial's own first-epoch order (`epoch_order`, the same on any backend).
        own = epoch_order(len(train_tokens), self.trial_seed(hp), 0)[: most * batch_size]
        rows = np.concatenate([longest, own])
        measured = TokenizedPairs(train_tokens.source_ids[rows], train_tokens.target_ids[rows])
        longest_pairs = TokenizedPairs(train_tokens.source_ids[longest], train_tokens.target_ids[longest])

        def steps_alone():
            return make_dataset(measured, batch_size, length_multiple=self.length_multiple)

        kept = self._kept if self._kept is not None and self._kept.model is model else None
        self.start(model, [hp])
        order = (batch_size, self.trial_seed(hp))
        if kept is not None and order not in kept.warm_orders:
            model.fit(steps_alone(), epochs=1, verbose=0, shuffle=False, callbacks=[self.alone_timer()])
            kept.warm_orders.add(order)
        else:
            model.fit(make_dataset(longest_pairs, batch_size, length_multiple=self.length_multiple), epochs=1,
                      verbose=0, shuffle=False)
        self.start(model, [hp])
        model.fit(steps_alone(), epochs=1, verbose=0, shuffle=False, callbacks=callbacks)

    @staticmethod
    def alone_timer(estimate_time: bool = True) -> StepTimer:
        """The `StepTimer` of `measure_alone`: the longest batch and a few of its own untimed, then enough timed.

        `estimate_time`: time steps for at least `ALONE_TIME_S` (a packed trial's time is estimated
        from them); else `ALONE_STEPS` suffice (a trial alone is timed in its own fit).
        """
        return StepTimer(warmup=1 + ALONE_UNTIMED, min_steps=ALONE_STEPS,
                         min_time_s=ALONE_TIME_S if estimate_time else 0.0)

    def pair_losses(self, model: keras.Model, val_tokens: TokenizedPairs, slots: int = 1) -> tuple:
        """Per validation pair and slot in use, its summed NLL; and each pair's real target tokens.

        Returns:
            `(nll (slots, n), tokens (n,))`, `nll[j].sum() / tokens.sum()` being slot `j`'s val loss.
        """
        kept = self._kept if self._kept is not None and self._kept.model is model else None
        if kept is None:
            return PairLosses(model).of(val_tokens, slots, EVAL_BATCH_SIZE, self.length_multiple)
        if kept.pair_losses is None:  # one per kept model: `predict` traces once
            kept.pair_losses = PairLosses(model)
        return kept.pair_losses.of(val_tokens, slots, EVAL_BATCH_SIZE, self.length_multiple)

    def steps_per_epoch(self, hp: keras_tuner.HyperParameters, train_tokens: TokenizedPairs) -> int:
        """The trial's training steps per epoch."""
        return -(-len(train_tokens) // hp.get("batch_size"))


def _space(values: dict) -> SearchSpace:
    """The `SearchSpace` of `LoraT5HyperModel`'s keywords `values`; an `InputError` for an unknown or empty one."""
    fields = {field.name for field in dataclasses.fields(SearchSpace)}
    unknown = sorted(set(values) - fields)
    if unknown:
        raise InputError(f"{unknown[0]}: not an argument of LoraT5HyperModel; pass a SearchSpace field "
                         f"({', '.join(sorted(fields))}) or another argument", parameter=unknown[0])
    for name, value in values.items():
        if isinstance(value, (str, int, float)) or (not len(value) and name != "lora_alphas"):
            raise InputError(f"{name}: {value!r}; pass a non-empty list of values", parameter=name)
    if "target_sets" in values:  # each set a list of projections or a name such as "q,v"
        values["target_sets"] = tuple(tuple(t.split(",") if isinstance(t, str) else t) for t in values["target_sets"])
    return SearchSpace(**{name: tuple(value) for name, value in values.items()})
