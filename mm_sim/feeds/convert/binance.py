"""Binance recordings -> native feed, with the venue's own book-sync rules applied on the way.

Why the sync rules run here: a recording is only a valid book if the diffs are replayed exactly as
a live client would (buffer across the snapshot seam, drop what the snapshot already holds, stop
at the first sequence gap). :class:`~mm_sim.venues.binance.sync.BookSync` makes those decisions;
this module only reads files, routes messages and writes events.

Inputs are chained in the given order, gzip or plain (told apart by magic bytes), each detected
from its first line:

- ``cryptofeed-ws``: ``<url> <-> <connect time>`` then ``<recv seconds.fraction>: <message>``;
- ``cryptofeed-http``: ``<url> -> <recv time>: <response body>`` holding REST depth snapshots
  (symbol in the URL) and/or an ``exchangeInfo``; read before the message files and fed to the
  book sync at their receive time (those received before the stream opened are not used);
- ``hftbacktest``: ``<recv ns> <message>``, with the REST snapshot inline among the diffs;
- ``jsonl``: one message per line without receive time; ``local_ts`` is then the message's
  event time ``E`` (the snapshot takes the previous message's).

Memory is bounded: files are streamed line by line, events leave in 64k-record chunks, only the
selected symbol's snapshots are held. A pre-scan of each message file (regex over raw bytes, no
JSON) lists its symbols, whether it is futures (``pu``) and whether it carries both ``trade`` and
``aggTrade`` for a symbol (then ``trade`` is kept and ``aggTrade`` skipped, so prints are not
counted twice); it lets a wrong ``--symbol`` fail before anything is written.
"""

from __future__ import annotations

import re
import statistics
import time
import zlib
from array import array
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from mm_sim.errors import FeedError, UserError
from mm_sim.events import (
    ASK,
    BID,
    EVENT_DTYPE,
    KIND_CLEAR,
    KIND_DEPTH,
    KIND_NAMES,
    KIND_SNAPSHOT,
    KIND_TRADE,
    FeedWriter,
    Instrument,
)
from mm_sim.feeds.convert.base import BadLines, ConvertOptions, ConvertResult, is_gzip, open_binary
from mm_sim.venues.binance.messages import (
    BookTicker,
    DepthDiff,
    DepthSnapshot,
    Level,
    MessageError,
    Skipped,
    SymbolInfo,
    Trade,
    decode,
    deletions_first,
    float_decimals,
    parse_exchange_info,
    parse_payload,
    parse_snapshot,
)
from mm_sim.venues.binance.sync import (
    DEFAULT_MAX_BUFFER,
    Action,
    ActionKind,
    BookSync,
    Market,
)

FMT_CF_WS = "cryptofeed-ws"
FMT_CF_HTTP = "cryptofeed-http"
FMT_HFT = "hftbacktest"
FMT_JSONL = "jsonl"

_MS = 1_000_000
_DIFF_SIDES = (BID, ASK, BID, ASK)  # the order deletions_first returns its level lists
_NEVER = 1 << 62
_CHUNK = 1 << 16
_OFFSET_SAMPLES = 50_000
_MAX_DECIMALS = 18

_WS_HEADER = re.compile(rb"^(\S+) <-> (\d+(?:\.\d+)?)\s*$")
_HTTP_LINE = re.compile(rb"^(\S+) -> (\d+(?:\.\d+)?): ")
_CF_LINE = re.compile(rb"^\d+(?:\.\d+)?: [\[{]")
_HFT_LINE = re.compile(rb"^\d+ [\[{]")
_URL_SYMBOL = re.compile(rb"[?&]symbol=([A-Za-z0-9_\-]+)")
_SYM_RE = re.compile(rb'"s"\s*:\s*"([^"\\]{1,40})"')
_TRADE_RE = re.compile(rb'"e"\s*:\s*"(trade|aggTrade)"[^{}]*?"s"\s*:\s*"([^"\\]{1,40})"')


# --- files --------------------------------------------------------------------------------


def _sec_to_ns(text: bytes) -> int:
    """'1633998512.0633569' -> ns, exactly (no float rounding)."""
    whole, _, frac = text.partition(b".")
    return int(whole) * 1_000_000_000 + (int((frac + b"000000000")[:9]) if frac else 0)


