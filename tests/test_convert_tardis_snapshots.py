"""tardis.dev book_snapshot_N and quotes CSVs: a book built from snapshots.

Each test writes small files in the documented layout (header names, level columns interleaved
ask/bid per level, empty fields for a level the book did not have), converts them, and checks
the ground truth: after the events of row k, the replayed book is exactly row k's levels.
"""

from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np
import pytest

from mm_sim.core.reference_book import ReferenceBook
from mm_sim.errors import UserError
from mm_sim.events import ASK, BID, KIND_CLEAR, KIND_SNAPSHOT, KIND_TRADE, open_feed
from mm_sim.feeds.convert.base import ConvertOptions
from mm_sim.feeds.convert.tardis import TRADE_COLUMNS, convert

T0 = 1_640_995_200_000_000  # µs
HEAD = "exchange,symbol,timestamp,local_timestamp"


def snap_header(n: int) -> str:
    cols = [HEAD]
    for i in range(n):
        cols.append(f"asks[{i}].price,asks[{i}].amount,bids[{i}].price,bids[{i}].amount")
    return ",".join(cols)


Level = tuple[str, str]  # (price text, amount text); ("", "") = no level
# (µs after T0, asks best first, bids best first), 2 levels a side
ROWS: list[tuple[int, list[Level], list[Level]]] = [
    (10, [("101.5", "2"), ("102.0", "1")], [("101.0", "3"), ("100.5", "4")]),
    (20, [("101.5", "1.5"), ("102.0", "1")], [("101.0", "3"), ("100.5", "4")]),  # qty change
    (30, [("102.0", "1"), ("102.5", "7")], [("101.0", "3"), ("100.5", "4")]),  # ask lifted
    (40, [("102.0", "1"), ("", "")], [("101.5", "0.25"), ("101.0", "3")]),  # one ask left
    (50, [("", ""), ("", "")], [("101.5", "0.25"), ("101.0", "3")]),  # no asks at all
]


def snap_row(us: int, asks: list[Level], bids: list[Level], sym: str = "BTCUSDT") -> str:
    cells = ["binance", sym, str(T0 + us - 300), str(T0 + us)]
    for a, b in zip(asks, bids, strict=True):
        cells += [a[0], a[1], b[0], b[1]]
    return ",".join(cells)


def write(path: Path, lines: list[str], gz: bool = False) -> Path:
    text = "".join(line + "\n" for line in lines)
    if gz:
        with gzip.open(path, "wt") as fh:
            fh.write(text)
    else:
        path.write_text(text)
    return path


def levels_of(side: list[Level]) -> list[tuple[float, float]]:
    return [(float(p), float(a)) for p, a in side if p]


def assert_rows_replayed(events: np.ndarray, rows: list[tuple[int, list[Level], list[Level]]]):
    """Apply the events row by row (grouped by local_ts): the book must equal each row."""
    ref = ReferenceBook(1e-9)
    locals_ = events["local_ts"]
    for us, asks, bids in rows:
        part = events[locals_ == (T0 + us) * 1000]
        part = part[part["kind"] != KIND_TRADE]
        assert len(part), f"no events for the row at +{us} µs"
        ref.apply_events(part)
        got_b = [(round(p, 9), q) for p, q in ref.top_levels(BID, 10)]
        got_a = [(round(p, 9), q) for p, q in ref.top_levels(ASK, 10)]
        assert got_b == levels_of(bids), us
        assert got_a == levels_of(asks), us


def test_book_snapshot_rows_become_a_snapshot_then_exact_diffs(tmp_path: Path) -> None:
    src = write(tmp_path / "s.csv.gz", [snap_header(2), *(snap_row(*r) for r in ROWS)], gz=True)
    res = convert([src], tmp_path / "o.npy", ConvertOptions())
    ev = open_feed(res.out).events
    first = ev[ev["local_ts"] == (T0 + 10) * 1000]
    assert first["kind"][0] == KIND_CLEAR
    assert list(first["kind"][1:]) == [KIND_SNAPSHOT] * 4
    assert [
        (int(s), float(p)) for s, p in zip(first["side"][1:], first["price"][1:], strict=True)
    ] == [
        (BID, 101.0),
        (BID, 100.5),
        (ASK, 101.5),
        (ASK, 102.0),
    ]
    # The second row changes one quantity: one depth event, nothing else.
    second = ev[ev["local_ts"] == (T0 + 20) * 1000]
    assert [
        (int(k), int(s), float(p), float(q))
        for k, s, p, q in second[["kind", "side", "price", "qty"]]
    ] == [(3, ASK, 101.5, 1.5)]
    assert int(second["exch_ts"][0]) == (T0 + 20 - 300) * 1000
    assert_rows_replayed(ev, ROWS)
    assert res.stats["book_source"] == "book_snapshot_2" and res.stats["book_levels"] == 2
    assert res.stats["events_by_kind"]["clear"] == 1
    assert res.lines == len(ROWS)


