"""The soak's side of tuning by counterfactuals: windows, shadows, replays, the run record.

The soak calls ``feed`` with every chunk before its primary engine runs it and ``end`` when an
iteration ends; the walk-forward tuner gets an ``Evaluator`` from ``evaluator``. Replays run in
this process, or on a Dask cluster when the soak was given one (``--scheduler``): the window
(start state and events) is scattered to the workers once per iteration and each candidate is
one task; the results are the same either way (the core is deterministic), only the wall time
differs. Every candidate, its score and where it ran go into the iteration's line of
``metrics.jsonl`` (``extra.tuning``; ``extra.shadows`` for the shadow arms' side-by-side
figures), committed with the iteration.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

import numpy as np

from mm_sim.config import Overrides, Profile
from mm_sim.core.engine import Engine
from mm_sim.core.engine_params import contract_size_of
from mm_sim.events import Instrument
from mm_sim.report.rundir import RunDir
from mm_sim.tuning.counterfactual import Evaluation, evaluate, replay_and_evaluate
from mm_sim.tuning.search import Candidate
from mm_sim.tuning.shadow import ShadowArms
from mm_sim.tuning.walkforward import Evaluator, WalkForwardPolicy
from mm_sim.tuning.window import Window, start_of_next


class TuningSession:
    def __init__(
        self,
        profile: Profile,
        instrument: Instrument,
        seed: int,
        *,
        keep_windows: bool,
        shadows: int = 0,
        client: Any = None,
        where: str = "in-process",
        policy: WalkForwardPolicy | None = None,
    ) -> None:
        self.profile = profile
        self.instrument = instrument
        self.seed = seed
        self.keep_chunks = keep_windows  # the replays need the events; shadows need the state
        self.keep_windows = keep_windows or shadows > 0
        self.shadows = ShadowArms(shadows, profile, instrument, seed) if shadows else None
        self.client = client
        self.where = where
        self.policy = policy or WalkForwardPolicy()
        self.window: Window | None = None
        self._shadow_evals: list[tuple[Candidate, Evaluation]] = []
        self.cost: dict[str, Any] = {}

    # -- the runner's calls --------------------------------------------------------------------
    def feed(
        self,
        iteration: int,
        events: np.ndarray,
        flush: bool,
        engine: Engine,
        span: tuple[int, int],
        rd: RunDir,
        current: Overrides,
    ) -> None:
        """Called before the primary runs a chunk: a new iteration snapshots its start."""
        if not self.keep_windows:
            return
        if self.window is None or self.window.iteration != iteration:
            self.window = Window(
                iteration,
                span[0],
                span[1],
                engine.state_arrays(),
                start_of_next(rd, contract_size_of(self.instrument)),
                contract_size_of(self.instrument),
            )
            if self.shadows is not None:
                self.shadows.start(self.window, current)
        if self.keep_chunks:
            self.window.add(events, flush)
        if self.shadows is not None:
            self.shadows.run(events, flush)

    def end(self, ws_lag_p95_ms: float | None) -> Window | None:
        """The iteration ended: close the window and score the shadows on it."""
        w = self.window
        if w is None:
            return None
        w.ws_lag_p95_ms = ws_lag_p95_ms if ws_lag_p95_ms == ws_lag_p95_ms else None
        self._shadow_evals = []
        if self.shadows is not None:
            for cand, rep in self.shadows.finish(w.iteration):
                e = evaluate(
                    w, rep, self.profile, cand.overrides, self.policy.criterion, self.policy.folds
                )
                self._shadow_evals.append((cand, e))
        return w

    def shadow_rows(self) -> list[dict[str, Any]]:
        """The shadows' figures over the iteration, for the side-by-side report."""
        return [
            {"shadow": i + 1, "id": c.id, "overrides": e.overrides, **e.record()}
            for i, (c, e) in enumerate(self._shadow_evals)
        ]

    def drop_window(self) -> None:
        self.window = None
        self._shadow_evals = []

    # -- the walk-forward tuner's evaluator ------------------------------------------------------
    def evaluator(self, window: Window) -> Evaluator:
        self.cost = {}

        def run(cands: Sequence[Candidate]) -> list[Evaluation]:
            t0 = time.perf_counter()
            shadow = {
                tuple(c.overrides.as_dict().items()): (i, e)
                for i, (c, e) in enumerate(self._shadow_evals)
            }
            out: list[Evaluation | None] = [None] * len(cands)
            todo = []
            sources = []
            for j, c in enumerate(cands):
                hit = shadow.get(tuple(c.overrides.as_dict().items()))
                if hit is not None:
                    out[j] = hit[1]
                    sources.append(f"shadow {hit[0] + 1}")
                else:
                    todo.append(j)
                    sources.append("replay")
            replayed = self._replays(window, [cands[j] for j in todo])
            for j, e in zip(todo, replayed, strict=True):
                out[j] = e
            self.cost = {
                "replays": len(todo),
                "from_shadows": len(cands) - len(todo),
                "replay_events": len(todo) * window.n_events,
                "replay_cpu_s": sum(e.wall_s for e in replayed),
                "search_wall_s": time.perf_counter() - t0,
                "where": self.where if todo else "shadows",
                "sources": sources,
            }
            return [e for e in out if e is not None]

        return run

    def _replays(self, window: Window, cands: Sequence[Candidate]) -> list[Evaluation]:
        if not cands:
            return []
        crit, folds = self.policy.criterion, self.policy.folds
        args = (self.profile, self.instrument, self.seed)
        if self.client is None:
            return [replay_and_evaluate(window, *args, c.overrides, crit, folds) for c in cands]
        w = self.client.scatter(window, broadcast=True)
        futs = [
            self.client.submit(replay_and_evaluate, w, *args, c.overrides, crit, folds, pure=False)
            for c in cands
        ]
        return list(self.client.gather(futs))
