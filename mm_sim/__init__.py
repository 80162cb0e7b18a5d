"""mm_sim: what edge, in basis points, does a market-making configuration really earn?

``read_run(DIR)`` reads a run directory's fills, marks, actions, blocks, per-iteration metrics
and tuner decisions as pandas DataFrames (docs/REPORTS.md, "Reading a run in Python").
"""

from __future__ import annotations

import os
import sys
from typing import TYPE_CHECKING

__version__ = "0.1.0"
__all__ = ["__version__", "read_run"]


def _default_kernel_cache() -> None:
    """Where nothing says where numba keeps compiled kernels, the virtual environment's
    ``numba-cache``: where `make` keeps them (its NUMBA_CACHE_DIR) and `make setup` compiles
    them, so that ``.venv/bin/python -m mm_sim soak`` run by hand loads them too instead of
    compiling again into ``__pycache__``. Outside a virtual environment numba's default stays.
    Set here because numba reads the variable once, when it is first imported."""
    in_venv = sys.prefix != sys.base_prefix
    if "NUMBA_CACHE_DIR" not in os.environ and in_venv and os.access(sys.prefix, os.W_OK):
        os.environ["NUMBA_CACHE_DIR"] = os.path.join(sys.prefix, "numba-cache")


_default_kernel_cache()

if TYPE_CHECKING:
    from pathlib import Path

    from mm_sim.report.frames import RunFrames


def read_run(root: str | Path) -> RunFrames:
    """The run in ``root`` as DataFrames (imported on use: the CLI never pays for pandas)."""
    from mm_sim.report.frames import read_run as _read_run

    return _read_run(root)
