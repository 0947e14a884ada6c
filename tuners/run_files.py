"""The run directory's own files: its settings (`run_config.json`), the tables and the reports.

One process writes them: the local run, or a distributed sweep's chief, which holds the
directory's lock (`run.lock`, `claim_run_dir`) while it runs, so no second run shares it or
deletes it. A rerun with the same settings resumes the run there, one with a larger trial budget
or more values on an axis grows it (`run_changes`); `overwrite` starts it again.
Every file is replaced whole (`lora_keras.runtime.atomic_files`): a kill never leaves half of one.

Example:
```python
with claim_run_dir(config):    # InputError if another run holds LOGDIR/NAME, or a run it cannot grow into
    write_run_files(config)    # run_config.json and the HParams experiment
    write_tables(tuner)        # results.csv and results.md, after every trial
    write_final_reports(config, tuner, started)
```
"""

import contextlib
import fcntl
import json
import os
import pathlib
import shutil
import socket
import time

from lora_keras.errors import InputError
from lora_keras.models.token_loss import LOSS_DEFINITION
from lora_keras.results.report import write_reports
from lora_keras.results.table import SUMMARY_FILE, results_table, write_results_csv, write_results_md
from lora_keras.runtime.atomic_files import write_atomically
from tuners.baseline import read_baseline
from tuners.cluster import CHIEF
from tuners.leases import LEASES_FILE, live_leases
from tuners.failures import SweepStopped
from tuners.hparams import write_experiment, write_figures
from tuners.strategies import budgets_in_epochs
from tuners.trial_files import drop_attempts
from tuners.sweep_config import SweepConfig
from tuners.tuner import LoraTuner

RUN_CONFIG_FILE = "run_config.json"
RUN_LOCK_FILE = "run.lock"  # flock'ed by the run's one writer; says which process that is


# The parameter that names each setting of `run_config.json` in a refusal, where it is not the key
# itself; a script turns it into its flag (`lora_keras.cli.flag_message`).
SPACE_PARAMETERS = {"ranks": "rank", "batch_sizes": "batch_size", "learning_rates": "learning_rate",
                    "lora_alphas": "alpha", "target_sets": "targets", "lora_dropouts": "dropout"}
# Axes a search space always declares; the others only when given several values (`SearchSpace.declare`).
ALWAYS_SEARCHED = ("ranks", "batch_sizes", "learning_rates")


def _check_resumable(config):
    """Refuse a rerun whose settings differ from the run's, unless it only grows it (`run_changes`)."""
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
    refused = next((change for change in run_changes(stored, config.identity()) if not change[3]), None)
    if refused is not None:
        parameter, was, says, _ = refused
        raise InputError(
            f"{parameter}: {config.run_dir} was run with {_shown(was)}, this command says {_shown(says)}"
            f"{_why_not_grown(parameter, was, says)}; pass `overwrite` to start again or another `name` for a new run",
            parameter=parameter,
        )


def run_changes(stored: dict, wanted: dict) -> list[tuple[str, object, object, bool]]:
    """How a rerun's settings differ from its run's, setting by setting, and whether each only grows the run.

    A run grows by a larger trial budget (`max_trials`; None is no limit) or by more values on an
    axis it searches already (its old values all kept). Every other change makes another run, other
    seeds (`seed`, `repeats`) too.

    Args:
        stored: the run's `run_config.json`.
        wanted: the rerun's `SweepConfig.identity()`.

    Returns:
        `(parameter, stored value, wanted value, grows)` per differing setting, in `run_config.json`'s
        order; `parameter` is the library's name for it (`rank` for the space's `ranks`).

    Example: `run_changes(SweepConfig(max_trials=5).identity(), SweepConfig(max_trials=6).identity())`
    -> `[("max_trials", 5, 6, True)]`.
    """
    changes = []
    stored_space, wanted_space = stored.get("space", {}), wanted.get("space", {})
    for key in dict.fromkeys([*stored, *wanted]):
        was, says = stored.get(key), wanted.get(key)
        if key == "space":
            for axis in dict.fromkeys([*stored_space, *wanted_space]):
                axis_was, axis_says = stored_space.get(axis), wanted_space.get(axis)
                if axis != "seeds" and axis_was != axis_says:  # seeds follow `seed` and `repeats`, told as those
                    changes.append((SPACE_PARAMETERS.get(axis, axis), axis_was, axis_says,
                                    _axis_grows(axis, axis_was, axis_says)))
        elif was != says:
            grows = key == "max_trials" and (says is None or (was is not None and says > was))
            changes.append((key, was, says, grows))
    return changes


def _axis_grows(axis, was, says):
    """Whether `says` keeps every value of the searched axis `was` and adds some."""
    if not isinstance(was, list) or not isinstance(says, list):
        return False
    searched = axis in ALWAYS_SEARCHED or len(was) > 1  # a setting fixed before has no value in old trials
    old, new = [json.dumps(v) for v in was], [json.dumps(v) for v in says]
    return searched and set(old) < set(new)


def _why_not_grown(parameter, was, says):
    """Why adding values to a setting the run held at one value does not grow it, or nothing."""
    axis = next((axis for axis, name in SPACE_PARAMETERS.items() if name == parameter), None)
    fixed = (axis is not None and axis not in ALWAYS_SEARCHED and isinstance(was, list) and len(was) == 1
             and isinstance(says, list) and set(map(json.dumps, was)) < set(map(json.dumps, says)))
    return " (a setting the run did not search cannot become an axis: its trials hold no value of it)" if fixed else ""


