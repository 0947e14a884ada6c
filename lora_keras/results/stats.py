"""How sure each figure is: confidence intervals, significance tests and power-law fits with a CI.

Kept libraries do the statistics: scipy.stats (bootstrap, t distribution, Welch's test), sacrebleu's
significance module (its bootstrap and paired bootstrap for BLEU and chrF) and numpy's random
generator; nothing here holds a distribution table.

Example:
```python
low, high = val_loss_interval(nll, tokens)                      # 95% CI of sum(nll) / sum(tokens)
translation_intervals(hypotheses, references)["bleu_ci_low"]    # sacrebleu's bootstrap
paired_loss_p_value(best_nll, other_nll, tokens)                # same pairs, same resamples
format_p(welch_p_value([0.11, 0.16, 0.12], [0.19, 0.21, 0.20])) # "p = 0.031"
```
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Hashable, Sequence

import numpy as np
import sacrebleu
from sacrebleu.significance import PairedTest
from scipy import stats

CONFIDENCE = 0.95
RESAMPLES = 1000
SIGNIFICANCE = 0.05  # a p-value below this tells two configurations apart
# sacrebleu names its scores by metric ("BLEU", "chrF2"); ours are the results.csv columns.
_METRICS = (("bleu", lambda: sacrebleu.BLEU(force=True)), ("chrf", sacrebleu.CHRF))


def val_loss_interval(nll: Sequence[float], tokens: Sequence[int], confidence: float = CONFIDENCE,
                      resamples: int = RESAMPLES, seed: int = 0) -> tuple[float, float]:
    """The val loss's CI over validation pairs: a percentile bootstrap of sum(nll) / sum(tokens).

    Pairs are resampled whole (their NLL with their real target tokens), so every resample is
    still a loss per real target token, as the val loss is.

    Args:
        nll: per validation pair, the summed NLL in nats of its target tokens.
        tokens: per pair, its real target-token count.
        confidence: the interval's coverage.
        resamples: bootstrap resamples.
        seed: the resampling's seed (numpy's `default_rng`).

    Example:
    ```python
    val_loss_interval([2.0, 9.0, 4.0, 7.5], [4, 6, 5, 5])   # (0.67, 1.5), around 22.5 / 20 = 1.125
    ```
    """
    nll, tokens = np.asarray(nll, "float64"), np.asarray(tokens, "float64")
    if len(nll) < 2:  # nothing to resample
        loss = float(nll.sum() / tokens.sum())
        return loss, loss
    result = stats.bootstrap((nll, tokens), lambda n, t, axis: n.sum(axis) / t.sum(axis), paired=True,
                             vectorized=True, confidence_level=confidence, n_resamples=resamples,
                             method="percentile", random_state=np.random.default_rng(seed))
    return float(result.confidence_interval.low), float(result.confidence_interval.high)


def _paired_test(named_systems, references, resamples):
    """sacrebleu's `PairedTest` ("bs") over BLEU and chrF: `{column: [Result per system]}`."""
    metrics = {column: make() for column, make in _METRICS}
    test = PairedTest([(name, list(hyps)) for name, hyps in named_systems], metrics, [list(references)],
                      test_type="bs", n_samples=resamples)
    _, scores = test()
    named = dict(zip((score_name for score_name in scores if score_name != "System"), metrics))
    return {named[score_name]: results for score_name, results in scores.items() if score_name != "System"}


def translation_intervals(hypotheses: Sequence[str], references: Sequence[str],
                          resamples: int = RESAMPLES) -> dict[str, float]:
    """BLEU's and chrF's 95% CIs by sacrebleu's own bootstrap over the sentences.

    sacrebleu resamples the sentences `resamples` times (numpy's `default_rng`, seed
    `SACREBLEU_SEED`, 12345 unless set) and states its interval as the resamples' mean ± half the
    width between their 2.5th and 97.5th percentiles; these are its two ends. BLEU is computed
    with `force=True` (references that end in " ." are tokenized already).

    Example:
    ```python
    translation_intervals(translations, references)
    # {"bleu_ci_low": 21.3, "bleu_ci_high": 26.1, "chrf_ci_low": 48.0, "chrf_ci_high": 52.9}
    ```
    """
    if len(hypotheses) != len(references):
        raise ValueError(f"{len(hypotheses)} translations for {len(references)} references")
    intervals = {}
    for column, (result,) in _paired_test([("trial", hypotheses)], references, resamples).items():
        intervals[f"{column}_ci_low"] = float(result.mean - result.ci)
        intervals[f"{column}_ci_high"] = float(result.mean + result.ci)
    return intervals


