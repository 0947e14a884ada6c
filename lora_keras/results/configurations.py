"""The study's configurations: its trials grouped over seeds, `summary.csv`, and the tests between them.

A configuration is every hyperparameter but the seed (`CONFIGURATION_COLUMNS`); its trials are its
repeats, one per seed. Two configurations are told apart by Welch's t-test on their per-seed
figures where both have two seeds or more, else by paired tests on the same validation pairs (the
trials' files in `validation/`), else by whether their sampling CIs overlap, else not at all.

Example:
```python
configs = group_configurations(rows)
write_summary_csv(configs, "logs/sweep/summary.csv")
tests = Comparisons(configs, "logs/sweep/validation")
tests.best.label, [c.label for c in tests.indistinguishable(tests.best, configs)]
```
"""

from __future__ import annotations

import csv
import dataclasses
import json
import math
import os
import pathlib
from collections.abc import Iterable, Mapping, Sequence
from functools import cached_property

from lora_keras.results.rows import completed_trials
from lora_keras.results.stats import (
    RESAMPLES, SIGNIFICANCE, SeedSpread, format_p, paired_loss_p_value, paired_translation_p_values, seed_spread,
    welch_p_value,
)
from lora_keras.runtime.atomic_files import replace_atomically

CONFIGURATION_COLUMNS = ("rank", "batch_size", "learning_rate", "lora_alpha", "targets", "lora_dropout", "epochs",
                         "lora_init", "precision")
SUMMARY_FIGURES = ("val_loss", "bleu", "chrf", "training_time_s", "tokens_per_s", "peak_memory_mb")
SAMPLED_FIGURES = ("val_loss", "bleu", "chrf")  # the figures with a sampling CI per trial
SUMMARY_COLUMNS = (
    CONFIGURATION_COLUMNS + ("n",)
    + tuple(f"{figure}_{part}" for figure in SUMMARY_FIGURES for part in ("mean", "std", "ci_low", "ci_high"))
    + ("seeds", "trial_ids")
)
VALIDATION_DIR = "validation"  # RUN_DIR/validation/trial_<id>.json and references.json
REFERENCES_FILE = "references.json"
# Figures that are a host's or a process's memory: their differences between configurations carry noise.
NOISY_MEMORY_KINDS = ("host_rss", "gpu_process")
# Below this share of the lower figure, two such memory figures are not told apart even where their seeds
# differ (Welch): the method's own spread is larger than the seeds'. The default study's host RSS figures
# agreed within 0.6% between grid orders and 1.5% with fresh processes, and a configuration timed over
# more steps (more batch shapes, more of TensorFlow's caches) read 2% more (docs/measured.md).
MEMORY_NOISE_FLOOR = 0.05
MEMORY_NAMES = {"host_rss": "the host's RSS (`host_rss`)",
                "gpu_process": "the process's GPU peak so far (`gpu_process`)"}
LABELS = {"rank": "rank", "batch_size": "batch", "learning_rate": "lr", "lora_alpha": "alpha", "targets": "targets",
          "lora_dropout": "dropout", "epochs": "epochs", "lora_init": "init", "precision": "precision"}


def _number(value):
    return f"{value:g}" if isinstance(value, float) else str(value)


