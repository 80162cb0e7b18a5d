"""The fake exchange's pieces that are not the server: its true book, fault plan and frames.

Why a module of its own: tests and the server share them, and each is small and pure (no
event loop, no sockets), so they can be checked on their own.
"""

from __future__ import annotations

import random
import time
from collections import Counter, deque
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from aiohttp import web

from mm_sim.events import ASK, KIND_TRADE

STREAM_FAULTS = ("gap", "dup", "reorder", "disconnect", "stall", "burst", "malformed", "shutdown")
SNAPSHOT_FAULTS = ("stale-snapshot", "rate-limit")
FAULTS = STREAM_FAULTS + SNAPSHOT_FAULTS
# One-shot faults only reachable through /fake/inject (tests of precise situations).
INJECT_ONLY = (
    "gap-after-snapshot",
    "snapshot-error",
    "ban",
    "crossed-snapshot",
    "bad-request",
    "snapshot-inside",
)

BATCH_NS = 100_000_000
LATE_KEEP = 1 << 16  # send-lateness samples kept for /fake/info
STALL_S = 0.001  # a message this late starts (or extends) a stall episode in /fake/info

# Share of trades that arrived after the depth diff already carrying their liquidity change,
# measured in the real captures in ../shared/data (issue 14): the fake's --late-trades auto.
LATE_TRADE_RATES = {"spot": 0.228, "futures": 0.077}


# (side, price, qty); qty 0 removes the level. Stored as tuples: a tuple of floats is not
# tracked by the cyclic GC, so the kept history does not make every collection slower.
Changes = tuple[tuple[int, float, float], ...]


def wire_symbol(symbol: str) -> str:
    """Binance symbols are upper-case alphanumerics, with an underscore before a COIN-M
    contract's type or delivery date (BTCUSD_PERP, BTCUSD_250627); the synthetic one has a
    hyphen."""
    return "".join(ch for ch in symbol.upper() if ch.isalnum() or ch == "_")


def ws_frame(data: bytes) -> bytes:
    """One unmasked, unfragmented websocket text frame (server to client, RFC 6455 5.2)."""
    n = len(data)
    if n < 126:
        return bytes((0x81, n)) + data
    if n < 65536:
        return bytes((0x81, 126)) + n.to_bytes(2, "big") + data
    return bytes((0x81, 127)) + n.to_bytes(8, "big") + data


class TrueBook:
    """The exchange's book plus enough history to show it at any recent update id.

    History is kept as the last ``history`` diffs on top of a base book: a query replays the
    diffs up to the asked id on a copy of the base, so memory stays bounded and answers exact.
    """

    def __init__(self, history: int = 5000) -> None:
        self.bids: dict[float, float] = {}
        self.asks: dict[float, float] = {}
        self.update_id = 0
        self._base: tuple[dict[float, float], dict[float, float], int] = ({}, {}, 0)
        self._hist: deque[tuple[int, int, Changes]] = deque()
        self._max = history

    @staticmethod
    def _apply(bids: dict[float, float], asks: dict[float, float], changes: Changes) -> None:
        for side, p, q in changes:
            book = asks if side == ASK else bids
            if q > 0.0:
                book[p] = q
            else:
                book.pop(p, None)

    def apply(self, first_id: int, final_id: int, changes: Changes) -> None:
        self._apply(self.bids, self.asks, changes)
        self.update_id = final_id
        self._hist.append((first_id, final_id, changes))
        if len(self._hist) > self._max:
            _, u, old = self._hist.popleft()
            b, a, _ = self._base
            self._apply(b, a, old)
            self._base = (b, a, u)

    def ids(self) -> list[int]:
        return [u for _, u, _ in self._hist]

    def at(self, update_id: int) -> tuple[dict[float, float], dict[float, float]] | None:
        """The book right after the diff ending at ``update_id`` (None if unknown/expired)."""
        if update_id == self.update_id:
            return dict(self.bids), dict(self.asks)
        b0, a0, base_id = self._base
        if update_id < base_id:
            return None
        bids, asks = dict(b0), dict(a0)
        if update_id == base_id:
            return bids, asks
        for _, u, ch in self._hist:
            if u > update_id:
                return None
            self._apply(bids, asks, ch)
            if u == update_id:
                return bids, asks
        return None

    def inside(self) -> tuple[int, tuple[dict[float, float], dict[float, float]]] | None:
        """A book taken strictly inside a recent diff's ``[U, u]`` range: the diff's first
        changes applied, the rest not (each change has its own update id), as a venue's
        snapshot can be taken while an event is being applied. None without such a diff."""
        hist = list(self._hist)
        for i in range(len(hist) - 1, max(-1, len(hist) - 21), -1):
            first, _final, changes = hist[i]
            if len(changes) < 3:
                continue
            prev = hist[i - 1][1] if i > 0 else self._base[2]
            book = self.at(prev)
            if book is None:
                return None
            k = len(changes) // 2  # 1 <= k <= len - 2: strictly inside
            self._apply(book[0], book[1], changes[: k + 1])
            return first + k, book
        return None


