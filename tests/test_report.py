"""results.md, summary.csv and their rebuild, on synthetic studies of two configurations (1 and 3 seeds).

Every number is checked against a computation made here from the rows or the validation files:
numpy's mean and std, a t quantile from a printed table, the paired bootstrap on the files,
sacrebleu's PairedTest, scipy's Welch test.
"""

import csv
import json
import math

import numpy as np
import pytest
import sacrebleu
from sacrebleu.significance import PairedTest
from scipy import stats

from lora_keras.results.configurations import Comparisons, group_configurations
from lora_keras.results.report import rebuild_reports, write_reports
from lora_keras.results.stats import format_p, paired_loss_p_value
from lora_keras.results.rows import typed_rows
from lora_keras.results.table import results_table
from study_fixture import TWO_CONFIGS, write_study

T_975_2DF = 4.302652729911275  # t distribution's 97.5th percentile at 2 degrees of freedom
FIGURES = ("val_loss", "bleu", "chrf", "training_time_s", "tokens_per_s", "peak_memory_mb")


def summary(run_dir):
    with open(run_dir / "summary.csv", newline="") as handle:
        return {int(row["rank"]): row for row in csv.DictReader(handle)}


def files(run_dir, trial_id):
    return json.loads((run_dir / "validation" / f"trial_{trial_id}.json").read_text())


