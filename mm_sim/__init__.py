"""mm_sim: what edge, in basis points, does a market-making configuration really earn?

``read_run(DIR)`` reads a run directory's fills, marks, actions, blocks, per-iteration metrics
and tuner decisions as pandas DataFrames (docs/REPORTS.md, "Reading a run in Python").
"""

from __future__ import annotations

from typing import TYPE_CHECKING

__version__ = "0.1.0"
__all__ = ["__version__", "read_run"]

if TYPE_CHECKING:
    from pathlib import Path

    from mm_sim.report.frames import RunFrames


def read_run(root: str | Path) -> RunFrames:
    """The run in ``root`` as DataFrames (imported on use: the CLI never pays for pandas)."""
    from mm_sim.report.frames import read_run as _read_run

    return _read_run(root)
