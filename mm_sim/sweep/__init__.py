"""Best-cell search: a grid of override/profile values run over many feeds on Dask distributed.

Entry point ``run_sweep(SweepOptions(...))`` (``mm_sim sweep``); see docs/SWEEP.md. Dask is
imported only when a cluster is needed.
"""

from mm_sim.sweep.driver import SweepOptions, SweepOutcome, run_sweep
from mm_sim.sweep.grid import Cell, Grid, load_grid
from mm_sim.sweep.select import Criterion

__all__ = ["Cell", "Criterion", "Grid", "SweepOptions", "SweepOutcome", "load_grid", "run_sweep"]