@dataclass
class _Input:
    path: Path
    fmt: str
    gz: bool
    connect_ns: int | None = None  # cryptofeed-ws header
    url: str = ""
    symbols: set[str] = field(default_factory=set)
    trade_symbols: set[str] = field(default_factory=set)  # only filled when aggTrade is present
    has_diffs: bool = False
    has_pu: bool = False
    # cryptofeed-http: (recv ns, line number, symbol) of each depth snapshot
    snapshot_lines: list[tuple[int, int, str]] = field(default_factory=list)
    exchange_info: dict[str, SymbolInfo] | None = None

    @property
    def is_messages(self) -> bool:
        return self.fmt != FMT_CF_HTTP


def _sniff(path: Path) -> _Input:
    gz = is_gzip(path)
    first = b""
    with open_binary(path) as fh:
        try:
            for line in fh:
                if line.strip():
                    first = line
                    break
        except (OSError, EOFError, zlib.error) as exc:
            raise FeedError(f"{path}:1: unreadable compressed data ({exc})") from exc
    if not first:
        raise FeedError(f"{path}: empty file")
    m = _WS_HEADER.match(first)
    if m:
        return _Input(path, FMT_CF_WS, gz, _sec_to_ns(m.group(2)), m.group(1).decode("latin1"))
    if _HTTP_LINE.match(first):
        return _Input(path, FMT_CF_HTTP, gz)
    if _CF_LINE.match(first):
        return _Input(path, FMT_CF_WS, gz)
    if _HFT_LINE.match(first):
        return _Input(path, FMT_HFT, gz)
    if first.lstrip()[:1] in (b"{", b"["):
        return _Input(path, FMT_JSONL, gz)
    raise FeedError(
        f"{path}:1: unrecognised Binance capture: expected '<url> <-> <time>' (cryptofeed), "
        "'<url> -> <time>: <body>' (cryptofeed REST), '<seconds>: <json>', '<ns> <json>' "
        f"(hftbacktest) or a JSON message per line; got {first[:60]!r}"
    )


def _prescan_messages(inp: _Input) -> None:
    """Symbols, futures-ness and trade/aggTrade presence from raw bytes (no JSON decoding)."""
    rest = b""
    has_agg = False
    try:
        with open_binary(inp.path) as fh:
            while True:
                # read1: what one decompression step yields, so a truncated gzip still
                # gives up its readable start.
                chunk = fh.read1(1 << 20)
                data = rest + chunk
                if chunk:
                    cut = data.rfind(b"\n") + 1
                    data, rest = data[:cut], data[cut:]
                    if not data:
                        continue
                inp.symbols.update(s.decode("latin1") for s in set(_SYM_RE.findall(data)))
                if has_agg or b'"aggTrade"' in data:
                    has_agg = True  # only then does it matter which symbols carry `trade`
                    inp.trade_symbols.update(
                        sym.decode("latin1")
                        for etype, sym in set(_TRADE_RE.findall(data))
                        if etype == b"trade"
                    )
                if not inp.has_diffs and b'"depthUpdate"' in data:
                    inp.has_diffs = True
                if not inp.has_pu and b'"pu"' in data:
                    inp.has_pu = True
                if not chunk:
                    break
    except (OSError, EOFError, zlib.error):
        pass  # the main pass reports unreadable data at its line


def _prescan_http(inp: _Input, bad: BadLines) -> None:
    """Index the REST responses of a cryptofeed http capture (snapshots by symbol, exchangeInfo)."""
    with open_binary(inp.path) as fh:
        for lineno, line in enumerate(fh, 1):
            if not line.strip() or line.startswith(b"configuration:"):
                continue
            m = _HTTP_LINE.match(line)
            if not m:
                bad.bad(
                    f"{inp.path}:{lineno}",
                    "malformed REST capture line: expected '<url> -> <time>: <body>'",
                )
                continue
            url = m.group(1)
            if b"exchangeInfo" in url:
                try:
                    inp.exchange_info = parse_exchange_info(decode(line[m.end() :])[0])
                except MessageError as err:
                    _record(bad, f"{inp.path}:{lineno}", err)
                continue
            sym = _URL_SYMBOL.search(url)
            if b"/depth" not in url or not sym:
                bad.bad(f"{inp.path}:{lineno}", "unknown REST response: expected a depth snapshot")
                continue
            inp.snapshot_lines.append(
                (_sec_to_ns(m.group(2)), lineno, sym.group(1).decode("latin1").upper())
            )


