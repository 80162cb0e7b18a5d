"""The Binance converter on every real capture in ../shared/data and on small synthetic files.

Real captures: counts are checked against independent byte counts of the raw files, the output
is replayed through the numba book and compared with the capture's own last bookTicker.
"""

from __future__ import annotations

import gzip
import json
import subprocess
import sys
from decimal import Decimal
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from mm_sim.core.book import best_ask, best_bid, book_apply_events, make_book
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
from mm_sim.feeds.convert.base import ConvertOptions, ConvertResult
from mm_sim.feeds.convert.binance import convert
from mm_sim.feeds.convert.publish import publish

REPO = Path(__file__).resolve().parent.parent

# --- helpers ------------------------------------------------------------------------------


def replay_touch(path: Path) -> tuple[float, float, np.ndarray]:
    feed = open_feed(path)
    ev = np.array(feed.events)
    book = make_book(feed.instrument.tick_size)
    book_apply_events(book.bid, book.ask, book.st, book.tick_size, ev)
    return (
        best_bid(book.bid, book.st, book.tick_size),
        best_ask(book.ask, book.st, book.tick_size),
        ev,
    )


def raw_lines(path: Path) -> list[bytes]:
    with path.open("rb") as fh:
        gz = fh.read(2) == b"\x1f\x8b"
    return (gzip.open(path, "rb") if gz else path.open("rb")).read().splitlines()


def last_book_ticker(paths: list[Path], symbol: str) -> tuple[float, float]:
    """The capture's own last best bid/ask, read without the converter's parser."""
    found: tuple[float, float] | None = None
    for p in paths:
        for line in raw_lines(p):
            if b"bookTicker" not in line or f'"s":"{symbol}"'.encode() not in line:
                continue
            body = json.loads(line[line.index(b"{") :])
            d = body.get("data", body)
            found = (float(d["b"]), float(d["a"]))
    assert found is not None
    return found


def count_raw(paths: list[Path], needle: bytes, symbol: str | None = None) -> int:
    sym = f'"s":"{symbol}"'.encode() if symbol else b""
    return sum(1 for p in paths for ln in raw_lines(p) if needle in ln and sym in ln)


def check_feed(res: ConvertResult, paths: list[Path], symbol: str) -> np.ndarray:
    """Shared checks on a converted real capture; returns the events."""
    s = res.stats
    bid, ask, ev = replay_touch(res.out)
    assert len(ev) == res.events
    assert set(np.unique(ev["kind"])) <= {KIND_CLEAR, KIND_SNAPSHOT, KIND_DEPTH, KIND_TRADE}
    priced = ev["kind"] != KIND_CLEAR
    assert set(np.unique(ev["side"][priced])) <= {BID, ASK}
    assert np.all(np.diff(ev["local_ts"]) >= 0), "events must come out in local_ts order"
    assert s["events_local_ts_backwards"] == 0
    # Every depth diff is applied, dropped as already in the snapshot, or dropped unsynced.
    assert (
        s["diffs_applied"] + s["dropped_stale"] + s["unsynced_dropped"]
        == (s["messages"]["depthUpdate"])
    )
    assert s["messages"]["depthUpdate"] == count_raw(paths, b'"depthUpdate"', symbol)
    # Replayed book: not crossed, and at the capture's own last best bid/ask (a few ticks).
    tb, ta = last_book_ticker(paths, symbol)
    tick = s["tick_size"]
    assert bid < ask
    tol = max(5 * tick, 2e-4 * tb)
    assert abs(bid - tb) <= tol and abs(ask - ta) <= tol, (bid, ask, tb, ta)
    assert s["final_book"]["best_bid"] == pytest.approx(bid)
    assert s["final_book"]["best_ask"] == pytest.approx(ask)
    return ev


# --- real captures ------------------------------------------------------------------------


@pytest.fixture(scope="module")
def hft(shared_data: Path) -> Path:
    return shared_data / "hftbacktest-binance"


@pytest.fixture(scope="module")
def cf(shared_data: Path) -> Path:
    return shared_data / "cryptofeed-binance"


