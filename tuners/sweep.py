"""One sweep end to end: base model -> tokens (once) -> baseline -> trials -> tables.

Example:
```python
rows = run_sweep(SweepConfig(space=SearchSpace(ranks=(1, 4), batch_sizes=(8,)), epochs=1))
```
"""

import dataclasses
import itertools
import json
import pathlib
import random
import shutil
import time

import keras
import keras_tuner

from lora_keras import demo
from lora_keras.corpus import read_pairs
from lora_keras.data import make_dataset, tokenize_pairs
from lora_keras.errors import InputError
from lora_keras.lora import TARGETS, LoraConfig, check_rank
from lora_keras.models import load_base
from lora_keras.report import (
    SUMMARY_FILE,
    results_table,
    write_reports,
    write_results_csv,
    write_results_md,
)
from tuners.hparams import write_experiment, write_figures
from tuners.hypermodel import EVAL_BATCH_SIZE, LoraT5HyperModel, SearchSpace
from tuners.strategies import STRATEGIES, make_oracle
from tuners.sweep_tuner import LoraSweepTuner, ValidationTexts

RUN_CONFIG_FILE = "run_config.json"


class SweepStopped(RuntimeError):
    """Too many trials failed in a row; finished trials are kept and a rerun resumes."""
HELD_OUT_FRACTION = 0.1


@dataclasses.dataclass
class SweepConfig:
    """Everything `scripts/tune.py` takes; defaults reproduce the 3x3 demo study."""

    model: str = "tiny"
    train: str | None = None
    val: str | None = None
    source_lang: str | None = None
    target_lang: str | None = None
    prefix: str | None = None
    space: SearchSpace = dataclasses.field(default_factory=SearchSpace)
    epochs: int = 2
    strategy: str = "grid"
    max_trials: int | None = None
    logdir: str = "logs"
    name: str = "sweep"
    overwrite: bool = False
    max_train_examples: int | None = None
    max_val_examples: int | None = None
    max_source_length: int = 64
    max_target_length: int = 64
    seed: int = 0
    memory_budget_mb: float | None = None
    time_budget_s: float | None = None
    verbose: int = 1

    @property
    def run_dir(self):
        return pathlib.Path(self.logdir) / self.name

    def identity(self):
        """What must match for a rerun to resume this run rather than start another."""
        fields = dataclasses.asdict(self)
        for transient in ("overwrite", "verbose", "logdir", "name", "memory_budget_mb", "time_budget_s"):
            fields.pop(transient)
        return json.loads(json.dumps(fields))


def _check_resumable(config):
    path = config.run_dir / RUN_CONFIG_FILE
    if path.is_file() and json.loads(path.read_text()) != config.identity():
        raise InputError(
            f"{config.run_dir} holds a run with other settings; "
            "pass --overwrite to replace it or --name for a new run"
        )


def _file_pairs(config):
    """(train, val) pairs from the files given, or (None, None) for the demo corpus."""
    if not config.train:
        if config.val:
            raise InputError("--val given without --train; pass both, or neither for the demo corpus")
        return None, None
    train = read_pairs(config.train, "--train")
    if config.val:
        return train, read_pairs(config.val, "--val")
    if len(train) < 2:
        raise InputError("--train: one pair cannot be split for validation; pass --val too")
    shuffled = train[:]
    random.Random(config.seed).shuffle(shuffled)
    held_out = max(1, int(len(shuffled) * HELD_OUT_FRACTION))
    return shuffled[held_out:], shuffled[:held_out]


def _demo_pairs(config, base):
    if base.task is None:
        raise InputError(f"--model {config.model} has no demo corpus; pass --train (and --val)")
    train = demo.adaptation_pairs("train", demo.TRAIN_EXAMPLES, config.seed)
    return train, demo.adaptation_pairs("val", demo.VAL_EXAMPLES, config.seed)


def _prefix(config, base):
    if config.prefix is not None:
        return config.prefix
    task = base.task or {}
    source = config.source_lang or task.get("source_lang")
    target = config.target_lang or task.get("target_lang")
    if not source or not target:
        raise InputError("the task prefix needs --source-lang and --target-lang (or --prefix)")
    return f"translate {source} to {target}: "


