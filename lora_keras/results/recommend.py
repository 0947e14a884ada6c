"""What to pick from a sweep: the Pareto front, budget and scenario picks, and the measured power laws.

Configurations (trials grouped over seeds) are compared with their noise (`Comparisons`): a pick
is the cheapest of the configurations that cannot be told apart from the best within a budget,
and a difference within noise is never a win.

Example:
```python
rows = read_results_csv("logs/sweep/results.csv")
tests = Comparisons(group_configurations(rows), "logs/sweep/validation")
print(pareto_front(tests)[0].label)
print("\\n".join(measured_trends(rows)))
write_recommendations("logs/sweep/recommendations.md", rows, memory_budget_mb=8000)
```
"""

from __future__ import annotations

import dataclasses
import os
import pathlib
import statistics
from collections.abc import Iterable, Mapping, Sequence

from lora_keras.results.configurations import (
    MEMORY_NOISE_FLOOR, NOISY_MEMORY_KINDS, VALIDATION_DIR, Comparisons, Configuration, configurations_markdown,
    group_configurations,
    interval_text, memory_noise,
)
from lora_keras.results.rows import completed_trials
from lora_keras.results.stats import fit_power_law
from lora_keras.runtime.atomic_files import write_atomically

__all__ = [
    "best_within", "completed_trials", "measured_trends", "memory_kind_label", "pareto_front",
    "recommendations_markdown", "scenario_picks", "several_learning_rates", "write_recommendations",
]

FOLK_LOSS_LAW = '"loss proportional to 1/rank"'
FOLK_TIME_LAW = '"time proportional to 1/batch size"'
FOLK_EXPONENT = -1.0
POOR_R_SQUARED = 0.5  # below it no power law describes the points, whatever the CI
MEMORY_KIND_NAMES = {"gpu": "GPU peak", "host_rss": "host RSS peak", "gpu_process": "GPU process peak"}
COST_NAMES = {"training_time_s": "training time", "peak_memory_mb": "peak memory"}


def _with(trials: list[dict], *columns: str) -> list[dict]:
    return [trial for trial in trials if all(trial.get(column) is not None for column in columns)]


def _better(tests, a, b, objective):
    """Whether `a` beats `b` on `objective` by more than noise (a test tells them apart, `a` lower)."""
    if a.mean(objective) is None or b.mean(objective) is None or a.mean(objective) >= b.mean(objective):
        return False
    difference = tests.loss(a, b) if objective == "val_loss" else tests.cost(a, b, objective)
    return bool(difference.apart)


def pareto_front(
    tests: Comparisons, objectives: Sequence[str] = ("val_loss", "training_time_s", "peak_memory_mb")
) -> list[Configuration]:
    """The configurations no other beats by more than noise, best val loss first (all objectives minimised).

    `a` dominates `b` when `b` beats `a` on no objective and `a` beats `b` on at least one, where
    beating means lower and told apart by the tests (`Comparisons`): a difference within noise
    neither wins nor loses. Without repeats, per-pair data or CIs every difference counts, as for
    points.

    Example:
    ```python
    [c.label for c in pareto_front(Comparisons(group_configurations(rows)))]   # ["rank 32 / batch 8", ...]
    ```
    """
    candidates = [c for c in tests.configs if all(c.mean(o) is not None for o in objectives)]

    def dominates(a, b):
        return (not any(_better(tests, b, a, o) for o in objectives)
                and any(_better(tests, a, b, o) for o in objectives))

    front = [b for b in candidates if not any(dominates(a, b) for a in candidates if a is not b)]
    return sorted(front, key=lambda config: tuple(config.mean(o) for o in objectives))


