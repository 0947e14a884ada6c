"""What to pick from a sweep: the Pareto front, budget and scenario picks, and the measured power laws.

Example:
```python
rows = read_results_csv("logs/sweep/results.csv")
print(pareto_front(rows)[0]["trial_id"])
print("\\n".join(measured_trends(rows)))
write_recommendations("logs/sweep/recommendations.md", rows, memory_budget_mb=8000)
```
"""

from __future__ import annotations

import math
import os
import pathlib
import statistics
from collections.abc import Iterable, Mapping, Sequence

import numpy as np

from lora_keras.results.table import typed_rows

FOLK_LOSS_LAW = '"loss proportional to 1/rank"'
FOLK_TIME_LAW = '"time proportional to 1/batch size"'
FOLK_EXPONENT = -1.0
# How close a fitted exponent must be to the folk -1, and how good the fit, to call it agreement.
AGREE_TOLERANCE = 0.25
AGREE_R_SQUARED = 0.8
POOR_R_SQUARED = 0.5
MEMORY_KIND_NAMES = {"gpu": "GPU peak", "host_rss": "host RSS peak"}


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


def _with(trials: list[dict], *columns: str) -> list[dict]:
    return [trial for trial in trials if all(trial.get(column) is not None for column in columns)]


def pareto_front(
    rows: Iterable[Mapping], objectives: Sequence[str] = ("val_loss", "training_time_s", "peak_memory_mb")
) -> list[dict]:
    """The completed trials no other trial beats on every objective (all minimised), best val loss first.

    Example:
    ```python
    [t["trial_id"] for t in pareto_front(rows)]   # ["t04", "t02", "t03"]
    ```
    """
    candidates = _with(completed_trials(rows), *objectives)

    def dominates(a, b):
        return all(a[o] <= b[o] for o in objectives) and any(a[o] < b[o] for o in objectives)

    front = [b for b in candidates if not any(dominates(a, b) for a in candidates if a is not b)]
    return sorted(front, key=lambda trial: tuple(trial[o] for o in objectives))


def fit_power_law(xs: Sequence[float], ys: Sequence[float]) -> tuple[float | None, float | None]:
    """`(exponent, r_squared)` of y = c * x**exponent, fitted by least squares in log-log space.

    Pairs with a non-positive x or y are dropped (no logarithm); fewer than two distinct x
    values left gives `(None, None)`.

    Example:
    ```python
    fit_power_law([1, 4, 16], [3, 1.5, 0.75])   # (-0.5, 1.0)
    ```
    """
    pairs = [(float(x), float(y)) for x, y in zip(xs, ys) if x is not None and y is not None and x > 0 and y > 0]
    if len({x for x, _ in pairs}) < 2:
        return None, None
    log_x = np.log([x for x, _ in pairs])
    log_y = np.log([y for _, y in pairs])
    slope, intercept = np.polyfit(log_x, log_y, 1)
    residual = float(np.sum((log_y - (slope * log_x + intercept)) ** 2))
    total = float(np.sum((log_y - log_y.mean()) ** 2))
    # Constant y is described exactly by exponent 0.
    r_squared = 1.0 - residual / total if total > 0 else 1.0
    return float(slope), float(r_squared)


def _folk_verdict(exponent, r_squared, law, faster, slower, flat):
    """How a fitted exponent stands against a folk law of exponent -1; `r_squared` None = a pooled median."""
    if r_squared is not None and r_squared < POOR_R_SQUARED:
        return f"the fit is poor, so no power law describes it and the data do not support the folk law {law}."
    close = abs(exponent - FOLK_EXPONENT) <= AGREE_TOLERANCE
    if close and (r_squared is None or r_squared >= AGREE_R_SQUARED):
        return f"this agrees with the folk law {law} (exponent -1)."
    if close:
        return f"this is roughly in line with the folk law {law}, but the fit is loose."
    reason = flat if exponent >= 0 else (slower if exponent > FOLK_EXPONENT else faster)
    return f"this contradicts the folk law {law} (exponent -1): {reason}."


def _fits(trials, group_columns, x_column, y_column):
    """`[(group values, exponent, r_squared)]` per group of trials with at least two distinct x values."""
    groups = {}
    for trial in _with(trials, x_column, y_column, *group_columns):
        groups.setdefault(tuple(trial[c] for c in group_columns), []).append(trial)
    fits = []
    for key in sorted(groups):
        exponent, r_squared = fit_power_law([t[x_column] for t in groups[key]], [t[y_column] for t in groups[key]])
        if exponent is not None:
            fits.append((key, exponent, r_squared))
    return fits


