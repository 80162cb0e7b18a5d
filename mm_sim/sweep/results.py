"""sweep_results.csv: one row per cell × feed, appended and fsynced as each result arrives.

The row is the commit of a cell on a feed: ``--resume`` runs exactly the (cell, feed) pairs that
have no row. A crash can leave at most a torn last line (no newline); it is cut off on the next
open, like the soak's metrics.jsonl. Rows are keyed by (cell_id, feed) and a key is written once:
a second result for it (a re-run after a worker died, a duplicate in a hand-edited file) is not
counted. When a sweep completes the file is rewritten once, atomically, in grid order, so the
same grid, feeds and seeds give the same file apart from the timing columns (last).
"""

from __future__ import annotations

import csv
import io
import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from mm_sim.errors import UserError, shown
from mm_sim.events import atomic_write_bytes, read_text_file
from mm_sim.sweep.cell import METRICS

FILE = "sweep_results.csv"
ID_COLUMNS = ("split", "cell_id", "feed", "seed")
RESULT_COLUMNS = (
    *METRICS,
    "iterations_run",
    "partial",  # empty, or why the run is shorter than asked (a stored feed that ended first)
    "verdict",
    "band",
    "hard_failed",
    "soft_failed",
    "run_dir",
)
TIMING_COLUMNS = ("wall_s", "worker")  # differ between runs of the same sweep
_INT_COLUMNS = {"seed", "fills", "iterations_run"}
_FLOAT_COLUMNS = set(METRICS) - _INT_COLUMNS | {"wall_s"}
_LIST_COLUMNS = {"hard_failed", "soft_failed"}

Key = tuple[str, str]  # (cell_id, feed label)


def columns(grid_keys: Sequence[str]) -> list[str]:
    return [*ID_COLUMNS, *grid_keys, *RESULT_COLUMNS, *TIMING_COLUMNS]


def _cell(v: Any) -> str:
    if v is None:
        return ""
    if isinstance(v, float):
        return repr(v)  # round-trips exactly
    if isinstance(v, list | tuple):
        return ";".join(str(x) for x in v)
    return str(v)


def _parse(col: str, s: str) -> Any:
    if col in _LIST_COLUMNS:
        return [x for x in s.split(";") if x]
    if s == "":
        return None
    if col in _INT_COLUMNS:
        return int(s)
    if col in _FLOAT_COLUMNS:
        return float(s)
    return s


def _line(cols: Sequence[str], row: dict[str, Any]) -> bytes:
    buf = io.StringIO()
    csv.writer(buf, lineterminator="\n").writerow([_cell(row.get(c)) for c in cols])
    return buf.getvalue().encode()


def _header(cols: Sequence[str]) -> bytes:
    return _line(cols, {c: c for c in cols})


class ResultsFile:
    """The append-only results file of one sweep directory."""

    def __init__(self, out_dir: Path, grid_keys: Sequence[str]) -> None:
        self.path = Path(out_dir) / FILE
        self.columns = columns(grid_keys)
        self.rows: dict[Key, dict[str, Any]] = {}
        self._fh: io.BufferedWriter | None = None

    def open(self) -> dict[Key, dict[str, Any]]:
        """Read the committed rows (cutting a torn tail) and get ready to append.

        A file left empty (created, or its header torn by a crash and cut off) gets its header
        again: rows appended without one would be read back as the header.
        """
        if self.path.exists():
            self._repair_tail()
        if not self.path.exists() or self.path.stat().st_size == 0:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            with self.path.open("wb") as fh:
                fh.write(_header(self.columns))
                fh.flush()
                os.fsync(fh.fileno())
        self.rows = read_rows(self.path, self.columns)
        self._fh = self.path.open("ab")
        return self.rows

    def _repair_tail(self) -> None:
        raw = self.path.read_bytes()
        end = raw.rfind(b"\n") + 1
        if end != len(raw):
            with self.path.open("r+b") as fh:
                fh.truncate(end)
                os.fsync(fh.fileno())

    def append(self, row: dict[str, Any]) -> bool:
        """Commit one result; False (and nothing written) when its key already has a row."""
        key = (str(row["cell_id"]), str(row["feed"]))
        if key in self.rows:
            return False
        assert self._fh is not None, "open() first"
        self._fh.write(_line(self.columns, row))
        self._fh.flush()
        os.fsync(self._fh.fileno())
        self.rows[key] = {c: row.get(c) for c in self.columns}
        return True

    def close(self) -> None:
        if self._fh is not None:
            self._fh.close()
            self._fh = None

    def rewrite_sorted(self, order: Callable[[dict[str, Any]], Any]) -> None:
        """Atomically rewrite the file with its rows in ``order`` (a completed sweep)."""
        self.close()
        body = b"".join(_line(self.columns, r) for r in sorted(self.rows.values(), key=order))
        atomic_write_bytes(self.path, _header(self.columns) + body)


def read_rows(path: Path, expected: Sequence[str] | None = None) -> dict[Key, dict[str, Any]]:
    """Rows keyed by (cell_id, feed), typed; the first row of a key wins.

    A hand-edited or damaged file (not UTF-8, a number column holding text) is refused with
    its line and column: read as it came, it was an internal error on ``--resume``.
    """
    text = read_text_file(path, "sweep results (CSV)")
    with io.StringIO(text, newline="") as fh:
        reader = csv.reader(fh)
        header = next(reader, None)
        if header is None:
            return {}
        if expected is not None and list(header) != list(expected):
            missing = [c for c in expected if c not in header]
            extra = [c for c in header if c not in expected]
            raise UserError(
                f"{path}: written for another grid (columns missing: {missing}, extra: {extra}); "
                "resume with the same grid, or use a new --out"
            )
        rows: dict[Key, dict[str, Any]] = {}
        for n, rec in enumerate(reader, 2):
            if len(rec) != len(header):
                raise UserError(f"{path}:{n}: expected {len(header)} fields, got {len(rec)}")
            row = {}
            for c, v in zip(header, rec, strict=True):
                try:
                    row[c] = _parse(c, v)
                except ValueError:
                    kind = "whole number" if c in _INT_COLUMNS else "number"
                    raise UserError(
                        f"{path}:{n}: column {c!r} = {shown(v)}: expected a {kind} or nothing "
                        "(edited by hand? delete the row to run that cell again)"
                    ) from None
            rows.setdefault((str(row["cell_id"]), str(row["feed"])), row)
    return rows
