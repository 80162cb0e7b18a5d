"""The Binance converter on small hand-built captures: sync and gaps, bad lines, symbols and
markets, tick and lot sources, and values no feed can hold (the real captures are in
test_convert_binance.py)."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import numpy as np
import pytest
from binance_lines import NS, S, depth, gap_rows, replay_touch, rest, trade, write_hft

from mm_sim.errors import FeedError, UserError
from mm_sim.events import (
    KIND_CLEAR,
    KIND_DEPTH,
    KIND_SNAPSHOT,
    KIND_TRADE,
    open_feed,
)
from mm_sim.feeds.convert.base import ConvertOptions
from mm_sim.feeds.convert.binance import convert
from mm_sim.feeds.convert.publish import publish


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
