"""TensorBoard scalars, written with TensorBoard's own event writer on every Keras backend (no TensorFlow)."""

from __future__ import annotations

from collections.abc import Mapping

from tensorboard.summary import Writer


def create_writer(logdir: str) -> Writer:
    """A summary writer for `logdir`: TensorBoard's `tensorboard.summary.Writer`.

    It writes the event files `tf.summary.create_file_writer` writes (scalars as float32 tensors
    of the `scalars` plugin), and imports no TensorFlow.

    Example:
    ``python
    write_scalars(create_writer("logs/run/trial_0"), {"val_loss": 1.9}, step=0)
    ``
    """
    return Writer(logdir)


def write_scalars(writer: Writer | None, scalars: Mapping[str, float | None], step: int) -> None:
    """Write `{tag: value}` at `step` with `writer`; no-op if it is None.

    Values that are None are skipped (e.g. `val_loss` without validation).

    Example:
    ``python
    write_scalars(writer, {"val_loss": 1.9, "val_perplexity": None}, step=0)
    ``
    """
    if writer is None:
        return
    for tag, value in scalars.items():
        if value is not None:
            writer.add_scalar(tag, float(value), int(step))


def flush(writer: Writer | None) -> None:
    """Flush `writer`; no-op if it is None."""
    if writer is not None:
        writer.flush()
