"""Pareto front, power-law fits against the folk laws, budget and scenario picks, recommendations.md."""

import pytest

from lora_keras.results.recommend import (
    best_within,
    completed_trials,
    fit_power_law,
    measured_trends,
    pareto_front,
    recommendations_markdown,
    scenario_picks,
    write_recommendations,
)
from conftest import REPORT_ROWS


ROWS = REPORT_ROWS


def ids(trials):
    return [t["trial_id"] for t in trials]


def grid(time_of, loss_of=lambda rank, batch: 2.0 / rank, ranks=(4, 16), batches=(8, 16, 32, 64)):
    """Numeric rows (as from the live sweep) of a rank x batch grid with given time and loss laws."""
    return [
        dict(
            trial_id=f"g{rank}_{batch}", status="COMPLETED", rank=rank, batch_size=batch, learning_rate=1e-3,
            training_time_s=time_of(rank, batch), val_loss=loss_of(rank, batch), peak_memory_mb=500.0 + 10 * batch,
            memory_kind="host_rss",
        )
        for rank in ranks
        for batch in batches
    ]


def test_completed_trials_parse_numbers_and_drop_unfinished():
    trials = completed_trials(ROWS)
    assert ids(trials) == ["t00", "t01", "t02", "t03", "t04", "t05", "t06", "t08"]
    first = trials[0]
    assert first["rank"] == 2 and isinstance(first["rank"], int)
    assert first["val_loss"] == pytest.approx(2.10) and isinstance(first["val_loss"], float)
    assert first["memory_kind"] == "gpu" and first["chrf"] is None
    assert trials[-1]["val_loss"] is None
    assert completed_trials([{"status": "COMPLETED", "val_loss": "nan"}])[0]["val_loss"] is None
    assert ROWS[0]["rank"] == "2"  # the input rows are left as they were


def test_pareto_front_matches_hand_computed_set():
    assert ids(pareto_front(ROWS)) == ["t04", "t02", "t03", "t00", "t01"]
    # Over loss and time alone, t00 (2.10, 100) now falls to t03 (2.00, 85); the others stay.
    assert ids(pareto_front(ROWS, objectives=("val_loss", "training_time_s"))) == ["t04", "t02", "t03", "t01"]


def test_fit_power_law_recovers_exponent():
    xs = [1, 2, 4, 8, 16]
    exponent, r_squared = fit_power_law(xs, [3 * x**-0.5 for x in xs])
    assert exponent == pytest.approx(-0.5)
    assert r_squared == pytest.approx(1.0)
    assert fit_power_law([4, 4, 4], [1, 2, 3]) == (None, None)
    assert fit_power_law([4], [1]) == (None, None)
    assert fit_power_law([2, 4, 8], [5, 5, 5]) == (pytest.approx(0.0), 1.0)


def test_trends_contradict_folk_time_law_when_time_barely_falls():
    trends = measured_trends(grid(lambda rank, batch: 100 * batch**-0.2))
    time_sentences = [s for s in trends if s.startswith("Training time vs batch size at rank")]
    assert len(time_sentences) == 2
    for sentence in time_sentences:
        assert "batch^-0.20 (R² 1.00)" in sentence
        assert "contradicts" in sentence and "larger batches help far less than 1/batch" in sentence
    assert any(s.startswith("Pooled over 2 ranks") and "-0.20" in s and "contradicts" in s for s in trends)


def test_trends_agree_with_folk_laws_when_time_is_c_over_batch():
    trends = measured_trends(grid(lambda rank, batch: 800.0 / batch, loss_of=lambda rank, batch: 2.0 / rank))
    time_sentences = [s for s in trends if s.startswith("Training time")]
    loss_sentences = [s for s in trends if s.startswith("Val loss vs rank")]
    assert time_sentences and all("batch^-1.00" in s and "agrees" in s for s in time_sentences)
    assert len(loss_sentences) == 4 and all("rank^-1.00" in s and "agrees" in s for s in loss_sentences)
    memory = [s for s in trends if s.startswith("Peak memory (host RSS peak) vs batch size")]
    assert len(memory) == 1


