"""Shadow arms: K extra engines running candidate overrides on the primary's events, live.

Paper only: a shadow's orders exist in its own simulated venue, never on a real one. At each
iteration's start every shadow takes the primary's state (position, cash, resting orders,
queue places, limiter budgets) and its own candidate overrides, then sees exactly the chunks
the primary sees. At the iteration's end its records are therefore the counterfactual replay
of that candidate (bit for bit, tests/test_walkforward.py), so the walk-forward tuner uses a
shadow's result instead of replaying that candidate, and can promote its overrides. On a live
feed this is the way to compare settings on identical market conditions as they happen.

Which candidates: the first K of the search's neighbourhood around the overrides the primary
starts the iteration with (``search.neighbourhood``, fixed order), so a run with ``--shadow
12`` covers the whole neighbourhood and needs no replay at all.
"""

from __future__ import annotations

import numpy as np

from mm_sim.config import Overrides, Profile
from mm_sim.core.engine import Engine
from mm_sim.events import Instrument
from mm_sim.tuning.counterfactual import RECORDS, Replay, rejected, start_engine
from mm_sim.tuning.search import Candidate, neighbourhood
from mm_sim.tuning.window import Window


class _Shadow:
    def __init__(self, engine: Engine, candidate: Candidate) -> None:
        self.engine = engine
        self.candidate = candidate
        self.rejected0 = rejected(engine)
        self.out: dict[str, list[np.ndarray]] = {k: [] for k in RECORDS}


class ShadowArms:
    def __init__(self, k: int, profile: Profile, instrument: Instrument, seed: int) -> None:
        self.k = k
        self.profile = profile
        self.instrument = instrument
        self.seed = seed
        self.arms: list[_Shadow] = []

    def start(self, window: Window, current: Overrides) -> None:
        """Put every shadow in the window's start state with its candidate."""
        cands, _ = neighbourhood(current, calm_only=False)
        self.arms = [
            _Shadow(start_engine(window, self.profile, self.instrument, self.seed, c.overrides), c)
            for c in cands[: self.k]
        ]

    def run(self, events: np.ndarray, flush: bool) -> None:
        for arm in self.arms:
            res = arm.engine.run(events, flush=flush)
            for k in RECORDS:
                arm.out[k].append(getattr(res, k))

    def finish(self, iteration: int) -> list[tuple[Candidate, Replay]]:
        """Each shadow's candidate and its records over the iteration (closing mark included)."""
        done = []
        for arm in self.arms:
            arm.out["marks"].append(arm.engine.mark_now())
            records = {k: np.concatenate(v) for k, v in arm.out.items()}
            records["fills"]["iteration"] = iteration
            done.append((arm.candidate, Replay(records, rejected(arm.engine) - arm.rejected0)))
        self.arms = []
        return done