@dataclasses.dataclass
class Configuration:
    """One configuration's trials (one per seed) and what they add up to.

    Example:
    ```python
    config = group_configurations(rows)[0]
    config.label, config.n, config.mean("val_loss"), config.interval("val_loss")
    ```
    """

    hparams: dict
    trials: list[dict]
    label: str = ""

    @property
    def n(self) -> int:
        return len(self.trials)

    @property
    def trial_ids(self) -> list[str]:
        return [str(t["trial_id"]) for t in self.trials]

    def values(self, column: str) -> list[float]:
        """The trials' figures in `column`, missing ones left out."""
        return [t[column] for t in self.trials if t.get(column) is not None]

    def spread(self, column: str) -> SeedSpread | None:
        """`column` over the seeds: mean, std and the CI of the mean (None without a figure)."""
        return seed_spread(self.values(column))

    def mean(self, column: str) -> float | None:
        spread = self.spread(column)
        return None if spread is None else spread.mean

    def interval(self, column: str) -> tuple[float | None, float | None, float | None]:
        """`(mean, low, high)`: the CI of the mean over seeds; with one trial, its sampling CI if it has one.

        Example: `config.interval("val_loss")` -> `(0.117, 0.105, 0.131)`.
        """
        spread = self.spread(column)
        if spread is None:
            return None, None, None
        if spread.n >= 2:
            return spread.mean, spread.ci_low, spread.ci_high
        (trial,) = [t for t in self.trials if t.get(column) is not None]
        return spread.mean, trial.get(f"{column}_ci_low"), trial.get(f"{column}_ci_high")

    @property
    def memory_kind(self) -> str | None:
        kinds = {t.get("memory_kind") for t in self.trials if t.get("peak_memory_mb") is not None}
        return kinds.pop() if len(kinds) == 1 else None

    def trial_for_seed(self, seed) -> dict:
        """The trial of `seed`, or the first: what a paired test against another configuration's trial uses."""
        return next((t for t in self.trials if seed is not None and t.get("seed") == seed), self.trials[0])


def _labelled(configs, column):
    """Whether a label needs `column`: its values differ (alpha: its scale alpha / rank differs)."""
    if column == "lora_alpha":
        return len({c.hparams["lora_alpha"] / c.hparams["rank"] if c.hparams["lora_alpha"] and c.hparams["rank"]
                    else c.hparams["lora_alpha"] for c in configs}) > 1
    return len({c.hparams[column] for c in configs}) > 1


def group_configurations(rows: Iterable[Mapping]) -> list[Configuration]:
    """The completed trials with a val loss, grouped by every hyperparameter but the seed, in row order.

    Each gets a `label` naming its rank, batch size and the other hyperparameters that differ
    between configurations, e.g. "rank 16 / batch 8" or "rank 4 / batch 8 / lr 0.0003".

    Example:
    ```python
    [(c.label, c.n) for c in group_configurations(rows)]   # [("rank 4 / batch 8", 3), ...]
    ```
    """
    grouped = {}
    for trial in completed_trials(rows):
        if trial.get("val_loss") is None:
            continue
        key = tuple(trial.get(column) for column in CONFIGURATION_COLUMNS)
        grouped.setdefault(key, []).append(trial)
    configs = [Configuration(dict(zip(CONFIGURATION_COLUMNS, key)), trials) for key, trials in grouped.items()]
    shown = ["rank", "batch_size"] + [column for column in CONFIGURATION_COLUMNS[2:] if _labelled(configs, column)]
    for config in configs:
        config.label = " / ".join(f"{LABELS[column]} {_number(config.hparams[column])}" for column in shown)
    return configs


def summary_rows(configs: Sequence[Configuration]) -> list[dict]:
    """One `summary.csv` row per configuration (`SUMMARY_COLUMNS`).

    With one trial, `std` is empty and the CI is the trial's sampling CI (val loss, BLEU, chrF) or
    empty (time, tokens/s, memory).

    Example:
    ```python
    summary_rows(group_configurations(rows))[0]["val_loss_mean"]
    ```
    """
    rows = []
    for config in configs:
        row = {**config.hparams, "n": config.n, "trial_ids": " ".join(config.trial_ids),
               "seeds": " ".join(str(t["seed"]) for t in config.trials if t.get("seed") is not None)}
        for figure in SUMMARY_FIGURES:
            spread = config.spread(figure)
            if spread is None:
                continue
            mean, low, high = config.interval(figure)
            row.update({f"{figure}_mean": mean, f"{figure}_std": spread.std, f"{figure}_ci_low": low,
                        f"{figure}_ci_high": high})
        rows.append(row)
    return rows


def write_summary_csv(configs: Sequence[Configuration], path: str | os.PathLike) -> pathlib.Path:
    """`summary.csv`: one row per configuration with `SUMMARY_COLUMNS`; returns the path.

    Example:
    ```python
    write_summary_csv(group_configurations(rows), "logs/sweep/summary.csv")
    ```
    """
    path = pathlib.Path(path)
    with replace_atomically(path) as temporary, open(temporary, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=SUMMARY_COLUMNS, extrasaction="ignore")
        writer.writeheader()
        for row in summary_rows(configs):
            writer.writerow({column: row.get(column) for column in SUMMARY_COLUMNS})
    return path


