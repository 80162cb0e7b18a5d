"""tardis.dev CSV converter on small files written in the exact published formats.

No real tardis.dev data is available here, so each test writes ``incremental_book_L2`` and
``trades`` files (gzip and plain) with the documented header and columns, converts them, and
checks the events one by one, then replays the feed through the numba book kernel.
"""

from __future__ import annotations

import gzip
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from mm_sim.core.book import book_apply_events, make_book, top_levels
from mm_sim.core.reference_book import ReferenceBook
from mm_sim.errors import FeedError, UserError
from mm_sim.events import (
    ASK,
    BID,
    KIND_CLEAR,
    KIND_DEPTH,
    KIND_SNAPSHOT,
    KIND_TRADE,
    open_feed,
)
from mm_sim.feeds.convert.base import ConvertOptions
from mm_sim.feeds.convert.tardis import BOOK_COLUMNS, TRADE_COLUMNS, convert

REPO = Path(__file__).resolve().parent.parent
BOOK_HEADER = ",".join(BOOK_COLUMNS)
TRADE_HEADER = ",".join(TRADE_COLUMNS)
T0 = 1_700_000_000_000_000  # µs since epoch


def write(path: Path, header: str, rows: list[str], gz: bool = False) -> Path:
    text = header + "\n" + "".join(r + "\n" for r in rows)
    if gz:
        with gzip.open(path, "wt", encoding="utf-8") as fh:
            fh.write(text)
    else:
        path.write_text(text)
    return path


def book_row(us: int, snap: bool, side: str, price: str, amount: str, sym: str = "BTCUSDT") -> str:
    # exchange time 700 µs before receipt, as a recorder would see it
    flag = "true" if snap else "false"
    return f"binance,{sym},{T0 + us - 700},{T0 + us},{flag},{side},{price},{amount}"


def trade_row(us: int, tid: int, side: str, price: str, amount: str, sym: str = "BTCUSDT") -> str:
    return f"binance,{sym},{T0 + us - 500},{T0 + us},{tid},{side},{price},{amount}"


BOOK_ROWS = [
    book_row(1000, True, "ask", "100.50", "2"),
    book_row(1000, True, "ask", "100.6", "1"),
    book_row(1000, True, "bid", "100.4", "3"),
    book_row(1000, True, "bid", "100.3", "4"),
    book_row(101_000, False, "bid", "100.4", "0"),  # best bid removed
    book_row(101_000, False, "ask", "100.5", "1.5"),
    book_row(201_000, False, "bid", "100.45", "2"),
    # connection restart: a fresh snapshot block re-bases the book
    book_row(301_000, True, "bid", "101.0", "1"),
    book_row(301_000, True, "ask", "101.1", "1.25"),
    book_row(301_000, True, "ask", "101.2", "7"),
    book_row(401_000, False, "ask", "101.1", "0.75"),
    book_row(401_000, False, "bid", "100.9", "5"),
]
TRADE_ROWS = [
    trade_row(51_000, 1, "buy", "100.5", "0.5"),
    trade_row(101_000, 2, "sell", "100.3", "1"),  # same local time as a book row: trade first
    trade_row(251_000, 3, "unknown", "100.5", "0.1"),  # at the ask: a buyer
    trade_row(252_000, 4, "unknown", "100.47", "0.2"),  # inside the spread: dropped
    trade_row(253_000, 5, "unknown", "100.45", "0.3"),  # at the bid: a seller
    trade_row(451_000, 6, "sell", "100.9", "2"),
]


def ns(us: int) -> int:
    return (T0 + us) * 1000