def test_trends_flag_flat_loss_and_poor_fits_and_skip_single_x():
    flat_loss = measured_trends(grid(lambda r, b: 800.0 / b, loss_of=lambda rank, batch: 2.0 * rank**-0.05))
    assert any("rank^-0.05" in s and "contradicts" in s and "far less than 1/rank" in s for s in flat_loss)
    noisy = {8: 50.0, 16: 90.0, 32: 40.0, 64: 80.0}
    poor = measured_trends(grid(lambda r, b: noisy[b], ranks=(4,)))
    assert any(s.startswith("Training time") and "no power law describes it" in s for s in poor)
    one_batch = measured_trends(grid(lambda r, b: 10.0, batches=(8,)))
    assert not any(s.startswith(("Training time", "Peak memory")) for s in one_batch)
    assert measured_trends([]) == []


def test_best_within_respects_budgets():
    assert best_within(ROWS)["trial_id"] == "t04"
    assert best_within(ROWS, memory_budget_mb=1000)["trial_id"] == "t02"
    assert best_within(ROWS, time_budget_s=90)["trial_id"] == "t03"
    assert best_within(ROWS, memory_budget_mb=1000, time_budget_s=100)["trial_id"] == "t00"
    assert best_within(ROWS, memory_budget_mb=500) is None


def test_scenario_picks_use_measured_spread():
    picks = {name: (why, pick) for name, why, pick in scenario_picks(ROWS)}
    # Memory 900-1800 MiB (t08's 100 MiB has no val loss): lowest third <= 1200 -> t00, t02, t06 -> t02.
    why, pick = picks["small GPU / tight memory"]
    assert pick["trial_id"] == "t02" and "1200 MiB" in why and "900-1800 MiB" in why
    # Times 80 85 90 100 105 110 130: median 100 s -> t00, t01, t03, t05 -> t03.
    why, pick = picks["balanced"]
    assert pick["trial_id"] == "t03" and "100 s" in why
    assert picks["high performance"][1]["trial_id"] == "t04"
    assert [name for name, _, _ in scenario_picks([])] == ["small GPU / tight memory", "balanced", "high performance"]
    assert all(pick is None for _, _, pick in scenario_picks([]))


def test_recommendations_markdown_sections_and_picks():
    text = recommendations_markdown(ROWS, memory_budget_mb=1000, baseline={"val_loss": 3.6, "bleu": 2.0})
    for title in ("## Your budget", "## Scenarios", "## Pareto front", "## Measured trends", "## Against the unadapted base model"):
        assert title in text
    assert "Best trial within peak memory <= 1000 MiB: t02 (rank 8, batch size 8, learning rate 0.001): val loss 1.900," in text
    assert "| small GPU / tight memory | t02 | 8 | 8 | 0.001 | 1.900 | 21.0 | 110 | 950 |" in text
    assert "| balanced | t03 | 8 | 32 | 0.001 | 2.000 | 20.0 | 85.0 | 1600 |" in text
    assert "| high performance | t04 | 32 | 8 | 0.001 | 1.800 | 22.0 | 130 | 1300 |" in text
    pareto = text.split("## Pareto front")[1].split("## Measured trends")[0]
    assert [line.split(" | ")[0].strip("| ") for line in pareto.splitlines() if line.startswith("| t0")] == [
        "t04", "t02", "t03", "t00", "t01",
    ]
    assert "Best trial t04 reaches val loss 1.800 against 3.600 for the unadapted base model (-50.0%); BLEU 22.0 against 2.0." in text
    assert "## Your budget" not in recommendations_markdown(ROWS)


def test_recommendations_say_plainly_when_no_trial_fits(tmp_path):
    text = recommendations_markdown(ROWS, memory_budget_mb=500, time_budget_s=50)
    assert (
        "No trial fits peak memory <= 500 MiB and training time <= 50.0 s. The smallest budget any trial needed: "
        "at least 900 MiB of peak memory (trial t00) or at least 80.0 s of training time (trial t01)."
    ) in text
    path = write_recommendations(tmp_path / "recommendations.md", ROWS, time_budget_s=50)
    assert "No trial fits training time <= 50.0 s." in path.read_text()
    assert "nothing to recommend" in recommendations_markdown([ROWS[7]])
