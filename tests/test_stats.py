"""The statistics against independent computations: a delta-method CI, sacrebleu's printed CI and a hand
bootstrap, known nulls and clear differences, a hand Welch t, linregress, and coverage on synthetic data."""

import math
import re
import time

import numpy as np
import pytest
import sacrebleu
from scipy import stats

from lora_keras.results.stats import (
    fit_power_law, format_p, paired_loss_p_value, paired_translation_p_values, seed_spread, translation_intervals,
    val_loss_interval, welch_p_value,
)
from study_fixture import references, trial_files


def pairs(size, loss=0.5, seed=0):
    """Per-pair summed NLL and target-token counts: long pairs weigh more in the ratio."""
    rng = np.random.default_rng(seed)
    tokens = rng.integers(3, 30, size)
    return tokens * loss * rng.gamma(2.0, 0.5, size), tokens


def test_val_loss_interval_agrees_with_the_delta_method():
    nll, tokens = pairs(300)
    ratio = nll.sum() / tokens.sum()
    # Ratio estimator's standard error: residuals n_i - R t_i, over the mean token count.
    residuals = nll - ratio * tokens
    se = math.sqrt((residuals**2).sum() / (len(nll) * (len(nll) - 1))) / tokens.mean()
    half = stats.norm.ppf(0.975) * se
    low, high = val_loss_interval(nll, tokens)
    assert low < ratio < high
    assert abs(low - (ratio - half)) < 0.15 * half and abs(high - (ratio + half)) < 0.15 * half
    assert val_loss_interval(nll, tokens) == (low, high)  # seeded: the same interval every time
    narrow = val_loss_interval(nll, tokens, confidence=0.5)
    assert low < narrow[0] < narrow[1] < high


def test_val_loss_interval_is_per_token_not_per_pair():
    # Half the pairs are long and cheap per token: a mean of per-pair losses would sit far above the ratio.
    nll = np.array([1.0] * 50 + [40.0] * 50)
    tokens = np.array([100] * 50 + [10] * 50)
    low, high = val_loss_interval(nll, tokens)
    assert low < nll.sum() / tokens.sum() < high < np.mean(nll / tokens)
    assert val_loss_interval([3.0], [4]) == (0.75, 0.75)


def test_val_loss_interval_covers_the_true_loss_about_95_percent_of_the_time():
    covered = 0
    for seed in range(100):
        nll, tokens = pairs(150, loss=0.5, seed=seed)  # E[nll_i / tokens_i] = 0.5 exactly
        low, high = val_loss_interval(nll, tokens, resamples=500, seed=seed)
        covered += low <= 0.5 <= high
    assert 88 <= covered <= 100


def test_translation_intervals_are_sacrebleus_printed_interval_and_a_hand_bootstrap():
    refs = references(300)
    hyps = trial_files(0.1, 0.3, refs, seed=1)["translations"]
    started = time.perf_counter()
    intervals = translation_intervals(hyps, refs)
    assert time.perf_counter() - started < 2.0  # called once per trial
    for column, metric in (("bleu", sacrebleu.BLEU(force=True)), ("chrf", sacrebleu.CHRF())):
        printed = str(metric.corpus_score(hyps, [refs], n_bootstrap=1000))
        mean, half = (float(v) for v in re.search(r"μ = ([\d.]+) ± ([\d.]+)", printed).groups())
        low, high = intervals[f"{column}_ci_low"], intervals[f"{column}_ci_high"]
        assert (low + high) / 2 == pytest.approx(mean, abs=0.01) and (high - low) / 2 == pytest.approx(half, abs=0.01)
    # A bootstrap by hand: each sentence's n-gram counts (sentence_score), summed over resampled sentences,
    # BLEU of each sum (BLEU.compute_bleu), the 2.5th and 97.5th percentiles.
    counts = [sacrebleu.BLEU(force=True).sentence_score(h, [r]) for h, r in zip(hyps, refs)]
    correct, total = np.array([c.counts for c in counts]), np.array([c.totals for c in counts])
    sys_len, ref_len = np.array([c.sys_len for c in counts]), np.array([c.ref_len for c in counts])
    rng = np.random.default_rng(7)
    scores = []
    for _ in range(1000):
        i = rng.integers(0, len(refs), len(refs))
        scores.append(sacrebleu.BLEU.compute_bleu(correct[i].sum(0).tolist(), total[i].sum(0).tolist(),
                                                  int(sys_len[i].sum()), int(ref_len[i].sum())).score)
    hand_low, hand_high = np.percentile(scores, [2.5, 97.5])
    half = (hand_high - hand_low) / 2
    assert abs(intervals["bleu_ci_low"] - hand_low) < 0.15 * half
    assert abs(intervals["bleu_ci_high"] - hand_high) < 0.15 * half
    with pytest.raises(ValueError, match="2 translations for 3 references"):
        translation_intervals(["a", "b"], ["a", "b", "c"])


