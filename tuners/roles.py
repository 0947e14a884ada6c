"""Running a prepared sweep in one of three roles: alone, as a distributed sweep's worker, or its chief.

`run_locally` runs every trial and writes the run; `run_as_worker` runs the trials its chief
hands out; `serve_as_chief` builds no model and trains nothing: it serves the oracle, keeps the
tables and writes the reports. Each reads top to bottom.

Example:
```python
oracle = make_sweep_oracle(config)
rows = run_locally(config, oracle, started=time.perf_counter())
```
"""

import grpc
import keras_tuner

from lora_keras.errors import InputError
from tuners.cluster import Cluster
from tuners.oracle_security import chief_token, token_refused, worker_token
from lora_keras.backends.devices import gpu_count
from lora_keras.runtime.xla import default_jit_compile
from tuners.failures import SweepStopped, TrialError, is_failure_limit
from tuners.hypermodel import LoraT5HyperModel
from tuners.oracle_server import serve_oracle
from tuners.packing import policy_for
from tuners.prepare import prepare_run
from tuners.run_files import (
    check_joined_run,
    claim_run_dir,
    stopped,
    write_final_reports,
    write_run_files,
    write_tables,
)
from tuners.sweep_config import SweepConfig
from tuners.tuner import LoraTuner


def run_locally(config: SweepConfig, oracle: keras_tuner.Oracle, started: float) -> list[dict]:
    """Run (or resume) every trial in this process, then write the tables and the reports.

    Args:
        config: the sweep, without a cluster.
        oracle: the sweep's oracle (`make_sweep_oracle`).
        started: `time.perf_counter()` when the sweep started.

    Returns:
        One row per trial.

    Example: `rows = run_locally(config, make_sweep_oracle(config), time.perf_counter())`.
    """
    with claim_run_dir(config):  # held until the run ends: no other run shares or deletes the directory
        run = prepare_run(config)
        write_run_files(config)
        tuner = _trial_tuner(config, oracle, run, on_trial_done=lambda: write_tables(tuner))
        _search(tuner, run)
        return write_final_reports(config, tuner, started)


def run_as_worker(config: SweepConfig, oracle: keras_tuner.Oracle) -> list[dict]:
    """Join the chief's run and run the trials it hands out, until it says the search is over.

    The chief's oracle knows every trial, so the chief, not a worker, writes the tables.

    Args:
        config: the sweep, with a worker's `cluster`, exported.
        oracle: the sweep's oracle; the chief's answers for it.

    Returns:
        No rows.

    Example: `run_as_worker(config, make_sweep_oracle(config))`.
    """
    if config.overwrite:
        raise InputError("give it to the chief only, which owns the run directory", parameter="overwrite")
    config.cluster.wait_for_chief()
    config.cluster.authenticate(worker_token(config.run_dir))  # the chief made its token before it listened
    check_joined_run(config)
    run = prepare_run(config)
    tuner = _trial_tuner(config, oracle, run)
    try:
        _search(tuner, run)
    except grpc.RpcError as error:  # the chief stopped the sweep, or is gone
        raise chief_error(config.cluster, error) from None
    if config.verbose:
        ran = ", ".join(tuner.trials_run) or "none"
        print(f"Worker {config.cluster.worker_id} ran trial(s) {ran}; the chief writes {config.run_dir}/results.csv")
    return []


def serve_as_chief(config: SweepConfig, oracle: keras_tuner.Oracle, started: float) -> list[dict]:
    """Hold the oracle for the workers, keep the tables after every trial, write the reports at the end.

    Builds no model and trains nothing: the search space and the oracle are all it needs.

    Args:
        config: the sweep, with the chief's `cluster`, exported.
        oracle: the sweep's oracle, served to the workers.
        started: `time.perf_counter()` when the sweep started.

    Returns:
        One row per trial.

    Example: `rows = serve_as_chief(config, make_sweep_oracle(config), time.perf_counter())`.
    """
    if config.devices:
        raise InputError("the chief trains nothing; give devices to the workers", parameter="devices")
    with claim_run_dir(config):  # held until the sweep ends; workers join it without a claim
        config.cluster.token = chief_token(config.run_dir)
        write_run_files(config)
        tuner = LoraTuner(oracle, config.run_dir, config.space, config.epochs, verbose=config.verbose)
        tuner.save()
        if config.verbose:
            print(f"Chief of {config.run_dir}: serving trials at {config.cluster.address}", flush=True)
        try:
            serve_oracle(tuner.oracle, config.cluster, config.run_dir, lambda: write_tables(tuner))
        except RuntimeError as error:
            if not is_failure_limit(error):
                raise
            raise stopped(tuner) from None
        return write_final_reports(config, tuner, started)


