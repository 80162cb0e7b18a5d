"""The main pass: every message of every file routed through the venue's book-sync rules.

Why one object: the book sync, the external (REST) snapshots waiting for their receive time,
the counters and the receive-time bookkeeping all span file boundaries (the hftbacktest pairs
continue one stream), so they live together while the files are streamed one after the other.
"""

from __future__ import annotations

import zlib
from collections import Counter
from pathlib import Path
from typing import Any

from mm_sim.errors import FeedError
from mm_sim.events import ASK, BID, KIND_CLEAR, KIND_DEPTH, KIND_SNAPSHOT, KIND_TRADE
from mm_sim.feeds.convert.base import BadLines, ConvertOptions, open_binary
from mm_sim.feeds.convert.binance_columns import Columns
from mm_sim.feeds.convert.binance_inputs import (
    FMT_CF_WS,
    FMT_HFT,
    FMT_JSONL,
    MS,
    WS_HEADER,
    Input,
    iso,
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
)

_DIFF_SIDES = (BID, ASK, BID, ASK)  # the order deletions_first returns its level lists
NEVER = 1 << 62

_OFFSET_SAMPLES = 50_000


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
        self.offsets: list[int] = []
        self._offset_step = 1
        self._offset_tick = 0
        self.last_ticker: BookTicker | None = None
        self.last_ticker_raw: tuple[Any, bool, int, str] | None = None
        self.files: list[dict[str, Any]] = []
        self.has_receive_time = True

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

    # --- per file -------------------------------------------------------------------------

    def stream(self, inp: Input) -> None:
        path = inp.path
        fmt = inp.fmt
        bad_before = self.bad.total
        info: dict[str, Any] = {"path": str(path), "format": fmt, "compressed": inp.gz}
        lineno = 0
        n_msgs = 0
        skip_agg = self.symbol in inp.trade_symbols
        seen_trade = False
        single_symbol = len(inp.symbols) <= 1
        sel = self.symbol
        counts = self.messages
        last_recv = -1
        recv_back = 0
        first_local: int | None = None
        local = 0
        hft = fmt == FMT_HFT
        cf = fmt == FMT_CF_WS
        no_recv = fmt == FMT_JSONL
        self.has_receive_time = not no_recv
        if inp.connect_ns is not None:
            self._skip_external_before(inp.connect_ns)
        fh = open_binary(path, track=True)
        try:
            for raw in fh:
                lineno += 1
                try:
                    try:
                        line = raw.decode("utf-8")
                    except UnicodeDecodeError as exc:
                        raise MessageError("malformed line: not UTF-8 text", exc.reason) from None
                    if hft:
                        sp = line.find(" ")
                        if sp <= 0:
                            if not line.strip():
                                continue
                            raise MessageError(
                                "malformed line: expected '<receive ns> <message JSON>'"
                            )
                        try:
                            local = int(line[:sp])
                        except ValueError:
                            raise MessageError(
                                "bad receive time: expected integer nanoseconds",
                                repr(line[:sp][:30]),
                            ) from None
                        payload, stream = decode(line, sp + 1)
                    elif cf:
                        sp = line.find(": ")
                        if sp <= 0:
                            if not line.strip():
                                continue
                            hm = WS_HEADER.match(raw)
                            if hm:  # a new connection: the book must be re-synced
                                self._new_connection(sec_to_ns(hm.group(2)))
                                continue
                            raise MessageError(
                                "malformed line: expected '<receive seconds>: <message JSON>'"
                            )
                        try:
                            local = sec_to_ns(line[:sp].encode())
                        except ValueError:
                            raise MessageError(
                                "bad receive time: expected unix seconds",
                                repr(line[:sp][:30]),
                            ) from None
                        payload, stream = decode(line, sp + 2)
                    else:
                        if not line.strip():
                            continue
                        payload, stream = decode(line)
                    # bookTicker (most lines of a capture) is only counted, like kline: skip
                    # its number parsing and keep the last raw one for the stats.
                    if (
                        stream is not None
                        and stream.endswith("@bookTicker")
                        and type(payload) is dict
                    ):
                        msg = None
                    else:
                        msg = parse_payload(payload, stream)
                except MessageError as err:
                    record_bad(self.bad, f"{path}:{lineno}", err)
                    continue
                n_msgs += 1
                if no_recv:
                    local = self._event_local(msg) if msg is not None else self.last_local
                if local < last_recv:
                    recv_back += 1
                last_recv = local
                if first_local is None:
                    first_local = local
                if local >= self.next_snap_ts:
                    self._feed_external(local)
                if msg is None:
                    if payload.get("s") != sel:
                        self.other_symbol += 1
                    else:
                        counts["bookTicker"] += 1
                        self.last_ticker_raw = (payload, no_recv, local, f"{path}:{lineno}")
                elif type(msg) is BookTicker:
                    if msg.symbol != sel:
                        self.other_symbol += 1
                        continue
                    counts["bookTicker"] += 1
                    msg.local_ts = local
                    self.last_ticker = msg
                elif type(msg) is DepthDiff:
                    if msg.symbol != sel:
                        self.other_symbol += 1
                        continue
                    counts["depthUpdate"] += 1
                    msg.local_ts = local
                    self._diff(msg, path, lineno)
                elif type(msg) is Trade:
                    if msg.symbol != sel:
                        self.other_symbol += 1
                        continue
                    if msg.aggregated:
                        counts["aggTrade"] += 1
                        if skip_agg or seen_trade:
                            self.aggtrade_duplicates += 1
                            continue
                    else:
                        counts["trade"] += 1
                        seen_trade = True
                    self._trade(msg, local)
                elif type(msg) is DepthSnapshot:
                    if not single_symbol:
                        record_bad(
                            self.bad,
                            f"{path}:{lineno}",
                            MessageError(
                                "depth snapshot without symbol in a multi-symbol file",
                                ", ".join(sorted(inp.symbols)),
                            ),
                        )
                        continue
                    if inp.symbols and sel not in inp.symbols:
                        self.other_symbol += 1
                        continue
                    counts["snapshot"] += 1
                    msg.symbol = sel
                    msg.local_ts = local
                    self._feed_snapshot(msg)
                elif type(msg) is Skipped:
                    if msg.symbol is not None and msg.symbol != sel:
                        self.other_symbol += 1
                        continue
                    counts[msg.kind] += 1
        except (OSError, EOFError, zlib.error) as exc:
            where = f"{path}:{lineno + 1}"
            if self.opts.strict:
                raise FeedError(f"{where}: unreadable compressed data ({exc})") from exc
            self.bad.bad(where, "truncated or corrupt compressed data (rest of file skipped)")
        finally:
            fh.close()
        self.recv_backwards += recv_back
        info.update(
            lines=lineno,
            messages=n_msgs,
            bad_lines=self.bad.total - bad_before,
            symbols=sorted(inp.symbols),
            first_local_ts=iso(first_local),
            last_local_ts=iso(last_recv if last_recv >= 0 else None),
            receive_time_backwards=recv_back,
        )
        if inp.connect_ns is not None:
            info["connected_at"] = iso(inp.connect_ns)
        self.files.append(info)

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
        self._do(sync.on_diff(d), local)

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
        if not self.has_receive_time:
            return
        self._offset_tick += 1
        if self._offset_tick < self._offset_step:
            return
        self._offset_tick = 0
        self.offsets.append(off)
        if len(self.offsets) >= 2 * _OFFSET_SAMPLES:
            self.offsets = self.offsets[::2]
            self._offset_step *= 2

    def finish(self) -> None:
        """Snapshots received after the last message still re-base a book that needs one."""
        if self._snap_i < len(self.snapshots):
            self._feed_external(NEVER)
        if self.last_ticker_raw is not None:
            payload, no_recv, local, where = self.last_ticker_raw
            try:
                t = parse_payload(payload)
            except MessageError as err:
                record_bad(self.bad, where, err)
                return
            if type(t) is BookTicker and (
                self.last_ticker is None or local >= self.last_ticker.local_ts
            ):
                t.local_ts = t.event_ms * MS if no_recv and t.event_ms is not None else local
                self.last_ticker = t
