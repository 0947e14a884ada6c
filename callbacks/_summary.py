"""Tiny shared helper: TensorBoard scalars through TensorFlow's writer or, without TensorFlow, TensorBoard's own."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from lora_keras.runtime.backend import uses_tensorflow


def create_writer(logdir: str) -> Any:
    """A summary writer for `logdir`: `tf.summary.create_file_writer` on TensorFlow, else `tensorboard.summary.Writer`.

    Both write event files TensorBoard reads the same way; the second imports no TensorFlow.

    Example:
    ``python
    write_scalars(create_writer("logs/run/trial_0"), {"val_loss": 1.9}, step=0)
    ``
    """
    if uses_tensorflow():
        import tensorflow as tf

        return tf.summary.create_file_writer(logdir)
    from tensorboard.summary import Writer

    return Writer(logdir)


def write_scalars(writer: Any, scalars: Mapping[str, float | None], step: int) -> None:
    """Write `{tag: value}` at `step` with `writer` (either kind `create_writer` makes); no-op if it is None.

    Values that are None are skipped (e.g. `val_loss` without validation).

    Example:
    ``python
    write_scalars(writer, {"val_loss": 1.9, "val_perplexity": None}, step=0)
    ``
    """
    if writer is None:
        return
    if hasattr(writer, "add_scalar"):  # TensorBoard's own writer
        for tag, value in scalars.items():
            if value is not None:
                writer.add_scalar(tag, float(value), int(step))
        return
    import tensorflow as tf

    with writer.as_default():
        for tag, value in scalars.items():
            if value is not None:
                tf.summary.scalar(tag, float(value), step=int(step))


def flush(writer: Any) -> None:
    """Flush `writer`; no-op if it is None."""
    if writer is not None:
        writer.flush()
