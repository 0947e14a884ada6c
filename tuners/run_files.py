"""The run directory's own files: its settings (`run_config.json`), the tables and the reports.

One process writes them: the local run, or a distributed sweep's chief. A rerun with the same
settings resumes the run there; `overwrite` starts it again.

Example:
```python
claim_run_dir(config)          # InputError if LOGDIR/NAME holds a run with other settings
write_run_files(config)        # run_config.json and the HParams experiment
write_tables(tuner)            # results.csv and results.md, after every trial
write_final_reports(config, tuner, started)
```
"""

import json
import shutil
import time

from lora_keras.errors import InputError
from lora_keras.models.token_loss import LOSS_DEFINITION
from lora_keras.results.report import write_reports
from lora_keras.results.table import SUMMARY_FILE, results_table, write_results_csv, write_results_md
from lora_keras.runtime.atomic_files import write_atomically
from tuners.baseline import read_baseline
from tuners.failures import SweepStopped
from tuners.hparams import write_experiment, write_figures
from tuners.strategies import budgets_in_epochs
from tuners.sweep_config import SweepConfig
from tuners.tuner import LoraTuner

RUN_CONFIG_FILE = "run_config.json"


def _check_resumable(config):
    path = config.run_dir / RUN_CONFIG_FILE
    if not path.is_file():
        return
    stored = json.loads(path.read_text())
    if stored.get("loss") != LOSS_DEFINITION:
        raise InputError(
            f"name: {config.run_dir} holds losses computed the old way (padding counted in the mean), which "
            "cannot be mixed with new ones; pass `overwrite` to run it again or another `name` for a new run",
            parameter="name"
        )
    stored.setdefault("precision", "float32")  # runs from before --precision trained in float32
    # Runs from before --repeats trained one seed, on pairs drawn with --seed.
    stored.setdefault("repeats", 1)
    stored.setdefault("data_seed", stored.get("seed", 0))
    stored.get("space", {}).setdefault("seeds", [stored.get("seed", 0)])
    if stored != config.identity():
        raise InputError(
            f"name: {config.run_dir} holds a run with other settings; pass `overwrite` to replace it or "
            "another `name` for a new run", parameter="name"
        )


def claim_run_dir(config: SweepConfig) -> None:
    """Start the run again (`config.overwrite`) or check that the run there has these settings.

    Args:
        config: the sweep; its `run_dir` may hold an earlier run.

    Example: `claim_run_dir(config)`; `InputError` when `run_dir` holds a run with other settings.
    """
    if config.overwrite and config.run_dir.exists():
        shutil.rmtree(config.run_dir)
    _check_resumable(config)


def check_joined_run(config: SweepConfig) -> None:
    """Check that a worker joins its chief's run: same settings, same run directory (a shared filesystem).

    Args:
        config: the worker's sweep.

    Example: `check_joined_run(config)`; `InputError` when the chief's `run_config.json` is missing or differs.
    """
    path = config.run_dir / RUN_CONFIG_FILE
    if not path.is_file():
        raise InputError(
            f"logdir: {path} not found: the chief writes it before serving; give workers the chief's "
            "`logdir` (on a filesystem they share) and `name`", parameter="logdir"
        )
    if json.loads(path.read_text()) != config.identity():
        raise InputError(
            f"name: {config.run_dir} is the chief's run with other settings; give workers the chief's settings",
            parameter="name"
        )


def write_run_files(config: SweepConfig) -> None:
    """Write the run's settings and its HParams experiment (by its only writer: chief or local run).

    Args:
        config: the sweep.

    Example: `write_run_files(config)`; then `config.run_dir / "run_config.json"` exists.
    """
    config.run_dir.mkdir(parents=True, exist_ok=True)
    write_atomically(config.run_dir / RUN_CONFIG_FILE, json.dumps(config.identity(), indent=2))
    write_experiment(config.run_dir / "tensorboard", config.space, config.epochs, budgets_in_epochs(config.strategy),
                     config.precision)


def write_tables(tuner: LoraTuner) -> list[dict]:
    """`results.csv` and `results.md` from the oracle's trials (after every trial: a kill keeps them).

    Args:
        tuner: the tuner holding the run's oracle.

    Returns:
        The rows written, one per ended trial.

    Example: `on_trial_done=lambda: write_tables(tuner)`.
    """
    rows = tuner.trial_rows()
    baseline_path = tuner.run_dir / "baseline.json"
    baseline = json.loads(baseline_path.read_text()) if baseline_path.is_file() else None
    write_results_csv(rows, tuner.run_dir / "results.csv")
    write_results_md(rows, tuner.run_dir / "results.md", baseline)
    return rows


def stopped(tuner: LoraTuner) -> SweepStopped:
    """Write the tables, then say why the sweep stopped: too many failed trials in a row.

    Args:
        tuner: the tuner whose oracle stopped.

    Returns:
        The error to raise.

    Example: `raise stopped(tuner) from None`.
    """
    write_tables(tuner)
    return SweepStopped(
        f"stopped after {tuner.oracle.max_consecutive_failed_trials} failed trials in a row "
        f"(see the status column of {tuner.run_dir / 'results.csv'}); fix the cause and rerun to resume"
    )


def write_final_reports(config: SweepConfig, tuner: LoraTuner, started: float) -> list[dict]:
    """The whole tables and the reports once every trial has ended.

    Args:
        config: the sweep (its budgets pick the recommendations).
        tuner: the tuner holding the run's oracle.
        started: `time.perf_counter()` when the sweep started.

    Returns:
        One row per trial.

    Example: `rows = write_final_reports(config, tuner, started)`.
    """
    run_dir = config.run_dir
    rows = write_tables(tuner)
    baseline = read_baseline(run_dir)  # waits for a measurement underway
    wall_time_s = time.perf_counter() - started
    write_atomically(run_dir / SUMMARY_FILE, json.dumps({"wall_time_s": wall_time_s}, indent=2))
    plots = write_reports(run_dir, rows, baseline, wall_time_s, config.memory_budget_mb, config.time_budget_s)
    write_figures(run_dir / "tensorboard" / "report", plots)
    if config.verbose:
        print(results_table(rows))
        against = f"val loss {baseline['val_loss']:.4f}, BLEU {baseline['bleu']:.1f}" if baseline else "not measured"
        print(f"Unadapted base: {against}. Results in {run_dir}; view them with: tensorboard --logdir {config.logdir}")
    return rows