def several_learning_rates(trials: Iterable[Mapping]) -> bool:
    """Whether the (parsed) trials swept more than one learning rate, so series must be split by it.

    Example:
    ```python
    several_learning_rates(completed_trials(rows))   # False for a rank x batch grid
    ```
    """
    return len({t["learning_rate"] for t in trials if t.get("learning_rate") is not None}) > 1


def _pooled(fits, series, relation, verdict):
    """The median exponent over several fitted series, as one sentence (none for a single series)."""
    if len(fits) < 2:
        return []
    median = statistics.median(k for _, k, _ in fits)
    return [
        f"Pooled over {len(fits)} {series}, the median exponent of {relation} is {median:.2f}; "
        + _folk_verdict(median, None, **verdict)
    ]


def _time_trends(trials):
    verdict = dict(
        law=FOLK_TIME_LAW,
        faster="larger batches help more than 1/batch",
        slower="larger batches help far less than 1/batch; per-step cost grows with batch size",
        flat="larger batches do not shorten training at all",
    )
    fits = _fits(trials, ("rank",), "batch_size", "training_time_s")
    sentences = [
        f"Training time vs batch size at rank {rank}: time ~ batch^{k:.2f} (R² {r2:.2f}); "
        + _folk_verdict(k, r2, **verdict)
        for (rank,), k, r2 in fits
    ]
    return sentences + _pooled(fits, "ranks", "time vs batch size", verdict)


def _loss_trends(trials):
    verdict = dict(
        law=FOLK_LOSS_LAW,
        faster="the loss falls faster than 1/rank",
        slower="raising the rank lowers the loss far less than 1/rank",
        flat="raising the rank does not lower the loss at all",
    )
    # Loss depends strongly on the learning rate, so one fit per (batch size, learning rate) when several were swept.
    by_rate = several_learning_rates(trials)
    fits = _fits(trials, ("batch_size", "learning_rate") if by_rate else ("batch_size",), "rank", "val_loss")
    sentences = []
    for key, k, r2 in fits:
        where = f"batch size {key[0]}" + (f", learning rate {key[1]:g}" if by_rate else "")
        sentences.append(
            f"Val loss vs rank at {where}: loss ~ rank^{k:.2f} (R² {r2:.2f}); " + _folk_verdict(k, r2, **verdict)
        )
    return sentences + _pooled(fits, "series", "val loss vs rank", verdict)


def memory_kind_label(trials: Iterable[Mapping]) -> str:
    """What the trials' peak memory measured, from `memory_kind`: "GPU peak", "host RSS peak" or both.

    Example:
    ```python
    memory_kind_label([{"peak_memory_mb": 900.0, "memory_kind": "gpu"}])   # "GPU peak"
    ```
    """
    measured = _with(trials, "peak_memory_mb")
    return " / ".join(sorted({MEMORY_KIND_NAMES.get(t.get("memory_kind"), "peak") for t in measured})) or "peak"


def _memory_trend(trials):
    fits = _fits(trials, (), "batch_size", "peak_memory_mb")
    if not fits:
        return []
    _, k, r2 = fits[0]
    if r2 < POOR_R_SQUARED:
        meaning = "the fit is poor, so no power law describes it"
    elif k >= 0.8:
        meaning = "close to linear: activations dominate the memory"
    elif abs(k) < 0.1:
        meaning = "it barely depends on batch size: weights and optimizer state dominate"
    elif k > 0:
        meaning = "it grows sub-linearly: fixed costs (weights, optimizer state) outweigh activations"
    else:
        meaning = "it falls with batch size, which points at measurement noise rather than a law"
    return [
        f"Peak memory ({memory_kind_label(trials)}) vs batch size: memory ~ batch^{k:.2f} (R² {r2:.2f}); {meaning}."
    ]


def measured_trends(rows: Iterable[Mapping]) -> list[str]:
    """Plain sentences with fitted power laws of time, loss and memory, set against the folk laws.

    Example:
    ```python
    measured_trends(rows)[0]
    # "Training time vs batch size at rank 4: time ~ batch^-0.21 (R² 0.93); this contradicts
    #  the folk law ... larger batches help far less than 1/batch; ..."
    ```
    """
    trials = completed_trials(rows)
    return _time_trends(trials) + _loss_trends(trials) + _memory_trend(trials)


