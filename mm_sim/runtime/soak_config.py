"""What a soak is given (``SoakConfig``) and what it returns (``SoakOutcome``): apart from the
runner (soak.py) so the commands and sweep cells that build one read only this."""

from __future__ import annotations

import signal
from collections.abc import AsyncIterator, Callable, MutableMapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from mm_sim.config import Overrides, Profile, RunSettings
from mm_sim.events import Instrument
from mm_sim.runtime.bus import EventChunk
from mm_sim.runtime.replay import CHUNK_NS, ReplayPlan
from mm_sim.runtime.tuner import Decision


@dataclass
class SoakConfig:
    settings: RunSettings
    profile: Profile
    overrides: Overrides
    feed_identity: dict[str, Any]
    instrument: Instrument
    events: np.ndarray
    plan: ReplayPlan
    artifacts: Path
    resume: bool = False
    tune: bool = True
    freeze_after_convergence: bool = False
    control: bool = False
    charts: bool = True  # final PNG charts (reports are written either way)
    chunk_events: int = 65536
    # Exchange time per replayed chunk. The emergency rule and operator edits act at chunk
    # boundaries, so with either possible it is part of what a soak reports (the default, 2 s);
    # a run with the tuner off and nobody editing (a sweep cell) may take a whole iteration,
    # which gives the same records in a fraction of the per-chunk work.
    chunk_ns: int = CHUNK_NS
    # A checkpoint after each iteration is what a killed soak resumes from; a run that is never
    # resumed (a sweep cell: a failed cell is run again from the start) can skip writing them.
    checkpoints: bool = True
    # Reports rebuilt after each iteration (so a killed or watched soak has current ones);
    # without, they are built once at the end.
    interim_reports: bool = True
    # soak/fills.csv rewritten with the reports; a run that drops its records afterwards (a
    # sweep cell without --keep-records) drops the CSV with them, so need not write it.
    fills_csv: bool = True
    # Rules run as model arms beside the primary (runtime/model_arms.py; --model-arms).
    model_arms: tuple[str, ...] = ()
    # Added to local_ts of every replayed chunk: the run's clock model (mm_sim.feeds.clock).
    clock_shift_ns: int = 0
    # ws_lag p95 by feed rows, kept by a caller that replays the same events and shift again (a
    # sweep worker): each iteration's figure is computed once (runtime/feed_lag.py).
    lag_memo: MutableMapping[tuple[int, int], float] | None = None
    # An alternative chunk source (a live feed): called with the first iteration to run.
    # None replays ``events`` along ``plan``.
    source: Callable[[int], AsyncIterator[EventChunk]] | None = None
    # A Dask client for the walk-forward replays (--scheduler; opened before the event loop
    # starts, as Dask's own set-up runs one) and its description; None = in this process.
    replay_client: Any = None
    replay_where: str = "in-process"
    # What the command says about the run (its clock, notes), called once the run directory
    # has accepted it: a refused resume is one line, not the clock line and then the error.
    announce: Callable[[], None] | None = None


@dataclass
class SoakOutcome:
    final: dict[str, Any]
    interrupted: bool
    iterations_done: int
    decisions: list[Decision] = field(default_factory=list)
    stop_signal: int = signal.SIGINT  # what interrupted it (the exit status is 128 + this)
