"""Command-line entry point: argument parsing and error presentation only, no logic.

Each subcommand lives in ``mm_sim/commands/<name>.py`` and exposes ``register(subparsers)``,
which adds its parser and sets ``func(args) -> int``.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import os
import pkgutil
import re
import signal
import sys
from typing import Any, ClassVar

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


# Options that only switch something on need no stated default (off).
_SWITCHES = (
    argparse._StoreTrueAction,
    argparse._StoreFalseAction,
    argparse._StoreConstAction,
    argparse._HelpAction,
    argparse._VersionAction,
)


class DefaultsFormatter(argparse.HelpFormatter):
    """Every option's help ends with its default, unless it states one itself.

    ``known`` names defaults that live elsewhere (the soak's run settings, whose flags default
    to ``None`` so a flag left out lets the environment decide): they are shown from there,
    never typed twice.
    """

    known: ClassVar[dict[str, Any]] = {}

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        if not action.option_strings or isinstance(action, _SWITCHES) or "default" in text.lower():
            return text
        if action.required:
            return f"{text} (required)".lstrip()
        value = action.default
        if value is None and action.dest in self.known:
            value = self.known[action.dest]
        shown = "none" if value is None or value == [] else str(value).replace("%", "%%")
        return f"{text} (default: {shown})".lstrip()


def _settings_formatter() -> type[argparse.HelpFormatter]:
    from mm_sim.config import RunSettings

    class SettingsDefaults(DefaultsFormatter):
        known: ClassVar[dict[str, Any]] = {
            name: f.default for name, f in RunSettings.model_fields.items()
        }

    return SettingsDefaults


def _add_global_options(parser: argparse.ArgumentParser, top: bool) -> None:
    """The global options; on a subcommand's parser too (``mm_sim soak --log-level debug``),
    where they default to absent so the value given before the subcommand stands."""
    absent: dict[str, Any] = {} if top else {"default": argparse.SUPPRESS}
    parser.add_argument(
        "--log-json",
        action=argparse.BooleanOptionalAction,
        help="JSON log lines on stderr (default: JSON unless stderr is a terminal)",
        **({"default": None} if top else absent),
    )
    parser.add_argument(
        "--log-level",
        type=_log_level,
        metavar="{" + ",".join(LOG_LEVELS) + "}",
        help="DEBUG (also prints the traceback of an internal error), INFO, WARNING, ERROR "
        "(default: INFO; any case)",
        **({"default": "INFO"} if top else absent),
    )


def _log_level(text: str) -> str:
    level = {"WARN": "WARNING"}.get(text.upper(), text.upper())
    if level not in LOG_LEVELS:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not a log level: expected one of {', '.join(LOG_LEVELS)}"
        )
    return level


def _parsers(parser: argparse.ArgumentParser) -> list[argparse.ArgumentParser]:
    """Every subcommand's parser below ``parser`` (``config show``, ``validate as2008`` ...)."""
    out: list[argparse.ArgumentParser] = []
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for sp in dict.fromkeys(action.choices.values()):
                out += [sp, *_parsers(sp)]
    return out


# argparse takes "-2.5" as a value but "-1e3" as an unknown option ("expected one argument"):
# its own pattern for negative numbers has no exponent. No option of mm_sim looks like a number,
# so every negative number (and -inf/-nan, refused later with their flag) is a value.
_NEGATIVE_NUMBER = re.compile(r"^-(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?$|^-(inf|infinity|nan)$", re.I)