def chief_error(cluster: Cluster, error: grpc.RpcError) -> SweepStopped | InputError:
    """A worker's one-line error for a failed call to its chief.

    Args:
        cluster: the worker's part (the chief's address).
        error: what the call to the chief raised.

    Returns:
        An `InputError` naming the token when the chief refused it (UNAUTHENTICATED: exit 2), or
        naming the worker id when a newer worker process took it over (ALREADY_EXISTS: exit 2);
        else a `SweepStopped`: "the chief stopped the sweep: ..." when the chief's oracle hit its
        failure limit, or "lost the chief at HOST:PORT (CODE)".

    Example: `raise chief_error(cluster, rpc_error) from None`.
    """
    if error.code() == grpc.StatusCode.UNAUTHENTICATED:
        return token_refused(cluster.address)
    if error.code() == grpc.StatusCode.ALREADY_EXISTS:  # a newer process took this worker id over
        return InputError(error.details(), parameter="worker_id")
    if is_failure_limit(error):
        return SweepStopped(f"the chief stopped the sweep: {error.details().splitlines()[0]}; fix the cause and rerun")
    return SweepStopped(
        f"lost the chief at {cluster.address} ({error.code().name}); finished trials are kept: "
        "restart the chief, then the workers, to resume"
    )


def _trial_tuner(config, oracle, run, on_trial_done=None):
    """A tuner that runs trials here: the hypermodel on the prepared base, the baseline measured first.

    One model per targets, dropout and init serves every trial, traced once; the packing policy
    (`tuners.packing.policy_for`) says how many trials may share its step.
    """
    jit_compile = default_jit_compile(gpu_count()) if config.jit_compile is None else config.jit_compile
    packing = policy_for(config, jit_compile, run.strategy)
    hypermodel = LoraT5HyperModel(
        run.base, config.space, epochs=config.epochs, seed=config.seed, slots=packing.slots,
        lora_init=config.lora_init, jit_compile=jit_compile, precision=config.precision,
    )
    # In float32 on the default devices without XLA, the trials' model with every slot empty is the
    # base: the baseline costs no model of its own (elsewhere it is measured on a float32 base of its
    # own). One process measures it; the others (workers) go on without it.
    model = None
    if run.strategy is None and config.precision == "float32" and not jit_compile:
        model = hypermodel.model_for(config.space.lora_config(_first_values(config.space), config.lora_init))
    baseline = run.measure_baseline(config.run_dir, model=model)
    return LoraTuner(
        oracle, config.run_dir, config.space, config.epochs, hypermodel=hypermodel, packing=packing,
        verbose=config.verbose, on_trial_done=on_trial_done, strategy=run.strategy,
        baseline_val_loss=baseline["val_loss"] if baseline else None,
        base_translations=tuple(baseline.get("sample_translations", ())) if baseline else (),
        cluster=config.cluster,
    )


def _first_values(space):
    """Hyperparameters holding the space's first values: the targets and dropout the first model has."""
    hp = keras_tuner.HyperParameters()
    space.declare(hp)
    return hp


def _search(tuner, run):
    """Run trials until the oracle says the search is over; `SweepStopped` at its failure limit."""
    try:
        tuner.search(run.train_tokens, run.val_tokens, run.val_texts)
    except TrialError as error:  # a bug or bad input inside a trial: its own error, traceback and all
        if is_failure_limit(error.__cause__):  # reached while ending a trial drawn for a pack
            raise stopped(tuner) from None
        raise error.__cause__ from None
    except RuntimeError as error:
        if not is_failure_limit(error):
            raise
        raise stopped(tuner) from None