def _baseline(base, val_tokens, val_texts, path):
    """Val loss and BLEU of the unadapted base, so each trial can be read against doing nothing."""
    if path.is_file():
        return json.loads(path.read_text())
    model = base.build_model()
    model.compile(loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True), weighted_metrics=[])
    val_loss = model.evaluate(make_dataset(val_tokens, EVAL_BATCH_SIZE), verbose=0)
    scores, _ = val_texts.scores(model.backbone, base.tokenizer)
    baseline = {"val_loss": float(val_loss), "bleu": scores["bleu"], "chrf": scores["chrf"]}
    path.write_text(json.dumps(baseline, indent=2))
    keras.backend.clear_session()
    return baseline


def run_sweep(config):
    """Run (or resume) the sweep described by `config`; returns one row per trial."""
    started = time.perf_counter()
    if config.strategy not in STRATEGIES:
        raise InputError(
            f"--strategy {config.strategy} is not registered; choose from {', '.join(sorted(STRATEGIES))}"
        )
    run_dir = config.run_dir
    if config.overwrite and run_dir.exists():
        shutil.rmtree(run_dir)
    _check_resumable(config)

    space = config.space
    unknown = sorted(set().union(*space.target_sets) - set(TARGETS))
    if unknown:
        raise InputError(f"--targets: unknown {' '.join(unknown)}; choose from {' '.join(TARGETS)}")
    hp = keras_tuner.HyperParameters()
    space.declare(hp)
    # The oracle before the model loads: a strategy that cannot run this sweep says so at once.
    oracle = make_oracle(
        config.strategy, keras_tuner.Objective("val_loss", "min"), config.max_trials, hp, config.seed,
        max_epochs=config.epochs,
    )
    train_pairs, val_pairs = _file_pairs(config)  # bad files fail before the model loads
    base = load_base(config.model, verbose=config.verbose)
    backbone = base.build_backbone()
    # A rank wider than a layer, a bad alpha or dropout fails before any training.
    for rank, alpha, targets, dropout in itertools.product(
        space.ranks, space.lora_alphas or (None,), space.target_sets, space.lora_dropouts
    ):
        check_rank(backbone, LoraConfig(rank, alpha, targets, dropout))
    if train_pairs is None:
        train_pairs, val_pairs = _demo_pairs(config, base)
    if config.max_train_examples:
        train_pairs = train_pairs[: config.max_train_examples]
    if config.max_val_examples:
        val_pairs = val_pairs[: config.max_val_examples]
    prefix = _prefix(config, base)
    lengths = dict(max_source_length=config.max_source_length, max_target_length=config.max_target_length)
    train_tokens = tokenize_pairs(base.tokenizer, train_pairs, prefix, **lengths)
    val_tokens = tokenize_pairs(base.tokenizer, val_pairs, prefix, **lengths)
    val_texts = ValidationTexts(
        [prefix + source for source, _ in val_pairs], [target for _, target in val_pairs],
        config.max_source_length, config.max_target_length,
    )

    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / RUN_CONFIG_FILE).write_text(json.dumps(config.identity(), indent=2))
    baseline = _baseline(base, val_tokens, val_texts, run_dir / "baseline.json")
    write_experiment(run_dir / "tensorboard", space, config.epochs)

    hypermodel = LoraT5HyperModel(base, space, epochs=config.epochs, seed=config.seed)

    def write_tables():  # after every trial, so a killed run keeps its table
        rows = tuner.trial_rows()
        write_results_csv(rows, run_dir / "results.csv")
        write_results_md(rows, run_dir / "results.md", baseline)
        return rows

    tuner = LoraSweepTuner(
        hypermodel, oracle, run_dir, verbose=config.verbose, on_trial_done=write_tables,
        baseline_val_loss=baseline["val_loss"],
    )
    try:
        tuner.search(train_tokens, val_tokens, val_texts)
    except RuntimeError as error:
        if "consecutive failures" not in str(error):
            raise
        write_tables()
        raise SweepStopped(
            f"stopped after {oracle.max_consecutive_failed_trials} failed trials in a row "
            f"(see the status column of {run_dir / 'results.csv'}); fix the cause and rerun to resume"
        ) from None
    rows = write_tables()
    wall_time_s = time.perf_counter() - started
    (run_dir / SUMMARY_FILE).write_text(json.dumps({"wall_time_s": wall_time_s}, indent=2))
    plots = write_reports(
        run_dir, rows, baseline, wall_time_s, config.memory_budget_mb, config.time_budget_s
    )
    write_figures(run_dir / "tensorboard" / "report", plots)
    if config.verbose:
        print(results_table(rows))
        print(
            f"Unadapted base: val loss {baseline['val_loss']:.4f}, BLEU {baseline['bleu']:.1f}. "
            f"Results in {run_dir}; view them with: tensorboard --logdir {config.logdir}"
        )
    return rows
