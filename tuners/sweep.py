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

import grpc
import keras_tuner

from lora_keras.models.demo import base as demo
from lora_keras.data.corpus import read_pairs
from lora_keras.data.pipeline import tokenize_pairs
from lora_keras.runtime.devices import mirrored_strategy
from lora_keras.errors import InputError
from lora_keras.adapters import TARGETS, LoraConfig, check_rank
from lora_keras.models.sources import load_base
from lora_keras.models.token_loss import LOSS_DEFINITION
from lora_keras.results.report import write_reports
from lora_keras.results.table import SUMMARY_FILE, results_table, write_results_csv, write_results_md
from tuners.baseline import measure_baseline, read_baseline
from tuners.cluster import CHIEF, Cluster
from tuners.hparams import write_experiment, write_figures
from tuners.hypermodel import LoraT5HyperModel, SearchSpace
from tuners.oracle_server import serve_oracle
from tuners.strategies import STRATEGIES, budgets_in_epochs, make_oracle
from tuners.sweep_tuner import LoraSweepTuner, ValidationTexts

RUN_CONFIG_FILE = "run_config.json"


class SweepStopped(RuntimeError):
    """The sweep stopped early (too many failures in a row, chief lost); a rerun resumes."""


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
    lora_init: str = "peft"  # how LoRA's A is drawn: `lora_keras.adapters.config.INITIALIZERS`
    memory_budget_mb: float | None = None
    time_budget_s: float | None = None
    verbose: int = 1
    devices: str | None = None  # `lora_keras.runtime.devices.mirrored_strategy` spec: data parallel per trial
    cluster: Cluster | None = None  # this process's part in a distributed sweep

    @property
    def run_dir(self):
        return pathlib.Path(self.logdir) / self.name

    def identity(self):
        """What must match for a rerun to resume this run rather than start another."""
        fields = dataclasses.asdict(self)
        for transient in ("overwrite", "verbose", "logdir", "name", "memory_budget_mb", "time_budget_s",
                          "devices", "cluster"):
            fields.pop(transient)
        fields["loss"] = LOSS_DEFINITION
        return json.loads(json.dumps(fields))


def _check_resumable(config):
    path = config.run_dir / RUN_CONFIG_FILE
    if not path.is_file():
        return
    stored = json.loads(path.read_text())
    if stored.get("loss") != LOSS_DEFINITION:
        raise InputError(
            f"{config.run_dir} holds losses computed the old way (padding counted in the mean), which "
            "cannot be mixed with new ones; pass --overwrite to run it again or --name for a new run"
        )
    if stored != config.identity():
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


def _check_worker(config):
    """A worker joins its chief's run: same settings, same run directory (a shared filesystem)."""
    path = config.run_dir / RUN_CONFIG_FILE
    if not path.is_file():
        raise InputError(
            f"{path} not found: the chief writes it before serving; give workers the chief's "
            "--logdir (on a filesystem they share) and --name"
        )
    if json.loads(path.read_text()) != config.identity():
        raise InputError(
            f"{config.run_dir} is the chief's run with other settings; give workers the chief's settings"
        )


def _claim_run_dir(config):
    """Start again (`--overwrite`) or check that the run there has these settings."""
    if config.overwrite and config.run_dir.exists():
        shutil.rmtree(config.run_dir)
    _check_resumable(config)


def _write_run_files(config):
    """The run's settings and its HParams experiment, written by its only writer (chief or local)."""
    config.run_dir.mkdir(parents=True, exist_ok=True)
    (config.run_dir / RUN_CONFIG_FILE).write_text(json.dumps(config.identity(), indent=2))
    write_experiment(config.run_dir / "tensorboard", config.space, config.epochs, budgets_in_epochs(config.strategy))


def _make_oracle(config):
    hp = keras_tuner.HyperParameters()
    config.space.declare(hp)
    return make_oracle(
        config.strategy, keras_tuner.Objective("val_loss", "min"), config.max_trials, hp, config.seed,
        max_epochs=config.epochs,
    )


def _make_tuner(config, hypermodel, oracle, **kwargs):
    return LoraSweepTuner(hypermodel, oracle, config.run_dir, verbose=config.verbose, **kwargs)


def _write_tables(tuner):
    """`results.csv` and `results.md` from the oracle's trials (after every trial: a kill keeps them)."""
    rows = tuner.trial_rows()
    baseline_path = tuner.run_dir / "baseline.json"
    baseline = json.loads(baseline_path.read_text()) if baseline_path.is_file() else None
    write_results_csv(rows, tuner.run_dir / "results.csv")
    write_results_md(rows, tuner.run_dir / "results.md", baseline)
    return rows


def _stopped(tuner):
    _write_tables(tuner)
    return SweepStopped(
        f"stopped after {tuner.oracle.max_consecutive_failed_trials} failed trials in a row "
        f"(see the status column of {tuner.run_dir / 'results.csv'}); fix the cause and rerun to resume"
    )


