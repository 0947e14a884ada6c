"""`results.md`: the trials' table with CIs, what its numbers are, the configurations against the best.

`results.csv`'s columns and reading are `rows`' (imported here too, for callers that know them
from this module).

Example:
```python
write_results_csv(rows, "logs/sweep/results.csv")
print(results_table(rows))
```
"""

from __future__ import annotations

import math
import os
import pathlib
from collections.abc import Mapping, Sequence

from lora_keras.results.configurations import (
    VALIDATION_DIR, Comparisons, configurations_markdown, group_configurations, memory_noise,
)
# results.csv's own, imported here too for the callers that know them from this module.
from lora_keras.results.rows import COLUMNS, read_results_csv, typed_rows, write_results_csv  # noqa: F401
from lora_keras.runtime.atomic_files import write_atomically

# Shown after batch size when they differ between trials (a sweep over them, Hyperband's epochs, --repeats' seeds).
SWEPT_COLUMNS = (
    ("learning_rate", "learning rate"), ("lora_alpha", "alpha"), ("targets", "targets"),
    ("lora_dropout", "dropout"), ("epochs", "epochs"), ("seed", "seed"),
)
INTERVAL_COLUMNS = ("val_loss", "bleu")  # shown with their 95% CI
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


def _differs(rows: Sequence[Mapping], column: str) -> bool:
    if column == "lora_alpha":  # alpha = rank (scale 1) is the default setting, not a sweep
        return any(
            row.get("lora_alpha") not in (None, "") and row.get("rank") not in (None, "")
            and float(row["lora_alpha"]) != float(row["rank"])
            for row in rows
        )
    return len({_format(row.get(column)) for row in rows}) > 1


def _with_interval(row: Mapping, column: str) -> str:
    """`0.1173 [0.1052, 0.1309]`: the figure and its 95% CI where the row has one."""
    low, high = row.get(f"{column}_ci_low"), row.get(f"{column}_ci_high")
    if any(value is None or value == "" for value in (row.get(column), low, high)):
        return _format(row.get(column))
    return f"{_format(row[column])} [{_format(low)}, {_format(high)}]"