@pytest.fixture(scope="module")
def three_seeds(tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("three")
    rows = write_study(run_dir, TWO_CONFIGS, seeds=(0, 1, 2))
    write_reports(run_dir, rows)
    return run_dir, rows


@pytest.fixture(scope="module")
def one_seed(tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("one")
    rows = write_study(run_dir, TWO_CONFIGS, seeds=(0,))
    write_reports(run_dir, rows)
    return run_dir, rows


def test_results_table_shows_cis_and_a_seed_column_only_when_seeds_differ(one_seed, three_seeds):
    _, rows = three_seeds
    lines = results_table(rows).splitlines()
    assert lines[0].startswith("| rank | batch size | seed | time (s) |")
    first = rows[0]
    assert (f"| {first['val_loss']:.4g} [{first['val_loss_ci_low']:.4g}, {first['val_loss_ci_high']:.4g}] | "
            f"{first['bleu']:.4g} [{first['bleu_ci_low']:.4g}, {first['bleu_ci_high']:.4g}] |") in lines[2]
    assert "seed" not in results_table(one_seed[1]).splitlines()[0]
    # Rows without CIs (runs from before them, or rows read as text) show the figure alone.
    assert "| 0.5 | 20 |" in results_table([{"rank": 4, "val_loss": 0.5, "bleu": 20.0, "val_loss_ci_low": "",
                                              "val_loss_ci_high": ""}])
    assert typed_rows([{"seed": "3", "val_loss_ci_low": "0.1"}]) == [{"seed": 3, "val_loss_ci_low": 0.1}]


def test_summary_csv_is_numpys_mean_std_and_t_interval_over_the_seeds(three_seeds):
    run_dir, rows = three_seeds
    table = summary(run_dir)
    assert set(table) == {16, 4}
    for rank, row in table.items():
        trials = [r for r in rows if r["rank"] == rank]
        assert row["n"] == "3" and row["seeds"] == "0 1 2"
        assert row["trial_ids"] == " ".join(r["trial_id"] for r in trials)
        assert (row["batch_size"], row["learning_rate"], row["epochs"]) == ("8", "0.001", "3")
        for figure in FIGURES:
            values = np.array([r[figure] for r in trials])
            mean, std = values.mean(), values.std(ddof=1)
            half = T_975_2DF * std / math.sqrt(3)
            assert float(row[f"{figure}_mean"]) == pytest.approx(mean, rel=1e-9)
            assert float(row[f"{figure}_std"]) == pytest.approx(std, rel=1e-9)
            assert float(row[f"{figure}_ci_low"]) == pytest.approx(mean - half, rel=1e-9)
            assert float(row[f"{figure}_ci_high"]) == pytest.approx(mean + half, rel=1e-9)


def test_summary_csv_with_one_seed_gives_the_sampling_ci_and_no_std(one_seed):
    run_dir, rows = one_seed
    for rank, row in summary(run_dir).items():
        (trial,) = [r for r in rows if r["rank"] == rank]
        assert row["n"] == "1"
        for figure in ("val_loss", "bleu", "chrf"):
            assert float(row[f"{figure}_mean"]) == pytest.approx(trial[figure])
            assert row[f"{figure}_std"] == ""
            assert float(row[f"{figure}_ci_low"]) == pytest.approx(trial[f"{figure}_ci_low"])
            assert float(row[f"{figure}_ci_high"]) == pytest.approx(trial[f"{figure}_ci_high"])
        assert row["training_time_s_std"] == row["training_time_s_ci_low"] == row["peak_memory_mb_ci_high"] == ""


def test_one_seed_results_md_has_paired_tests_on_the_validation_pairs(one_seed):
    run_dir, rows = one_seed
    text = (run_dir / "results.md").read_text()
    best, other = (next(r for r in rows if r["rank"] == rank) for rank in (16, 4))
    best_files, other_files = files(run_dir, best["trial_id"]), files(run_dir, other["trial_id"])
    loss_p = paired_loss_p_value(best_files["nll"], other_files["nll"], best_files["tokens"])
    refs = json.loads((run_dir / "validation" / "references.json").read_text())["references"]
    _, scores = PairedTest([("best", best_files["translations"]), ("other", other_files["translations"])],
                           {"BLEU": sacrebleu.BLEU(force=True), "chrF": sacrebleu.CHRF()}, [refs], test_type="bs",
                           n_samples=1000)()
    row = next(line for line in text.splitlines() if line.startswith("| rank 4 / batch 8 | 1 |"))
    assert row.endswith(f"| {format_p(loss_p)} | {format_p(scores['BLEU'][1].p_value)} | "
                        f"{format_p(scores['chrF2'][1].p_value)} |")
    assert "paired bootstrap on the same validation pairs" in text
    assert loss_p < 0.05  # rank 4's loss is a third higher on the same pairs
    assert f"Every other configuration is worse in val loss (p < 0.05): rank 4 / batch 8 ({format_p(loss_p)})." in text
    assert "A CI here is a 95% confidence interval." in text
    assert (f"Best trial: {best['trial_id']} (rank 16, batch size 8, learning rate 0.001): val loss "
            f"{best['val_loss']:.4g} [{best['val_loss_ci_low']:.4g}, {best['val_loss_ci_high']:.4g}]") in text
    assert "one draw per configuration the figure's own spread is unknown" in text


def test_a_rewrite_reuses_the_paired_tests_of_the_same_files_and_not_of_rewritten_ones(tmp_path, monkeypatch):
    """The tables are rewritten after every trial: sacrebleu's paired tests run once per pair of files."""
    import lora_keras.results.configurations as configurations

    calls = []
    tested = configurations.paired_translation_p_values
    monkeypatch.setattr(configurations, "paired_translation_p_values",
                        lambda best, others, refs: calls.append(len(others)) or tested(best, others, refs))
    rows = write_study(tmp_path, TWO_CONFIGS, seeds=(0,))
    texts = []
    for _ in range(2):
        write_reports(tmp_path, rows)
        texts.append((tmp_path / "results.md").read_text())
    assert calls == [1] and texts[0] == texts[1]
    rows = write_study(tmp_path, TWO_CONFIGS, seeds=(0,), seed_noise=0.2)  # the same paths written anew
    write_reports(tmp_path, rows)
    assert calls == [1, 1]


def test_three_seed_results_md_tests_the_repeats_by_welch(three_seeds):
    run_dir, rows = three_seeds
    text = (run_dir / "results.md").read_text()
    values = {rank: {f: [r[f] for r in rows if r["rank"] == rank] for f in ("val_loss", "bleu", "chrf")}
              for rank in (16, 4)}
    p = {f: stats.ttest_ind(values[16][f], values[4][f], equal_var=False).pvalue for f in ("val_loss", "bleu", "chrf")}
    row = next(line for line in text.splitlines() if line.startswith("| rank 4 / batch 8 | 3 |"))
    assert row.endswith(f"| {format_p(p['val_loss'])} | {format_p(p['bleu'])} | {format_p(p['chrf'])} |")
    assert "Welch's t-test on the per-seed figures (3 seeds at most)" in text
    mean = np.mean(values[16]["val_loss"])
    assert f"Best configuration (lowest val loss, mean over 3 seeds): rank 16 / batch 8, val loss {mean:.4g} [" in text
    # Three seeds apart by 8% each: the difference is not shown, and rank 4 is named beside the best.
    assert p["val_loss"] >= 0.05
    assert f"Indistinguishable from it in val loss (p >= 0.05): rank 4 / batch 8 ({format_p(p['val_loss'])})." in text
    recommendations = (run_dir / "recommendations.md").read_text()
    assert f"rank 4 / batch 8 ({format_p(p['val_loss'])})" in recommendations
    assert "indistinguishable in val loss from rank 16 / batch 8 there: rank 4 / batch 8" in recommendations


def test_a_one_seed_configuration_is_paired_with_the_same_seed_of_a_repeated_one(tmp_path):
    rows = write_study(tmp_path / "run", TWO_CONFIGS, seeds=(0, 1, 2))
    rows = [r for r in rows if r["rank"] == 16 or r["seed"] == 1]  # rank 4 kept at seed 1 only
    tests = Comparisons(group_configurations(rows), tmp_path / "run" / "validation")
    best, other = tests.configs
    difference = tests.loss(best, other)
    seed_1 = next(r for r in best.trials if r["seed"] == 1)
    a, b = files(tmp_path / "run", seed_1["trial_id"]), files(tmp_path / "run", other.trials[0]["trial_id"])
    assert difference.method == "paired bootstrap"
    assert difference.p == paired_loss_p_value(a["nll"], b["nll"], a["tokens"])


def test_without_validation_files_the_tests_fall_back_to_the_cis(tmp_path):
    rows = write_study(tmp_path / "run", TWO_CONFIGS, seeds=(0,), validation=False)
    write_reports(tmp_path / "run", rows)
    text = (tmp_path / "run" / "results.md").read_text()
    assert "no per-pair data: whether the trials' sampling CIs overlap" in text
    best, other = (next(r for r in rows if r["rank"] == rank) for rank in (16, 4))
    cells = []
    for figure in ("val_loss", "bleu", "chrf"):
        apart = (best[f"{figure}_ci_high"] < other[f"{figure}_ci_low"]
                 or other[f"{figure}_ci_high"] < best[f"{figure}_ci_low"])
        cells.append("CIs apart" if apart else "CIs overlap")
    row = next(line for line in text.splitlines() if line.startswith("| rank 4 / batch 8 | 1 |"))
    assert row.endswith("| " + " | ".join(cells) + " |")


def test_rebuild_reports_writes_the_same_files_from_results_csv(three_seeds):
    run_dir, _ = three_seeds
    written = {name: (run_dir / name).read_text() for name in ("results.md", "summary.csv", "recommendations.md")}
    for name in written:
        (run_dir / name).unlink()
    plots = rebuild_reports(run_dir)
    assert {name: (run_dir / name).read_text() for name in written} == written
    assert set(plots) == {"loss_vs_rank", "time_vs_batch_size", "val_loss_vs_params", "memory_vs_batch_size"}
