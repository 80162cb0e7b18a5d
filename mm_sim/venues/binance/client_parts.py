"""Small pieces of the live client: a connection's state, the trade-silence check, REST
bookkeeping. Why apart: ``client.py`` keeps the I/O flow readable; these are plain state.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

from websockets.asyncio.client import ClientConnection

from mm_sim.logs import get_logger
from mm_sim.venues.binance.processor import ClientCounters

log = get_logger("mm_sim.binance")


class Conn:
    def __init__(self, cid: int, ws: ClientConnection, overlap: bool, route: int) -> None:
        self.id = cid
        self.ws = ws
        self.overlap = overlap
        self.route = route  # index into ClientConfig.route_list
        self.opened = time.monotonic()
        self.last_data = self.opened
        self.closed = asyncio.Event()
        self.dropped = 0  # frames lost to overflow since the last marker
        self.reason = ""
        self.task: asyncio.Task[None] | None = None


class HttpStatus(Exception):
    pass


class TradeSilence:
    """Depth flows but no trade arrives: on USD-M futures that is what a trade stream on the
    wrong path looks like (no error, no data), and the flowing depth keeps the stale check
    quiet. Checked on the depth supervisor's tick from the counters, so the hot path pays
    nothing; an episode is warned about once, loudly, and counted for the run's report."""

    def __init__(self, after_s: float) -> None:
        self.after_s = after_s
        self.trades = 0  # silence counts from the start: no trade yet is a silence too
        self.diffs = 0
        self.last_trade = time.monotonic()
        self.warned = False

    def check(self, now: float, c: ClientCounters) -> None:
        n = c.trades + c.trades_duplicate + c.trades_skipped
        if n != self.trades:
            self.trades = n
            self.last_trade = now
            self.warned = False
            c.trade_silent_now = False
            return
        if c.diffs == self.diffs:
            return  # depth is not flowing either: the stale check's business
        self.diffs = c.diffs
        silent = now - self.last_trade
        c.trade_silence_max_s = max(c.trade_silence_max_s, round(silent, 3))
        if silent >= self.after_s and not self.warned:
            self.warned = True
            c.trade_silences += 1
            c.trade_silent_now = True
            log.warning(
                "NO TRADES while depth flows: check the trade stream's route (docs/LIVE.md)",
                silent_s=round(silent, 1),
                trades_so_far=n,
            )


def note_weight(c: ClientCounters, headers: Any) -> None:
    """Binance reports the IP's request weight used in the current minute on every answer."""
    used = headers.get("X-MBX-USED-WEIGHT-1M") or headers.get("X-MBX-USED-WEIGHT-1m")
    if used is not None and used.isdigit():
        c.used_weight_1m = int(used)
        c.used_weight_1m_max = max(c.used_weight_1m_max, int(used))


__all__ = ["Conn", "HttpStatus", "TradeSilence", "note_weight"]
