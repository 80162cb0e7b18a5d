"""The plain-Python reference's pieces: a dict book, order and side records, its counters and
result, and the RNG (xoshiro256** on Python ints). Kept apart from ``reference.RefEngine`` so
the engine reads as the event loop it mirrors."""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from mm_sim.events import KIND_CLEAR, KIND_DEPTH, KIND_SNAPSHOT

NEVER = -(1 << 62)  # "no time yet": earlier than any event


def tick_of(price: float, tick: float) -> int:
    return math.floor(price / tick + 0.5)


class RefBook:
    """Price levels in two dicts keyed by absolute tick number."""

    def __init__(self) -> None:
        self.bids: dict[int, float] = {}
        self.asks: dict[int, float] = {}

    def apply(self, kind: int, side: int, t: int, qty: float) -> None:
        if kind == KIND_CLEAR:
            self.bids.clear()
            self.asks.clear()
            return
        if kind not in (KIND_DEPTH, KIND_SNAPSHOT):
            return
        levels = self.bids if side > 0 else self.asks
        if qty > 0.0:
            levels[t] = qty
        else:
            levels.pop(t, None)

    def best_bid(self) -> int | None:
        return max(self.bids) if self.bids else None

    def best_ask(self) -> int | None:
        return min(self.asks) if self.asks else None

    def mid(self, tick: float) -> float:
        b, a = self.best_bid(), self.best_ask()
        if b is None or a is None:
            return math.nan
        return (b + a) * tick * 0.5

    def qty(self, side: int, t: int) -> float:
        return (self.bids if side > 0 else self.asks).get(t, 0.0)

    def depth(self, side: int, n: int) -> float:
        levels = self.bids if side > 0 else self.asks
        total = 0.0
        for t in sorted(levels, reverse=side > 0)[:n]:
            total += levels[t]
        return total

    def opposite_through(self, side: int, px: int) -> list[tuple[int, float]]:
        """Opposite levels at or through ``px``, best first."""
        if side > 0:
            return [(t, self.asks[t]) for t in sorted(self.asks) if t <= px]
        return [(t, self.bids[t]) for t in sorted(self.bids, reverse=True) if t >= px]


@dataclass
class RefOrder:
    oid: int
    side: int
    px: int
    qty: float
    decided: int
    quote_px: float
    mid_dec: float
    status: str = "pending"  # pending | resting | done
    filled: float = 0.0
    rem: float = 0.0
    front: float = 0.0
    level: float = 0.0
    traded: float = 0.0
    cross_used: float = 0.0
    rest_ts: int = 0


@dataclass
class RefOp:
    kind: int
    order: RefOrder
    arrive: int
    ack: int
    px: int
    decided: int
    qty: float
    mid: float
    done: bool = False


@dataclass
class RefSide:
    order: RefOrder | None = None
    px: int = 0
    lots: int = 0
    decided: int = NEVER
    last_act: int = NEVER
    blocked: tuple[int, int, int, int] | None = None


@dataclass
class RefResult:
    fills: np.ndarray
    actions: np.ndarray
    blocks: np.ndarray
    marks: np.ndarray


@dataclass
class RefCounters:
    attempts: dict[int, int] = field(default_factory=lambda: {1: 0, 2: 0, 3: 0})
    sent: dict[int, int] = field(default_factory=lambda: {1: 0, 2: 0, 3: 0})
    blocks: dict[int, int] = field(default_factory=lambda: {0: 0, 1: 0, 2: 0, 3: 0})
    fills: int = 0
    maker: int = 0
    taker: int = 0
    cancels_done: int = 0
    cancels_lost_race: int = 0
    replaces_rejected: int = 0
    no_decision: int = 0
    decisions: int = 0
    events: int = 0
    post_only_rejected: int = 0
    clamped: int = 0


class RefRng:
    """xoshiro256** seeded by splitmix64, on Python ints (reference of ``mm_sim.core.rng``)."""

    MASK = (1 << 64) - 1

    def __init__(self, seed: int) -> None:
        x = seed & self.MASK
        self.s = []
        for _ in range(4):
            x = (x + 0x9E3779B97F4A7C15) & self.MASK
            z = x
            z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & self.MASK
            z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & self.MASK
            self.s.append(z ^ (z >> 31))

    def _rotl(self, x: int, k: int) -> int:
        return ((x << k) | (x >> (64 - k))) & self.MASK

    def next(self) -> int:
        s0, s1, s2, s3 = self.s
        result = (self._rotl((s1 * 5) & self.MASK, 7) * 9) & self.MASK
        t = (s1 << 17) & self.MASK
        s2 ^= s0
        s3 ^= s1
        s1 ^= s2
        s0 ^= s3
        s2 ^= t
        s3 = self._rotl(s3, 45)
        self.s = [s0, s1, s2, s3]
        return result

    def uniform(self) -> float:
        return (self.next() >> 11) * (1.0 / 9007199254740992.0)
