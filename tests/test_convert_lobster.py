"""LOBSTER converter on a small message/orderbook pair written in the exact LOBSTER layout.

The orderbook file is the ground truth: after replaying the events of message k through the
numba book kernel, the book's top N levels must equal orderbook row k, for every k.
"""

from __future__ import annotations

import gzip
import os
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pytest

from mm_sim.core.book import book_apply, make_book, top_levels
from mm_sim.errors import FeedError, UserError
from mm_sim.events import ASK, BID, KIND_CLEAR, KIND_DEPTH, KIND_SNAPSHOT, KIND_TRADE, open_feed
from mm_sim.feeds.convert.base import ConvertOptions
from mm_sim.feeds.convert.lobster import convert, seconds_to_ns

E_ASK, E_BID = "9999999999", "-9999999999"  # LOBSTER's empty-level placeholders
REPO = Path(__file__).resolve().parent.parent
ENV = {**os.environ, "NUMBA_CACHE_DIR": str(REPO / ".venv" / "numba-cache")}


def ob(asks: list[tuple[int, int]], bids: list[tuple[int, int]], n: int = 3) -> str:
    """One orderbook row: ask px, ask size, bid px, bid size for each of n levels."""
    cols: list[str] = []
    for k in range(n):
        a = asks[k] if k < len(asks) else None
        b = bids[k] if k < len(bids) else None
        cols += [str(a[0]), str(a[1])] if a else [E_ASK, "0"]
        cols += [str(b[0]), str(b[1])] if b else [E_BID, "0"]
    return ",".join(cols)


A0 = [(1000200, 200), (1000300, 300), (1000500, 100)]
B0 = [(1000100, 100), (1000000, 500)]
B1 = [*B0, (999900, 50)]
A2 = [(1000200, 50), (1000300, 300), (1000500, 100)]
A3 = [(1000300, 300), (1000500, 100), (1000700, 40)]
B4 = [(1000200, 10), (1000100, 100), (1000000, 500)]
B6 = [(1000200, 10), (1000000, 500), (999900, 50)]
A7 = [(1000300, 200), (1000500, 100), (1000700, 40)]

# (message row, orderbook row after it)
ROWS = [
    ("34200.000000001,1,1001,100,1000100,1", ob(A0, B0)),  # bid 100@100.01 joins
    ("34200.5,1,1002,50,999900,1", ob(A0, B1)),  # bid 50@99.99: third level appears
    ("34201.25,4,2001,150,1000200,-1", ob(A2, B1)),  # sell order hit: buyer-initiated trade
    ("34202.0,4,2001,50,1000200,-1", ob(A3, B1)),  # rest of it: level gone, 100.07 in view
    ("34203.000001,1,1003,10,1000200,1", ob(A3, B4)),  # new best bid pushes 99.99 out of view
    ("34204.1,5,0,30,1000200,1", ob(A3, B4)),  # hidden execution: no visible change
    ("34205,3,1001,100,1000100,1", ob(A3, B6)),  # bid deleted, 99.99 back in view
    ("34206,2,3001,100,1000300,-1", ob(A7, B6)),  # partial cancel of the best ask
    ("34207,7,0,0,-1,-1", ob(A7, B6)),  # trading halt marker
    ("34207.5,6,0,1000,1000300,-1", ob(A7, B6)),  # cross trade (auction)
]
DAY_NS = int(datetime(2012, 6, 21, 4, 0, tzinfo=UTC).timestamp()) * 10**9  # EDT midnight


def write_pair(
    folder: Path,
    rows: list[tuple[str, str]],
    ticker: str = "AAPL",
    day: str = "2012-06-21",
    gz: bool = False,
    level: int = 3,
) -> tuple[Path, Path]:
    stem = f"{ticker}_{day}_34200000_57600000"
    msg = folder / f"{stem}_message_{level}.csv"
    book = folder / f"{stem}_orderbook_{level}.csv"
    for path, lines in ((msg, [r[0] for r in rows]), (book, [r[1] for r in rows])):
        text = "".join(line + "\n" for line in lines)
        if gz:
            with gzip.open(path, "wt") as fh:
                fh.write(text)
        else:
            path.write_text(text)
    return msg, book


