"""keras-hub's T5 masking warning, silenced where this library builds and runs T5 models.

keras-hub's T5 attention layers warn on every traced call that they drop Keras masks;
they use explicit padding masks instead, so the warning says nothing here. It is
silenced around the calls that raise it, never by a process-wide filter.

Example:
```python
with masking_warning_ignored():
    backbone = keras_hub.models.T5Backbone.from_config(config)
```
"""

from __future__ import annotations

import contextlib
import warnings
from collections.abc import Iterator

MASKING_WARNING = ".*does not support masking.*"


@contextlib.contextmanager
def masking_warning_ignored() -> Iterator[None]:
    """Ignore keras-hub's "does not support masking" warning inside the block; other filters stay.

    Example:
    ```python
    with masking_warning_ignored():
        model = TokenLossSeq2SeqLM(backbone=backbone, preprocessor=None)
    ```
    """
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=MASKING_WARNING)
        yield
