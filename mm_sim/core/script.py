"""Hand-built event streams for tests and examples (prices in ticks, times in ms)."""

from __future__ import annotations

import numpy as np

from mm_sim.events import EVENT_DTYPE, KIND_CLEAR, KIND_DEPTH, KIND_SNAPSHOT, KIND_TRADE


class Script:
    """Builds small event streams by hand (tests, examples): prices in ticks, times in ms.

    ``at(ms)`` moves the exchange clock; every event gets ``local = exch + lag``.
    """

    def __init__(self, tick: float, t0_ns: int = 1_000_000_000_000, lag_ms: float = 0.0) -> None:
        self.tick = tick
        self.t0 = t0_ns
        self.now_ms = 0.0
        self.lag_ms = lag_ms
        self.rows: list[tuple[int, int, float, float, int, int]] = []

    def at(self, ms: float, lag_ms: float | None = None) -> Script:
        self.now_ms = ms
        if lag_ms is not None:
            self.lag_ms = lag_ms
        return self

    def _add(self, kind: int, side: int, t: int, qty: float) -> Script:
        exch = self.t0 + round(self.now_ms * 1e6)
        local = exch + round(self.lag_ms * 1e6)
        self.rows.append((exch, local, t * self.tick, qty, kind, side))
        return self

    def clear(self) -> Script:
        return self._add(KIND_CLEAR, 0, 0, 0.0)

    def snapshot(self, bids: dict[int, float], asks: dict[int, float]) -> Script:
        self.clear()
        for t, q in bids.items():
            self._add(KIND_SNAPSHOT, 1, t, q)
        for t, q in asks.items():
            self._add(KIND_SNAPSHOT, -1, t, q)
        return self

    def depth(self, side: int, t: int, qty: float) -> Script:
        return self._add(KIND_DEPTH, side, t, qty)

    def trade(self, aggressor: int, t: int, qty: float) -> Script:
        return self._add(KIND_TRADE, aggressor, t, qty)

    def events(self) -> np.ndarray:
        return np.array(self.rows, dtype=EVENT_DTYPE)
