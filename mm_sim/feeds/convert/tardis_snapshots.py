"""tardis.dev ``book_snapshot_N`` and ``quotes`` CSVs: a book built from snapshots.

These datasets give, per row, the top N levels of each side as the recorder's book held them
after an exchange message (``quotes``: the top level only), not the changes themselves. An L2
feed is derived by diffing each row against the book emitted so far: levels that left the
visible top N are removed (qty 0) first, then changed or new levels are set, best first, so
after every row the replayed book is exactly that row's levels. What lies beyond N is unknown
and never appears: a level leaving the top N may still rest deeper, and queue positions behind
it are only as good as N allows (docs/FEEDS.md says so).

Columns (documented by tardis.dev, located by name): ``exchange,symbol,timestamp,
local_timestamp`` then, per level i from 0, ``asks[i].price,asks[i].amount,bids[i].price,
bids[i].amount``; ``quotes`` has ``ask_amount,ask_price,bid_price,bid_amount``. A level the book
did not have is an empty pair of fields.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from pathlib import Path

from mm_sim.errors import UserError
from mm_sim.events import ASK, BID, KIND_CLEAR, KIND_DEPTH, KIND_SNAPSHOT
from mm_sim.feeds.convert.tardis import _Input, _lines, _Rows, row_times, text_decimals

SNAPSHOT = "book_snapshot"
QUOTES = "quotes"
HEAD = ("exchange", "symbol", "timestamp", "local_timestamp")
QUOTE_COLUMNS = (*HEAD, "ask_amount", "ask_price", "bid_price", "bid_amount")

LevelCols = list[tuple[int, int, int]]  # (side, price column, amount column), best first


def snapshot_columns(index: dict[str, int]) -> tuple[str, LevelCols] | None:
    """(kind, level columns) when a header is a book_snapshot_N or quotes header, else None."""
    if not set(HEAD) <= index.keys():
        return None
    if set(QUOTE_COLUMNS) <= index.keys():
        return QUOTES, [
            (ASK, index["ask_price"], index["ask_amount"]),
            (BID, index["bid_price"], index["bid_amount"]),
        ]
    cols: LevelCols = []
    i = 0
    while f"asks[{i}].price" in index or f"bids[{i}].price" in index:
        for side, name in ((ASK, "asks"), (BID, "bids")):
            p, a = f"{name}[{i}].price", f"{name}[{i}].amount"
            if p not in index or a not in index:
                return None
            cols.append((side, index[p], index[a]))
        i += 1
    return (SNAPSHOT, cols) if cols else None


def dataset_name(inp: _Input) -> str:
    """The tardis dataset name of a snapshot input (``book_snapshot_25``, ``quotes``)."""
    return QUOTES if inp.kind == QUOTES else f"{SNAPSHOT}_{len(inp.levels) // 2}"


def check_inputs(snaps: list[_Input]) -> str:
    """One dataset for the whole feed: mixing depths would make levels come and go at each
    file boundary for no market reason."""
    names = {dataset_name(i) for i in snaps}
    if len(names) > 1:
        listed = ", ".join(f"{i.path} ({dataset_name(i)})" for i in snaps)
        raise UserError(f"book snapshots of different depths in one feed: {listed}; use one")
    return names.pop()


Book = dict[int, dict[float, float]]  # side -> price -> amount


def _row_book(fields: list[str], inp: _Input, where: str, rows: _Rows) -> Book | None:
    book: Book = {BID: {}, ASK: {}}
    for side, pc, ac in inp.levels:
        ptext, atext = fields[pc], fields[ac]
        if not ptext and not atext:
            continue  # the book had no level here
        try:
            price, amount = float(ptext), float(atext)
        except ValueError:
            price = amount = math.nan
        if not (price > 0 and math.isfinite(price)):
            rows.fail(where, "price: expected a positive number", ptext)
            return None
        if not (amount >= 0 and math.isfinite(amount)):
            rows.fail(where, "amount: expected a number >= 0", atext)
            return None
        if amount == 0:
            continue
        book[side][price] = amount
        rows.price_decimals = max(rows.price_decimals, text_decimals(ptext))
        rows.amount_decimals = max(rows.amount_decimals, text_decimals(atext))
    return book


def _best_first(levels: dict[float, float], side: int) -> list[float]:
    return sorted(levels, reverse=side == BID)


def snapshot_stream(
    inputs: list[_Input], rows: _Rows
) -> Iterator[tuple[int, int, int, int, float, float, str]]:
    """Rows of snapshot files as events: (local_ns, exch_ns, kind, side, price, qty, where).

    Each file starts with a fresh snapshot (CLEAR, then SNAPSHOT levels best first); each later
    row gives the depth changes that turn the previous row's book into its own."""
    last_local = -1
    prev_file: Path | None = None
    for inp in inputs:
        cur: Book = {BID: {}, ASK: {}}
        first_in_file = True
        read_row = False  # a data row of this file was read (good or bad)
        for lineno, fields in _lines(inp, rows):
            where = f"{inp.path}:{lineno}"
            if len(fields) != inp.ncols:
                rows.fail(where, f"expected {inp.ncols} columns", str(len(fields)))
                continue
            if not rows.keep_symbol(fields[inp.index["symbol"]], where):
                continue
            times = row_times(fields, inp.index, where, rows, not read_row)
            read_row = True
            if times is None:
                continue
            book = _row_book(fields, inp, where, rows)
            if book is None:
                continue
            local_ns, exch_ns = times
            if local_ns < last_local:
                if first_in_file:
                    raise UserError(
                        f"{where}: this file starts before the end of {prev_file}: "
                        "pass the files of each kind in time order"
                    )
                rows.fail(where, "local_timestamp goes backwards", str(local_ns // 1000))
                continue
            if rows.exchange is None:
                rows.exchange = fields[inp.index["exchange"]]
            if first_in_file:
                yield local_ns, exch_ns, KIND_CLEAR, 0, 0.0, 0.0, where
                for side in (BID, ASK):
                    for p in _best_first(book[side], side):
                        yield local_ns, exch_ns, KIND_SNAPSHOT, side, p, book[side][p], where
            else:
                for side in (BID, ASK):
                    old, new = cur[side], book[side]
                    for p in _best_first(old, side):
                        if p not in new:
                            yield local_ns, exch_ns, KIND_DEPTH, side, p, 0.0, where
                for side in (BID, ASK):
                    old, new = cur[side], book[side]
                    for p in _best_first(new, side):
                        if old.get(p) != new[p]:
                            yield local_ns, exch_ns, KIND_DEPTH, side, p, new[p], where
            cur = book
            first_in_file = False
            last_local = local_ns
        prev_file = inp.path
