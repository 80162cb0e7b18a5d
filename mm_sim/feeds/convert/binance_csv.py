"""Binance's public historical CSVs (data.binance.vision and the futures order-book download)
-> native feed.

Sources checked (stored copies, through the project's search tool): the README of
github.com/binance/binance-public-data (column tables of spot and futures ``trades`` and
``aggTrades``) and its ``Futures_Order_Book_Download/README.md`` (the ``T_DEPTH`` schema:
``symbol, timestamp, first_update_id, last_update_id, side, update_type, price, qty`` and, for
COIN-M, ``pu``; ``update_type`` ``snap`` for the snapshot file, ``set`` (absolute quantity) or
``delta`` (a change) for the update file; ``side`` ``a``/``b``).

Why the capture converter's machinery: a snapshot file plus an update file is the same problem
as a websocket capture (a snapshot, then diffs that must continue it), so the rows are grouped
into the same ``DepthSnapshot``/``DepthDiff`` records and go through the same
:class:`~mm_sim.feeds.convert.binance_stream.StreamConverter` and book sync (futures rules: the
first diff straddles the snapshot's id, then each ``pu`` is the previous ``u``). Files without
``pu`` (USD-M) cannot show a gap: each diff is taken to continue the previous one, and the stats
say so (``continuity``). These files carry one clock: ``local_ts`` is the exchange time.

Trades: spot files have no header (``id, price, qty, quoteQty, time, isBuyerMaker,
isBestMatch``; aggTrades ``a, p, q, first, last, time, isBuyerMaker, isBestMatch``), futures
files have one (``id, price, qty, quote_qty|base_qty, time, is_buyer_maker``; aggTrades
``agg_trade_id, price, quantity, first_trade_id, last_trade_id, transact_time,
is_buyer_maker``). A headerless file is told by its name (``-aggTrades-`` / ``-trades-``), else
by its column count. Times are ms since the epoch, or µs (spot files from 2025): told apart by
size. Trades and depth rows are merged on time, a trade first on a tie (it precedes the depth
change it caused). With both trades and aggTrades, the trades are kept.
"""

from __future__ import annotations

import heapq
import math
import re
import time
from collections.abc import Iterator
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any

from mm_sim.errors import FeedError, UserError
from mm_sim.events import KIND_TRADE, FeedWriter, Instrument
from mm_sim.feeds.convert.base import (
    I64,
    ConvertOptions,
    ConvertResult,
    inferred_tick_warning,
    open_text,
    time_problem,
)
from mm_sim.feeds.convert.binance import _stats, _tick_lot, load_exchange_info
from mm_sim.feeds.convert.binance_columns import Columns
from mm_sim.feeds.convert.binance_stream import StreamConverter
from mm_sim.feeds.validate import MAX_TS_NS
from mm_sim.venues.binance.messages import DepthDiff, DepthSnapshot, SymbolInfo
from mm_sim.venues.binance.sync import Market

DEPTH_COLUMNS = (
    "symbol",
    "timestamp",
    "first_update_id",
    "last_update_id",
    "side",
    "update_type",
    "price",
    "qty",
)
DEPTH, TRADES, AGG = "depth", "trades", "aggTrades"
_BOOLS = {"true": True, "false": False}
_US_FROM = 10**14  # a time at or above this is µs (ms since the epoch stay below until 5138)
_NAME_SYMBOL = re.compile(r"^([A-Z0-9]+(?:_[A-Z0-9]+)?)[-_]")


@dataclass
class _File:
    path: Path
    kind: str  # DEPTH, TRADES or AGG
    header: bool
    index: dict[str, int]  # column -> position (trades: fixed positions)
    ncols: int
    first_ms: int = 0  # depth: the first row's time (files are ordered by it)
    snap: bool = False  # depth: a snapshot file


def _first_rows(path: Path, n: int = 2) -> list[list[str]]:
    rows = []
    try:
        with open_text(path) as fh:
            for line in fh:
                if line.strip():
                    rows.append(line.rstrip("\r\n").split(","))
                    if len(rows) == n:
                        break
    except (OSError, EOFError, UnicodeDecodeError) as exc:
        raise FeedError(f"{path}: unreadable ({exc})") from exc
    if not rows:
        raise FeedError(f"{path}: empty file")
    return rows


