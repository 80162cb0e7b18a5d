"""A Binance-shaped market-data server on 127.0.0.1, driven by any replayable feed.

Why: the live client must be tested against the real wire format and the real failure modes
(sequence gaps, duplicates, reordering, disconnects, stalls, malformed frames, stale snapshots,
rate limits, a server shutting down) without a network, and a user should see the whole live
path offline (``make live-demo``). It also has to be fast enough to measure the client's latency
at thousands of messages per second, so nothing on its send path awaits per message.

Pieces: ``fake_parts.py`` (true book, fault plan, frames), ``fake_http.py`` (request
handlers), ``fake_delivery.py`` (frames to each connection, and the faults that hit them); this
module paces the feed into messages.

What it serves (one aiohttp app, HTTP and websocket on the same port):

- ``/stream?streams=<sym>@depth@100ms/<sym>@trade`` (combined, ``{"stream","data"}`` wrapped)
  and ``/ws/<stream>`` (raw); ``SUBSCRIBE``/``UNSUBSCRIBE``/``LIST_SUBSCRIPTIONS`` are answered.
  ``<sym>@depth`` is served at the same 100 ms pace as ``@depth@100ms`` (a simplification).
- ``GET /api/v3/depth`` (spot), ``/fapi/v1/depth`` (futures; ``/dapi/v1`` for an inverse feed,
  served as a COIN-M symbol) and ``exchangeInfo``.
- Introspection under ``/fake/``: ``info`` (symbol, market, clock, send statistics),
  ``book?update_id=N&depth=K`` (the TRUE book right after the diff ending at ``N``),
  ``inject?fault=F&count=C`` (one-shot faults for tests), ``faults?faults=a,b&rate=R`` (switch
  random faults at run time).

The feed's events are cut into 100 ms buckets of feed time; each bucket's net level changes
against the TRUE book become one ``depthUpdate`` with a real update-id range (futures ids skip
a little between events so only ``pu`` links them, as on Binance), sent at the bucket's end;
its trades become ``trade`` messages sent at their own times. The exchange clock starts at the
server's start and runs ``speed`` times faster than the wall clock; event times ``E``/``T`` are
on that clock. At the feed's end it starts over (a snapshot in the feed becomes the diff to the
new book), so the stream never runs dry.

Delivery: payloads are formatted once per message (no JSON encoder), queued per connection and
written as ready-made websocket frames, one ``transport.write`` per connection each time the
producer waits for the next message's time. Waits shorter than 2 ms are finished with a plain
``time.sleep`` (microsecond resolution) after giving the event loop a turn, and the last 100 µs
are spun, so messages leave at their own times (lateness p50 under 1 µs at 5,000 msg/s) rather
than in 1 ms timer ticks or together with the next message. A connection whose unsent bytes exceed
``max_client_buffer`` is dropped, as Binance drops consumers that do not keep up.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
from collections import Counter, deque
from functools import partial
from typing import Any

import numpy as np
from aiohttp import web

from mm_sim.events import ASK, BID, KIND_CLEAR, KIND_DEPTH, KIND_SNAPSHOT, KIND_TRADE, Instrument
from mm_sim.logs import get_logger
from mm_sim.venues.binance import fake_http as http
from mm_sim.venues.binance.client_config import rest_prefix
from mm_sim.venues.binance.fake_delivery import Delivery
from mm_sim.venues.binance.fake_options import BanState, FakeOptions, WeightMeter
from mm_sim.venues.binance.fake_parts import (
    BATCH_NS,
    FAULTS,
    INJECT_ONLY,
    Changes,
    FakeClient,
    FaultPlan,
    TrueBook,
    feed_message_rate,
    top_levels,
    wire_symbol,
    ws_frame,
)
from mm_sim.venues.binance.fake_parts import (
    LATE_KEEP as _LATE_KEEP,
)
from mm_sim.venues.binance.fake_parts import (
    STALL_S as _STALL_S,
)
from mm_sim.venues.binance.messages import float_decimals
from mm_sim.venues.binance.sync import Market

log = get_logger("mm_sim.fake_exchange")

_MS = 1_000_000
_FINE_WAIT_S = 0.002  # waits shorter than this end in time.sleep, not in a loop timer
# The last this-many seconds of a wait are spun, not slept: a sleep overshoots by 60-90 µs
# (measured), so the next message was often due by then and went out in the same write.
_SPIN_S = 100e-6
_YIELD_EVERY = 64  # when behind schedule, let the loop run at least this often (messages)
_YIELD_S = 0.001  # and at least this often (wall seconds)
# The exchange clock starts now and runs ``speed`` times the wall clock: at 10,000x it reaches
# 2100-01-01 (where the feeds' timestamps end) after 2.6 days of serving; at 1e300 its first
# wait overflowed (an internal error once a client connected).
MAX_SPEED = 10_000.0


class FakeExchange(Delivery):
    """Serve ``events`` (EVENT_DTYPE, sorted by exchange time) as Binance market data."""

    def __init__(
        self,
        events: np.ndarray,
        instrument: Instrument,
        market: Market | str = Market.SPOT,
        speed: float = 1.0,
        port: int = 0,
        faults: FaultPlan | None = None,
        seed: int = 1,
        symbol: str | None = None,
        heartbeat_s: float = 20.0,
        msg_rate: float | None = None,
        max_client_buffer: int = 32 << 20,
        options: FakeOptions | None = None,
        **behaviours: Any,
    ) -> None:
        if len(events) == 0:
            raise ValueError("the feed has no events")
        self.events = events
        self.instrument = instrument
        self.market = Market(market)
        self.feed_msg_rate = feed_message_rate(events)
        if msg_rate is not None:
            if not msg_rate > 0:
                raise ValueError(f"message rate must be > 0, got {msg_rate}")
            speed = msg_rate / self.feed_msg_rate
        if not 0 < speed <= MAX_SPEED:  # NaN and inf too
            how = (
                ""
                if msg_rate is None
                else f" (--msg-rate {msg_rate:g} on a feed of {self.feed_msg_rate:g} msg/s)"
            )
            raise ValueError(f"speed must be > 0 and at most {MAX_SPEED:g}, got {speed:g}{how}")
        self.speed = float(speed)
        self.port = port
        self.faults = faults or FaultPlan()
        self.rng = random.Random(seed)
        self.symbol = symbol.upper() if symbol else wire_symbol(instrument.symbol)
        self.heartbeat_s = heartbeat_s
        self.max_client_buffer = max_client_buffer
        # Optional venue behaviours (fake_options.py), e.g. split_paths=True.
        self.opts = options or FakeOptions(**behaviours)
        self.opts.check()
        # The venue's clock runs this far ahead of the clock it publishes at /fake/info (which
        # clients read as their local clock): event times, snapshot and server times carry it.
        self.clock_offset_ns = int(self.opts.clock_offset_ms * _MS)
        self.weights = WeightMeter()
        self.ban = BanState()
        self._last_diff: tuple[int, Changes] | None = None  # (first id, changes): overlaps
        self.price_dec = (
            instrument.price_decimals
            if instrument.price_decimals is not None
            else float_decimals(instrument.tick_size)
        )
        self.qty_dec = float_decimals(instrument.lot_size)
        self._level_fmt = f'["%.{self.price_dec}f","%.{self.qty_dec}f"]'
        futures = self.market is Market.FUTURES
        # COIN-M diffs also name the pair (BTCUSD for BTCUSD_PERP), as Binance documents them
        coin_m = futures and instrument.inverse
        self._pair = f'"ps":"{self.symbol.split("_")[0]}",' if coin_m else ""
        self._trade_fmt = (
            '{"e":"trade","E":%d,"s":"' + self.symbol + f'","t":%d,"p":"%.{self.price_dec}f",'
            f'"q":"%.{self.qty_dec}f","T":%d,"m":%s,'
            + ('"X":"MARKET"}' if futures else '"M":true}')
        )
        # USD-M aggregates also say how much of q was not against hidden RPI orders (nq)
        self._usd_m = futures and not coin_m
        nq = f'"nq":"%.{self.qty_dec}f",' if self._usd_m else ""
        self._agg_fmt = (
            '{"e":"aggTrade","E":%d,"s":"' + self.symbol + f'","a":%d,"p":"%.{self.price_dec}f",'
            f'"q":"%.{self.qty_dec}f",{nq}"f":%d,"l":%d,"T":%d,"m":%s}}'
        )
        self.book = TrueBook()
        self.epoch_ns = time.time_ns()
        self.clients: list[FakeClient] = []
        self.trade_id = 0
        self.stats: Counter[str] = Counter()
        self.snapshot_log: deque[tuple[float, int]] = deque(maxlen=200)  # (monotonic, status)
        self._gap_after: int | None = None  # drop the first diff after this snapshot id
        self._runner: web.AppRunner | None = None
        self._producer: asyncio.Task[None] | None = None
        self._tasks: set[asyncio.Task[Any]] = set()
        self._stopped = asyncio.Event()
        self._late = np.zeros(_LATE_KEEP)  # wall seconds each message left after its time
        # (time.monotonic() of the episode's first late message, worst lateness s): when the
        # server itself sent in a burst, so a consumer's figures can be told apart from ours
        self._stalls: deque[list[float]] = deque(maxlen=1000)
        self._n_sent = 0
        self._since_yield = 0
        self._yielded = 0.0
        self._first_send = 0.0
        self._last_send = 0.0

    # --- clock ----------------------------------------------------------------------------

    def now_ns(self) -> int:
        """The exchange clock: starts at the server's start, runs ``speed`` x wall time."""
        return self.epoch_ns + int((time.time_ns() - self.epoch_ns) * self.speed)

    def venue_ms(self) -> int:
        """The venue's own clock in ms (the exchange clock plus its offset): event times."""
        return (self.now_ns() + self.clock_offset_ns) // _MS

    # --- lifecycle ------------------------------------------------------------------------

    async def start(self) -> None:
        app = web.Application()
        futures = self.market is Market.FUTURES
        # an inverse feed is a COIN-M symbol: its REST API is under /dapi/v1
        prefix = rest_prefix(self.market, futures and self.instrument.inverse)
        app.router.add_get(f"{prefix}/depth", partial(http.h_depth, self))
        app.router.add_get(f"{prefix}/exchangeInfo", partial(http.h_exchange_info, self))
        app.router.add_get(f"{prefix}/time", partial(http.h_time, self))
        for root in ("", "/{category:public|market}"):
            app.router.add_get(f"{root}/stream", partial(http.h_ws, self))
            app.router.add_get(f"{root}/ws", partial(http.h_ws, self))
            app.router.add_get(root + "/ws/{streams}", partial(http.h_ws, self))
        app.router.add_get("/fake/info", partial(http.h_info, self))
        app.router.add_get("/fake/book", partial(http.h_book, self))
        app.router.add_route("*", "/fake/inject", partial(http.h_inject, self))
        app.router.add_route("*", "/fake/faults", partial(http.h_faults, self))
        self._runner = web.AppRunner(app, handle_signals=False, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", self.port)
        await site.start()
        server: Any = site._server  # the bound port when 0 was asked for
        if server is not None and server.sockets:
            self.port = server.sockets[0].getsockname()[1]
        self.epoch_ns = time.time_ns()
        self._producer = asyncio.create_task(self._produce(), name="fake-exchange-producer")

    @property
    def producer(self) -> asyncio.Task[None] | None:
        """The task sending the feed (it loops over the feed forever: if it is done, it
        failed, and the server has nothing left to serve)."""
        return self._producer

    async def stop(self) -> None:
        self._stopped.set()
        if self._producer is not None:
            self._producer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._producer
        for c in list(self.clients):
            with contextlib.suppress(Exception):
                await c.ws.close()
        for t in list(self._tasks):
            t.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._runner is not None:
            await self._runner.cleanup()

    async def __aenter__(self) -> FakeExchange:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    @property
    def ws_base(self) -> str:
        return f"ws://127.0.0.1:{self.port}"

    @property
    def rest_base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def _spawn(self, coro: Any) -> None:
        task = asyncio.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    # --- the feed → messages, paced ---------------------------------------------------------

    async def _produce(self) -> None:
        ev = self.events
        ts = np.asarray(ev["exch_ts"], dtype=np.int64)
        n = len(ev)
        t0 = int(ts[0])
        span = int(ts[-1]) - t0 + BATCH_NS
        offset = 0  # feed time shift of the current loop over the feed
        i = 0
        end = t0 + BATCH_NS
        prices = np.round(np.asarray(ev["price"], dtype=np.float64), self.price_dec)
        qtys = np.round(np.asarray(ev["qty"], dtype=np.float64), self.qty_dec)
        kinds = np.asarray(ev["kind"])
        sides = np.asarray(ev["side"])
        while True:
            j = int(np.searchsorted(ts, end, side="left"))
            base = self.epoch_ns - t0 + offset  # feed time -> exchange clock
            off = self.clock_offset_ns  # exchange clock -> the venue's stamps
            staged: dict[tuple[int, float], float] = {}
            late: list[tuple[int, float, float, int]] = []
            # This share of trades is sent right after the diff of their 100 ms bucket (which
            # already carries the liquidity they took), as trades and diffs on separate
            # streams arrive on Binance (LATE_TRADE_RATES: the shares in real captures).
            late_p = self.opts.late_trades
            if i < j:
                rows = zip(
                    kinds[i:j].tolist(),
                    sides[i:j].tolist(),
                    prices[i:j].tolist(),
                    qtys[i:j].tolist(),
                    ts[i:j].tolist(),
                    strict=True,
                )
                for k, s, p, q, t in rows:
                    if k in (KIND_DEPTH, KIND_SNAPSHOT):
                        staged[(s, p)] = q
                    elif k == KIND_TRADE:
                        if q > 0.0:
                            if late_p and self.rng.random() < late_p:
                                late.append((s, p, q, (t + base + off) // _MS))
                                continue
                            await self._wait_until(t + base)
                            self._trade(s, p, q, (t + base + off) // _MS)
                    elif k == KIND_CLEAR:
                        staged = {(ASK, p0): 0.0 for p0 in self.book.asks}
                        staged.update({(BID, p0): 0.0 for p0 in self.book.bids})
            e_ns = end + base
            await self._wait_until(e_ns)
            if staged:
                self._diff_from(staged, (e_ns + off) // _MS)
            for s, p, q, t_ms in late:
                self.stats["late_trades"] += 1
                self._trade(s, p, q, t_ms)
            i = j
            end += BATCH_NS
            if i >= n:
                offset += span
                i = 0
                end = t0 + BATCH_NS
                self.stats["feed_loops"] += 1

    async def _wait_until(self, due_ns: int) -> None:
        """Return at exchange time ``due_ns``: written frames go out before any wait.

        The event loop gets a turn (requests, control frames) at least every millisecond, not
        at every message: at thousands of messages per second that turn would be most of the
        cost. Behind schedule, due messages go out in batches of up to ``_YIELD_EVERY``.
        """
        speed_ns = self.speed * 1e9
        rem = (due_ns - self.now_ns()) / speed_ns
        if rem > 0:
            self._flush()
            self._since_yield = 0
            if rem > _FINE_WAIT_S:
                await asyncio.sleep(rem - _FINE_WAIT_S / 2)
                self._yielded = time.monotonic()
            elif time.monotonic() - self._yielded > _YIELD_S:
                await asyncio.sleep(0)
                self._yielded = time.monotonic()
            rem = (due_ns - self.now_ns()) / speed_ns
            if rem > 0:
                if rem > _SPIN_S:
                    time.sleep(rem - _SPIN_S)
                clock = self.now_ns
                while clock() < due_ns:
                    pass
                rem = (due_ns - clock()) / speed_ns
        else:
            self._since_yield += 1
            if self._since_yield >= _YIELD_EVERY or time.monotonic() - self._yielded > _YIELD_S:
                self._flush()
                self._since_yield = 0
                await asyncio.sleep(0)
                self._yielded = time.monotonic()
                rem = (due_ns - self.now_ns()) / speed_ns
        late = -rem if rem < 0 else 0.0
        self._late[self._n_sent % _LATE_KEEP] = late
        if late > _STALL_S:
            t = time.monotonic()
            last = self._stalls[-1] if self._stalls else None
            if last is not None and t - last[0] - last[1] < 0.01:
                last[1] = max(last[1], late)
            else:
                self._stalls.append([t - late, late])

    def _sent(self) -> None:
        if self._n_sent == 0:
            self._first_send = time.monotonic()
        self._n_sent += 1
        self._last_send = time.monotonic()

    def _trade(self, side: int, price: float, qty: float, t_ms: int) -> None:
        self.trade_id += 1
        text = self._trade_fmt % (
            t_ms,
            self.trade_id,
            price,
            qty,
            t_ms,
            "true" if side == ASK else "false",
        )  # m: the buyer rested, so the aggressor sold
        self.stats["trades"] += 1
        self._sent()
        now = time.monotonic()
        agg: str | None = None
        for c in self.clients:
            name = c.trade_name
            if name is None:
                continue
            if c.stall_until > now:
                self.stats["stalled_drops"] += 1
                continue
            if c.agg:
                if agg is None:
                    # One aggregate per trade (ids a = f = l): what aggTrade does with a fill
                    # that nothing else shared its price, side and 100 ms with.
                    tid = self.trade_id
                    m = "true" if side == ASK else "false"
                    hidden = 0.0
                    nq: tuple[float, ...] = ()  # the format has an nq member on USD-M only
                    if self._usd_m:
                        # q also counts fills against RPI orders the book never shows; nq not
                        rpi = self.opts.rpi_share
                        hidden = qty if rpi and self.rng.random() < rpi else 0.0
                        self.stats["rpi_prints"] += hidden > 0.0
                        nq = (qty,)
                    q = qty + hidden
                    agg = self._agg_fmt % (t_ms, tid, price, q, *nq, tid, tid, t_ms, m)
                c.out.append((name, agg))
                continue
            c.out.append((name, text))

    def _diff_from(self, staged: dict[tuple[int, float], float], e_ms: int) -> None:
        bids, asks = self.book.bids, self.book.asks
        changes: Changes = tuple(
            [
                (s, p, q)
                for (s, p), q in staged.items()
                if q != (asks if s == ASK else bids).get(p, 0.0)
            ]
        )
        if changes:
            self._diff(changes, e_ms)

    def _diff(self, changes: Changes, e_ms: int) -> None:
        prev = self.book.update_id
        futures = self.market is Market.FUTURES
        first = prev + 1 + (self.rng.randrange(3) if futures and prev else 0)
        final = first + len(changes) - 1
        self.book.apply(first, final, changes)
        fmt = self._level_fmt
        b = ",".join([fmt % (p, q) for s, p, q in changes if s != ASK])
        a = ",".join([fmt % (p, q) for s, p, q in changes if s == ASK])
        if futures:
            text = (
                f'{{"e":"depthUpdate","E":{e_ms},"T":{e_ms},"s":"{self.symbol}",{self._pair}'
                f'"U":{first},"u":{final},"pu":{prev},"b":[{b}],"a":[{a}]}}'
            )
        else:
            shown = first
            last = self._last_diff
            if (
                last is not None
                and self.opts.overlap_diffs
                and (self.rng.random() < self.opts.overlap_diffs)
            ):
                # Restate the previous diff's changes too (its range and ours, overlapping):
                # quantities are absolute, so a client must apply it, not call it a gap.
                shown = last[0]
                merged = {(s, p): q for s, p, q in last[1]}
                merged.update({(s, p): q for s, p, q in changes})
                both = [(s, p, q) for (s, p), q in merged.items()]
                b = ",".join([fmt % (p, q) for s, p, q in both if s != ASK])
                a = ",".join([fmt % (p, q) for s, p, q in both if s == ASK])
                self.stats["overlapping_diffs"] += 1
            self._last_diff = (first, changes)
            text = (
                f'{{"e":"depthUpdate","E":{e_ms},"s":"{self.symbol}","U":{shown},"u":{final},'
                f'"b":[{b}],"a":[{a}]}}'
            )
        self.stats["diffs"] += 1
        self._sent()
        drop_all = False
        if self._gap_after is not None and first > self._gap_after:
            self._gap_after = None
            drop_all = True
            self.faults.fired["gap-after-snapshot"] += 1
        self._broadcast_diff(text, drop_all)

    def send_stats(self) -> dict[str, Any]:
        """Messages produced, their rate over the wall time they took, and send lateness."""
        return http.send_stats(self)


__all__ = [
    "FAULTS",
    "INJECT_ONLY",
    "FakeExchange",
    "FaultPlan",
    "TrueBook",
    "top_levels",
    "ws_frame",
]