def _folk_verdict(fit, law, faster, slower, flat):
    """How a fitted exponent and its CI stand against a folk law of exponent -1."""
    if fit.r_squared < POOR_R_SQUARED:
        return f"the fit is poor, so no power law describes it and the data do not support the folk law {law}."
    if fit.ci_low is None:
        return f"with {fit.points} points the exponent has no CI, so this is no test of the folk law {law}."
    if fit.covers(FOLK_EXPONENT) and fit.covers(0.0):
        return (f"the CI holds both -1 and 0, so these points cannot tell the folk law {law} from no effect at "
                "all.")
    if fit.covers(FOLK_EXPONENT):
        return f"this is consistent with the folk law {law}: -1 lies inside the CI."
    reason = flat if fit.exponent >= 0 else (slower if fit.exponent > FOLK_EXPONENT else faster)
    return f"this contradicts the folk law {law} (-1 lies outside the CI): {reason}."


def _law(fit, y_name, x_name):
    """`time ~ batch^-0.20 (95% CI -0.25 to -0.15, R² 0.93, 9 points)`."""
    return (f"{y_name} ~ {x_name}^{fit.exponent:.2f} ({fit.ci_text()}, R² {fit.r_squared:.2f}, "
            f"{fit.points} points)")


def _fits(trials, group_columns, x_column, y_column):
    """`[(group values, PowerLaw)]` per group of trials with at least two distinct x values; each trial a point."""
    groups = {}
    for trial in _with(trials, x_column, y_column, *group_columns):
        groups.setdefault(tuple(trial[c] for c in group_columns), []).append(trial)
    fits = []
    for key in sorted(groups):
        fit = fit_power_law([t[x_column] for t in groups[key]], [t[y_column] for t in groups[key]])
        if fit is not None:
            fits.append((key, fit))
    return fits


def several_learning_rates(trials: Iterable[Mapping]) -> bool:
    """Whether the (parsed) trials swept more than one learning rate, so series must be split by it.

    Example:
    ```python
    several_learning_rates(completed_trials(rows))   # False for a rank x batch grid
    ```
    """
    return len({t["learning_rate"] for t in trials if t.get("learning_rate") is not None}) > 1


def _pooled(trials, group_columns, x_column, y_column, fits, series, relation, verdict):
    """One exponent shared by several series (each its own constant), as one sentence (none for one series)."""
    if len(fits) < 2:
        return []
    points = _with(trials, x_column, y_column, *group_columns)
    fit = fit_power_law([t[x_column] for t in points], [t[y_column] for t in points],
                        groups=[tuple(t[c] for c in group_columns) for t in points])
    return [
        f"Pooled over {len(fits)} {series} (one constant each, one exponent), {relation}: "
        f"{_law(fit, *relation.split(' vs '))}; " + _folk_verdict(fit, **verdict)
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
        f"Training time vs batch size at rank {rank}: {_law(fit, 'time', 'batch')}; " + _folk_verdict(fit, **verdict)
        for (rank,), fit in fits
    ]
    return sentences + _pooled(trials, ("rank",), "batch_size", "training_time_s", fits, "ranks", "time vs batch",
                               verdict)


def _loss_trends(trials):
    verdict = dict(
        law=FOLK_LOSS_LAW,
        faster="the loss falls faster than 1/rank",
        slower="raising the rank lowers the loss far less than 1/rank",
        flat="raising the rank does not lower the loss at all",
    )
    # Loss depends strongly on the learning rate, so one fit per (batch size, learning rate) when several were swept.
    by_rate = several_learning_rates(trials)
    group_columns = ("batch_size", "learning_rate") if by_rate else ("batch_size",)
    fits = _fits(trials, group_columns, "rank", "val_loss")
    sentences = []
    for key, fit in fits:
        where = f"batch size {key[0]}" + (f", learning rate {key[1]:g}" if by_rate else "")
        sentences.append(f"Val loss vs rank at {where}: {_law(fit, 'loss', 'rank')}; " + _folk_verdict(fit, **verdict))
    return sentences + _pooled(trials, group_columns, "rank", "val_loss", fits, "series", "loss vs rank", verdict)


def memory_kind_label(trials: Iterable[Mapping]) -> str:
    """What the trials' peak memory measured, from `memory_kind`: "GPU peak", "host RSS peak" or both.

    Example:
    ```python
    memory_kind_label([{"peak_memory_mb": 900.0, "memory_kind": "gpu"}])   # "GPU peak"
    ```
    """
    measured = _with(list(trials), "peak_memory_mb")
    return " / ".join(sorted({MEMORY_KIND_NAMES.get(t.get("memory_kind"), "peak") for t in measured})) or "peak"


