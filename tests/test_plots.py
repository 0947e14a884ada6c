"""The trade-off PNGs: written for completed trials only, valid PNGs, read back as RGBA uint8 arrays, error bars."""

import matplotlib.image
import numpy as np
import pytest
from scipy import stats

from lora_keras.results.configurations import group_configurations
from lora_keras.results.plots import _bars_meaning, _series, write_plots
from conftest import REPORT_ROWS
from study_fixture import TWO_CONFIGS, write_study

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
STEMS = {"loss_vs_rank", "time_vs_batch_size", "val_loss_vs_params", "memory_vs_batch_size"}


ROWS = REPORT_ROWS


def test_write_plots_writes_readable_pngs(tmp_path):
    paths = write_plots(ROWS, tmp_path / "plots")
    assert set(paths) == STEMS
    for stem, path in paths.items():
        assert path == tmp_path / "plots" / f"{stem}.png" and path.is_file()
        assert path.read_bytes()[:8] == PNG_SIGNATURE
        image = matplotlib.image.imread(path)
        assert image.ndim == 3 and image.shape[2] in (3, 4)
        assert 300 <= image.shape[0] <= 2000 and 400 <= image.shape[1] <= 2000
        assert image.std() > 0.01  # something was drawn, not a blank canvas


def test_several_learning_rates_and_numeric_rows_plot(tmp_path):
    numeric = [
        dict(trial_id=f"n{rank}_{lr}", status="COMPLETED", rank=rank, batch_size=16, learning_rate=lr,
             training_time_s=50.0, val_loss=1.0 + lr * 100 / rank, final_loss=0.9, peak_memory_mb=None,
             trainable_params=rank * 500)
        for rank in (4, 16) for lr in (1e-4, 1e-3)
    ]
    paths = write_plots(numeric, tmp_path)
    # No peak memory measured, so that figure is skipped rather than drawn empty.
    assert set(paths) == STEMS - {"memory_vs_batch_size"}
    assert all(path.read_bytes()[:8] == PNG_SIGNATURE for path in paths.values())


def test_no_completed_trials_writes_nothing(tmp_path):
    assert write_plots([ROWS[7]], tmp_path / "empty") == {}
    assert write_plots([], tmp_path / "empty") == {}
    assert not (tmp_path / "empty").exists()


def test_each_point_carries_its_ci_across_seeds_or_its_sampling_ci(tmp_path):
    one = group_configurations(write_study(tmp_path / "one", TWO_CONFIGS, seeds=(0,)))
    (xs, ys, lows, highs), = _series(one, ("batch_size",), "rank", "val_loss").values()
    by_rank = {c.hparams["rank"]: c.trials[0] for c in one}
    assert xs == [4, 16] and lows == [by_rank[x]["val_loss_ci_low"] for x in xs]
    assert highs == [by_rank[x]["val_loss_ci_high"] for x in xs]
    _, _, lows, highs = _series(one, ("rank",), "batch_size", "training_time_s")[(16,)]
    assert lows == highs == [None]  # one seed: time has no sampling CI, so no bar
    assert _bars_meaning(one, sampled=False) == "one seed: no bars"

    rows = write_study(tmp_path / "three", TWO_CONFIGS, seeds=(0, 1, 2))
    three = group_configurations(rows)
    _, ys, lows, highs = _series(three, ("rank",), "batch_size", "training_time_s")[(16,)]
    times = [t["training_time_s"] for t in three[0].trials]
    half = stats.t.ppf(0.975, 2) * np.std(times, ddof=1) / np.sqrt(3)
    assert ys == pytest.approx([np.mean(times)])
    assert (lows[0], highs[0]) == pytest.approx((np.mean(times) - half, np.mean(times) + half))
    assert "95% CI of the mean over seeds" in _bars_meaning(three, sampled=True)
    paths = write_plots(rows, tmp_path / "plots")
    assert set(paths) == STEMS and all(path.read_bytes()[:8] == PNG_SIGNATURE for path in paths.values())
