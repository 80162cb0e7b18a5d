"""The numba line scanner of hftbacktest captures against the general path.

Three checks: line by line, every line the kernel accepts reads as the general parser reads it
(``reference_line``), on plain and mutated lines; a whole conversion through the fast path
equals the general path's byte for byte on hand-written captures with bad, blank, odd and
truncated data; and on the real captures the output is byte-identical to what the converter
wrote before the fast path existed (hashes taken from that code).
"""

from __future__ import annotations

import gzip
import hashlib
import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mm_sim.errors import FeedError, UserError
from mm_sim.feeds.convert import binance
from mm_sim.feeds.convert.base import ConvertOptions
from mm_sim.feeds.convert.binance_fast import (
    BLANK,
    DEPTH,
    FALLBACK,
    L_LOCAL,
    L_SYM0,
    L_SYM1,
    TICKER,
    TRADE,
    BlockScanner,
    depth_code,
    line_end,
    reference_line,
    words_of,
)
from mm_sim.venues.binance.messages import MessageError

SYM = "ABCUSDT"
NS = 1_723_161_253_000_000_000


def js(obj: Any) -> str:
    return json.dumps(obj, separators=(",", ":"))


def depth(u: int, e_ms: int, b: list, a: list, futures: bool = False, stream: str = "") -> str:
    d: dict[str, Any] = {"e": "depthUpdate", "E": e_ms, "s": SYM, "U": u, "u": u + 1}
    if futures:
        d.update(T=e_ms - 1, pu=u - 1)
    d.update(b=b, a=a)
    return js({"stream": stream or f"{SYM.lower()}@depth@100ms", "data": d})


def trade(t: int, e_ms: int, p: str, q: str, m: bool, sym: str = SYM) -> str:
    d = {"e": "trade", "E": e_ms, "s": sym, "t": t, "p": p, "q": q, "T": e_ms - 1, "m": m}
    d["M"] = True
    return js({"stream": f"{sym.lower()}@trade", "data": d})


def ticker(u: int, bid: str, ask: str, sym: str = SYM) -> str:
    d = {"u": u, "s": sym, "b": bid, "B": "1.5", "a": ask, "A": "0.25"}
    return js({"stream": f"{sym.lower()}@bookTicker", "data": d})


def snapshot(lid: int, bids: list, asks: list) -> str:
    return js({"lastUpdateId": lid, "bids": bids, "asks": asks})


PLAIN = [
    f"{NS} {ticker(1, '100.10', '100.20')}",
    f"{NS + 1} {ticker(2, '100.10', '100.30', sym='XYZUSDT')}",
    f"{NS + 2} {depth(10, 5, [['100.10', '2.5'], ['100.00', '0']], [['100.30', '1']])}",
    f"{NS + 3} {depth(12, 6, [], [['100.40', '0.001']], futures=True)}",
    f"{NS + 4} {trade(7, 9, '100.20', '0.010', True)}",
    f"{NS + 5} {trade(8, 9, '100.25', '3', False)}",
]
MUTANTS = [
    "",  # blank
    f"{NS} " + ticker(1, "1", "2").replace(":", ": ", 1),  # whitespace: general path
    f"{NS} " + ticker(1, "1", "2").replace('"s":"ABCUSDT"', '"s":"AB\\u0043USDT"'),  # escape
    f"+{NS} {ticker(1, '1', '2')}",  # a sign in the receive time
    f"{NS}  {ticker(1, '1', '2')}",  # two spaces
    f"{NS} {ticker(1, '1', '2')}x",  # trailing garbage
    f"{NS} {ticker(1, '1', '2')[:-3]}",  # cut
    f"{NS} " + js({"stream": "abcusdt@bookTicker", "data": {"u": 1, "s": 5}}),  # non-string s
    f"{NS} " + js({"stream": "abcusdt@bookTicker", "data": {"u": 1.5e3, "s": "A", "x": None}}),
    f"{NS} " + js({"stream": "abcusdt@bookTicker", "data": {"s": "A", "s2": [1]}}),  # nested
    f"{NS} " + js({"stream": "abcusdt@bookTicker", "data": {"s": "A", "x": -0.5, "y": True}}),
    f"{NS} " + js({"stream": "abcusdt@bookTicker", "data": {"u": 1}}),  # no s
    f"{NS} " + '{"stream":"abcusdt@bookTicker","data":{"s":"A","s":"B"}}',  # duplicate key
    f"{NS} {depth(10, 5, [['1.0', '1']], [], stream='abcusdt@depth5@100ms')}",  # partial
    f"{NS} {depth(10, 5, [['1.0', '1']], [], stream='abcusdt@bookTicker')}",
    f"{NS} {depth(10, 5, [['0', '1']], [])}",  # zero price: refused everywhere
    f"{NS} {depth(10, 5, [['1e2', '1']], [])}",  # exponent
    f"{NS} " + depth(10, 5, [], []).replace('"U":10', '"U":99'),  # U > u
    f"{NS} " + trade(7, 9, "1.5", "2", True).replace('"t":7', '"t":7,"X":"MARKET"'),
    f"{NS} " + trade(7, 9, "1.5", "2", True).replace('"trade"', '"aggTrade"', 1),
    f"{NS} {snapshot(5, [['1.0', '2']], [['1.5', '1']])}",
    f"{NS} " + js({"e": "kline", "s": SYM}),
    f"{NS} " + js({"stream": "abcusdt@trade", "data": [1, 2]}),
    f"{NS} {{not json",
    "12ab " + ticker(1, "1", "2"),
    "99999999999999999999 " + ticker(1, "1", "2"),  # 20 digits
    "9300000000000000000 " + ticker(1, "1", "2"),  # 19 digits, above int64
]


