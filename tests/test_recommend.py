"""Pareto front, power-law fits with CIs against the folk laws, budget and scenario picks with noise, recommendations.md."""

import numpy as np
import pytest

from lora_keras.results.configurations import Comparisons, group_configurations
from lora_keras.results.recommend import (
    best_within,
    completed_trials,
    measured_trends,
    pareto_front,
    recommendations_markdown,
    scenario_picks,
    write_recommendations,
)
from lora_keras.results.stats import welch_p_value
from conftest import REPORT_ROWS
from study_fixture import TWO_CONFIGS, write_study


ROWS = REPORT_ROWS
# REPORT_ROWS' trials as their configurations' labels (one trial each).
LABELS = {"t00": "rank 2 / batch 8", "t01": "rank 2 / batch 32", "t02": "rank 8 / batch 8", "t03": "rank 8 / batch 32",
          "t04": "rank 32 / batch 8", "t05": "rank 32 / batch 32", "t06": "rank 4 / batch 16"}


def labels(configs):
    return [c.label for c in configs]


def comparisons_of(rows, validation_dir=None):
    return Comparisons(group_configurations(rows), validation_dir)


def grid(time_of, loss_of=lambda rank, batch: 2.0 / rank, ranks=(4, 16), batches=(8, 16, 32, 64), seeds=(0,),
         noise=0.0):
    """Numeric rows (as from the live sweep) of a rank x batch grid with given time and loss laws.

    With `noise`, each seed's time and loss are multiplied by exp(normal(0, noise)).
    """
    rng = np.random.default_rng(0)
    return [
        dict(
            trial_id=f"g{rank}_{batch}_{seed}", status="COMPLETED", rank=rank, batch_size=batch, learning_rate=1e-3,
            seed=seed, training_time_s=time_of(rank, batch) * np.exp(rng.normal(0, noise)),
            val_loss=loss_of(rank, batch) * np.exp(rng.normal(0, noise)), peak_memory_mb=500.0 + 10 * batch,
            memory_kind="host_rss",
        )
        for rank in ranks
        for batch in batches
        for seed in seeds
    ]


def test_completed_trials_parse_numbers_and_drop_unfinished():
    trials = completed_trials(ROWS)
    assert [t["trial_id"] for t in trials] == ["t00", "t01", "t02", "t03", "t04", "t05", "t06", "t08"]
    first = trials[0]
    assert first["rank"] == 2 and isinstance(first["rank"], int)
    assert first["val_loss"] == pytest.approx(2.10) and isinstance(first["val_loss"], float)
    assert first["memory_kind"] == "gpu" and first["chrf"] is None
    assert trials[-1]["val_loss"] is None
    assert completed_trials([{"status": "COMPLETED", "val_loss": "nan"}])[0]["val_loss"] is None
    assert ROWS[0]["rank"] == "2"  # the input rows are left as they were


def test_configurations_group_trials_over_seeds():
    configs = group_configurations(grid(lambda r, b: 10.0, ranks=(4,), batches=(8, 16), seeds=(0, 1, 2)))
    assert labels(configs) == ["rank 4 / batch 8", "rank 4 / batch 16"] and [c.n for c in configs] == [3, 3]
    assert configs[0].trial_ids == ["g4_8_0", "g4_8_1", "g4_8_2"]
    # t08 has no val loss and t07 failed: neither is a configuration; alpha = 2 x rank everywhere is no sweep.
    assert labels(group_configurations(ROWS)) == [LABELS[f"t0{i}"] for i in range(7)]
    swept = [dict(ROWS[0], lora_alpha="8"), dict(ROWS[0], trial_id="t99", lora_alpha="4")]
    assert labels(group_configurations(swept)) == ["rank 2 / batch 8 / alpha 8", "rank 2 / batch 8 / alpha 4"]


def test_pareto_front_matches_hand_computed_set_for_points():
    # No repeats, per-pair files or CIs: every difference counts, as the front of point figures.
    tests = comparisons_of(ROWS)
    assert labels(pareto_front(tests)) == [LABELS[t] for t in ("t04", "t02", "t03", "t00", "t01")]
    # Over loss and time alone, t00 (2.10, 100) now falls to t03 (2.00, 85); the others stay.
    assert labels(pareto_front(tests, objectives=("val_loss", "training_time_s"))) == [
        LABELS[t] for t in ("t04", "t02", "t03", "t01")]


