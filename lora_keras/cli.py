"""What every entry point shares: one-line usage errors with exit status 2.

Example:
```python
parser = OneLineErrorParser(prog="tune.py")
with exit_on_input_error():
    run(parser.parse_args())
```
"""

from __future__ import annotations

import argparse
import contextlib
import os
import re
import sys
from collections.abc import Iterator, Mapping
from typing import NoReturn

from lora_keras.errors import InputError

USAGE_ERROR = 2


class OneLineErrorParser(argparse.ArgumentParser):
    """An `ArgumentParser` whose errors are one line on stderr, exit status 2.

    Example:
    ```python
    parser = OneLineErrorParser(prog="export.py")
    parser.parse_args(["--rank", "x"])   # stderr: export.py: error: ... (see export.py --help); exit 2
    ```
    """

    def error(self, message: str) -> NoReturn:
        """Print `message` as one line on stderr and exit with status 2."""
        sys.stderr.write(f"{self.prog}: error: {message} (see {self.prog} --help)\n")
        sys.exit(USAGE_ERROR)


def positive_int(text: str) -> int:
    """argparse type: an integer >= 1.

    Example:
    ```python
    positive_int("3")   # 3; "0" is an ArgumentTypeError
    ```
    """
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a whole number, got {text!r}")
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def positive_float(text: str) -> float:
    """argparse type: a number > 0.

    Example:
    ```python
    positive_float("0.5")   # 0.5
    ```
    """
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a number, got {text!r}")
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be positive, got {text}")
    return value


def dropout_probability(text: str) -> float:
    """argparse type: a number p with 0 <= p < 1.

    Example:
    ```python
    dropout_probability("0.1")   # 0.1
    ```
    """
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a number, got {text!r}")
    if not 0 <= value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 0 and below 1, got {text}")
    return value


def host_port(text: str) -> tuple[str, int]:
    """argparse type: `HOST:PORT` (`[::1]:PORT` for IPv6) -> `(host, port)`.

    Example:
    ```python
    host_port("127.0.0.1:8000")   # ("127.0.0.1", 8000)
    ```
    """
    host, colon, port = text.rpartition(":")
    if not colon or not host.strip("[]") or not port.isdigit() or not 1 <= int(port) <= 65535:
        raise argparse.ArgumentTypeError(f"must be HOST:PORT with a port from 1 to 65535, got {text!r}")
    return host, int(port)


def flag_message(error: InputError, flags: Mapping[str, str] | None = None) -> str:
    """The message of `error` in a script's terms: its parameter's name turned into the flag.

    The flag is `flags[parameter]`, else `--` and the parameter with `_` as `-`. A message
    that starts with the parameter's name gets the flag in its place; one that does not
    is prefixed with `FLAG: `. Other parameters a message names in backquotes (in its fix,
    "pass `overwrite`") become their flags too, with or without a parameter.

    Args:
        error: the library's error.
        flags: `{parameter: flag}` where a script's flag is not `--parameter`.

    Returns:
        One line naming the flag.

    Example:
    ```python
    flag_message(InputError("devices 0: ask for 1 or more GPUs", parameter="devices"))
    # "--devices 0: ask for 1 or more GPUs"
    flag_message(InputError("directory x is not empty", parameter="directory"), {"directory": "--out"})
    # "--out x is not empty"
    flag_message(InputError("no such file x.tsv", parameter="train"))
    # "--train: no such file x.tsv"
    flag_message(InputError("name: x holds another run; pass `overwrite`", parameter="name"))
    # "--name: x holds another run; pass --overwrite"
    ```
    """

    def flag_of(name):
        return (flags or {}).get(name) or "--" + name.replace("_", "-")

    message = re.sub(r"`([a-z][a-z0-9_]*)`", lambda match: flag_of(match.group(1)), str(error))
    parameter = getattr(error, "parameter", None)
    if not parameter:
        return message
    flag = flag_of(parameter)
    if message.startswith(flag):
        return message
    if message.startswith(parameter) and message[len(parameter):len(parameter) + 1] in (" ", ":"):
        return flag + message[len(parameter):]
    return f"{flag}: {message}"


@contextlib.contextmanager
def exit_on_input_error(prog: str | None = None, flags: Mapping[str, str] | None = None) -> Iterator[None]:
    """Turn an `InputError` into one line on stderr naming the flag, and exit status 2.

    Args:
        prog: the script's name for the line; `sys.argv[0]`'s when None.
        flags: `{parameter: flag}` where a library parameter is not the script's `--parameter`.

    Example:
    ```python
    with exit_on_input_error("tune.py"):
        read_pairs("x.tsv", "train")   # stderr: tune.py: error: --train: no such file x.tsv; ...
    ```
    """
    try:
        yield
    except InputError as error:
        name = prog or sys.argv[0].rsplit("/", 1)[-1]
        sys.stderr.write(f"{name}: error: {flag_message(error, flags)}\n")
        sys.exit(USAGE_ERROR)


@contextlib.contextmanager
def native_stderr_silenced() -> Iterator[None]:
    """Hide what native libraries print to stderr (TensorFlow's start-up lines).

    Importing TensorFlow writes absl/CUDA notices straight to file descriptor 2,
    past `TF_CPP_MIN_LOG_LEVEL`; an error line must not drown in them.

    Example:
    ```python
    with native_stderr_silenced():
        import keras_hub   # loads TensorFlow quietly
    ```
    """
    sys.stderr.flush()
    saved = os.dup(2)
    try:
        with open(os.devnull, "w") as devnull:
            os.dup2(devnull.fileno(), 2)
            yield
    finally:
        sys.stderr.flush()
        os.dup2(saved, 2)
        os.close(saved)
