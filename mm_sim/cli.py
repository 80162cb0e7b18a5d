"""Command-line entry point: argument parsing and error presentation only, no logic.

Each subcommand lives in ``mm_sim/commands/<name>.py`` and exposes ``register(subparsers)``,
which adds its parser and sets ``func(args) -> int``.
"""

from __future__ import annotations

import argparse
import importlib
import pkgutil
import signal
import sys

import mm_sim.commands
from mm_sim import __version__
from mm_sim.errors import UserError

LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR")
# Exit status of an internal error (a bug, or a fault nothing else named): not 2 (bad input).
INTERNAL_ERROR = 70

# Listed first in --help; any other module in mm_sim/commands/ follows alphabetically.
PRIMARY = ("soak", "convert", "inspect", "validate", "report")


def command_names() -> list[str]:
    found = {m.name for m in pkgutil.iter_modules(mm_sim.commands.__path__)}
    return [n for n in PRIMARY if n in found] + sorted(found - set(PRIMARY))


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="mm_sim",
        description="Event-driven market-making simulator and soak harness.",
    )
    parser.add_argument("--version", action="version", version=f"mm_sim {__version__}")
    parser.add_argument(
        "--log-json",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="JSON log lines on stderr (default: JSON unless stderr is a terminal)",
    )
    parser.add_argument(
        "--log-level",
        default="INFO",
        type=str.upper,
        choices=LOG_LEVELS,
        help="DEBUG (also prints the traceback of an internal error), INFO, WARNING, ERROR",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    for name in command_names():
        importlib.import_module(f"mm_sim.commands.{name}").register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run one command; whatever goes wrong ends in one line on stderr and a non-zero exit.

    Bad input is a ``UserError`` (exit 2) raised where it is found, naming the file or flag.
    What reaches the last-resort handler below is an OS fault (full disk, read-only or too
    long path: exit 1) or a bug (exit 70); its traceback is printed only with
    ``--log-level debug``, so a user never has to read one.
    """
    given = sys.argv[1:] if argv is None else argv
    command = next((a for a in given if a in command_names()), "?")
    debug = False
    # A process started in the background by a script inherits SIGINT ignored; the soak
    # honours it once running, so honour it from the start too (Ctrl-C or kill -INT while
    # modules and compiled kernels load stops the run, exit 130).
    if signal.getsignal(signal.SIGINT) == signal.SIG_IGN:
        signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        from mm_sim import logs

        parser = build_parser()
        args = parser.parse_args(argv)
        command = args.command
        debug = args.log_level == "DEBUG"
        logs.configure(args.log_json, args.log_level)
        return int(args.func(args) or 0)
    except UserError as exc:
        print(f"mm_sim {command}: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print(f"mm_sim {command}: interrupted", file=sys.stderr)
        return 130
    except OSError as exc:
        _debug_traceback(debug)
        where = f" {exc.filename!r}" if exc.filename else ""
        what = exc.strerror or str(exc)
        print(f"mm_sim {command}: error: {what}{where} (errno {exc.errno}){_HINT}", file=sys.stderr)
        return 1
    except Exception as exc:  # the last resort: one line, never a traceback unless asked
        _debug_traceback(debug)
        text = str(exc).splitlines()[0] if str(exc) else ""
        print(
            f"mm_sim {command}: internal error: {type(exc).__name__}: {text}{_HINT}",
            file=sys.stderr,
        )
        return INTERNAL_ERROR


_HINT = " (run with --log-level debug for the traceback)"


def _debug_traceback(debug: bool) -> None:
    if debug:
        import traceback

        traceback.print_exc(file=sys.stderr)
