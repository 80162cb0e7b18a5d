"""Progress of a conversion or an inspection: a day of data is minutes of work, and a silent
terminal for minutes reads as a hang.

Converters stream their inputs through :func:`mm_sim.feeds.convert.base.open_binary` /
``open_text``; while a :class:`ReadTracker` is installed, the main pass over each input registers
its raw file there, and the bar shows how many of the inputs' bytes (compressed, as stored) have
been consumed. Pre-scans do not register, so the bar does not run twice. The bar is drawn by a
poll thread (the converters stay free of any display code); off a terminal nothing is drawn and
the command's output is unchanged.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any, TextIO

from rich.progress import (
    BarColumn,
    DownloadColumn,
    MofNCompleteColumn,
    ProgressColumn,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

from mm_sim.progress import TerminalProgress


class ReadTracker:
    """Bytes consumed of a set of input files, summed over their latest main-pass handles."""

    def __init__(self, paths: Sequence[Path]) -> None:
        self.sizes: dict[str, int] = {}
        for p in paths:
            try:
                self.sizes[str(p)] = os.path.getsize(p)
            except OSError:
                self.sizes[str(p)] = 0
        self.total = sum(self.sizes.values())
        self._raw: dict[str, IO[bytes]] = {}
        self._lock = threading.Lock()

    def opened(self, path: Path, raw: IO[bytes]) -> None:
        with self._lock:
            self._raw[str(path)] = raw

    def position(self) -> int:
        done = 0
        with self._lock:
            items = list(self._raw.items())
        for key, raw in items:
            size = self.sizes.get(key, 0)
            try:
                pos = raw.tell()
            except (ValueError, OSError):  # closed: read to its end (or given up on)
                pos = size
            done += min(pos, size) if size else pos
        return done


_current: ReadTracker | None = None


def current_tracker() -> ReadTracker | None:
    return _current


@contextmanager
def tracking(paths: Sequence[Path]) -> Iterator[ReadTracker]:
    """Install a tracker for the duration of one conversion in this process."""
    global _current
    prev = _current
    _current = ReadTracker(paths)
    try:
        yield _current
    finally:
        _current = prev


class WorkBar(TerminalProgress):
    """One bar: ``label``, done of ``total`` (bytes when ``unit == "bytes"``, else a count)."""

    def __init__(self, label: str, total: int, unit: str, out: TextIO) -> None:
        super().__init__(out)
        self.label = label
        self.total = max(total, 1)
        self.unit = unit

    def _columns(self) -> tuple[ProgressColumn, ...]:
        count: ProgressColumn = DownloadColumn() if self.unit == "bytes" else MofNCompleteColumn()
        return (
            TextColumn("[bold]{task.description}"),
            BarColumn(),
            count,
            TextColumn(self.unit if self.unit != "bytes" else ""),
            TimeElapsedColumn(),
            TimeRemainingColumn(),
        )

    def _task(self) -> dict[str, Any]:
        return {"description": self.label, "total": self.total, "completed": 0}


@contextmanager
def read_bar(paths: Sequence[Path], label: str, out: TextIO) -> Iterator[ReadTracker]:
    """Track the inputs' main pass and, on a terminal, draw it from a poll thread."""
    with tracking(paths) as tracker, WorkBar(label, tracker.total, "bytes", out) as bar:
        if bar.live is None:
            yield tracker
            return
        stop = threading.Event()

        def poll() -> None:
            while not stop.wait(0.2):
                bar.update(completed=tracker.position())

        thread = threading.Thread(target=poll, name="convert-progress", daemon=True)
        thread.start()
        try:
            yield tracker
        finally:
            stop.set()
            thread.join()
            bar.update(completed=tracker.position())