EXPECTED = [
    # (local_us, exch_us, kind, side, price, qty)
    (1000, 300, KIND_CLEAR, 0, 0.0, 0.0),
    (1000, 300, KIND_SNAPSHOT, ASK, 100.5, 2.0),
    (1000, 300, KIND_SNAPSHOT, ASK, 100.6, 1.0),
    (1000, 300, KIND_SNAPSHOT, BID, 100.4, 3.0),
    (1000, 300, KIND_SNAPSHOT, BID, 100.3, 4.0),
    (51_000, 50_500, KIND_TRADE, BID, 100.5, 0.5),
    (101_000, 100_500, KIND_TRADE, ASK, 100.3, 1.0),
    (101_000, 100_300, KIND_DEPTH, BID, 100.4, 0.0),
    (101_000, 100_300, KIND_DEPTH, ASK, 100.5, 1.5),
    (201_000, 200_300, KIND_DEPTH, BID, 100.45, 2.0),
    (251_000, 250_500, KIND_TRADE, BID, 100.5, 0.1),
    (253_000, 252_500, KIND_TRADE, ASK, 100.45, 0.3),
    (301_000, 300_300, KIND_CLEAR, 0, 0.0, 0.0),
    (301_000, 300_300, KIND_SNAPSHOT, BID, 101.0, 1.0),
    (301_000, 300_300, KIND_SNAPSHOT, ASK, 101.1, 1.25),
    (301_000, 300_300, KIND_SNAPSHOT, ASK, 101.2, 7.0),
    (401_000, 400_300, KIND_DEPTH, ASK, 101.1, 0.75),
    (401_000, 400_300, KIND_DEPTH, BID, 100.9, 5.0),
    (451_000, 450_500, KIND_TRADE, ASK, 100.9, 2.0),
]