def build_parser(only: str | None = None) -> argparse.ArgumentParser:
    """The whole parser, or with ``only`` that one subcommand: registering a command imports
    its module, and the others' (the sweep's Dask and matplotlib, the fake exchange's HTTP
    stack) cost every run a few hundred milliseconds of start-up it never uses."""
    parser = argparse.ArgumentParser(
        prog="mm_sim",
        description="Event-driven market-making simulator and soak harness.",
        epilog="Global options (--log-level, --log-json) may also follow the subcommand.",
        formatter_class=DefaultsFormatter,
    )
    parser.add_argument("--version", action="version", version=f"mm_sim {__version__}")
    _add_global_options(parser, top=True)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    for name in [only] if only is not None else command_names():
        importlib.import_module(f"mm_sim.commands.{name}").register(sub)
    settings = _settings_formatter()
    parser._negative_number_matcher = _NEGATIVE_NUMBER
    for sp in _parsers(parser):
        sp.formatter_class = settings if sp.prog.endswith(" soak") else DefaultsFormatter
        sp._negative_number_matcher = _NEGATIVE_NUMBER
        _add_global_options(sp, top=False)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run one command; whatever goes wrong ends in one line on stderr and a non-zero exit.

    Bad input is a ``UserError`` (exit 2) raised where it is found, naming the file or flag.
    What reaches the last-resort handler below is an OS fault (full disk, read-only or too
    long path: exit 1) or a bug (exit 70); its traceback is printed only with
    ``--log-level debug``, so a user never has to read one.
    """
    given = sys.argv[1:] if argv is None else argv
    names = command_names()  # module names: fake_exchange for the command fake-exchange
    command = next((a for a in given if a.replace("-", "_") in names), "?")
    module = command.replace("-", "_")
    debug = False
    # A process started in the background by a script inherits SIGINT ignored; the soak
    # honours it once running, so honour it from the start too (Ctrl-C or kill -INT while
    # modules and compiled kernels load stops the run, exit 130).
    if signal.getsignal(signal.SIGINT) == signal.SIG_IGN:
        signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        from mm_sim import logs

        parser = build_parser(module if module in names else None)
        args = parser.parse_args(argv)
        command = args.command
        debug = args.log_level == "DEBUG"
        logs.configure(args.log_json, args.log_level)
        code = int(args.func(args) or 0)
        sys.stdout.flush()  # here, not at exit: a reader gone (| head) is handled below
        return code
    except UserError as exc:
        print(f"mm_sim {command}: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print(f"mm_sim {command}: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError as exc:
        if not _stdout_broken():
            return _os_error(command, exc, debug)
        # The reader of stdout went away (``| head``): nothing to say to it, and Python's own
        # flush at exit would complain again; as the docs advise, stdout goes to devnull.
        with contextlib.suppress(OSError):
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 1
    except OSError as exc:
        return _os_error(command, exc, debug)
    except Exception as exc:  # the last resort: one line, never a traceback unless asked
        _debug_traceback(debug)
        text = str(exc).splitlines()[0] if str(exc) else ""
        print(
            f"mm_sim {command}: internal error: {type(exc).__name__}: {text}{_HINT}",
            file=sys.stderr,
        )
        return INTERNAL_ERROR


_HINT = " (run with --log-level debug for the traceback)"


def _os_error(command: str, exc: OSError, debug: bool) -> int:
    _debug_traceback(debug)
    where = f" {exc.filename!r}" if exc.filename else ""
    what = exc.strerror or str(exc)
    print(f"mm_sim {command}: error: {what}{where} (errno {exc.errno}){_HINT}", file=sys.stderr)
    return 1


def _stdout_broken() -> bool:
    """Whether stdout is the pipe that broke (another pipe's EPIPE is an error to report):
    what failed to reach it is still buffered, or the pipe reports its reader gone."""
    try:
        sys.stdout.flush()
    except BrokenPipeError:
        return True
    except (OSError, ValueError):
        return False
    try:
        import select

        poll = select.poll()
        poll.register(sys.stdout.fileno(), select.POLLOUT)
        return any(ev & select.POLLERR for _, ev in poll.poll(0))
    except (OSError, ValueError, AttributeError):  # no poll (Windows), no real stdout
        return False


def _debug_traceback(debug: bool) -> None:
    if debug:
        import traceback

        traceback.print_exc(file=sys.stderr)