def _within(trials, memory_budget_mb=None, time_budget_s=None):
    if memory_budget_mb is not None:
        trials = [t for t in _with(trials, "peak_memory_mb") if t["peak_memory_mb"] <= memory_budget_mb]
    if time_budget_s is not None:
        trials = [t for t in _with(trials, "training_time_s") if t["training_time_s"] <= time_budget_s]
    return trials


def _lowest_loss(trials):
    trials = _with(trials, "val_loss")
    return min(trials, key=lambda t: t["val_loss"]) if trials else None


def best_within(
    rows: Iterable[Mapping], memory_budget_mb: float | None = None, time_budget_s: float | None = None
) -> dict | None:
    """The completed trial with the lowest val loss within both budgets (None = no limit), or None.

    Example:
    ```python
    best_within(rows, memory_budget_mb=1000)["trial_id"]   # "t02"
    ```
    """
    return _lowest_loss(_within(_with(completed_trials(rows), "val_loss"), memory_budget_mb, time_budget_s))


def scenario_picks(rows: Iterable[Mapping]) -> list[tuple[str, str, dict | None]]:
    """`[(scenario, explanation, trial or None)]` for the seed study's three hardware scenarios.

    Thresholds come from this sweep's measured spread, so the scenarios mean the same on any machine.

    Example:
    ```python
    [(name, pick["trial_id"]) for name, _, pick in scenario_picks(rows)]
    ```
    """
    trials = _with(completed_trials(rows), "val_loss")
    picks = []

    memories = [t["peak_memory_mb"] for t in _with(trials, "peak_memory_mb")]
    if memories:
        low, high = min(memories), max(memories)
        limit = low + (high - low) / 3
        picks.append((
            "small GPU / tight memory",
            f"lowest val loss with peak memory <= {_mib(limit)} MiB "
            f"(the lowest third of the measured {_mib(low)}-{_mib(high)} MiB)",
            best_within(trials, memory_budget_mb=limit),
        ))
    else:
        picks.append(("small GPU / tight memory", "no trial measured its peak memory", None))

    times = [t["training_time_s"] for t in _with(trials, "training_time_s")]
    if times:
        median = statistics.median(times)
        picks.append((
            "balanced",
            f"lowest val loss with training time <= the median {_seconds(median)} s",
            best_within(trials, time_budget_s=median),
        ))
    else:
        picks.append(("balanced", "no trial measured its training time", None))

    picks.append((
        "high performance",
        f"lowest val loss of all {len(trials)} completed trials, whatever their time and memory",
        _lowest_loss(trials),
    ))
    return picks


def _loss(value):
    return "n/a" if value is None else f"{value:#.4g}"  # keeps trailing zeros so a column lines up: 2.000


def _seconds(value):
    return "n/a" if value is None else (f"{value:.1f}" if abs(value) < 100 else f"{value:.0f}")


_mib = _seconds  # MiB read best with the same 0-1 decimals as seconds


def _bleu(value):
    return "n/a" if value is None else f"{value:.1f}"


def _rate(value):
    return "n/a" if value is None else f"{value:g}"


def _describe(trial):
    return (
        f"{trial['trial_id']} (rank {trial.get('rank')}, batch size {trial.get('batch_size')}, "
        f"learning rate {_rate(trial.get('learning_rate'))}): val loss {_loss(trial.get('val_loss'))}, "
        f"BLEU {_bleu(trial.get('bleu'))}, {_seconds(trial.get('training_time_s'))} s, "
        f"{_mib(trial.get('peak_memory_mb'))} MiB peak"
    )


