"""Binance market-data client: combined websocket stream + REST snapshot → native events.

Two layers, as in a sans-I/O design:

- :class:`StreamProcessor` owns no socket and no clock. Raw messages and snapshots go in with
  their receive time; native events (``EVENT_DTYPE``) and "a snapshot is needed" come out. It
  drives :class:`~mm_sim.venues.binance.sync.BookSync` exactly as the converter does, so a
  recorded session replayed through it gives the converter's book, and tests can feed it bytes.
- :class:`BinanceClient` only moves bytes: one reader task per websocket connection pushes
  frames into a bounded queue (it never waits for the consumer; when the queue is full the
  frame is counted as overflow and a marker makes the consumer resync), a fetch task gets REST
  snapshots with backoff, a supervisor task reconnects with exponential backoff and jitter,
  closes a connection that went stale (frames may still flow: pings are not data), and rolls a
  connection over before the exchange's 24 h limit by opening the next one first and switching
  once its stream continues the book (no resync, no gap).

Every message keeps its local receive time (``clock()``, the caller's idea of "now" in the
exchange's time base) next to the exchange event time, so feed lag in the reports is measured.
The consumer pulls with :meth:`BinanceClient.poll`; all book work happens in the consumer's task.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
from array import array
from collections import Counter, deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import numpy as np
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidURI

from mm_sim.events import ASK, BID, EVENT_DTYPE, KIND_CLEAR, KIND_DEPTH, KIND_SNAPSHOT, KIND_TRADE
from mm_sim.logs import get_logger
from mm_sim.venues.binance.messages import (
    DepthDiff,
    DepthSnapshot,
    Level,
    MessageError,
    Skipped,
    Trade,
    decode,
    parse_payload,
    parse_snapshot,
)
from mm_sim.venues.binance.sync import Action, ActionKind, BookSync, Market

log = get_logger("mm_sim.binance")

_MS = 1_000_000
Clock = Callable[[], int]


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


@dataclass
class ClientCounters:
    messages: int = 0  # frames handed to the processor
    diffs: int = 0
    trades: int = 0
    trades_duplicate: int = 0  # same trade id again (duplicates, connection overlap)
    trades_skipped: int = 0  # non-market prints (futures insurance fund, ADL), zero qty
    skipped: int = 0  # well-formed messages not used (control replies, klines, ...)
    other_symbol: int = 0
    malformed: int = 0
    bad: Counter[str] = field(default_factory=Counter)  # malformed by reason
    connects: int = 0
    connect_failures: int = 0
    disconnects: int = 0  # connections lost (not counting our own proactive closes)
    rollovers: int = 0  # proactive reconnects started
    overlap_switches: int = 0  # rollovers that kept book continuity
    overlap_timeouts: int = 0
    stale: int = 0  # connections closed because no data arrived in stale_after_s
    overflow: int = 0  # frames the reader could not queue (consumer too slow)
    overflow_resyncs: int = 0
    server_shutdown: int = 0
    snapshot_fetches: int = 0
    snapshot_failures: int = 0  # HTTP errors, timeouts, unparsable bodies (retried)
    rate_limited: int = 0  # 429/418 answers (waited Retry-After)
    snapshots_late: int = 0  # snapshot of an earlier epoch, not used
    invalidations: int = 0  # CLEAR events emitted because the book became unknown
    old_connection_frames: int = 0  # frames of a connection already replaced

    def as_dict(self) -> dict[str, Any]:
        d = {k: v for k, v in self.__dict__.items() if k != "bad"}
        d["bad"] = dict(self.bad)
        return d


class _Columns:
    """Event staging in typed arrays (cheaper than filling numpy records one by one)."""

    def __init__(self) -> None:
        self._reset()

    def _reset(self) -> None:
        self.ex = array("q")
        self.lo = array("q")
        self.px = array("d")
        self.qt = array("d")
        self.kd = array("i")
        self.sd = array("i")

    def __len__(self) -> int:
        return len(self.ex)

    def one(self, exch: int, local: int, kind: int, side: int, price: float, qty: float) -> None:
        self.ex.append(exch)
        self.lo.append(local)
        self.kd.append(kind)
        self.sd.append(side)
        self.px.append(price)
        self.qt.append(qty)

    def levels(self, levels: list[Level], side: int, kind: int, exch: int, local: int) -> None:
        n = len(levels)
        if not n:
            return
        self.px.extend([p for p, _ in levels])
        self.qt.extend([q for _, q in levels])
        self.ex.extend([exch] * n)
        self.lo.extend([local] * n)
        self.kd.extend([kind] * n)
        self.sd.extend([side] * n)

    def take(self) -> np.ndarray:
        n = len(self.ex)
        rec = np.empty(n, dtype=EVENT_DTYPE)
        if n:
            rec["exch_ts"] = np.frombuffer(self.ex, dtype=np.int64)
            rec["local_ts"] = np.frombuffer(self.lo, dtype=np.int64)
            rec["price"] = np.frombuffer(self.px, dtype=np.float64)
            rec["qty"] = np.frombuffer(self.qt, dtype=np.float64)
            rec["kind"] = np.frombuffer(self.kd, dtype=np.int32)
            rec["side"] = np.frombuffer(self.sd, dtype=np.int32)
            self._reset()
        return rec


class StreamProcessor:
    """Parsed or raw Binance messages of one symbol → native events, via :class:`BookSync`.

    Exchange times are kept non-decreasing in the output (a REST snapshot's ``E`` can be older
    than the diffs already applied): the core assumes a monotonic exchange clock.
    """

    def __init__(
        self,
        symbol: str,
        market: Market | str,
        max_buffer: int = 10_000,
        counters: ClientCounters | None = None,
    ) -> None:
        self.symbol = symbol.upper()
        self.market = Market(market)
        self.sync = BookSync(self.market, max_buffer=max_buffer)
        self.counters = counters if counters is not None else ClientCounters()
        self.cols = _Columns()
        self.last_exch = 0
        self.last_local = 0
        self.last_trade_id = -1
        self.need_snapshot = False  # set when the sync asks for one; the I/O layer clears it

    # --- inputs ---------------------------------------------------------------------------

    def decode(self, raw: str | bytes) -> Any:
        """Parse one frame; None (and counted) when it cannot be used."""
        try:
            payload, stream = decode(raw)
            if type(payload) is dict and payload.get("e") == "serverShutdown":
                self.counters.server_shutdown += 1
                return Skipped("serverShutdown")
            return parse_payload(payload, stream)
        except MessageError as err:
            self.counters.malformed += 1
            self.counters.bad[err.reason] += 1
            if self.counters.malformed <= 10 or self.counters.malformed % 1000 == 0:
                log.warning("bad message skipped", reason=err.reason, detail=err.detail)
            return None

    def on_raw(self, raw: str | bytes, local_ns: int) -> None:
        msg = self.decode(raw)
        if msg is not None:
            self.on_message(msg, local_ns)

    def on_message(self, msg: Any, local_ns: int) -> None:
        c = self.counters
        c.messages += 1
        self.last_local = local_ns
        t = type(msg)
        if t is DepthDiff:
            if msg.symbol.upper() != self.symbol:
                c.other_symbol += 1
                return
            if (msg.prev_final_id is not None) != (self.market is Market.FUTURES):
                c.malformed += 1
                c.bad[f"{self.market} stream carries a non-{self.market} depthUpdate"] += 1
                return
            c.diffs += 1
            msg.local_ts = local_ns
            self._do(self.sync.on_diff(msg), local_ns)
        elif t is Trade:
            if msg.symbol.upper() != self.symbol:
                c.other_symbol += 1
                return
            self._trade(msg, local_ns)
        elif t is DepthSnapshot:  # a snapshot pushed on the stream (not Binance's habit)
            self.on_snapshot(msg, local_ns)
        else:
            c.skipped += 1

    def on_snapshot(self, snap: DepthSnapshot, local_ns: int) -> None:
        snap.local_ts = local_ns
        self.last_local = local_ns
        self._do(self.sync.on_snapshot(snap), local_ns)

    def reset(self, reason: str, local_ns: int) -> None:
        """The stream's continuity is lost (new connection, overflow): the book is unknown."""
        self.need_snapshot = False
        self._do(self.sync.reset(reason), local_ns)

    def take(self) -> np.ndarray:
        return self.cols.take()

    # --- internals ------------------------------------------------------------------------

    def _exch(self, ms: int) -> int:
        ns = ms * _MS
        if ns < self.last_exch:
            return self.last_exch
        self.last_exch = ns
        return ns

    def _trade(self, tr: Trade, local_ns: int) -> None:
        c = self.counters
        if tr.trade_id <= self.last_trade_id:
            c.trades_duplicate += 1
            return
        self.last_trade_id = tr.trade_id
        if (tr.order_type is not None and tr.order_type != "MARKET") or tr.qty <= 0.0:
            c.trades_skipped += 1
            return
        c.trades += 1
        self.cols.one(
            self._exch(tr.trade_ms), local_ns, KIND_TRADE, tr.aggressor_side, tr.price, tr.qty
        )

    def _do(self, actions: list[Action], now: int) -> None:
        cols = self.cols
        for a in actions:
            k = a.kind
            if k is ActionKind.APPLY:
                d = a.diff
                assert d is not None
                exch = self._exch(d.event_ms)
                cols.levels(d.bids, BID, KIND_DEPTH, exch, now)
                cols.levels(d.asks, ASK, KIND_DEPTH, exch, now)
            elif k is ActionKind.REBASE:
                s = a.snapshot
                assert s is not None
                ms = s.event_ms if s.event_ms is not None else s.txn_ms
                exch = self._exch(ms) if ms is not None else max(self.last_exch, now)
                self.last_exch = exch
                cols.one(exch, now, KIND_CLEAR, 0, 0.0, 0.0)
                cols.levels(s.bids, BID, KIND_SNAPSHOT, exch, now)
                cols.levels(s.asks, ASK, KIND_SNAPSHOT, exch, now)
            elif k is ActionKind.RESYNC:
                # Say in the feed that the book is unknown rather than leave a stale one.
                exch = self._exch(a.diff.event_ms) if a.diff is not None else self.last_exch
                cols.one(exch, now, KIND_CLEAR, 0, 0.0, 0.0)
                self.counters.invalidations += 1
                log.info("book resync", reason=a.reason, symbol=self.symbol)
            elif k is ActionKind.NEED_SNAPSHOT:
                self.need_snapshot = True

    # --- views for tests and reports ------------------------------------------------------

    @property
    def last_update_id(self) -> int | None:
        return self.sync.last_update_id

    def top(self, n: int) -> tuple[list[Level], list[Level]]:
        """The best ``n`` levels per side of the synced book (empty while it is invalid)."""
        book = self.sync.book
        if book is None or not self.sync.book_valid:
            return [], []
        bids = sorted(book.bids.items(), key=lambda kv: -kv[0])[:n]
        asks = sorted(book.asks.items())[:n]
        return bids, asks