def classify(path: Path) -> _File:
    """What a file is, from its header, else its name, else its column count."""
    rows = _first_rows(path)
    head = [c.strip() for c in rows[0]]
    index = {c: i for i, c in enumerate(head)}
    if set(DEPTH_COLUMNS) <= index.keys():
        f = _File(path, DEPTH, True, index, len(head))
        if len(rows) > 1:
            data = rows[1]
            f.snap = data[index["update_type"]] == "snap"
            try:
                f.first_ms = int(data[index["timestamp"]])
            except ValueError:
                f.first_ms = 0
        return f
    header = not head[0].lstrip("-").isdigit()
    n = len(head)
    if header and "agg_trade_id" in index:
        return _File(path, AGG, True, {}, n)
    if header and ("quote_qty" in index or "base_qty" in index):
        return _File(path, TRADES, True, {}, n)
    if not header:
        if "aggTrades" in path.name:
            return _File(path, AGG, False, {}, n)
        if "trades" in path.name:
            return _File(path, TRADES, False, {}, n)
        if n in (7, 8):  # spot layouts: trades 7 columns, aggTrades 8
            return _File(path, TRADES if n == 7 else AGG, False, {}, n)
    raise FeedError(
        f"{path}:1: not a Binance public CSV: expected the T_DEPTH header "
        f"({','.join(DEPTH_COLUMNS)}[,pu]), a trades/aggTrades header, or a headerless spot "
        f"trades (7 columns) / aggTrades (8 columns) file; got {','.join(head)[:120]!r}"
    )