def parse_ob(row: str) -> tuple[list[tuple[float, float]], list[tuple[float, float]]]:
    v = [int(x) for x in row.split(",")]
    bids, asks = [], []
    for k in range(len(v) // 4):
        ap, asz, bp, bsz = v[4 * k : 4 * k + 4]
        if asz > 0:
            asks.append((ap / 10000, float(asz)))
        if bsz > 0:
            bids.append((bp / 10000, float(bsz)))
    return bids, asks


def top(book, side: int, n: int = 10) -> list[tuple[float, float]]:
    px, qty = np.zeros(n), np.zeros(n)
    k = top_levels(book.bid, book.ask, book.st, book.tick_size, side, n, px, qty)
    return [(round(float(px[i]), 6), float(qty[i])) for i in range(k)]


def assert_book_follows_orderbook(events: np.ndarray, rows: list[tuple[str, str]]) -> None:
    """Replay message by message (events share the message's timestamp) and compare."""
    book = make_book(0.01)
    times = [seconds_to_ns(r[0].split(",")[0]) for r in rows]
    k = 0
    for i, t in enumerate(times):
        while k < len(events) and int(events["exch_ts"][k]) - DAY_NS == t:
            e = events[k]
            book_apply(
                book.bid, book.ask, book.st, 0.01, e["kind"], e["side"], e["price"], e["qty"]
            )
            k += 1
        bids, asks = parse_ob(rows[i][1])
        assert top(book, BID) == bids, f"after message {i + 1}"
        assert top(book, ASK) == asks, f"after message {i + 1}"
    assert k == len(events)


def as_tuples(events: np.ndarray) -> list[tuple]:
    return [
        (
            int(e["exch_ts"]) - DAY_NS,
            int(e["kind"]),
            int(e["side"]),
            round(float(e["price"]), 6),
            float(e["qty"]),
        )
        for e in events
    ]


def test_events_from_the_first_messages(tmp_path: Path) -> None:
    msg, book = write_pair(tmp_path, ROWS)
    res = convert([msg, book], tmp_path / "out.npy", ConvertOptions())
    ev = open_feed(res.out).events
    t = [seconds_to_ns(r[0].split(",")[0]) for r in ROWS]
    assert as_tuples(ev)[:16] == [
        (t[0], KIND_CLEAR, 0, 0.0, 0.0),
        (t[0], KIND_SNAPSHOT, BID, 100.01, 100.0),
        (t[0], KIND_SNAPSHOT, BID, 100.0, 500.0),
        (t[0], KIND_SNAPSHOT, ASK, 100.02, 200.0),
        (t[0], KIND_SNAPSHOT, ASK, 100.03, 300.0),
        (t[0], KIND_SNAPSHOT, ASK, 100.05, 100.0),
        (t[1], KIND_DEPTH, BID, 99.99, 50.0),
        (t[2], KIND_TRADE, BID, 100.02, 150.0),  # trade before the depth change it caused
        (t[2], KIND_DEPTH, ASK, 100.02, 50.0),
        (t[3], KIND_TRADE, BID, 100.02, 50.0),
        (t[3], KIND_DEPTH, ASK, 100.02, 0.0),
        (t[3], KIND_DEPTH, ASK, 100.07, 40.0),
        (t[4], KIND_DEPTH, BID, 99.99, 0.0),  # left the visible top 3: removed first
        (t[4], KIND_DEPTH, BID, 100.02, 10.0),
        (t[5], KIND_TRADE, ASK, 100.02, 30.0),  # hidden execution, direction 1 -> seller
        (t[6], KIND_DEPTH, BID, 100.01, 0.0),
    ]
    assert np.array_equal(ev["exch_ts"], ev["local_ts"])
    assert res.stats["messages_by_type"] == {
        "submission": 3,
        "execution_visible": 2,
        "execution_hidden": 1,
        "deletion": 1,
        "cancellation": 1,
        "halt": 1,
        "cross_trade": 1,
    }
    assert res.stats["trades_by_aggressor"] == {"buy": 2, "sell_hidden": 1}
    assert res.stats["levels"] == 3 and res.stats["gaps"] == 0
    inst = open_feed(res.out).instrument
    assert (inst.symbol, inst.venue, inst.tick_size, inst.lot_size) == ("AAPL", "NASDAQ", 0.01, 1.0)


def test_absolute_time_from_file_name_date_in_new_york_time(tmp_path: Path) -> None:
    msg, book = write_pair(tmp_path, ROWS)
    ev = open_feed(convert([msg, book], tmp_path / "o.npy", ConvertOptions()).out).events
    # 34200 s after midnight = 09:30 New York = 13:30 UTC in June (EDT).
    assert (
        int(ev["exch_ts"][0])
        == int(datetime(2012, 6, 21, 13, 30, tzinfo=UTC).timestamp()) * 10**9 + 1
    )
    # In December (EST) the same wall time is 14:30 UTC.
    msg2, book2 = write_pair(tmp_path, ROWS[:2], day="2012-12-03")
    ev2 = open_feed(convert([msg2, book2], tmp_path / "w.npy", ConvertOptions()).out).events
    assert (
        int(ev2["exch_ts"][0])
        == int(datetime(2012, 12, 3, 14, 30, tzinfo=UTC).timestamp()) * 10**9 + 1
    )


def test_replayed_book_equals_every_orderbook_row(tmp_path: Path) -> None:
    msg, book = write_pair(tmp_path, ROWS, gz=True)
    ev = open_feed(convert([book, msg], tmp_path / "out.npy", ConvertOptions()).out).events
    assert_book_follows_orderbook(ev, ROWS)


def test_chained_days_start_with_a_fresh_snapshot(tmp_path: Path) -> None:
    d1 = write_pair(tmp_path, ROWS[:5], day="2012-06-21")
    d2 = write_pair(tmp_path, ROWS[5:8], day="2012-06-22")
    res = convert([*d1, *d2], tmp_path / "out.npy", ConvertOptions())
    ev = open_feed(res.out).events
    clears = np.flatnonzero(ev["kind"] == KIND_CLEAR)
    assert len(clears) == 2
    day2 = ev[clears[1] :]
    assert int(day2["exch_ts"][0]) - DAY_NS == 86_400 * 10**9 + seconds_to_ns("34204.1")
    # Day 2's first message is a hidden execution: its trade, then the snapshot of row 1.
    assert int(ev["kind"][clears[1] - 1]) == KIND_TRADE
    assert res.stats["days"] == ["2012-06-21", "2012-06-22"]
    with pytest.raises(UserError, match="pass the days in order"):
        convert([*d2, *d1], tmp_path / "bad.npy", ConvertOptions())


def test_strict_mode_names_file_and_line(tmp_path: Path) -> None:
    rows = list(ROWS)
    rows[3] = ("34202.0,4,2001,50,100.02,-1", rows[3][1])
    msg, book = write_pair(tmp_path, rows)
    with pytest.raises(FeedError) as err:
        convert([msg, book], tmp_path / "out.npy", ConvertOptions(strict=True))
    assert str(err.value).startswith(
        f"{msg}:4: message: expected integer type/size/price/direction"
    )
    rows = list(ROWS)
    rows[1] = (rows[1][0], rows[1][1] + ",5")
    msg, book = write_pair(tmp_path, rows)
    with pytest.raises(FeedError, match=rf"{book}:2: orderbook: expected 4 columns per level"):
        convert([msg, book], tmp_path / "out.npy", ConvertOptions(strict=True))


def test_lenient_mode_skips_bad_rows_and_stays_exact(tmp_path: Path) -> None:
    rows = list(ROWS)
    rows[2] = ("34201.25,9,2001,150,1000200,-1", rows[2][1])  # unknown type
    rows[6] = ("34205,3,1001,100,1000100,0", rows[6][1])  # bad direction
    rows[7] = ("34203.5,2,3001,100,1000300,-1", rows[7][1])  # time goes backwards
    msg, book = write_pair(tmp_path, rows)
    res = convert([msg, book], tmp_path / "out.npy", ConvertOptions())
    assert res.bad_lines.counts == {
        "message: type must be 1..7": 1,
        "message: direction must be 1 or -1": 1,
        "message: time goes backwards": 1,
    }
    assert res.bad_lines.examples["message: type must be 1..7"] == [f"{msg}:3"]
    ev = open_feed(res.out).events
    # The good rows still reproduce their orderbook rows exactly (skipped changes fold into
    # the next good row's diff).
    good = [r for i, r in enumerate(rows) if i not in (2, 6, 7)]
    assert_book_follows_orderbook(ev, good)


def test_file_names_pairs_and_row_counts(tmp_path: Path) -> None:
    odd = tmp_path / "aapl_messages.csv"
    odd.write_text(ROWS[0][0] + "\n")
    with pytest.raises(UserError, match=r"not a LOBSTER file name; expected TICKER_YYYY-MM-DD"):
        convert([odd], tmp_path / "o.npy", ConvertOptions())
    msg, book = write_pair(tmp_path, ROWS)
    with pytest.raises(UserError, match="no matching orderbook file"):
        convert([msg], tmp_path / "o.npy", ConvertOptions())
    book.write_text("".join(r[1] + "\n" for r in ROWS[:-2]))
    with pytest.raises(FeedError, match=r"message_3\.csv:9: .*orderbook_3\.csv ends at line 8"):
        convert([msg, book], tmp_path / "o.npy", ConvertOptions())
    assert not (tmp_path / "o.npy").exists()


def test_symbol_choice_and_tick_option(tmp_path: Path) -> None:
    a = write_pair(tmp_path, ROWS, ticker="AAPL")
    m = write_pair(tmp_path, ROWS[:3], ticker="MSFT")
    with pytest.raises(UserError, match=r"several tickers .*AAPL, MSFT.*--symbol"):
        convert([*a, *m], tmp_path / "o.npy", ConvertOptions())
    res = convert([*a, *m], tmp_path / "o.npy", ConvertOptions(symbol="msft", tick_size=0.0001))
    feed = open_feed(res.out)
    assert feed.instrument.symbol == "MSFT" and feed.instrument.tick_size == 0.0001
    assert int(np.sum(feed.events["kind"] == KIND_TRADE)) == 1


def test_files_named_otherwise_take_ticker_and_date_from_the_flags(tmp_path: Path) -> None:
    msg, book = write_pair(tmp_path, ROWS)
    ref = open_feed(convert([msg, book], tmp_path / "ref.npy", ConvertOptions()).out)
    own = tmp_path / "mine"
    own.mkdir()
    m2, b2 = own / "apple msgs.csv", own / "apple book.txt"
    m2.write_bytes(msg.read_bytes())
    b2.write_bytes(book.read_bytes())
    with pytest.raises(UserError, match=r"not a LOBSTER file name.*give --ticker and --date"):
        convert([b2, m2], tmp_path / "o.npy", ConvertOptions())
    opts = ConvertOptions(extra={"ticker": "aapl", "date": "2012-06-21"})
    res = convert([b2, m2], tmp_path / "o.npy", opts)  # kinds told apart by their columns
    feed = open_feed(res.out)
    assert feed.instrument.symbol == "AAPL"
    assert as_tuples(feed.events) == as_tuples(ref.events)
    with pytest.raises(UserError, match=r"--date 21/06/2012: expected YYYY-MM-DD"):
        convert(
            [m2, b2],
            tmp_path / "x.npy",
            ConvertOptions(extra={"ticker": "A", "date": "21/06/2012"}),
        )
    with pytest.raises(UserError, match=r"expected one orderbook file .* found 0"):
        convert([m2], tmp_path / "x.npy", opts)
    odd = own / "notes.csv"
    odd.write_text("a,b,c\n")
    with pytest.raises(UserError, match=r"notes\.csv:1: neither a LOBSTER message file"):
        convert([m2, b2, odd], tmp_path / "x.npy", opts)


def test_cli_ticker_and_date(tmp_path: Path) -> None:
    msg, book = write_pair(tmp_path, ROWS)
    m2, b2 = tmp_path / "m.csv", tmp_path / "b.csv"
    m2.write_bytes(msg.read_bytes())
    b2.write_bytes(book.read_bytes())
    out = tmp_path / "cli.npy"
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "mm_sim",
            "convert",
            "--from",
            "lobster",
            str(m2),
            str(b2),
            "--ticker",
            "AAPL",
            "--date",
            "2012-06-21",
            "-o",
            str(out),
        ],
        capture_output=True,
        text=True,
        cwd=REPO,
        env=ENV,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    assert int(open_feed(out).events["exch_ts"][0]) == DAY_NS + 34200 * 10**9 + 1


