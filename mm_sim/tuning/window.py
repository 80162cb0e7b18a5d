"""An iteration as the primary engine saw it: its events, chunk by chunk, and its start state.

Why keep the chunks: a counterfactual replay must give the primary's exact records when run
with the primary's overrides, and the engine's output may depend on where ``flush`` falls
(the two-clock reorder window is flushed at iteration ends only). Replaying the same slices
with the same flags removes the question. A replayed feed's chunks are views of the memory-
mapped file (nothing is copied); a live feed's are the arrays the live source built.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from mm_sim.report.edge import State, chain_states
from mm_sim.report.rundir import RunDir


@dataclass
class Window:
    iteration: int
    start_ns: int  # the plan's iteration span, on the exchange clock (folds are cut on it)
    end_ns: int
    state: dict[str, np.ndarray]  # Engine.state_arrays() before the iteration's first event
    start: State | None  # the account the iteration starts from; None for a run's first one
    contract_size: float = 0.0
    chunks: list[np.ndarray] = field(default_factory=list)
    flush: list[bool] = field(default_factory=list)
    ws_lag_p95_ms: float | None = None

    def add(self, events: np.ndarray, flush: bool) -> None:
        self.chunks.append(events)
        self.flush.append(flush)

    @property
    def n_events(self) -> int:
        return sum(len(c) for c in self.chunks)


def start_of_next(rd: RunDir, contract_size: float) -> State | None:
    """The account at the end of the last committed iteration: where the next one starts, as
    the run's reports chain it (``chain_states``)."""
    lines = rd.committed_lines()
    if not lines:
        return None
    marks = [r["marks"] for r in rd.iteration_records(lines, ("marks",))]
    return chain_states(marks, contract_size)[-1][1]