class _Reader:
    """Rows of the inputs as records, with bad-line accounting shared by all files."""

    def __init__(self, conv: StreamConverter, symbol: str) -> None:
        self.conv = conv
        self.symbol = symbol
        self.lines = 0
        self.decimals = {"price": 0, "qty": 0}
        self.other_symbol_rows = 0
        # The book as the rows built it, across files (a snapshot file, then its updates):
        # what a delta row is added to.
        self.book: dict[str, dict[float, Decimal]] = {"b": {}, "a": {}}
        self.prev_last: int | None = None  # u of the previous diff (files without pu)

    def fail(self, where: str, reason: str, value: str) -> None:
        if self.conv.bad.strict:
            raise FeedError(f"{where}: {reason}, got {value!r}")
        self.conv.bad.bad(where, reason)

    def rows(self, f: _File) -> Iterator[tuple[str, list[str]]]:
        lineno = 0
        try:
            with open_text(f.path, track=True) as fh:
                for line in fh:
                    lineno += 1
                    if (lineno == 1 and f.header) or not line.strip():
                        continue
                    self.lines += 1
                    fields = line.rstrip("\r\n").split(",")
                    where = f"{f.path}:{lineno}"
                    if len(fields) != f.ncols:
                        self.fail(where, f"expected {f.ncols} columns", str(len(fields)))
                        continue
                    yield where, fields
        except (OSError, EOFError, UnicodeDecodeError) as exc:
            raise FeedError(f"{f.path}: unreadable after line {lineno} ({exc})") from exc

    def number(self, text: str, where: str, what: str, positive: bool) -> float | None:
        try:
            x = float(text)
        except ValueError:
            x = math.nan
        if not (0.0 < x < math.inf if positive else 0.0 <= x < math.inf):
            sign = "positive" if positive else ">= 0"
            self.fail(where, f"{what}: expected a {sign} number", text)
            return None
        return x

    def depth(self, f: _File) -> Iterator[tuple[int, int, Any, str]]:
        """(time ns, 1, DepthSnapshot or DepthDiff, where): one record per exchange message."""
        ix = f.index
        i_pu = ix.get("pu")
        group: list[Any] = []  # rows of one message: (side, price, qty)
        key: tuple[int, int, int, int | None, str] | None = None
        for where, r in self.rows(f):
            if r[ix["symbol"]].upper() != self.symbol:
                self.other_symbol_rows += 1
                continue
            try:
                ts, first, last = (int(r[ix[c]]) for c in DEPTH_COLUMNS[1:4])
                pu = int(r[i_pu]) if i_pu is not None and r[i_pu] else None
            except ValueError:
                self.fail(where, "timestamp and update ids: expected integers", ",".join(r[1:4]))
                continue
            problem = time_problem(ts, 1_000_000, lowest=0)
            if problem is not None:
                self.fail(where, f"timestamp: {problem}", r[ix["timestamp"]])
                continue
            if any(not -I64 <= v < I64 for v in (first, last, pu or 0)):
                self.fail(where, "update ids: expected integers within int64", ",".join(r[2:4]))
                continue
            side, kind = r[ix["side"]], r[ix["update_type"]]
            if side not in ("a", "b") or kind not in ("snap", "set", "delta"):
                reason = "side: expected a or b, update_type: snap, set or delta"
                self.fail(where, reason, f"{side},{kind}")
                continue
            price = self.number(r[ix["price"]], where, "price", True)
            if price is None:
                continue
            qtext = r[ix["qty"]]
            try:
                q = Decimal(qtext)
            except InvalidOperation:
                q = Decimal("NaN")
            if not q.is_finite() or (kind != "delta" and q < 0):
                self.fail(where, "qty: expected a number (>= 0 unless a delta)", qtext)
                continue
            self._decimals(r[ix["price"]], qtext)
            k = (ts, first, last, pu, "snap" if kind == "snap" else "diff")
            if key is not None and k != key:
                yield self._record(key, group, f)
                group = []
            key = k
            group.append((side, price, q, kind))
        if key is not None:
            yield self._record(key, group, f)

    def _record(self, key: tuple, group: list[Any], f: _File) -> tuple[int, int, Any, str]:
        ts, first, last, pu, what = key
        book = self.book
        if what == "snap":
            book["b"] = {p: q for s, p, q, _ in group if s == "b"}
            book["a"] = {p: q for s, p, q, _ in group if s == "a"}
            bids = [(p, float(q)) for p, q in book["b"].items()]
            asks = [(p, float(q)) for p, q in book["a"].items()]
            snap = DepthSnapshot(last, bids, asks, ts, ts, self.symbol)
            return ts * 1_000_000, 1, snap, str(f.path)
        sides: dict[str, list[tuple[float, float]]] = {"b": [], "a": []}
        for s, p, q, kind in group:
            absolute = book[s].get(p, Decimal(0)) + q if kind == "delta" else q
            absolute = max(absolute, Decimal(0))
            if absolute:
                book[s][p] = absolute
            else:
                book[s].pop(p, None)
            sides[s].append((p, float(absolute)))
        if pu is None:  # USD-M files have no pu: take the diff to continue the previous one
            pu = self.prev_last if self.prev_last is not None else first - 1
        self.prev_last = last
        diff = DepthDiff(self.symbol, first, last, pu, ts, ts, sides["b"], sides["a"])
        return ts * 1_000_000, 1, diff, str(f.path)

    def trades(self, f: _File) -> Iterator[tuple[int, int, Any, str]]:
        """(time ns, 0, (side, price, qty), where) per trade."""
        t_col = 5 if f.kind == AGG else 4
        m_col = 6 if f.kind == AGG else 5
        for where, r in self.rows(f):
            try:
                t = int(r[t_col])
            except ValueError:
                self.fail(where, "time: expected integer ms or µs", r[t_col])
                continue
            if not 0 <= (t * 1000 if t >= _US_FROM else t * 1_000_000) < MAX_TS_NS:
                self.fail(where, "time: expected ms or µs since the epoch before 2100", r[t_col])
                continue
            buyer_maker = _BOOLS.get(r[m_col].strip().lower())
            if buyer_maker is None:
                self.fail(where, "isBuyerMaker: expected true or false", r[m_col])
                continue
            price = self.number(r[1], where, "price", True)
            qty = self.number(r[2], where, "qty", False)
            if price is None or qty is None:
                continue
            self._decimals(r[1], r[2])
            ns = t * 1000 if t >= _US_FROM else t * 1_000_000
            yield ns, 0, (-1 if buyer_maker else 1, price, qty), where

    def _decimals(self, ptext: str, qtext: str) -> None:
        for name, text in (("price", ptext), ("qty", qtext)):
            i = text.find(".")
            if i >= 0:
                self.decimals[name] = max(self.decimals[name], len(text[i + 1 :].rstrip("0")))


def _symbol(opts: ConvertOptions, files: list[_File]) -> str:
    """--symbol, else the one symbol of the depth files (or of the trade files' names)."""
    if opts.symbol:
        return opts.symbol.upper()
    seen = set()
    for f in files:
        if f.kind == DEPTH:
            rows = _first_rows(f.path)
            if len(rows) > 1:
                seen.add(rows[1][f.index["symbol"]].upper())
        elif m := _NAME_SYMBOL.match(f.path.name):
            seen.add(m.group(1).upper())
    if len(seen) != 1:
        raise UserError(
            f"cannot tell the symbol ({', '.join(sorted(seen)) or 'none found'}): give --symbol"
        )
    return seen.pop()


