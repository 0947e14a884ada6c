"""The one error type users see: a bad argument or input, said in one line."""

from __future__ import annotations


class InputError(ValueError):
    """A bad argument or input file; the message names the problem and the fix.

    The message speaks in the library's terms: when one argument is at fault it
    starts with that argument's name (`parameter`) and its value. Entry points
    print it as one line on stderr, the name turned into their flag
    (`lora_keras.cli.exit_on_input_error`), and exit with status 2.

    Args:
        message: what is wrong and how to fix it, in one line.
        parameter: the argument at fault, as the library names it (`"model"`,
            `"train"`, `"devices"`, `"format"`, ...), or None.

    Example:
    ```python
    raise InputError("train: no such file x.tsv; pass an existing .tsv file", parameter="train")
    # tune.py prints: tune.py: error: --train: no such file x.tsv; pass an existing .tsv file
    ```
    """

    def __init__(self, message: str, *, parameter: str | None = None) -> None:
        super().__init__(message)
        self.parameter = parameter
