"""Binance frames and snapshots of one symbol → native events, with no socket and no clock.

Why a module of its own: this is the sans-I/O half of the live client. Raw messages and
snapshots go in with their receive time; native events (``EVENT_DTYPE``) and "a snapshot is
needed" come out. It drives :class:`~mm_sim.venues.binance.sync.BookSync` exactly as the
converter does, so a recorded session replayed through it gives the converter's book, and tests
can feed it bytes without a server.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import numpy as np

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
    flat_levels,
)
from mm_sim.venues.binance.fill_events import fill_levels, stage_kernels
from mm_sim.venues.binance.messages import (
    DepthDiff,
    DepthSnapshot,
    Level,
    MessageError,
    Skipped,
    Trade,
    decode,
    parse_payload,
)
from mm_sim.venues.binance.sync import Action, ActionKind, BookSync, Market, Reason

log = get_logger("mm_sim.binance")

_MS = 1_000_000


@dataclass
class ClientCounters:
    messages: int = 0  # frames handed to the processor
    diffs: int = 0
    diffs_general: int = 0  # depthUpdates the numba parser declined (the slow general parser)
    trades: int = 0
    trades_duplicate: int = 0  # same trade id again (duplicates, connection overlap)
    trades_skipped: int = 0  # non-market prints (futures insurance fund, ADL), zero qty
    trades_rpi: int = 0  # USD-M prints with fills against hidden RPI orders (that part left out)
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
    used_weight_1m: int = 0  # X-MBX-USED-WEIGHT-1M of the last REST answer
    used_weight_1m_max: int = 0
    permanent_errors: int = 0  # 4xx answers that stopped the feed (bad symbol, bad limit)
    trade_frames_lost: int = 0  # frames of a trade-only connection lost to overflow
    trade_silences: int = 0  # episodes of no trade for trade_silence_s while depth flowed
    trade_silence_max_s: float = 0.0  # longest time without a trade while depth flowed
    trade_silent_now: bool = False  # the last check found such an episode still going
    venue_restarts: int = 0  # the venue came back with its clock moved or its ids restarted
    clock_checks: int = 0  # venue clock measured again after a lost connection
    clock_rebases: int = 0  # ... and found moved: its event times mapped back onto ours
    venue_clock_shift_ms: float = 0.0  # added to the venue's event times since the last one

    def as_dict(self) -> dict[str, Any]:
        d = {k: v for k, v in self.__dict__.items() if k != "bad"}
        d["bad"] = dict(self.bad)
        return d


_ARENA = 8192  # records per stage arena


def join_events(parts: list[np.ndarray]) -> np.ndarray:
    """The parts end to end. ``np.concatenate`` promotes the record dtype in Python for every
    call (numpy 2: 45 µs for two one-record parts, 7.8 ms for 240, measured), so the parts are
    joined as plain int64 rows: 0.8 ms for 240."""
    if len(parts) == 1:
        return parts[0]
    if not parts:
        return np.empty(0, dtype=EVENT_DTYPE)
    if all(p.dtype == EVENT_DTYPE and p.flags.c_contiguous for p in parts):
        return np.concatenate([p.view(np.int64) for p in parts]).view(EVENT_DTYPE)
    return np.concatenate(parts)


class _Stage:
    """Events in arrival order, written straight into an arena of records (a trade by one
    assignment, a diff or a snapshot by a numba kernel). ``take`` hands over a view of what
    was staged since the last take: no allocation and no concatenation per frame. Numpy
    joins record arrays slowly (``join_events``), and a live frame that brought a trade and a
    CLEAR, or frames decided together, used to cost tens of µs in ``np.concatenate`` alone.
    A region of an arena is written once and never reused, so every view handed out stays
    valid; a full arena is replaced by a new one (what is staged but not taken moves along)."""

    __slots__ = ("buf", "n", "start")

    def __init__(self) -> None:
        self.buf = np.empty(_ARENA, dtype=EVENT_DTYPE)
        self.start = 0  # first record not yet taken
        self.n = 0  # end of the staged records

    def __len__(self) -> int:
        return self.n - self.start

    def _room(self, k: int) -> int:
        """Where the next ``k`` records go (a new arena when this one is full)."""
        n = self.n
        if n + k <= len(self.buf):
            return n
        pending = n - self.start
        buf = np.empty(max(_ARENA, 2 * (pending + k)), dtype=EVENT_DTYPE)
        if pending:
            buf[:pending] = self.buf[self.start : n]
        self.buf = buf
        self.start = 0
        self.n = pending
        return pending

    def one(self, exch: int, local: int, kind: int, side: int, price: float, qty: float) -> None:
        i = self._room(1)
        stage_kernels(self.buf)[1](self.buf, i, exch, local, kind, side, float(price), float(qty))
        self.n = i + 1

    def levels(self, bids: np.ndarray, asks: np.ndarray, kind: int, exch: int, local: int) -> None:
        """Both sides of a snapshot (flat price, qty arrays) as one block, bids first."""
        k = (len(bids) + len(asks)) // 2
        if not k:
            return
        i = self._room(k)
        i = fill_levels(self.buf, i, bids, BID, kind, exch, local)
        self.n = fill_levels(self.buf, i, asks, ASK, kind, exch, local)

    def diff(self, bids: np.ndarray, asks: np.ndarray, exch: int, local: int) -> None:
        """A diff's levels (flat, C-contiguous float64 price, qty arrays, as the parsers and
        ``flat_levels`` make them: the entry point reads them as such), deletions first
        (``fill_diff``)."""
        k = (len(bids) + len(asks)) // 2
        if not k:
            return
        i = self._room(k)
        stage_kernels(self.buf)[0](self.buf, bids, asks, exch, local, i)
        self.n = i + k

    def take(self) -> np.ndarray:
        rec = self.buf[self.start : self.n]
        self.start = self.n
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
        # Exchange times raised to the last one seen (the core's assumption). Off when a
        # reorder window downstream sorts by the true times (reorder.py).
        self.monotonic_exch = True
        self._depth = DepthParser()  # plain depthUpdate frames skip json (same result)
        self._trades = TradeParser()  # so do plain spot trades
        self._futures = 1 if self.market is Market.FUTURES else 0  # as the parser's I_HAS_PU
        # Added to the venue's event times: nonzero once a restarted venue's clock was found
        # moved, so its times continue ours (the run's clock never goes back).
        self.venue_shift_ns = 0
        self._uid_at_loss: int | None = None  # the book's update id when the stream was lost
        self._restart_noted = False  # this loss's restart already counted
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
            if type(msg) is DepthDiff:
                self.counters.diffs_general += 1
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
        uid = self.sync.last_update_id
        if uid is not None and (self._uid_at_loss is None or uid > self._uid_at_loss):
            self._uid_at_loss = uid
        self.need_snapshot = False
        self._do(self.sync.reset(reason), local_ns)

    def note_restart(self, why: str) -> None:
        """The venue restarted (its clock moved, or its update ids began again): its trade ids
        begin again too, so the duplicate filter forgets ours (else every trade of the new
        session would be dropped as already seen). Counted once per loss of the stream."""
        if self._restart_noted:
            return
        self._restart_noted = True
        self.counters.venue_restarts += 1
        self.last_trade_id = -1
        log.warning("venue restarted: resyncing", why=why, symbol=self.symbol)

    def take(self) -> np.ndarray:
        return self.stage.take()

    # --- internals ------------------------------------------------------------------------

    def _exch(self, ms: int) -> int:
        ns = ms * _MS + self.venue_shift_ns
        if ns < self.last_exch:
            return self.last_exch if self.monotonic_exch else ns
        self.last_exch = ns
        return ns

    def _trade(self, tr: Trade, local_ns: int) -> None:
        c = self.counters
        if tr.trade_id <= self.last_trade_id:
            c.trades_duplicate += 1
            return
        self.last_trade_id = tr.trade_id
        if tr.rpi_qty > 0.0:
            c.trades_rpi += 1
        if (tr.order_type is not None and tr.order_type != "MARKET") or tr.qty <= 0.0:
            c.trades_skipped += 1
            return
        c.trades += 1
        self.stage.one(
            self._exch(tr.trade_ms), local_ns, KIND_TRADE, tr.aggressor_side, tr.price, tr.qty
        )

    def _do(self, actions: list[Action], now: int) -> None:
        stage = self.stage
        for n, a in enumerate(actions):
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
                lost = self._uid_at_loss
                if lost is not None and s.last_update_id < lost:
                    # A book the venue rebuilt from scratch: ids below the ones we had.
                    self.note_restart(f"update ids began again ({s.last_update_id} < {lost})")
                self._uid_at_loss = None
                self._restart_noted = False
                ms = s.event_ms if s.event_ms is not None else s.txn_ms
                # A spot snapshot has no event time. It takes the event time of the first diff
                # applied on top of it (its state precedes that diff), else the last exchange
                # time seen; never the receive time: a receive time ahead of the venue's clock
                # would hold every later event at it (exchange times never go back), and in
                # exchange order the buffered diffs applied after it would sort before it.
                first = next(
                    (b.diff.event_ms for b in actions[n + 1 :]
                     if b.kind is ActionKind.APPLY and b.diff is not None),
                    None,
                )  # fmt: skip
                if ms is None and first is not None:
                    ms = first
                exch = self._exch(ms) if ms is not None else (self.last_exch or now)
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


__all__ = ["ClientCounters", "StreamProcessor", "join_events"]
