"""structlog set-up, done once by the CLI: readable on a terminal, JSON lines otherwise."""

from __future__ import annotations

import logging
import sys

import structlog


def configure(json_logs: bool | None = None, level: str = "INFO") -> None:
    """Route structlog to stderr so stdout stays free for results and greppable markers."""
    if json_logs is None:
        json_logs = not sys.stderr.isatty()
    renderer: structlog.types.Processor
    if json_logs:
        renderer = structlog.processors.JSONRenderer()
    else:
        renderer = structlog.dev.ConsoleRenderer(colors=sys.stderr.isatty())
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.format_exc_info,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(
            logging.getLevelNamesMapping().get(level.upper(), logging.INFO)
        ),
        logger_factory=_StderrLogger,
        cache_logger_on_first_use=False,
    )


class _StderrLogger:
    """Prints each line to ``sys.stderr`` as it is at that moment. Why not structlog's
    PrintLogger: it keeps the stream it was made with, so after an in-process caller (a test
    capturing output) swapped ``sys.stderr`` and closed its copy, every later log line raised
    "I/O operation on closed file" in whatever code happened to log."""

    def __init__(self, *_args: object) -> None:
        pass

    def msg(self, message: str) -> None:
        print(message, file=sys.stderr, flush=True)

    log = debug = info = warning = warn = error = err = critical = exception = fatal = msg


def get_logger(name: str) -> structlog.stdlib.BoundLogger:
    return structlog.get_logger(name)  # type: ignore[no-any-return,unused-ignore]