def _record(bad: BadLines, where: str, err: MessageError) -> None:
    """Count by the value-free reason; in strict mode stop with the full detail."""
    if bad.strict:
        raise FeedError(f"{where}: {err}")
    bad.bad(where, err.reason)


def load_exchange_info(path: Path) -> dict[str, SymbolInfo]:
    """An ``exchangeInfo`` JSON file, or a cryptofeed ``*.0``/http capture containing one."""
    if not path.exists():
        raise UserError(f"{path}: exchangeInfo file not found")
    with open_binary(path) as fh:
        data = fh.read()
    if data.lstrip()[:1] == b"{":
        try:
            return parse_exchange_info(decode(data)[0])
        except MessageError as err:
            raise UserError(f"{path}: {err}") from None
    for lineno, line in enumerate(data.splitlines(), 1):
        m = _HTTP_LINE.match(line)
        if m and b"exchangeInfo" in m.group(1):
            try:
                return parse_exchange_info(decode(line[m.end() :])[0])
            except MessageError as err:
                raise UserError(f"{path}:{lineno}: {err}") from None
    raise UserError(
        f"{path}: no exchangeInfo response found (expected its JSON body, or a cryptofeed line "
        "'<url>/exchangeInfo -> <time>: <body>')"
    )


def _iso(ns: int | None) -> str | None:
    if ns is None:
        return None
    return datetime.fromtimestamp(ns / 1e9, tz=UTC).isoformat(timespec="milliseconds")


# --- event output -------------------------------------------------------------------------


def _grid_decimals(x: np.ndarray, start: int) -> int:
    """Fewest decimals >= ``start`` putting every value of ``x`` on a 10**-d grid.

    Exact for doubles parsed from decimal strings: for an on-grid value, ``x * 10**d`` is within
    far less than 0.5 of the integer k, and ``k / 10**d`` rounds back to the same double.
    """
    d = start
    while d < _MAX_DECIMALS:
        scale = 10.0**d
        if np.array_equal(np.rint(x * scale) / scale, x):
            return d
        d += 1
    return d


def _off_grid(x: np.ndarray, step: float) -> int:
    r = x / step
    # Absolute slack on the tick count (plus float error, ~1e-16 relative, for huge counts).
    return int(np.count_nonzero(np.abs(r - np.rint(r)) > 1e-6 + 1e-12 * np.abs(r)))


class _Columns:
    """Column-wise event staging: appending to typed arrays is several times cheaper than
    assigning fields of a numpy record one by one, and level lists go in with one extend.
    Each chunk is also checked on its way out (vectorized): kinds, exchange-time range, local
    time order, and the price/qty grid (decimals to infer, or how many values miss a given
    tick/lot)."""

    def __init__(self, writer: FeedWriter) -> None:
        self.writer = writer
        self.price_decimals = 0
        self.qty_decimals = 0
        self.priced = 0  # events carrying a price (depth, snapshot, trade)
        self.tick: float | None = None  # when known up front: count values off the grid
        self.lot: float | None = None
        self.off_tick = 0
        self.off_lot = 0
        self.kind_counts = np.zeros(8, dtype=np.int64)
        self.first_exch: int | None = None
        self.last_exch: int | None = None
        self.local_backwards = 0
        self._last_local: int | None = None
        self._reset()

    def _reset(self) -> None:
        self.ex = array("q")
        self.lo = array("q")
        self.px = array("d")
        self.qt = array("d")
        self.kd = array("i")
        self.sd = array("i")

    def one(self, exch: int, local: int, kind: int, side: int, price: float, qty: float) -> None:
        self.ex.append(exch)
        self.lo.append(local)
        self.kd.append(kind)
        self.sd.append(side)
        self.px.append(price)
        self.qt.append(qty)
        if len(self.ex) >= _CHUNK:
            self.flush()

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
        if len(self.ex) >= _CHUNK:
            self.flush()

    def flush(self) -> None:
        n = len(self.ex)
        if not n:
            return
        rec = np.empty(n, dtype=EVENT_DTYPE)
        rec["exch_ts"] = np.frombuffer(self.ex, dtype=np.int64)
        rec["local_ts"] = np.frombuffer(self.lo, dtype=np.int64)
        rec["price"] = np.frombuffer(self.px, dtype=np.float64)
        rec["qty"] = np.frombuffer(self.qt, dtype=np.float64)
        rec["kind"] = np.frombuffer(self.kd, dtype=np.int32)
        rec["side"] = np.frombuffer(self.sd, dtype=np.int32)
        self.kind_counts += np.bincount(rec["kind"], minlength=8)[:8]
        market = rec["exch_ts"][(rec["kind"] == KIND_DEPTH) | (rec["kind"] == KIND_TRADE)]
        if len(market):
            lo, hi = int(market.min()), int(market.max())
            self.first_exch = lo if self.first_exch is None else min(lo, self.first_exch)
            self.last_exch = hi if self.last_exch is None else max(hi, self.last_exch)
        priced = rec["kind"] != KIND_CLEAR
        px = rec["price"][priced]
        qt = rec["qty"][priced]
        qt = qt[qt > 0.0]
        self.priced += len(px)
        if len(px):
            self.price_decimals = _grid_decimals(px, self.price_decimals)
            if self.tick is not None:
                self.off_tick += _off_grid(px, self.tick)
        if len(qt):
            self.qty_decimals = _grid_decimals(qt, self.qty_decimals)
            if self.lot is not None:
                self.off_lot += _off_grid(qt, self.lot)
        local = rec["local_ts"]
        self.local_backwards += int(np.count_nonzero(np.diff(local) < 0))
        if self._last_local is not None and local[0] < self._last_local:
            self.local_backwards += 1
        self._last_local = int(local[-1])
        self.writer.write(rec)
        self._reset()


