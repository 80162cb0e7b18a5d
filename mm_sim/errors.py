"""User-facing errors: the CLI prints their message (no traceback) and exits non-zero."""


class UserError(Exception):
    """Bad input from the user: a file, a field, a flag. The message says what and where."""

    exit_code = 2


class FeedError(UserError):
    """A feed could not be read or converted; the message names the file and line."""
