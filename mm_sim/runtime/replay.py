"""Replay source: cuts a feed into iterations of simulated time and chunks of events.

Iteration ``k`` covers exchange times ``[t0 + k*L, t0 + (k+1)*L)`` where ``t0`` is the first
event's time. Chunk boundaries depend only on the feed and the chunk size, never on timing, so a
replayed soak is deterministic; ``speed`` only adds wall-clock sleeps between chunks.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass

import numpy as np

from mm_sim.feeds.clock import shift_local
from mm_sim.runtime.bus import EventChunk


@dataclass(frozen=True)
class IterationPlan:
    index: int
    lo: int  # first event index
    hi: int  # one past the last event index
    start_ns: int
    end_ns: int
    partial: bool  # the feed ended before the iteration's end


@dataclass(frozen=True)
class ReplayPlan:
    iterations: list[IterationPlan]
    requested: int
    note: str | None  # why fewer/shorter iterations than requested, for the user


def replay_seconds(iterations: int, iteration_minutes: float) -> float:
    """How long a generated feed must be for a run: one spare second completes the last
    iteration."""
    return iterations * iteration_minutes * 60.0 + 1.0


def plan_iterations(events: np.ndarray, n_iterations: int, iteration_ns: int) -> ReplayPlan:
    if len(events) == 0:
        return ReplayPlan([], n_iterations, "the feed has no events")
    ts = np.asarray(events["exch_ts"])
    t0 = int(ts[0])
    t_last = int(ts[-1])
    plans: list[IterationPlan] = []
    for k in range(n_iterations):
        start = t0 + k * iteration_ns
        end = start + iteration_ns
        if start > t_last:
            break
        lo = int(np.searchsorted(ts, start, side="left")) if k else 0
        hi = int(np.searchsorted(ts, end, side="left"))
        plans.append(IterationPlan(k, lo, hi, start, end, partial=end > t_last + 1))
    note = None
    if len(plans) < n_iterations or (plans and plans[-1].partial):
        span_min = (t_last - t0) / 60e9
        want_min = n_iterations * iteration_ns / 60e9
        done = sum(1 for p in plans if not p.partial)
        note = (
            f"the feed covers {span_min:.1f} simulated minutes of the {want_min:.0f} requested: "
            f"{done} full iteration(s)" + _partial_note(plans, t_last) + "; the soak ends there"
        )
    return ReplayPlan(plans, n_iterations, note)


def _partial_note(plans: list[IterationPlan], t_last: int) -> str:
    if not plans or not plans[-1].partial:
        return ""
    return f" and a partial one ({(t_last - plans[-1].start_ns) / 60e9:.1f} min)"


CHUNK_NS = 2_000_000_000


async def _stopped_within(stop: asyncio.Event | None, seconds: float) -> bool:
    """Wait ``seconds``; True as soon as ``stop`` is set (then the wait is cut short)."""
    if stop is None:
        await asyncio.sleep(seconds)
        return False
    try:
        await asyncio.wait_for(stop.wait(), seconds)
    except TimeoutError:
        return False
    return True


async def replay_chunks(
    events: np.ndarray,
    plan: ReplayPlan,
    chunk_events: int,
    start_iteration: int = 0,
    speed: float | None = None,
    chunk_ns: int = CHUNK_NS,
    clock_shift_ns: int = 0,
    stop: asyncio.Event | None = None,
) -> AsyncIterator[EventChunk]:
    """Yield the chunks of each planned iteration from ``start_iteration`` on.

    A chunk ends after ``chunk_ns`` of exchange time or ``chunk_events`` events, whichever
    comes first. Boundaries depend on the feed only — never on ``speed`` or timing — so paced
    and unpaced replays of the same feed take the same decisions at the same events.

    ``clock_shift_ns`` is added to every chunk's ``local_ts`` (a copy; the feed stays as stored)
    — the run's clock model (``mm_sim.feeds.clock``), applied here so the core, ``ws_lag`` and
    every report downstream see corrected clocks. A constant shift keeps the local order, and
    iterations and chunks are cut on exchange time, so the plan is the same with any shift.

    ``stop`` ends a paced replay during its wait, not after it: at ``--speed 0.1`` a 2 s chunk
    is a 20 s wait, which Ctrl-C used to sit through before the soak could stop.
    """
    wall0 = time.monotonic()
    sim0: int | None = None
    last = plan.iterations[-1].index if plan.iterations else -1
    ts_all = events["exch_ts"]
    for it in plan.iterations:
        if it.index < start_iteration:
            continue
        lo = it.lo
        while True:
            t_end = int(ts_all[lo]) + chunk_ns if lo < it.hi else 0
            hi = min(lo + chunk_events, it.hi)
            if lo < hi:
                hi = lo + int(np.searchsorted(ts_all[lo:hi], t_end, side="left"))
                hi = max(hi, lo + 1)
            chunk = events[lo:hi]
            if clock_shift_ns and len(chunk):
                chunk = shift_local(chunk, clock_shift_ns)
            end_it = hi >= it.hi
            if speed is not None and len(chunk):
                t_sim = int(chunk["exch_ts"][-1])
                if sim0 is None:
                    sim0 = int(chunk["exch_ts"][0])
                    wall0 = time.monotonic()
                ahead = (t_sim - sim0) / 1e9 / speed - (time.monotonic() - wall0)
                if ahead > 0 and await _stopped_within(stop, ahead):
                    return
            yield EventChunk(
                it.index, chunk, end_it, end_of_feed=end_it and it.index == last, rows=(lo, hi)
            )
            if end_it:
                break
            lo = hi
            # Let the other tasks (progress, operator watcher) run between chunks.
            await asyncio.sleep(0)