def scan(lines: list[str]) -> tuple[list[int], list[list[int]], BlockScanner, bytes]:
    data = "".join(line + "\n" for line in lines).encode()
    sc = BlockScanner()
    nl, used, _ = sc.scan(data)
    assert nl == len(lines) and used == len(data)
    return sc.codes[:nl].tolist(), sc.lines[:nl].tolist(), sc, data


def general(line: str) -> tuple[int, int | None, Any] | None:
    try:
        return reference_line(line.encode())
    except (MessageError, ValueError, UnicodeDecodeError):
        return None


def test_plain_lines_are_taken_by_the_kernel_and_read_as_the_general_path_reads_them() -> None:
    codes, rows, _, data = scan(PLAIN)
    assert codes == [TICKER, TICKER, DEPTH, DEPTH, TRADE, TRADE]
    for i, line in enumerate(PLAIN):
        ref = general(line)
        assert ref is not None and ref[0] == codes[i] and ref[1] == rows[i][L_LOCAL]
        sym = data[rows[i][L_SYM0] : rows[i][L_SYM1]].decode()
        if codes[i] == TICKER:
            assert sym == ref[2]["s"]
        else:
            assert sym == ref[2].symbol


def test_mutated_lines_fall_back_or_agree() -> None:
    codes, rows, _, data = scan(MUTANTS)
    partial: dict[bytes, bool] = {}
    codes = [
        depth_code(r, data, partial) if c == DEPTH else c for c, r in zip(codes, rows, strict=True)
    ]
    assert codes[0] == BLANK
    for i, line in enumerate(MUTANTS[1:], 1):
        ref = general(line)
        if codes[i] == FALLBACK:
            continue  # the general path decides, as before
        assert ref is not None, f"kernel accepted a line the general path refuses: {line!r}"
        assert (ref[0], ref[1]) == (codes[i], rows[i][L_LOCAL]), line
        if codes[i] == TICKER:
            assert data[rows[i][L_SYM0] : rows[i][L_SYM1]].decode() == ref[2]["s"]
    accepted = [MUTANTS[i] for i, c in enumerate(codes) if c not in (FALLBACK, BLANK)]
    # Only the two plain-but-unusual tickers are the kernel's; everything else is left alone.
    assert len(accepted) == 2, accepted