def as_tuples(events: np.ndarray) -> list[tuple]:
    return [
        (
            (int(e["local_ts"]) // 1000) - T0,
            (int(e["exch_ts"]) // 1000) - T0,
            int(e["kind"]),
            int(e["side"]),
            float(e["price"]),
            float(e["qty"]),
        )
        for e in events
    ]


def final_book(events: np.ndarray, tick: float) -> tuple[list, list]:
    book = make_book(tick)
    book_apply_events(book.bid, book.ask, book.st, tick, np.asarray(events))
    out = []
    for side in (BID, ASK):
        px, qty = np.zeros(10), np.zeros(10)
        k = top_levels(book.bid, book.ask, book.st, tick, side, 10, px, qty)
        out.append([(round(float(px[i]), 8), float(qty[i])) for i in range(k)])
    return out[0], out[1]


@pytest.fixture
def sample(tmp_path: Path) -> tuple[Path, Path]:
    book = write(
        tmp_path / "binance_incremental_book_L2_2023-11-14_BTCUSDT.csv.gz",
        BOOK_HEADER,
        BOOK_ROWS,
        gz=True,
    )
    trades = write(tmp_path / "binance_trades_2023-11-14_BTCUSDT.csv", TRADE_HEADER, TRADE_ROWS)
    return book, trades


def test_book_and_trades_merge_in_local_time_order(sample: tuple[Path, Path], tmp_path: Path):
    book, trades = sample
    # Order of the inputs does not matter: files are classified by their header.
    res = convert([trades, book], tmp_path / "out.npy", ConvertOptions())
    feed = open_feed(res.out)
    assert as_tuples(feed.events) == EXPECTED
    assert res.events == len(EXPECTED)
    assert res.bad_lines.total == 0
    assert res.stats["snapshots"] == 2
    assert res.stats["trades_by_side"] == {
        "buy": 1,
        "sell": 2,
        "unknown_inferred": 2,
        "unknown_dropped": 1,
    }
    assert res.stats["gaps"] == 0
    inst = feed.instrument
    assert (inst.symbol, inst.venue, inst.tick_size, inst.lot_size) == (
        "BTCUSDT",
        "binance",
        0.01,
        0.01,
    )
    assert feed.meta.source["format"] == "tardis"
    local = feed.events["local_ts"]
    assert np.all(np.diff(local) >= 0)


def test_replayed_book_matches_the_expected_final_book(sample, tmp_path: Path) -> None:
    res = convert(list(sample), tmp_path / "out.npy", ConvertOptions())
    events = open_feed(res.out).events
    bids, asks = final_book(events, 0.01)
    # After the re-basing snapshot only its levels and the later updates exist.
    assert bids == [(101.0, 1.0), (100.9, 5.0)]
    assert asks == [(101.1, 0.75), (101.2, 7.0)]
    ref = ReferenceBook(0.01)
    ref.apply_events(events)
    assert [(round(p, 8), q) for p, q in ref.top_levels(BID, 10)] == bids
    assert [(round(p, 8), q) for p, q in ref.top_levels(ASK, 10)] == asks


def test_plain_and_gzip_detected_by_content_not_name(tmp_path: Path) -> None:
    # A gzip file without .gz and a plain file named .gz both work.
    book = write(tmp_path / "book.csv", BOOK_HEADER, BOOK_ROWS, gz=True)
    trades = write(tmp_path / "trades.csv.gz", TRADE_HEADER, TRADE_ROWS, gz=False)
    res = convert([book, trades], tmp_path / "out.npy", ConvertOptions())
    assert as_tuples(open_feed(res.out).events) == EXPECTED


def test_chained_daily_files_each_start_with_a_snapshot(tmp_path: Path) -> None:
    day1 = write(tmp_path / "d1.csv.gz", BOOK_HEADER, BOOK_ROWS[:7], gz=True)
    day2_rows = [
        book_row(1_000_000, True, "bid", "100.40", "9"),
        book_row(1_000_000, True, "ask", "100.5", "8"),
        book_row(1_100_000, False, "ask", "100.5", "6"),
    ]
    day2 = write(tmp_path / "d2.csv", BOOK_HEADER, day2_rows)
    res = convert([day1, day2], tmp_path / "out.npy", ConvertOptions())
    ev = open_feed(res.out).events
    clears = np.flatnonzero(ev["kind"] == KIND_CLEAR)
    assert list(clears) == [0, 8]  # 1 clear + 7 rows of day 1, then day 2's snapshot
    assert res.stats["snapshots"] == 2
    bids, asks = final_book(ev, 0.01)
    assert bids == [(100.4, 9.0)] and asks == [(100.5, 6.0)]
    # Files of one kind given out of time order are refused, naming the file.
    with pytest.raises(UserError, match=r"d1\.csv\.gz:2: .*time order"):
        convert([day2, day1], tmp_path / "bad.npy", ConvertOptions())
    assert not (tmp_path / "bad.npy").exists()


def test_strict_mode_stops_at_the_first_bad_line_with_file_and_line(tmp_path: Path) -> None:
    rows = list(BOOK_ROWS)
    rows[5] = book_row(101_000, False, "ask", "abc", "1.5")
    book = write(tmp_path / "book.csv", BOOK_HEADER, rows)
    with pytest.raises(FeedError) as err:
        convert([book], tmp_path / "out.npy", ConvertOptions(strict=True))
    msg = str(err.value)
    assert f"{book}:7: price: expected a positive number, got 'abc'" == msg
    assert not (tmp_path / "out.npy").exists()


def test_lenient_mode_counts_bad_lines_by_reason(tmp_path: Path) -> None:
    rows = list(BOOK_ROWS)
    rows.insert(4, book_row(101_000, False, "middle", "100.4", "1"))  # line 6
    rows.insert(5, book_row(101_000, False, "bid", "100.4", "-2"))  # line 7
    rows.insert(6, "binance,BTCUSDT,1,2,3")  # line 8: short row
    rows.insert(7, book_row(1, False, "bid", "100.4", "1"))  # line 9: time goes backwards
    rows.insert(8, book_row(101_000, False, "bid", "100.4", "1").replace(",false,", ",maybe,"))
    book = write(tmp_path / "book.csv", BOOK_HEADER, rows)
    trades = [*TRADE_ROWS, trade_row(460_000, 7, "both", "100.9", "1")]
    trades.append(trade_row(470_000, 8, "buy", "100.9", "0"))
    tfile = write(tmp_path / "trades.csv", TRADE_HEADER, trades)
    res = convert([book, tfile], tmp_path / "out.npy", ConvertOptions())
    bad = res.bad_lines
    assert bad.total == 7
    assert bad.counts == {
        "side: expected bid or ask": 1,
        "amount: expected a number >= 0": 1,
        "expected 8 columns": 1,
        "local_timestamp goes backwards": 1,
        "is_snapshot: expected true or false": 1,
        "side: expected buy, sell or unknown": 1,
        "amount: expected a trade size > 0": 1,
    }
    assert bad.examples["side: expected bid or ask"] == [f"{book}:6"]
    assert bad.examples["expected 8 columns"] == [f"{book}:8"]
    assert bad.examples["side: expected buy, sell or unknown"] == [f"{tfile}:8"]
    # The good rows are all there, unchanged.
    assert as_tuples(open_feed(res.out).events) == EXPECTED
    assert open_feed(res.out).meta.source["bad_lines"]["total"] == 7


def test_symbol_filter_and_multi_symbol_files(tmp_path: Path) -> None:
    rows = []
    for r in BOOK_ROWS[:7]:
        rows.append(r)
        rows.append(r.replace("BTCUSDT", "ETHUSDT").replace(",100.", ",20."))
    book = write(tmp_path / "book.csv", BOOK_HEADER, rows)
    with pytest.raises(UserError, match=r"several symbols .*BTCUSDT.*ETHUSDT.*--symbol"):
        convert([book], tmp_path / "out.npy", ConvertOptions())
    res = convert([book], tmp_path / "eth.npy", ConvertOptions(symbol="ethusdt"))
    feed = open_feed(res.out)
    assert feed.instrument.symbol == "ETHUSDT"
    assert res.stats["rows_other_symbols"] == 7
    assert res.stats["symbols_seen"] == {"BTCUSDT": 7, "ETHUSDT": 7}
    assert len(feed.events) == 8  # CLEAR + 7 rows
    assert set(np.round(feed.events["price"][1:], 2)) <= {20.5, 20.6, 20.4, 20.3, 20.45}
    bids, asks = final_book(feed.events, 0.01)
    assert bids == [(20.45, 2.0), (20.3, 4.0)] and asks == [(20.5, 1.5), (20.6, 1.0)]
    with pytest.raises(UserError, match="no events for symbol SOLUSDT"):
        convert([book], tmp_path / "sol.npy", ConvertOptions(symbol="SOLUSDT"))


def test_inputs_are_classified_by_header(tmp_path: Path) -> None:
    other = tmp_path / "quotes.csv"
    other.write_text("exchange,symbol,timestamp,local_timestamp,ask_amount,ask_price\n")
    with pytest.raises(FeedError, match=r"quotes\.csv:1: not a tardis\.dev"):
        convert([other], tmp_path / "out.npy", ConvertOptions())
    trades = write(tmp_path / "trades.csv", TRADE_HEADER, TRADE_ROWS)
    with pytest.raises(UserError, match="no incremental_book_L2, book_snapshot_N or quotes file"):
        convert([trades], tmp_path / "out.npy", ConvertOptions())


def test_tick_and_lot_from_options_and_exchange_info(sample, tmp_path: Path) -> None:
    res = convert(list(sample), tmp_path / "a.npy", ConvertOptions(tick_size=0.05, lot_size=0.5))
    inst = open_feed(res.out).instrument
    assert (inst.tick_size, inst.lot_size) == (0.05, 0.5)
    assert res.stats["tick_size"] == "option"
    info = {
        "symbols": [
            {
                "symbol": "BTCUSDT",
                "filters": [
                    {"filterType": "PRICE_FILTER", "tickSize": "0.10"},
                    {"filterType": "LOT_SIZE", "stepSize": "0.001"},
                ],
            }
        ]
    }
    (tmp_path / "info.json").write_text(json.dumps(info))
    res = convert(
        list(sample), tmp_path / "b.npy", ConvertOptions(exchange_info=tmp_path / "info.json")
    )
    inst = open_feed(res.out).instrument
    assert (inst.tick_size, inst.lot_size) == (0.1, 0.001)


def test_cli_converts_and_reports_json(sample, tmp_path: Path) -> None:
    out = tmp_path / "cli.npy"
    env = {**os.environ, "NUMBA_CACHE_DIR": str(REPO / ".venv" / "numba-cache")}
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "mm_sim",
            "convert",
            "--from",
            "tardis",
            *map(str, sample),
            "-o",
            str(out),
            "--json",
        ],
        capture_output=True,
        text=True,
        cwd=REPO,
        env=env,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    summary = json.loads(proc.stdout)
    assert summary["events"] == len(EXPECTED)
    assert summary["bad_lines"]["total"] == 0
    assert as_tuples(open_feed(out).events) == EXPECTED
    bad = tmp_path / "bad.csv"
    bad.write_text(BOOK_HEADER + "\n" + book_row(1, True, "bid", "x", "1") + "\n")
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "mm_sim",
            "convert",
            "--from",
            "tardis",
            str(bad),
            "-o",
            str(tmp_path / "x.npy"),
            "--strict",
        ],
        capture_output=True,
        text=True,
        cwd=REPO,
        env=env,
        timeout=120,
    )
    assert proc.returncode == 2
    assert f"{bad}:2: price: expected a positive number" in proc.stderr
    assert "Traceback" not in proc.stderr


