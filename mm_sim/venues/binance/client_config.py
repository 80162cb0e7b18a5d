"""What the live client is told: where to connect, how patient to be, and small helpers.

Why a module of its own: the feed definition (``mm_sim/feeds/spec.py``) and tests build a
:class:`ClientConfig` without pulling in the client's I/O machinery.
"""

from __future__ import annotations

import email.utils
import json
import time
from dataclasses import dataclass

import numpy as np

from mm_sim.venues.binance.sync import Market

# Which of the feed's two streams a connection carries.
DEPTH = "depth"
TRADES = "trade"
# (path under ws_base, streams carried). Spot and COIN-M futures serve everything on one
# connection; USD-M futures routes market streams by category since 2026 (docs/LIVE.md): depth
# on /public, trades on /market, and a connection without a routed path only gets /public data.
Route = tuple[str, tuple[str, ...]]
SPOT_ROUTES: tuple[Route, ...] = (("", (DEPTH, TRADES)),)
FUTURES_ROUTES: tuple[Route, ...] = (("/public", (DEPTH,)), ("/market", (TRADES,)))


def default_routes(market: Market, coin_m: bool = False) -> tuple[Route, ...]:
    return FUTURES_ROUTES if market is Market.FUTURES and not coin_m else SPOT_ROUTES


def rest_prefix(market: Market, coin_m: bool = False) -> str:
    """The REST API's path: spot ``/api/v3``, USD-M ``/fapi/v1``, COIN-M ``/dapi/v1``."""
    if market is not Market.FUTURES:
        return "/api/v3"
    return "/dapi/v1" if coin_m else "/fapi/v1"


def default_trade_stream(market: Market) -> str:
    """USD-M futures documents ``aggTrade`` (on /market); spot has the raw ``trade`` stream."""
    return "aggTrade" if market is Market.FUTURES else "trade"


@dataclass(frozen=True)
class ClientConfig:
    """Where to connect and how patient to be. URLs are bases; ``routes`` says on which paths
    the depth and trade streams are (empty: everything on one connection at the base)."""

    symbol: str
    market: Market
    ws_base: str  # e.g. wss://stream.testnet.binance.vision (combined streams at /stream)
    rest_base: str  # e.g. https://testnet.binance.vision
    depth_stream: str = "depth@100ms"
    trade_stream: str = "trade"
    snapshot_limit: int = 1000
    queue_size: int = 10_000  # frames between the socket reader and the consumer
    max_buffer: int = 10_000  # diffs held across the snapshot seam
    stale_after_s: float = 10.0  # no data message for this long: the stream is stale
    backoff_base_s: float = 0.25
    backoff_cap_s: float = 10.0
    backoff_reset_after_s: float = 30.0  # a connection that lived this long resets the backoff
    snapshot_retry_base_s: float = 0.25
    snapshot_retry_cap_s: float = 3.0
    request_timeout_s: float = 10.0
    max_connection_s: float = 23.5 * 3600  # roll over before Binance's 24 h cut
    overlap_timeout_s: float = 10.0  # give up waiting for the next connection to catch up
    ping_interval_s: float | None = 20.0
    ping_timeout_s: float | None = 20.0
    busy_poll: bool = False  # spin the event loop: lowest latency, one core kept at 100 %
    routes: tuple[Route, ...] = ()  # empty: SPOT_ROUTES (one combined connection)
    trade_silence_s: float = 120.0  # depth flows but no trade for this long: a loud warning
    # After a lost connection the venue's clock is measured again before reconnecting; a clock
    # that moved (a restarted venue) is mapped back onto ours unless the feed's clock is raw.
    rebase_clock: bool = True
    coin_m: bool = False  # futures: COIN-M (REST under /dapi/v1) rather than USD-M (/fapi/v1)

    @property
    def route_list(self) -> tuple[Route, ...]:
        return self.routes or SPOT_ROUTES

    @property
    def depth_route(self) -> int:
        """Index of the route that carries the depth stream (exactly one does)."""
        return next(i for i, (_, kinds) in enumerate(self.route_list) if DEPTH in kinds)

    def route_url(self, i: int) -> str:
        path, kinds = self.route_list[i]
        s = self.symbol.lower()
        names = {DEPTH: self.depth_stream, TRADES: self.trade_stream}
        streams = "/".join(f"{s}@{names[k]}" for k in kinds)
        return f"{self.ws_base.rstrip('/')}{path}/stream?streams={streams}"

    @property
    def stream_url(self) -> str:
        """The depth connection's URL (the one whose continuity the book depends on)."""
        return self.route_url(self.depth_route)

    @property
    def stream_urls(self) -> list[str]:
        return [self.route_url(i) for i in range(len(self.route_list))]

    @property
    def api(self) -> str:
        return self.rest_base.rstrip("/") + rest_prefix(self.market, self.coin_m)

    @property
    def depth_url(self) -> str:
        return f"{self.api}/depth?symbol={self.symbol.upper()}&limit={self.snapshot_limit}"

    @property
    def time_url(self) -> str:
        """The venue's server-time endpoint (its clock, for the offset estimate)."""
        return f"{self.api}/time"


def retry_after_s(value: str | None, default: float, now: float | None = None) -> float:
    """Seconds to wait from a ``Retry-After`` header: delta-seconds or an HTTP date (counted
    from ``now``, wall-clock seconds; the current time by default)."""
    if not value:
        return default
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return default
    return max(0.0, when.timestamp() - (time.time() if now is None else now))


def venue_message(body: bytes) -> str:
    """A Binance error body (``{"code": -1121, "msg": "Invalid symbol."}``) as one line."""
    try:
        data = json.loads(body)
    except ValueError:
        return body[:200].decode("utf-8", "replace")
    if isinstance(data, dict) and "msg" in data:
        return f"{data['msg']} (code {data.get('code')})"
    return body[:200].decode("utf-8", "replace")


@dataclass(frozen=True)
class Polled:
    """What one :meth:`BinanceClient.poll` produced."""

    events: np.ndarray
    arrivals_ns: list[int]  # receive time (monotonic ns) of each frame that produced events
    messages: int  # frames processed


__all__ = [
    "DEPTH",
    "FUTURES_ROUTES",
    "SPOT_ROUTES",
    "TRADES",
    "ClientConfig",
    "Polled",
    "Route",
    "default_routes",
    "default_trade_stream",
    "rest_prefix",
    "retry_after_s",
    "venue_message",
]