class ValidationFiles:
    """The trials' per-pair files in `RUN_DIR/validation/`, read once each; missing ones read as None.

    Example:
    ```python
    files = ValidationFiles("logs/sweep/validation")
    files.pairs("3")["nll"][:2], len(files.references or [])
    ```
    """

    def __init__(self, directory: str | os.PathLike | None):
        self.directory = None if directory is None else pathlib.Path(directory)
        self._read = {}

    def _json(self, name):
        if self.directory is None:
            return None
        if name not in self._read:
            path = self.directory / name
            try:
                self._read[name] = json.loads(path.read_text()) if path.is_file() else None
            except (OSError, ValueError):  # a file being written, or cut short: as if missing
                self._read[name] = None
        return self._read[name]

    def pairs(self, trial_id: str) -> dict | None:
        """`{"nll", "tokens", "translations"}` of a trial, or None."""
        return self._json(f"trial_{trial_id}.json")

    def identity(self, trial_id: str) -> tuple | None:
        """What tells this trial's file from any other: its path, size and modification time (None: no file)."""
        if self.directory is None:
            return None
        path = self.directory / f"trial_{trial_id}.json"
        try:
            status = path.stat()
        except OSError:
            return None
        return str(path.resolve()), status.st_size, status.st_mtime_ns

    @property
    def references(self) -> list[str] | None:
        texts = self._json(REFERENCES_FILE)
        return None if texts is None else texts.get("references")


@dataclasses.dataclass(frozen=True)
class Difference:
    """How one figure of two configurations compares.

    `method` is "Welch" (over seeds), "paired bootstrap" (on the same validation pairs), "CIs"
    (whether the sampling CIs overlap), "points" (the figures alone), "floor" (noisy memory closer than
    `MEMORY_NOISE_FLOOR`: not apart), "one draw" (memory that
    carries noise, one trial each: not known) or "none" (a figure not measured); `apart` is whether
    the two differ (None: not known).
    """

    method: str
    apart: bool | None
    p: float | None = None

    def text(self) -> str:
        """`p = 0.03`; `CIs overlap` / `CIs apart`; `n/a`."""
        if self.p is not None:
            return format_p(self.p)
        if self.method == "CIs":
            return "CIs apart" if self.apart else "CIs overlap"
        return "n/a"


def _welch(a, b, column):
    p = welch_p_value(a.values(column), b.values(column))
    if p is None:  # neither varies: equal or not, as the figures say
        return Difference("points", a.mean(column) != b.mean(column))
    return Difference("Welch", p < SIGNIFICANCE, p)


# (best trial's file, other trial's file) -> sacrebleu's paired p-values: the process's tests, reused.
_TRANSLATION_TESTS: dict[tuple, dict] = {}


