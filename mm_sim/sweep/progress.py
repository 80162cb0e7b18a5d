"""Progress over cells: a rich bar on a terminal, one line per finished cell otherwise.

A cell is finished when it has a result on every feed of the phase (training or test), so the
count is of cells, whatever order the workers return their feeds in.
"""

from __future__ import annotations

import statistics
import time
from collections import Counter
from collections.abc import Sequence
from typing import Any, TextIO

from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    ProgressColumn,
    TextColumn,
    TimeElapsedColumn,
)

from mm_sim.progress import TerminalProgress
from mm_sim.sweep.grid import Cell


class CellProgress(TerminalProgress):
    def __init__(
        self,
        phase: str,
        cells: Sequence[Cell],
        feeds: int,
        remaining: Counter[str],
        out: TextIO,
    ) -> None:
        """``remaining[cell_id]``: how many of the cell's feeds still have to run."""
        super().__init__(out)
        self.phase = phase
        self.total = len(cells)
        self.feeds = feeds
        self.remaining = remaining
        self.done = sum(1 for c in cells if remaining[c.id] == 0)
        self._t0 = time.perf_counter()
        self._nets: dict[str, list[float]] = {}

    def _columns(self) -> tuple[ProgressColumn, ...]:
        return (
            TextColumn(f"[bold]{self.phase} cells"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.fields[last]}"),
            TimeElapsedColumn(),
        )

    def _task(self) -> dict[str, Any]:
        return {"description": self.phase, "total": self.total, "completed": self.done, "last": ""}

    def result(self, cell: Cell, row: dict[str, Any]) -> None:
        net = row.get("net_bps")
        self._nets.setdefault(cell.id, []).append(float(net) if net is not None else 0.0)
        self.remaining[cell.id] -= 1
        if self.remaining[cell.id] > 0:
            return
        self.done += 1
        nets = self._nets.pop(cell.id)
        text = (
            f"{cell.id} {cell.label()}: median net_bps {statistics.median(nets):+.3f} "
            f"over {len(nets)} feed(s)"
        )
        if self.live is not None:
            self.update(completed=self.done, last=text)
            return
        wall = time.perf_counter() - self._t0
        print(
            f"[{self.phase}] cell {self.done}/{self.total} {text} ({wall:.1f} s)",
            file=self.out,
            flush=True,
        )