def test_paired_loss_p_value_tells_a_clearly_better_system_and_not_two_draws_of_one():
    nll, tokens = pairs(300)
    rng = np.random.default_rng(1)
    better = nll * 0.8 * rng.gamma(50.0, 1 / 50, len(nll))  # 20% lower on every pair, a little noise
    assert paired_loss_p_value(nll, better, tokens) == pytest.approx(1 / 1001)
    assert paired_loss_p_value(nll, nll, tokens) == 1.0
    # Two systems of the same quality, each with its own per-pair noise: rarely told apart.
    small = [paired_loss_p_value(*(tokens * 0.5 * np.random.default_rng(2 * s + k).gamma(4.0, 0.25, 300)
                                   for k in (0, 1)), tokens, resamples=500) < 0.05 for s in range(60)]
    assert sum(small) <= 8  # about 3 expected at the 5% level
    with pytest.raises(ValueError, match="pairs differ"):
        paired_loss_p_value(nll, nll[:-1], tokens)


def test_paired_translation_p_values_by_sacrebleus_paired_bootstrap():
    refs = references(150)
    best = trial_files(0.1, 0.15, refs, seed=1)["translations"]
    worse = trial_files(0.1, 0.45, refs, seed=2)["translations"]
    (p_worse,) = paired_translation_p_values(best, [worse], refs)
    assert p_worse["bleu"] < 0.01 and p_worse["chrf"] < 0.01
    # Systems of one quality, each with its own errors: seldom told apart (sacrebleu's p stays below ~0.5).
    same = [trial_files(0.1, 0.15, refs, seed=100 + s)["translations"] for s in range(12)]
    nulls = paired_translation_p_values(same[0], same[1:], refs)
    for column in ("bleu", "chrf"):
        assert sum(p[column] < 0.05 for p in nulls) <= 3 and max(p[column] for p in nulls) > 0.2
    assert paired_translation_p_values(best, [], refs) == []
    # Identical translations, or two systems that both score 0, differ by nothing (sacrebleu alone says p < 0.001).
    assert paired_translation_p_values(best, [list(best)], refs) == [{"bleu": 1.0, "chrf": 1.0}]
    assert paired_translation_p_values(["x"] * 150, [["y"] * 150], refs) == [{"bleu": 1.0, "chrf": 1.0}]


def test_seed_spread_is_numpys_mean_and_std_with_a_t_interval():
    values = [0.110, 0.159, 0.119]
    spread = seed_spread(values)
    assert spread.n == 3 and spread.mean == pytest.approx(np.mean(values))
    assert spread.std == pytest.approx(np.std(values, ddof=1))
    half = 4.302652729911275 * np.std(values, ddof=1) / math.sqrt(3)  # t(0.975, 2 df), from a printed table
    assert (spread.ci_low, spread.ci_high) == pytest.approx((np.mean(values) - half, np.mean(values) + half))
    one = seed_spread([0.12, None])
    assert (one.n, one.mean, one.std, one.ci_low) == (1, 0.12, None, None)
    assert seed_spread([]) is None