# --- the conversion -----------------------------------------------------------------------


class _Converter:
    def __init__(self, opts: ConvertOptions) -> None:
        self.opts = opts
        self.bad = BadLines(strict=opts.strict)
        self.messages: Counter[str] = Counter()
        self.other_symbol = 0
        self.symbol = ""
        self.market: Market | None = None
        self.sync: BookSync | None = None
        self.cols: _Columns | None = None
        self.snapshots: list[DepthSnapshot] = []  # external (cryptofeed http), by receive time
        self._snap_i = 0
        self.next_snap_ts = _NEVER
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
        for a in actions:
            k = a.kind
            if k is ActionKind.APPLY:
                d = a.diff
                assert d is not None
                exch = d.event_ms * _MS
                for levels, side in zip(deletions_first(d.bids, d.asks), _DIFF_SIDES, strict=True):
                    cols.levels(levels, side, KIND_DEPTH, exch, now)
            elif k is ActionKind.REBASE:
                s = a.snapshot
                assert s is not None
                ms = s.event_ms if s.event_ms is not None else s.txn_ms
                exch = ms * _MS if ms is not None else now
                cols.one(exch, now, KIND_CLEAR, 0, 0.0, 0.0)
                cols.levels(s.bids, BID, KIND_SNAPSHOT, exch, now)
                cols.levels(s.asks, ASK, KIND_SNAPSHOT, exch, now)
            elif k is ActionKind.RESYNC:
                # The book is no longer trustworthy: say so in the feed instead of leaving a
                # stale book in place until the next snapshot.
                exch = a.diff.event_ms * _MS if a.diff is not None else self.last_exch
                cols.one(exch, now, KIND_CLEAR, 0, 0.0, 0.0)
                self.invalidations += 1

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
        self.next_snap_ts = snaps[self._snap_i].local_ts if self._snap_i < len(snaps) else _NEVER

    def _skip_external_before(self, t: int) -> None:
        snaps = self.snapshots
        while self._snap_i < len(snaps) and snaps[self._snap_i].local_ts < t:
            self.snapshots_before_stream += 1
            self._snap_i += 1
        self.next_snap_ts = snaps[self._snap_i].local_ts if self._snap_i < len(snaps) else _NEVER

    def _make_sync(self, market: Market) -> None:
        self.market = market
        max_buffer = int(self.opts.extra.get("max_buffer", DEFAULT_MAX_BUFFER))
        self.sync = BookSync(market, max_buffer=max_buffer)

    # --- per file -------------------------------------------------------------------------

    def stream(self, inp: _Input) -> None:
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
        fh = open_binary(path)
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
                            hm = _WS_HEADER.match(raw)
                            if hm:  # a new connection: the book must be re-synced
                                self._new_connection(_sec_to_ns(hm.group(2)))
                                continue
                            raise MessageError(
                                "malformed line: expected '<receive seconds>: <message JSON>'"
                            )
                        try:
                            local = _sec_to_ns(line[:sp].encode())
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
                    _record(self.bad, f"{path}:{lineno}", err)
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
                        _record(
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
            first_local_ts=_iso(first_local),
            last_local_ts=_iso(last_recv if last_recv >= 0 else None),
            receive_time_backwards=recv_back,
        )
        if inp.connect_ns is not None:
            info["connected_at"] = _iso(inp.connect_ns)
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
            return int(ms) * _MS
        return self.last_local

    def _diff(self, d: DepthDiff, path: Path, lineno: int) -> None:
        if self.sync is None:
            self._make_sync(Market.FUTURES if d.prev_final_id is not None else Market.SPOT)
        sync = self.sync
        assert sync is not None
        if (d.prev_final_id is not None) != (self.market is Market.FUTURES):
            _record(
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
        self.last_exch = d.event_ms * _MS
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
        self.last_exch = tr.event_ms * _MS
        self._sample_offset(local - self.last_exch)
        self.cols.one(tr.trade_ms * _MS, local, KIND_TRADE, tr.aggressor_side, tr.price, tr.qty)

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
            self._feed_external(_NEVER)
        if self.last_ticker_raw is not None:
            payload, no_recv, local, where = self.last_ticker_raw
            try:
                t = parse_payload(payload)
            except MessageError as err:
                _record(self.bad, where, err)
                return
            if type(t) is BookTicker and (
                self.last_ticker is None or local >= self.last_ticker.local_ts
            ):
                t.local_ts = t.event_ms * _MS if no_recv and t.event_ms is not None else local
                self.last_ticker = t


def _resolve_symbol(opts: ConvertOptions, msg_inputs: list[_Input], http: list[_Input]) -> str:
    present: set[str] = set()
    for inp in msg_inputs:
        present |= inp.symbols
    if not present:
        for inp in http:
            present |= {s for _, _, s in inp.snapshot_lines}
    listing = ", ".join(sorted(present)) or "none"
    if opts.symbol:
        want = opts.symbol.upper()
        for s in present:
            if s.upper() == want:
                return s
        raise UserError(
            f"symbol {opts.symbol!r} not found in the inputs; symbols present: {listing}"
        )
    if len(present) == 1:
        return next(iter(present))
    if not present:
        raise UserError("no Binance symbol found in the inputs (no message carries a symbol)")
    raise UserError(f"the inputs hold several symbols ({listing}); pick one with --symbol")


def _load_snapshots(http: list[_Input], symbol: str, conv: _Converter) -> None:
    """Parse the selected symbol's REST snapshots from the http captures, ordered by time."""
    out: list[DepthSnapshot] = []
    for inp in http:
        wanted = {ln: ts for ts, ln, s in inp.snapshot_lines if s == symbol.upper()}
        if not wanted:
            continue
        with open_binary(inp.path) as fh:
            for lineno, line in enumerate(fh, 1):
                ts = wanted.get(lineno)
                if ts is None:
                    continue
                m = _HTTP_LINE.match(line)
                assert m is not None
                try:
                    snap = parse_snapshot(decode(line[m.end() :])[0], symbol)
                except MessageError as err:
                    _record(conv.bad, f"{inp.path}:{lineno}", err)
                    continue
                snap.local_ts = ts
                out.append(snap)
    out.sort(key=lambda s: s.local_ts)
    conv.snapshots = out
    conv.next_snap_ts = out[0].local_ts if out else _NEVER


def _url_market(url: bytes) -> str | None:
    if b"fapi." in url or b"fstream." in url:
        return "usd-m futures"
    if b"dapi." in url or b"dstream." in url:
        return "coin-m futures"
    if b"api.binance" in url or b"stream.binance" in url:
        return "spot"
    return None


def _exchange_info_market(info: dict[str, SymbolInfo]) -> str:
    if any("contractType" in s.extra for s in info.values()):
        return "futures"
    return "spot"


def convert(inputs: list[Path], out: Path, opts: ConvertOptions) -> ConvertResult:
    started = time.perf_counter()
    if not inputs:
        raise UserError("no input files")
    conv = _Converter(opts)
    sniffed = [_sniff(Path(p)) for p in inputs]
    msg_inputs = [i for i in sniffed if i.is_messages]
    http = [i for i in sniffed if not i.is_messages]
    if not msg_inputs:
        raise UserError(
            "no message files among the inputs (only REST captures); add the websocket capture"
        )
    for inp in msg_inputs:
        _prescan_messages(inp)
    for inp in http:
        _prescan_http(inp, conv.bad)
    symbol = _resolve_symbol(opts, msg_inputs, http)
    conv.symbol = symbol
    futures = any(i.has_pu for i in msg_inputs)
    has_diffs = any(i.has_diffs for i in msg_inputs)

    # Tick and lot: flags win, then exchangeInfo (explicit file, else one found in the inputs),
    # else the most decimals seen in the data.
    info_src: str | None = None
    sym_info: SymbolInfo | None = None
    if opts.exchange_info is not None and (opts.tick_size is None or opts.lot_size is None):
        table = load_exchange_info(Path(opts.exchange_info))
        sym_info = table.get(symbol)
        if sym_info is None:
            raise UserError(
                f"{opts.exchange_info}: symbol {symbol} is not in this exchangeInfo "
                f"({len(table)} symbols); use the capture's own venue file or "
                "--tick-size/--lot-size"
            )
        info_market = _exchange_info_market(table)
        if has_diffs and info_market != ("futures" if futures else "spot"):
            raise UserError(
                f"{opts.exchange_info}: this exchangeInfo is for {info_market} but the capture "
                f"is {'futures' if futures else 'spot'}"
            )
        info_src = str(opts.exchange_info)
    elif opts.tick_size is None or opts.lot_size is None:
        for inp in http:
            if inp.exchange_info and symbol in inp.exchange_info:
                sym_info = inp.exchange_info[symbol]
                info_src = str(inp.path)
    tick_source = "flag" if opts.tick_size else "exchange_info" if sym_info else "inferred"
    lot_source = "flag" if opts.lot_size else "exchange_info" if sym_info else "inferred"
    for name, v in (("--tick-size", opts.tick_size), ("--lot-size", opts.lot_size)):
        if v is not None and not v > 0:
            raise UserError(f"{name} must be > 0, got {v}")

    _load_snapshots(http, symbol, conv)
    if has_diffs:
        conv._make_sync(Market.FUTURES if futures else Market.SPOT)
    venue = "binance-futures" if futures else "binance-spot"
    writer = FeedWriter(out, Instrument(symbol, venue, 1.0, 1.0))
    conv.cols = _Columns(writer)
    if tick_source != "inferred":
        conv.cols.tick = opts.tick_size if tick_source == "flag" else sym_info.tick_size  # type: ignore[union-attr]
    if lot_source != "inferred":
        conv.cols.lot = opts.lot_size if lot_source == "flag" else sym_info.lot_size  # type: ignore[union-attr]
    try:
        for inp in msg_inputs:
            conv.stream(inp)
        conv.finish()
        conv.cols.flush()
        tick, lot, decimals = _tick_lot(opts, sym_info, conv.cols, tick_source, lot_source)
        writer.instrument = Instrument(symbol, venue, tick, lot, decimals)
        elapsed = time.perf_counter() - started
        stats = _stats(conv, sniffed, futures, has_diffs, venue, tick, lot, elapsed)
        stats.update(tick_source=tick_source, lot_source=lot_source)
        if info_src:
            stats["exchange_info"] = info_src
        source = {
            "format": "binance",
            "inputs": [str(p) for p in inputs],
            "exchange_info": info_src,
            "symbol": symbol,
        }
        path = writer.close(source, {**stats, "bad_lines": conv.bad.to_json()})
    except BaseException:
        writer.abort()
        raise
    return ConvertResult(path, writer.count, conv.bad, stats)


def _tick_lot(
    opts: ConvertOptions,
    sym_info: SymbolInfo | None,
    cols: _Columns,
    tick_source: str,
    lot_source: str,
) -> tuple[float, float, int | None]:
    if "inferred" in (tick_source, lot_source) and cols.priced == 0:
        raise UserError(
            "no prices in the inputs to infer the tick/lot size from; pass --tick-size and "
            "--lot-size or --exchange-info"
        )
    if tick_source == "flag":
        tick = float(opts.tick_size)  # type: ignore[arg-type]
        decimals = float_decimals(tick)
    elif tick_source == "exchange_info":
        assert sym_info is not None
        tick, decimals = sym_info.tick_size, sym_info.price_decimals
    else:
        decimals = cols.price_decimals
        tick = float(f"1e-{decimals}")
    if lot_source == "flag":
        lot = float(opts.lot_size)  # type: ignore[arg-type]
    elif lot_source == "exchange_info":
        assert sym_info is not None
        lot = sym_info.lot_size
    else:
        lot = float(f"1e-{cols.qty_decimals}")
    return tick, lot, decimals


def _stats(
    conv: _Converter,
    sniffed: list[_Input],
    futures: bool,
    has_diffs: bool,
    venue: str,
    tick: float,
    lot: float,
    elapsed: float,
) -> dict[str, Any]:
    cols = conv.cols
    assert cols is not None
    sync = conv.sync
    c = sync.counters if sync is not None else None
    msgs_total = sum(f.get("messages", 0) for f in conv.files)
    unsynced = (
        c.buffered_overflow + c.discarded + (sync.buffered if sync is not None else 0)
        if c is not None
        else 0
    )
    market = "futures" if futures else "spot" if has_diffs else "unknown (no depthUpdate)"
    url_markets = {m for i in sniffed if (m := _url_market(i.url.encode()))}
    stats: dict[str, Any] = {
        "symbol": conv.symbol,
        "market": market,
        "market_detected_from": "'pu' in depthUpdate" if has_diffs else "n/a",
        "venue": venue,
        "symbols_seen": sorted(set().union(*(i.symbols for i in sniffed if i.is_messages))),
        "messages": dict(sorted(conv.messages.items())),
        "other_symbol_messages": conv.other_symbol,
        "events": {KIND_NAMES[k]: int(cols.kind_counts[k]) for k in sorted(KIND_NAMES)},
        "snapshots": {
            "seen": conv.snapshots_seen,
            "used": c.rebases if c else 0,
            "too_old": c.snapshots_too_old if c else 0,
            "ignored_book_valid": c.snapshots_ignored if c else 0,
            "crossed": c.snapshots_crossed if c else 0,
            "before_stream": conv.snapshots_before_stream,
            "external_available": len(conv.snapshots),
        },
        "gaps": c.gaps if c else 0,
        "rebases": c.rebases if c else 0,
        "resyncs": c.resyncs if c else 0,
        "crossed": c.crossed if c else 0,
        "book_invalidations": conv.invalidations,
        "diffs_applied": c.applied if c else 0,
        "dropped_stale": c.dropped_stale if c else 0,
        "unsynced_dropped": unsynced,
        "buffered_overflow": c.buffered_overflow if c else 0,
        "overlapping_diffs": c.overlaps if c else 0,
        "connections": conv.connections,
        "aggtrade_skipped_duplicate": conv.aggtrade_duplicates,
        "trades_skipped_non_market": dict(conv.trades_non_market),
        "trades_skipped_zero_qty": conv.trades_zero_qty,
        "book_ticker_skipped": conv.messages.get("bookTicker", 0),
        "tick_size": tick,
        "lot_size": lot,
        "decimals_seen": {"price": cols.price_decimals, "qty": cols.qty_decimals},
        "prices_off_tick": cols.off_tick,
        "qtys_off_lot": cols.off_lot,
        "local_ts_source": (
            "receive time"
            if all(f["format"] != FMT_JSONL for f in conv.files)
            else "exchange event time E (the input has no receive time)"
            if all(f["format"] == FMT_JSONL for f in conv.files)
            else "receive time, except jsonl files: exchange event time E"
        ),
        "first_exch_ts": _iso(cols.first_exch),
        "last_exch_ts": _iso(cols.last_exch),
        "first_exch_ts_ns": cols.first_exch,
        "last_exch_ts_ns": cols.last_exch,
        "clock_offset_ms_median": (
            round(statistics.median(conv.offsets) / 1e6, 3) if conv.offsets else None
        ),
        "receive_time_backwards": conv.recv_backwards,
        "events_local_ts_backwards": cols.local_backwards,
        "files": conv.files,
        "elapsed_s": round(elapsed, 3),
        "messages_per_s": round(msgs_total / elapsed) if elapsed > 0 else None,
    }
    if url_markets:
        stats["venue_from_url"] = sorted(url_markets)
    if conv.last_ticker is not None:
        t = conv.last_ticker
        stats["last_book_ticker"] = {
            "bid": t.bid_price,
            "ask": t.ask_price,
            "local_ts": _iso(t.local_ts),
        }
    if sync is not None and sync.book is not None:
        stats["final_book"] = {
            "state": str(sync.state),
            "best_bid": sync.book.best_bid(),
            "best_ask": sync.book.best_ask(),
        }
    return stats


__all__ = ["FMT_CF_HTTP", "FMT_CF_WS", "FMT_HFT", "FMT_JSONL", "convert", "load_exchange_info"]
