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
  connection over before the exchange's 24 h limit (or at once on ``serverShutdown``) by opening
  the next one first and switching once its stream continues the book (no resync, no gap).

Every message keeps its local receive time (``clock()``, the caller's idea of "now" in the
exchange's time base) next to the exchange event time, so feed lag in the reports is measured.
Receive times are taken when the socket read that brought the frame returns to Python, before
the websocket library parses it, so the library's time is inside every latency measured from
them.

Text frames do not wait in the websocket library's own queue for a reader task to wake up: the
connection hands each one to the client as soon as it is parsed, inside the socket read's
callback (``_DirectConnection``). Two ways to consume, both with all book work in one task:

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
import email.utils
import random
import time
from collections import Counter, deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import numpy as np
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidURI
from websockets.protocol import OPEN

from mm_sim.events import ASK, BID, EVENT_DTYPE, KIND_CLEAR, KIND_SNAPSHOT, KIND_TRADE
from mm_sim.logs import get_logger
from mm_sim.venues.binance.fastparse import (
    I_E,
    I_FINAL,
    I_FIRST,
    I_HAS_PU,
    I_NA,
    I_NB,
    I_PREV,
    I_SYM0,
    I_SYM1,
    T_E,
    T_HAS_T,
    T_M,
    T_SYM0,
    T_SYM1,
    T_T,
    T_TID,
    DepthParser,
    TradeParser,
    fill_diff,
    fill_levels,
    flat_levels,
)
from mm_sim.venues.binance.fastparse import warm as warm_parsers
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
from mm_sim.venues.binance.sync import Action, ActionKind, BookSync, Market, Reason

log = get_logger("mm_sim.binance")

_MS = 1_000_000
Clock = Callable[[], int]
# Events of one or more frames, and the receive time (time.monotonic_ns) of each frame that
# produced some of them, in order.
Sink = Callable[[np.ndarray, list[int]], None]
CATCH_UP = 16  # push mode: more frames than this waiting, decide on them together (behind)


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
    rate_limit_wait_s: float = 0.0  # total Retry-After waited
    snapshots_late: int = 0  # snapshot of an earlier epoch, not used
    invalidations: int = 0  # CLEAR events emitted because the book became unknown
    old_connection_frames: int = 0  # frames of a connection already replaced

    def as_dict(self) -> dict[str, Any]:
        d = {k: v for k, v in self.__dict__.items() if k != "bad"}
        d["bad"] = dict(self.bad)
        return d


class _Stage:
    """Events in arrival order, staged as ready-made record arrays (one per trade, one per diff
    filled by a numba kernel, one per snapshot): a frame's events cost one small allocation, and
    ``take`` hands over the only array or the concatenation. On a live path one frame at a time
    is the common case, so that is the one kept cheap."""

    __slots__ = ("n", "parts")

    def __init__(self) -> None:
        self.parts: list[np.ndarray] = []
        self.n = 0

    def __len__(self) -> int:
        return self.n

    def one(self, exch: int, local: int, kind: int, side: int, price: float, qty: float) -> None:
        self.parts.append(np.array([(exch, local, price, qty, kind, side)], dtype=EVENT_DTYPE))
        self.n += 1

    def levels(self, bids: np.ndarray, asks: np.ndarray, kind: int, exch: int, local: int) -> None:
        """Both sides of a snapshot (flat price, qty arrays) as one block, bids first."""
        n = (len(bids) + len(asks)) // 2
        if not n:
            return
        rec = np.empty(n, dtype=EVENT_DTYPE)
        i = fill_levels(rec, 0, bids, BID, kind, exch, local)
        fill_levels(rec, i, asks, ASK, kind, exch, local)
        self.parts.append(rec)
        self.n += n

    def diff(self, bids: np.ndarray, asks: np.ndarray, exch: int, local: int) -> None:
        """A diff's levels (flat price, qty arrays), deletions first (``fill_diff``)."""
        n = (len(bids) + len(asks)) // 2
        if not n:
            return
        rec = np.empty(n, dtype=EVENT_DTYPE)
        fill_diff(rec, bids, asks, exch, local)
        self.parts.append(rec)
        self.n += n

    def take(self) -> np.ndarray:
        parts = self.parts
        if len(parts) == 1:
            rec = parts[0]
        elif not parts:
            return np.empty(0, dtype=EVENT_DTYPE)
        else:
            rec = np.concatenate(parts)
        self.parts = []
        self.n = 0
        return rec


def _flat(levels: list[Level], flat: np.ndarray | None) -> np.ndarray:
    return flat if flat is not None else flat_levels(levels)


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
        self.stage = _Stage()
        self.last_exch = 0
        self.last_local = 0
        self.last_trade_id = -1
        self.need_snapshot = False  # set when the sync asks for one; the I/O layer clears it
        self._depth = DepthParser()  # plain depthUpdate frames skip json (same result)
        self._trades = TradeParser()  # so do plain spot trades
        self._futures = 1 if self.market is Market.FUTURES else 0  # as the parser's I_HAS_PU
        self._sym = self.symbol.encode()

    # --- inputs ---------------------------------------------------------------------------

    def decode(self, raw: str | bytes) -> Any:
        """Parse one frame; None (and counted) when it cannot be used."""
        p = self._depth
        iv = p.scan(raw)
        if iv is not None:
            return p.build(iv)
        return self._decode_general(raw)

    def _decode_general(self, raw: str | bytes) -> Any:
        """Every frame the numba depthUpdate parser does not take (trades, control, errors)."""
        try:
            payload, stream = decode(raw)
            if type(payload) is dict and _is_shutdown(payload):
                self.counters.server_shutdown += 1
                log.warning("serverShutdown received: rolling over to a new connection")
                return Skipped("serverShutdown")
            return parse_payload(payload, stream)
        except MessageError as err:
            self.counters.malformed += 1
            self.counters.bad[err.reason] += 1
            if self.counters.malformed <= 10 or self.counters.malformed % 1000 == 0:
                log.warning("bad message skipped", reason=err.reason, detail=err.detail)
            return None

    def on_raw(self, raw: str | bytes, local_ns: int) -> None:
        p = self._depth
        iv = p.scan(raw)
        if iv is not None:
            if self._continue(iv, local_ns):
                return
            msg = p.build(iv)
        else:
            tr = self._trades.scan(raw)
            if tr is not None and self._trade_fast(tr[0], tr[1], local_ns):
                return
            msg = self._decode_general(raw)
        if msg is not None:
            self.on_message(msg, local_ns)

    def _trade_fast(self, iv: list[int], pq: list[float], local_ns: int) -> bool:
        """A plain spot trade of our symbol straight from the trade parser: what
        :meth:`on_message` and :meth:`_trade` do with its Trade; False (nothing changed) when
        the symbol is not ours as sent (the general path decides)."""
        if self._trades.data[iv[T_SYM0] : iv[T_SYM1]] != self._sym:
            return False
        c = self.counters
        c.messages += 1
        self.last_local = local_ns
        tid = iv[T_TID]
        if tid <= self.last_trade_id:
            c.trades_duplicate += 1
            return True
        self.last_trade_id = tid
        price, qty = pq
        if qty <= 0.0:
            c.trades_skipped += 1
            return True
        c.trades += 1
        exch = self._exch(iv[T_T] if iv[T_HAS_T] else iv[T_E])
        self.stage.one(exch, local_ns, KIND_TRADE, -1 if iv[T_M] else 1, price, qty)
        return True

    def _continue(self, iv: list[int], local_ns: int) -> bool:
        """The common live case straight from the parser's output, with no DepthDiff, Action or
        level lists: a diff of our symbol and market that continues the synced book. Exactly
        what :meth:`on_message` would do with it (counters, events, resync on a crossed book);
        False, with nothing changed, for anything else (the general path decides)."""
        if iv[I_HAS_PU] != self._futures or self._depth.data[iv[I_SYM0] : iv[I_SYM1]] != self._sym:
            return False
        p = self._depth
        fb = p.vb[: 2 * iv[I_NB]]
        fa = p.va[: 2 * iv[I_NA]]
        r = self.sync.apply_next(iv[I_FIRST], iv[I_FINAL], iv[I_PREV], fb, fa)
        if not r:
            return False
        c = self.counters
        c.messages += 1
        c.diffs += 1
        self.last_local = local_ns
        exch = self._exch(iv[I_E])
        self.stage.diff(fb, fa, exch, local_ns)
        if r == 2:  # crossed: as _do does for APPLY, RESYNC(crossed), NEED_SNAPSHOT
            self.stage.one(exch, local_ns, KIND_CLEAR, 0, 0.0, 0.0)
            c.invalidations += 1
            log.info("book resync", reason=Reason.CROSSED, symbol=self.symbol)
            self.need_snapshot = True
        return True

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
        return self.stage.take()

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
        self.stage.one(
            self._exch(tr.trade_ms), local_ns, KIND_TRADE, tr.aggressor_side, tr.price, tr.qty
        )

    def _do(self, actions: list[Action], now: int) -> None:
        stage = self.stage
        for a in actions:
            k = a.kind
            if k is ActionKind.APPLY:
                d = a.diff
                assert d is not None
                exch = self._exch(d.event_ms)
                fb, fa = d.flat if d.flat is not None else (None, None)
                stage.diff(_flat(d.bids, fb), _flat(d.asks, fa), exch, now)
            elif k is ActionKind.REBASE:
                s = a.snapshot
                assert s is not None
                ms = s.event_ms if s.event_ms is not None else s.txn_ms
                exch = self._exch(ms) if ms is not None else max(self.last_exch, now)
                self.last_exch = exch
                stage.one(exch, now, KIND_CLEAR, 0, 0.0, 0.0)
                stage.levels(flat_levels(s.bids), flat_levels(s.asks), KIND_SNAPSHOT, exch, now)
            elif k is ActionKind.RESYNC:
                # Say in the feed that the book is unknown rather than leave a stale one.
                exch = self._exch(a.diff.event_ms) if a.diff is not None else self.last_exch
                stage.one(exch, now, KIND_CLEAR, 0, 0.0, 0.0)
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


def _is_shutdown(payload: dict[str, Any]) -> bool:
    """``{"e":"serverShutdown"}`` on market streams; the websocket API wraps it in ``event``."""
    if payload.get("e") == "serverShutdown":
        return True
    inner = payload.get("event")
    return type(inner) is dict and inner.get("e") == "serverShutdown"


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


Deliver = Callable[[Any, int, int], None]  # (frame payload, receive monotonic ns, clock())


class _DirectConnection(ClientConnection):
    """A websocket connection that hands text frames over as soon as their bytes are read.

    The library parses frames with a generator in pure Python and queues each one for a reader
    task, which runs at the event loop's next turn: tens of microseconds per frame. After the
    handshake this connection splits the byte stream into frames itself (server frames are
    unmasked, so a frame is a 2-10 byte header and the payload) and gives every complete,
    unfragmented text frame to ``deliver`` within the same ``data_received`` call, stamped with
    when that socket read returned. Every other frame (ping, pong, close, binary, fragments,
    reserved bits, oversized) is fed to the library whole, so it still answers pings and runs the
    closing handshake; after the first data frame it does not expect, the connection stops
    splitting and leaves everything to the library and the reader task (which keep frames in
    order). Frames that arrive before ``deliver`` is set are kept in ``early`` for the client to
    take first; ``after_read`` runs once a read's frames are delivered.
    """

    clock: Clock = staticmethod(time.time_ns)  # bound per client by _direct_connection

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.deliver: Deliver | None = None
        self.after_read: Callable[[], None] | None = None
        self.early: list[tuple[Any, int, int]] = []
        self.rx_mono = 0
        self.rx_local = 0
        self._head = bytearray()  # bytes before the end of the handshake response
        self._buf = bytearray()  # bytes after it, not yet a complete frame
        self._split = True  # still splitting frames ourselves
        self._opened = False
        self._limit = self.protocol.max_message_size or (1 << 62)

    def data_received(self, data: bytes) -> None:
        self.rx_mono = time.monotonic_ns()
        self.rx_local = self.clock()
        if not self._split:
            super().data_received(data)
        elif not self._opened:
            self._handshake(data)
        else:
            self._frames(data)
        if self.after_read is not None:
            self.after_read()

    def _handshake(self, data: bytes) -> None:
        """The library reads exactly the HTTP response; frames after it are split here."""
        head = self._head
        head += data
        end = head.find(b"\r\n\r\n")
        if end < 0:
            return
        rest = bytes(head[end + 4 :])
        super().data_received(bytes(head[: end + 4]))
        self._head = bytearray()
        self._opened = True
        if self.protocol.state is not OPEN:
            self._split = False  # refused or failed: the library deals with what follows
            if rest:
                super().data_received(rest)
        elif rest:
            self._frames(rest)

    def _frames(self, data: bytes) -> None:
        buf = self._buf
        buf += data
        n = len(buf)
        i = 0
        while n - i >= 2:
            b0 = buf[i]
            b1 = buf[i + 1]
            size = b1 & 0x7F
            h = 2
            if size == 126:
                if n - i < 4:
                    break
                size = int.from_bytes(buf[i + 2 : i + 4], "big")
                h = 4
            elif size == 127:
                if n - i < 10:
                    break
                size = int.from_bytes(buf[i + 2 : i + 10], "big")
                h = 10
            if b1 & 0x80 or size > self._limit:  # masked or oversized: the library fails it
                self._give_up(buf, i)
                return
            end = i + h + size
            if end > n:
                break
            if b0 == 0x81:  # FIN, no reserved bits, text
                payload = bytes(buf[i + h : end])
                if self.deliver is not None:
                    self.deliver(payload, self.rx_mono, self.rx_local)
                else:
                    self.early.append((payload, self.rx_mono, self.rx_local))
            elif b0 in (0x88, 0x89, 0x8A):  # close, ping, pong: the library's business
                super().data_received(bytes(buf[i:end]))
            else:
                self._give_up(buf, i)
                return
            i = end
        if i:
            del buf[:i]

    def _give_up(self, buf: bytearray, i: int) -> None:
        """A frame we do not split: from here on every byte goes to the library, in order."""
        self._split = False
        rest = bytes(buf[i:])
        buf.clear()
        super().data_received(rest)


def _direct_connection(clock: Clock) -> type[_DirectConnection]:
    """The connection class with this client's clock (receive times on the exchange clock)."""
    return type("DirectConnection", (_DirectConnection,), {"clock": staticmethod(clock)})


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
        self._spinner: asyncio.Task[None] | None = None
        self._session: aiohttp.ClientSession | None = None
        self._closing = False
        self._shutdown_seen = 0
        self._nudge = asyncio.Event()  # wakes the supervisor (closed, serverShutdown)
        self._sink: Sink | None = None
        self._draining = False
        self.sink_error: BaseException | None = None
        self._connection_class = _direct_connection(clock)

    # --- lifecycle ------------------------------------------------------------------------

    async def start(self) -> None:
        warm_parsers()  # before any frame can arrive: loading kernels mid-stream stalls it
        self._session = aiohttp.ClientSession(
            timeout=aiohttp.ClientTimeout(total=self.cfg.request_timeout_s)
        )
        self._supervisor = asyncio.create_task(self._supervise(), name="binance-supervisor")
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
        tasks = [t for t in (self._supervisor, self._snap_task, self._spinner) if t is not None]
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
                        wait = retry_after_s(resp.headers.get("Retry-After"), delay)
                        log.warning("snapshot rate-limited", status=resp.status, retry_after=wait)
                        self.counters.rate_limit_wait_s += wait
                        await asyncio.sleep(wait)
                        delay = min(cfg.snapshot_retry_cap_s, delay * 2)
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
            self._notify()
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
                compression=None,  # Binance does not compress; deflate would cost every frame
                create_connection=self._connection_class,
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
