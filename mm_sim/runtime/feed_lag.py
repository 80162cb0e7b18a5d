"""An iteration's ws_lag_p95_ms: the 95th percentile of local minus exchange time, in ms.

Why a class of its own: on a replayed feed the iteration's chunks are consecutive rows of the
feed, so nothing needs holding while it runs: its lags are computed from those rows at its end,
once. And they are the same for every run of the same feed, iteration plan and clock shift, so
a caller that replays one feed many times (a sweep worker, ``sweep/cache.py``) passes a memo and
each iteration's figure is computed on its first run only — a few percent of a sweep run
(subtracting and partitioning a million lags), for the same bits.

A live source's chunks have no feed rows; their lags are kept chunk by chunk as they come, as
are a replay's if its chunks ever stop following each other.
"""

from __future__ import annotations

from collections.abc import MutableMapping

import numpy as np

from mm_sim.runtime.bus import EventChunk


def lags_ms(events: np.ndarray, shift_ns: int = 0) -> np.ndarray:
    """Each event's local minus exchange time in ms, with the clock model's shift applied as
    ``feeds.clock.shift_local`` applies it (an event stamped with its receipt time only moves
    with it, so its lag stays 0)."""
    lag = np.subtract(events["local_ts"], events["exch_ts"])
    if shift_ns:
        np.add(lag, np.int64(shift_ns), out=lag, where=lag != 0)
    # int64 / float: each lag converted to float64 and divided in one pass, the bits of
    # astype-then-divide without its temporary (the feed's size again)
    return np.divide(lag, 1e6)


class IterationLag:
    """Collects an iteration's lags (``add`` per chunk) and gives their p95 at its end."""

    def __init__(
        self,
        feed: np.ndarray,
        shift_ns: int,
        memo: MutableMapping[tuple[int, int], float] | None = None,
    ) -> None:
        """``feed``: the replayed events the chunks' rows index (shifted by ``shift_ns`` on
        replay); ``memo``: p95 by feed rows, kept by a caller for its later runs on the same
        feed and shift (never shared across feeds or shifts)."""
        self._feed = feed
        self._shift = shift_ns
        self._memo = memo
        self._rows: tuple[int, int] | None = None
        self._parts: list[np.ndarray] = []

    def add(self, chunk: EventChunk) -> None:
        if not len(chunk.events):
            return
        if chunk.rows is not None and not self._parts:
            if self._rows is None:
                self._rows = chunk.rows
                return
            if self._rows[1] == chunk.rows[0]:
                self._rows = (self._rows[0], chunk.rows[1])
                return
        self._materialize()
        self._parts.append(lags_ms(chunk.events))

    def _materialize(self) -> None:
        if self._rows is not None:
            lo, hi = self._rows
            self._parts.append(lags_ms(self._feed[lo:hi], self._shift))
            self._rows = None

    def p95(self) -> float:
        """The iteration's figure (NaN without events); starts the next iteration."""
        rows = self._rows if not self._parts else None  # the iteration is these feed rows
        if rows is not None and self._memo is not None and rows in self._memo:
            self._rows = None
            return self._memo[rows]
        self._materialize()
        parts, self._parts = self._parts, []
        lag = parts[0] if len(parts) == 1 else np.concatenate([np.zeros(0), *parts])
        # In place: the lags are this iteration's own (the same order statistics, no copy)
        p95 = float(np.percentile(lag, 95, overwrite_input=True)) if len(lag) else float("nan")
        if rows is not None and self._memo is not None:
            self._memo[rows] = p95
        return p95