def _memory_trend(trials):
    fits = _fits(trials, (), "batch_size", "peak_memory_mb")
    if not fits:
        return []
    _, fit = fits[0]
    k = fit.exponent
    if fit.r_squared < POOR_R_SQUARED:
        meaning = "the fit is poor, so no power law describes it"
    elif fit.covers(0.0):
        meaning = "the CI holds 0: no dependence on batch size is shown"
    elif k >= 0.8:
        meaning = "close to linear: activations dominate the memory"
    elif abs(k) < 0.1:
        meaning = "it barely depends on batch size: weights and optimizer state dominate"
    elif k > 0:
        meaning = "it grows sub-linearly: fixed costs (weights, optimizer state) outweigh activations"
    else:
        meaning = "it falls with batch size, which points at measurement noise rather than a law"
    return [f"Peak memory ({memory_kind_label(trials)}) vs batch size: {_law(fit, 'memory', 'batch')}; {meaning}."]


def measured_trends(rows: Iterable[Mapping]) -> list[str]:
    """Plain sentences with fitted power laws of time, loss and memory, their exponents' CIs, and the folk laws.

    Every trial is a point (with repeats, every seed); the verdict on a folk law of exponent -1
    reads the exponent's 95% CI: -1 inside it is consistent, outside it a contradiction.

    Example:
    ```python
    measured_trends(rows)[0]
    # "Training time vs batch size at rank 4: time ~ batch^-0.21 (95% CI -0.30 to -0.12, R² 0.93, 9 points);
    #  this contradicts the folk law ... (-1 lies outside the CI): larger batches help far less than 1/batch; ..."
    ```
    """
    trials = completed_trials(rows)
    return _time_trends(trials) + _loss_trends(trials) + _memory_trend(trials)


def best_within(
    configs: Iterable[Configuration], memory_budget_mb: float | None = None, time_budget_s: float | None = None
) -> Configuration | None:
    """The configuration of lowest mean val loss whose mean figures keep both budgets (None = no limit), or None.

    Example:
    ```python
    best_within(group_configurations(rows), memory_budget_mb=1000).label   # "rank 8 / batch 8"
    ```
    """
    return min(_within(configs, memory_budget_mb, time_budget_s), key=lambda c: c.mean("val_loss"), default=None)


def _within(configs, memory_budget_mb=None, time_budget_s=None):
    kept = []
    for config in configs:
        memory, time = config.mean("peak_memory_mb"), config.mean("training_time_s")
        if memory_budget_mb is not None and (memory is None or memory > memory_budget_mb):
            continue
        if time_budget_s is not None and (time is None or time > time_budget_s):
            continue
        kept.append(config)
    return kept


@dataclasses.dataclass
class Pick:
    """A budget's or scenario's recommendation.

    `candidates` are the configurations within the budget that the tests cannot tell apart from the
    best there (it first); `pick` the cheapest of them in the budget's cost, or None; `note` how it
    was chosen, or why there is none.
    """

    scenario: str
    budget: str
    pick: Configuration | None
    candidates: list[Configuration] = dataclasses.field(default_factory=list)
    note: str = ""

    def why(self) -> str:
        tied = [c.label for c in self.candidates[1:]]
        said = [self.budget]
        if tied:
            said.append(f"indistinguishable in val loss from {self.candidates[0].label} there: {', '.join(tied)}")
        return "; ".join(said + ([self.note] if self.note else []))


def _noisy_memory(configs):
    return any(c.memory_kind in NOISY_MEMORY_KINDS for c in configs)


