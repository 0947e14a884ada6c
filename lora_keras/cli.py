"""What every entry point shares: one-line usage errors with exit status 2.

Example:
```python
parser = OneLineErrorParser(prog="tune.py")
with exit_on_input_error():
    run(parser.parse_args())
```
"""

import argparse
import contextlib
import os
import sys

from lora_keras.errors import InputError

USAGE_ERROR = 2


class OneLineErrorParser(argparse.ArgumentParser):
    """An `ArgumentParser` whose errors are one line on stderr, exit status 2."""

    def error(self, message):
        sys.stderr.write(f"{self.prog}: error: {message} (see {self.prog} --help)\n")
        sys.exit(USAGE_ERROR)


def positive_int(text):
    """argparse type: an integer >= 1."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a whole number, got {text!r}")
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def positive_float(text):
    """argparse type: a number > 0."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a number, got {text!r}")
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be positive, got {text}")
    return value


def dropout_probability(text):
    """argparse type: a number p with 0 <= p < 1."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a number, got {text!r}")
    if not 0 <= value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 0 and below 1, got {text}")
    return value


def host_port(text):
    """argparse type: `HOST:PORT` (`[::1]:PORT` for IPv6) -> `(host, port)`."""
    host, colon, port = text.rpartition(":")
    if not colon or not host.strip("[]") or not port.isdigit() or not 1 <= int(port) <= 65535:
        raise argparse.ArgumentTypeError(f"must be HOST:PORT with a port from 1 to 65535, got {text!r}")
    return host, int(port)


@contextlib.contextmanager
def exit_on_input_error(prog=None):
    """Turn an `InputError` into one line on stderr and exit status 2."""
    try:
        yield
    except InputError as error:
        name = prog or sys.argv[0].rsplit("/", 1)[-1]
        sys.stderr.write(f"{name}: error: {error}\n")
        sys.exit(USAGE_ERROR)


@contextlib.contextmanager
def native_stderr_silenced():
    """Hide what native libraries print to stderr (TensorFlow's start-up lines).

    Importing TensorFlow writes absl/CUDA notices straight to file descriptor 2,
    past `TF_CPP_MIN_LOG_LEVEL`; an error line must not drown in them.
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
