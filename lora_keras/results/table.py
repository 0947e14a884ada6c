"""The study's rows: `results.csv` (every column), its typed reading, and the `results.md` table.

Example:
```python
write_results_csv(rows, "logs/sweep/results.csv")
print(results_table(rows))
```
"""

from __future__ import annotations

import csv
import json
import math
import os
import pathlib
from collections.abc import Iterable, Mapping, Sequence

COLUMNS = (
    "trial_id", "status", "rank", "batch_size", "learning_rate", "lora_alpha", "epochs",
    "training_time_s", "mean_epoch_time_s", "tokens_per_s", "final_loss", "val_loss",
    "bleu", "chrf", "peak_memory_mb", "memory_kind", "trainable_params", "total_params",
    "trainable_percent", "targets", "lora_dropout", "initial_epoch", "parent_trial_id", "val_perplexity",
    "lora_init", "precision", "jit_compile", "pack_group", "pack_training_time_s", "alone_step_s", "cost_measure_s",
)
# Shown after batch size when they differ between trials (a sweep over them, or Hyperband's epochs).
SWEPT_COLUMNS = (
    ("learning_rate", "learning rate"), ("lora_alpha", "alpha"), ("targets", "targets"),
    ("lora_dropout", "dropout"), ("epochs", "epochs"),
)
TABLE_COLUMNS = (
    ("rank", "rank"), ("batch_size", "batch size"), ("training_time_s", "time (s)"),
    ("final_loss", "final loss"), ("val_loss", "val loss"), ("bleu", "BLEU"), ("peak_memory_mb", "peak memory (MiB)"),
    ("trainable_params", "trainable params"), ("tokens_per_s", "tokens/s"), ("status", "status"),
)


def _format(value: object) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return ""
    if isinstance(value, float):
        return f"{value:.4g}" if abs(value) < 1000 else f"{value:.0f}"
    return str(value)


def write_results_csv(rows: Iterable[Mapping], path: str | os.PathLike) -> None:
    """One row per trial with exactly `COLUMNS`; missing values are left empty.

    Example:
    ```python
    write_results_csv([{"trial_id": "0", "rank": 4, "val_loss": 1.9}], "logs/sweep/results.csv")
    ```
    """
    with open(path, "w", newline="") as handle:
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


def _differs(rows: Sequence[Mapping], column: str) -> bool:
    if column == "lora_alpha":  # alpha = rank (scale 1) is the default setting, not a sweep
        return any(
            row.get("lora_alpha") not in (None, "") and row.get("rank") not in (None, "")
            and float(row["lora_alpha"]) != float(row["rank"])
            for row in rows
        )
    return len({_format(row.get(column)) for row in rows}) > 1


def results_table(rows: Sequence[Mapping]) -> str:
    """A Markdown table of the trials: time, losses, memory, parameters, throughput.

    Learning rate, alpha, targets, dropout and epochs get a column when they differ between trials.

    Example:
    ```python
    print(results_table(typed_rows(read_results_csv("logs/sweep/results.csv"))))
    ```
    """
    swept = [column for column in SWEPT_COLUMNS if _differs(rows, column[0])]
    columns = TABLE_COLUMNS[:2] + tuple(swept) + TABLE_COLUMNS[2:]
    header = "| " + " | ".join(title for _, title in columns) + " |"
    rule = "|" + "|".join("---:" for _ in columns) + "|"
    lines = [header, rule]
    for row in rows:
        lines.append("| " + " | ".join(_format(row.get(key)) for key, _ in columns) + " |")
    return "\n".join(lines)


INTEGER_COLUMNS = ("rank", "batch_size", "epochs", "trainable_params", "total_params", "initial_epoch")
TEXT_COLUMNS = ("trial_id", "status", "memory_kind", "targets", "parent_trial_id", "lora_init", "precision",
                "pack_group")
BOOLEAN_COLUMNS = ("jit_compile",)
SUMMARY_FILE = "run_summary.json"
SAMPLES_FILE = "sample_translations.json"  # each trial's first validation translations, by trial id


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


MEMORY_MEANINGS = {
    "gpu": "the GPU allocator's peak during the trial's fit (reset when it starts; weights, optimizer state "
           "and activations of that GPU)",
    "host_rss": "the host RSS peak of a process that ran only that trial: the RSS at the start of the run's "
                "first trial plus the trial's own rise above its start during fit (freed memory returned to the "
                "kernel before it); it includes TensorFlow, the base model and the data",
}


