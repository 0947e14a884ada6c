"""Parallel corpora from files: TSV (`source<TAB>target`), CSV or JSONL.

Example:
```python
pairs = read_pairs("train.tsv")        # [("the cat .", "le chat ."), ...]
```
"""

import csv
import json
import pathlib

from lora_keras.errors import InputError

FORMATS = (".tsv", ".csv", ".jsonl")
HEADER = ("source", "target")


def _tsv_rows(path, text):
    for number, line in enumerate(text.splitlines(), start=1):
        if line.strip():
            yield number, line.split("\t")


def _csv_rows(path, text):
    for number, row in enumerate(csv.reader(text.splitlines()), start=1):
        if any(cell.strip() for cell in row):
            yield number, row


def _jsonl_rows(path, text):
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as error:
            raise InputError(f"line {number} of {path} is not valid JSON ({error.msg}); "
                             'write one {"source": ..., "target": ...} object per line')
        if not isinstance(record, dict) or not {"source", "target"} <= set(record):
            raise InputError(f'line {number} of {path} lacks "source" and "target" fields; '
                             'write one {"source": ..., "target": ...} object per line')
        yield number, [record["source"], record["target"]]


def read_pairs(path, flag="--train"):
    """`[(source, target), ...]` from a TSV, CSV or JSONL file; `InputError` if unusable.

    A first row `source, target` is taken as a header. `flag` names the option
    in error messages.
    """
    path = pathlib.Path(path)
    if path.suffix.lower() not in FORMATS:
        raise InputError(f"{flag}: {path} has an unknown extension; use one of {', '.join(FORMATS)}")
    if not path.is_file():
        raise InputError(f"{flag}: no such file {path}; pass an existing {path.suffix} file")
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise InputError(f"{flag}: {path} is not UTF-8 text; save it as UTF-8")
    reader = {".tsv": _tsv_rows, ".csv": _csv_rows, ".jsonl": _jsonl_rows}[path.suffix.lower()]
    try:
        return _pairs(reader(path, text), path, flag)
    except InputError as error:
        if str(error).startswith(flag):
            raise
        raise InputError(f"{flag}: {error}") from None


def _pairs(rows, path, flag):
    pairs = []
    for number, row in rows:
        if len(row) != 2:
            raise InputError(f"{flag}: line {number} of {path} has {len(row)} field(s), "
                             "expected 2 (source and target)")
        source, target = (str(cell).strip() for cell in row)
        if not pairs and (source.lower(), target.lower()) == HEADER:
            continue
        if not source or not target:
            raise InputError(f"{flag}: line {number} of {path} has an empty source or target; "
                             "remove the line or fill it in")
        pairs.append((source, target))
    if not pairs:
        raise InputError(f"{flag}: {path} holds no sentence pairs; pass a file with at least one")
    return pairs
