"""Tiny shared helper: write scalars to an optional TensorBoard writer."""

from __future__ import annotations

from collections.abc import Mapping

import tensorflow as tf


def write_scalars(writer: tf.summary.SummaryWriter | None, scalars: Mapping[str, float | None], step: int) -> None:
    """Write `{tag: value}` at `step` with `writer`; no-op if it is None.

    Values that are None are skipped (e.g. `val_loss` without validation).

    Example:
    ``python
    write_scalars(writer, {"val_loss": 1.9, "val_perplexity": None}, step=0)
    ``
    """
    if writer is None:
        return
    with writer.as_default():
        for tag, value in scalars.items():
            if value is not None:
                tf.summary.scalar(tag, float(value), step=int(step))


def flush(writer: tf.summary.SummaryWriter | None) -> None:
    """Flush `writer`; no-op if it is None."""
    if writer is not None:
        writer.flush()