def test_quotes_give_a_one_level_book_and_merge_with_trades(tmp_path: Path) -> None:
    q = write(
        tmp_path / "q.csv",
        [
            f"{HEAD},ask_amount,ask_price,bid_price,bid_amount",
            f"deribit,BTC-PERPETUAL,{T0},{T0 + 5},10,46000.5,46000.0,20",
            f"deribit,BTC-PERPETUAL,{T0 + 10},{T0 + 15},10,46001.0,46000.5,3",
            f"deribit,BTC-PERPETUAL,{T0 + 20},{T0 + 25},,,46000.5,3",
        ],
    )
    t = write(
        tmp_path / "t.csv",
        [
            ",".join(TRADE_COLUMNS),
            f"deribit,BTC-PERPETUAL,{T0 + 9},{T0 + 15},1,buy,46000.5,10",  # lifts the ask
            f"deribit,BTC-PERPETUAL,{T0 + 22},{T0 + 26},2,unknown,46000.5,1",
        ],
    )
    res = convert([t, q], tmp_path / "o.npy", ConvertOptions(tick_size=0.5))
    ev = open_feed(res.out).events
    kinds = list(ev["kind"])
    # The trade at the same receive time as the quote comes first.
    at15 = ev[ev["local_ts"] == (T0 + 15) * 1000]
    assert int(at15["kind"][0]) == KIND_TRADE and int(at15["side"][0]) == BID
    assert kinds.count(KIND_TRADE) == 2
    # The unknown-side trade at the best bid (no asks then) was a seller.
    last = ev[ev["kind"] == KIND_TRADE][-1]
    assert int(last["side"]) == ASK
    quote_rows = [
        (5, [("46000.5", "10")], [("46000.0", "20")]),
        (15, [("46001.0", "10")], [("46000.5", "3")]),
        (25, [("", "")], [("46000.5", "3")]),
    ]
    assert_rows_replayed(ev, quote_rows)
    assert res.stats["book_source"] == "quotes" and res.stats["book_levels"] == 1
    assert open_feed(res.out).instrument.tick_size == 0.5
    assert not res.warnings


def test_bad_rows_are_skipped_and_the_book_stays_exact(tmp_path: Path) -> None:
    rows = [snap_row(*r) for r in ROWS]
    rows.insert(2, snap_row(25, [("x", "1"), ("102.0", "1")], ROWS[1][2]))
    rows.insert(3, snap_row(26, [("101.5", "-1"), ("102.0", "1")], ROWS[1][2]))
    src = write(tmp_path / "s.csv", [snap_header(2), *rows])
    res = convert([src], tmp_path / "o.npy", ConvertOptions())
    assert res.bad_lines.total == 2
    assert set(res.bad_lines.counts) == {
        "price: expected a positive number",
        "amount: expected a number >= 0",
    }
    assert_rows_replayed(open_feed(res.out).events, ROWS)
    with pytest.raises(Exception, match=r"s\.csv:4: price: expected a positive number, got 'x'"):
        convert([src], tmp_path / "x.npy", ConvertOptions(strict=True))


def test_each_file_restarts_from_a_snapshot_and_depths_cannot_mix(tmp_path: Path) -> None:
    a = write(tmp_path / "a.csv", [snap_header(2), *(snap_row(*r) for r in ROWS[:2])])
    b = write(tmp_path / "b.csv", [snap_header(2), *(snap_row(*r) for r in ROWS[2:])])
    ev = open_feed(convert([a, b], tmp_path / "o.npy", ConvertOptions()).out).events
    assert int(np.sum(ev["kind"] == KIND_CLEAR)) == 2
    assert_rows_replayed(ev, ROWS)
    with pytest.raises(UserError, match="pass the files of each kind in time order"):
        convert([b, a], tmp_path / "x.npy", ConvertOptions())
    five = write(tmp_path / "c.csv", [snap_header(5)])
    with pytest.raises(UserError, match=r"different depths.*book_snapshot_5"):
        convert([a, five], tmp_path / "x.npy", ConvertOptions())
    inc = write(
        tmp_path / "i.csv",
        [f"{HEAD},is_snapshot,side,price,amount", f"binance,BTCUSDT,{T0},{T0},true,bid,1,1"],
    )
    with pytest.raises(UserError, match=r"book snapshots together with incremental_book_L2"):
        convert([a, inc], tmp_path / "x.npy", ConvertOptions())