def _check_trade_names(symbol: str, files: list[_File]) -> None:
    """Trades files carry no symbol column: a name of another symbol is a mistake."""
    for f in files:
        m = _NAME_SYMBOL.match(f.path.name)
        if f.kind != DEPTH and m and m.group(1).upper() != symbol:
            raise UserError(f"{f.path}: a {m.group(1)} trades file, but the symbol is {symbol}")


def _file_info(f: _File) -> dict[str, str]:
    return {"path": str(f.path), "kind": "depth snapshot" if f.snap else f.kind}


def convert(inputs: list[Path], out: Path, opts: ConvertOptions) -> ConvertResult:
    started = time.perf_counter()
    files = [classify(Path(p)) for p in inputs]
    depth = sorted((f for f in files if f.kind == DEPTH), key=lambda f: (f.first_ms, not f.snap))
    trade_files = [f for f in files if f.kind == TRADES] or [f for f in files if f.kind == AGG]
    kept = TRADES if any(f.kind == TRADES for f in files) else AGG
    skipped_agg = [f for f in files if f.kind == AGG] if kept == TRADES else []
    if not any(f.snap for f in depth):
        raise UserError(
            "no depth snapshot file (T_DEPTH ..._depth_snap.csv, update_type snap) among the "
            "inputs: a book needs one, with its update file"
        )
    symbol = _symbol(opts, files)
    _check_trade_names(symbol, files)
    conv = StreamConverter(opts)
    conv.symbol = symbol
    conv.has_receive_time = False
    conv._make_sync(Market.FUTURES)
    reader = _Reader(conv, symbol)
    sym_info: SymbolInfo | None = None
    if opts.exchange_info is not None and (opts.tick_size is None or opts.lot_size is None):
        table = load_exchange_info(Path(opts.exchange_info))
        sym_info = table.get(symbol)
        if sym_info is None:
            raise UserError(f"{opts.exchange_info}: symbol {symbol} is not in this exchangeInfo")
    tick_source = "flag" if opts.tick_size else "exchange_info" if sym_info else "inferred"
    lot_source = "flag" if opts.lot_size else "exchange_info" if sym_info else "inferred"
    writer = FeedWriter(out, Instrument(symbol, "binance-futures", 1.0, 1.0))
    cols = conv.cols = Columns(writer)
    if tick_source != "inferred":
        cols.tick = opts.tick_size or sym_info.tick_size  # type: ignore[union-attr]
    try:
        streams = [reader.depth(f) for f in depth] + [reader.trades(f) for f in trade_files]
        trades = 0
        for ns, _, rec, where in heapq.merge(*streams, key=lambda e: (e[0], e[1])):
            if type(rec) is tuple:
                side, price, qty = rec
                if qty <= 0.0:
                    conv.trades_zero_qty += 1
                    continue
                cols.one(ns, ns, KIND_TRADE, side, price, qty)
                trades += 1
            elif type(rec) is DepthSnapshot:
                conv.messages["snapshot"] += 1
                rec.local_ts = ns
                conv._feed_snapshot(rec)
            else:
                conv.messages["depthUpdate"] += 1
                rec.local_ts = ns
                conv._diff(rec, Path(where), 0)
        if trade_files:
            conv.messages["trade" if kept == TRADES else "aggTrade"] = trades
        conv.finish()
        cols.flush()
        tick, lot, decimals = _tick_lot(opts, sym_info, cols, tick_source, lot_source)
        writer.instrument = Instrument(symbol, "binance-futures", tick, lot, decimals)
        elapsed = time.perf_counter() - started
        stats = _stats(conv, [], True, True, "binance-futures", tick, lot, elapsed)
        stats.update(
            tick_source=tick_source,
            lot_source=lot_source,
            local_ts_source="exchange time (the files have no receive time)",
            continuity="pu checked"
            if any("pu" in f.index for f in depth)
            else "not checkable: no pu column (USD-M); each diff taken to continue the previous",
            symbols_seen=[symbol],
            market_detected_from="T_DEPTH files (futures)",
            rows_other_symbols=reader.other_symbol_rows,
            aggtrade_files_skipped=[str(f.path) for f in skipped_agg],
            files=[_file_info(f) for f in files],
        )
        source = {"format": "binance-csv", "inputs": [str(p) for p in inputs], "symbol": symbol}
        path = writer.close(source, {**stats, "bad_lines": conv.bad.to_json()})
    except BaseException:
        writer.abort()
        raise
    warnings = [inferred_tick_warning(tick)] if tick_source == "inferred" else []
    return ConvertResult(path, writer.count, conv.bad, stats, reader.lines, warnings)
