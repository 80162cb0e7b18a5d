"""One module per subcommand (see mm_sim/cli.py), and what their options share."""

import argparse
from pathlib import Path

# What --json means on every command that has it: the command's result, as one JSON object on
# stdout, in place of the text (progress and warnings stay on stderr).
JSON_HELP = "print the result as one JSON object on stdout instead of text"


def path_arg(text: str) -> Path:
    """argparse type for a file or folder argument: an empty one (``-o ""``, an unset shell
    variable) is refused by name instead of becoming the current folder, or ``Path('.')``
    failing deep in a command with "has an empty name"."""
    if not text.strip():
        raise argparse.ArgumentTypeError("an empty path: expected a file or folder name")
    return Path(text)


def file_in_the_way(path: Path) -> Path | None:
    """The first of ``path`` and its parents that exists but is not a directory: an output
    under it cannot be made, and an OS error later would be exit 1, after the work."""
    return next((p for p in (path, *path.parents) if p.exists() and not p.is_dir()), None)
