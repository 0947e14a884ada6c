"""The front door of a run's reports: `summary.csv`, `results.md`, `recommendations.md` and the plots.

All come from the rows (`results.csv`) and the trials' per-pair files in `validation/`, which the
paired tests between configurations read.

Example:
```python
rebuild_reports("logs/sweep", memory_budget_mb=2000)   # after a run, without training
```
"""

from __future__ import annotations

import json
import os
import pathlib
from collections.abc import Sequence

from lora_keras.errors import InputError
from lora_keras.results.configurations import VALIDATION_DIR, group_configurations, write_summary_csv
from lora_keras.results.plots import write_plots
from lora_keras.results.recommend import write_recommendations
from lora_keras.results.rows import read_results_csv, typed_rows
from lora_keras.results.table import SAMPLES_FILE, SUMMARY_FILE, write_results_md
from lora_keras.runtime.atomic_files import write_atomically


SUMMARY_CSV = "summary.csv"  # one row per configuration, beside results.csv


def write_reports(
    run_dir: str | os.PathLike,
    rows: Sequence[dict],
    baseline: dict | None = None,
    wall_time_s: float | None = None,
    memory_budget_mb: float | None = None,
    time_budget_s: float | None = None,
) -> dict[str, pathlib.Path]:
    """`summary.csv`, `results.md`, the plots and `recommendations.md` of a run.

    Args:
        run_dir: the run's directory.
        rows: the trials' typed rows (`typed_rows`).
        baseline: the base model's scores (`baseline.json`), if measured.
        wall_time_s: the run's wall time, for `results.md`.
        memory_budget_mb: a peak memory budget for the recommendations.
        time_budget_s: a training time budget for the recommendations.

    Returns:
        The plots' `{file stem: path}`.

    Example:
    ```python
    write_reports("logs/sweep", rows, baseline, wall_time_s=312.0)
    ```
    """
    run_dir = pathlib.Path(run_dir)
    samples = {row["trial_id"]: row["sample_translations"] for row in rows if row.get("sample_translations")}
    if samples:  # results.csv has no room for them; rebuild_reports reads them back from here
        write_atomically(run_dir / SAMPLES_FILE, json.dumps(samples, indent=2) + "\n")
    write_summary_csv(group_configurations(rows), run_dir / SUMMARY_CSV)
    write_results_md(rows, run_dir / "results.md", baseline, wall_time_s, run_dir / VALIDATION_DIR)
    write_recommendations(
        run_dir / "recommendations.md", rows, memory_budget_mb=memory_budget_mb,
        time_budget_s=time_budget_s, baseline=baseline, validation_dir=run_dir / VALIDATION_DIR,
    )
    return write_plots(rows, run_dir)


def rebuild_reports(
    run_dir: str | os.PathLike, memory_budget_mb: float | None = None, time_budget_s: float | None = None
) -> dict[str, pathlib.Path]:
    """Every report file of `run_dir` again from its `results.csv` and `validation/`, without training.

    Args:
        run_dir: a run's directory, LOGDIR/NAME.
        memory_budget_mb: a peak memory budget for the recommendations.
        time_budget_s: a training time budget for the recommendations.

    Returns:
        The plots' `{file stem: path}`; an `InputError` naming `run_dir` without `results.csv`.

    Example:
    ```python
    rebuild_reports("logs/sweep", memory_budget_mb=2000)
    ```
    """
    run_dir = pathlib.Path(run_dir)
    results = run_dir / "results.csv"
    if not results.is_file():
        raise InputError(f"{run_dir} has no results.csv; pass the LOGDIR/NAME of a run of tune.py")
    baseline_path, summary_path = run_dir / "baseline.json", run_dir / SUMMARY_FILE
    baseline = json.loads(baseline_path.read_text()) if baseline_path.is_file() else None
    summary = json.loads(summary_path.read_text()) if summary_path.is_file() else {}
    rows = typed_rows(read_results_csv(results))
    samples_path = run_dir / SAMPLES_FILE
    samples = json.loads(samples_path.read_text()) if samples_path.is_file() else {}
    for row in rows:
        if row["trial_id"] in samples:
            row["sample_translations"] = samples[row["trial_id"]]
    return write_reports(
        run_dir, rows, baseline, summary.get("wall_time_s"), memory_budget_mb, time_budget_s
    )
