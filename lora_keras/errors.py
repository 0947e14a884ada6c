"""The one error type users see: a bad argument or input, said in one line."""


class InputError(ValueError):
    """A bad argument or input file; the message names the problem and the fix.

    Entry points print it as one line on stderr and exit with status 2.

    Example: `raise InputError("--train: no such file x.tsv; pass an existing file")`.
    """