def capture_rows() -> list[str]:
    """A capture: a diff before the inline snapshot, the seam, trades, tickers, and every kind
    of mutant (bad, blank, odd) sprinkled between them."""
    bids = [["99.50", "1"], ["99.40", "2"]]
    asks = [["100.50", "1"], ["100.60", "3"]]
    rows = [
        f"{NS} {depth(100, 1000, [['99.55', '1']], [])}",
        f"{NS + 10} {snapshot(100, bids, asks)}",
    ]
    u = 102
    for k in range(300):
        t = NS + 1000 * (k + 2)
        side = [[f"{99.50 - 0.01 * (k % 7):.2f}", f"{k % 5}"]]
        rows.append(f"{t} {depth(u, 1000 + k, side, [['100.50', str(1 + k % 3)]])}")
        u += 2
        if k == 120:  # overlapping the previous diff (spot): applied, counted
            rows.append(f"{t} {depth(u - 1, 1000 + k, [['99.45', '1']], [])}")
        if k == 250:  # a bid through the ask: the book is crossed, cleared, re-requested
            rows.append(f"{t} {depth(u, 1000 + k, [['100.70', '1']], [])}")
            u += 2
        if k == 260:  # a later snapshot re-bases it; the diffs buffered meanwhile replay
            rows.append(f"{t + 2} {snapshot(u - 3, bids, asks)}")
        rows.append(f"{t + 1} {ticker(u, '99.50', '100.50')}")
        if k % 3 == 0:
            rows.append(f"{t + 3} {trade(k, 1000 + k, '100.50', '0.5', k % 2 == 0)}")
        if k % 11 == 0:  # one symbol in the file: the inline snapshot needs it
            mutant = MUTANTS[1 + (k // 11) % (len(MUTANTS) - 1)]
            rows.append(mutant.replace('"A"', f'"{SYM}"').replace('"B"', f'"{SYM}"'))
        if k % 50 == 0:
            rows.append(f"{t - 5000} {ticker(u, '99.50', '100.50')}")  # receive time backwards
    return rows


def convert_both(path: Path, tmp_path: Path, **kw: Any) -> tuple[bytes, dict, bytes, dict]:
    out = []
    for general_path in (True, False):
        extra = {"general_path": True} if general_path else {}
        dst = tmp_path / f"{'g' if general_path else 'f'}{path.name}.npy"
        res = binance.convert([path], dst, ConvertOptions(extra=extra, **kw))
        stats = {k: v for k, v in res.stats.items() if k not in ("elapsed_s", "messages_per_s")}
        stats["bad"] = res.bad_lines.to_json()
        out += [dst.read_bytes(), stats]
    return out[0], out[1], out[2], out[3]


@pytest.mark.parametrize("gz", [False, True])
def test_a_whole_capture_converts_byte_for_byte_as_the_general_path(tmp_path: Path, gz) -> None:
    rows = capture_rows()
    text = "".join(r + "\n" for r in rows).encode()
    path = tmp_path / ("cap.gz" if gz else "cap.txt")
    path.write_bytes(gzip.compress(text) if gz else text)
    g, gs, f, fs = convert_both(path, tmp_path, symbol=SYM)
    assert f == g and fs == gs
    assert gs["bad"]["total"] > 0 and gs["receive_time_backwards"] > 0
    assert gs["crossed"] == 1 and gs["overlapping_diffs"] >= 1 and gs["rebases"] == 2
    assert gs["messages"]["depthUpdate"] >= 301 and gs["events"]["depth"] > 300


def test_a_truncated_gzip_and_a_last_line_without_newline_read_the_same(tmp_path: Path) -> None:
    rows = capture_rows()
    text = "".join(r + "\n" for r in rows).encode()
    cut = tmp_path / "cut.gz"
    data = gzip.compress(text)
    cut.write_bytes(data[: int(len(data) * 0.7)])
    g, gs, f, fs = convert_both(cut, tmp_path, symbol=SYM)
    assert f == g and fs == gs
    assert gs["bad"]["by_reason"].get("truncated or corrupt compressed data (rest of file skipped)")
    tail = tmp_path / "tail.txt"
    tail.write_bytes(text.rstrip(b"\n"))
    g, gs, f, fs = convert_both(tail, tmp_path, symbol=SYM)
    assert f == g and fs == gs


# The real captures: sha256 of the .npy the converter wrote at commit f66a4ba, before the fast
# path (python -m mm_sim convert ... as in docs/FEEDS_BINANCE.md).
H, C = "hftbacktest-binance/", "cryptofeed-binance/"
REAL = {
    "spot-btcusdt": (
        [H + "spot/btcusdt_20240808.gz", H + "spot/btcusdt_20240809.gz"],
        None,
        None,
        "b0b86f7fb954b7b8f559e8f3fc638ccf453816bcd7aee9a2d8c343a0d48cbd51",
    ),
    "spot-ethusdt": (
        [H + "spot/ethusdt_20240808.gz", H + "spot/ethusdt_20240809.gz"],
        None,
        None,
        "fa1c0bfa20c109cafd17d7ecebe4657f9bd7a4866fa868f21ec2eebaa14b58af",
    ),
    "usdm-btcusdt": (
        [H + "usdm/btcusdt_20240808.gz"],
        None,
        None,
        "557504a2e62beb569de3e5092207fda55c3deada0e7af508b0bff7ef50672e0e",
    ),
    # cryptofeed captures take the general path (restructured with the fast one)
    "cryptofeed-usdm-sushiusdt": (
        [C + "BINANCE_FUTURES.ws.1.0", C + "BINANCE_FUTURES.http.0.0"],
        "SUSHIUSDT",
        C + "BINANCE_FUTURES.0",
        "014155b79ea63249f511ebc38fde5e9cb2f861738bf8a1def3e0c93c1728edfa",
    ),
    "cryptofeed-spot-nknusdt": (
        [C + "BINANCE.ws.1.0", C + "BINANCE.http.0.0"],
        "NKNUSDT",
        C + "BINANCE.0",
        "6bf556ae49e56b02eade4cc36e4bd3225900bb22fd8be64301c22d4c731e7c94",
    ),
}


@pytest.mark.parametrize("name", sorted(REAL))
def test_real_captures_are_byte_identical_to_the_converter_before(
    shared_data: Path, tmp_path: Path, name: str
) -> None:
    files, symbol, info, digest = REAL[name]
    inputs = [shared_data / f for f in files]
    opts = ConvertOptions(symbol=symbol, exchange_info=shared_data / info if info else None)
    res = binance.convert(inputs, tmp_path / "o.npy", opts)
    assert hashlib.sha256(res.out.read_bytes()).hexdigest() == digest
    assert int(np.load(res.out, mmap_mode="r").shape[0]) == res.events


# --- one pass: no pre-scan, its guesses checked at the end ---------------------------------


def convert_counting(
    path: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, **kw: Any
) -> tuple[bytes, dict, bytes, dict, int]:
    """convert_both, and how many files the fast conversion pre-scanned (0: one pass held)."""
    from mm_sim.feeds.convert import binance as mod

    calls: list[Path] = []
    real = mod.prescan_messages
    monkeypatch.setattr(mod, "prescan_messages", lambda inp: calls.append(inp.path) or real(inp))
    g, gs, f, fs = convert_both(path, tmp_path, **kw)
    fast_calls = len(calls) - 1  # the general path pre-scans its one file
    return g, gs, f, fs, fast_calls


def write(tmp_path: Path, rows: list[str], name: str = "cap.gz") -> Path:
    path = tmp_path / name
    path.write_bytes(gzip.compress("".join(r + "\n" for r in rows).encode()))
    return path


def test_one_pass_holds_on_a_plain_capture(tmp_path: Path, monkeypatch) -> None:
    g, gs, f, fs, scans = convert_counting(write(tmp_path, capture_rows()), tmp_path, monkeypatch)
    assert scans == 0 and f == g and fs == gs
    assert gs["symbols_seen"] == [SYM] and gs["files"][0]["symbols"] == [SYM]


def test_one_pass_given_up_when_a_later_symbol_makes_the_snapshot_ambiguous(
    tmp_path: Path, monkeypatch
) -> None:
    """Another symbol after the inline snapshot: with the whole file known, the snapshot is a
    bad line (whose book is it?); the single pass read it as ours, so it converts again."""
    rows = capture_rows()
    rows.append(f"{NS + 10**9} {ticker(9, '1.0', '2.0', sym='XYZUSDT')}")
    g, gs, f, fs, scans = convert_counting(write(tmp_path, rows), tmp_path, monkeypatch, symbol=SYM)
    assert scans == 1 and f == g and fs == gs
    assert "depth snapshot without symbol in a multi-symbol file" in gs["bad"]["by_reason"]
    assert gs["symbols_seen"] == [SYM, "XYZUSDT"]


def test_one_pass_given_up_when_the_first_block_misleads(tmp_path: Path, monkeypatch) -> None:
    """Over a MB of spot diffs and tickers, then a futures diff (``pu``): the pre-scan makes the
    whole capture futures (the spot diffs become bad lines); the first block said spot."""
    rows = capture_rows()
    while sum(len(r) + 1 for r in rows) < 1 << 20:
        rows.append(f"{NS + 10**9} {ticker(1, '99.50', '100.50')}")
    rows.append(f"{NS + 10**9} {depth(10_000, 9000, [['99.40', '1']], [], futures=True)}")
    g, gs, f, fs, scans = convert_counting(write(tmp_path, rows), tmp_path, monkeypatch)
    assert scans == 1 and f == g and fs == gs and gs["market"] == "futures"


def test_one_pass_given_up_for_kept_aggtrades(tmp_path: Path, monkeypatch) -> None:
    """An aggTrade before the file's first trade: the pre-scan knows the trades come and skips
    it as a duplicate; a single pass cannot, so it converts again."""
    rows = capture_rows()
    agg = trade(1, 1001, "100.50", "0.5", True).replace('"trade"', '"aggTrade"', 1)
    rows.insert(2, f"{NS + 11} " + agg.replace('"t":1', '"a":1'))
    g, gs, f, fs, scans = convert_counting(write(tmp_path, rows), tmp_path, monkeypatch)
    assert scans == 1 and f == g and fs == gs
    assert gs["aggtrade_skipped_duplicate"] == 1


def test_one_pass_refuses_a_wrong_symbol_before_publishing(tmp_path: Path) -> None:
    path = write(tmp_path, capture_rows())
    out = tmp_path / "o" / "feed.npy"
    out.parent.mkdir()
    with pytest.raises(UserError, match="symbol 'NOPEUSDT' not found in the inputs"):
        binance.convert([path], out, ConvertOptions(symbol="NOPEUSDT"))
    assert list(out.parent.iterdir()) == []
    # a lower-case --symbol names the capture's symbol: one pass, same feed
    res = binance.convert([path], out, ConvertOptions(symbol=SYM.lower()))
    assert res.stats["symbol"] == SYM


def test_one_pass_strict_errors_are_the_pre_scans(tmp_path: Path) -> None:
    """--strict: the first bad line stops the conversion, with the error the two-pass reading
    gives (file, line, reason), and nothing is left behind."""
    path = write(tmp_path, capture_rows())
    errors = []
    for extra in ({"general_path": True}, {}):
        out = tmp_path / f"{len(errors)}" / "o.npy"
        out.parent.mkdir()
        with pytest.raises(FeedError) as exc:
            binance.convert([path], out, ConvertOptions(symbol=SYM, strict=True, extra=extra))
        errors.append(str(exc.value))
        assert list(out.parent.iterdir()) == []
    assert errors[0] == errors[1] and "cap.gz:" in errors[0]


def test_a_line_longer_than_the_kernels_buffers(tmp_path: Path, monkeypatch) -> None:
    """A diff of 6,000 levels (~100 KB, more than the block kernel's buffers start with) and a
    snapshot as large: the buffers grow for it and the output is still the general path's."""
    rows = capture_rows()
    big_b = [[f"{90 - 0.001 * k:.3f}", "1"] for k in range(3000)]
    big_a = [[f"{110 + 0.001 * k:.3f}", "0" if k % 2 else "2"] for k in range(3000)]
    at = next(i for i, r in enumerate(rows) if '"u":103' in r or '"U":102' in r)
    u = int(rows[at].split('"u":')[1].split(",")[0])
    rows.insert(at + 1, f"{NS + 1500} {depth(u + 1, 1001, big_b, big_a)}")
    rows = [r.replace(f'"U":{u + 1},"u":{u + 2}', f'"U":{u + 3},"u":{u + 4}', 1)
            if i > at + 1 else r for i, r in enumerate(rows)]  # fmt: skip
    g, gs, f, fs, scans = convert_counting(write(tmp_path, rows), tmp_path, monkeypatch)
    assert scans == 0 and f == g and fs == gs
    assert gs["events"]["depth"] > 6000


def test_real_futures_capture_feed_and_sidecar_as_the_general_paths(
    shared_data: Path, tmp_path: Path, monkeypatch
) -> None:
    """USD-M BTCUSDT through both paths: futures trades (X=MARKET) and diffs in the block kernel,
    the touch book against the general path's LightBook, one pass: the same feed, the same
    sidecar (bar the timing figures), the same clock model."""
    from mm_sim.events import sidecar_path

    path = shared_data / H / "usdm/btcusdt_20240808.gz"
    g, gs, f, fs, scans = convert_counting(path, tmp_path, monkeypatch)
    assert scans == 0 and f == g and fs == gs
    assert gs["market"] == "futures" and gs["messages"]["trade"] > 20_000
    sides = []
    for prefix in ("g", "f"):
        meta = json.loads(sidecar_path(tmp_path / f"{prefix}{path.name}.npy").read_text())
        for key in ("elapsed_s", "messages_per_s"):
            meta["stats"].pop(key)
        sides.append(meta)
    assert sides[0] == sides[1]


@settings(max_examples=300, deadline=None)
@given(
    st.lists(st.sampled_from([10, 10, 32, 65, 0, 255, 138, 11, 9]), max_size=80),
    st.integers(0, 90),
    st.integers(0, 7),
)
def test_line_end_finds_the_newline_a_byte_scan_finds(chars: list[int], start: int, skip: int):
    """Word-at-a-time newline search against the plain scan: any start, any offset of the
    array in its buffer (the words are counted from the array's own first byte), bytes next
    to 0x0A in value (0x0B, 0x09, 0x8A) and a buffer end in the middle of a word."""
    buf = np.array([0] * skip + chars, dtype=np.uint8)[skip:]
    want = next((i for i in range(start, len(chars)) if chars[i] == 10), max(start, len(chars)))
    got = line_end(buf, words_of(buf), start)
    assert got == (want if start <= len(chars) else start)
