"""A study's rows: `results.csv`'s columns, writing and reading it, and its rows typed.

Example:
```python
write_results_csv(rows, "logs/sweep/results.csv")
completed_trials(read_results_csv("logs/sweep/results.csv"))[0]["val_loss"]   # 0.1173
```
"""

from __future__ import annotations

import csv
import math
import os
from collections.abc import Iterable, Mapping

from lora_keras.runtime.atomic_files import replace_atomically

COLUMNS = (
    "trial_id", "status", "rank", "batch_size", "learning_rate", "lora_alpha", "epochs",
    "training_time_s", "mean_epoch_time_s", "tokens_per_s", "final_loss", "val_loss",
    "bleu", "chrf", "peak_memory_mb", "memory_kind", "trainable_params", "total_params",
    "trainable_percent", "targets", "lora_dropout", "initial_epoch", "parent_trial_id", "val_perplexity",
    "lora_init", "precision", "jit_compile", "pack_group", "pack_training_time_s", "alone_step_s", "cost_measure_s",
    "seed", "val_loss_ci_low", "val_loss_ci_high", "bleu_ci_low", "bleu_ci_high", "chrf_ci_low", "chrf_ci_high",
    "fit_time_s", "tuner_id", "attempt",
)


def write_results_csv(rows: Iterable[Mapping], path: str | os.PathLike) -> None:
    """One row per trial with exactly `COLUMNS`; missing values are left empty.

    Example:
    ```python
    write_results_csv([{"trial_id": "0", "rank": 4, "val_loss": 1.9}], "logs/sweep/results.csv")
    ```
    """
    with replace_atomically(path) as temporary, open(temporary, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=COLUMNS, extrasaction="ignore")
        writer.writeheader()
        for row in rows:
            writer.writerow({column: row.get(column) for column in COLUMNS})


def read_results_csv(path: str | os.PathLike) -> list[dict[str, str]]:
    """The rows of a `results.csv`, values as strings.

    Example:
    ```python
    rows = typed_rows(read_results_csv("logs/sweep/results.csv"))
    ```
    """
    with open(path, newline="") as handle:
        return list(csv.DictReader(handle))


INTEGER_COLUMNS = ("rank", "batch_size", "epochs", "trainable_params", "total_params", "initial_epoch", "seed",
                   "attempt")
TEXT_COLUMNS = ("trial_id", "status", "memory_kind", "targets", "parent_trial_id", "lora_init", "precision",
                "pack_group", "tuner_id")
BOOLEAN_COLUMNS = ("jit_compile",)


def typed_rows(rows: Iterable[Mapping]) -> list[dict]:
    """Rows read from `results.csv` with numbers as numbers and empty cells as None.

    Example:
    ```python
    typed_rows([{"rank": "4", "val_loss": "", "status": "COMPLETED"}])
    # [{"rank": 4, "val_loss": None, "status": "COMPLETED"}]
    ```
    """
    typed = []
    for row in rows:
        converted = {}
        for column, value in row.items():
            if column in TEXT_COLUMNS or column not in COLUMNS or not isinstance(value, str):
                converted[column] = value
            elif value == "":
                converted[column] = None
            elif column in BOOLEAN_COLUMNS:
                converted[column] = value == "True"
            else:
                converted[column] = int(float(value)) if column in INTEGER_COLUMNS else float(value)
        typed.append(converted)
    return typed


def completed_trials(rows: Iterable[Mapping]) -> list[dict]:
    """The COMPLETED rows as new dicts, numeric columns as int/float and missing values as None.

    Example:
    ```python
    completed_trials([{"status": "COMPLETED", "rank": "4", "val_loss": ""}])
    # [{"status": "COMPLETED", "rank": 4, "val_loss": None}]
    ```
    """
    completed = typed_rows([row for row in rows if row.get("status") == "COMPLETED"])
    # A diverged trial can log NaN; as a number it would poison every min() and fit below.
    return [
        {key: None if isinstance(value, float) and math.isnan(value) else value for key, value in row.items()}
        for row in completed
    ]
