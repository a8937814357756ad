"""The one exception type that means "the user asked for something we cannot do".

The CLI turns a :class:`UserError` into a one-line message on stderr and exit code 2; every other
exception is a bug and keeps its traceback.
"""


class UserError(Exception):
    """Bad input: an unknown name, a missing file, a value out of range. The message is one line."""
