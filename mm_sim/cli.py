"""Command-line entry point: argument parsing and error presentation only, no logic.

Each subcommand lives in ``mm_sim/commands/<name>.py`` and exposes ``register(subparsers)``,
which adds its parser and sets ``func(args) -> int``.
"""

from __future__ import annotations

import argparse
import importlib
import pkgutil
import sys

import mm_sim.commands
from mm_sim import __version__
from mm_sim.errors import UserError

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
    parser.add_argument("--log-level", default="INFO", help="DEBUG, INFO, WARNING, ERROR")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    for name in command_names():
        importlib.import_module(f"mm_sim.commands.{name}").register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    from mm_sim import logs

    parser = build_parser()
    args = parser.parse_args(argv)
    logs.configure(args.log_json, args.log_level)
    try:
        return int(args.func(args) or 0)
    except UserError as exc:
        print(f"mm_sim {args.command}: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print(f"mm_sim {args.command}: interrupted", file=sys.stderr)
        return 130
