"""Binance market-data client: combined websocket stream + REST snapshot → native events.

Two layers, as in a sans-I/O design:

- :class:`~mm_sim.venues.binance.processor.StreamProcessor` (``processor.py``) owns no socket
  and no clock: frames and snapshots in, native events and "a snapshot is needed" out.
- :class:`BinanceClient` only moves bytes: one reader task per websocket connection pushes
  frames into a bounded queue (it never waits for the consumer; when the queue is full the
  frame is counted as overflow and a marker makes the consumer resync), a fetch task gets REST
  snapshots with backoff (``client_rest.py``, with the venue clock checks after a loss), a
  supervisor task reconnects with exponential backoff and jitter, closes a connection that
  went stale (frames may still flow: pings are not data), and rolls a connection over before
  the exchange's 24 h limit (or at once on ``serverShutdown``) by opening the next one first
  and switching once its stream continues the book (no resync, no gap).

Every message keeps its local receive time (``clock()``, the caller's idea of "now" in the
exchange's time base) next to the exchange event time, so feed lag in the reports is measured.
Receive times are taken when the socket read that brought the frame returns to Python, before
the websocket library parses it, so the library's time is inside every latency measured from
them.

Text frames do not wait in the websocket library's own queue for a reader task to wake up: the
connection hands each one to the client as soon as it is parsed, inside the socket read's
callback (``direct_ws.py``). Two ways to consume, both with all book work in one task:

- pull: :meth:`BinanceClient.poll` processes whatever has arrived (the soak, ``record``); the
  frames wait in a bounded queue (overflow: counted, then a resync);
- push (the low-latency path): with :meth:`BinanceClient.set_sink`, the frames of a socket read
  are processed right there (parse, sync, events) and each frame's events go to the sink at
  once, so the decision follows the frame without a task switch. When more than ``CATCH_UP``
  frames are still waiting (the process fell behind), they are decided together.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
from collections import deque
from collections.abc import Callable
from typing import Any

import aiohttp
import numpy as np
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidURI

from mm_sim.errors import UserError
from mm_sim.logs import get_logger
from mm_sim.venues.binance.client_config import ClientConfig, Polled, retry_after_s
from mm_sim.venues.binance.client_parts import Conn as _Conn
from mm_sim.venues.binance.client_parts import TradeSilence as _TradeSilence
from mm_sim.venues.binance.client_rest import RestSide
from mm_sim.venues.binance.direct_ws import Clock, _direct_connection, _DirectConnection
from mm_sim.venues.binance.fastparse import warm as warm_parsers
from mm_sim.venues.binance.messages import DepthDiff
from mm_sim.venues.binance.processor import ClientCounters, StreamProcessor
from mm_sim.venues.binance.sync import BookSync, Market
from mm_sim.venues.binance.sync import warm as warm_book

log = get_logger("mm_sim.binance")

# Events of one or more frames, and the receive time (time.monotonic_ns) of each frame that
# produced some of them, in order.
Sink = Callable[[np.ndarray, list[int]], None]
CATCH_UP = 16  # push mode: more frames than this waiting, decide on them together (behind)


class BinanceClient(RestSide):
    """One symbol's live book from Binance (or the fake exchange). Use as an async context."""

    def __init__(
        self,
        cfg: ClientConfig,
        clock: Clock = time.time_ns,
        rng: random.Random | None = None,
    ) -> None:
        self.cfg = cfg
        self.clock = clock
        self.rng = rng or random.Random()
        self.counters = ClientCounters()
        self.proc = StreamProcessor(cfg.symbol, cfg.market, cfg.max_buffer, self.counters)
        self._items: deque[tuple[Any, ...]] = deque()
        self._wake = asyncio.Event()
        self._conns: dict[int, _Conn] = {}
        self._next_id = 0
        self._active: int | None = None
        self._pending: int | None = None  # rollover connection waiting to take over
        self._stash: list[tuple[Any, int, int]] = []  # (parsed msg, local, perf) of _pending
        self._switched = asyncio.Event()
        self._epoch = 0
        self._snap_task: asyncio.Task[None] | None = None
        self._refetch = False  # the running snapshot task must fetch once more (push mode)
        self._supervisors: list[asyncio.Task[None]] = []
        self._depth_route = cfg.depth_route
        self._aux: set[int] = set()  # open connections of the other routes (trades)
        self._silence = _TradeSilence(cfg.trade_silence_s)
        self._spinner: asyncio.Task[None] | None = None
        self._session: aiohttp.ClientSession | None = None
        self._closing = False
        self._shutdown_seen = 0
        self._nudge = asyncio.Event()  # wakes the supervisor (closed, serverShutdown)
        self._sink: Sink | None = None
        self._draining = False
        self.sink_error: BaseException | None = None
        self.fatal: UserError | None = None  # a permanent error (bad symbol, bad limit)
        self._connection_class = _direct_connection(clock)
        self.clock_log: list[dict[str, Any]] = []  # venue clocks found moved (restarts)

    # --- lifecycle ------------------------------------------------------------------------

    async def start(self) -> None:
        warm_parsers()  # before any frame can arrive: loading kernels mid-stream stalls it
        warm_book()
        self._session = aiohttp.ClientSession(
            timeout=aiohttp.ClientTimeout(total=self.cfg.request_timeout_s)
        )
        for i in range(len(self.cfg.route_list)):
            coro = self._supervise() if i == self._depth_route else self._supervise_aux(i)
            self._supervisors.append(asyncio.create_task(coro, name=f"binance-supervisor-{i}"))
        if self.cfg.busy_poll:
            self._spinner = asyncio.create_task(self._spin(), name="binance-busy-poll")

    async def _spin(self) -> None:
        """Keep the event loop polling sockets with a zero timeout instead of sleeping in the
        kernel between frames. A loop that sleeps pays for it at every frame: the wake-up, and
        caches and branch predictors gone cold while the core idled (measured: the live path's
        p50 from arrival to decision drops by about 40 %, its p99 by about a third). The price
        is one core at 100 %, which is why it is an option."""
        while not self._closing:
            await asyncio.sleep(0)

    async def close(self) -> None:
        self._closing = True
        tasks = [t for t in (*self._supervisors, self._snap_task, self._spinner) if t is not None]
        for t in tasks:
            t.cancel()
        for conn in list(self._conns.values()):
            with contextlib.suppress(Exception):
                await conn.ws.close()
            if conn.task is not None:
                conn.task.cancel()
                tasks.append(conn.task)
        await asyncio.gather(*tasks, return_exceptions=True)
        if self._session is not None:
            await self._session.close()

    async def __aenter__(self) -> BinanceClient:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    @property
    def sync(self) -> BookSync:
        return self.proc.sync

    @property
    def connections(self) -> int:
        return sum(1 for c in self._conns.values() if not c.closed.is_set())

    # --- consumer side --------------------------------------------------------------------

    async def poll(self, timeout: float | None = None, max_items: int = 4096) -> Polled:
        """Process what has arrived (waiting up to ``timeout`` for something) into events."""
        if self.fatal is not None:
            raise self.fatal
        if self._sink is not None:
            raise RuntimeError("poll() while a sink is set: frames go to the sink")
        if not self._items and timeout != 0:
            self._wake.clear()
            if timeout is None:
                await self._wake.wait()
            else:
                # A timer on the event, not wait_for: no task is created per poll.
                timer = asyncio.get_running_loop().call_later(timeout, self._wake.set)
                try:
                    await self._wake.wait()
                finally:
                    timer.cancel()
        arrivals: list[int] = []
        n = 0
        items = self._items
        while items and n < max_items:
            item = items.popleft()
            n += 1
            self._process(item, arrivals)
        self._after_processing()
        return Polled(self.proc.take(), arrivals, n)

    def set_sink(self, sink: Sink | None) -> None:
        """Push mode: every frame is processed when it is handed over and its events (if any)
        go to ``sink(events, arrivals)`` at once, from the reader's task. ``None`` goes back to
        pull mode. The sink must not await; an exception in it is kept in ``sink_error`` and
        stops the client's reading (the sink's owner decides what to do)."""
        self._sink = sink
        if sink is not None and self._items:
            self._drain()

    def _notify(self) -> None:
        """New items are queued: process them now (push mode) or wake the consumer."""
        if self._sink is None:
            self._wake.set()
        elif not self._draining:
            self._drain()

    def _drain(self) -> None:
        """Process queued frames; each frame's events go to the sink as soon as they exist,
        unless more than ``CATCH_UP`` frames still wait: then they are decided together."""
        sink = self._sink
        assert sink is not None
        self._draining = True
        try:
            arrivals: list[int] = []
            items = self._items
            stage = self.proc.stage
            while items:
                self._process(items.popleft(), arrivals)
                if arrivals and len(items) <= CATCH_UP:
                    self._after_processing()
                    sink(self.proc.take(), arrivals)
                    arrivals = []
            self._after_processing()
            if len(stage):
                sink(self.proc.take(), arrivals)
        except Exception as exc:
            self.sink_error = exc
            self._sink = None
            log.error("live sink failed; client stops delivering", error=repr(exc)[:200])
            self._closing = True
            self._nudge.set()
        finally:
            self._draining = False

    def _after_processing(self) -> None:
        if self.proc.need_snapshot:
            self.proc.need_snapshot = False
            self._start_snapshot()
        if self.counters.server_shutdown > self._shutdown_seen:
            self._nudge.set()  # the supervisor rolls over now, not at its next tick

    def _process(self, item: tuple[Any, ...], arrivals: list[int]) -> None:
        kind = item[0]
        proc = self.proc
        if kind == "msg":
            _, cid, raw, local, mono = item
            if cid == self._active:
                before = len(proc.stage)
                proc.on_raw(raw, local)
                if len(proc.stage) > before:
                    arrivals.append(mono)
                if self._pending is not None:
                    self._maybe_switch(local)
            elif cid in self._aux:
                before = len(proc.stage)
                proc.on_raw(raw, local)
                if len(proc.stage) > before:
                    arrivals.append(mono)
            elif cid == self._pending:
                msg = proc.decode(raw)
                if msg is not None:
                    self._stash.append((msg, local, mono))
                    self._maybe_switch(local)
            else:
                self.counters.old_connection_frames += 1
        elif kind == "snap":
            _, epoch, snap, local = item
            if epoch != self._epoch:
                self.counters.snapshots_late += 1
                return
            proc.on_snapshot(snap, local)
        elif kind == "open":
            _, cid = item
            conn = self._conns.get(cid)
            if conn is None:
                return
            if conn.route != self._depth_route:
                self._aux.add(cid)
                return
            active = self._conns.get(self._active) if self._active is not None else None
            if conn.overlap and active is not None and not active.closed.is_set():
                self._pending = cid
                self._stash = []
            else:
                self._activate(cid, "connect")
        elif kind == "closed":
            _, cid = item
            if cid in self._aux:
                self._aux.discard(cid)
            elif cid == self._active:
                if self._pending is not None:
                    self._switch(self.clock())
                else:
                    self._active = None
                    self._reset("disconnect")
            elif cid == self._pending:
                self._pending = None
                self._stash = []
        elif kind == "overflow":
            _, cid, lost = item
            if cid in self._aux:
                self.counters.trade_frames_lost += lost
            elif cid == self._active:
                self.counters.overflow_resyncs += 1
                log.warning("consumer too slow: frames lost, resyncing", lost=lost)
                self._reset("overflow")

    def _reset(self, reason: str) -> None:
        self._epoch += 1
        if self._snap_task is not None:
            self._snap_task.cancel()
            self._snap_task = None
        self.proc.reset(reason, self.clock())

    def _activate(self, cid: int, reason: str) -> None:
        self._active = cid
        self._pending = None
        self._stash = []
        self._reset(reason)

    def _maybe_switch(self, now: int) -> None:
        """Hand over to the rollover connection once its stream continues our book."""
        sync = self.proc.sync
        if not sync.book_valid:
            self._switch(now)
            return
        last = sync.last_update_id
        assert last is not None
        for msg, _, _ in self._stash:
            if type(msg) is DepthDiff:
                if self.proc.market is Market.FUTURES:
                    ok = msg.prev_final_id is not None and msg.prev_final_id <= last
                else:
                    ok = msg.first_id <= last + 1
                if ok:
                    self._switch(now)
                return

    def _switch(self, now: int) -> None:
        old = self._active
        cid = self._pending
        assert cid is not None
        stash = self._stash
        self._active, self._pending, self._stash = cid, None, []
        if self.proc.sync.book_valid:
            self.counters.overlap_switches += 1
        else:
            self._reset("rollover")
        for msg, local, _ in stash:
            self.proc.on_message(msg, local)
        self._switched.set()
        log.info("connection rolled over", old=old, new=cid)

    # --- connections ----------------------------------------------------------------------

    def _backoff(self, attempt: int) -> float:
        cfg = self.cfg
        return min(cfg.backoff_cap_s, cfg.backoff_base_s * 2 ** max(attempt - 1, 0)) * (
            self.rng.uniform(0.5, 1.0)
        )

    async def _open(self, overlap: bool, route: int | None = None) -> _Conn | None:
        cfg = self.cfg
        route = self._depth_route if route is None else route
        url = cfg.route_url(route)
        try:
            ws = await connect(
                url,
                ping_interval=cfg.ping_interval_s,
                ping_timeout=cfg.ping_timeout_s,
                open_timeout=cfg.request_timeout_s,
                max_queue=None,  # our own bounded queue is the only buffer that counts
                max_size=1 << 24,
                compression=None,  # Binance does not compress; deflate would cost every frame
                create_connection=self._connection_class,
            )
        except (OSError, TimeoutError, InvalidHandshake, InvalidURI) as exc:
            self.counters.connect_failures += 1
            log.warning("websocket connect failed", url=url, error=str(exc)[:120])
            return None
        self._next_id += 1
        conn = _Conn(self._next_id, ws, overlap, route)
        self._conns[conn.id] = conn
        self.counters.connects += 1
        self._items.append(("open", conn.id))
        if isinstance(ws, _DirectConnection):
            for data, mono, local in ws.early:
                self._accept(conn, data, mono, local)
            ws.early.clear()
            ws.deliver = lambda data, mono, local: self._accept(conn, data, mono, local)
            ws.after_read = self._notify
        self._notify()
        conn.task = asyncio.create_task(self._read(conn), name=f"binance-ws-{conn.id}")
        return conn

    async def _read(self, conn: _Conn) -> None:
        """Frames the connection did not hand over directly (binary, fragmented), and the end."""
        ws = conn.ws
        try:
            while not self._closing:
                raw = await ws.recv()
                self._accept(conn, raw, time.monotonic_ns(), self.clock())
                self._notify()
        except (ConnectionClosed, OSError) as exc:
            conn.reason = conn.reason or f"{type(exc).__name__}: {exc}"[:120]
        finally:
            conn.closed.set()
            self._conns.pop(conn.id, None)
            self._items.append(("closed", conn.id))
            self._nudge.set()
            if not self._closing:
                self._notify()

    def _accept(self, conn: _Conn, raw: Any, mono: int, local: int) -> None:
        """Queue one frame; in pull mode a full queue drops it (overflow, then a resync)."""
        items = self._items
        conn.last_data = mono / 1e9
        if len(items) >= self.cfg.queue_size and self._sink is None:
            conn.dropped += 1
            self.counters.overflow += 1
            return
        if conn.dropped:
            items.append(("overflow", conn.id, conn.dropped))
            conn.dropped = 0
        items.append(("msg", conn.id, raw, local, mono))

    async def _close_conn(self, conn: _Conn, reason: str) -> None:
        conn.reason = reason
        with contextlib.suppress(Exception):
            await asyncio.wait_for(conn.ws.close(), 2.0)
        if conn.task is not None:
            conn.task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await conn.task

    async def _supervise(self) -> None:
        """Keep one good connection: reconnect, close stale ones, roll over before the limit."""
        cfg = self.cfg
        attempt = 0
        current: _Conn | None = None
        lost = False  # the stream was lost: check the venue's clock before reconnecting
        tick = max(0.02, min(1.0, cfg.stale_after_s / 4, cfg.max_connection_s / 4))
        while not self._closing:
            if current is None or current.closed.is_set():
                if current is not None:
                    lived = time.monotonic() - current.opened
                    attempt = 1 if lived >= cfg.backoff_reset_after_s else attempt + 1
                    if current.reason not in ("stale", "rollover"):
                        self.counters.disconnects += 1
                    lost = current.reason != "rollover"
                    log.warning("websocket closed", reason=current.reason, lived_s=round(lived, 1))
                    await asyncio.sleep(self._backoff(attempt))
                if lost:
                    await self._check_venue_clock()
                current = await self._open(overlap=False)
                if current is None:
                    attempt += 1
                    await asyncio.sleep(self._backoff(attempt))
                else:
                    lost = False
                continue
            if not self._nudge.is_set():
                timer = asyncio.get_running_loop().call_later(tick, self._nudge.set)
                try:
                    await self._nudge.wait()
                finally:
                    timer.cancel()
            self._nudge.clear()
            if current.closed.is_set() or self._closing:
                continue
            now = time.monotonic()
            self._silence.check(now, self.counters)
            if now - current.last_data > cfg.stale_after_s:
                self.counters.stale += 1
                log.warning(
                    "stream stale: reconnecting", silent_s=round(now - current.last_data, 2)
                )
                await self._close_conn(current, "stale")
                continue
            shutdown = self.counters.server_shutdown
            if now - current.opened >= cfg.max_connection_s or shutdown > self._shutdown_seen:
                self._shutdown_seen = shutdown
                current = await self._rollover(current)

    async def _supervise_aux(self, route: int) -> None:
        """Keep one connection of a route without the depth stream (trades): reconnect with
        backoff, roll over before the limit or on ``serverShutdown`` by opening the next one
        first. No stale check (a quiet market has no trades: the trade-silence warning covers a
        route that delivers nothing) and no resync (the book does not depend on it); trades
        seen on both connections of a rollover are dropped by trade id."""
        cfg = self.cfg
        attempt = 0
        seen = self.counters.server_shutdown
        current: _Conn | None = None
        tick = max(0.02, min(1.0, cfg.max_connection_s / 4))
        while not self._closing:
            if current is None or current.closed.is_set():
                if current is not None:
                    lived = time.monotonic() - current.opened
                    attempt = 1 if lived >= cfg.backoff_reset_after_s else attempt + 1
                    self.counters.disconnects += 1
                    log.warning(
                        "websocket closed",
                        route=route,
                        reason=current.reason,
                        lived_s=round(lived, 1),
                    )
                    await asyncio.sleep(self._backoff(attempt))
                current = await self._open(overlap=False, route=route)
                if current is None:
                    attempt += 1
                    await asyncio.sleep(self._backoff(attempt))
                continue
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(current.closed.wait(), tick)
            if current.closed.is_set() or self._closing:
                continue
            shutdown = self.counters.server_shutdown
            if time.monotonic() - current.opened >= cfg.max_connection_s or shutdown > seen:
                seen = shutdown
                self.counters.rollovers += 1
                new = await self._open(overlap=False, route=route)
                if new is None:
                    current.opened = time.monotonic() - cfg.max_connection_s + self._backoff(1)
                    continue
                await self._close_conn(current, "rollover")
                current = new

    async def _rollover(self, old: _Conn) -> _Conn:
        """Open the next connection while the old one still feeds the book; switch, then close."""
        self.counters.rollovers += 1
        self._switched.clear()
        new = await self._open(overlap=True)
        if new is None:
            old.opened = time.monotonic() - self.cfg.max_connection_s + self._backoff(1)
            return old
        try:
            await asyncio.wait_for(self._switched.wait(), self.cfg.overlap_timeout_s)
        except TimeoutError:
            self.counters.overlap_timeouts += 1
            # Force the hand-over through the queue so it stays ordered with the frames.
            self._items.append(("closed", old.id))
            self._notify()
        await self._close_conn(old, "rollover")
        return new


__all__ = [
    "BinanceClient",
    "ClientConfig",
    "ClientCounters",
    "Polled",
    "Sink",
    "StreamProcessor",
    "retry_after_s",
]