def _choose(tests, scenario, budget, pool, cost):
    """The cheapest in `cost` (None: the lowest val loss) among the pool's configurations tied with its best."""
    if cost is not None:
        pool = [c for c in pool if c.mean(cost) is not None]
    if not pool:
        return Pick(scenario, budget, None, note="no configuration fits")
    reference = min(pool, key=lambda c: c.mean("val_loss"))
    candidates = tests.indistinguishable(reference, sorted(pool, key=lambda c: c.mean("val_loss")))
    if cost is None or len(candidates) == 1:
        return Pick(scenario, budget, reference, candidates)
    cheapest = min(candidates, key=lambda c: c.mean(cost))
    # The cost picks only where it tells configurations apart: those within its noise of the cheapest stay.
    group = [c for c in candidates if c is cheapest or not tests.cost(cheapest, c, cost).apart]
    name = COST_NAMES[cost]
    if len(group) == 1:
        return Pick(scenario, budget, cheapest, candidates, f"the lowest {name} of them")
    labels = ", ".join(c.label for c in group)
    if cost == "peak_memory_mb" and _noisy_memory(group):
        return Pick(scenario, budget, None, candidates,
                    f"their {name} ({labels}) differs within the figure's noise, so memory picks none of them")
    pick = min(group, key=lambda c: c.mean("val_loss"))
    return Pick(scenario, budget, pick, candidates,
                f"{name} does not tell {labels} apart; of them, the lowest val loss")


def _tight_memory(tests):
    """The "small GPU / tight memory" scenario: the lowest memory, where memory tells configurations apart."""
    scenario = "small GPU / tight memory"
    measured = [c for c in tests.configs if c.mean("peak_memory_mb") is not None]
    if not measured:
        return Pick(scenario, "no configuration measured its peak memory", None)
    means = [c.mean("peak_memory_mb") for c in measured]
    low, high = min(means), max(means)
    if not _noisy_memory(measured):
        limit = low + (high - low) / 3
        budget = (f"lowest val loss with peak memory <= {_mib(limit)} MiB (the lowest third of the measured "
                  f"{_mib(low)}-{_mib(high)} MiB)")
        return _choose(tests, scenario, budget, _within(measured, memory_budget_mb=limit), "peak_memory_mb")
    lowest = min(measured, key=lambda c: c.mean("peak_memory_mb"))
    near = [c for c in measured if c is lowest or not tests.cost(lowest, c, "peak_memory_mb").apart]
    if len(near) == len(measured):
        if any(len(c.values("peak_memory_mb")) < 2 for c in measured):
            why, note = ("one draw per configuration, its spread unknown",
                         "memory differences are not shown to exceed noise: no memory-based pick")
        else:
            why, note = ("every configuration within the figure's noise of the least (its spread over seeds, "
                         f"or under {100 * MEMORY_NOISE_FLOOR:.0f}% apart)",
                         "memory differences are within noise: no memory-based pick")
        return Pick(scenario, f"peak memory {_mib(low)}-{_mib(high)} MiB, {why}", None, note=note)
    budget = (f"lowest val loss among the configurations whose peak memory is not told apart from the least "
              f"({_mib(lowest.mean('peak_memory_mb'))} MiB): {', '.join(c.label for c in near)}")
    return _choose(tests, scenario, budget, near, None)


def scenario_picks(tests: Comparisons) -> list[Pick]:
    """The three hardware scenarios' picks: small GPU / tight memory, balanced, high performance.

    Thresholds come from this sweep's measured spread, so the scenarios mean the same on any
    machine; each pick is the cheapest in the scenario's cost (memory; time; none) among the
    configurations indistinguishable from the best within it.

    Example:
    ```python
    [(p.scenario, p.pick and p.pick.label) for p in scenario_picks(Comparisons(group_configurations(rows)))]
    ```
    """
    configs = tests.configs
    picks = [_tight_memory(tests)]
    times = [c.mean("training_time_s") for c in configs if c.mean("training_time_s") is not None]
    if times:
        median = statistics.median(times)
        picks.append(_choose(tests, "balanced", f"training time <= the median {_seconds(median)} s",
                             _within(configs, time_budget_s=median), "training_time_s"))
    else:
        picks.append(Pick("balanced", "no configuration measured its training time", None))
    picks.append(_choose(tests, "high performance",
                         f"lowest val loss of all {len(configs)} configurations, whatever their time and memory",
                         configs, None))
    return picks