class Comparisons:
    """The tests between configurations, computed once each: val loss, BLEU and chrF, time and memory.

    Welch's t-test where both configurations have two trials or more; else paired tests on the
    validation pairs of one trial of each (the same seed where both have it; sacrebleu's paired
    bootstrap for BLEU and chrF, the same resampling of per-pair NLL for the val loss); without
    those files, whether the trials' sampling CIs overlap; without CIs, the figures as points.

    Example:
    ```python
    tests = Comparisons(group_configurations(rows), "logs/sweep/validation")
    tests.loss(tests.best, other).text()          # "p = 0.03"
    tests.against_best()[other.label]["bleu"]      # Difference("paired bootstrap", False, 0.41)
    ```
    """

    def __init__(self, configs: Sequence[Configuration], validation_dir: str | os.PathLike | None = None):
        self.configs = list(configs)
        self.files = ValidationFiles(validation_dir)
        self._loss = {}

    @cached_property
    def best(self) -> Configuration | None:
        """The configuration of lowest val loss (its mean over seeds)."""
        return min(self.configs, key=lambda c: c.mean("val_loss"), default=None)

    @property
    def repeats(self) -> int:
        """The most trials any configuration has (1 for a one-seed study)."""
        return max((c.n for c in self.configs), default=0)

    def _trials(self, a, b):
        """The two trials a paired test compares: one of each, of the same seed where both have it."""
        seeds = {t.get("seed") for t in a.trials} & {t.get("seed") for t in b.trials}
        seed = min((s for s in seeds if s is not None), default=None)
        return a.trial_for_seed(seed), b.trial_for_seed(seed)

    def _pairs(self, a, b):
        trial_a, trial_b = self._trials(a, b)
        pairs_a, pairs_b = self.files.pairs(trial_a["trial_id"]), self.files.pairs(trial_b["trial_id"])
        if pairs_a is None or pairs_b is None or pairs_a["tokens"] != pairs_b["tokens"]:
            return None  # not the same pairs
        return pairs_a, pairs_b

    def _fallback(self, a, b, column):
        """Without repeats or per-pair files: do the sampling CIs overlap? Else the figures as points."""
        trial_a, trial_b = self._trials(a, b)
        ends = [t.get(f"{column}_ci_{end}") for t in (trial_a, trial_b) for end in ("low", "high")]
        if None in ends:
            return Difference("points", trial_a[column] != trial_b[column])
        low_a, high_a, low_b, high_b = ends
        return Difference("CIs", high_a < low_b or high_b < low_a)

    def loss(self, a: Configuration, b: Configuration) -> Difference:
        """Whether the val losses of `a` and `b` differ."""
        key = (id(a), id(b)) if id(a) <= id(b) else (id(b), id(a))
        if key not in self._loss:
            if a is b:
                self._loss[key] = Difference("points", False)
            elif a.n >= 2 and b.n >= 2:
                self._loss[key] = _welch(a, b, "val_loss")
            elif (pairs := self._pairs(a, b)) is not None:
                p = paired_loss_p_value(pairs[0]["nll"], pairs[1]["nll"], pairs[0]["tokens"])
                self._loss[key] = Difference("paired bootstrap", p < SIGNIFICANCE, p)
            else:
                self._loss[key] = self._fallback(a, b, "val_loss")
        return self._loss[key]

    def indistinguishable(self, reference: Configuration, pool: Iterable[Configuration]) -> list[Configuration]:
        """The configurations of `pool` whose val loss is not told apart from `reference`'s (it included).

        Example: `[c.label for c in tests.indistinguishable(tests.best, tests.configs)]`.
        """
        return [c for c in pool if c is reference or not self.loss(reference, c).apart]

    def cost(self, a: Configuration, b: Configuration, column: str) -> Difference:
        """Whether a cost (`training_time_s`, `peak_memory_mb`) of `a` and `b` differs beyond its spread.

        Welch over seeds where both have two or more; with one trial, memory that carries noise
        (`NOISY_MEMORY_KINDS`) is not known to differ, and any other figure is taken as a point.
        Such memory never differs by less than `MEMORY_NOISE_FLOOR` of the lower figure.
        """
        if a is b:
            return Difference("points", False)
        noisy_memory = column == "peak_memory_mb" and bool({a.memory_kind, b.memory_kind} & set(NOISY_MEMORY_KINDS))
        if noisy_memory and abs(a.mean(column) - b.mean(column)) < MEMORY_NOISE_FLOOR * min(a.mean(column),
                                                                                             b.mean(column)):
            return Difference("floor", False)
        if len(a.values(column)) >= 2 and len(b.values(column)) >= 2:
            return _welch(a, b, column)
        if noisy_memory:
            return Difference("one draw", None)
        return Difference("points", a.mean(column) != b.mean(column))

    @cached_property
    def _translations(self):
        """`{(best trial, other trial): {"bleu": p, "chrf": p}}` of every paired test against the best."""
        references = self.files.references
        tests, by_best = {}, {}
        for other in self.configs:
            if other is self.best or (other.n >= 2 and self.best.n >= 2):
                continue
            pairs = self._pairs(self.best, other)
            if references is None or pairs is None or not all(
                    len(p.get("translations") or []) == len(references) for p in pairs):
                continue
            best_trial, other_trial = self._trials(self.best, other)
            by_best.setdefault(best_trial["trial_id"], (pairs[0], {}))[1][other_trial["trial_id"]] = pairs[1]
        for best_id, (best_pairs, others) in by_best.items():
            # Tables are rewritten after every trial: a pair of files already tested keeps its p-values.
            keys = {other_id: (self.files.identity(best_id), self.files.identity(other_id)) for other_id in others}
            missing = [other_id for other_id in others if keys[other_id] not in _TRANSLATION_TESTS]
            if missing:
                p_values = paired_translation_p_values(
                    best_pairs["translations"], [others[other_id]["translations"] for other_id in missing], references)
                _TRANSLATION_TESTS.update({keys[other_id]: p for other_id, p in zip(missing, p_values)})
            tests.update({(best_id, other_id): _TRANSLATION_TESTS[keys[other_id]] for other_id in others})
        return tests

    def translation(self, other: Configuration, column: str) -> Difference:
        """Whether BLEU or chrF (`column`) of `other` differs from the best's."""
        best = self.best
        if other is best:
            return Difference("points", False)
        if other.n >= 2 and best.n >= 2:
            return _welch(best, other, column)
        best_trial, other_trial = self._trials(best, other)
        p = self._translations.get((best_trial["trial_id"], other_trial["trial_id"]), {}).get(column)
        if p is not None:
            return Difference("paired bootstrap", p < SIGNIFICANCE, p)
        if best_trial.get(column) is None or other_trial.get(column) is None:
            return Difference("none", None)  # not measured (no validation texts)
        return self._fallback(best, other, column)

    def against_best(self) -> dict[str, dict[str, Difference]]:
        """`{label: {"val_loss": ..., "bleu": ..., "chrf": ...}}` of every other configuration.

        Example: `tests.against_best()["rank 4 / batch 8"]["val_loss"].text()` -> `"p = 0.21"`.
        """
        return {
            c.label: {"val_loss": self.loss(self.best, c), "bleu": self.translation(c, "bleu"),
                      "chrf": self.translation(c, "chrf")}
            for c in self.configs if c is not self.best
        }

    def method(self) -> str:
        """In words, how the configurations were told apart (for the reports)."""
        methods = {d.method for tests in self.against_best().values() for d in tests.values()}
        said = {
            "Welch": f"Welch's t-test on the per-seed figures ({self.repeats} seeds at most)",
            "paired bootstrap": f"paired bootstrap on the same validation pairs ({RESAMPLES} resamples; "
                                "sacrebleu's for BLEU and chrF)",
            "CIs": "no per-pair data: whether the trials' sampling CIs overlap",
            "points": "no per-pair data and no CIs: the figures as points",
        }
        return "; ".join(text for method, text in said.items() if method in methods) or "nothing to compare"


