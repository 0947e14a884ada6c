"""Files replaced whole: a kill or a failed write leaves the old file (or none), never half of one.

A resume parses what the run wrote before it stopped, so every state file is written to a
temporary file beside it, flushed to disk (`fsync`), then renamed over it (`os.replace`: atomic
within one filesystem). A write that raises removes its temporary. `write_atomically` writes text
or bytes; `replace_atomically` hands a temporary path to a library that writes files itself.

Example:
```python
write_atomically("logs/sweep/run_config.json", json.dumps(settings))
with replace_atomically("logs/sweep/adapters/trial_0.safetensors") as temporary:
    save_file(weights, str(temporary))          # in place once the block ends without an error
```
"""

from __future__ import annotations

import contextlib
import os
import pathlib
import secrets
from collections.abc import Iterator


@contextlib.contextmanager
def replace_atomically(path: str | os.PathLike) -> Iterator[pathlib.Path]:
    """A temporary path beside `path`, renamed to `path` when the block ends; removed if it raises.

    Args:
        path: the file to write; its directory must exist.

    Yields:
        Where to write: a new name in `path`'s directory, unique to this call (so two processes
        writing one file do not share it), hidden and ending in `.partial`.

    Example:
    ```python
    with replace_atomically("logs/sweep/results.csv") as temporary, open(temporary, "w", newline="") as handle:
        csv.writer(handle).writerow(["trial_id", "val_loss"])
    ```
    """
    path = pathlib.Path(path)
    temporary = path.with_name(f".{path.name}.{os.getpid()}-{secrets.token_hex(4)}.partial")
    try:
        yield temporary
        descriptor = os.open(temporary, os.O_RDONLY)  # the writer may have closed its own
        try:
            os.fsync(descriptor)  # on disk before the rename makes it the file
        finally:
            os.close(descriptor)
        os.replace(temporary, path)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise


def write_atomically(path: str | os.PathLike, data: str | bytes) -> None:
    """Replace `path` with `data` (text as UTF-8) whole: readers and resumes see the old file or the new.

    Args:
        path: the file to write; its directory must exist.
        data: the whole new content.

    Example: `write_atomically("logs/sweep/summary.json", json.dumps({"wall_time_s": 312.0}))`.
    """
    with replace_atomically(path) as temporary, open(temporary, "wb") as handle:
        handle.write(data.encode("utf-8") if isinstance(data, str) else data)
