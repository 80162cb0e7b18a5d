"""Binance's public historical CSVs: T_DEPTH snapshot + update files, trades and aggTrades.

Small files written in the documented layouts (binance-public-data README and its futures
order-book download README); the ground truth is a book kept by hand from the same rows.
"""

from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np
import pytest

from mm_sim.core.reference_book import ReferenceBook
from mm_sim.errors import FeedError, UserError
from mm_sim.events import ASK, BID, KIND_CLEAR, KIND_DEPTH, KIND_SNAPSHOT, KIND_TRADE, open_feed
from mm_sim.feeds.convert.base import ConvertOptions
from mm_sim.feeds.convert.binance_csv import convert

HEAD = "symbol,timestamp,first_update_id,last_update_id,side,update_type,price,qty"
T = 1_593_648_000_000  # ms


def write(path: Path, lines: list[str], gz: bool = False) -> Path:
    text = "".join(line + "\n" for line in lines)
    path.write_bytes(gzip.compress(text.encode()) if gz else text.encode())
    return path


def snap_file(folder: Path, pu: bool = False) -> Path:
    head = HEAD + (",pu" if pu else "")
    tail = ",-1" if pu else ""
    rows = [
        f"BTCUSDT,{T},100,100,b,snap,9200.00,1.5{tail}",
        f"BTCUSDT,{T},100,100,b,snap,9199.50,2{tail}",
        f"BTCUSDT,{T},100,100,a,snap,9200.50,1{tail}",
        f"BTCUSDT,{T},100,100,a,snap,9201.00,4{tail}",
    ]
    return write(folder / "BTCUSDT_T_DEPTH_2020-07-02_depth_snap.csv", [head, *rows])


def update_file(folder: Path, pu: bool = False, extra: list[str] | None = None) -> Path:
    head = HEAD + (",pu" if pu else "")

    def row(ms: int, first: int, last: int, side: str, kind: str, p: str, q: str, prev: int) -> str:
        return f"BTCUSDT,{T + ms},{first},{last},{side},{kind},{p},{q}" + (f",{prev}" if pu else "")

    rows = [
        row(-5, 90, 95, "b", "set", "9100.00", "7", 89),  # already in the snapshot: dropped
        row(10, 98, 104, "b", "set", "9200.00", "0", 95),  # straddles the snapshot's id
        row(10, 98, 104, "b", "set", "9199.80", "3", 95),
        row(20, 105, 107, "a", "set", "9200.50", "0.25", 104),
        row(30, 108, 110, "a", "delta", "9201.00", "-1.5", 107),  # 4 - 1.5 = 2.5
        row(30, 108, 110, "b", "delta", "9199.50", "0.5", 107),  # 2 + 0.5 = 2.5
        *(extra or []),
    ]
    return write(folder / "BTCUSDT_T_DEPTH_2020-07-02_depth_update.csv", [head, *rows])


def book_after(events: np.ndarray) -> tuple[list, list]:
    ref = ReferenceBook(0.01)
    ref.apply_events(events[events["kind"] != KIND_TRADE])
    return tuple([(round(p, 6), q) for p, q in ref.top_levels(side, 10)] for side in (BID, ASK))


def test_snapshot_then_updates_give_the_book_the_rows_describe(tmp_path: Path) -> None:
    res = convert(
        [update_file(tmp_path), snap_file(tmp_path)], tmp_path / "o.npy", ConvertOptions()
    )
    ev = open_feed(res.out).events
    assert ev["kind"][0] == KIND_CLEAR and list(ev["kind"][1:5]) == [KIND_SNAPSHOT] * 4
    assert int(ev["exch_ts"][0]) == T * 1_000_000 and np.all(ev["local_ts"] == ev["exch_ts"])
    bids, asks = book_after(ev)
    assert bids == [(9199.8, 3.0), (9199.5, 2.5)]
    assert asks == [(9200.5, 0.25), (9201.0, 2.5)]
    assert int(np.sum(ev["kind"] == KIND_DEPTH)) == 5
    st = res.stats
    assert st["rebases"] == 1 and st["gaps"] == 0 and st["dropped_stale"] == 1
    assert st["messages"] == {"depthUpdate": 4, "snapshot": 1}
    assert st["continuity"].startswith("not checkable")
    assert res.lines == 10 and res.warnings  # the tick was inferred


