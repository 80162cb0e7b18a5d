"""The fake exchange's optional venue behaviours: what real venues do that a clean feed does not.

Why a module of its own: each behaviour is a flag (off by default, so the plain fake stays a
clean reference) with a little state of its own; the server (``fake_exchange.py``) and its
handlers (``fake_http.py``) ask these objects what to do, so the behaviours can be read and
tested in one place. What each models is in docs/LIVE.md ("The fake exchange").
"""

from __future__ import annotations

import time
from collections import deque
from dataclasses import dataclass, field

from mm_sim.venues.binance.sync import Market


@dataclass
class FakeOptions:
    """Optional behaviours; all off by default."""

    split_paths: bool = False  # futures: /public depth, /market trades (no path: /public)
    clock_offset_ms: float = 0.0  # the venue's clock vs the one it publishes at /fake/info
    late_trades: float = 0.0  # share of trades sent after the diff carrying their change
    snapshot_inside: bool = False  # snapshots taken strictly inside a diff's [U, u] range
    stream_delay_s: float = 0.0  # websocket frames leave this much after REST sees the change
    overlap_diffs: float = 0.0  # spot: share of diffs whose range overlaps the previous one
    cut_after_s: float | None = None  # the venue's connection limit (Binance: 24 h)
    ban_escalation: bool = False  # each 418 ban doubles the previous one; asking during it: 418
    weight_headers: bool = False  # X-MBX-USED-WEIGHT-1M on REST answers
    rpi_share: float = 0.0  # USD-M: share of aggTrades that also filled hidden RPI orders

    def check(self) -> None:
        for name in ("late_trades", "overlap_diffs", "rpi_share"):
            v = getattr(self, name)
            if not 0.0 <= v <= 1.0:
                raise ValueError(f"{name} must be within [0, 1], got {v}")
        if self.stream_delay_s < 0:
            raise ValueError(f"stream delay must be >= 0, got {self.stream_delay_s}")
        if self.cut_after_s is not None and not self.cut_after_s > 0:
            raise ValueError(f"connection cut must be > 0 s, got {self.cut_after_s}")


def depth_weight(market: Market, limit: int) -> int:
    """Request weight of a depth snapshot, as documented for each market (docs/LIVE.md)."""
    if market is Market.FUTURES:
        return 2 if limit <= 50 else 5 if limit <= 100 else 10 if limit <= 500 else 20
    return 5 if limit <= 100 else 25 if limit <= 500 else 50 if limit <= 1000 else 250


@dataclass
class WeightMeter:
    """Request weight used by the (single) client IP over the last minute."""

    window_s: float = 60.0
    log: deque[tuple[float, int]] = field(default_factory=deque)

    def add(self, weight: int, now: float | None = None) -> int:
        now = time.monotonic() if now is None else now
        self.log.append((now, weight))
        while self.log and self.log[0][0] <= now - self.window_s:
            self.log.popleft()
        return sum(w for _, w in self.log)


@dataclass
class BanState:
    """Escalating IP bans: Binance lengthens a ban each time a client keeps asking (from
    2 minutes up to 3 days); here each ban doubles the previous one, from the fault plan's
    ``retry_after_s``. A request during a ban is refused again with the time left."""

    bans: int = 0
    until: float = 0.0
    during: int = 0  # requests made while banned (a client that honours Retry-After: 0)

    def start(self, base_s: float, now: float | None = None) -> float:
        now = time.monotonic() if now is None else now
        length = base_s * (2**self.bans)
        self.bans += 1
        self.until = now + length
        return length

    def left(self, now: float | None = None) -> float:
        now = time.monotonic() if now is None else now
        return max(0.0, self.until - now)


__all__ = ["BanState", "FakeOptions", "WeightMeter", "depth_weight"]