def reading_guide(rows: Sequence[Mapping]) -> list[str]:
    """What the table's numbers are, as lines of Markdown.

    Example:
    ```python
    "\n".join(reading_guide(rows))
    ```
    """
    packed = any(row.get("pack_group") for row in rows)
    lines = [
        "Losses are mean negative log-likelihoods in nats per real (non-padding) target token: `final loss` "
        "over the last training epoch (LoRA dropout on, weights moving), `val loss` over the whole validation "
        "set after it, teacher forced (`val_perplexity` = exp(val loss) in results.csv). `time` is the wall "
        "time of the trial's fit, validation included, tracing excluded; `tokens/s` counts real source and "
        "target tokens per second of training after the first epoch; BLEU is sacrebleu's corpus BLEU of "
        "greedy translations of the validation set.",
    ]
    if packed:
        lines.append(
            "Trials sharing batch size, learning rate and epochs trained together in one step on one frozen "
            "base (`pack_group` in results.csv), each on its own examples and loss: the same training as alone. "
            "Their cost figures are each configuration's own, measured alone: `time` is the median of a few "
            "timed training steps of that configuration alone (after one untimed step on the training set's "
            "longest pairs) times its steps (validation not included); `tokens/s` follows from it; `peak "
            "memory` covers those steps alone, the longest batch included.")
    kinds = sorted({row.get("memory_kind") for row in rows if row.get("memory_kind") in MEMORY_MEANINGS})
    for kind in kinds:
        lines.append(f"`peak memory` ({kind}): {MEMORY_MEANINGS[kind]}.")
    return lines


def study_training_s(rows: Sequence[Mapping]) -> tuple[float, int]:
    """The seconds the study spent training, and how many packed fits: each pack's fit counted once.

    Example: `study_training_s(rows)` -> `(61.2, 3)`.
    """
    packs = {}
    alone = 0.0
    for row in rows:
        if row.get("pack_group") and row.get("pack_training_time_s") is not None:
            packs[row["pack_group"]] = row["pack_training_time_s"]
        elif row.get("training_time_s") is not None:
            alone += row["training_time_s"]
    return alone + sum(packs.values()), len(packs)


def sample_translations_markdown(best: Mapping, baseline: Mapping | None) -> list[str]:
    """The first validation sentences, their references, the base's and the best trial's translations.

    Empty when the baseline or the trial kept no samples (`sample_*` in `baseline.json`,
    `sample_translations` in the trial's measurements).

    Example:
    ```python
    "\n".join(sample_translations_markdown(best_row, baseline))
    ```
    """
    after = best.get("sample_translations")
    if not baseline or not after or not baseline.get("sample_translations"):
        return []
    lines = ["", f"Sample translations (validation set; best trial {best['trial_id']}):", "",
             "| source | reference | unadapted base | best trial |", "|---|---|---|---|"]
    for row in zip(baseline["sample_sources"], baseline["sample_references"], baseline["sample_translations"], after):
        lines.append("| " + " | ".join(text.replace("|", "\\|") for text in row) + " |")
    return lines + [""]


def write_results_md(
    rows: Sequence[Mapping], path: str | os.PathLike, baseline: Mapping | None = None, wall_time_s: float | None = None
) -> None:
    """`results.md`: the table, what its numbers are, the unadapted baseline, the best trial, the overhead.

    Args:
        rows: the trials' typed rows (`typed_rows`).
        path: the file to write.
        baseline: the base model's scores (`val_loss`, `bleu`), if measured.
        wall_time_s: the run's wall time, to tell the overhead beside the trials' training.

    Example:
    ```python
    write_results_md(rows, "logs/sweep/results.md", baseline, wall_time_s=312.0)
    ```
    """
    lines = ["# LoRA sweep results", "", results_table(rows), "", *reading_guide(rows), ""]
    completed = [r for r in rows if r.get("status") == "COMPLETED" and r.get("val_loss") is not None]
    if baseline is not None:
        lines.append(
            f"Unadapted base model: val loss {_format(baseline.get('val_loss'))}, "
            f"BLEU {_format(baseline.get('bleu'))}."
        )
    if completed:
        best = min(completed, key=lambda r: r["val_loss"])
        lines.append(
            f"Best trial: {best['trial_id']} (rank {best['rank']}, batch size {best['batch_size']}, "
            f"learning rate {_format(best['learning_rate'])}): val loss {_format(best['val_loss'])}, "
            f"BLEU {_format(best.get('bleu'))}."
        )
    if completed:
        lines += sample_translations_markdown(min(completed, key=lambda r: r["val_loss"]), baseline)
    if wall_time_s is not None and completed:
        trained, packs = study_training_s(rows)
        if packs and trained <= wall_time_s:
            measuring = sum(r.get("cost_measure_s") or 0.0 for r in rows)
            lines.append(
                f"Sweep wall time {wall_time_s:.0f} s, of which training {trained:.0f} s ({packs} packed "
                f"fit{'s' if packs != 1 else ''} counted once, validation included); overhead "
                f"{wall_time_s - trained:.0f} s (loading, tokenizing, building and tracing once, baseline, "
                f"decoding, reports, and {measuring:.0f} s measuring each configuration alone).")
        elif trained <= wall_time_s:
            lines.append(
                f"Sweep wall time {wall_time_s:.0f} s, of which trial training {trained:.0f} s; "
                f"overhead (loading, tokenizing, building, baseline, reports) {wall_time_s - trained:.0f} s."
            )
        else:
            lines.append(
                f"Sweep wall time {wall_time_s:.0f} s; trial training {trained:.0f} s in all, more than the "
                "wall time: trials ran side by side (distributed) or in earlier sessions (resumed)."
            )
    with open(path, "w") as handle:
        handle.write("\n".join(lines) + "\n")
