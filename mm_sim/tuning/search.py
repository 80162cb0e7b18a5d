"""The walk-forward search: a small neighbourhood of the overrides in force.

Why a neighbourhood and not a global optimiser: the winner is applied to the next iteration
only, and a guardrail limits how far one iteration may move the overrides; a one-step move of
one field is what the next iteration may receive anyway, so searching further would only find
values the guardrail forbids. Twelve candidates (six fields, one step down and one step up)
cost twelve replays of an iteration, each a small fraction of the iteration's own run time.

A step is about the move the seed's own scenarios make on that field (``STEPS``). Candidates
are clamped to the ``Overrides`` model's bounds (the one source of truth for ranges); a move
that the clamp cancels is not a candidate. Under the multi-fail guard (3+ of the seed's
scenarios triggered by the iteration just ended) only calming moves are candidates.
"""

from __future__ import annotations

from dataclasses import dataclass

from mm_sim.config import Overrides
from mm_sim.runtime.tuner import _clamp_field, is_calming

# One step per field: the seed's own move sizes (scenario C: −10 ms and +30/min; A: +50 ms of
# tail age; B: −0.02 of both ratios; D: +0.05 bps of spread, its low end).
STEPS: dict[str, float] = {
    "min_interval_ms": 10.0,
    "replace_rate_per_min": 30.0,
    "base_spread_bps_delta": 0.05,
    "tail_age_ms": 50.0,
    "impact_cap_ratio": 0.02,
    "max_delta_ratio": 0.02,
}


@dataclass(frozen=True)
class Candidate:
    id: str  # "base_spread_bps_delta+0.05", or "incumbent"
    field: str | None
    delta: float
    overrides: Overrides


def incumbent(current: Overrides) -> Candidate:
    return Candidate("incumbent", None, 0.0, current)


def neighbourhood(current: Overrides, calm_only: bool) -> tuple[list[Candidate], list[str]]:
    """(candidates in a fixed order, ids left out by the multi-fail guard)."""
    values = current.as_dict()
    out: list[Candidate] = []
    guarded: list[str] = []
    for fname, step in STEPS.items():
        for delta in (-step, step):
            new = _clamp_field(fname, values[fname] + delta)
            if new == values[fname]:
                continue
            cid = f"{fname}{delta:+g}"
            if calm_only and not is_calming(fname, delta):
                guarded.append(cid)
                continue
            moved = Overrides.model_validate({**values, fname: new})
            out.append(Candidate(cid, fname, new - values[fname], moved))
    return out, guarded
