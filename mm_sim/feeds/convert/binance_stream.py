"""The main pass: every message of every file routed through the venue's book-sync rules.

Why one object: the book sync, the external (REST) snapshots waiting for their receive time,
the counters and the receive-time bookkeeping all span file boundaries (the hftbacktest pairs
continue one stream), so they live together while the files are streamed one after the other.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np

from mm_sim.errors import FeedError
from mm_sim.events import ASK, BID, KIND_CLEAR, KIND_DEPTH, KIND_SNAPSHOT, KIND_TRADE
from mm_sim.feeds.convert.base import MAX_EXAMPLES, TRUNCATED, BadLines, ConvertOptions
from mm_sim.feeds.convert.binance_block import OFFSET_SAMPLES, read_fast
from mm_sim.feeds.convert.binance_book import TouchBook
from mm_sim.feeds.convert.binance_columns import Columns
from mm_sim.feeds.convert.binance_inputs import (
    FMT_CF_WS,
    FMT_HFT,
    FMT_JSONL,
    INFLATE_ERRORS,
    MS,
    WS_HEADER,
    Blocks,
    Input,
    check_receive_ns,
    iso,
    message_problem,
    record_bad,
    sec_to_ns,
)
from mm_sim.venues.binance.messages import (
    BookTicker,
    DepthDiff,
    DepthSnapshot,
    MessageError,
    Skipped,
    Trade,
    decode,
    deletions_first,
    parse_payload,
)
from mm_sim.venues.binance.sync import (
    DEFAULT_MAX_BUFFER,
    Action,
    ActionKind,
    BookSync,
    Market,
    Reason,
    SyncState,
)

_DIFF_SIDES = (BID, ASK, BID, ASK)  # the order deletions_first returns its level lists
NEVER = 1 << 62
_GAPS = (Reason.GAP, Reason.NO_STRADDLE)  # a RESYNC for these: the update ids broke


class OffsetSampler:
    """Receive minus exchange time of every step-th message (the sidecar's median clock offset):
    at most ``2 * OFFSET_SAMPLES`` kept, halved (every other one, step doubled) when full. In a
    numpy array so the block kernel samples into the same storage."""

    def __init__(self) -> None:
        self.arr = np.zeros(2 * OFFSET_SAMPLES, dtype=np.int64)
        self.n = 0
        self.step = 1
        self.tick = 0

    def add(self, off: int) -> None:
        self.tick += 1
        if self.tick < self.step:
            return
        self.tick = 0
        # a receive time the general parser read beyond int64 (bad data): clamped
        self.arr[self.n] = min(max(off, -(1 << 63)), (1 << 63) - 1)
        self.n += 1
        if self.n >= 2 * OFFSET_SAMPLES:
            self.arr[:OFFSET_SAMPLES] = self.arr[0 : 2 * OFFSET_SAMPLES : 2].copy()
            self.n = OFFSET_SAMPLES
            self.step *= 2

    def array(self) -> np.ndarray:
        """The samples (a view)."""
        return self.arr[: self.n]

    def values(self) -> list[int]:
        out: list[int] = self.arr[: self.n].tolist()
        return out


def snapshot_verdict(symbols: set[str], sel: str) -> str:
    """What an inline snapshot (no symbol of its own) of a file with these symbols is: ``ours``,
    ``other symbol`` or ``several symbols`` (a bad line: whose book is it?)."""
    if len(symbols) > 1:
        return "several symbols"
    if symbols and sel not in symbols:
        return "other symbol"
    return "ours"


class _File:
    """Per-file reading state (what the summary's ``files`` entry reports)."""

    def __init__(self, inp: Input, symbol: str) -> None:
        self.inp = inp
        self.lineno = 0
        self.n_msgs = 0
        self.last_recv = -1
        self.recv_back = 0
        self.first_local: int | None = None
        self.local = 0  # receive time of the latest line that had one
        self.seen_trade = False
        self.skip_agg = symbol in inp.trade_symbols  # trade and aggTrade both: keep trade
        # What a single pass (no pre-scan, binance.convert) decided before the file's symbols
        # and trades were all known; checked against them at the end.
        self.agg_kept = False  # an aggTrade of the symbol was kept
        self.snapshot_verdicts: set[str] = set()
        self.hft = inp.fmt == FMT_HFT
        self.cf = inp.fmt == FMT_CF_WS
        self.no_recv = inp.fmt == FMT_JSONL


class StreamConverter:
    """Streams the message files in order into the book sync and the event columns."""

    def __init__(self, opts: ConvertOptions) -> None:
        self.opts = opts
        self.bad = BadLines(strict=opts.strict)
        self.messages: Counter[str] = Counter()
        self.other_symbol = 0
        self.symbol = ""
        self.market: Market | None = None
        self.sync: BookSync | None = None
        self.cols: Columns | None = None
        self.snapshots: list[DepthSnapshot] = []  # external (cryptofeed http), by receive time
        self._snap_i = 0
        self.next_snap_ts = NEVER
        self.snapshots_before_stream = 0
        self.snapshots_seen = 0
        self.invalidations = 0
        self.connections = 0
        self.aggtrade_duplicates = 0
        self.trades_non_market: Counter[str] = Counter()
        self.trades_zero_qty = 0
        self.recv_backwards = 0
        self.last_local = 0
        self.last_exch = 0
        self.offsets = OffsetSampler()
        self.last_ticker: BookTicker | None = None
        # the last raw bookTicker of the symbol: (payload or None, raw line or None, no
        # receive time, receive time, (path, line)); parsed once, at the end
        self.last_ticker_raw: tuple[Any, bytes | None, bool, int, tuple[Path, int]] | None = None
        self._partial_streams: dict[bytes, bool] = {}  # stream name -> a partial book stream?
        self.files: list[dict[str, Any]] = []
        self.file_states: list[_File] = []
        # no pre-scan (binance.convert): collect the files' symbols and flags on the way
        self.one_pass = False
        self.has_receive_time = True
        self.stale_synced = 0  # diffs dropped as stale while the book was in sync (_stale)
        self.stale_examples: list[str] = []
        self.gap_examples: list[str] = []  # where the sync was lost (_gap)
        self.last_gap: str | None = None

    # --- actions -> events ----------------------------------------------------------------

    def _do(self, actions: list[Action], now: int) -> None:
        cols = self.cols
        assert cols is not None
        for n, a in enumerate(actions):
            k = a.kind
            if k is ActionKind.APPLY:
                d = a.diff
                assert d is not None
                exch = d.event_ms * MS
                if d.flat is not None:  # the fast path's diffs: one numba call for the events
                    cols.diff_flat(d.flat[0], d.flat[1], exch, now)
                    continue
                for levels, side in zip(deletions_first(d.bids, d.asks), _DIFF_SIDES, strict=True):
                    cols.levels(levels, side, KIND_DEPTH, exch, now)
            elif k is ActionKind.REBASE:
                s = a.snapshot
                assert s is not None
                ms = s.event_ms if s.event_ms is not None else s.txn_ms
                exch = ms * MS if ms is not None else self._snapshot_exch(actions[n + 1 :], now)
                cols.one(exch, now, KIND_CLEAR, 0, 0.0, 0.0)
                cols.levels(s.bids, BID, KIND_SNAPSHOT, exch, now)
                cols.levels(s.asks, ASK, KIND_SNAPSHOT, exch, now)
            elif k is ActionKind.RESYNC:
                # The book is no longer trustworthy: say so in the feed instead of leaving a
                # stale book in place until the next snapshot.
                exch = a.diff.event_ms * MS if a.diff is not None else self.last_exch
                cols.one(exch, now, KIND_CLEAR, 0, 0.0, 0.0)
                self.invalidations += 1

    def _snapshot_exch(self, after: list[Action], now: int) -> int:
        """Exchange time for a snapshot that has none (spot REST): the state it holds precedes
        the first diff applied on top of it, so it takes that diff's event time; without one
        yet, the stream's latest exchange time; without that, its receipt time. Its receipt
        time is on the recorder's clock, and a snapshot stamped with it would sort after the
        buffered diffs that must follow it when the venue reads the feed in exchange order
        (docs/CORE.md, "Two clocks")."""
        for b in after:
            if b.kind is ActionKind.APPLY and b.diff is not None:
                return int(b.diff.event_ms) * MS
        return self.last_exch if self.last_exch else now

    def _feed_snapshot(self, snap: DepthSnapshot) -> None:
        self.snapshots_seen += 1
        if self.sync is None:
            self._make_sync(Market.FUTURES if snap.event_ms is not None else Market.SPOT)
        assert self.sync is not None
        self._do(self.sync.on_snapshot(snap), snap.local_ts)

    def _feed_external(self, upto: int) -> None:
        snaps = self.snapshots
        while self._snap_i < len(snaps) and snaps[self._snap_i].local_ts <= upto:
            self._feed_snapshot(snaps[self._snap_i])
            self._snap_i += 1
        self.next_snap_ts = snaps[self._snap_i].local_ts if self._snap_i < len(snaps) else NEVER

    def _skip_external_before(self, t: int) -> None:
        snaps = self.snapshots
        while self._snap_i < len(snaps) and snaps[self._snap_i].local_ts < t:
            self.snapshots_before_stream += 1
            self._snap_i += 1
        self.next_snap_ts = snaps[self._snap_i].local_ts if self._snap_i < len(snaps) else NEVER

    def _make_sync(self, market: Market) -> None:
        self.market = market
        max_buffer = int(self.opts.extra.get("max_buffer", DEFAULT_MAX_BUFFER))
        self.sync = BookSync(market, max_buffer=max_buffer)
        if not self.opts.extra.get("general_path"):
            # the same answers as the venue's LightBook, O(1) per level (binance_book.py); the
            # general path keeps LightBook, so comparing the two outputs checks this too
            self.sync.book = TouchBook()

    # --- per file -------------------------------------------------------------------------

    def stream(self, inp: Input) -> None:
        path = inp.path
        bad_before = self.bad.total
        info: dict[str, Any] = {"path": str(path), "format": inp.fmt, "compressed": inp.gz}
        f = _File(inp, self.symbol)
        self.file_states.append(f)
        self.has_receive_time = not f.no_recv
        if inp.connect_ns is not None:
            self._skip_external_before(inp.connect_ns)
        fh = inp.blocks or Blocks(path)
        inp.blocks = None
        try:
            if f.hft and not self.opts.extra.get("general_path"):
                read_fast(self, f, fh)
            else:
                self._lines(f, fh)
        except INFLATE_ERRORS as exc:
            where = f"{path}:{f.lineno + 1}"
            if self.opts.strict:
                raise FeedError(f"{where}: unreadable compressed data ({exc})") from exc
            self.bad.bad(where, TRUNCATED)
        finally:
            fh.close()
        self.recv_backwards += f.recv_back
        info.update(
            lines=f.lineno,
            messages=f.n_msgs,
            bad_lines=self.bad.total - bad_before,
            symbols=sorted(inp.symbols),
            first_local_ts=iso(f.first_local),
            last_local_ts=iso(f.last_recv if f.last_recv >= 0 else None),
            receive_time_backwards=f.recv_back,
        )
        if inp.connect_ns is not None:
            info["connected_at"] = iso(inp.connect_ns)
        self.files.append(info)

    def _lines(self, f: _File, fh: Blocks) -> None:
        """The general path: every line decoded with json and parsed in Python."""
        rest = b""
        while True:
            chunk = fh.read1()
            if not chunk:
                if rest:  # a last line without a newline
                    f.lineno += 1
                    self._general_line(f, rest)
                return
            lines = (rest + chunk).split(b"\n")
            rest = lines.pop()
            for raw in lines:
                f.lineno += 1
                self._general_line(f, raw + b"\n")

    def _general_line(self, f: _File, raw: bytes) -> None:
        """One line read the general way: decoded, parsed, routed (or counted bad)."""
        try:
            parsed = self._parse_line(f, raw)
        except MessageError as err:
            record_bad(self.bad, f"{f.inp.path}:{f.lineno}", err)
            return
        if parsed is None:
            return
        msg, payload, local = parsed
        if f.no_recv:
            local = self._event_local(msg) if msg is not None else self.last_local
        self._seen(f, local)
        if msg is None:
            if payload.get("s") != self.symbol:
                self.other_symbol += 1
            else:
                self.messages["bookTicker"] += 1
                where = (f.inp.path, f.lineno)
                self.last_ticker_raw = (payload, None, f.no_recv, local, where)
            return
        self._route(f, msg, local)

    def _parse_line(self, f: _File, raw: bytes) -> tuple[Any, Any, int] | None:
        """(message or None for a raw bookTicker, payload, receive time) of a line; None for a
        line without a message (blank, a new cryptofeed connection)."""
        try:
            line = raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise MessageError("malformed line: not UTF-8 text", exc.reason) from None
        local = f.local
        if f.hft:
            sp = line.find(" ")
            if sp <= 0:
                if not line.strip():
                    return None
                raise MessageError("malformed line: expected '<receive ns> <message JSON>'")
            try:
                ns = int(line[:sp])
            except ValueError:
                raise MessageError(
                    "bad receive time: expected integer nanoseconds",
                    repr(line[:sp][:30]),
                ) from None
            local = f.local = check_receive_ns(ns, line[:sp])
            payload, stream = decode(line, sp + 1)
        elif f.cf:
            sp = line.find(": ")
            if sp <= 0:
                if not line.strip():
                    return None
                hm = WS_HEADER.match(raw)
                if hm:  # a new connection: the book must be re-synced
                    self._new_connection(sec_to_ns(hm.group(2)))
                    return None
                raise MessageError("malformed line: expected '<receive seconds>: <message JSON>'")
            try:
                ns = sec_to_ns(line[:sp].encode())
            except ValueError:
                raise MessageError(
                    "bad receive time: expected unix seconds",
                    repr(line[:sp][:30]),
                ) from None
            local = f.local = check_receive_ns(ns, line[:sp])
            payload, stream = decode(line, sp + 2)
        else:
            if not line.strip():
                return None
            payload, stream = decode(line)
        # bookTicker (most lines of a capture) is only counted, like kline: skip its number
        # parsing and keep the last raw one for the stats.
        if stream is not None and stream.endswith("@bookTicker") and type(payload) is dict:
            return None, payload, local
        return parse_payload(payload, stream), payload, local

    def _seen(self, f: _File, local: int) -> None:
        """A message read: receive-time bookkeeping, and REST snapshots due by now."""
        f.n_msgs += 1
        if local < f.last_recv:
            f.recv_back += 1
        f.last_recv = local
        if f.first_local is None:
            f.first_local = local
        if local >= self.next_snap_ts:
            self._feed_external(local)

    def _route(self, f: _File, msg: Any, local: int) -> None:
        """One parsed message of the file into the book sync or the events."""
        sel = self.symbol
        counts = self.messages
        tm = type(msg)
        if tm is BookTicker:
            if msg.symbol != sel:
                self.other_symbol += 1
                return
            counts["bookTicker"] += 1
            msg.local_ts = local
            self.last_ticker = msg
        elif tm is DepthDiff:
            if msg.symbol != sel:
                self.other_symbol += 1
                return
            if self._unusable(f, msg):
                return
            counts["depthUpdate"] += 1
            msg.local_ts = local
            self._diff(msg, f.inp.path, f.lineno)
        elif tm is Trade:
            if msg.symbol != sel:
                self.other_symbol += 1
                return
            if self._unusable(f, msg):
                return
            if msg.aggregated:
                counts["aggTrade"] += 1
                if f.skip_agg or f.seen_trade:
                    self.aggtrade_duplicates += 1
                    return
                f.agg_kept = True
            else:
                counts["trade"] += 1
                f.seen_trade = True
            self._trade(msg, local)
        elif tm is DepthSnapshot:
            inp = f.inp
            verdict = snapshot_verdict(inp.symbols, sel)
            f.snapshot_verdicts.add(verdict)
            if verdict == "several symbols":
                record_bad(
                    self.bad,
                    f"{inp.path}:{f.lineno}",
                    MessageError(
                        "depth snapshot without symbol in a multi-symbol file",
                        ", ".join(sorted(inp.symbols)),
                    ),
                )
                return
            if verdict == "other symbol":
                self.other_symbol += 1
                return
            if self._unusable(f, msg):
                return
            counts["snapshot"] += 1
            msg.symbol = sel
            msg.local_ts = local
            self._feed_snapshot(msg)
        elif tm is Skipped:
            if msg.symbol is not None and msg.symbol != sel:
                self.other_symbol += 1
                return
            counts[msg.kind] += 1

    def _unusable(self, f: _File, msg: Any) -> bool:
        """A message of the symbol that parsed but cannot be used (message_problem): a bad
        line, before it is counted or reaches the book sync."""
        err = message_problem(msg)
        if err is None:
            return False
        record_bad(self.bad, f"{f.inp.path}:{f.lineno}", err)
        return True

    def _new_connection(self, connect_ns: int) -> None:
        self.connections += 1
        if self.sync is not None:
            self._do(self.sync.reset(), connect_ns)
        self._skip_external_before(connect_ns)

    def _event_local(self, msg: Any) -> int:
        """No receive time in the input: use the exchange event time, never going backwards
        for messages without one (spot bookTicker, snapshots)."""
        ms = getattr(msg, "event_ms", None)
        if ms is not None:
            return int(ms) * MS
        return self.last_local

    def _diff(self, d: DepthDiff, path: Path, lineno: int) -> None:
        if self.sync is None:
            self._make_sync(Market.FUTURES if d.prev_final_id is not None else Market.SPOT)
        sync = self.sync
        assert sync is not None
        if (d.prev_final_id is not None) != (self.market is Market.FUTURES):
            record_bad(
                self.bad,
                f"{path}:{lineno}",
                MessageError(
                    f"depthUpdate {'with' if d.prev_final_id is not None else 'without'} 'pu' "
                    f"in a {self.market} capture"
                ),
            )
            return
        local = d.local_ts
        self.last_local = local
        self.last_exch = d.event_ms * MS
        self._sample_offset(local - self.last_exch)
        last = sync.last_update_id
        synced = sync.state is SyncState.SYNCED
        actions = sync.on_diff(d)
        for a in actions:
            if a.kind is ActionKind.DROP and synced:
                self._stale(d, last, f"{path}:{lineno}" if lineno else str(path))
            elif a.kind is ActionKind.RESYNC and a.reason in _GAPS and last is not None:
                self._gap(d, last, f"{path}:{lineno}" if lineno else str(path))
        self._do(actions, local)

    def _stale(self, d: DepthDiff, last: int | None, where: str) -> None:
        """A diff dropped as already applied although the book was in sync: Binance never
        resends one, so a run of them means an update id went wrong (one far too large makes
        every later diff look old and freezes the book). Counted and located, never silent:
        publish refuses a feed where they are a large share (mm_sim/feeds/convert/publish.py)."""
        self.stale_synced += 1
        if len(self.stale_examples) < MAX_EXAMPLES:
            self.stale_examples.append(f"{where} (u={d.final_id} <= u={last} already applied)")

    def _gap(self, d: DepthDiff, last: int, where: str) -> None:
        """Where the book lost its sync, and the last bad line before it: a skipped bad diff
        line is itself a gap in the update ids (its changes are missing from the book)."""
        ids = f"pu={d.prev_final_id}" if d.prev_final_id is not None else f"U={d.first_id}"
        note = f"{where}: {ids} does not continue u={last}"
        if self.bad.last is not None:
            note += f"; the last bad line before it: {self.bad.last}"
        self.last_gap = note
        if len(self.gap_examples) < MAX_EXAMPLES:
            self.gap_examples.append(note)

    def _trade(self, tr: Trade, local: int) -> None:
        if tr.order_type is not None and tr.order_type != "MARKET":
            self.trades_non_market[tr.order_type] += 1
            return
        if tr.qty <= 0.0:
            self.trades_zero_qty += 1
            return
        assert self.cols is not None
        self.last_local = local
        self.last_exch = tr.event_ms * MS
        self._sample_offset(local - self.last_exch)
        self.cols.one(tr.trade_ms * MS, local, KIND_TRADE, tr.aggressor_side, tr.price, tr.qty)

    def _sample_offset(self, off: int) -> None:
        if self.has_receive_time:
            self.offsets.add(off)

    def finish(self) -> None:
        """Snapshots received after the last message still re-base a book that needs one."""
        if self._snap_i < len(self.snapshots):
            self._feed_external(NEVER)
        if self.last_ticker_raw is not None:
            payload, raw, no_recv, local, (path, lineno) = self.last_ticker_raw
            try:
                if raw is not None:  # kept raw by the fast path: decode it now, once
                    payload = decode(raw[raw.index(b" ") + 1 :])[0]
                t = parse_payload(payload)
            except MessageError as err:
                record_bad(self.bad, f"{path}:{lineno}", err)
                return
            if type(t) is BookTicker and (
                self.last_ticker is None or local >= self.last_ticker.local_ts
            ):
                t.local_ts = t.event_ms * MS if no_recv and t.event_ms is not None else local
                self.last_ticker = t
