"""The sweep's trade-off figures as PNGs: loss vs rank, time and memory vs batch size, loss vs parameters.

Example:
```python
paths = write_plots(rows, "logs/sweep")          # {"loss_vs_rank": Path(...), ...}
images = figure_images(paths)                     # {"loss_vs_rank": uint8 array (H, W, 4), ...}
```
"""

from __future__ import annotations

import os
import pathlib
from collections.abc import Mapping, Sequence

import matplotlib.image
import numpy as np
from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.ticker import NullLocator

from lora_keras.results.recommend import completed_trials, memory_kind_label, several_learning_rates

FIGURE_SIZE = (8, 4.5)  # wide enough for the legend beside the axes
DPI = 100


def _figure() -> tuple[Figure, Axes]:
    """A figure drawn by Agg, files only: no pyplot, no backend switch, no display on a training box."""
    fig = Figure(figsize=FIGURE_SIZE)
    FigureCanvasAgg(fig)
    return fig, fig.subplots()


def _series(trials: list[dict], group_columns: Sequence[str], x_column: str, y_column: str) -> dict:
    """`{group: (xs, ys)}` sorted by x; repeated x values (e.g. other lora_alpha) are averaged."""
    grouped = {}
    for trial in trials:
        if any(trial.get(c) is None for c in (*group_columns, x_column, y_column)):
            continue
        key = tuple(trial[c] for c in group_columns)
        grouped.setdefault(key, {}).setdefault(trial[x_column], []).append(trial[y_column])
    return {
        key: (sorted(by_x), [float(np.mean(by_x[x])) for x in sorted(by_x)])
        for key, by_x in sorted(grouped.items())
    }


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
    fig.savefig(path, dpi=DPI)
    return path


def _plot_loss_vs_rank(trials: list[dict], path: pathlib.Path) -> pathlib.Path | None:
    several_rates = several_learning_rates(trials)
    group_columns = ("batch_size", "learning_rate") if several_rates else ("batch_size",)
    val = _series(trials, group_columns, "rank", "val_loss")
    final = _series(trials, group_columns, "rank", "final_loss")
    if not val and not final:
        return None
    fig, ax = _figure()
    handles = []
    for index, key in enumerate(sorted(set(val) | set(final))):
        color = f"C{index % 10}"
        label = f"batch {key[0]}" + (f", lr {key[1]:g}" if several_rates else "")
        if key in val:
            ax.plot(*val[key], "o-", color=color)
        if key in final:
            ax.plot(*final[key], "s--", color=color, alpha=0.7)
        handles.append(Line2D([], [], color=color, marker="o", label=label))
    # Line style means the same for every colour, so explain it once rather than per series.
    handles += [
        Line2D([], [], color="black", linestyle="-", label="val loss (solid)"),
        Line2D([], [], color="black", linestyle="--", label="final training loss (dashed)"),
    ]
    _log2_axis(ax, [x for xs, _ in (*val.values(), *final.values()) for x in xs])
    ax.set_xlabel("LoRA rank r (log2 scale)")
    ax.set_ylabel("loss (cross-entropy, nats/token)")
    _legend_outside(ax, handles=handles)
    return _save(fig, ax, "Loss vs LoRA rank", path)


def _plot_per_rank_vs_batch(
    trials: list[dict], y_column: str, y_label: str, title: str, path: pathlib.Path
) -> pathlib.Path | None:
    series = _series(trials, ("rank",), "batch_size", y_column)
    if not series:
        return None
    fig, ax = _figure()
    for (rank,), (xs, ys) in series.items():
        ax.plot(xs, ys, "o-", label=f"rank {rank}")
    _log2_axis(ax, [x for xs, _ in series.values() for x in xs])
    ax.set_xlabel("batch size (log2 scale)")
    ax.set_ylabel(y_label)
    _legend_outside(ax)
    return _save(fig, ax, title, path)


def _plot_loss_vs_params(trials: list[dict], path: pathlib.Path) -> pathlib.Path | None:
    points = [t for t in trials if t.get("trainable_params") and t.get("val_loss") is not None]
    if not points:
        return None
    several_rates = several_learning_rates(points)
    fig, ax = _figure()
    ax.scatter([t["trainable_params"] for t in points], [t["val_loss"] for t in points], color="C0", zorder=3)
    for t in points:
        label = f"r={t['rank']} b={t['batch_size']}"
        if several_rates and t.get("learning_rate") is not None:
            label += f" lr={t['learning_rate']:g}"
        ax.annotate(
            label, (t["trainable_params"], t["val_loss"]), textcoords="offset points", xytext=(4, 4), fontsize=7
        )
    ax.set_xscale("log")
    ax.set_xlabel("trainable LoRA parameters (log scale)")
    ax.set_ylabel("val loss (cross-entropy, nats/token)")
    return _save(fig, ax, "Val loss vs trainable parameters", path)


def write_plots(rows: Sequence[Mapping], directory: str | os.PathLike) -> dict[str, pathlib.Path]:
    """Write the sweep's PNG figures into `directory`.

    A figure whose measurement no completed trial has is skipped.

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
    trials = completed_trials(rows)
    if not trials:
        return {}
    directory = pathlib.Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    written = {
        "loss_vs_rank": _plot_loss_vs_rank(trials, directory / "loss_vs_rank.png"),
        "time_vs_batch_size": _plot_per_rank_vs_batch(
            trials, "training_time_s", "training time (s)", "Training time vs batch size",
            directory / "time_vs_batch_size.png",
        ),
        "val_loss_vs_params": _plot_loss_vs_params(trials, directory / "val_loss_vs_params.png"),
        "memory_vs_batch_size": _plot_per_rank_vs_batch(
            trials, "peak_memory_mb", f"{memory_kind_label(trials)} memory (MiB)", "Peak memory vs batch size",
            directory / "memory_vs_batch_size.png",
        ),
    }
    return {stem: path for stem, path in written.items() if path is not None}


def figure_images(paths: Mapping[str, str | os.PathLike]) -> dict[str, np.ndarray]:
    """The PNGs read back as uint8 RGBA arrays `(H, W, 4)`, e.g. for `tf.summary.image(name, image[None])`.

    Args:
        paths: `{name: PNG path}`, as `write_plots` returns them.

    Returns:
        `{name: uint8 array (H, W, 4)}`.

    Example:
    ```python
    figure_images(write_plots(rows, "logs/sweep"))["loss_vs_rank"].shape   # (450, 800, 4)
    ```
    """
    images = {}
    for name, path in paths.items():
        image = matplotlib.image.imread(path)  # PNGs come back as floats in [0, 1]
        if image.shape[-1] == 3:
            image = np.concatenate([image, np.ones(image.shape[:2] + (1,), image.dtype)], axis=-1)
        images[name] = np.round(image * 255).astype(np.uint8)
    return images