def _figure(value) -> str:
    if value is None:
        return ""
    return f"{value:.4g}" if abs(value) < 1000 else f"{value:.0f}"


def interval_text(mean: float | None, low: float | None, high: float | None) -> str:
    """`0.1293 [0.06454, 0.1941]`; the figure alone without a CI; empty without a figure.

    Example: `interval_text(*config.interval("val_loss"))`.
    """
    if mean is None:
        return ""
    return _figure(mean) if low is None or high is None else f"{_figure(mean)} [{_figure(low)}, {_figure(high)}]"


def _listed(configs, tests, reference):
    return ", ".join(f"{c.label} ({tests.loss(reference, c).text()})" for c in configs)


def indistinguishable_sentences(tests: Comparisons) -> list[str]:
    """The best configuration, those not told apart from it in val loss, and those worse, as sentences.

    Example:
    ```python
    indistinguishable_sentences(tests)[1]
    # "Indistinguishable from it in val loss (p >= 0.05): rank 4 / batch 8 (p = 0.21)."
    ```
    """
    best = tests.best
    over = f"mean over {best.n} seeds" if best.n >= 2 else "one seed"
    lines = [f"Best configuration (lowest val loss, {over}): {best.label}, val loss "
             f"{interval_text(*best.interval('val_loss'))}."]
    others = sorted((c for c in tests.configs if c is not best), key=lambda c: c.mean("val_loss"))
    if not others:
        return lines + ["It is the only configuration: nothing to compare it with."]
    tied = tests.indistinguishable(best, others)
    apart = [c for c in others if c not in tied]
    if all(tests.loss(best, c).method == "points" for c in others):
        return lines + ["No per-pair data, repeats or CIs: the configurations can only be ranked by their "
                        "figures, and no difference can be called noise or real."]
    if not tied:
        return lines + [f"Every other configuration is worse in val loss (p < 0.05): {_listed(apart, tests, best)}."]
    lines.append(f"Indistinguishable from it in val loss (p >= 0.05): {_listed(tied, tests, best)}.")
    if apart:
        lines.append(f"Worse than it (p < 0.05): {_listed(apart, tests, best)}.")
    return lines


