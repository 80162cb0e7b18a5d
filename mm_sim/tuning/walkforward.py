"""The walk-forward tuner: replay the iteration that just ended under each candidate, keep the
overrides in force unless a candidate really beats them, apply a winner to the next iteration.

"Really beats" takes two tests, both on the replays of the same events from the same state:

1. a higher score than the incumbent's, by the sweep's criterion over the iteration's folds
   (``counterfactual``);
2. a paired block-bootstrap interval of (candidate − incumbent) net_bps whose low end is above
   zero (``mm_sim.report.paired``; the profile's ``gates.error_bars`` confidence). A higher
   score inside the noise is a HOLD, and the record says by how much it missed.

Of the candidates passing both, the highest score wins (ties: search order). The decision is
taken on iteration k and lives in iteration k+1 only, which it never saw: every iteration the
tuner influences is out of sample.

Guardrails: bounds and one step of one field per iteration (``search``); the seed's multi-fail
guard (3+ of the seed's scenarios triggered by the iteration → calming candidates only, so it
bites here); ``--freeze-after-convergence`` with the seed's rule (first iteration in the OK
band after a change). The seed's emergency rule (mid-iteration fallback) stays armed with its
own state: it is a safety net, not a tuning policy.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from mm_sim.config import ErrorBarsCfg, Overrides
from mm_sim.report.paired import paired_difference
from mm_sim.runtime.tuner import (
    Decision,
    IterationMetrics,
    Tuner,
    TunerPolicy,
    calm_only,
    scenario_triggers,
)
from mm_sim.sweep.select import Criterion
from mm_sim.tuning.counterfactual import Evaluation
from mm_sim.tuning.search import Candidate, incumbent, neighbourhood

NAME = "walk-forward"


@dataclass(frozen=True)
class WalkForwardPolicy:
    folds: int = 3  # the iteration's spans that play the sweep's feeds
    dispersion_weight: float = 1.0  # the sweep's defaults (docs/SWEEP.md, "The criterion")
    gate_penalty_bps: float = 1.0

    @property
    def criterion(self) -> Criterion:
        return Criterion(self.dispersion_weight, self.gate_penalty_bps)


@dataclass
class WalkForwardState:
    negative_streak: int = 0
    frozen: bool = False
    changed_once: bool = False
    seed: dict[str, Any] = field(default_factory=dict)  # the seed tuner's (emergency rule)


# Runs the candidates' replays (in this process, on shadows, or on Dask); results in order.
Evaluator = Callable[[Sequence[Candidate]], list[Evaluation]]


def _f(x: float | None) -> str:
    return "n/a" if x is None else f"{x:+.3f}"


class WalkForwardTuner:
    name = NAME

    def __init__(
        self,
        error_bars: ErrorBarsCfg,
        freeze_after_convergence: bool = False,
        state: WalkForwardState | None = None,
        seed_policy: TunerPolicy | None = None,
    ) -> None:
        """The scores come in from the evaluator (``WalkForwardPolicy`` sets how they are
        made); the tuner compares them, with ``error_bars`` for the paired intervals."""
        self.error_bars = error_bars
        self.freeze_after_convergence = freeze_after_convergence
        self.state = state or WalkForwardState()
        self.seed_policy = seed_policy or TunerPolicy()
        seed_state = self.state.seed
        self._seed = (
            Tuner.from_state(seed_state, self.seed_policy)
            if seed_state
            else Tuner(self.seed_policy)
        )

    # -- persistence (resume) ----------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        self.state.seed = self._seed.state_dict()
        return {"kind": NAME, **asdict(self.state)}

    @classmethod
    def from_state(
        cls, data: dict[str, Any], error_bars: ErrorBarsCfg, freeze: bool = False
    ) -> WalkForwardTuner:
        d = {k: v for k, v in data.items() if k != "kind"}
        return cls(error_bars, freeze, WalkForwardState(**d))

    # -- the seed's safety net -----------------------------------------------------------------
    def emergency(
        self, iteration: int, net: float, fills: int, current: Overrides, sim_ts: int
    ) -> tuple[Overrides, list[Decision]]:
        if self.state.frozen:
            return current, []
        return self._seed.emergency(iteration, net, fills, current, sim_ts)

    # -- the decision ------------------------------------------------------------------------
    def after_window(
        self, m: IterationMetrics, current: Overrides, run: Evaluator
    ) -> tuple[Overrides, list[Decision], dict[str, Any]]:
        """Decide the next iteration's overrides; the third value is the run record's entry."""
        st = self.state
        st.negative_streak = st.negative_streak + 1 if m.net_bps < 0 else 0
        record: dict[str, Any] = {"tuner": NAME, "candidates": [], "winner": None}

        def hold(why: str) -> tuple[Overrides, list[Decision], dict[str, Any]]:
            record["reason"] = why
            return current, [Decision(m.iteration, NAME, None, None, None, why)], record

        if st.frozen:
            return hold("frozen after convergence")
        ok = self.seed_policy.ok_band_bps
        if self.freeze_after_convergence and st.changed_once and m.net_bps >= ok:
            st.frozen = True
            return hold(f"converged: net_bps {m.net_bps:.3f} >= {ok}; freezing")
        triggers = scenario_triggers(m, st.negative_streak, self.seed_policy)
        calm = calm_only(triggers, self.seed_policy)
        cands, guarded = neighbourhood(current, calm)
        record["calm_only"] = calm
        record["seed_triggers"] = triggers
        record["guarded"] = guarded
        evals = run([incumbent(current), *cands])
        inc = evals[0]
        rows = [
            self._row(c, e, inc) for c, e in zip([incumbent(current), *cands], evals, strict=True)
        ]
        record["candidates"] = rows
        passing = [
            (r, c)
            for r, c in zip(rows[1:], cands, strict=True)
            if r["score"] > inc.score and r["uplift_lo"] is not None and r["uplift_lo"] > 0
        ]
        if not passing:
            return hold(self._hold_reason(rows, inc, calm))
        best_row, best = max(passing, key=lambda rc: rc[0]["score"])  # first of equals wins
        record["winner"] = best.id
        assert best.field is not None
        old = current.as_dict()[best.field]
        new = best.overrides.as_dict()[best.field]
        why = (
            f"{best.id}: score {best_row['score']:+.3f} > incumbent {inc.score:+.3f}, uplift "
            f"{_f(best_row['uplift_bps'])} bps, {self.error_bars.confidence:.0%} CI "
            f"[{_f(best_row['uplift_lo'])}, {_f(best_row['uplift_hi'])}]"
        )
        record["reason"] = why
        st.changed_once = True
        return best.overrides, [Decision(m.iteration, NAME, best.field, old, new, why)], record

    def _row(self, c: Candidate, e: Evaluation, inc: Evaluation) -> dict[str, Any]:
        row: dict[str, Any] = {"id": c.id, "overrides": e.overrides, **e.record()}
        iv = None
        if c.field is not None and e.blocks is not None and inc.blocks is not None:
            iv = paired_difference(e.blocks, inc.blocks, self.error_bars)
        row["uplift_bps"] = iv.estimate if iv else None
        row["uplift_lo"] = iv.lo if iv else None
        row["uplift_hi"] = iv.hi if iv else None
        return row

    def _hold_reason(self, rows: list[dict[str, Any]], inc: Evaluation, calm: bool) -> str:
        head = f"incumbent score {inc.score:+.3f}"
        if len(rows) < 2:
            return head + "; no candidate within bounds" + (" (calming moves only)" if calm else "")
        best = max(rows[1:], key=lambda r: r["score"])
        if best["score"] <= inc.score:
            return f"{head}; no candidate scores higher (best {best['id']} {best['score']:+.3f})"
        return (
            f"{head}; best {best['id']} scores {best['score']:+.3f} but its uplift "
            f"{_f(best['uplift_bps'])} bps, CI [{_f(best['uplift_lo'])}, {_f(best['uplift_hi'])}], "
            "is not above zero"
        )
