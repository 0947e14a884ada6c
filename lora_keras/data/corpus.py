"""Parallel corpora from files: TSV (`source<TAB>target`), CSV or JSONL.

Every problem with a file is one `InputError` line naming the file, the line and the fix.

Example:
```python
pairs = read_pairs("train.tsv")        # [("the cat .", "le chat ."), ...]
```
"""

from __future__ import annotations

import codecs
import csv
import functools
import io
import json
import os
import pathlib
from collections.abc import Iterator

from lora_keras.errors import InputError

FORMATS = (".tsv", ".csv", ".jsonl")
HEADER = ("source", "target")
TSV_FIX = "keep exactly one tab per line, between source and target"
CSV_FIX = "write source,target and quote a field that holds a comma or a quote"
JSONL_FIX = 'write one {"source": "...", "target": "..."} object per line'
JSON_TYPES = {type(None): "null", bool: "a boolean", int: "a number", float: "a number",
              list: "an array", dict: "an object"}


def _lines(text: str) -> Iterator[tuple[int, str]]:
    """`(number, line)` split at \\n, \\r\\n or \\r only: U+2028 or NEL inside a sentence is no line break."""
    for number, line in enumerate(io.StringIO(text, newline=None), start=1):
        yield number, line.rstrip("\n")


def _tsv_rows(path: pathlib.Path, text: str) -> Iterator[tuple[int, list[str]]]:
    for number, line in _lines(text):
        if line.strip():
            yield number, line.split("\t")


def _csv_rows(path: pathlib.Path, text: str) -> Iterator[tuple[int, list[str]]]:
    reader = csv.reader(io.StringIO(text, newline=""))
    number = 1  # a quoted field may span lines: a row starts on the line after the last one read
    try:
        for row in reader:
            if any(cell.strip() for cell in row):
                yield number, row
            number = reader.line_num + 1
    except csv.Error as error:
        raise InputError(f"line {number} of {path} is not valid CSV ({error}); {CSV_FIX}") from None


def _jsonl_rows(path: pathlib.Path, text: str) -> Iterator[tuple[int, list[str]]]:
    for number, line in _lines(text):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as error:
            raise InputError(f"line {number} of {path} is not valid JSON ({error.msg}); {JSONL_FIX}") from None
        if not isinstance(record, dict):
            raise InputError(f"line {number} of {path} holds {JSON_TYPES.get(type(record), 'a string')}, "
                             f"not an object; {JSONL_FIX}")
        missing = [field for field in HEADER if field not in record]
        if missing:
            raise InputError(f"line {number} of {path} has no {' or '.join(map(json.dumps, missing))} field; "
                             f"{JSONL_FIX}")
        for field in HEADER:
            if not isinstance(record[field], str):
                raise InputError(f'line {number} of {path}: "{field}" is {JSON_TYPES.get(type(record[field]))}, '
                                 f"not a string; write the sentence as a JSON string")
        yield number, [record["source"], record["target"]]


def _decode(path: pathlib.Path, raw: bytes) -> str:
    """The text of `raw` without a leading byte-order mark, or `InputError` naming the first bad byte."""
    if raw.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
        raise InputError(f"{path} is UTF-16 text (it starts with a UTF-16 byte-order mark); save it as UTF-8")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as error:
        line = raw.count(b"\n", 0, error.start) + 1
        raise InputError(f"line {line} of {path} is not UTF-8 (byte 0x{raw[error.start]:02x} at offset "
                         f"{error.start}: {error.reason}); save the file as UTF-8") from None
    return text.removeprefix("\ufeff")  # the UTF-8 byte-order mark some editors write


def read_pairs(path: str | os.PathLike, parameter: str = "train") -> list[tuple[str, str]]:
    """`[(source, target), ...]` from a TSV, CSV or JSONL file (UTF-8, with or without a BOM).

    A first row `source, target` is taken as a header; blank lines are skipped. Anything
    else that is not a pair of non-empty strings is an `InputError` that starts with
    `parameter` and names the file, the line and the fix.

    Args:
        path: a `.tsv`, `.csv` or `.jsonl` file.
        parameter: which corpus this is (`"train"`, `"val"`), named in an `InputError`
            (a flag such as `"--val"` is read as its parameter `"val"`).

    Returns:
        The sentence pairs, stripped of surrounding whitespace.

    Example:
    ```python
    read_pairs("val.tsv", "val")   # [("the cat .", "le chat ."), ...]
    ```
    """
    parameter = parameter.removeprefix("--")
    path = pathlib.Path(path)
    if path.suffix.lower() not in FORMATS:
        raise InputError(
            f"{parameter}: {path} has an unknown extension; use one of {', '.join(FORMATS)}", parameter=parameter
        )
    if not path.is_file():
        raise InputError(f"{parameter}: no such file {path}; pass an existing {path.suffix} file", parameter=parameter)
    stat = path.stat()
    try:
        return list(_read(path, stat.st_size, stat.st_mtime_ns))
    except InputError as error:
        raise InputError(f"{parameter}: {error}", parameter=parameter) from None


@functools.lru_cache(maxsize=4)
def _read(path: pathlib.Path, size: int, mtime_ns: int) -> tuple[tuple[str, str], ...]:
    """The pairs of `path` as it is at (`size`, `mtime_ns`): a command checks its files before
    TensorFlow loads and reads them again after, without parsing twice."""
    reader, fix = {".tsv": (_tsv_rows, TSV_FIX), ".csv": (_csv_rows, CSV_FIX),
                   ".jsonl": (_jsonl_rows, JSONL_FIX)}[path.suffix.lower()]
    return tuple(_pairs(reader(path, _decode(path, path.read_bytes())), path, fix))


def _pairs(rows: Iterator[tuple[int, list[str]]], path: pathlib.Path, fix: str) -> list[tuple[str, str]]:
    pairs = []
    for number, row in rows:
        if len(row) != 2:
            raise InputError(f"line {number} of {path} has {len(row)} field(s), expected 2 (source and target); "
                             f"{fix}")
        source, target = (cell.strip() for cell in row)
        if not pairs and (source.lower(), target.lower()) == HEADER:
            continue
        empty = [name for name, text in zip(HEADER, (source, target)) if not text]
        if empty:
            raise InputError(f"line {number} of {path} has an empty {' and '.join(empty)}; "
                             "remove the line or fill it in")
        pairs.append((source, target))
    if not pairs:
        raise InputError(f"{path} holds no sentence pairs; pass a file with at least one")
    return pairs
