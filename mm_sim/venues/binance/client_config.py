"""What the live client is told: where to connect, how patient to be, and small helpers.

Why a module of its own: the feed definition (``mm_sim/feeds/spec.py``) and tests build a
:class:`ClientConfig` without pulling in the client's I/O machinery.
"""

from __future__ import annotations

import email.utils
import time
from dataclasses import dataclass

import numpy as np

from mm_sim.venues.binance.sync import Market


@dataclass(frozen=True)
class ClientConfig:
    """Where to connect and how patient to be. URLs are bases; paths follow Binance's layout."""

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

    @property
    def stream_url(self) -> str:
        s = self.symbol.lower()
        base = self.ws_base.rstrip("/")
        return f"{base}/stream?streams={s}@{self.depth_stream}/{s}@{self.trade_stream}"

    @property
    def depth_url(self) -> str:
        path = "/fapi/v1/depth" if self.market is Market.FUTURES else "/api/v3/depth"
        return (
            f"{self.rest_base.rstrip('/')}{path}?symbol={self.symbol.upper()}"
            f"&limit={self.snapshot_limit}"
        )


def retry_after_s(value: str | None, default: float) -> float:
    """Seconds to wait from a ``Retry-After`` header: delta-seconds or an HTTP date."""
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
    return max(0.0, when.timestamp() - time.time())


@dataclass(frozen=True)
class Polled:
    """What one :meth:`BinanceClient.poll` produced."""

    events: np.ndarray
    arrivals_ns: list[int]  # receive time (monotonic ns) of each frame that produced events
    messages: int  # frames processed


__all__ = ["ClientConfig", "Polled", "retry_after_s"]
