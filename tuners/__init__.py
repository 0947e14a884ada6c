"""keras-tuner pieces of lora-keras, one job per module.

- `search_space`: the values each hyperparameter may take, and what a trial's values mean.
- `hypermodel`: the `HyperModel` that builds (LoRA at the trial's config) and fits (its batch size).
- `strategies/`: the oracles by name, one module each.
- `sweep_tuner`: the tuner that runs, measures and records a trial.
- `sweep`: `run_sweep(SweepConfig)`, which prepares the run (`prepare`) and runs it in this
  process's role (`roles`: locally, as a worker, or as the chief, which serves the oracle via
  `oracle_server`); `run_files` writes the run's settings, tables and reports.
- `failures`: keras-tuner's failed trials and its stop after too many in a row, read in one place.
"""