def test_pu_column_detects_a_gap_and_the_book_is_cleared(tmp_path: Path) -> None:
    gap = f"BTCUSDT,{T + 40},120,125,b,set,9199.90,1,115"  # pu 115 != 110: a gap
    res = convert(
        [snap_file(tmp_path, pu=True), update_file(tmp_path, pu=True, extra=[gap])],
        tmp_path / "o.npy",
        ConvertOptions(tick_size=0.1, lot_size=0.001),
    )
    assert res.stats["gaps"] == 1 and res.stats["continuity"] == "pu checked"
    ev = open_feed(res.out).events
    assert ev["kind"][-1] == KIND_CLEAR  # no book after the gap rather than a stale one


def test_trades_and_aggtrades_spot_and_futures_layouts(tmp_path: Path) -> None:
    snap, upd = snap_file(tmp_path), update_file(tmp_path)
    spot = write(
        tmp_path / "BTCUSDT-trades-2020-07-02.csv",
        [
            f"1,9200.50,0.010,92.005,{T + 10},False,True",  # buyer took the ask
            f"2,9200.00,0.020,184.0,{(T + 20) * 1000 + 7},True,True",  # µs time, seller
        ],
        gz=True,
    )
    agg = write(
        tmp_path / "BTCUSDT-aggTrades-2020-07-02.csv",
        ["agg_trade_id,price,quantity,first_trade_id,last_trade_id,transact_time,is_buyer_maker",
         f"5,9200.50,0.5,1,1,{T + 10},false"],
    )  # fmt: skip
    res = convert([snap, upd, spot, agg], tmp_path / "o.npy", ConvertOptions())
    ev = open_feed(res.out).events
    tr = ev[ev["kind"] == KIND_TRADE]
    assert [(int(s), float(p), float(q)) for s, p, q in tr[["side", "price", "qty"]]] == [
        (BID, 9200.5, 0.01),
        (ASK, 9200.0, 0.02),
    ]
    assert int(tr["exch_ts"][1]) == ((T + 20) * 1000 + 7) * 1000
    # A trade at the same ms as a depth change comes first.
    at10 = ev[ev["exch_ts"] == (T + 10) * 1_000_000]
    assert int(at10["kind"][0]) == KIND_TRADE
    assert res.stats["aggtrade_files_skipped"] == [str(agg)]
    res = convert([snap, upd, agg], tmp_path / "a.npy", ConvertOptions())
    assert res.stats["messages"]["aggTrade"] == 1


def test_bad_rows_and_wrong_inputs(tmp_path: Path) -> None:
    bad = [f"BTCUSDT,{T + 50},111,112,x,set,9199.00,1", f"BTCUSDT,{T + 50},113,114,b,set,-1,1"]
    upd = update_file(tmp_path, extra=bad)
    res = convert([snap_file(tmp_path), upd], tmp_path / "o.npy", ConvertOptions())
    assert res.bad_lines.total == 2
    with pytest.raises(FeedError, match=r"depth_update\.csv:8: side: expected a or b"):
        convert([snap_file(tmp_path), upd], tmp_path / "x.npy", ConvertOptions(strict=True))
    with pytest.raises(UserError, match="no depth snapshot file"):
        convert([upd], tmp_path / "x.npy", ConvertOptions())
    eth = write(tmp_path / "ETHUSDT-trades-2020-07-02.csv", [f"1,200.5,1,200.5,{T},False,True"])
    with pytest.raises(UserError, match="ETHUSDT trades file, but the symbol is BTCUSDT"):
        convert(
            [snap_file(tmp_path), upd, eth], tmp_path / "x.npy", ConvertOptions(symbol="btcusdt")
        )
    other = write(tmp_path / "x.csv", ["a,b,c", "1,2,3"])
    with pytest.raises(FeedError, match=r"x\.csv:1: not a Binance public CSV"):
        convert([other], tmp_path / "x.npy", ConvertOptions())