def paired_loss_p_value(nll_a: Sequence[float], nll_b: Sequence[float], tokens: Sequence[int],
                        resamples: int = RESAMPLES, seed: int = 0) -> float:
    """Two-sided p-value that two systems' val losses on the same pairs differ: a paired bootstrap.

    Both systems are resampled with the same pair indices (Koehn 2004, as sacrebleu's paired
    bootstrap): the resampled differences of sum(nll) / sum(tokens), shifted to mean zero (the
    null hypothesis), are set against the observed difference; p = (1 + how many reach it) /
    (1 + resamples), so its smallest value is 1 / (1 + resamples).

    Example:
    ```python
    paired_loss_p_value(best["nll"], other["nll"], best["tokens"])   # 0.000999: clearly apart
    ```
    """
    nll_a, nll_b = np.asarray(nll_a, "float64"), np.asarray(nll_b, "float64")
    tokens = np.asarray(tokens, "float64")
    if not len(nll_a) == len(nll_b) == len(tokens):
        raise ValueError(f"pairs differ: {len(nll_a)} and {len(nll_b)} losses, {len(tokens)} token counts")
    index = np.random.default_rng(seed).integers(0, len(tokens), size=(resamples, len(tokens)))
    differences = (nll_a[index].sum(1) - nll_b[index].sum(1)) / tokens[index].sum(1)
    observed = (nll_a.sum() - nll_b.sum()) / tokens.sum()
    # The tolerance keeps an exact tie (identical systems: every difference 0) at p = 1.
    reached = np.abs(differences - differences.mean()) >= abs(observed) - 1e-12
    return float((1 + reached.sum()) / (1 + resamples))


def paired_translation_p_values(best: Sequence[str], others: Sequence[Sequence[str]], references: Sequence[str],
                                resamples: int = RESAMPLES) -> list[dict[str, float]]:
    """BLEU and chrF p-values of each other system against `best`: sacrebleu's paired bootstrap.

    One `sacrebleu.significance.PairedTest` with `test_type="bs"` (`best` its baseline): every
    system is resampled with the same sentence indices.

    Example:
    ```python
    paired_translation_p_values(best_translations, [other_translations], references)
    # [{"bleu": 0.021, "chrf": 0.004}]
    ```
    """
    if not others:
        return []
    results = _paired_test([("best", best)] + [(f"other {i}", hyps) for i, hyps in enumerate(others)],
                           references, resamples)
    # Equal scores differ by nothing; sacrebleu's count of resampled differences above the observed
    # one would give the smallest p when every resample ties too (two systems both at BLEU 0).
    return [{column: 1.0 if results[column][i + 1].score == results[column][0].score
             else float(results[column][i + 1].p_value) for column in results} for i in range(len(others))]


@dataclasses.dataclass(frozen=True)
class SeedSpread:
    """A figure over a configuration's seeds: `n`, mean, sample std and the CI of the mean.

    `std`, `ci_low` and `ci_high` are None with one seed.
    """

    n: int
    mean: float
    std: float | None = None
    ci_low: float | None = None
    ci_high: float | None = None


def seed_spread(values: Sequence[float], confidence: float = CONFIDENCE) -> SeedSpread | None:
    """Mean, sample std (ddof=1) and the t-based CI of the mean of a configuration's per-seed figures.

    None for no values.

    Example:
    ```python
    seed_spread([0.110, 0.159, 0.119])   # SeedSpread(n=3, mean=0.1293, std=0.0261, ci_low=0.0645, ci_high=0.194)
    ```
    """
    values = np.asarray([v for v in values if v is not None and not math.isnan(v)], "float64")
    if len(values) == 0:
        return None
    mean = float(values.mean())
    if len(values) < 2:
        return SeedSpread(1, mean)
    std = float(values.std(ddof=1))
    half = float(stats.t.ppf((1 + confidence) / 2, len(values) - 1)) * std / math.sqrt(len(values))
    return SeedSpread(len(values), mean, std, mean - half, mean + half)


