"""keras-tuner pieces of lora-keras, one job per module.

`from tuners import LoraT5HyperModel` (and `SearchSpace`) load their modules on first use, so
importing a light module here (`tuners.cluster`) loads no TensorFlow.

- `search_space`: the values each hyperparameter may take, and what a trial's values mean.
- `hypermodel`: `LoraT5HyperModel`, whose `build(hp)` returns a compiled model (one per targets,
  dropout and init, the trial in its slot), `fit` trains one trial and `fit_group` several in one step.
- `strategies/`: the oracles by name, one module each.
- `packing`: the whole packing policy: when trials may train together (float32, no XLA, no
  `--devices`), how many per step (slots, the `DEFAULT_MAX_ROWS` limit) and the order it asks of a
  strategy (rank and alpha varying fastest).
- `trial_runner`: `TrialRunner`, the one trial runner: a group of 1..N trials in one fit, each with
  its HParams session, measurement callbacks, divergence check, `measurements.json` and adapter.
- `tuner`: `LoraTuner`, keras-tuner's `BaseTuner`, whose `run_trial` runs the trial and the pack
  companions it draws from the oracle.
- `single_trial`: one trial without keras-tuner or TensorFlow (the JAX path), on the same runner.
- `baseline`: the unadapted base on the validation set (`baseline.json`), measured once per run.
- `hparams`: TensorBoard's HParams experiment and each trial's session.
- `sweep`: `run_sweep(SweepConfig)` (`sweep_config`), which prepares the run (`prepare`) and runs it
  in this process's role (`roles`: locally, as a worker, or as the chief, which serves the oracle via
  `oracle_server`; `cluster`: which role this process has); `run_files` writes the run's settings,
  tables and reports.
- `failures`: keras-tuner's failed trials and its stop after too many in a row, read in one place.
- `atomic_state`: keras-tuner's own state files (`oracle.json`, `trial.json`, `tuner0.json`)
  written whole; set up by `tuner` when it is imported (every run's state is saved through a
  `LoraTuner`), so that importing the light modules here (`cluster`, `leases`) loads no TensorFlow.
- `leases`, `worker_client`, `oracle_security`, `trial_files`: a distributed sweep's leases and
  attempts, a worker's calls to its chief, the token, TLS and bind rules, and each attempt's files.
"""

import importlib

# Public names and their modules, imported on first use (PEP 562).
_LAZY = {"LoraT5HyperModel": "tuners.hypermodel", "SearchInputError": "tuners.hypermodel",
         "SearchSpace": "tuners.search_space"}
__all__ = sorted(_LAZY)


def __getattr__(name):
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'tuners' has no attribute {name!r}")


def __dir__():
    return sorted(set(globals()) | set(_LAZY))
