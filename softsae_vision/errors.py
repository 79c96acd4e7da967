"""The one exception type for mistakes a user can fix."""


class SoftSAEError(Exception):
    """A foreseeable problem with the user's input or setup.

    The message names the problem and the fix in one line; the CLI prints it without a
    traceback and exits with status 2. Library callers can catch it like any exception.
    """
