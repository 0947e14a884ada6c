"""The sweep's trade-off figures as PNGs: loss vs rank, time and memory vs batch size, loss vs parameters.

Every point is a configuration (its trials over seeds) with an error bar: the 95% CI of the mean
over seeds where it has two or more, else the trial's sampling CI (val loss, BLEU); time and
memory have a bar only with repeats.

Example:
```python
paths = write_plots(rows, "logs/sweep")          # {"loss_vs_rank": Path(...), ...}
```
"""

from __future__ import annotations

import os
import pathlib
from collections.abc import Mapping, Sequence

import numpy as np
from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.ticker import NullLocator

from lora_keras.results.configurations import group_configurations
from lora_keras.results.recommend import memory_kind_label, several_learning_rates
from lora_keras.runtime.atomic_files import replace_atomically

FIGURE_SIZE = (8, 4.5)  # wide enough for the legend beside the axes
DPI = 100


def _figure() -> tuple[Figure, Axes]:
    """A figure drawn by Agg, files only: no pyplot, no backend switch, no display on a training box."""
    fig = Figure(figsize=FIGURE_SIZE)
    FigureCanvasAgg(fig)
    return fig, fig.subplots()


def _series(configs: list, group_columns: Sequence[str], x_column: str, y_column: str) -> dict:
    """`{group: (xs, ys, lows, highs)}` sorted by x: each configuration's mean and CI (`Configuration.interval`).

    Configurations sharing a point (e.g. other lora_alpha) are averaged, their bar spanning all
    their intervals; a point without a CI has None for its ends.
    """
    grouped = {}
    for config in configs:
        mean, low, high = config.interval(y_column)
        if mean is None or any(config.hparams.get(c) is None for c in (*group_columns, x_column)):
            continue
        key = tuple(config.hparams[c] for c in group_columns)
        grouped.setdefault(key, {}).setdefault(config.hparams[x_column], []).append((mean, low, high))
    series = {}
    for key, by_x in sorted(grouped.items()):
        xs = sorted(by_x)
        ys = [float(np.mean([m for m, _, _ in by_x[x]])) for x in xs]
        lows = [None if any(lo is None for _, lo, _ in by_x[x]) else min(lo for _, lo, _ in by_x[x]) for x in xs]
        highs = [None if any(hi is None for _, _, hi in by_x[x]) else max(hi for _, _, hi in by_x[x]) for x in xs]
        series[key] = (xs, ys, lows, highs)
    return series


def _error_bars(ax: Axes, xs, ys, lows, highs, color, **kwargs) -> int:
    """Vertical bars from each low to high (points without a CI get none); how many were drawn."""
    kept = [(x, y, lo, hi) for x, y, lo, hi in zip(xs, ys, lows, highs) if lo is not None and hi is not None]
    if kept:
        x, y, lo, hi = (np.array(v, dtype=float) for v in zip(*kept))
        # A CI from resampling need not hold the point itself; the bar still shows the CI as it is.
        ax.errorbar(x, y, yerr=[np.maximum(y - lo, 0), np.maximum(hi - y, 0)], fmt="none", ecolor=color,
                    capsize=3, alpha=0.8, **kwargs)
    return len(kept)


def _bars_meaning(configs: list, sampled: bool) -> str:
    """What the figure's error bars are, for its title."""
    repeated = [c.n >= 2 for c in configs]
    if all(repeated):
        return "bars: 95% CI of the mean over seeds"
    if any(repeated):
        return "bars: 95% CI of the mean over seeds; one-seed points: " + ("sampling CI" if sampled else "none")
    return "bars: 95% sampling CI over validation pairs (one seed)" if sampled else "one seed: no bars"


def _log2_axis(ax: Axes, values: list) -> None:
    """Log2 x axis labelled exactly at the swept values (ranks and batch sizes are powers of two)."""
    ax.set_xscale("log", base=2)
    ticks = sorted(set(values))
    ax.set_xticks(ticks)
    ax.set_xticklabels([f"{t:g}" for t in ticks])
    ax.xaxis.set_minor_locator(NullLocator())


def _legend_outside(ax: Axes, **kwargs) -> None:
    """Legend to the right of the axes: with many series it would otherwise cover the lines."""
    ax.legend(fontsize="small", loc="center left", bbox_to_anchor=(1.01, 0.5), **kwargs)


def _save(fig: Figure, ax: Axes, title: str, path: pathlib.Path) -> pathlib.Path:
    ax.set_title(title)
    ax.grid(True, alpha=0.3)
    fig.tight_layout()
    with replace_atomically(path) as temporary:
        fig.savefig(temporary, dpi=DPI, format=path.suffix.lstrip("."))
    return path


