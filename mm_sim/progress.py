"""A rich progress display on a terminal and nothing otherwise: what the soak's and the sweep's
progress reporters share. Each says what its bar shows (``_columns``, ``_task``) and prints its
own plain lines when ``self.live`` is None, so a non-interactive log reads as a story."""

from __future__ import annotations

import sys
from types import TracebackType
from typing import Any, Self, TextIO

from rich.console import Console
from rich.progress import Progress as RichProgress
from rich.progress import ProgressColumn, TaskID


class TerminalProgress:
    def __init__(self, out: TextIO) -> None:
        self.out = out
        self.console = Console(file=out)
        self.live: RichProgress | None = None  # the bar, on a terminal, inside ``with``
        self.task: TaskID | None = None

    def _columns(self) -> tuple[ProgressColumn, ...]:
        raise NotImplementedError

    def _task(self) -> dict[str, Any]:
        """``add_task`` arguments: description, total, completed and the columns' fields."""
        raise NotImplementedError

    def update(self, **fields: Any) -> None:
        """Change the bar (a no-op without one)."""
        if self.live is not None and self.task is not None:
            self.live.update(self.task, **fields)

    def __enter__(self) -> Self:
        if self.console.is_terminal:
            # Log lines (stderr) are drawn above the bar when stderr is this terminal too; a
            # stderr sent to a file keeps them (rich would move them onto the terminal).
            self.live = RichProgress(
                *self._columns(), console=self.console, redirect_stderr=sys.stderr.isatty()
            )
            self.live.__enter__()
            self.task = self.live.add_task(**self._task())
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self.live is not None:
            self.live.__exit__(exc_type, exc, tb)
            self.live = None
