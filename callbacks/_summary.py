"""Tiny shared helper: write scalars to an optional TensorBoard writer."""

import tensorflow as tf


def write_scalars(writer, scalars, step):
    """Write ``{tag: value}`` at ``step`` with ``writer``; no-op if it is None.

    Values that are None are skipped (e.g. ``val_loss`` without validation).
    """
    if writer is None:
        return
    with writer.as_default():
        for tag, value in scalars.items():
            if value is not None:
                tf.summary.scalar(tag, float(value), step=int(step))


def flush(writer):
    if writer is not None:
        writer.flush()