def _loss(value):
    return "n/a" if value is None else f"{value:#.4g}"  # keeps trailing zeros so a column lines up: 2.000


def _seconds(value):
    return "n/a" if value is None else (f"{value:.1f}" if abs(value) < 100 else f"{value:.0f}")


_mib = _seconds  # MiB read best with the same 0-1 decimals as seconds


def _bleu(value):
    return "n/a" if value is None else f"{value:.1f}"


def _describe(config):
    return (
        f"{config.label} (trials {', '.join(config.trial_ids)}): val loss "
        f"{interval_text(*config.interval('val_loss'))}, BLEU {interval_text(*config.interval('bleu')) or 'n/a'}, "
        f"{_seconds(config.mean('training_time_s'))} s, {_mib(config.mean('peak_memory_mb'))} MiB peak"
    )


def _budget_section(tests, memory_budget_mb, time_budget_s):
    limits = []
    if memory_budget_mb is not None:
        limits.append(f"peak memory <= {_mib(memory_budget_mb)} MiB")
    if time_budget_s is not None:
        limits.append(f"training time <= {_seconds(time_budget_s)} s")
    budget = " and ".join(limits)
    pool = _within(tests.configs, memory_budget_mb, time_budget_s)
    if pool:
        # A memory budget's cost is memory, a time budget's time; both: time (memory then only a limit).
        cost = "training_time_s" if time_budget_s is not None else "peak_memory_mb"
        pick = _choose(tests, "your budget", budget, pool, cost)
        best = pick.candidates[0]
        lines = [f"Best within {budget}: {_describe(best)}."]
        if len(pick.candidates) > 1:
            lines.append("Indistinguishable from it in val loss: "
                         + ", ".join(f"{c.label} ({tests.loss(best, c).text()})" for c in pick.candidates[1:]) + ".")
        if pick.pick is None:
            lines.append(f"No single pick: {pick.note}.")
        elif pick.pick is best and len(pick.candidates) > 1:
            lines.append(f"Recommended: {best.label} itself ({pick.note}).")
        elif pick.pick is not best:
            lines.append(f"Recommended: {_describe(pick.pick)}: {pick.note}.")
        return lines
    needs = []
    # The least memory it takes while keeping the time budget (if any configuration keeps it), and vice versa.
    for column, own, other, unit, show in (
        ("peak_memory_mb", memory_budget_mb, dict(time_budget_s=time_budget_s), "MiB of peak memory", _mib),
        ("training_time_s", time_budget_s, dict(memory_budget_mb=memory_budget_mb), "s of training time", _seconds),
    ):
        if own is None:
            continue
        measured = [c for c in tests.configs if c.mean(column) is not None]
        pool = [c for c in _within(measured, **other)] or measured
        if pool:
            least = min(pool, key=lambda c: c.mean(column))
            needs.append(f"at least {show(least.mean(column))} {unit} ({least.label})")
    sentence = f"No configuration fits {budget}."
    if needs:
        sentence += " The smallest budget any configuration needed: " + " or ".join(needs) + "."
    return [sentence]


def _table(header, rows):
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(cells) + " |" for cells in rows]
    return lines


def _config_cells(config):
    return [
        config.label, str(config.n), interval_text(*config.interval("val_loss")),
        interval_text(*config.interval("bleu")) or "n/a", _seconds(config.mean("training_time_s")),
        _mib(config.mean("peak_memory_mb")),
    ]


CONFIG_HEADER = ["configuration", "n", "val loss", "BLEU", "time (s)", "peak memory (MiB)"]


