"""tardis.dev CSV datasets (``incremental_book_L2`` + ``trades``) -> native feed.

Each input is classified by its header line, so book and trade files can be given in any mix;
files of one kind are chained in the order given (a daily series). The two streams are merged
on ``local_timestamp`` (the recorder's receive time, the only clock both share), trades first
when the times are equal, so a trade precedes the depth change it caused: a queue model that
sees the trade first never counts the same volume twice.

Book rows map to events one to one: a run of ``is_snapshot=true`` rows that follows updates (or
starts a file) is a fresh snapshot, so it is preceded by ``KIND_CLEAR`` and its rows become
``KIND_SNAPSHOT``; other rows are ``KIND_DEPTH`` (``amount`` is absolute, 0 removes the level).
Trades carry the aggressor side; ``unknown`` sides are inferred from the book at that moment
(at or above the best ask: buyer; at or below the best bid: seller) and dropped (counted) when
the price is inside the spread or the book is empty.

The ``book_snapshot_N`` and ``quotes`` datasets stand in for the incremental book: their rows
are diffed into depth events (:mod:`mm_sim.feeds.convert.tardis_snapshots`).

Timestamps are microseconds since the epoch (UTC) in the files, nanoseconds in the feed.
Everything streams: memory stays bounded whatever the size of the inputs.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mm_sim.core.reference_book import ReferenceBook, price_to_tick
from mm_sim.errors import FeedError, UserError
from mm_sim.events import (
    ASK,
    BID,
    KIND_CLEAR,
    KIND_DEPTH,
    KIND_NAMES,
    KIND_SNAPSHOT,
    KIND_TRADE,
    FeedWriter,
    Instrument,
)
from mm_sim.feeds.convert.base import (
    BadLines,
    ConvertOptions,
    ConvertResult,
    EventBuffer,
    inferred_tick_warning,
    looks_like_other_unit,
    open_text,
    time_problem,
)

BOOK_COLUMNS = (
    "exchange",
    "symbol",
    "timestamp",
    "local_timestamp",
    "is_snapshot",
    "side",
    "price",
    "amount",
)
TRADE_COLUMNS = (
    "exchange",
    "symbol",
    "timestamp",
    "local_timestamp",
    "id",
    "side",
    "price",
    "amount",
)
BOOK = "incremental_book_L2"
TRADES = "trades"

_BOOK_SIDES = {"bid": BID, "ask": ASK}
_TRADE_SIDES = {"buy": BID, "sell": ASK, "unknown": 0}
_FLAGS = {"true": True, "false": False}
# Unknown-side trades are placed against a book kept at a grid far finer than any real tick
# (the instrument's tick is only known at the end when it is inferred from the data).
_REF_TICK = 1e-9


def text_decimals(text: str) -> int:
    """Significant decimals of a decimal string ('0.0100' -> 2, '5' -> 0, '1e-05' -> 5)."""
    if "e" in text or "E" in text:
        mant, _, exp = text.lower().partition("e")
        return max(0, text_decimals(mant) - int(exp))
    i = text.find(".")
    if i < 0:
        return 0
    return len(text[i + 1 :].rstrip("0"))


@dataclass
class _Input:
    path: Path
    kind: str  # BOOK, TRADES, or a snapshot kind (tardis_snapshots: SNAPSHOT, QUOTES)
    index: dict[str, int]  # column name -> position
    ncols: int
    levels: list[tuple[int, int, int]] = field(default_factory=list)  # snapshot level columns


def classify(path: Path) -> _Input:
    """Tell a book file from a trades file by its header line; anything else is an error."""
    try:
        with open_text(path) as fh:
            header = fh.readline()
    except (OSError, EOFError, UnicodeDecodeError) as exc:
        raise FeedError(f"{path}: unreadable ({exc})") from exc
    cols = [c.strip() for c in header.rstrip("\r\n").split(",")]
    index = {c: i for i, c in enumerate(cols)}
    if set(BOOK_COLUMNS) <= index.keys():
        return _Input(path, BOOK, index, len(cols))
    if set(TRADE_COLUMNS) <= index.keys():
        return _Input(path, TRADES, index, len(cols))
    from mm_sim.feeds.convert.tardis_snapshots import snapshot_columns

    snap = snapshot_columns(index)
    if snap is not None:
        return _Input(path, snap[0], index, len(cols), snap[1])
    raise FeedError(
        f"{path}:1: not a tardis.dev {BOOK}, book_snapshot_N, quotes or {TRADES} CSV: header "
        f"{header.strip()[:120]!r}; expected the columns {','.join(BOOK_COLUMNS)}, "
        "exchange,symbol,timestamp,local_timestamp,asks[0].price,asks[0].amount,bids[0].price,"
        f"bids[0].amount,..., the quotes columns, or {','.join(TRADE_COLUMNS)}"
    )


class _Rows:
    """Shared parsing state: symbol choice, bad-line accounting and counters."""

    def __init__(self, opts: ConvertOptions, bad: BadLines) -> None:
        self.want = opts.symbol.upper() if opts.symbol else None
        self.symbol: str | None = self.want
        self.symbol_where = "--symbol"
        self.exchange: str | None = None
        self.bad = bad
        self.seen: Counter[str] = Counter()
        self.other_symbol_rows = 0
        self.price_decimals = 0
        self.amount_decimals = 0
        self.lines = 0  # data rows read, of every file

    def fail(self, where: str, reason: str, value: str) -> None:
        """A bad line: stop in strict mode (with the value), else count it under ``reason``."""
        if self.bad.strict:
            raise FeedError(f"{where}: {reason}, got {value!r}")
        self.bad.bad(where, reason)

    def keep_symbol(self, symbol: str, where: str) -> bool:
        sym = symbol.upper()
        self.seen[sym] += 1
        if self.symbol is None:
            self.symbol = sym
            self.symbol_where = where
            return True
        if sym == self.symbol:
            return True
        if self.want is None:
            raise UserError(
                f"{where}: several symbols in the input ({self.symbol} first seen at "
                f"{self.symbol_where}, {sym} here): choose one with --symbol"
            )
        self.other_symbol_rows += 1
        return False


def _lines(inp: _Input, rows: _Rows) -> Iterator[tuple[int, list[str]]]:
    """Data lines of one file as (line number, fields); the header is skipped."""
    try:
        with open_text(inp.path, track=True) as fh:
            fh.readline()
            lineno = 1
            for line in fh:
                lineno += 1
                if line.strip():
                    rows.lines += 1
                    yield lineno, line.rstrip("\r\n").split(",")
    except (OSError, EOFError, UnicodeDecodeError) as exc:
        raise FeedError(f"{inp.path}: unreadable after line {lineno} ({exc})") from exc


def row_times(
    fields: list[str], ix: dict[str, int], where: str, rows: _Rows, first: bool = False
) -> tuple[int, int] | None:
    """(local_ns, exch_ns) of a row (validated), or None after reporting it bad. ``first``: the
    file's first data row, whose times, when they fit another unit, refuse the whole file."""
    try:
        local_us = int(fields[ix["local_timestamp"]])
    except ValueError:
        rows.fail(
            where, "local_timestamp: expected integer microseconds", fields[ix["local_timestamp"]]
        )
        return None
    ts_text = fields[ix["timestamp"]]
    try:
        exch_us = int(ts_text) if ts_text else local_us  # tardis: local time is the fallback
    except ValueError:
        rows.fail(where, "timestamp: expected integer microseconds", ts_text)
        return None
    for name, value in (("local_timestamp", local_us), ("timestamp", exch_us)):
        problem = time_problem(value, 1000)
        if problem is None:
            continue
        if first and looks_like_other_unit(problem):
            # Every row of such a file is off the same way: one refusal that says so, not a
            # bad line per row (or, under the bad-line limit, a feed dated 1970).
            raise UserError(
                f"{where}: column {name}: {problem} (got {value}): convert the file to "
                "tardis.dev's unit, integer microseconds; nothing written"
            )
        rows.fail(where, f"{name}: {problem}", str(value))
        return None
    return local_us * 1000, exch_us * 1000


