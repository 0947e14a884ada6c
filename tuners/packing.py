"""Packed trials: configurations of one batch size and learning rate trained together on one frozen base.

One model serves the whole sweep: every targeted projection holds `slots` LoRA adapters
padded to the sweep's largest rank (`lora_keras.adapters.packed`), so its train and eval
steps are traced once, whatever the rank, batch size or number of configurations in a step.
Trials that share batch size, learning rate, epochs, targets and dropout (in the default grid,
the three ranks of each batch size) train in one step, each on its own slice of the batch and
its own loss: the same training as each alone. Each trial's cost figures are still its own:
before the packed fit, each configuration trains alone (one slot in use) for a few steps on
the same traced step: its median step time, scaled to its steps, is its `training_time_s`,
and the peak memory of those steps (the longest batch first) its `peak_memory_mb`.

Example:
```python
hypermodel = PackedLoraHyperModel(base, space, epochs=2, slots=3)
model = hypermodel.build_pack([hp_rank1, hp_rank4, hp_rank16])
hypermodel.trace(model, train_tokens, val_tokens)
alone = hypermodel.measure_alone(hp_rank4, model, train_tokens, [StepTimer(), PeakMemory()])
hypermodel.fit_pack([hp_rank1, hp_rank4, hp_rank16], model, train_tokens, val_tokens, callbacks)
```
"""

import math
import time

import keras
import keras_tuner
import numpy as np

from lora_keras.adapters import LoraConfig, lean_projections, read_adapter
from lora_keras.adapters.packed import add_packed_lora
from lora_keras.data.pipeline import TokenizedPairs, make_dataset, repeat_for_slots
from lora_keras.models.base import BaseModel
from lora_keras.models.token_loss import PackedTokenLossSeq2SeqLM
from lora_keras.runtime.heap import freeze_long_lived
from tuners.hypermodel import EVAL_BATCH_SIZE, LoraT5HyperModel
from tuners.search_space import SearchSpace

ALONE_STEPS = 4  # timed steps of each configuration alone, after one untimed step on its longest batch
# The default pack holds at most this many rows per step. On the 2-core CPU a step's time per row is
# lowest at 64-128 rows, and grows beyond: three trials of batch 64 in one step (192 rows) took longer
# than the three alone, three of batch 8 or 32 took 0.5-0.65 of their time (docs/measured.md).
DEFAULT_MAX_ROWS = 96


def pack_key(space: SearchSpace, hp: keras_tuner.HyperParameters, max_epochs: int) -> tuple:
    """What trials must share to train in one step: all but rank and alpha.

    Example: `pack_key(space, hp, 2)` -> `(8, 0.003, "q,v", 0.0, 0, 2)`.
    """
    values = space.trial_values(hp)
    return (values["batch_size"], values["learning_rate"], values["targets"], values["lora_dropout"],
            *space.trial_epochs(hp, max_epochs))