def _plot_loss_vs_rank(configs: list, path: pathlib.Path) -> pathlib.Path | None:
    several_rates = several_learning_rates([c.hparams for c in configs])
    group_columns = ("batch_size", "learning_rate") if several_rates else ("batch_size",)
    val = _series(configs, group_columns, "rank", "val_loss")
    final = _series(configs, group_columns, "rank", "final_loss")
    if not val and not final:
        return None
    fig, ax = _figure()
    handles = []
    for index, key in enumerate(sorted(set(val) | set(final))):
        color = f"C{index % 10}"
        label = f"batch {key[0]}" + (f", lr {key[1]:g}" if several_rates else "")
        if key in val:
            ax.plot(*val[key][:2], "o-", color=color)
            _error_bars(ax, *val[key], color)
        if key in final:
            ax.plot(*final[key][:2], "s--", color=color, alpha=0.7)
            _error_bars(ax, *final[key], color)
        handles.append(Line2D([], [], color=color, marker="o", label=label))
    # Line style means the same for every colour, so explain it once rather than per series.
    handles += [
        Line2D([], [], color="black", linestyle="-", label="val loss (solid)"),
        Line2D([], [], color="black", linestyle="--", label="final training loss (dashed)"),
    ]
    _log2_axis(ax, [x for xs, *_ in (*val.values(), *final.values()) for x in xs])
    ax.set_xlabel("LoRA rank r (log2 scale)")
    ax.set_ylabel("loss (cross-entropy, nats/token)")
    _legend_outside(ax, handles=handles)
    return _save(fig, ax, f"Loss vs LoRA rank\n({_bars_meaning(configs, sampled=True)})", path)


def _plot_per_rank_vs_batch(
    configs: list, y_column: str, y_label: str, title: str, path: pathlib.Path
) -> pathlib.Path | None:
    series = _series(configs, ("rank",), "batch_size", y_column)
    if not series:
        return None
    fig, ax = _figure()
    for index, ((rank,), (xs, ys, lows, highs)) in enumerate(series.items()):
        color = f"C{index % 10}"
        ax.plot(xs, ys, "o-", color=color, label=f"rank {rank}")
        _error_bars(ax, xs, ys, lows, highs, color)
    _log2_axis(ax, [x for xs, *_ in series.values() for x in xs])
    ax.set_xlabel("batch size (log2 scale)")
    ax.set_ylabel(y_label)
    _legend_outside(ax)
    return _save(fig, ax, f"{title}\n({_bars_meaning(configs, sampled=False)})", path)


def _plot_loss_vs_params(configs: list, path: pathlib.Path) -> pathlib.Path | None:
    points = [c for c in configs if c.hparams.get("rank") is not None and c.mean("trainable_params")]
    if not points:
        return None
    several_rates = several_learning_rates([c.hparams for c in points])
    fig, ax = _figure()
    params = [c.mean("trainable_params") for c in points]
    losses = [c.interval("val_loss") for c in points]
    ax.scatter(params, [m for m, _, _ in losses], color="C0", zorder=3)
    _error_bars(ax, params, *zip(*losses), "C0")
    for config, x, (y, _, _) in zip(points, params, losses):
        label = f"r={config.hparams['rank']} b={config.hparams['batch_size']}"
        if several_rates and config.hparams.get("learning_rate") is not None:
            label += f" lr={config.hparams['learning_rate']:g}"
        ax.annotate(label, (x, y), textcoords="offset points", xytext=(4, 4), fontsize=7)
    ax.set_xscale("log")
    ax.set_xlabel("trainable LoRA parameters (log scale)")
    ax.set_ylabel("val loss (cross-entropy, nats/token)")
    return _save(fig, ax, f"Val loss vs trainable parameters\n({_bars_meaning(points, sampled=True)})", path)


def write_plots(rows: Sequence[Mapping], directory: str | os.PathLike) -> dict[str, pathlib.Path]:
    """Write the sweep's PNG figures into `directory`.

    A figure whose measurement no completed trial has is skipped. Each point is a configuration
    with its 95% CI as an error bar (module docstring).

    Args:
        rows: the trials' rows, as `results.csv` holds them (typed or text).
        directory: where to write; created if missing.

    Returns:
        `{file stem: path}`; `{}` without completed trials.

    Example:
    ```python
    write_plots(read_results_csv("logs/sweep/results.csv"), "logs/sweep")["loss_vs_rank"]
    ```
    """
    configs = group_configurations(rows)
    if not configs:
        return {}
    directory = pathlib.Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    memory_label = memory_kind_label(trial for config in configs for trial in config.trials)
    written = {
        "loss_vs_rank": _plot_loss_vs_rank(configs, directory / "loss_vs_rank.png"),
        "time_vs_batch_size": _plot_per_rank_vs_batch(
            configs, "training_time_s", "training time (s)", "Training time vs batch size",
            directory / "time_vs_batch_size.png",
        ),
        "val_loss_vs_params": _plot_loss_vs_params(configs, directory / "val_loss_vs_params.png"),
        "memory_vs_batch_size": _plot_per_rank_vs_batch(
            configs, "peak_memory_mb", f"{memory_label} memory (MiB)", "Peak memory vs batch size",
            directory / "memory_vs_batch_size.png",
        ),
    }
    return {stem: path for stem, path in written.items() if path is not None}