def _common(
    fields: list[str], inp: _Input, where: str, rows: _Rows, first: bool
) -> tuple[int, int, float, float] | None:
    """Timestamps, price and amount of a row (validated), or None after reporting it bad."""
    ix = inp.index
    times = row_times(fields, ix, where, rows, first)
    if times is None:
        return None
    ptext = fields[ix["price"]]
    try:
        price = float(ptext)
    except ValueError:
        price = math.nan
    if not (price > 0 and math.isfinite(price)):
        rows.fail(where, "price: expected a positive number", ptext)
        return None
    atext = fields[ix["amount"]]
    try:
        amount = float(atext)
    except ValueError:
        amount = math.nan
    if not (amount >= 0 and math.isfinite(amount)):
        rows.fail(where, "amount: expected a number >= 0", atext)
        return None
    d = text_decimals(ptext)
    if d > rows.price_decimals:
        rows.price_decimals = d
    d = text_decimals(atext)
    if d > rows.amount_decimals:
        rows.amount_decimals = d
    return times[0], times[1], price, amount


def _stream(
    inputs: list[_Input], rows: _Rows
) -> Iterator[tuple[int, int, int, int, float, float, str]]:
    """One kind's rows across its files: (local_ns, exch_ns, kind, side, price, qty, where).

    For book files ``kind`` is CLEAR/SNAPSHOT/DEPTH (a CLEAR row is yielded before the first row
    of each snapshot block); for trade files it is TRADE with side +1/-1/0 (0 = unknown).
    """
    prev_file: Path | None = None
    last_local = -1
    for inp in inputs:
        first_in_file = True
        read_row = False  # a data row of this file was read (good or bad)
        in_snapshot = False
        is_book = inp.kind == BOOK
        ix = inp.index
        i_sym, i_side, i_exch = ix["symbol"], ix["side"], ix["exchange"]
        i_snap = ix.get("is_snapshot", -1)
        for lineno, fields in _lines(inp, rows):
            where = f"{inp.path}:{lineno}"
            if len(fields) != inp.ncols:
                rows.fail(where, f"expected {inp.ncols} columns", str(len(fields)))
                continue
            if not rows.keep_symbol(fields[i_sym], where):
                continue
            parsed = _common(fields, inp, where, rows, not read_row)
            read_row = True
            if parsed is None:
                continue
            local_ns, exch_ns, price, amount = parsed
            if local_ns < last_local:
                if first_in_file:
                    raise UserError(
                        f"{where}: this {inp.kind} file starts before the end of {prev_file}: "
                        "pass the files of each kind in time order"
                    )
                rows.fail(where, "local_timestamp goes backwards", str(local_ns // 1000))
                continue
            stext = fields[i_side]
            if is_book:
                side = _BOOK_SIDES.get(stext, 0)
                if side == 0:
                    rows.fail(where, "side: expected bid or ask", stext)
                    continue
                flag = _FLAGS.get(fields[i_snap])
                if flag is None:
                    rows.fail(where, "is_snapshot: expected true or false", fields[i_snap])
                    continue
                if flag and not in_snapshot:
                    yield local_ns, exch_ns, KIND_CLEAR, 0, 0.0, 0.0, where
                in_snapshot = flag
                kind = KIND_SNAPSHOT if flag else KIND_DEPTH
            else:
                tside = _TRADE_SIDES.get(stext)
                if tside is None:
                    rows.fail(where, "side: expected buy, sell or unknown", stext)
                    continue
                if not amount > 0:
                    rows.fail(where, "amount: expected a trade size > 0", fields[ix["amount"]])
                    continue
                side = tside
                kind = KIND_TRADE
            if rows.exchange is None:
                rows.exchange = fields[i_exch]
            first_in_file = False
            last_local = local_ns
            yield local_ns, exch_ns, kind, side, price, amount, where
        prev_file = inp.path


def _instrument(opts: ConvertOptions, rows: _Rows) -> tuple[Instrument, dict[str, str]]:
    symbol = rows.symbol or (opts.symbol or "").upper()
    venue = rows.exchange or "tardis"
    tick = lot = None
    how = {"tick_size": "inferred from price decimals", "lot_size": "inferred from amount decimals"}
    if opts.exchange_info is not None:
        # A Binance exchangeInfo (plain JSON or a cryptofeed capture): tardis serves Binance
        # data too, and its CSVs carry no tick size.
        from mm_sim.feeds.convert.binance import load_exchange_info

        info = load_exchange_info(Path(opts.exchange_info))
        if symbol not in info:
            raise UserError(f"{opts.exchange_info}: no tick/lot sizes for symbol {symbol}")
        tick, lot = info[symbol].tick_size, info[symbol].lot_size
        how = {"tick_size": "exchange_info", "lot_size": "exchange_info"}
    if opts.tick_size is not None:
        tick, how["tick_size"] = opts.tick_size, "option"
    if opts.lot_size is not None:
        lot, how["lot_size"] = opts.lot_size, "option"
    if tick is None:
        tick = 10.0**-rows.price_decimals
    if lot is None:
        lot = 10.0**-rows.amount_decimals
    return Instrument(symbol, venue, tick, lot, price_decimals=rows.price_decimals), how


def convert(inputs: list[Path], out: Path, opts: ConvertOptions) -> ConvertResult:
    """Convert tardis.dev book and trade CSV files (gzip or plain) into one native feed."""
    from mm_sim.feeds.convert.tardis_snapshots import check_inputs, snapshot_stream

    classified = [classify(Path(p)) for p in inputs]
    books = [c for c in classified if c.kind == BOOK]
    trades = [c for c in classified if c.kind == TRADES]
    snaps = [c for c in classified if c.kind not in (BOOK, TRADES)]
    if not books and not snaps:
        raise UserError(
            f"no {BOOK}, book_snapshot_N or quotes file among the inputs "
            f"({', '.join(str(p) for p in inputs)}): the book is needed; trades alone cannot "
            "be replayed"
        )
    if books and snaps:
        raise UserError(
            f"{snaps[0].path}: book snapshots together with {BOOK} ({books[0].path}): give one "
            "kind of book (the incremental one is exact, the snapshots only the top levels)"
        )
    book_source = check_inputs(snaps) if snaps else BOOK
    bad = BadLines(strict=opts.strict)
    rows = _Rows(opts, bad)
    ref = ReferenceBook(_REF_TICK)  # only to place unknown-side trades against the touch
    kinds: Counter[str] = Counter()
    trade_sides: Counter[str] = Counter()
    placeholder = Instrument(opts.symbol or "?", "tardis", 1.0, 1.0)
    writer = FeedWriter(out, placeholder)
    try:
        buf = EventBuffer(writer)
        book_it = snapshot_stream(snaps, rows) if snaps else _stream(books, rows)
        trade_it = _stream(trades, rows)
        b = next(book_it, None)
        t = next(trade_it, None)
        while b is not None or t is not None:
            if t is not None and (b is None or t[0] <= b[0]):
                local_ns, exch_ns, kind, side, price, qty, _ = t
                t = next(trade_it, None)
                if side == 0:
                    tick = price_to_tick(price, _REF_TICK)
                    ba, bb = ref.best_ask_tick, ref.best_bid_tick
                    if ba is not None and tick >= ba:
                        side = BID
                    elif bb is not None and tick <= bb:
                        side = ASK
                    else:
                        trade_sides["unknown_dropped"] += 1
                        continue
                    trade_sides["unknown_inferred"] += 1
                else:
                    trade_sides["buy" if side == BID else "sell"] += 1
            else:
                assert b is not None
                local_ns, exch_ns, kind, side, price, qty, _ = b
                b = next(book_it, None)
                ref.apply(kind, side, price, qty)
            buf.add(exch_ns, local_ns, kind, side, price, qty)
            kinds[KIND_NAMES[kind]] += 1
        buf.flush()
        if writer.count == 0:
            raise UserError(
                f"no events for symbol {rows.symbol or opts.symbol} in the inputs "
                f"(symbols seen: {', '.join(sorted(rows.seen)) or 'none'})"
            )
        instrument, how = _instrument(opts, rows)
        writer.instrument = instrument
        stats: dict[str, Any] = {
            "events_by_kind": dict(kinds),
            "snapshots": kinds.get(KIND_NAMES[KIND_CLEAR], 0),
            "trades_by_side": dict(trade_sides),
            "symbols_seen": dict(rows.seen.most_common(20)),
            "rows_other_symbols": rows.other_symbol_rows,
            "gaps": 0,  # tardis CSV rows carry no exchange sequence numbers to check
            "book_source": book_source,
            **how,
        }
        if snaps:  # a book built from snapshots: only this many levels a side are known
            stats["book_levels"] = len(snaps[0].levels) // 2
        source = {
            "format": "tardis",
            "exchange": rows.exchange,
            "symbol": instrument.symbol,
            "book_files": [str(c.path) for c in books or snaps],
            "trade_files": [str(c.path) for c in trades],
            "bad_lines": bad.to_json(),
        }
        path = writer.close(source=source, stats=stats)
    except BaseException:
        writer.abort()
        raise
    warnings = []
    if how["tick_size"].startswith("inferred"):
        warnings.append(inferred_tick_warning(instrument.tick_size))
    return ConvertResult(
        out=path,
        events=writer.count,
        bad_lines=bad,
        stats=stats,
        lines=rows.lines,
        warnings=warnings,
    )