def _serve_as_chief(config, started, oracle):
    """The chief: hold the oracle for the workers, keep the tables, write the reports at the end."""
    _claim_run_dir(config)
    _write_run_files(config)
    # The chief builds no model: the hypermodel only declares the space and names the columns.
    tuner = _make_tuner(config, LoraT5HyperModel(None, config.space, epochs=config.epochs, seed=config.seed), oracle)
    tuner.save()
    if config.verbose:
        print(f"Chief of {config.run_dir}: serving trials at {config.cluster.address}", flush=True)
    try:
        serve_oracle(tuner.oracle, config.cluster.host, config.cluster.port, lambda: _write_tables(tuner))
    except RuntimeError as error:
        if "consecutive failures" not in str(error):
            raise
        raise _stopped(tuner) from None
    return _finish(config, tuner, started)


def _finish(config, tuner, started):
    """The whole tables and the reports once every trial has ended."""
    run_dir = config.run_dir
    rows = _write_tables(tuner)
    baseline = read_baseline(run_dir)
    wall_time_s = time.perf_counter() - started
    (run_dir / SUMMARY_FILE).write_text(json.dumps({"wall_time_s": wall_time_s}, indent=2))
    plots = write_reports(
        run_dir, rows, baseline, wall_time_s, config.memory_budget_mb, config.time_budget_s
    )
    write_figures(run_dir / "tensorboard" / "report", plots)
    if config.verbose:
        print(results_table(rows))
        against = f"val loss {baseline['val_loss']:.4f}, BLEU {baseline['bleu']:.1f}" if baseline else "not measured"
        print(f"Unadapted base: {against}. Results in {run_dir}; view them with: tensorboard --logdir {config.logdir}")
    return rows


def run_sweep(config):
    """Run (or resume) the sweep described by `config`; returns one row per trial.

    With `config.cluster`, this process is the chief (serves the trials, writes the tables and
    reports; returns the rows) or a worker (runs trials the chief hands out; returns no rows).
    """
    started = time.perf_counter()
    if config.strategy not in STRATEGIES:
        raise InputError(
            f"--strategy {config.strategy} is not registered; choose from {', '.join(sorted(STRATEGIES))}"
        )
    space = config.space
    unknown = sorted(set().union(*space.target_sets) - set(TARGETS))
    if unknown:
        raise InputError(f"--targets: unknown {' '.join(unknown)}; choose from {' '.join(TARGETS)}")
    # The oracle before the model loads: a strategy that cannot run this sweep says so at once.
    oracle = _make_oracle(config)
    cluster = config.cluster
    if cluster is not None:
        cluster.export()  # keras-tuner reads its part from the environment
        if cluster.role == CHIEF:
            if config.devices:
                raise InputError("--devices: the chief trains nothing; give --devices to the workers")
            return _serve_as_chief(config, started, oracle)
        if config.overwrite:
            raise InputError("--overwrite: give it to the chief only, which owns the run directory")
        cluster.wait_for_chief()
        _check_worker(config)
    else:
        _claim_run_dir(config)
    strategy = mirrored_strategy(config.devices)  # before any model: TensorFlow fixes devices at start

    train_pairs, val_pairs = _file_pairs(config)  # bad files fail before the model loads
    base = load_base(config.model, verbose=config.verbose)
    backbone = base.build_backbone()
    # A rank wider than a layer, a bad alpha or dropout fails before any training.
    for rank, alpha, targets, dropout in itertools.product(
        space.ranks, space.lora_alphas or (None,), space.target_sets, space.lora_dropouts
    ):
        check_rank(backbone, LoraConfig(rank, alpha, targets, dropout, config.lora_init))
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

    if cluster is None:
        _write_run_files(config)
    # One worker measures the baseline; the others go on without it.
    baseline = measure_baseline(base, val_tokens, val_texts, config.run_dir)
    hypermodel = LoraT5HyperModel(base, space, epochs=config.epochs, seed=config.seed, lora_init=config.lora_init)
    # A worker leaves the tables to the chief, whose oracle knows every trial.
    on_trial_done = None if cluster else (lambda: _write_tables(tuner))
    tuner = _make_tuner(
        config, hypermodel, oracle, on_trial_done=on_trial_done, strategy=strategy,
        baseline_val_loss=baseline["val_loss"] if baseline else None,
    )
    try:
        tuner.search(train_tokens, val_tokens, val_texts)
    except RuntimeError as error:
        if "consecutive failures" not in str(error):
            raise
        raise _stopped(tuner) from None
    except grpc.RpcError as error:  # only a worker calls a chief
        raise chief_error(cluster, error) from None
    if cluster is not None:
        if config.verbose:
            ran = ", ".join(tuner.trials_run) or "none"
            print(f"Worker {cluster.worker_id} ran trial(s) {ran}; the chief writes {config.run_dir}/results.csv")
        return []
    return _finish(config, tuner, started)


def chief_error(cluster, error):
    """A worker's one-line `SweepStopped` for a failed call to its chief.

    Example: `raise chief_error(cluster, rpc_error) from None`.
    """
    details = error.details() or ""
    if "consecutive failures" in details:
        return SweepStopped(f"the chief stopped the sweep: {details.splitlines()[0]}; fix the cause and rerun")
    return SweepStopped(
        f"lost the chief at {cluster.address} ({error.code().name}); finished trials are kept: "
        "restart the chief, then the workers, to resume"
    )
