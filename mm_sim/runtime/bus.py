"""In-process event bus: typed messages between the soak's asyncio tasks.

Topics are message classes; each subscriber gets its own bounded queue, so a slow consumer
applies back-pressure to its producer instead of losing messages. The feed publishes whole
chunks of events (tens of thousands per message), so the bus costs microseconds per chunk, not
per event.
"""

from __future__ import annotations

import asyncio
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from mm_sim.config import Overrides


@dataclass(frozen=True)
class EventChunk:
    """A slice of feed events belonging to one iteration."""

    iteration: int
    events: np.ndarray
    end_of_iteration: bool  # the last chunk of this iteration
    end_of_feed: bool = False  # no more data after this chunk
    rows: tuple[int, int] | None = None  # a replayed chunk's rows [lo, hi) of its feed


@dataclass(frozen=True)
class ChunkDone:
    """What the core produced for one chunk (records already copied out of the kernel)."""

    iteration: int
    arm: str  # "tuned" or "control"
    fills: np.ndarray
    actions: np.ndarray
    blocks: np.ndarray
    marks: np.ndarray
    sim_ts: int  # exchange time of the last event processed
    n_events: int
    end_of_iteration: bool
    end_of_feed: bool


@dataclass(frozen=True)
class OverridesChanged:
    overrides: Overrides
    source: str  # "tuner", "emergency", "operator"
    reason: str = ""


@dataclass(frozen=True)
class IterationCommitted:
    """The recorder has durably written an iteration; its report drives the tuner."""

    iteration: int
    report: dict[str, Any]  # that iteration's edge totals and gate values
    partial: bool = False


@dataclass(frozen=True)
class Stop:
    reason: str


@dataclass
class Bus:
    maxsize: int = 8
    _subs: dict[type, list[asyncio.Queue[Any]]] = field(default_factory=lambda: defaultdict(list))

    def subscribe(self, *topics: type) -> asyncio.Queue[Any]:
        """One queue receiving every message of the given topics, in publication order.

        A task waiting on several topics reads one queue, so no message can be lost between
        competing ``get`` calls and the order between topics is preserved.
        """
        q: asyncio.Queue[Any] = asyncio.Queue(self.maxsize)
        for topic in topics:
            self._subs[topic].append(q)
        return q

    async def publish(self, msg: object) -> None:
        for q in self._subs.get(type(msg), ()):
            await q.put(msg)