def _shown(value):
    """A setting as its flag takes it: lists space-separated, a set of targets comma-separated."""
    if value is None:
        return "none"
    if isinstance(value, list):
        return " ".join(",".join(map(str, v)) if isinstance(v, list) else str(v) for v in value) or "none"
    return str(value)


class RunDirClaim:
    """This process's hold on a run directory: an exclusive `flock` on its `run.lock`, until released.

    The kernel drops the lock when the process ends, killed or not; `release()`, or the end of a
    `with` block, drops it at once, so one process may run sweeps there one after another. A
    directory the claim made that holds only the lock when released (a run that failed to start)
    is removed.

    Args:
        run_dir: the run's directory, made if missing.

    Example:
    ```python
    with RunDirClaim(run_dir):
        RunDirClaim(run_dir)   # InputError: "name: logs/sweep is in use by pid 4242 on host-a; ..."
    ```
    """

    def __init__(self, run_dir: pathlib.Path):
        self.run_dir = pathlib.Path(run_dir)
        self._made_dir = not self.run_dir.exists()
        self._handle = _lock_run_dir(self.run_dir)

    def release(self) -> None:
        """Drop the lock (once); remove the directory if this claim made it and nothing but the lock is there."""
        if self._handle.closed:
            return
        with contextlib.suppress(OSError):  # tidying only: the run's outcome is not this
            if self._made_dir and os.listdir(self.run_dir) == [RUN_LOCK_FILE]:
                (self.run_dir / RUN_LOCK_FILE).unlink()
                self.run_dir.rmdir()
        self._handle.close()  # closing the file drops its flock

    def __enter__(self) -> "RunDirClaim":
        return self

    def __exit__(self, *exc_info) -> None:
        self.release()


def _lock_run_dir(run_dir):
    """`run.lock` opened and locked, naming this process; `InputError` naming the holder if another has it."""
    path = run_dir / RUN_LOCK_FILE
    while True:
        run_dir.mkdir(parents=True, exist_ok=True)
        try:
            handle = open(path, "a+")
        except FileNotFoundError:  # the directory went with a claim that failed to start: make it again
            continue
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            holder = handle.read().strip() or "another process"
            handle.close()
            raise InputError(
                f"name: {run_dir} is in use by {holder}; wait for that run to end, or give another `name`",
                parameter="name",
            ) from None
        if _same_file(handle, path):
            break
        handle.close()  # locked a lock file removed meanwhile (with its directory): lock the new one
    handle.seek(0)
    handle.truncate()
    handle.write(f"pid {os.getpid()} on {socket.gethostname()}\n")
    handle.flush()
    return handle


def _same_file(handle, path):
    try:
        found = os.stat(path)
    except FileNotFoundError:
        return False
    mine = os.fstat(handle.fileno())
    return (mine.st_dev, mine.st_ino) == (found.st_dev, found.st_ino)


def _empty_run_dir(run_dir):
    """Delete everything in `run_dir` but its lock, which this process holds."""
    for entry in run_dir.iterdir():
        if entry.name == RUN_LOCK_FILE:
            continue
        if entry.is_dir() and not entry.is_symlink():
            shutil.rmtree(entry)
        else:
            entry.unlink()


def _check_no_live_workers(config):
    """Refuse a plain run, or `overwrite`, while distributed workers hold live leases in the run directory.

    A chief restarted without `overwrite` takes the leases back instead (`tuners.oracle_server`); a
    plain run drops the book of leases that ran out, so no later chief takes them back.
    """
    restarting_chief = config.cluster is not None and config.cluster.role == CHIEF and not config.overwrite
    if restarting_chief:
        return
    live = live_leases(config.run_dir)
    if live:
        held = ", ".join(f"trial {lease.trial_id} ({lease.worker}, heard {since:.0f} s ago)" for lease, since in live)
        raise InputError(
            f"name: distributed workers still hold live leases in {config.run_dir}: {held}; stop them or "
            "restart their chief, or wait for the lease to run out", parameter="name")
    (config.run_dir / "tuner" / LEASES_FILE).unlink(missing_ok=True)


def claim_run_dir(config: SweepConfig) -> RunDirClaim:
    """Lock the run directory for this run, then start it again (`config.overwrite`) or check its settings.

    Only the local run and a distributed sweep's chief claim it; workers join the chief's run.
    The lock comes first: nothing is deleted or checked under another live run.

    Args:
        config: the sweep; its `run_dir` may hold an earlier run.

    Returns:
        The claim, held until released: use it with `with` around the whole run.

    Example:
    ```python
    with claim_run_dir(config):   # InputError while another run holds it, or when it holds other settings
        run_the_sweep()
    ```
    """
    claim = RunDirClaim(config.run_dir)
    try:
        # Refusals that must see the run as it is go here: after the lock, before `overwrite` deletes it.
        _check_no_live_workers(config)
        if config.overwrite:
            _empty_run_dir(config.run_dir)
        _check_resumable(config)
    except BaseException:
        claim.release()
        raise
    return claim


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
    changes = run_changes(json.loads(path.read_text()), config.identity())
    if changes:
        parameter, was, says, _ = changes[0]
        raise InputError(
            f"{parameter}: {config.run_dir} is the chief's run with {_shown(was)}, this worker says {_shown(says)}; "
            "give workers the chief's settings", parameter=parameter
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
    drop_attempts(run_dir)  # no trial runs any more: what killed or refused attempts left
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