def recommendations_markdown(
    rows: Iterable[Mapping],
    memory_budget_mb: float | None = None,
    time_budget_s: float | None = None,
    baseline: Mapping | None = None,
    validation_dir: str | os.PathLike | None = None,
) -> str:
    """`recommendations.md` as text: the configurations against the best, budget and scenario picks, the
    Pareto front, measured trends, the baseline.

    Args:
        rows: the trials' rows (typed or as `results.csv` holds them).
        memory_budget_mb: a peak memory budget, or None.
        time_budget_s: a training time budget, or None.
        baseline: the unadapted base's scores (`baseline.json`), or None.
        validation_dir: the trials' per-pair files (`RUN_DIR/validation`) for the paired tests, or None.

    Example:
    ```python
    print(recommendations_markdown(rows, memory_budget_mb=8000, baseline={"val_loss": 3.2}))
    ```
    """
    tests = Comparisons(group_configurations(rows), validation_dir)
    lines = ["# LoRA recommendations", ""]
    if not tests.configs:
        return "\n".join(lines + ["No completed trial with a val loss yet: nothing to recommend.", ""])
    lines += configurations_markdown(tests)
    if memory_budget_mb is not None or time_budget_s is not None:
        lines += ["## Your budget", ""] + _budget_section(tests, memory_budget_mb, time_budget_s) + [""]

    scenario_rows = [
        [pick.scenario] + (_config_cells(pick.pick) if pick.pick else ["none"] + ["n/a"] * 5) + [pick.why()]
        for pick in scenario_picks(tests)
    ]
    lines += [
        "## Scenarios", "",
        "Each scenario's pick is the cheapest (tight memory: in memory; balanced: in time) of the configurations "
        "that the tests cannot tell apart from the best within it; a cost picks only where it differs beyond "
        "its noise.", "",
    ] + _table(["scenario"] + CONFIG_HEADER + ["why"], scenario_rows) + [""]
    noise = memory_noise(tests)
    if noise:
        lines += ["## Peak memory and its noise", "", noise, ""]

    front = pareto_front(tests)
    lines += [
        "## Pareto front",
        "",
        "Configurations no other beats on val loss, training time and peak memory at once, best val loss first. "
        "A difference counts only where the tests tell it apart from noise (val loss as above; time and memory "
        "by Welch's t-test over seeds; with one seed, memory with noise of its own never, and time as measured, "
        "its spread unknown: run with `--repeats 2` or more to test it).",
        "",
    ] + _table(CONFIG_HEADER, [_config_cells(c) for c in front]) + [""]

    trends = measured_trends(rows)
    bullets = [f"- {sentence}" for sentence in trends] or ["Too few distinct ranks or batch sizes to fit any trend."]
    lines += ["## Measured trends", ""] + bullets + [""]

    if baseline is not None and baseline.get("val_loss") is not None:
        best = tests.best
        loss, base_loss = best.mean("val_loss"), float(baseline["val_loss"])
        change = (loss - base_loss) / base_loss * 100 if base_loss else float("nan")
        line = (
            f"Best configuration {best.label} reaches val loss {_loss(loss)} against "
            f"{_loss(base_loss)} for the unadapted base model ({change:+.1f}%)"
        )
        if baseline.get("bleu") is not None and best.mean("bleu") is not None:
            line += f"; BLEU {_bleu(best.mean('bleu'))} against {_bleu(float(baseline['bleu']))}"
        lines += ["## Against the unadapted base model", "", line + ".", ""]
    return "\n".join(lines)


def write_recommendations(
    path: str | os.PathLike,
    rows: Iterable[Mapping],
    memory_budget_mb: float | None = None,
    time_budget_s: float | None = None,
    baseline: Mapping | None = None,
    validation_dir: str | os.PathLike | None = None,
) -> pathlib.Path:
    """Write `recommendations_markdown(...)` to `path`; returns the path.

    The paired tests read the trials' files in `validation_dir`, by default `validation/` beside `path`.

    Example:
    ```python
    write_recommendations("logs/sweep/recommendations.md", rows, time_budget_s=600)
    ```
    """
    path = pathlib.Path(path)
    validation_dir = path.parent / VALIDATION_DIR if validation_dir is None else validation_dir
    markdown = recommendations_markdown(rows, memory_budget_mb, time_budget_s, baseline, validation_dir)
    write_atomically(path, markdown + "\n")
    return path