@dataclass(frozen=True)
class Polled:
    """What one :meth:`BinanceClient.poll` produced."""

    events: np.ndarray
    arrivals_ns: list[int]  # perf_counter_ns at receipt of each frame processed
    messages: int


class _Conn:
    def __init__(self, cid: int, ws: ClientConnection, overlap: bool) -> None:
        self.id = cid
        self.ws = ws
        self.overlap = overlap
        self.opened = time.monotonic()
        self.last_data = self.opened
        self.closed = asyncio.Event()
        self.dropped = 0  # frames lost to overflow since the last marker
        self.reason = ""
        self.task: asyncio.Task[None] | None = None


class _HttpStatus(Exception):
    pass


class BinanceClient:
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
        self._supervisor: asyncio.Task[None] | None = None
        self._session: aiohttp.ClientSession | None = None
        self._closing = False
        self._shutdown_seen = 0

    # --- lifecycle ------------------------------------------------------------------------

    async def start(self) -> None:
        self._session = aiohttp.ClientSession(
            timeout=aiohttp.ClientTimeout(total=self.cfg.request_timeout_s)
        )
        self._supervisor = asyncio.create_task(self._supervise(), name="binance-supervisor")

    async def close(self) -> None:
        self._closing = True
        tasks = [t for t in (self._supervisor, self._snap_task) if t is not None]
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
        if not self._items and timeout != 0:
            self._wake.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), timeout)
        arrivals: list[int] = []
        n = 0
        items = self._items
        while items and n < max_items:
            item = items.popleft()
            n += 1
            self._process(item, arrivals)
        if self.proc.need_snapshot:
            self.proc.need_snapshot = False
            self._start_snapshot()
        return Polled(self.proc.take(), arrivals, len(arrivals))

    def _process(self, item: tuple[Any, ...], arrivals: list[int]) -> None:
        kind = item[0]
        proc = self.proc
        if kind == "msg":
            _, cid, raw, local, perf = item
            arrivals.append(perf)
            if cid == self._active:
                proc.on_raw(raw, local)
                if self._pending is not None:
                    self._maybe_switch(local)
            elif cid == self._pending:
                msg = proc.decode(raw)
                if msg is not None:
                    self._stash.append((msg, local, perf))
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
            active = self._conns.get(self._active) if self._active is not None else None
            if conn.overlap and active is not None and not active.closed.is_set():
                self._pending = cid
                self._stash = []
            else:
                self._activate(cid, "connect")
        elif kind == "closed":
            _, cid = item
            if cid == self._active:
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
            if cid == self._active:
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

    # --- snapshots ------------------------------------------------------------------------

    def _start_snapshot(self) -> None:
        if self._snap_task is not None and not self._snap_task.done():
            return
        self._snap_task = asyncio.create_task(self._fetch_snapshot(self._epoch))

    async def _fetch_snapshot(self, epoch: int) -> None:
        cfg = self.cfg
        delay = cfg.snapshot_retry_base_s
        assert self._session is not None
        while epoch == self._epoch and not self._closing:
            self.counters.snapshot_fetches += 1
            try:
                async with self._session.get(cfg.depth_url) as resp:
                    body = await resp.read()
                    if resp.status in (429, 418):
                        self.counters.rate_limited += 1
                        wait = float(resp.headers.get("Retry-After", "1") or 1)
                        log.warning("snapshot rate-limited", status=resp.status, retry_after=wait)
                        await asyncio.sleep(wait)
                        continue
                    if resp.status != 200:
                        raise _HttpStatus(f"HTTP {resp.status}: {body[:80]!r}")
                local = self.clock()
                snap = parse_snapshot(decode(body)[0], cfg.symbol.upper())
            except (aiohttp.ClientError, TimeoutError, MessageError, _HttpStatus) as exc:
                self.counters.snapshot_failures += 1
                log.warning("snapshot fetch failed; retrying", error=str(exc)[:120])
                await asyncio.sleep(delay * self.rng.uniform(0.5, 1.0))
                delay = min(cfg.snapshot_retry_cap_s, delay * 2)
                continue
            self._items.append(("snap", epoch, snap, local))
            self._wake.set()
            return

    # --- connections ----------------------------------------------------------------------

    def _backoff(self, attempt: int) -> float:
        cfg = self.cfg
        return min(cfg.backoff_cap_s, cfg.backoff_base_s * 2 ** max(attempt - 1, 0)) * (
            self.rng.uniform(0.5, 1.0)
        )

    async def _open(self, overlap: bool) -> _Conn | None:
        cfg = self.cfg
        try:
            ws = await connect(
                cfg.stream_url,
                ping_interval=cfg.ping_interval_s,
                ping_timeout=cfg.ping_timeout_s,
                open_timeout=cfg.request_timeout_s,
                max_queue=None,  # our own bounded queue is the only buffer that counts
                max_size=1 << 24,
            )
        except (OSError, TimeoutError, InvalidHandshake, InvalidURI) as exc:
            self.counters.connect_failures += 1
            log.warning("websocket connect failed", url=cfg.stream_url, error=str(exc)[:120])
            return None
        self._next_id += 1
        conn = _Conn(self._next_id, ws, overlap)
        self._conns[conn.id] = conn
        self.counters.connects += 1
        self._items.append(("open", conn.id))
        self._wake.set()
        conn.task = asyncio.create_task(self._read(conn), name=f"binance-ws-{conn.id}")
        return conn

    async def _read(self, conn: _Conn) -> None:
        items = self._items
        limit = self.cfg.queue_size
        clock = self.clock
        perf = time.perf_counter_ns
        try:
            async for raw in conn.ws:
                p = perf()
                local = clock()
                conn.last_data = time.monotonic()
                if len(items) >= limit:
                    conn.dropped += 1
                    self.counters.overflow += 1
                    continue
                if conn.dropped:
                    items.append(("overflow", conn.id, conn.dropped))
                    conn.dropped = 0
                items.append(("msg", conn.id, raw, local, p))
                self._wake.set()
        except (ConnectionClosed, OSError) as exc:
            conn.reason = conn.reason or f"{type(exc).__name__}: {exc}"[:120]
        finally:
            conn.closed.set()
            self._conns.pop(conn.id, None)
            items.append(("closed", conn.id))
            self._wake.set()

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
        tick = max(0.02, min(1.0, cfg.stale_after_s / 4, cfg.max_connection_s / 4))
        while not self._closing:
            if current is None or current.closed.is_set():
                if current is not None:
                    lived = time.monotonic() - current.opened
                    attempt = 1 if lived >= cfg.backoff_reset_after_s else attempt + 1
                    if current.reason not in ("stale", "rollover"):
                        self.counters.disconnects += 1
                    log.warning("websocket closed", reason=current.reason, lived_s=round(lived, 1))
                    await asyncio.sleep(self._backoff(attempt))
                current = await self._open(overlap=False)
                if current is None:
                    attempt += 1
                    await asyncio.sleep(self._backoff(attempt))
                continue
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(current.closed.wait(), tick)
            if current.closed.is_set():
                continue
            now = time.monotonic()
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
            self._wake.set()
        await self._close_conn(old, "rollover")
        return new


__all__ = [
    "BinanceClient",
    "ClientConfig",
    "ClientCounters",
    "Polled",
    "StreamProcessor",
]
