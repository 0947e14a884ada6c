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


@contextlib.contextmanager
def exit_on_input_error(prog=None):
    """Turn an `InputError` into one line on stderr and exit status 2."""
    try:
        yield
    except InputError as error:
        name = prog or sys.argv[0].rsplit("/", 1)[-1]
        sys.stderr.write(f"{name}: error: {error}\n")
        sys.exit(USAGE_ERROR)