def _rescaled(rows: list[str], factor: float) -> list[str]:
    """Rows with both time columns multiplied by ``factor`` (a file in another unit)."""
    out = []
    for r in rows:
        f = r.split(",")
        f[2], f[3] = str(int(int(f[2]) * factor)), str(int(int(f[3]) * factor))
        out.append(",".join(f))
    return out


@pytest.mark.parametrize(("factor", "unit"), [(1e-3, "milliseconds"), (1000, "nanoseconds")])
def test_a_file_in_another_time_unit_is_refused_naming_file_line_and_column(
    tmp_path: Path, factor: float, unit: str
) -> None:
    """Milliseconds used to pass as microseconds (a feed dated 1970, 1000x compressed, exit 0);
    nanoseconds overflowed the int64 field (internal error)."""
    good_book = write(tmp_path / "book.csv", BOOK_HEADER, BOOK_ROWS)
    good_trades = write(tmp_path / "trades.csv", TRADE_HEADER, TRADE_ROWS)
    book = write(tmp_path / "book_x.csv", BOOK_HEADER, _rescaled(BOOK_ROWS, factor))
    trades = write(tmp_path / "trades_x.csv", TRADE_HEADER, _rescaled(TRADE_ROWS, factor))
    for inputs, culprit in (
        ([book, trades], book),
        ([book, good_trades], book),  # one file off: a 53-year span before
        ([good_book, trades], trades),
    ):
        with pytest.raises(UserError) as err:
            convert(inputs, tmp_path / "out.npy", ConvertOptions())
        msg = str(err.value)
        assert msg.startswith(f"{culprit}:2: column local_timestamp: expected microseconds")
        assert f"this looks like {unit}" in msg and "nothing written" in msg
        assert not (tmp_path / "out.npy").exists()


def test_one_time_out_of_range_is_a_bad_line(tmp_path: Path) -> None:
    rows = list(BOOK_ROWS)
    f = rows[5].split(",")
    f[2] = "99999999999999999999999"  # line 7: beyond int64 once in ns
    rows[5] = ",".join(f)
    book = write(tmp_path / "book.csv", BOOK_HEADER, rows)
    res = convert([book], tmp_path / "out.npy", ConvertOptions())
    reason = "timestamp: expected microseconds since the epoch (2000 to 2100)"
    assert res.bad_lines.counts == {reason: 1}
    assert res.bad_lines.examples[reason] == [f"{book}:7"]
    with pytest.raises(FeedError) as err:
        convert([book], tmp_path / "strict.npy", ConvertOptions(strict=True))
    assert str(err.value) == f"{book}:7: {reason}, got '99999999999999999999999'"