class PackedLoraHyperModel(LoraT5HyperModel):
    """A `LoraT5HyperModel` whose trials train on one packed model, several in one step.

    Args:
        base: the frozen T5 every trial starts from.
        space: the search space (its largest rank pads every slot).
        epochs: epochs per trial, unless the strategy sets a trial's.
        seed: initialisation, dropout and data order of every trial.
        slots: the most configurations trained in one step (1: one at a time, still traced once).
        max_rows: the most rows (configurations x batch size) of a packed step; None for no limit.
        jit_compile: XLA for the train and eval steps.
        lora_init: how LoRA's A is drawn.

    Example: `PackedLoraHyperModel(base, SearchSpace(), epochs=2, slots=3)`.
    """

    def __init__(self, base: BaseModel, space: SearchSpace, epochs: int = 2, seed: int = 0, slots: int = 1,
                 jit_compile: bool = False, lora_init: str = "peft", max_rows: int | None = None):
        super().__init__(base, space, epochs=epochs, seed=seed, jit_compile=jit_compile, lora_init=lora_init)
        self.slots = int(slots)
        self.max_rows = max_rows
        self._model = None
        self._model_key = None
        self._seed_states = []
        self.traced = False

    def slots_for(self, hp: keras_tuner.HyperParameters) -> int:
        """How many trials of `hp`'s batch size may train in one step: `slots`, within `max_rows`.

        Example: with `slots=3, max_rows=96`: 3 at batch size 8 or 32, 1 at 64 or 128.
        """
        if self.max_rows is None:
            return self.slots
        return max(1, min(self.slots, self.max_rows // hp.get("batch_size")))

    def model_for(self, config: LoraConfig) -> PackedTokenLossSeq2SeqLM:
        """The packed model that can train `config`: the kept one, or a new one for other targets or dropout.

        Every slot starts at zero, so until `start` the model computes the base's outputs.
        """
        key = (tuple(config.targets), float(config.dropout), config.init)
        if self._model is not None and self._model_key == key:
            return self._model
        self.release()
        keras.utils.set_random_seed(self.seed)
        backbone = self.base.build_backbone()
        pack = add_packed_lora(backbone, self.slots, max(self.space.ranks), config.targets, config.dropout,
                               seed=self.seed, init=config.init)
        lean_projections(backbone)
        model = PackedTokenLossSeq2SeqLM(backbone, pack)
        model.compile(optimizer=keras.optimizers.Adam(self.space.learning_rates[0]), jit_compile=self.jit_compile)
        self._model, self._model_key, self.traced = model, key, False
        self._seed_states = [(v, keras.ops.convert_to_numpy(v)) for v in model.variables
                             if "seed_generator" in v.path]
        return model

    def release(self) -> None:
        """Drop the packed model (and the unpacked one, if any)."""
        self._model = self._model_key = None
        super().release()

    def build_pack(self, hps: list[keras_tuner.HyperParameters]) -> PackedTokenLossSeq2SeqLM:
        """The packed model for the trials `hps` (one slot each), not yet set to them (`start` does)."""
        if len(hps) > self.slots:
            raise ValueError(f"{len(hps)} trials for {self.slots} slots")
        for hp in hps:
            self.declare_hyperparameters(hp)
        return self.model_for(self.lora_config(hps[0]))

    def start(self, hps: list[keras_tuner.HyperParameters], parents: list | None = None) -> None:
        """Put each trial's initial adapter in its slot (or its parent's, for a continued trial), fresh optimizer.

        Args:
            hps: the trials, slot `j` for `hps[j]`.
            parents: per trial, the adapter file it continues from, or None.
        """
        model = self._model
        pack = model.pack
        for slot in range(pack.slots):  # unused slots stay zero: no gradient, no update
            if slot < len(hps):
                pack.set_slot(slot, self.lora_config(hps[slot]), self.seed)
                if parents and parents[slot] is not None:
                    pack.load_slot(slot, read_adapter(parents[slot])[1])
            else:
                for projection in pack.layers.values():
                    for variable in (projection.lora_a, projection.lora_b):
                        values = keras.ops.convert_to_numpy(variable).copy()
                        values[slot] = 0.0
                        variable.assign(values)
        pack.activate(len(hps))
        pack.reset_dropout()
        for variable, value in self._seed_states:
            variable.assign(value)
        optimizer = model.optimizer
        for variable in optimizer.variables:
            if variable is not optimizer._learning_rate:
                variable.assign(np.zeros(variable.shape, variable.dtype))
        optimizer.learning_rate = hps[0].get("learning_rate")

    def trace(self, model: keras.Model, train_tokens: TokenizedPairs, val_tokens: TokenizedPairs) -> float:
        """Trace the packed model's train and eval steps once (any rank, batch size and slot count); seconds spent."""
        if self.traced or model is not self._model:
            return 0.0
        started = time.perf_counter()
        pack = model.pack
        head = TokenizedPairs(train_tokens.source_ids[:2], train_tokens.target_ids[:2])
        # One slot too: the first configuration measured alone then runs as warm as the next ones
        # (its timed steps came out twice the others' without this).
        for slots in dict.fromkeys((pack.slots, 1)):
            pack.activate(slots)
            model.fit(repeat_for_slots(make_dataset(head, 2), slots), epochs=1, verbose=0, shuffle=False)
        pack.activate(pack.slots)
        val_head = TokenizedPairs(val_tokens.source_ids[:2], val_tokens.target_ids[:2])
        model.evaluate(repeat_for_slots(make_dataset(val_head, 2), pack.slots), verbose=0)
        for variable in pack.variables:  # back to the base: every slot zero
            variable.assign(np.zeros(variable.shape, "float32"))
        pack.activate(1)
        self.traced = True
        freeze_long_lived()  # later trials' memory clean-up then skips the model and its graphs
        return time.perf_counter() - started

    def measure_alone(
        self, hp: keras_tuner.HyperParameters, model: keras.Model, train_tokens: TokenizedPairs, callbacks: list,
        steps: int = ALONE_STEPS,
    ) -> None:
        """Train the trial's configuration alone (one slot in use) for a few steps under `callbacks`.

        The first step is on the training set's longest pairs (the memory peak of any of its
        batches), untimed; then `steps` steps on the trial's own first batches. Leaves the
        model's state for `start` to reset.
        """
        batch_size = hp.get("batch_size")
        self.start([hp], [None])
        lengths = (train_tokens.source_ids != 0).sum(1) + (train_tokens.target_ids != 0).sum(1)
        longest = np.argsort(-lengths, kind="stable")[:batch_size]
        longest_pairs = TokenizedPairs(train_tokens.source_ids[longest], train_tokens.target_ids[longest])
        dataset = make_dataset(longest_pairs, batch_size).concatenate(
            make_dataset(train_tokens, batch_size, shuffle=True, seed=self.seed).take(steps))
        model.fit(dataset, epochs=1, verbose=0, shuffle=False, callbacks=callbacks)

    def fit_pack(
        self, hps: list[keras_tuner.HyperParameters], model: keras.Model, train_tokens: TokenizedPairs,
        val_tokens: TokenizedPairs, callbacks: list | None = None, verbose: int = 1,
    ) -> keras.callbacks.History:
        """Train the trials `hps` together (after `start`): each batch holds each trial's batch once."""
        slots = len(hps)
        initial_epoch, epochs = self.space.trial_epochs(hps[0], self.epochs)
        return model.fit(
            repeat_for_slots(make_dataset(train_tokens, hps[0].get("batch_size"), shuffle=True, seed=self.seed),
                             slots),
            validation_data=repeat_for_slots(make_dataset(val_tokens, EVAL_BATCH_SIZE), slots),
            epochs=epochs, initial_epoch=initial_epoch, shuffle=False, callbacks=callbacks, verbose=verbose,
        )

    def steps_per_epoch(self, hp: keras_tuner.HyperParameters, train_tokens: TokenizedPairs) -> int:
        """The trial's training steps per epoch."""
        return math.ceil(len(train_tokens) / hp.get("batch_size"))