def welch_p_value(a: Sequence[float], b: Sequence[float]) -> float | None:
    """Two-sided p-value of Welch's t-test (`scipy.stats.ttest_ind(equal_var=False)`) on two seed samples.

    None when either has fewer than two values, or neither varies.

    Example:
    ```python
    welch_p_value([0.110, 0.159, 0.119], [0.190, 0.210, 0.201])   # 0.0296
    ```
    """
    a, b = np.asarray(a, "float64"), np.asarray(b, "float64")
    if len(a) < 2 or len(b) < 2 or (np.ptp(a) == 0 and np.ptp(b) == 0):
        return None
    p = float(stats.ttest_ind(a, b, equal_var=False).pvalue)
    return None if math.isnan(p) else p


@dataclasses.dataclass(frozen=True)
class PowerLaw:
    """y = c * x**exponent fitted in log-log space, with the exponent's CI (None below three points)."""

    exponent: float
    ci_low: float | None
    ci_high: float | None
    r_squared: float
    points: int

    def covers(self, exponent: float) -> bool:
        """Whether `exponent` lies inside the CI (a rounding's width of slack for exact data)."""
        return self.ci_low is not None and self.ci_low - 1e-9 <= exponent <= self.ci_high + 1e-9

    def ci_text(self) -> str:
        """The CI as words: "95% CI -1.21 to -0.83", or why there is none."""
        if self.ci_low is None:
            return "no CI"
        return f"95% CI {self.ci_low:.2f} to {self.ci_high:.2f}"


def fit_power_law(xs: Sequence[float], ys: Sequence[float], groups: Sequence[Hashable] | None = None,
                  confidence: float = CONFIDENCE) -> PowerLaw | None:
    """The exponent of y = c * x**k by least squares in log-log space, with a t-based CI on k.

    Every (x, y) is a point: with repeats, each seed is one. With `groups`, each group gets its own c
    and all share one k (the pooled fit of several series); with none, this is
    `scipy.stats.linregress` of log y on log x, its standard error and a t quantile of n - 2 degrees of
    freedom (n - 1 - groups when pooled). Points with a missing or non-positive x or y are dropped, and
    groups with fewer than two distinct x; None when no group is left.

    Example:
    ```python
    fit_power_law([1, 4, 16], [3, 1.5, 0.75]).exponent   # -0.5
    ```
    """
    groups = [None] * len(xs) if groups is None else list(groups)
    by_group = {}
    for x, y, group in zip(xs, ys, groups):
        if x is not None and y is not None and x > 0 and y > 0:
            by_group.setdefault(group, []).append((math.log(x), math.log(y)))
    by_group = {g: points for g, points in by_group.items() if len({x for x, _ in points}) >= 2}
    if not by_group:
        return None
    # Within each group, log x and log y less their group's means: the slope they share is k.
    centred = np.concatenate([np.asarray(points) - np.mean(points, axis=0) for points in by_group.values()])
    x, y = centred[:, 0], centred[:, 1]
    sxx, syy = float(x @ x), float(y @ y)
    slope = float(x @ y) / sxx
    residual = float(((y - slope * x) ** 2).sum())
    r_squared = 1.0 - residual / syy if syy > 0 else 1.0  # constant y: exponent 0 describes it exactly
    freedom = len(x) - 1 - len(by_group)
    if freedom < 1:
        return PowerLaw(slope, None, None, r_squared, len(x))
    half = float(stats.t.ppf((1 + confidence) / 2, freedom)) * math.sqrt(residual / freedom / sxx)
    return PowerLaw(slope, slope - half, slope + half, r_squared, len(x))


def format_p(p: float | None) -> str:
    """A p-value as text: `p = 0.03`-style, `p < 0.001` below that, `n/a` for none.

    Rounded down (three decimals below 0.1, two above), so the text never crosses the 0.05 line
    the wrong way: 0.0499 reads `p = 0.049`.

    Example:
    ```python
    [format_p(p) for p in (0.0004, 0.0312, 0.2847, None)]   # ["p < 0.001", "p = 0.031", "p = 0.28", "n/a"]
    ```
    """
    if p is None:
        return "n/a"
    if p < 0.001:
        return "p < 0.001"
    decimals = 3 if p < 0.1 else 2
    return f"p = {math.floor(p * 10**decimals + 1e-9) / 10**decimals:.{decimals}f}"
