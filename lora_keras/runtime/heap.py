"""Python's garbage collector and a sweep's long-lived objects (a traced model, its graphs).

Every trial's memory measurement starts with a full `gc.collect()` (`callbacks.PeakMemory`),
and a full collection walks every tracked object: with a traced T5 in the process, about
0.6 s each time on the demo. Once a model is built and traced, what exists is long-lived
until the model is dropped: `freeze_long_lived()` collects once and moves it out of the
collector's reach (`gc.freeze`), so later collections walk only what trials create;
`thaw()` hands it back before a model is dropped, so its cycles are collected again.

Example:
```python
model = build_and_trace()
freeze_long_lived()    # the model and its graphs: skipped by later collections
...                    # trials: gc.collect() now walks only their objects
thaw()                 # before dropping the model
```
"""

import gc


def freeze_long_lived() -> None:
    """Collect garbage, then exclude every object left from later collections (until `thaw`)."""
    gc.collect()
    gc.freeze()


def thaw() -> None:
    """Make frozen objects collectable again (call before dropping a model that `freeze_long_lived` kept)."""
    gc.unfreeze()
