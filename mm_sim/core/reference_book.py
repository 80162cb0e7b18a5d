"""Plain-Python L2 book: the oracle the numba book kernel is tested against.

It applies the same event semantics as ``mm_sim.core.book`` (see ``mm_sim.events``) with none of
its machinery: levels live in two sorted maps keyed by integer tick, there is no window, nothing
is ever dropped. Prices are converted to ticks and back with exactly the kernel's arithmetic, so
the two books can be compared with ``==`` on floats.

Speed is not a goal here; obviousness is.
"""

from __future__ import annotations

import math

import numpy as np
from sortedcontainers import SortedDict

from mm_sim.events import KIND_CLEAR, KIND_DEPTH, KIND_SNAPSHOT


def price_to_tick(price: float, tick_size: float) -> int:
    """Nearest tick, rounding half up: the kernel's ``floor(price / tick + 0.5)``."""
    return math.floor(price / tick_size + 0.5)


class ReferenceBook:
    """An L2 book of absolute level quantities, bids and asks keyed by tick number."""

    def __init__(self, tick_size: float) -> None:
        if not tick_size > 0:
            raise ValueError(f"tick_size must be > 0, got {tick_size}")
        self.tick_size = float(tick_size)
        self.bids: SortedDict = SortedDict()
        self.asks: SortedDict = SortedDict()
        self.ignored = 0  # updates whose price is not a finite number of ticks

    # -- updates ---------------------------------------------------------------------------

    def clear(self) -> None:
        self.bids.clear()
        self.asks.clear()

    def apply(self, kind: int, side: int, price: float, qty: float) -> None:
        """One event. CLEAR empties the book; SNAPSHOT and DEPTH set a level; others are ignored."""
        if kind == KIND_CLEAR:
            self.clear()
            return
        if kind not in (KIND_SNAPSHOT, KIND_DEPTH):
            return
        x = price / self.tick_size
        if not abs(x) < 4.0e18:
            self.ignored += 1
            return
        tick = price_to_tick(price, self.tick_size)
        levels = self.bids if side > 0 else self.asks
        if qty > 0.0:
            levels[tick] = float(qty)
        else:  # zero, negative or NaN quantity: the level is gone
            levels.pop(tick, None)

    def apply_events(self, events: np.ndarray) -> None:
        for e in events:
            self.apply(int(e["kind"]), int(e["side"]), float(e["price"]), float(e["qty"]))

    # -- queries ---------------------------------------------------------------------------

    @property
    def best_bid_tick(self) -> int | None:
        return self.bids.peekitem(-1)[0] if self.bids else None

    @property
    def best_ask_tick(self) -> int | None:
        return self.asks.peekitem(0)[0] if self.asks else None

    @property
    def best_bid(self) -> float:
        """Best bid price, NaN when there are no bids."""
        t = self.best_bid_tick
        return math.nan if t is None else t * self.tick_size

    @property
    def best_ask(self) -> float:
        t = self.best_ask_tick
        return math.nan if t is None else t * self.tick_size

    @property
    def mid(self) -> float:
        """Mid of the touch, NaN when either side is empty."""
        b = self.best_bid_tick
        a = self.best_ask_tick
        if b is None or a is None:
            return math.nan
        return (b + a) * self.tick_size * 0.5

    def qty_at(self, side: int, price: float) -> float:
        levels = self.bids if side > 0 else self.asks
        return float(levels.get(price_to_tick(price, self.tick_size), 0.0))

    def top_levels(self, side: int, n: int) -> list[tuple[float, float]]:
        """The best ``n`` levels of one side as (price, qty), best first."""
        if side > 0:
            ticks = list(self.bids.islice(max(len(self.bids) - n, 0), reverse=True))
            return [(t * self.tick_size, float(self.bids[t])) for t in ticks]
        ticks = list(self.asks.islice(0, n))
        return [(t * self.tick_size, float(self.asks[t])) for t in ticks]

    def depth_near_touch(self, side: int, n: int) -> float:
        """Total quantity in the best ``n`` levels of one side (summed best first)."""
        total = 0.0
        for _, q in self.top_levels(side, n):
            total += q
        return total

    def levels(self, side: int) -> dict[int, float]:
        """All levels of one side as {tick: qty}."""
        return dict(self.bids if side > 0 else self.asks)