def test_pareto_front_ignores_memory_differences_within_noise(tmp_path):
    # Rank 4 is worse (paired test) and slower; its only edge is 5 MiB less host RSS, one draw each: noise.
    configs = [dict(TWO_CONFIGS[0], memory=1325.0, time=19.0), dict(TWO_CONFIGS[1], memory=1320.0, time=20.0)]
    rows = write_study(tmp_path / "rss", configs, seeds=(0,), seed_noise=0.0)
    rows[0]["peak_memory_mb"], rows[1]["peak_memory_mb"] = 1325.0, 1320.0
    assert labels(pareto_front(comparisons_of(rows, tmp_path / "rss" / "validation"))) == ["rank 16 / batch 8"]
    # The same figures from a GPU allocator are no noise: its 5 MiB less keep it on the front.
    for row in rows:
        row["memory_kind"] = "gpu"
    assert labels(pareto_front(comparisons_of(rows, tmp_path / "rss" / "validation"))) == [
        "rank 16 / batch 8", "rank 4 / batch 8"]


def test_trends_contradict_folk_time_law_when_time_barely_falls():
    trends = measured_trends(grid(lambda rank, batch: 100 * batch**-0.2))
    time_sentences = [s for s in trends if s.startswith("Training time vs batch size at rank")]
    assert len(time_sentences) == 2
    for sentence in time_sentences:
        assert "batch^-0.20 (95% CI -0.20 to -0.20, R² 1.00, 4 points)" in sentence
        assert "contradicts" in sentence and "larger batches help far less than 1/batch" in sentence
    assert any(s.startswith("Pooled over 2 ranks") and "-0.20" in s and "contradicts" in s for s in trends)


def test_trends_are_consistent_with_folk_laws_when_time_is_c_over_batch():
    trends = measured_trends(grid(lambda rank, batch: 800.0 / batch, loss_of=lambda rank, batch: 2.0 / rank))
    time_sentences = [s for s in trends if s.startswith("Training time")]
    loss_sentences = [s for s in trends if s.startswith("Val loss vs rank")]
    assert time_sentences and all("batch^-1.00" in s and "consistent" in s for s in time_sentences)
    # Two ranks a series: no CI, no verdict; pooled over the four batch sizes the exponent has one.
    assert len(loss_sentences) == 4 and all("rank^-1.00 (no CI" in s and "no test" in s for s in loss_sentences)
    assert any(s.startswith("Pooled over 4 series") and "consistent" in s for s in trends)
    memory = [s for s in trends if s.startswith("Peak memory (host RSS peak) vs batch size")]
    assert len(memory) == 1


def test_trend_verdicts_read_the_exponents_ci_with_every_seed_a_point():
    ranks = (1, 2, 4, 8, 16)
    noisy = measured_trends(grid(lambda r, b: 10.0, loss_of=lambda rank, batch: 2.0 / rank, ranks=ranks,
                                 batches=(8,), seeds=(0, 1, 2), noise=0.1))
    (sentence,) = [s for s in noisy if s.startswith("Val loss vs rank")]
    assert "15 points" in sentence and "consistent with the folk law" in sentence
    shallow = measured_trends(grid(lambda r, b: 10.0, loss_of=lambda rank, batch: 2.0 * rank**-0.3, ranks=ranks,
                                   batches=(8,), seeds=(0, 1, 2), noise=0.1))
    (sentence,) = [s for s in shallow if s.startswith("Val loss vs rank")]
    assert "contradicts" in sentence and "far less than 1/rank" in sentence
    # Three points off a line: with one degree of freedom the CI holds both -1 and 0.
    few = measured_trends(grid(lambda r, b: 10.0, loss_of=lambda rank, batch: {1: 2.0, 2: 1.3, 4: 1.25}[rank],
                               ranks=(1, 2, 4), batches=(8,)))
    (sentence,) = [s for s in few if s.startswith("Val loss vs rank")]
    assert "cannot tell the folk law" in sentence