def results_table(rows: Sequence[Mapping]) -> str:
    """A Markdown table of the trials: time, losses, memory, parameters, throughput.

    Learning rate, alpha, targets, dropout, epochs and the seed get a column when they differ
    between trials; val loss and BLEU carry their 95% CI where the rows have one:
    `0.1173 [0.1052, 0.1309]`.

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
        lines.append("| " + " | ".join(
            _with_interval(row, key) if key in INTERVAL_COLUMNS else _format(row.get(key)) for key, _ in columns
        ) + " |")
    return "\n".join(lines)


SUMMARY_FILE = "run_summary.json"
SAMPLES_FILE = "sample_translations.json"  # each trial's first validation translations, by trial id


MEMORY_MEANINGS = {
    "gpu": "the GPU allocator's peak over a few training steps of the configuration alone (reset before them; "
           "weights, optimizer state and activations of that GPU)",
    "host_rss": "the host RSS before the run's first training step plus the rise of a few training steps of the "
                "configuration alone above their start (freed memory returned to the kernel before them); it "
                "includes TensorFlow, the base model and the data, and carries noise of its own",
    "gpu_process": "the process's GPU peak so far (Keras's JAX backend cannot reset it), so it also carries the "
                   "trials before",
}
INTERVALS_MEANING = (
    "A CI here is a 95% confidence interval. Beside one trial's val loss or BLEU it is the sampling CI: how far "
    "the figure could move on another validation set of the same size, drawn like this one (a bootstrap over "
    "the validation pairs; another seed can move it further). Beside a configuration's mean over seeds it is "
    "the CI of that mean (t distribution over the per-seed figures), training noise and sampling noise "
    "together.")


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
        "set after it, teacher forced (`val_perplexity` = exp(val loss) in results.csv). `time` is the "
        "configuration's training time over its epochs, validation and tracing excluded; `tokens/s` counts real "
        "source and target tokens per second of training after the first epoch; BLEU is sacrebleu's corpus "
        "BLEU of greedy translations of the validation set.",
    ]
    if packed:
        lines.append(
            "Trials sharing batch size, learning rate and epochs trained together in one step on one frozen "
            "base (`pack_group` in results.csv), each on its own examples and loss: the same training as alone. "
            "Their time is each configuration's own, estimated alone: its mean training step alone (timed "
            "after untimed ones) times its steps; a trial trained alone measures the same thing in its own fit.")
    kinds = sorted({row.get("memory_kind") for row in rows if row.get("memory_kind") in MEMORY_MEANINGS})
    for kind in kinds:
        lines.append(f"`peak memory` ({kind}): {MEMORY_MEANINGS[kind]}.")
    if any(row.get("val_loss_ci_low") is not None or row.get("bleu_ci_low") is not None for row in rows):
        lines.append(INTERVALS_MEANING)
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
        elif row.get("fit_time_s") is not None:  # its fit's wall time, validation included
            alone += row["fit_time_s"]
        elif row.get("training_time_s") is not None:  # runs from before `fit_time_s`
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


def _best_trial_line(best: Mapping) -> str:
    return (
        f"Best trial: {best['trial_id']} (rank {best['rank']}, batch size {best['batch_size']}, "
        f"learning rate {_format(best['learning_rate'])}): val loss {_with_interval(best, 'val_loss')}, "
        f"BLEU {_with_interval(best, 'bleu')}."
    )


def _overhead_line(rows: Sequence[Mapping], wall_time_s: float) -> str:
    trained, packs = study_training_s(rows)
    if packs and trained <= wall_time_s:
        measuring = sum(r.get("cost_measure_s") or 0.0 for r in rows)
        return (
            f"Sweep wall time {wall_time_s:.0f} s, of which training {trained:.0f} s ({packs} packed "
            f"fit{'s' if packs != 1 else ''} counted once, validation included); overhead "
            f"{wall_time_s - trained:.0f} s (loading, tokenizing, building and tracing once, baseline, "
            f"decoding, reports, and {measuring:.0f} s measuring each configuration alone).")
    if trained <= wall_time_s:
        measuring = sum(r.get("cost_measure_s") or 0.0 for r in rows)
        return (
            f"Sweep wall time {wall_time_s:.0f} s, of which trial training {trained:.0f} s (validation included); "
            f"overhead {wall_time_s - trained:.0f} s (loading, tokenizing, building, baseline, decoding, reports, "
            f"and {measuring:.0f} s measuring each configuration's memory alone)."
        )
    return (
        f"Sweep wall time {wall_time_s:.0f} s; trial training {trained:.0f} s in all, more than the "
        "wall time: trials ran side by side (distributed) or in earlier sessions (resumed)."
    )


def write_results_md(
    rows: Sequence[Mapping], path: str | os.PathLike, baseline: Mapping | None = None,
    wall_time_s: float | None = None, validation_dir: str | os.PathLike | None = None,
) -> None:
    """`results.md`: the trials with CIs, what their numbers are, the configurations against the best, the rest.

    The rest: the unadapted baseline, the best trial, sample translations and the overhead. The
    configurations' table gives each one's mean, CI and p-values against the best; the paired tests
    read the trials' files in `validation_dir` (by default `validation/` beside `path`).

    Args:
        rows: the trials' typed rows (`typed_rows`).
        path: the file to write.
        baseline: the base model's scores (`val_loss`, `bleu`), if measured.
        wall_time_s: the run's wall time, to tell the overhead beside the trials' training.
        validation_dir: the trials' per-pair files, if not beside `path`.

    Example:
    ```python
    write_results_md(rows, "logs/sweep/results.md", baseline, wall_time_s=312.0)
    ```
    """
    path = pathlib.Path(path)
    lines = ["# LoRA sweep results", "", results_table(rows), "", *reading_guide(rows), ""]
    completed = [r for r in rows if r.get("status") == "COMPLETED" and r.get("val_loss") is not None]
    configs = group_configurations(rows)
    tests = Comparisons(configs, path.parent / VALIDATION_DIR if validation_dir is None else validation_dir)
    if configs:
        lines += configurations_markdown(tests)
        noise = memory_noise(tests)
        lines += [noise, ""] if noise else []
    if baseline is not None:
        lines.append(
            f"Unadapted base model: val loss {_format(baseline.get('val_loss'))}, "
            f"BLEU {_format(baseline.get('bleu'))}."
        )
    if completed:
        # The best configuration's best trial: its translations are the samples shown.
        best = min(tests.best.trials if configs else completed, key=lambda r: r["val_loss"])
        lines.append(_best_trial_line(best) if tests.repeats < 2 else (
            f"Best trial of the best configuration: {best['trial_id']} (seed {best.get('seed')}): val loss "
            f"{_with_interval(best, 'val_loss')}, BLEU {_with_interval(best, 'bleu')}."))
        lines += sample_translations_markdown(best, baseline)
    if wall_time_s is not None and completed:
        lines.append(_overhead_line(rows, wall_time_s))
    write_atomically(path, "\n".join(lines) + "\n")