def _budget_section(trials, memory_budget_mb, time_budget_s):
    limits = []
    if memory_budget_mb is not None:
        limits.append(f"peak memory <= {_mib(memory_budget_mb)} MiB")
    if time_budget_s is not None:
        limits.append(f"training time <= {_seconds(time_budget_s)} s")
    budget = " and ".join(limits)
    pick = best_within(trials, memory_budget_mb, time_budget_s)
    if pick is not None:
        return [f"Best trial within {budget}: {_describe(pick)}."]
    needs = []
    # The least memory it takes while keeping the time budget (if any trial keeps it), and vice versa.
    for column, own, other, unit, show in (
        ("peak_memory_mb", memory_budget_mb, dict(time_budget_s=time_budget_s), "MiB of peak memory", _mib),
        ("training_time_s", time_budget_s, dict(memory_budget_mb=memory_budget_mb), "s of training time", _seconds),
    ):
        if own is None:
            continue
        pool = _with(_within(trials, **other), column) or _with(trials, column)
        if pool:
            least = min(pool, key=lambda t: t[column])
            needs.append(f"at least {show(least[column])} {unit} (trial {least['trial_id']})")
    sentence = f"No trial fits {budget}."
    if needs:
        sentence += " The smallest budget any trial needed: " + " or ".join(needs) + "."
    return [sentence]


def _table(header, rows):
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(cells) + " |" for cells in rows]
    return lines


def _trial_cells(trial):
    return [
        trial["trial_id"], str(trial.get("rank")), str(trial.get("batch_size")), _rate(trial.get("learning_rate")),
        _loss(trial.get("val_loss")), _bleu(trial.get("bleu")), _seconds(trial.get("training_time_s")),
        _mib(trial.get("peak_memory_mb")),
    ]


TRIAL_HEADER = ["trial", "rank", "batch size", "learning rate", "val loss", "BLEU", "time (s)", "peak memory (MiB)"]


def recommendations_markdown(
    rows: Iterable[Mapping],
    memory_budget_mb: float | None = None,
    time_budget_s: float | None = None,
    baseline: Mapping | None = None,
) -> str:
    """`recommendations.md` as text: budget pick, scenario picks, Pareto front, measured trends, baseline.

    Example:
    ```python
    print(recommendations_markdown(rows, memory_budget_mb=8000, baseline={"val_loss": 3.2}))
    ```
    """
    trials = _with(completed_trials(rows), "val_loss")
    lines = ["# LoRA recommendations", ""]
    if not trials:
        return "\n".join(lines + ["No completed trial with a val loss yet: nothing to recommend.", ""])
    if memory_budget_mb is not None or time_budget_s is not None:
        lines += ["## Your budget", ""] + _budget_section(trials, memory_budget_mb, time_budget_s) + [""]

    scenario_rows = [
        [name] + (_trial_cells(pick) if pick else ["none"] + ["n/a"] * 7) + [why]
        for name, why, pick in scenario_picks(trials)
    ]
    lines += ["## Scenarios", ""] + _table(["scenario"] + TRIAL_HEADER + ["why"], scenario_rows) + [""]

    front = pareto_front(trials)
    lines += [
        "## Pareto front",
        "",
        "Trials no other trial beats on val loss, training time and peak memory at once, best val loss first.",
        "",
    ] + _table(TRIAL_HEADER, [_trial_cells(t) for t in front]) + [""]

    trends = measured_trends(trials)
    bullets = [f"- {sentence}" for sentence in trends] or ["Too few distinct ranks or batch sizes to fit any trend."]
    lines += ["## Measured trends", ""] + bullets + [""]

    if baseline is not None and baseline.get("val_loss") is not None:
        best = _lowest_loss(trials)
        base_loss = float(baseline["val_loss"])
        change = (best["val_loss"] - base_loss) / base_loss * 100 if base_loss else float("nan")
        line = (
            f"Best trial {best['trial_id']} reaches val loss {_loss(best['val_loss'])} against "
            f"{_loss(base_loss)} for the unadapted base model ({change:+.1f}%)"
        )
        if baseline.get("bleu") is not None and best.get("bleu") is not None:
            line += f"; BLEU {_bleu(best['bleu'])} against {_bleu(float(baseline['bleu']))}"
        lines += ["## Against the unadapted base model", "", line + ".", ""]
    return "\n".join(lines)


def write_recommendations(
    path: str | os.PathLike,
    rows: Iterable[Mapping],
    memory_budget_mb: float | None = None,
    time_budget_s: float | None = None,
    baseline: Mapping | None = None,
) -> pathlib.Path:
    """Write `recommendations_markdown(...)` to `path`; returns the path.

    Example:
    ```python
    write_recommendations("logs/sweep/recommendations.md", rows, time_budget_s=600)
    ```
    """
    path = pathlib.Path(path)
    path.write_text(recommendations_markdown(rows, memory_budget_mb, time_budget_s, baseline) + "\n")
    return path