def test_trends_flag_flat_loss_and_poor_fits_and_skip_single_x():
    flat_loss = measured_trends(grid(lambda r, b: 800.0 / b, loss_of=lambda rank, batch: 2.0 * rank**-0.05,
                                     ranks=(4, 8, 16)))
    assert any("rank^-0.05" in s and "contradicts" in s and "far less than 1/rank" in s for s in flat_loss)
    noisy = {8: 50.0, 16: 90.0, 32: 40.0, 64: 80.0}
    poor = measured_trends(grid(lambda r, b: noisy[b], ranks=(4,)))
    assert any(s.startswith("Training time") and "no power law describes it" in s for s in poor)
    one_batch = measured_trends(grid(lambda r, b: 10.0, batches=(8,)))
    assert not any(s.startswith(("Training time", "Peak memory")) for s in one_batch)
    assert measured_trends([]) == []


def test_best_within_respects_budgets():
    configs = group_configurations(ROWS)
    assert best_within(configs).label == LABELS["t04"]
    assert best_within(configs, memory_budget_mb=1000).label == LABELS["t02"]
    assert best_within(configs, time_budget_s=90).label == LABELS["t03"]
    assert best_within(configs, memory_budget_mb=1000, time_budget_s=100).label == LABELS["t00"]
    assert best_within(configs, memory_budget_mb=500) is None


def test_scenario_picks_use_measured_spread():
    picks = {pick.scenario: pick for pick in scenario_picks(comparisons_of(ROWS))}
    # Memory 900-1800 MiB (t08's 100 MiB has no val loss): lowest third <= 1200 -> t00, t02, t06 -> t02.
    pick = picks["small GPU / tight memory"]
    assert pick.pick.label == LABELS["t02"] and "1200 MiB" in pick.why() and "900-1800 MiB" in pick.why()
    # Times 80 85 90 100 105 110 130: median 100 s -> t00, t01, t03, t05 -> t03.
    pick = picks["balanced"]
    assert pick.pick.label == LABELS["t03"] and "100 s" in pick.why()
    assert picks["high performance"].pick.label == LABELS["t04"]
    empty = scenario_picks(comparisons_of([]))
    assert [p.scenario for p in empty] == ["small GPU / tight memory", "balanced", "high performance"]
    assert all(p.pick is None for p in empty)


def test_a_budget_picks_the_cheapest_configuration_indistinguishable_from_its_best(tmp_path):
    configs = [
        dict(rank=16, batch_size=8, loss=0.120, error=0.2, time=30.0, memory=1300.0),   # best, slow
        dict(rank=4, batch_size=8, loss=0.123, error=0.2, time=15.0, memory=1300.0),    # as good, half the time
        dict(rank=1, batch_size=8, loss=0.200, error=0.4, time=10.0, memory=1300.0),    # fastest, clearly worse
    ]
    rows = write_study(tmp_path / "run", configs, seeds=(0, 1, 2), seed_noise=0.03)
    text = recommendations_markdown(rows, time_budget_s=100, validation_dir=tmp_path / "run" / "validation")
    budget = text.split("## Your budget")[1].split("## Scenarios")[0]
    assert "Best within training time <= 100 s: rank 16 / batch 8" in budget
    assert "Indistinguishable from it in val loss: rank 4 / batch 8 (p = " in budget
    assert "Recommended: rank 4 / batch 8 (trials 3, 4, 5)" in budget and "the lowest training time of them" in budget
    assert "rank 1 / batch 8" not in budget
    high = next(p for p in scenario_picks(comparisons_of(rows)) if p.scenario == "high performance")
    assert high.pick.label == "rank 16 / batch 8" and labels(high.candidates) == ["rank 16 / batch 8", "rank 4 / batch 8"]