def top_levels(
    bids: dict[float, float], asks: dict[float, float], depth: int
) -> tuple[list[tuple[float, float]], list[tuple[float, float]]]:
    return (
        sorted(bids.items(), key=lambda kv: -kv[0])[:depth],
        sorted(asks.items())[:depth],
    )


@dataclass
class FaultPlan:
    """Random faults (each enabled one fires with probability ``rate`` per diff and
    connection; snapshot faults per REST request) plus one-shot injections from tests."""

    enabled: set[str] = field(default_factory=set)
    rate: float = 0.0
    stall_s: float = 2.0
    stale_back: int = 30  # a stale snapshot is this many diffs behind the stream
    retry_after_s: float = 1.0  # Retry-After of a 429/418 answer (a ban's first length)
    shutdown_grace_s: float = 1.0  # a connection told serverShutdown is closed this much later
    injected: Counter[str] = field(default_factory=Counter)
    fired: Counter[str] = field(default_factory=Counter)

    @staticmethod
    def parse(text: str | None, rate: float) -> FaultPlan:
        names = {f.strip() for f in (text or "").split(",") if f.strip()}
        unknown = names - set(FAULTS)
        if unknown:
            raise ValueError(
                f"unknown fault(s) {sorted(unknown)}: expected some of {', '.join(FAULTS)}"
            )
        if not 0.0 <= rate <= 1.0:
            raise ValueError(f"fault rate must be within [0, 1], got {rate}")
        return FaultPlan(names, rate)

    def take(self, name: str, rng: random.Random) -> bool:
        """Whether fault ``name`` fires now: a pending injection, else the random draw."""
        if self.injected[name] > 0:
            self.injected[name] -= 1
            return True
        return name in self.enabled and self.rate > 0 and rng.random() < self.rate


class FakeClient:
    """One websocket connection: its subscriptions and the frames not yet written."""

    def __init__(
        self,
        ws: web.WebSocketResponse,
        transport: Any,
        combined: bool,
        streams: set[str],
        category: str = "",
        split: bool = False,
    ) -> None:
        self.ws = ws
        self.transport = transport
        self.combined = combined
        self.streams = streams
        # The routed path ("public", "market" or "" for none) and whether the exchange routes
        # by it, as USD-M futures does: then /market gets no depth, and /public or no routed
        # path gets no trades, without any error.
        self.category = category
        self.split = split
        self.depth_name: str | None = None
        self.trade_name: str | None = None
        self.agg = False  # the trade stream is aggTrade
        # (stream name, payload) to wrap at write time, or (None, text) to send as it is.
        self.out: list[tuple[str | None, str]] = []
        self.held: tuple[str | None, str] | None = None  # a reordered diff, sent after the next
        self.stall_until = 0.0
        self.hold_until = 0.0  # a stall that delivers: frames wait, then leave together
        self.delayed: deque[tuple[float, tuple[str | None, str]]] = deque()  # stream delay
        self.connected = time.monotonic()
        self.doomed = False  # told serverShutdown; closed after the grace period

    def route(self, symbol: str) -> None:
        sym = symbol.lower()
        depth_ok = not self.split or self.category in ("", "public")
        trade_ok = not self.split or self.category == "market"
        self.depth_name = next(
            (s for s in sorted(self.streams) if s in (f"{sym}@depth", f"{sym}@depth@100ms")), None
        )
        if not depth_ok:
            self.depth_name = None
        self.trade_name = None
        self.agg = False
        if trade_ok:
            if f"{sym}@aggTrade" in self.streams:
                self.trade_name, self.agg = f"{sym}@aggTrade", True
            elif f"{sym}@trade" in self.streams:
                self.trade_name = f"{sym}@trade"


def feed_message_rate(events: np.ndarray) -> float:
    """Messages the feed makes per second of feed time: trades plus 100 ms buckets with book
    changes (an upper bound on diffs: a bucket whose changes net out sends nothing)."""
    ts = np.asarray(events["exch_ts"], dtype=np.int64)
    kinds = np.asarray(events["kind"])
    t0 = int(ts[0])
    span_s = (int(ts[-1]) - t0 + BATCH_NS) / 1e9
    trades = int(np.count_nonzero((kinds == KIND_TRADE) & (np.asarray(events["qty"]) > 0)))
    buckets = int(np.unique((ts[kinds != KIND_TRADE] - t0) // BATCH_NS).size)
    return (trades + buckets) / span_s


__all__ = [
    "BATCH_NS",
    "FAULTS",
    "INJECT_ONLY",
    "LATE_KEEP",
    "LATE_TRADE_RATES",
    "SNAPSHOT_FAULTS",
    "STALL_S",
    "STREAM_FAULTS",
    "Changes",
    "FaultPlan",
    "TrueBook",
    "feed_message_rate",
    "top_levels",
    "ws_frame",
]
