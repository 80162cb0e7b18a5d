"""Live feed → ``EventChunk`` stream for the soak (and events for ``record``).

Why a separate piece: the soak's runner consumes chunks and does not care whether they come from
a memory-mapped file or a socket; this module is the socket side of that contract. Chunks are
small (``chunk_ms`` of wall time of arrivals, or, with ``chunk_ms=0``, whatever has arrived when
the consumer asks: low latency when idle, bigger chunks under load) and iterations are cut by
the exchange clock: iteration ``k`` covers ``[t0 + k*L, t0 + (k+1)*L)`` from the moment the
source starts, and ends on time even when no message arrives.

The exchange clock: on Binance the local wall clock (``time.time_ns``). An mm_sim fake exchange
may run faster than real time; it publishes its clock (``epoch_ns``, ``speed``) at
``/fake/info`` and receive times are taken on that clock, so ``local_ts - exch_ts`` stays a lag
in the exchange's time base (exactly the wall-clock lag at speed 1).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import numpy as np

from mm_sim.errors import UserError
from mm_sim.events import Instrument
from mm_sim.feeds.clock import LagSampler
from mm_sim.feeds.spec import BinanceLiveFeedSpec, snapshot_limit_error
from mm_sim.logs import get_logger
from mm_sim.runtime.bus import EventChunk
from mm_sim.venues.binance import clock_sync
from mm_sim.venues.binance.client import BinanceClient, ClientConfig, Sink
from mm_sim.venues.binance.client_config import (
    default_routes,
    default_trade_stream,
    rest_prefix,
)
from mm_sim.venues.binance.credentials import BinanceCredentials, load_credentials
from mm_sim.venues.binance.messages import MessageError, decode, parse_exchange_info
from mm_sim.venues.binance.processor import join_events
from mm_sim.venues.binance.reorder import ReorderBuffer, ReorderingSink
from mm_sim.venues.binance.sync import Market

log = get_logger("mm_sim.live")


def scaled_clock(epoch_ns: int, speed: float) -> Callable[[], int]:
    """A clock starting at ``epoch_ns`` and running ``speed`` times faster than the wall."""
    if speed == 1.0:
        return time.time_ns
    return lambda: epoch_ns + int((time.time_ns() - epoch_ns) * speed)


@dataclass
class LiveFeed:
    """A connected live feed: the client, its instrument and clock, and run-record identity."""

    spec: BinanceLiveFeedSpec
    client: BinanceClient
    instrument: Instrument
    clock: Callable[[], int]
    identity: dict[str, Any] = field(default_factory=dict)
    latencies_ns: list[int] | None = None  # frame received → chunk handed on, when recording
    credentials: BinanceCredentials = field(default_factory=BinanceCredentials)
    lags: LagSampler = field(default_factory=LagSampler)  # corrected feed lags, for the report
    reorder: ReorderBuffer | None = None  # exchange-time order window (spec.reorder_ms)
    _reordering: ReorderingSink | None = None  # push mode through the window

    @property
    def clock_shift_ns(self) -> int:
        return int(self.identity.get("clock", {}).get("shift_ns", 0))

    def clock_report(self) -> dict[str, Any]:
        """The applied shift, the server-time estimate, and the feed lags it gave."""
        model = self.lags.model("live")
        return {
            **self.identity.get("clock", {}),
            "lag_ms_corrected": model.lag_ms_raw,  # lags of events already corrected live
            "lag_samples": model.samples,
            # venue clocks found moved after a lost connection (a restarted venue)
            "venue_clock_moves": list(self.client.clock_log),
        }

    def counters(self) -> dict[str, Any]:
        """Health of the feed so far (written next to a soak's reports, and into a recording)."""
        return {
            "feed": self.identity,
            "client": self.client.counters.as_dict(),
            "book_sync": self.client.sync.counters.as_dict(),
            "credentials": self.credentials.describe(),
            "clock": self.clock_report(),
            "reorder": self.reorder.report() if self.reorder is not None else None,
            "warnings": feed_warnings(self.client.counters.as_dict()),
        }

    def set_sink(self, sink: Sink | None) -> None:
        """Push mode (see ``BinanceClient.set_sink``), through the reorder window if the feed
        has one: events then reach ``sink`` in exchange-time order, each held at most the
        window (a loop timer releases held events when no frame comes)."""
        if self._reordering is not None:
            self._reordering.cancel()
            self._reordering = None
        if sink is None or self.reorder is None:
            self.client.set_sink(sink)
            return
        loop = asyncio.get_running_loop()
        self._reordering = ReorderingSink(
            self.reorder, sink, self.clock, loop.call_later, self._speed
        )
        self.client.set_sink(self._reordering)

    async def close(self) -> None:
        if self._reordering is not None:
            self._reordering.cancel()
        await self.client.close()
        for line in feed_warnings(self.client.counters.as_dict()):
            log.warning(f"LIVE FEED WARNING: {line}")

    async def chunks(
        self,
        n_iterations: int,
        iteration_ns: int,
        start_iteration: int = 0,
        chunk_ms: float | None = None,
    ) -> AsyncIterator[EventChunk]:
        """Chunks of iterations ``start_iteration .. n_iterations-1`` cut by exchange time."""
        chunk_s = (self.spec.chunk_ms if chunk_ms is None else chunk_ms) / 1e3
        client = self.client
        clock = self.clock
        t0 = clock() - start_iteration * iteration_ns
        it = start_iteration
        parts: list[np.ndarray] = []
        arrivals: list[int] = []
        window_start: float | None = None
        last_ts = 0  # exchange time of the last event in parts
        last = n_iterations - 1
        lat = self.latencies_ns
        while it < n_iterations:
            end = t0 + (it + 1) * iteration_ns
            now = clock()
            wait_s = max(0.0, (end - now) / self._speed / 1e9)
            if chunk_s > 0:
                if window_start is not None:
                    wait_s = min(wait_s, max(0.0, window_start + chunk_s - time.monotonic()))
                else:
                    wait_s = min(wait_s, chunk_s)
            reorder = self.reorder
            if reorder is not None:
                due = reorder.next_due_ns()
                if due is not None:
                    wait_s = min(wait_s, max(0.0, (due - clock()) / self._speed / 1e9))
            polled = await client.poll(timeout=wait_s)
            new = polled.events
            if reorder is not None:
                new = reorder.push(new, clock())
                if it == last and clock() >= end:
                    new = join_events([new, reorder.flush(clock())])
            if len(new):
                parts.append(new)
                last_ts = int(new["exch_ts"][-1])
                if lat is not None:
                    arrivals.extend(polled.arrivals_ns)
                if window_start is None:
                    window_start = time.monotonic()
            # Parts are in exchange order, so the last event tells whether the iteration's end
            # has been reached; they are joined only when a chunk goes out (joining them at
            # every poll cost milliseconds per chunk: join_events).
            if clock() >= end or (parts and last_ts >= end):
                ev = join_events(parts)
                cut = int(np.searchsorted(ev["exch_ts"], end, side="left")) if len(ev) else 0
                head, tail = ev[:cut], ev[cut:]
                parts = [tail] if len(tail) else []
                window_start = time.monotonic() if len(tail) else None
                yield self._emit(EventChunk(it, head, True, end_of_feed=it == last), arrivals)
                arrivals = []
                it += 1
                continue
            due = (
                window_start is not None and time.monotonic() - window_start >= chunk_s
                if chunk_s > 0
                else bool(parts)
            )
            if due and parts:
                ev = join_events(parts)
                parts = []
                window_start = None
                yield self._emit(EventChunk(it, ev, False), arrivals)
                arrivals = []

    def _emit(self, chunk: EventChunk, arrivals: list[int]) -> EventChunk:
        if len(chunk.events):
            self.lags.add(chunk.events)
        if self.latencies_ns is not None and arrivals:
            now = time.monotonic_ns()
            self.latencies_ns.extend(now - a for a in arrivals)
        return chunk

    @property
    def _speed(self) -> float:
        return float(self.identity.get("clock_speed", 1.0))


def feed_warnings(client: dict[str, Any]) -> list[str]:
    """What a run's report must not hide (docs/LIVE.md, "before the first real run")."""
    out = []
    if client.get("trade_silences") or (client.get("diffs") and not client.get("trades")):
        out.append(
            f"no trades for {client.get('trade_silence_max_s', 0):.0f} s while depth flowed "
            f"({client.get('trades', 0)} trades, {client.get('diffs', 0)} diffs): the trade "
            "stream is probably on the wrong path (see the feed's 'connections')"
        )
    lost = client.get("disconnects", 0)
    if lost:
        # A recording (or live run) went on through the outage with nothing arriving: said,
        # or a venue that died half-way through left a recording that looked whole.
        out.append(
            f"the stream was lost {lost} time(s) ({client.get('connect_failures', 0)} "
            "reconnection attempts failed): no event arrived until it was back, a hole in "
            "the data (counters: client.disconnects, book_sync.resyncs)"
        )
    return out


async def _get_json(session: aiohttp.ClientSession, url: str, what: str) -> Any:
    try:
        async with session.get(url) as resp:
            body = await resp.read()
            if resp.status != 200:
                raise UserError(f"{url}: {what} request failed: HTTP {resp.status} {body[:120]!r}")
    except (aiohttp.ClientError, TimeoutError) as exc:
        raise UserError(f"{url}: cannot reach the {what} endpoint ({exc})") from None
    try:
        return decode(body)[0]
    except MessageError as err:
        raise UserError(f"{url}: {what} response is not JSON ({err})") from None


async def open_live(spec: BinanceLiveFeedSpec, start: bool = True) -> LiveFeed:
    """Resolve what the spec leaves open (market, symbol, tick/lot, clock) and connect."""
    credentials = load_credentials()
    if credentials.configured:
        # Said once, without values: market data is public, the keys are not used.
        log.info("Binance credentials found in the environment; not used", **credentials.describe())
    timeout = aiohttp.ClientTimeout(total=10)
    market = spec.market
    symbol = spec.symbol
    tick, lot, decimals = spec.tick_size, spec.lot_size, None
    csize: float | None = None  # contract size of an inverse (COIN-M) symbol
    clock: Callable[[], int] = time.time_ns
    speed = 1.0
    rest = spec.rest_base.rstrip("/")
    margin = spec.margin
    async with aiohttp.ClientSession(timeout=timeout) as session:
        if spec.fake:
            info = await _get_json(session, f"{rest}/fake/info", "fake exchange info")
            if type(info) is not dict or not info.get("fake_exchange"):
                raise UserError(f"{rest}/fake/info: not an mm_sim fake exchange")
            market = market or info["market"]
            symbol = symbol or info["symbol"]
            tick = tick or float(info["tick_size"])
            lot = lot or float(info["lot_size"])
            decimals = int(info["price_decimals"])
            if info.get("contract_size") is not None:
                csize = float(info["contract_size"])
                margin = margin or "coin-m"  # the fake serves an inverse feed as COIN-M
            speed = float(info["speed"])
            clock = scaled_clock(int(info["epoch_ns"]), speed)
        if market is None or symbol is None:
            raise UserError(
                f"feed {spec.name!r}: 'market' and 'symbol' are required for a Binance feed"
            )
        coin_m = market == "futures" and margin == "coin-m"
        api = rest + rest_prefix(Market(market), coin_m)
        if tick is None or lot is None:
            url = f"{api}/exchangeInfo?symbol={symbol.upper()}"
            try:
                table = parse_exchange_info(await _get_json(session, url, "exchangeInfo"))
            except MessageError as err:
                raise UserError(f"{url}: {err}") from None
            info_sym = table.get(symbol.upper())
            if info_sym is None:
                raise UserError(f"{url}: symbol {symbol.upper()} not listed by the exchange")
            tick = tick or info_sym.tick_size
            lot = lot or info_sym.lot_size
            decimals = info_sym.price_decimals
            if info_sym.extra.get("contractSize") is not None:
                csize = float(info_sym.extra["contractSize"])
        est = await clock_sync.measure(session, f"{api}/time", clock)
    shift_ns, shift_how = clock_sync.chosen_shift(spec.clock, est)
    clock_info: dict[str, Any] = {
        "convention": "shift added to local_ts; the venue's clock is the reference",
        "mode": spec.clock,
        "shift_ns": shift_ns,
        "shift_ms": round(shift_ns / 1e6, 3),
        "chosen": shift_how,
        **(est.to_json() if est is not None else {}),
    }
    if shift_ns:
        log.info("local clock corrected to the venue's", shift_ms=clock_info["shift_ms"])
        base_clock = clock
        clock = lambda: base_clock() + shift_ns  # noqa: E731
    mkt = Market(market)
    limit_err = snapshot_limit_error(str(mkt), spec.snapshot_limit, "coin-m" if coin_m else "usd-m")
    if limit_err:
        raise UserError(f"feed {spec.name!r}: {limit_err}")
    routes = (
        tuple((c.path, tuple(c.streams)) for c in spec.connections)
        if spec.connections is not None
        else default_routes(mkt, coin_m)
    )
    cfg = ClientConfig(
        symbol=symbol.upper(),
        market=mkt,
        ws_base=spec.ws_base,
        rest_base=spec.rest_base,
        depth_stream=spec.depth_stream,
        trade_stream=spec.trade_stream or default_trade_stream(mkt),
        routes=routes,
        trade_silence_s=spec.trade_silence_s,
        snapshot_limit=spec.snapshot_limit,
        queue_size=spec.queue_size,
        stale_after_s=spec.stale_after_s,
        max_connection_s=spec.max_connection_s,
        busy_poll=spec.busy_poll,
        rebase_clock=spec.clock != "raw",
        coin_m=coin_m,
    )
    venue = ("fake-" if spec.fake else "") + f"binance-{market}"
    instrument = Instrument(symbol.upper(), venue, tick, lot, decimals, csize is not None, csize)
    client = BinanceClient(cfg, clock=clock)
    reorder = None
    if spec.reorder_ms > 0:
        reorder = ReorderBuffer(int(spec.reorder_ms * 1e6))
        client.proc.monotonic_exch = False  # the window sorts by the true exchange times
    identity = {
        "kind": "binance-ws",
        "name": spec.name,
        "market": market,
        **({"margin": "coin-m"} if coin_m else {}),
        "symbol": symbol.upper(),
        "ws": cfg.stream_url,
        "ws_connections": cfg.stream_urls,
        "rest": cfg.depth_url,
        "fake": spec.fake,
        "clock_speed": speed,
        "clock": clock_info,
    }
    if start:
        await client.start()
    identity["reorder_ms"] = spec.reorder_ms
    return LiveFeed(
        spec, client, instrument, clock, identity, credentials=credentials, reorder=reorder
    )


__all__ = ["LiveFeed", "feed_warnings", "open_live", "scaled_clock"]