def test_welch_p_value_against_a_hand_computed_t_statistic():
    a, b = np.array([0.110, 0.159, 0.119]), np.array([0.190, 0.210, 0.201, 0.185])
    va, vb = a.var(ddof=1) / len(a), b.var(ddof=1) / len(b)
    t = (a.mean() - b.mean()) / math.sqrt(va + vb)
    df = (va + vb) ** 2 / (va**2 / (len(a) - 1) + vb**2 / (len(b) - 1))  # Welch-Satterthwaite
    assert welch_p_value(a, b) == pytest.approx(2 * stats.t.sf(abs(t), df))
    assert welch_p_value([0.1], [0.2, 0.3]) is None
    assert welch_p_value([0.1, 0.1], [0.1, 0.1]) is None  # nothing varies: no test


def test_fit_power_law_is_linregress_with_a_t_interval():
    xs, ys = [1, 2, 4, 8, 16], [3.1, 2.0, 1.6, 1.0, 0.8]
    fit = fit_power_law(xs, ys)
    reference = stats.linregress(np.log(xs), np.log(ys))
    assert fit.exponent == pytest.approx(reference.slope) and fit.r_squared == pytest.approx(reference.rvalue**2)
    half = stats.t.ppf(0.975, len(xs) - 2) * reference.stderr
    assert (fit.ci_low, fit.ci_high) == pytest.approx((reference.slope - half, reference.slope + half))
    assert fit.points == 5
    assert fit_power_law([1, 4, 16], [3, 1.5, 0.75]).exponent == pytest.approx(-0.5)
    two = fit_power_law([2, 4], [1.0, 0.5])
    assert two.exponent == pytest.approx(-1.0) and two.ci_low is None and "no CI" in two.ci_text()
    assert fit_power_law([4, 4], [1, 2]) is None and fit_power_law([0, -1], [1, 2]) is None
    assert fit_power_law([2, 4, 8], [5, 5, 5]).exponent == pytest.approx(0.0)


def test_fit_power_law_interval_covers_the_true_exponent_and_excludes_a_wrong_one():
    rng = np.random.default_rng(0)
    xs = np.repeat([1, 2, 4, 8, 16], 3)  # three seeds a point
    covered = 0
    for _ in range(200):
        ys = 3 * xs**-0.5 * np.exp(rng.normal(0, 0.15, len(xs)))
        fit = fit_power_law(xs, ys)
        covered += fit.covers(-0.5)
    assert 180 <= covered <= 199
    fit = fit_power_law(xs, 3 * xs**-0.2 * np.exp(rng.normal(0, 0.05, len(xs))))
    assert not fit.covers(-1.0) and -0.3 < fit.ci_low < fit.ci_high < -0.1


def test_fit_power_law_pools_series_with_their_own_constants():
    xs = [8, 16, 32, 64] * 2
    ys = [100 * x**-0.3 for x in xs[:4]] + [900 * x**-0.3 for x in xs[4:]]
    groups = ["rank 4"] * 4 + ["rank 16"] * 4
    pooled = fit_power_law(xs, ys, groups=groups)
    assert pooled.exponent == pytest.approx(-0.3) and pooled.r_squared == pytest.approx(1.0)
    noisy = [y * f for y, f in zip(ys, [1.05, 0.95, 1.02, 0.98, 0.97, 1.03, 1.0, 1.01])]
    fit = fit_power_law(xs, noisy, groups=groups)
    # n - 1 - groups = 5 degrees of freedom.
    x, y = np.log(xs), np.log(noisy)
    for g in (slice(0, 4), slice(4, 8)):
        x[g], y[g] = x[g] - x[g].mean(), y[g] - y[g].mean()
    slope = (x @ y) / (x @ x)
    se = math.sqrt(((y - slope * x) ** 2).sum() / 5 / (x @ x))
    assert (fit.ci_low, fit.ci_high) == pytest.approx((slope - stats.t.ppf(0.975, 5) * se,
                                                       slope + stats.t.ppf(0.975, 5) * se))


@pytest.mark.parametrize("p, text", [
    (0.0004, "p < 0.001"), (1 / 1001, "p < 0.001"), (0.0312, "p = 0.031"), (0.0499, "p = 0.049"),
    (0.05, "p = 0.050"), (0.2847, "p = 0.28"), (1.0, "p = 1.00"), (None, "n/a"),
])
def test_format_p(p, text):
    assert format_p(p) == text
