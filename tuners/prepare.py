"""Preparing a sweep, whatever this process's role: checked inputs, the oracle, the tokenized data.

Everything that can be wrong with the arguments or the inputs fails here, before any training:
an unregistered strategy or unknown target when the oracle is made (before the model loads),
bad corpus files before the model loads, a rank wider than a layer before any data is tokenized.

Example:
```python
oracle = make_sweep_oracle(config)   # InputError at once for a strategy that cannot run the sweep
run = prepare_run(config)            # the base, the tokenized pairs, the devices
baseline = run.measure_baseline(config.run_dir)
```
"""

import dataclasses
import pathlib
import random
from typing import Any

import keras
import keras_tuner

from lora_keras.adapters import TARGETS
from lora_keras.backends.devices import mirrored_strategy
from lora_keras.backends.memory import enable_memory_growth
from lora_keras.data.corpus import read_pairs
from lora_keras.data.pipeline import TokenizedPairs, tokenize_pairs
from lora_keras.errors import InputError
from lora_keras.evaluation import shared_translator
from lora_keras.models.base import BaseModel
from lora_keras.models.demo import base as demo
from lora_keras.models.sources import load_base
from tuners.baseline import measure_baseline
from tuners.hypermodel import check_space_fits
from tuners.packing import FASTEST
from tuners.strategies import make_oracle, oracle_class
from tuners.sweep_config import SweepConfig
from lora_keras.evaluation import ValidationTexts

HELD_OUT_FRACTION = 0.1  # of --train, for validation when no --val is given


# Strategies whose libraries are an extra of the package (setup.cfg), not in the default install.
STRATEGY_EXTRAS = {"bayesian": ("bayesian", "scipy and scikit-learn")}


def make_sweep_oracle(config: SweepConfig) -> keras_tuner.Oracle:
    """The sweep's oracle over its search space, once its strategy and targets are checked.

    Made before the model loads: a strategy that cannot run this sweep says so at once.

    Args:
        config: the sweep.

    Returns:
        The strategy's oracle, minimising `val_loss`.

    Example: `make_sweep_oracle(SweepConfig(strategy="random", max_trials=4))`.
    """
    oracle_class(config.strategy)  # InputError: not registered, fails to import, or not an Oracle
    unknown = sorted(set().union(*config.space.target_sets) - set(TARGETS))
    if unknown:
        raise InputError(f"unknown {' '.join(unknown)}; choose from {' '.join(TARGETS)}", parameter="targets")
    hp = keras_tuner.HyperParameters()
    config.space.declare(hp)
    try:
        return make_oracle(
            config.strategy, keras_tuner.Objective("val_loss", "min"), config.max_trials, hp, config.seed,
            max_epochs=config.epochs, fastest=FASTEST,
        )
    except ImportError as error:  # bayesian without scipy and scikit-learn
        if config.strategy not in STRATEGY_EXTRAS:
            raise
        extra, libraries = STRATEGY_EXTRAS[config.strategy]
        raise InputError(f"strategy {config.strategy} needs {libraries}, not installed; "
                         f"pip install -e '.[{extra}]' (or pip install {libraries.replace(' and ', ' ')})",
                         parameter="strategy") from None


@dataclasses.dataclass
class PreparedRun:
    """What every trial of this process shares: the devices, the base and the data.

    Example: `tuner.search(run.train_tokens, run.val_tokens, run.val_texts)`.
    """

    strategy: Any  # a tf.distribute.Strategy: each trial's devices (`--devices`), None for the default
    base: BaseModel
    train_tokens: TokenizedPairs
    val_tokens: TokenizedPairs
    val_texts: ValidationTexts

    def measure_baseline(self, run_dir: pathlib.Path, model: keras.Model | None = None) -> dict | None:
        """The unadapted base's val loss and scores, measured into `baseline.json` by one process.

        Args:
            run_dir: the run's directory, which must exist.
            model: a compiled model computing the base (e.g. the trials' model, every adapter slot empty); None builds one.

        Returns:
            The baseline, or None while another process measures it.

        Example: `run.measure_baseline(config.run_dir)["val_loss"]`.
        """
        return measure_baseline(self.base, self.val_tokens, self.val_texts, run_dir, model)


def prepare_run(config: SweepConfig) -> PreparedRun:
    """Load the base and the corpus, check every LoRA config of the space, tokenize the pairs.

    Writes nothing: a run with bad inputs leaves no run directory.

    Args:
        config: the sweep.

    Returns:
        The prepared run.

    Example: `run = prepare_run(SweepConfig(model="tiny", max_train_examples=64))`.
    """
    enable_memory_growth()  # before any GPU starts: workers share a GPU, and a trial's peak is its own
    strategy = mirrored_strategy(config.devices)  # before any model: TensorFlow fixes devices at start
    file_pairs = _file_pairs(config)  # bad files fail before the model loads
    base = load_base(config.model, verbose=config.verbose)
    check_space_fits(base, config.space, config.lora_init)  # a rank wider than a layer, a bad alpha or dropout: before training
    train_pairs, val_pairs = file_pairs or _demo_pairs(config, base)
    if config.max_train_examples:
        train_pairs = train_pairs[: config.max_train_examples]
    if config.max_val_examples:
        val_pairs = val_pairs[: config.max_val_examples]
    prefix = _prefix(config, base)
    lengths = dict(max_source_length=config.max_source_length, max_target_length=config.max_target_length)
    val_texts = ValidationTexts(
        [prefix + source for source, _ in val_pairs], [target for _, target in val_pairs],
        config.max_source_length, config.max_target_length,
    )
    # The backbone the loader built decodes the translations: no copy to build for the translator.
    shared_translator(base.tokenizer, config.max_source_length, config.max_target_length).adopt(base.take_layout())
    return PreparedRun(
        strategy, base, tokenize_pairs(base.tokenizer, train_pairs, prefix, **lengths),
        tokenize_pairs(base.tokenizer, val_pairs, prefix, **lengths), val_texts,
    )


def _file_pairs(config):
    """(train, val) pairs from the files given, or None for the demo corpus."""
    if not config.train:
        if config.val:
            raise InputError("val given without train; pass both, or neither for the demo corpus", parameter="val")
        return None
    train = read_pairs(config.train, "train")
    if config.val:
        return train, read_pairs(config.val, "val")
    if len(train) < 2:
        raise InputError("one pair cannot be split for validation; pass val pairs too", parameter="train")
    shuffled = train[:]
    random.Random(config.data_seed).shuffle(shuffled)
    held_out = max(1, int(len(shuffled) * HELD_OUT_FRACTION))
    return shuffled[held_out:], shuffled[:held_out]


def _demo_pairs(config, base):
    if base.task is None:
        raise InputError(f"model {config.model} has no demo corpus; pass train (and val) pairs", parameter="model")
    train = demo.adaptation_pairs("train", demo.TRAIN_EXAMPLES, config.data_seed)
    return train, demo.adaptation_pairs("val", demo.VAL_EXAMPLES, config.data_seed)


def _prefix(config, base):
    if config.prefix is not None:
        return config.prefix
    task = base.task or {}
    source = config.source_lang or task.get("source_lang")
    target = config.target_lang or task.get("target_lang")
    if not source or not target:
        raise InputError("source_lang: the task prefix needs `source_lang` and `target_lang`; give both "
                         "(or the `prefix` itself)", parameter="source_lang")
    return f"translate {source} to {target}: "
