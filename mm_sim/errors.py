"""User-facing errors: the CLI prints their message (no traceback) and exits non-zero."""


class UserError(Exception):
    """Bad input from the user: a file, a field, a flag. The message says what and where."""

    exit_code = 2


class FeedError(UserError):
    """A feed could not be read or converted; the message names the file and line."""


def shown(value: object, limit: int = 80) -> str:
    """A value as an error line quotes it: its repr, cut to about ``limit`` characters.

    The line must stay one readable line whatever was given: a section missing from run.json
    quoted the whole file (3 KB) as the value at fault.
    """
    text = repr(value)
    if len(text) <= limit:
        return text
    if isinstance(value, dict | list | tuple):
        size = f"{type(value).__name__} of {len(value)} items"
    else:
        size = f"{len(text):,} characters"
    return f"{text[: limit - 3]}... ({size})"
