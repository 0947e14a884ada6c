"""Failed trials as keras-tuner reports them: one trial's reason, and the stop after too many in a row.

keras-tuner says both only in text (a traceback; a `RuntimeError` whose message starts
"Number of consecutive failures exceeded the limit"), so this module is the one place
that reads that text.

Example:
```python
try:
    tuner.search(train_tokens, val_tokens, val_texts)
except RuntimeError as error:
    if not is_failure_limit(error):
        raise
    raise SweepStopped("stopped after 3 failed trials in a row; fix the cause and rerun") from None
```
"""

from keras_tuner.errors import FatalError

FAILURE_LIMIT_TEXT = "consecutive failures"  # in keras-tuner 1.4's `Oracle._check_consecutive_failures`


class SweepStopped(RuntimeError):
    """The sweep stopped early (too many failures in a row, chief lost); a rerun resumes.

    Example: `raise SweepStopped("the chief stopped the sweep: ...; fix the cause and rerun")`.
    """


class TrialError(FatalError):
    """An error inside a trial that is not the trial's own failure (a bug, bad input): it stops the sweep.

    keras-tuner records any other exception of a trial and goes on with the next; its
    `FatalError` family stops the search. The original error is the `__cause__`, which
    `tuners.roles` raises again with its traceback.

    Example: `raise TrialError("trial 3 stopped the sweep: TypeError: ...") from error`.
    """


def is_failure_limit(error: BaseException) -> bool:
    """Whether `error` is keras-tuner's stop after too many failed trials in a row.

    Args:
        error: a `RuntimeError` raised by an oracle here, or a `grpc.RpcError` that relays
            the chief oracle's (its `details()` hold the chief's message).

    Returns:
        True for the failure limit, False for any other error.

    Example: `is_failure_limit(RuntimeError("Number of consecutive failures exceeded the limit of 3."))`
    -> `True`.
    """
    details = getattr(error, "details", None)  # a gRPC error's own text is the chief's message
    text = (details() or "") if callable(details) else str(error)
    return FAILURE_LIMIT_TEXT in text


def failure_reason(message: str | None) -> str:
    """The last line of a failed trial's traceback, with the exception's module path dropped.

    Args:
        message: the trial's `message` as keras-tuner stores it (a traceback), or None.

    Returns:
        `"Name: text"`, as the `status` column of `results.csv` shows after `FAILED: `.

    Example: `failure_reason("Traceback ...\\ntensorflow.errors.ResourceExhaustedError: OOM when ...")`
    -> `"ResourceExhaustedError: OOM when ..."`.
    """
    last = (message or "unknown error").strip().splitlines()[-1]
    name, _, text = last.partition(": ")
    return f"{name.rsplit('.', 1)[-1]}: {text}" if text else last


OUT_OF_MEMORY_NAMES = ("ResourceExhaustedError", "OutOfMemoryError", "MemoryError")


def is_out_of_memory(error: BaseException) -> bool:
    """Whether `error` is an accelerator or host running out of memory (a trial's expected failure).

    TensorFlow raises `ResourceExhaustedError`, XLA on JAX an `XlaRuntimeError` saying
    `RESOURCE_EXHAUSTED`, PyTorch an `OutOfMemoryError`, Python a `MemoryError`; read by name, so
    that no backend need be imported.

    Example: `is_out_of_memory(MemoryError())` -> `True`; `is_out_of_memory(TypeError())` -> `False`.
    """
    names = {cls.__name__ for cls in type(error).__mro__}
    return bool(names & set(OUT_OF_MEMORY_NAMES)) or "RESOURCE_EXHAUSTED" in str(error)