@pytest.mark.parametrize("seeds", [(0,), (0, 1, 2)])
def test_no_memory_pick_from_host_rss_differences_within_noise(tmp_path, seeds):
    same_memory = [dict(c, memory=1320.0) for c in TWO_CONFIGS]
    rows = write_study(tmp_path / "run", same_memory, seeds=seeds)
    validation = tmp_path / "run" / "validation"
    picks = {p.scenario: p for p in scenario_picks(comparisons_of(rows, validation))}
    tight = picks["small GPU / tight memory"]
    assert tight.pick is None and "no memory-based pick" in tight.why()
    text = recommendations_markdown(rows, memory_budget_mb=5000, validation_dir=validation)
    assert "| small GPU / tight memory | none |" in text
    noise = text.split("## Peak memory and its noise")[1].split("##")[0]
    assert "Peak memory here is the host's RSS (`host_rss`)" in noise
    if len(seeds) == 1:
        assert "one draw per configuration the figure's own spread is unknown" in noise
    else:
        spread = np.sqrt(np.mean([np.var([r["peak_memory_mb"] for r in rows if r["rank"] == rank], ddof=1)
                                  for rank in (16, 4)]))
        assert f"a spread over seeds of {spread:.0f} MiB" in noise and "0 of 1 pairs" in noise
    # A GPU allocator's figures are no noise: the tight-memory scenario picks by them.
    for row in rows:
        row["memory_kind"] = "gpu"
    assert next(p for p in scenario_picks(comparisons_of(rows, validation)) if p.scenario.startswith("small")).pick


@pytest.mark.parametrize("gap, picked", [(0.03, False), (0.15, True)])
def test_host_rss_differences_below_the_noise_floor_pick_nothing_even_beyond_the_seeds(tmp_path, gap, picked):
    """Seeds 12 MiB apart cannot tell 3% (40 MiB) apart from the method's own spread; 15% they can."""
    configs = [dict(TWO_CONFIGS[0], memory=1320.0 * (1 + gap)), dict(TWO_CONFIGS[1], memory=1320.0)]
    rows = write_study(tmp_path / "run", configs, seeds=tuple(range(6)))
    tests = comparisons_of(rows, tmp_path / "run" / "validation")
    best, other = tests.best, next(c for c in tests.configs if c is not tests.best)
    assert welch_p_value(best.values("peak_memory_mb"), other.values("peak_memory_mb")) < 0.05  # the seeds alone
    assert bool(tests.cost(best, other, "peak_memory_mb").apart) is picked
    tight = next(p for p in scenario_picks(tests) if p.scenario == "small GPU / tight memory")
    assert (tight.pick is not None and tight.pick.label == other.label) is picked


def test_recommendations_markdown_sections_and_picks():
    text = recommendations_markdown(ROWS, memory_budget_mb=1000, baseline={"val_loss": 3.6, "bleu": 2.0})
    for title in ("## Configurations", "## Your budget", "## Scenarios", "## Pareto front", "## Measured trends",
                  "## Against the unadapted base model"):
        assert title in text
    assert "Best within peak memory <= 1000 MiB: rank 8 / batch 8 (trials t02): val loss 1.9, BLEU 21," in text
    assert "| small GPU / tight memory | rank 8 / batch 8 | 1 | 1.9 | 21 | 110 | 950 |" in text
    assert "| balanced | rank 8 / batch 32 | 1 | 2 | 20 | 85.0 | 1600 |" in text
    assert "| high performance | rank 32 / batch 8 | 1 | 1.8 | 22 | 130 | 1300 |" in text
    assert "no difference can be called noise or real" in text  # no per-pair data, repeats or CIs
    pareto = text.split("## Pareto front")[1].split("## Measured trends")[0]
    assert [line.split(" | ")[0].strip("| ") for line in pareto.splitlines() if line.startswith("| rank")] == [
        LABELS[t] for t in ("t04", "t02", "t03", "t00", "t01")]
    assert ("Best configuration rank 32 / batch 8 reaches val loss 1.800 against 3.600 for the unadapted base model "
            "(-50.0%); BLEU 22.0 against 2.0.") in text
    assert "## Your budget" not in recommendations_markdown(ROWS)


def test_recommendations_say_plainly_when_no_configuration_fits(tmp_path):
    text = recommendations_markdown(ROWS, memory_budget_mb=500, time_budget_s=50)
    assert (
        "No configuration fits peak memory <= 500 MiB and training time <= 50.0 s. The smallest budget any "
        "configuration needed: at least 900 MiB of peak memory (rank 2 / batch 8) or at least 80.0 s of training "
        "time (rank 2 / batch 32)."
    ) in text
    path = write_recommendations(tmp_path / "recommendations.md", ROWS, time_budget_s=50)
    assert "No configuration fits training time <= 50.0 s." in path.read_text()
    assert "nothing to recommend" in recommendations_markdown([ROWS[7]])