def test_a_time_beyond_the_day_is_one_bad_line(tmp_path: Path) -> None:
    """Such a time used to overflow the feed's int64 (internal error); within int64 it made
    every later row 'go backwards'."""
    rows = list(ROWS)
    rows[3] = ("99999999999999999999999.5" + rows[3][0][rows[3][0].index(",") :], rows[3][1])
    msg, book = write_pair(tmp_path, rows)
    res = convert([msg, book], tmp_path / "out.npy", ConvertOptions())
    reason = "message: time must be seconds after midnight (0 to 90000)"
    assert res.bad_lines.counts == {reason: 1}
    assert res.bad_lines.examples[reason] == [f"{msg}:4"]
    assert_book_follows_orderbook(open_feed(res.out).events, rows[:3] + rows[4:])
    with pytest.raises(FeedError) as err:
        convert([msg, book], tmp_path / "strict.npy", ConvertOptions(strict=True))
    assert str(err.value) == f"{msg}:4: {reason}, got '99999999999999999999999.5'"


def test_a_day_outside_the_feed_range_is_refused(tmp_path: Path) -> None:
    msg, book = write_pair(tmp_path, ROWS, day="2150-06-21")
    with pytest.raises(UserError, match=r"the day 2150-06-21 .* is outside 2000 to 2100"):
        convert([msg, book], tmp_path / "out.npy", ConvertOptions())
