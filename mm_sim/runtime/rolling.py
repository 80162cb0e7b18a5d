"""The emergency rule's input: net_bps over the last few simulated minutes, from marks and fills.

Apart from the soak because it is its own small job: a window of equity and notional that the
runner feeds after every chunk and the tuner task reads.
"""

from __future__ import annotations

from collections import deque

import numpy as np

ROLLING_WINDOW_NS = 5 * 60 * 1_000_000_000


class Rolling:
    """Rolling net_bps over the last few simulated minutes, from marks and fills."""

    def __init__(self, contract_size: float = 0.0) -> None:
        self.equity: deque[tuple[int, float]] = deque()
        self.fills: deque[tuple[int, float]] = deque()
        self.csize = contract_size  # inverse: equity and notional in the base coin

    def add(self, marks: np.ndarray, fills: np.ndarray) -> None:
        # Whole arrays at once (a 3 h soak has 100 k marks): the same float operations in the
        # same order as one record at a time, so the same bits. The window is trimmed from the
        # front up to the first record at or after the horizon, as if the new records had been
        # appended first; those it would drop at once are not made (a sweep's one-chunk
        # iterations would build tuples for 30 minutes of marks to keep 5).
        c = self.csize
        m = marks[np.isfinite(marks["mid"])]
        last = int(m["ts"][-1]) if len(m) else (self.equity[-1][0] if self.equity else None)
        if last is not None:
            horizon = last - ROLLING_WINDOW_NS
            while self.equity and self.equity[0][0] < horizon:
                self.equity.popleft()
            while self.fills and self.fills[0][0] < horizon:
                self.fills.popleft()
            if not self.equity:
                m = m[_first_at_or_after(m["ts"], horizon) :]
            if not self.fills:
                fills = fills[_first_at_or_after(fills["ts"], horizon) :]
        if len(m):
            pos = m["position"]
            pos_value = -pos * c / m["mid"] if c > 0 else pos * m["mid"]
            self.equity.extend(zip(m["ts"].tolist(), (m["cash"] + pos_value).tolist(), strict=True))
        if len(fills):
            q, px = fills["qty"], fills["price"]
            notional = q * c / px if c > 0 else q * px
            self.fills.extend(zip(fills["ts"].tolist(), notional.tolist(), strict=True))

    def net_bps(self) -> tuple[float, int]:
        notional = sum(n for _, n in self.fills)
        if len(self.equity) < 2 or notional <= 0:
            return float("nan"), len(self.fills)
        pnl = self.equity[-1][1] - self.equity[0][1]
        return pnl / notional * 1e4, len(self.fills)

    def reset(self) -> None:
        self.equity.clear()
        self.fills.clear()


def _first_at_or_after(ts: np.ndarray, horizon: int) -> int:
    """Index of the first record at or after ``horizon`` (the length when none is): where
    trimming from the front stops, whatever order the rest is in."""
    at = ts >= horizon
    return int(np.argmax(at)) if at.any() else len(ts)