@pytest.fixture(scope="module")
def spot_btc(hft: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[ConvertResult, list]:
    paths = [hft / "spot/btcusdt_20240808.gz", hft / "spot/btcusdt_20240809.gz"]
    out = tmp_path_factory.mktemp("btc") / "btc.npy"
    return convert(paths, out, ConvertOptions()), paths


def test_chained_spot_btcusdt_has_no_gaps(spot_btc: tuple[ConvertResult, list]) -> None:
    res, paths = spot_btc
    s = res.stats
    assert (s["market"], s["symbol"], s["gaps"], s["rebases"], s["resyncs"]) == (
        "spot",
        "BTCUSDT",
        0,
        1,
        0,
    )
    assert s["unsynced_dropped"] == 0 and s["crossed"] == 0 and res.bad_lines.total == 0
    ev = check_feed(res, paths, "BTCUSDT")
    n_trades = count_raw(paths, b'"e":"trade"')
    assert s["messages"]["trade"] == n_trades == int(np.sum(ev["kind"] == KIND_TRADE))
    assert s["messages"]["bookTicker"] == count_raw(paths, b"@bookTicker")
    assert s["events"]["clear"] == 1 and s["events"]["snapshot"] == 2000  # limit=1000 per side
    # The recorder's clock runs ~1.27 s behind the exchange: reported, not corrected.
    assert -1400 < s["clock_offset_ms_median"] < -1100
    trades = ev[ev["kind"] == KIND_TRADE]
    assert np.all(trades["local_ts"] - trades["exch_ts"] < 0)
    assert (s["tick_source"], s["tick_size"]) == ("inferred", 0.01)
    # Trade sides: m == true means the buyer was the maker, so the aggressor sold.
    first_trade = next(
        json.loads(ln[ln.index(b"{") :])["data"]
        for ln in raw_lines(paths[0])
        if b'"e":"trade"' in ln
    )
    assert trades["side"][0] == (-1 if first_trade["m"] else 1)
    assert trades["price"][0] == float(first_trade["p"])
    assert trades["exch_ts"][0] == first_trade["T"] * 1_000_000


def test_sidecar_holds_instrument_and_stats(spot_btc: tuple[ConvertResult, list]) -> None:
    res, _ = spot_btc
    meta = json.loads(res.out.with_suffix(".json").read_text())
    assert meta["instrument"]["symbol"] == "BTCUSDT"
    assert meta["instrument"]["tick_size"] == 0.01 and meta["instrument"]["price_decimals"] == 2
    assert meta["count"] == res.events
    assert meta["stats"]["gaps"] == 0 and meta["stats"]["bad_lines"]["total"] == 0
    assert meta["source"]["format"] == "binance"


def test_continuation_file_alone_never_syncs(hft: Path, tmp_path: Path) -> None:
    """Without the first file's snapshot no diff may reach the book; trades still do."""
    path = hft / "spot/btcusdt_20240809.gz"
    res = convert([path], tmp_path / "b.npy", ConvertOptions())
    s = res.stats
    assert s["rebases"] == 0 and s["events"]["depth"] == 0 and s["events"]["snapshot"] == 0
    assert s["unsynced_dropped"] == s["messages"]["depthUpdate"] > 0
    assert s["events"]["trade"] == count_raw([path], b'"e":"trade"')


def test_chained_spot_ethusdt(hft: Path, tmp_path: Path) -> None:
    paths = [hft / "spot/ethusdt_20240808.gz", hft / "spot/ethusdt_20240809.gz"]
    res = convert(paths, tmp_path / "eth.npy", ConvertOptions(symbol="ethusdt"))
    assert (res.stats["gaps"], res.stats["rebases"], res.stats["symbol"]) == (0, 1, "ETHUSDT")
    check_feed(res, paths, "ETHUSDT")


def test_usdm_btcusdt_futures(hft: Path, tmp_path: Path) -> None:
    paths = [hft / "usdm/btcusdt_20240808.gz"]
    res = convert(paths, tmp_path / "usdm.npy", ConvertOptions())
    s = res.stats
    assert (s["market"], s["venue"], s["gaps"], s["rebases"]) == (
        "futures",
        "binance-futures",
        0,
        1,
    )
    check_feed(res, paths, "BTCUSDT")
    assert s["trades_skipped_non_market"] == {}
    assert s["events"]["trade"] == count_raw(paths, b'"X":"MARKET"')


def test_sushiusdt_example_through_the_real_cli(cf: Path, tmp_path: Path) -> None:
    out = tmp_path / "sushi.npy"
    cmd = [
        sys.executable,
        "-m",
        "mm_sim",
        "convert",
        "--from",
        "binance",
        "--symbol",
        "SUSHIUSDT",
        str(cf / "BINANCE_FUTURES.ws.1.0"),
        str(cf / "BINANCE_FUTURES.http.0.0"),
        "--exchange-info",
        str(cf / "BINANCE_FUTURES.0"),
        "-o",
        str(out),
        "--strict",
    ]
    proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert "gaps: 0" in proc.stdout and "market: futures" in proc.stdout
    assert "bad lines: 0" in proc.stdout
    # Tick and lot come from the exchangeInfo line of the *.0 file, read here independently.
    info_line = (cf / "BINANCE_FUTURES.0").read_text().splitlines()[0]
    info = json.loads(info_line[info_line.index("{") :])
    sym = next(x for x in info["symbols"] if x["symbol"] == "SUSHIUSDT")
    filt = {f["filterType"]: f for f in sym["filters"]}
    meta = json.loads(out.with_suffix(".json").read_text())
    assert meta["instrument"]["tick_size"] == float(filt["PRICE_FILTER"]["tickSize"])
    assert meta["instrument"]["lot_size"] == float(filt["LOT_SIZE"]["stepSize"])
    assert meta["stats"]["tick_source"] == "exchange_info"
    assert meta["stats"]["snapshots"]["used"] == 1
    res_paths = [cf / "BINANCE_FUTURES.ws.1.0"]
    bid, ask, _ = replay_touch(out)
    tb, ta = last_book_ticker(res_paths, "SUSHIUSDT")
    assert bid < ask and abs(bid - tb) <= 0.005 and abs(ask - ta) <= 0.005
    # aggTrade is the only trade stream here, so it is kept.
    assert meta["stats"]["events"]["trade"] == count_raw(res_paths, b'"aggTrade"', "SUSHIUSDT")


def test_cli_reports_user_errors_without_traceback(cf: Path, tmp_path: Path) -> None:
    cmd = [
        sys.executable,
        "-m",
        "mm_sim",
        "convert",
        "--from",
        "binance",
        str(cf / "BINANCE_FUTURES.ws.1.0"),
        "-o",
        str(tmp_path / "x.npy"),
    ]
    proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr
    for sym in ("AKROUSDT", "CTKUSDT", "KEEPUSDT", "SUSHIUSDT"):
        assert sym in proc.stderr + proc.stdout
    assert not (tmp_path / "x.npy").exists()


@pytest.mark.parametrize("symbol", ["NKNUSDT", "BLZETH", "LRCBTC", "RUNEEUR"])
def test_cryptofeed_spot_every_symbol(cf: Path, tmp_path: Path, symbol: str) -> None:
    ws = cf / "BINANCE.ws.1.0"
    # Snapshot file first on purpose: REST captures may come anywhere among the inputs.
    opts = ConvertOptions(symbol=symbol, exchange_info=cf / "BINANCE.0", strict=True)
    res = convert([cf / "BINANCE.http.0.0", ws], tmp_path / "o.npy", opts)
    s = res.stats
    assert (s["market"], s["gaps"], s["rebases"], s["unsynced_dropped"]) == ("spot", 0, 1, 0)
    assert s["tick_source"] == "exchange_info"
    assert s["connections"] == 1 and s["snapshots"]["before_stream"] == 0
    assert s["messages"]["depthUpdate"] == count_raw([ws], b'"depthUpdate"', symbol)
    bid, ask, ev = replay_touch(res.out)
    assert bid < ask
    # Prices off the exchangeInfo tick exist in real books (NKNUSDT keeps deep 5-decimal levels
    # from before a tick change): counted exactly (checked here with Decimal), never near the touch.
    tick = Decimal(str(s["tick_size"]))
    px = ev["price"][ev["kind"] != KIND_CLEAR]
    off = np.array([Decimal(repr(float(p))) % tick != 0 for p in px], dtype=bool)
    assert int(off.sum()) == s["prices_off_tick"]
    assert np.all((px[off] < 0.9 * bid) | (px[off] > 1.1 * ask))
    if s.get("last_book_ticker"):
        tb, ta = last_book_ticker([ws], symbol)
        assert abs(bid - tb) <= 3 * s["tick_size"] and abs(ask - ta) <= 3 * s["tick_size"]


@pytest.mark.parametrize("symbol", ["AKROUSDT", "KEEPUSDT", "CTKUSDT"])
def test_cryptofeed_futures_other_symbols(cf: Path, tmp_path: Path, symbol: str) -> None:
    paths = [cf / "BINANCE_FUTURES.ws.1.0"]
    # The *.0 capture given as an input is used for tick/lot like --exchange-info.
    inputs = [*paths, cf / "BINANCE_FUTURES.http.0.0", cf / "BINANCE_FUTURES.0"]
    res = convert(inputs, tmp_path / "o.npy", ConvertOptions(symbol=symbol.lower()))
    s = res.stats
    assert (s["market"], s["gaps"], s["rebases"], s["tick_source"]) == (
        "futures",
        0,
        1,
        "exchange_info",
    )
    check_feed(res, paths, symbol)


def test_spot_exchange_info_refused_for_a_futures_capture(cf: Path, tmp_path: Path) -> None:
    opts = ConvertOptions(symbol="SUSHIUSDT", exchange_info=cf / "BINANCE.0")
    # SUSHIUSDT also trades on spot, so the symbol is found: the venue mismatch is what stops it.
    with pytest.raises(UserError, match="exchangeInfo is for spot but the capture is futures"):
        convert([cf / "BINANCE_FUTURES.ws.1.0"], tmp_path / "o.npy", opts)


# --- synthetic files ----------------------------------------------------------------------


def _lv(levels: Any) -> list[list[str]]:
    return [[f"{p}", f"{q}"] for p, q in levels]


def depth(sym: str, first: int, final: int, e_ms: int, b=(), a=(), pu: int | None = None) -> str:
    d: dict[str, Any] = {"e": "depthUpdate", "E": e_ms, "s": sym, "U": first, "u": final}
    if pu is not None:
        d["T"] = e_ms
        d["pu"] = pu
    d["b"], d["a"] = _lv(b), _lv(a)
    return json.dumps({"stream": f"{sym.lower()}@depth@100ms", "data": d})


def trade(sym: str, e_ms: int, p: float, q: float, m: bool, agg: bool = False, x: str = "") -> str:
    d: dict[str, Any] = {"e": "aggTrade" if agg else "trade", "E": e_ms, "s": sym}
    d["a" if agg else "t"] = 7
    d.update(p=f"{p}", q=f"{q}", T=e_ms - 1, m=m)
    if x:
        d["X"] = x
    return json.dumps({"stream": f"{sym.lower()}@{'aggTrade' if agg else 'trade'}", "data": d})


def ticker(sym: str, u: int, b: float, a: float) -> str:
    d = {"u": u, "s": sym, "b": f"{b}", "B": "1", "a": f"{a}", "A": "1"}
    return json.dumps({"stream": f"{sym.lower()}@bookTicker", "data": d})


def rest(lid: int, bids, asks) -> str:
    return json.dumps({"lastUpdateId": lid, "bids": _lv(bids), "asks": _lv(asks)})


def write_hft(path: Path, rows: list[tuple[int, str]], gz: bool = False) -> Path:
    text = "".join(f"{t} {m}\n" for t, m in rows).encode()
    path.write_bytes(gzip.compress(text) if gz else text)
    return path


S = "ABCUSDT"
NS = 1_000_000_000


def gap_rows() -> list[tuple[int, str]]:
    return [
        (1 * NS, depth(S, 100, 101, 1000, b=[(99.5, 1)])),
        (2 * NS, rest(100, [(99, 1), (98, 2)], [(101, 1), (102, 1)])),
        (3 * NS, depth(S, 102, 103, 3000, a=[(101, 0)])),
        (3 * NS, trade(S, 3000, 102, 0.5, m=False)),
        (4 * NS, depth(S, 110, 111, 4000, b=[(99.7, 1)])),  # 104..109 lost
        (5 * NS, depth(S, 112, 113, 5000, a=[(103.5, 2)])),
        (6 * NS, rest(111, [(97, 5)], [(103, 4)])),
        (7 * NS, depth(S, 114, 114, 7000, b=[(97.5, 1)])),
        (8 * NS, ticker(S, 114, 97.5, 103)),
    ]


def test_gap_invalidates_the_book_until_a_later_snapshot_rebases_it(tmp_path: Path) -> None:
    path = write_hft(tmp_path / "cap.txt", gap_rows())
    res = convert([path], tmp_path / "o.npy", ConvertOptions(strict=True))
    s = res.stats
    assert (s["gaps"], s["rebases"], s["resyncs"], s["book_invalidations"]) == (1, 2, 1, 1)
    assert s["events"]["clear"] == 3  # two re-bases + the invalidation at the gap
    assert s["dropped_stale"] == 1 and s["unsynced_dropped"] == 0
    ev = np.array(open_feed(res.out).events)
    clears = ev[ev["kind"] == KIND_CLEAR]
    assert list(clears["local_ts"]) == [2 * NS, 4 * NS, 6 * NS]
    # The diff buffered before the second snapshot is applied at the snapshot's receive time.
    seam = ev[(ev["kind"] == KIND_DEPTH) & (ev["price"] == 103.5)]
    assert list(seam["local_ts"]) == [6 * NS] and list(seam["exch_ts"]) == [5000 * 1_000_000]
    # The diff that arrived with the gap never reaches the book.
    assert not np.any(ev["price"] == 99.7)
    bid, ask, _ = replay_touch(res.out)
    assert (bid, ask) == (pytest.approx(97.5), pytest.approx(103.0))
    assert s["tick_size"] == 0.1 and s["tick_source"] == "inferred"


def test_gzip_and_plain_inputs_give_identical_events(tmp_path: Path) -> None:
    plain = write_hft(tmp_path / "a.txt", gap_rows())
    gz = write_hft(tmp_path / "a.gz", gap_rows(), gz=True)
    r1 = convert([plain], tmp_path / "p.npy", ConvertOptions())
    r2 = convert([gz], tmp_path / "g.npy", ConvertOptions())
    assert np.array_equal(np.array(open_feed(r1.out).events), np.array(open_feed(r2.out).events))
    assert r2.stats["files"][0]["compressed"] is True


def test_strict_mode_names_file_and_line(tmp_path: Path) -> None:
    rows = gap_rows()
    path = write_hft(tmp_path / "cap.txt", rows)
    lines = path.read_text().splitlines()
    lines[2] = lines[2][:-5]  # truncate the JSON of line 3
    path.write_text("\n".join(lines) + "\n")
    with pytest.raises(FeedError, match=rf"{path}:3: malformed JSON"):
        convert([path], tmp_path / "o.npy", ConvertOptions(strict=True))
    assert not (tmp_path / "o.npy").exists()
    assert not list(tmp_path.glob(".o.npy*")), "no temp file left behind"


def test_lenient_mode_counts_bad_lines_by_reason(tmp_path: Path) -> None:
    good = gap_rows()
    bad_rows = [
        "not-a-number " + depth(S, 1, 1, 1),
        f"{9 * NS} " + '{"e":"depthUpdate",',
        f"{9 * NS} " + json.dumps({"e": "weird", "E": 1}),
        f"{9 * NS} " + json.dumps({"e": "depthUpdate", "E": 1, "s": S, "u": 1, "b": [], "a": []}),
        f"{9 * NS} " + trade(S, 1, 1.0, 1.0, True).replace('"q": "1.0"', '"q": "abc"'),
        f"{9 * NS} " + trade(S, 1, 1.0, 1.0, True).replace('"m": true', '"m": 1'),
    ]
    text = "".join(f"{t} {m}\n" for t, m in good) + "\n".join(bad_rows) + "\n"
    path = tmp_path / "cap.txt"
    path.write_text(text)
    res = convert([path], tmp_path / "o.npy", ConvertOptions())
    n = len(good)
    by = res.bad_lines.counts
    assert by["bad receive time: expected integer nanoseconds"] == 1
    assert by["malformed JSON"] == 1
    assert by["unknown message type"] == 1
    assert by["missing field 'U' in depthUpdate"] == 1
    assert by["bad number in trade field 'q': expected a decimal string"] == 1
    assert by["bad field 'm' in trade: expected true/false"] == 1
    assert res.bad_lines.total == 6
    assert res.bad_lines.examples["malformed JSON"] == [f"{path}:{n + 2}"]
    assert res.stats["gaps"] == 1 and res.stats["events"]["trade"] == 1  # the good data is kept
    meta = json.loads(res.out.with_suffix(".json").read_text())
    assert meta["stats"]["bad_lines"]["total"] == 6


def test_symbol_selection_errors(tmp_path: Path) -> None:
    rows = [(NS, depth("AAAUSDT", 1, 1, 1)), (NS, depth("BBBUSDT", 1, 1, 1))]
    path = write_hft(tmp_path / "two.txt", rows)
    with pytest.raises(UserError, match=r"several symbols \(AAAUSDT, BBBUSDT\).*--symbol"):
        convert([path], tmp_path / "o.npy", ConvertOptions())
    with pytest.raises(UserError, match=r"'CCC' not found.*AAAUSDT, BBBUSDT"):
        convert([path], tmp_path / "o.npy", ConvertOptions(symbol="CCC"))
    res = convert(
        [path], tmp_path / "o.npy", ConvertOptions(symbol="bbbusdt", tick_size=0.1, lot_size=1)
    )
    assert res.stats["symbol"] == "BBBUSDT" and res.stats["other_symbol_messages"] == 1


def test_snapshot_without_symbol_in_a_multi_symbol_file_is_a_bad_line(tmp_path: Path) -> None:
    rows = [(NS, depth("AAAUSDT", 1, 1, 1)), (NS, depth("BBBUSDT", 1, 1, 1)), (NS, rest(1, [], []))]
    path = write_hft(tmp_path / "two.txt", rows)
    with pytest.raises(FeedError, match=r"two.txt:3: depth snapshot without symbol"):
        convert([path], tmp_path / "o.npy", ConvertOptions(symbol="AAAUSDT", strict=True))


def test_trade_kept_and_aggtrade_skipped_when_both_present(tmp_path: Path) -> None:
    rows = [
        (NS, trade(S, 1000, 10.5, 1.0, m=True, agg=True)),
        (NS, trade(S, 1000, 10.5, 1.0, m=True)),
        (2 * NS, trade(S, 2000, 10.6, 2.0, m=False)),
        (2 * NS, trade(S, 2000, 10.6, 2.0, m=False, agg=True)),
    ]
    res = convert([write_hft(tmp_path / "t.txt", rows)], tmp_path / "o.npy", ConvertOptions())
    assert res.stats["events"]["trade"] == 2 and res.stats["aggtrade_skipped_duplicate"] == 2
    ev = np.array(open_feed(res.out).events)
    assert list(ev["side"]) == [-1, 1]  # m == true: the buyer was the maker, the seller hit
    assert list(ev["exch_ts"]) == [999 * 1_000_000, 1999 * 1_000_000]  # trade time T


def test_futures_non_market_trades_are_skipped(tmp_path: Path) -> None:
    rows = [
        (NS, trade(S, 1000, 10.5, 1.0, m=True, x="MARKET")),
        (NS, trade(S, 1000, 99.0, 1.0, m=True, x="INSURANCE_FUND")),
    ]
    res = convert([write_hft(tmp_path / "t.txt", rows)], tmp_path / "o.npy", ConvertOptions())
    assert res.stats["events"]["trade"] == 1
    assert res.stats["trades_skipped_non_market"] == {"INSURANCE_FUND": 1}


def test_futures_sync_and_partial_depth_stream_is_not_a_snapshot(tmp_path: Path) -> None:
    partial = json.dumps(
        {"stream": "abcusdt@depth5@100ms", "data": json.loads(depth(S, 90, 95, 1, pu=89))["data"]}
    )
    rows = [
        (NS, depth(S, 100, 105, 1000, b=[(9, 1)], pu=99)),
        (NS, partial),
        (
            2 * NS,
            json.dumps(
                {
                    "lastUpdateId": 103,
                    "E": 1500,
                    "T": 1499,
                    "bids": [["9", "2"]],
                    "asks": [["11", "1"]],
                }
            ),
        ),
        (3 * NS, depth(S, 106, 110, 3000, a=[(10.5, 1)], pu=105)),
        (4 * NS, depth(S, 111, 112, 4000, a=[(10.4, 1)], pu=109)),  # pu != 110: gap
    ]
    res = convert([write_hft(tmp_path / "f.txt", rows)], tmp_path / "o.npy", ConvertOptions())
    s = res.stats
    assert (s["market"], s["rebases"], s["gaps"]) == ("futures", 1, 1)
    assert s["messages"]["partialDepth"] == 1
    ev = np.array(open_feed(res.out).events)
    snap = ev[ev["kind"] == KIND_SNAPSHOT]
    assert set(snap["exch_ts"]) == {1500 * 1_000_000}  # the snapshot's own E
    assert set(snap["local_ts"]) == {2 * NS}


def test_plain_json_lines_use_event_time_as_local_time(tmp_path: Path) -> None:
    lines = [
        depth(S, 100, 101, 1000, b=[(9, 1)]),
        rest(100, [(9, 2)], [(11, 1)]),
        depth(S, 102, 102, 2000, b=[(9.5, 1)]),
        trade(S, 2500, 10, 1, m=False),
    ]
    path = tmp_path / "plain.jsonl"
    path.write_text("\n".join(lines) + "\n")
    res = convert([path], tmp_path / "o.npy", ConvertOptions())
    s = res.stats
    assert s["files"][0]["format"] == "jsonl" and "exchange event time E" in s["local_ts_source"]
    assert s["clock_offset_ms_median"] is None and s["gaps"] == 0
    ev = np.array(open_feed(res.out).events)
    depth_ev = ev[ev["kind"] == KIND_DEPTH]
    assert np.array_equal(depth_ev["local_ts"], depth_ev["exch_ts"])


def test_tick_and_lot_sources(tmp_path: Path) -> None:
    path = write_hft(tmp_path / "cap.txt", gap_rows())
    res = convert([path], tmp_path / "a.npy", ConvertOptions(tick_size=2.0, lot_size=0.25))
    s = res.stats
    assert (s["tick_source"], s["tick_size"], s["lot_size"]) == ("flag", 2.0, 0.25)
    assert s["prices_off_tick"] > 0 and s["qtys_off_lot"] == 0  # 99, 101, 97.5 ... are off
    # A size that (nearly) every value is off is a typo: refused, nothing published.
    with pytest.raises(UserError, match=r"--tick 1e\+06: 11 of the capture's 11 values"):
        convert([path], tmp_path / "b.npy", ConvertOptions(tick_size=1e6))
    assert not (tmp_path / "b.npy").exists()
    # The lot against the quantities it applies to (a delete's 0 is on every grid)
    with pytest.raises(UserError, match=r"--lot-size 1e\+06: (\d+) of the capture's \1 values"):
        convert([path], tmp_path / "b.npy", ConvertOptions(lot_size=1e6))
    info = {
        "symbols": [
            {
                "symbol": S,
                "filters": [
                    {"filterType": "PRICE_FILTER", "tickSize": "0.10000000"},
                    {"filterType": "LOT_SIZE", "stepSize": "0.50000000"},
                ],
            }
        ]
    }
    info_path = tmp_path / "info.json"
    info_path.write_text(json.dumps(info, indent=2))
    res = convert([path], tmp_path / "b.npy", ConvertOptions(exchange_info=info_path))
    s = res.stats
    assert (s["tick_source"], s["tick_size"], s["lot_size"]) == ("exchange_info", 0.1, 0.5)
    assert s["prices_off_tick"] == 0
    assert open_feed(res.out).instrument.price_decimals == 1
    info["symbols"][0]["symbol"] = "ZZZ"
    info_path.write_text(json.dumps(info))
    with pytest.raises(UserError, match=f"symbol {S} is not in this exchangeInfo"):
        convert([path], tmp_path / "c.npy", ConvertOptions(exchange_info=info_path))


def test_cryptofeed_capture_with_rest_snapshots_by_receive_time(tmp_path: Path) -> None:
    ws = tmp_path / "BINANCE.ws.1.0"
    http = tmp_path / "BINANCE.http.1.0"
    ws.write_text(
        "wss://stream.binance.com:9443/stream?streams=abcusdt@depth@100ms <-> 100.5\n"
        f"101.25: {depth(S, 100, 101, 101000, b=[(9.5, 1)])}\n"
        f"102.5: {depth(S, 102, 103, 102000, a=[(10.5, 1)])}\n"
        f"103.0: {depth(S, 104, 104, 103000, b=[(9.6, 1)])}\n"
    )
    url = "https://api.binance.com/api/v3/depth?symbol=ABCUSDT&limit=1000"
    http.write_text(
        f"{url} -> 99.0: {rest(50, [(9, 1)], [(11, 1)])}\n"  # before the stream opened
        f"{url} -> 102.75: " + '{"code":-1003,"msg":"Too many requests"}\n'
        f"{url} -> 102.0: {rest(101, [(9, 2)], [(11, 2)])}\n"
    )
    res = convert([ws, http], tmp_path / "o.npy", ConvertOptions())
    s = res.stats
    assert s["snapshots"]["before_stream"] == 1 and s["snapshots"]["used"] == 1
    assert (s["gaps"], s["dropped_stale"], s["diffs_applied"]) == (0, 1, 2)
    assert res.bad_lines.counts["REST error response"] == 1
    ev = np.array(open_feed(res.out).events)
    assert ev["local_ts"][0] == 102 * NS and ev["kind"][0] == KIND_CLEAR
    assert ev["local_ts"][-1] == 103 * NS
    bid, ask, _ = replay_touch(res.out)
    assert (bid, ask) == (pytest.approx(9.6), pytest.approx(10.5))


def test_truncated_gzip_is_reported(tmp_path: Path) -> None:
    rows = gap_rows() * 50
    data = gzip.compress("".join(f"{t} {m}\n" for t, m in rows).encode())
    path = tmp_path / "cut.gz"
    path.write_bytes(data[: len(data) // 2])
    res = convert([path], tmp_path / "o.npy", ConvertOptions())
    assert res.bad_lines.counts["truncated or corrupt compressed data (rest of file skipped)"] == 1
    with pytest.raises(FeedError, match=r"cut.gz:[0-9]+: unreadable compressed data"):
        convert([path], tmp_path / "o.npy", ConvertOptions(strict=True))
    # Published, the cut is refused whatever the share of bad lines (one "bad line" stands for
    # the unread rest of the file), unless the user allows it.
    from mm_sim.feeds.convert.publish import publish

    out = tmp_path / "p.npy"
    with pytest.raises(UserError, match=r"cut.gz:[0-9]+: truncated .* nothing written"):
        publish("binance", [path], out, ConvertOptions())
    assert not out.exists()
    publish("binance", [path], out, ConvertOptions(), allow_bad_lines=True)
    assert out.exists()


def test_unrecognised_file_is_a_clear_error(tmp_path: Path) -> None:
    path = tmp_path / "x.csv"
    path.write_text("time,price\n1,2\n")
    with pytest.raises(FeedError, match=r"x.csv:1: unrecognised Binance capture"):
        convert([path], tmp_path / "o.npy", ConvertOptions())


def test_coinm_capture_syncs_like_usdm(tmp_path: Path) -> None:
    """No COIN-M recording is available; its messages have the USD-M shape (``pu``, ``T``)."""
    sym = "BTCUSD_PERP"
    ws = tmp_path / "BINANCE_DELIVERY.ws.1.0"
    ws.write_text(
        "wss://dstream.binance.com/stream?streams=btcusd_perp@depth@100ms <-> 10.0\n"
        f"11.0: {depth(sym, 500, 510, 11000, b=[(60000.1, 3)], pu=499)}\n"
        f"12.5: {depth(sym, 520, 530, 12000, a=[(60001.0, 2)], pu=510)}\n"
        f"13.0: {trade(sym, 12900, 60000.5, 4, m=False, x='MARKET')}\n"
    )
    http = tmp_path / "BINANCE_DELIVERY.http.1.0"
    body = {"lastUpdateId": 505, "E": 11900, "T": 11890, "bids": [["60000.0", "9"]]}
    body["asks"] = [["60001.5", "1"]]
    http.write_text(
        "https://dapi.binance.com/dapi/v1/depth?symbol=BTCUSD_PERP&limit=1000 -> 12.0: "
        + json.dumps(body)
        + "\n"
    )
    res = convert([ws, http], tmp_path / "o.npy", ConvertOptions(symbol="btcusd_perp"))
    s = res.stats
    assert (s["market"], s["gaps"], s["rebases"], s["diffs_applied"]) == ("futures", 0, 1, 2)
    assert s["venue_from_url"] == ["coin-m futures"] and s["events"]["trade"] == 1
    bid, ask, _ = replay_touch(res.out)
    assert (bid, ask) == (pytest.approx(60000.1), pytest.approx(60001.0))


# --- values no feed can hold, and a book that is lost or frozen -----------------------------


def synced_rows(n: int, bad_at: int | None = None, bad: str = "") -> list[tuple[int, str]]:
    """A spot capture: one snapshot, then ``n`` diffs and a trade per diff; diff ``bad_at``
    replaced by the line ``bad``."""
    rows = [(NS, rest(100, [(99, 1)], [(101, 1)]))]
    for i in range(n):
        t, uid = (2 + i) * NS, 101 + i
        line = depth(S, uid, uid, 2000 + i, b=[(99, 1 + i % 3)])
        rows.append((t, bad if i == bad_at else line))
        rows.append((t, trade(S, 2000 + i, 101, 0.5, m=False)))
    return rows


@pytest.mark.parametrize("general", [False, True])
def test_times_no_feed_holds_are_bad_lines_on_both_paths(tmp_path: Path, general: bool) -> None:
    """They used to overflow the feed's int64 (internal error, exit 70), or, within int64 on
    the fast path, wrap around silently."""
    rows = synced_rows(20)
    big_e = depth(S, 200, 200, 10**23, b=[(98, 1)])  # no diff follows it: no gap
    rows.append((30 * NS, big_e))
    rows.append((30 * NS, trade(S, 1_723_161_259_310_000, 101, 0.5, m=False)))  # µs
    rows.append((10**25, trade(S, 3000, 101, 0.5, m=False)))  # receive time
    path = write_hft(tmp_path / "cap.txt", rows)
    opts = ConvertOptions(extra={"general_path": general})
    res = convert([path], tmp_path / "o.npy", opts)
    ms = "expected milliseconds since the epoch (before 2100)"
    assert res.bad_lines.counts == {
        f"bad field 'E' in depthUpdate: {ms}": 1,
        f"bad field 'E' in trade: {ms}, this looks like microseconds": 1,
        "bad receive time: expected nanoseconds since the epoch before 2100": 1,
    }
    assert res.bad_lines.examples[f"bad field 'E' in depthUpdate: {ms}"] == [f"{path}:42"]
    ev = open_feed(res.out).events
    assert ev["exch_ts"].max() < 10**13 * 1_000_000 and ev["local_ts"].max() <= 30 * NS
    with pytest.raises(FeedError, match=f"^{path}:42: bad field 'E' in depthUpdate"):
        convert([path], tmp_path / "s.npy", ConvertOptions(strict=True))


def test_an_update_id_beyond_int64_is_a_bad_line_and_the_gap_after_it_is_located(
    tmp_path: Path,
) -> None:
    """It used to be taken: every later diff looked stale, the book froze, 'bad lines: 0'."""
    bad = depth(S, 111, 10**23, 11_000, b=[(99, 7)])
    path = write_hft(tmp_path / "cap.txt", synced_rows(20, bad_at=10, bad=bad))
    res = convert([path], tmp_path / "o.npy", ConvertOptions())
    reason = "bad field 'u' in depthUpdate: expected an update id within int64"
    assert res.bad_lines.examples == {reason: [f"{path}:22"]}
    s = res.stats
    assert (s["gaps"], s["dropped_stale_in_sync"]) == (1, 0)
    assert s["gap_examples"] == [
        f"{path}:24: U=112 does not continue u=110; the last bad line before it: {path}:22"
    ]


def test_stale_diffs_on_a_synced_book_warn_and_refuse_when_many(tmp_path: Path) -> None:
    """An update id that jumps ahead within int64 froze the book silently (exit 0)."""
    jump = depth(S, 111, 10**17, 11_000, b=[(99, 7)])
    path = write_hft(tmp_path / "cap.txt", synced_rows(20, bad_at=10, bad=jump))
    res = convert([path], tmp_path / "o.npy", ConvertOptions())
    s = res.stats
    assert (s["dropped_stale_in_sync"], s["diffs_applied"], res.bad_lines.total) == (9, 11, 0)
    assert s["stale_in_sync_examples"][0] == (
        f"{path}:24 (u=112 <= u=100000000000000000 already applied)"
    )
    out = tmp_path / "p.npy"
    with pytest.raises(UserError) as err:
        publish("binance", [path], out, ConvertOptions())
    assert str(err.value).startswith(
        f"9 of 20 depth updates (45.00%) were dropped as already applied although the book "
        f"was in sync (first: {path}:24 "
    )
    assert "--allow-book-loss" in str(err.value) and not out.exists()
    result, _ = publish("binance", [path], out, ConvertOptions(), allow_book_loss=True)
    assert any("dropped as already applied" in w for w in result.warnings)


def test_a_gap_that_loses_most_of_the_feed_is_refused_and_a_cut_reports_what_is_written(
    tmp_path: Path,
) -> None:
    """One bad diff line in a capture with one snapshot cut 70 % of it with exit 0 and a note,
    and the summary (events, last_exch_ts) counted the events before the cut."""
    bad = depth(S, 111, 111, 11_000, b=[("NaN", 1)])
    path = write_hft(tmp_path / "cap.txt", synced_rows(200, bad_at=150, bad=bad))
    out = tmp_path / "p.npy"
    with pytest.raises(UserError) as err:
        publish("binance", [path], out, ConvertOptions(), allow_bad_lines=True)
    msg = str(err.value)
    assert msg.startswith(f"{out}: the book is lost at event #")
    assert f"it broke at {path}:304: U=252 does not continue u=250" in msg
    assert f"the last bad line before it: {path}:302" in msg
    assert "would be cut; nothing written (pass --allow-book-loss" in msg and not out.exists()
    result, summary = publish(
        "binance", [path], out, ConvertOptions(), allow_bad_lines=True, allow_book_loss=True
    )
    ev = open_feed(out).events
    assert result.events == len(ev) == result.stats["book_less_tail_cut"]["at_event"]
    assert summary["events"] == {
        "clear": 1,
        "snapshot": 2,
        "depth": int(np.count_nonzero(ev["kind"] == KIND_DEPTH)),
        "trade": int(np.count_nonzero(ev["kind"] == KIND_TRADE)),
    }
    market = np.isin(ev["kind"], (KIND_DEPTH, KIND_TRADE))
    assert summary["last_exch_ts_ns"] == int(ev["exch_ts"][market].max())
    assert open_feed(out).meta.stats["last_exch_ts_ns"] == summary["last_exch_ts_ns"]
    # A cut of at most 1 % of the events is still made without asking, and reported.
    path = write_hft(tmp_path / "late.txt", synced_rows(200, bad_at=198, bad=bad))
    result, _ = publish("binance", [path], tmp_path / "l.npy", ConvertOptions())
    assert result.events == open_feed(tmp_path / "l.npy").meta.count
    assert result.stats["book_less_tail_cut"]["events"] == 2  # the clear and the last trade