def configurations_markdown(tests: Comparisons) -> list[str]:
    """`results.md`'s configurations: one row each (summary.csv's figures), p-values against the best.

    Example:
    ```python
    "\\n".join(configurations_markdown(Comparisons(group_configurations(rows), "logs/sweep/validation")))
    ```
    """
    against = tests.against_best()
    header = ["configuration", "n", "val loss", "BLEU", "chrF", "time (s)", "tokens/s", "peak memory (MiB)",
              "val loss vs best", "BLEU vs best", "chrF vs best"]
    lines = [
        "## Configurations", "",
        "One row per configuration (every hyperparameter but the seed), lowest val loss first: with several "
        "seeds, the mean and the 95% CI of the mean (summary.csv adds the standard deviation); with one, the "
        "trial's figure and its sampling CI. The last columns test each configuration against the best: "
        f"{tests.method()}.", "",
        "| " + " | ".join(header) + " |", "|---|" + "---:|" * (len(header) - 1),
    ]
    for config in sorted(tests.configs, key=lambda c: c.mean("val_loss")):
        cells = [config.label, str(config.n)] + [
            interval_text(*config.interval(figure)) for figure in SUMMARY_FIGURES]
        if config is tests.best:
            cells += ["best"] * 3
        else:
            cells += [against[config.label][figure].text() for figure in SAMPLED_FIGURES]
        lines.append("| " + " | ".join(cells) + " |")
    return lines + ["", *indistinguishable_sentences(tests), ""]


def memory_noise(tests: Comparisons) -> str | None:
    """How far apart the configurations' memory figures are against the figure's own spread, if it has noise.

    None where memory is the GPU allocator's peak (`memory_kind=gpu`) or not measured.

    Example:
    ```python
    memory_noise(tests)
    # "Peak memory is the host's RSS (host_rss), a figure with noise of its own: the configurations' means
    #  span 1316-1433 MiB (117 MiB, 8.9%) against a spread over seeds of 25 MiB (std) ..."
    ```
    """
    configs = [c for c in tests.configs if c.mean("peak_memory_mb") is not None]
    kinds = sorted({c.memory_kind for c in configs} & set(NOISY_MEMORY_KINDS))
    if not kinds:
        return None
    means = [c.mean("peak_memory_mb") for c in configs]
    low, high = min(means), max(means)
    span = (f"the configurations' {'means' if tests.repeats >= 2 else 'figures'} span {low:.0f}-{high:.0f} MiB "
            f"({high - low:.0f} MiB, {100 * (high - low) / low:.1f}% of the lowest)")
    names = " and ".join(MEMORY_NAMES[kind] for kind in kinds)
    start = f"Peak memory here is {names}, a figure with noise of its own: {span}"
    if any(len(c.values("peak_memory_mb")) < 2 for c in configs):
        return (f"{start}; with one draw per configuration the figure's own spread is unknown (run with "
                "`--repeats 2` or more to measure it), so no pick is made from these memory differences.")
    variances = [c.spread("peak_memory_mb").std ** 2 for c in configs]
    pairs = [(a, b) for i, a in enumerate(configs) for b in configs[i + 1:]]
    apart = sum(bool(tests.cost(a, b, "peak_memory_mb").apart) for a, b in pairs)
    return (f"{start}, against a spread over seeds of {math.sqrt(sum(variances) / len(variances)):.0f} MiB "
            f"(standard deviation, pooled over {len(configs)} configurations); {apart} of {len(pairs)} pairs of "
            f"configurations differ beyond it (Welch p < 0.05) and by {100 * MEMORY_NOISE_FLOOR:.0f}% or more (the "
            "method's own spread is larger than the seeds'), and no pick is made from the others' memory "
            "differences.")
