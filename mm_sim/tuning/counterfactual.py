"""One counterfactual: an iteration replayed from its start state under other overrides, scored.

The replay is the soak's own engine on the soak's own chunks (``Window``), so with the
primary's overrides it reproduces the primary's records bit for bit, and with a candidate's it
is exactly the iteration a soak started from the same state with those overrides would have run
(tests/test_walkforward.py checks both). Its figures come from the report's own code
(``iteration_parts``/``section``) on the replay's records.

The score is the sweep's criterion (``mm_sim.sweep.select``) with the iteration's folds as its
feeds: the window is cut into ``folds`` consecutive spans of exchange time (at marks, so each
fold's PnL starts where the previous one ended), each fold gets the row a sweep run would get,
and ``score = median(fold net_bps) − w × MAD − penalty × failed hard gates per fold``. A
candidate that earns in one fold only does not win on its median.
"""

from __future__ import annotations

import hashlib
import time
from dataclasses import dataclass
from typing import Any

import numpy as np

from mm_sim.config import Overrides, Profile
from mm_sim.core.engine import Engine
from mm_sim.events import Instrument
from mm_sim.report.bootstrap import BlockSeries, series_of
from mm_sim.report.edge import Parts, Slice, State, initial_state, iteration_parts, section
from mm_sim.report.gate import evaluate as gate_evaluate
from mm_sim.sweep.cell import METRICS
from mm_sim.sweep.grid import Cell
from mm_sim.sweep.select import Criterion, summarize_feeds
from mm_sim.tuning.window import Window

RECORDS = ("fills", "actions", "blocks", "marks")


@dataclass
class Replay:
    """The records an engine produced over a window (marks end with the closing mark)."""

    records: dict[str, np.ndarray]
    post_only_rejected: int

    def digest(self) -> str:
        """sha256 over the four record arrays' bytes: equal digests, identical records."""
        h = hashlib.sha256()
        for name in RECORDS:
            h.update(np.ascontiguousarray(self.records[name]).tobytes())
        return h.hexdigest()


@dataclass
class Evaluation:
    """A candidate's figures over a window (small: what crosses a Dask wire)."""

    overrides: dict[str, float]
    net_bps: float | None
    fills: int
    fold_net_bps: list[float]
    score: float
    gate_failures: float
    blocks: BlockSeries | None
    digest: str
    wall_s: float

    def record(self) -> dict[str, Any]:
        return {
            "net_bps": self.net_bps,
            "fills": self.fills,
            "fold_net_bps": self.fold_net_bps,
            "score": self.score,
            "gate_failures_per_fold": self.gate_failures,
            "records_sha256": self.digest,
        }


def start_engine(
    window: Window, profile: Profile, instrument: Instrument, seed: int, overrides: Overrides
) -> Engine:
    """An engine in the window's start state, running ``overrides`` from its first event."""
    eng = Engine(profile, overrides, instrument, seed)
    eng.load_state(window.state)
    eng.set_overrides(overrides)
    return eng


def rejected(eng: Engine) -> int:
    return int(eng.counters()["other"]["post_only_rejected"])


def replay(
    window: Window, profile: Profile, instrument: Instrument, seed: int, overrides: Overrides
) -> Replay:
    eng = start_engine(window, profile, instrument, seed, overrides)
    rej0 = rejected(eng)
    out: dict[str, list[np.ndarray]] = {k: [] for k in RECORDS}
    for events, flush in zip(window.chunks, window.flush, strict=True):
        res = eng.run(events, flush=flush)
        for k in RECORDS:
            out[k].append(getattr(res, k))
    out["marks"].append(eng.mark_now())  # the primary closes an iteration on a mark too
    records = {k: np.concatenate(v) for k, v in out.items()}
    records["fills"]["iteration"] = window.iteration
    return Replay(records, rejected(eng) - rej0)


def _cut(records: dict[str, np.ndarray], window: Window, folds: int) -> list[dict[str, Any]]:
    """The records of each fold. A fold ends at the first mark at or after its time edge and
    holds every record stamped at or before that mark (a mark includes what happened up to
    it); what comes after the last cut belongs to the last fold."""
    ts = records["marks"]["ts"]
    span = window.end_ns - window.start_ns
    edges = [window.start_ns + span * j // folds for j in range(1, folds)]
    idx = np.searchsorted(ts, edges, side="left")
    # A cut needs a mark at or after it with another mark after that, so that no fold is
    # without marks to value it (a feed gap can leave a span without any): fewer folds then.
    cuts = np.unique(ts[idx[idx < len(ts) - 1]])
    out: list[dict[str, Any]] = [{} for _ in range(len(cuts) + 1)]
    for name in RECORDS:
        r = records[name]
        which = np.searchsorted(cuts, r["ts"], side="left")
        for j in range(len(out)):
            out[j][name] = r[which == j]
    return out


def evaluate(
    window: Window,
    rep: Replay,
    profile: Profile,
    overrides: Overrides,
    criterion: Criterion,
    folds: int,
    wall_s: float = 0.0,
) -> Evaluation:
    g = profile.gates
    whole = _parts(window, rep.records, window.start, rep.post_only_rejected)
    sec = section([whole], window.iteration, g.hard.adverse_p95_max, g.venue_rules)
    rows: dict[tuple[str, str], dict[str, Any]] = {}
    labels = []
    start = window.start
    for j, part in enumerate(_cut(rep.records, window, folds)):
        p = _parts(window, part, start, None)
        fsec = section([p], window.iteration, g.hard.adverse_p95_max, g.venue_rules)
        row: dict[str, Any] = {m: getattr(fsec, m) for m in METRICS}
        row["verdict"] = gate_evaluate(fsec, g).verdict
        labels.append(f"fold{j}")
        rows[("c", labels[-1])] = row
        start = p.end
    summary = summarize_feeds(Cell(0, "c", ()), labels, rows, g)
    assert summary is not None
    return Evaluation(
        overrides=overrides.as_dict(),
        net_bps=sec.net_bps,
        fills=sec.fills,
        fold_net_bps=list(summary.net_bps),
        score=criterion.score(summary),
        gate_failures=summary.gate_failures,
        blocks=series_of([whole], g.error_bars),
        digest=rep.digest(),
        wall_s=wall_s,
    )


def _parts(
    window: Window, records: dict[str, np.ndarray], start: State | None, rejected: int | None
) -> Parts:
    marks = records["marks"]
    if start is None:  # a run's first iteration starts at its first mark, as the reports say
        start = initial_state(marks, window.contract_size)
    sl = Slice(
        iteration=window.iteration,
        fills=records["fills"],
        actions=records["actions"],
        blocks=records["blocks"],
        marks=marks,
        start=start,
        ws_lag_p95_ms=window.ws_lag_p95_ms,
        post_only_rejected=rejected,
        contract_size=window.contract_size,
    )
    return iteration_parts(sl)


def replay_and_evaluate(
    window: Window,
    profile: Profile,
    instrument: Instrument,
    seed: int,
    overrides: Overrides,
    criterion: Criterion,
    folds: int,
) -> Evaluation:
    """What a worker runs for one candidate (in this process or on a Dask worker)."""
    t0 = time.perf_counter()
    rep = replay(window, profile, instrument, seed, overrides)
    wall = time.perf_counter() - t0
    return evaluate(window, rep, profile, overrides, criterion, folds, wall)
