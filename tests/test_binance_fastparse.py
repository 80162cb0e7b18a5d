"""The numba depthUpdate fast path against its reference, the general parser.

For every input the fast path accepts, its result must equal ``parse_payload(*decode(raw))``;
for everything else it must decline (None), so the general path decides (and reports errors).
"""

from __future__ import annotations

import gzip
import itertools
import json
import random
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mm_sim.events import EVENT_DTYPE, KIND_DEPTH, KIND_SNAPSHOT
from mm_sim.venues.binance.fastparse import DepthParser, flat_levels
from mm_sim.venues.binance.fill_events import fill_diff, fill_levels, fill_levels_ref, put_one
from mm_sim.venues.binance.messages import (
    DepthDiff,
    MessageError,
    decode,
    deletions_first,
    parse_payload,
)


def _reference(raw: bytes) -> object:
    try:
        return parse_payload(*decode(raw))
    except MessageError as err:
        return err


def _check(parser: DepthParser, raw: bytes) -> bool:
    """True when the fast path took ``raw``; asserts it agrees with the reference either way."""
    got = parser.parse(raw)
    ref = _reference(raw)
    if got is None:
        return False
    assert isinstance(ref, DepthDiff), (raw[:200], ref)
    assert got == ref, raw[:200]
    assert got.flat is not None
    assert got.flat[0].tolist() == [x for lv in ref.bids for x in lv]
    assert got.flat[1].tolist() == [x for lv in ref.asks for x in lv]
    return True


decimals = st.builds(
    lambda whole, frac: whole + ("." + frac if frac is not None else ""),
    st.from_regex(r"\A(0|[1-9][0-9]{0,9})\Z", fullmatch=True),
    st.none() | st.from_regex(r"\A[0-9]{1,12}\Z", fullmatch=True),
)
levels = st.lists(st.tuples(decimals, decimals), max_size=8)


@st.composite
def depth_messages(draw: st.DrawFn) -> bytes:
    futures = draw(st.booleans())
    first = draw(st.integers(0, 10**15))
    payload: dict[str, object] = {
        "e": "depthUpdate",
        "E": draw(st.integers(0, 2**62)),
        "s": draw(st.sampled_from(["BTCUSDT", "ETHUSDT", "X1"])),
        "U": first,
        "u": first + draw(st.integers(0, 1000)),
        "b": [list(lv) for lv in draw(levels)],
        "a": [list(lv) for lv in draw(levels)],
    }
    if futures:
        payload["T"] = draw(st.integers(0, 2**62))
        payload["pu"] = draw(st.integers(0, 10**15))
    keys = draw(st.permutations(list(payload)))
    body = json.dumps({k: payload[k] for k in keys}, separators=(",", ":"))
    if draw(st.booleans()):
        stream = draw(st.sampled_from(["btcusdt@depth@100ms", "btcusdt@depth", "x@depth5"]))
        body = f'{{"stream":"{stream}","data":{body}}}'
    return body.encode()


def _plain(raw: bytes) -> bool:
    """The form the fast path promises to take: integers of at most 18 digits, decimals of at
    most 15 digits (always exact), positive prices, and not a partial-depth stream."""
    obj = json.loads(raw)
    if "stream" in obj:
        if "@depth5" in obj["stream"]:
            return False
        obj = obj["data"]
    ints = [v for k, v in obj.items() if k in ("E", "T", "U", "u", "pu")]
    nums = [x for side in (obj["b"], obj["a"]) for lv in side for x in lv]
    prices = [lv[0] for side in (obj["b"], obj["a"]) for lv in side]
    return (
        all(len(str(v)) <= 18 for v in ints)
        and all(len(x.replace(".", "")) <= 15 for x in nums)
        and all(float(p) > 0 for p in prices)
    )


@settings(max_examples=400, deadline=None)
@given(depth_messages())
def test_generated_messages_agree_with_the_reference(raw: bytes) -> None:
    took = _check(DepthParser(), raw)
    if _plain(raw):
        assert took


MUTATIONS = [
    b" ",
    b"\\",
    b"-",
    b"e",
    b"E5",
    b"0",
    b"00",
    b".",
    b'"',
    b",",
    b"]",
    b"[",
    b"}",
    b"{",
    b"null",
    b"1e3",
    b"\xc3\xa9",
]


def test_mutated_messages_are_declined_or_agree() -> None:
    """Every byte position overwritten or extended with troublesome bytes: the fast path must
    either decline or give exactly the general parser's result, never a different diff."""
    base = (
        b'{"stream":"btcusdt@depth@100ms","data":{"e":"depthUpdate","E":1723161256299,'
        b'"T":1723161256298,"s":"BTCUSDT","U":50,"u":57,"pu":49,'
        b'"b":[["58710.20","0.014"],["61496.5","0"]],"a":[["61510.90","1.000"]]}}'
    )
    parser = DepthParser()
    assert _check(parser, base)
    rng = random.Random(7)
    taken = declined = 0
    for i in range(len(base)):
        for m in MUTATIONS:
            for raw in (base[:i] + m + base[i + 1 :], base[:i] + m + base[i:], base[:i]):
                if _check(parser, raw):
                    taken += 1
                else:
                    declined += 1
    for _ in range(300):  # random multi-byte damage
        b = bytearray(base)
        for _ in range(rng.randint(1, 4)):
            b[rng.randrange(len(b))] = rng.randrange(256)
        _check(parser, bytes(b))
    assert declined > taken > 0


def test_bytes_bytearray_and_str_frames_parse_alike() -> None:
    """The parsers call a compiled entry point made for the buffer's writability: a bytearray
    (writeable) after bytes (read-only) must not be read through the wrong one."""
    raw = b'{"e":"depthUpdate","E":5,"s":"X","U":3,"u":4,"b":[["1.5","2"]],"a":[["1.75","0"]]}'
    parser = DepthParser()
    got = [parser.parse(r) for r in (raw, bytearray(raw), raw.decode(), raw)]
    assert got[0] is not None and got[0].bids == [(1.5, 2.0)] and got[0].asks == [(1.75, 0.0)]
    assert all(g == got[0] for g in got)


def test_coin_m_diffs_with_their_pair_take_the_fast_path() -> None:
    """COIN-M's depthUpdate names the pair (``ps``) as Binance documents it; the fast path
    declined every such diff, leaving a COIN-M feed on the slow general parser."""
    raw = (
        b'{"stream":"btcusd_perp@depth@100ms","data":{"e":"depthUpdate","E":7,"T":6,'
        b'"s":"BTCUSD_PERP","ps":"BTCUSD","U":10,"u":12,"pu":8,"b":[["9517.6","10"]],'
        b'"a":[["9518.5","0"]]}}'
    )
    parser = DepthParser()
    assert _check(parser, raw)
    assert parser.parse(raw.replace(b'"ps":"BTCUSD"', b'"ps":7')) is None  # not a string
    assert parser.parse(raw.replace(b'"U":10', b'"ps":"X","U":10')) is None  # twice


@pytest.mark.parametrize(
    "raw",
    [
        b'{"e":"depthUpdate","E":1,"s":"X","U":1,"u":1,"b":[["0","1"]],"a":[]}',  # zero price
        b'{"e":"depthUpdate","E":1,"s":"X","U":2,"u":1,"b":[],"a":[]}',  # U > u
        b'{"e":"depthUpdate","E":1,"s":"X","U":1,"u":1,"b":[],"a":[],"b":[]}',  # duplicate key
        b'{"e":"depthUpdate","E":1,"s":"X","U":1,"u":1,"b":[["1.5e3","1"]],"a":[]}',
        b'{"e":"depthUpdate","E":1,"s":"X","U":1,"u":1,"b":[["1","1"]],"a":[]} ',  # whitespace
        b'{"e":"depthUpdate","E":1,"s":"X","U":1,"u":1,"b":[["12345678901234567","1"]],"a":[]}',
        b'{"e":"trade","E":1,"s":"X","t":1,"p":"1","q":"1","T":1,"m":true}',
        b'{"stream":"x@depth10@100ms","data":{"e":"depthUpdate","E":1,"s":"X","U":1,"u":1,'
        b'"b":[],"a":[]}}',
    ],
)
def test_declines_what_the_general_path_must_judge(raw: bytes) -> None:
    assert DepthParser().parse(raw) is None


def test_exactness_matches_python_float_on_hard_decimals() -> None:
    """Halfway-looking and long decimals convert to the same double as float()."""
    rng = random.Random(3)
    texts = ["0.1", "0.3", "9007199254740993", "900719925474099.3", "1.0000000000000002"]
    texts += [f"{rng.randrange(1, 10**9)}.{rng.randrange(10**8):08d}" for _ in range(2000)]
    parser = DepthParser()
    for t in texts:
        raw = (
            b'{"e":"depthUpdate","E":1,"s":"X","U":1,"u":1,"b":[["'
            + t.encode()
            + b'","1"]],"a":[]}'
        )
        got = parser.parse(raw)
        if got is not None:
            assert got.bids[0][0] == float(t), t


def _capture_lines(path: Path, n: int) -> list[bytes]:
    with gzip.open(path, "rb") as fh:
        return [line.split(b" ", 1)[1].rstrip(b"\n") for line in itertools.islice(fh, n)]


@pytest.mark.parametrize(
    "rel",
    [
        "hftbacktest-binance/usdm/btcusdt_20240808.gz",
        "hftbacktest-binance/spot/btcusdt_20240808.gz",
    ],
)
def test_recorded_binance_messages_agree_with_the_reference(shared_data: Path, rel: str) -> None:
    path = shared_data / rel
    if not path.exists():
        pytest.skip(f"{rel} not present")
    parser = DepthParser()
    lines = _capture_lines(path, 20_000)
    taken = sum(_check(parser, raw) for raw in lines)
    diffs = sum(b'"depthUpdate"' in raw for raw in lines)
    assert diffs > 1000 and taken == diffs  # real diffs always take the fast path


def test_fill_levels_kernel_matches_its_reference() -> None:
    rng = np.random.default_rng(5)
    for n in (0, 1, 7, 40):
        flat = flat_levels([(float(p), float(q)) for p, q in rng.random((n, 2)) * 100])
        a = np.zeros(n + 3, dtype=EVENT_DTYPE)
        b = np.zeros(n + 3, dtype=EVENT_DTYPE)
        kind = KIND_DEPTH if n % 2 else KIND_SNAPSHOT
        assert fill_levels(a, 2, flat, -1, kind, 11, 12) == fill_levels_ref(
            b, 2, flat, -1, kind, 11, 12
        )
        assert a.tobytes() == b.tobytes()


def _diff_ref(bids: np.ndarray, asks: np.ndarray, exch: int, local: int) -> np.ndarray:
    """deletions_first on level lists, written with the plain reference writer."""

    def pairs(flat: np.ndarray) -> list[tuple[float, float]]:
        return list(zip(flat[0::2].tolist(), flat[1::2].tolist(), strict=True))

    out = np.zeros((len(bids) + len(asks)) // 2, dtype=EVENT_DTYPE)
    k = 0
    for levels, side in zip(deletions_first(pairs(bids), pairs(asks)), (1, -1, 1, -1), strict=True):
        k = fill_levels_ref(out, k, flat_levels(levels) if levels else np.zeros(0), side,
                            KIND_DEPTH, exch, local)  # fmt: skip
    return out


def test_fill_diff_kernel_matches_deletions_first() -> None:
    """Deletions of both sides first, in message order; a price both deleted and set on one side
    keeps the message's order. Prices on a coarse grid so those repeats do happen."""
    rng = np.random.default_rng(11)
    repeats = 0
    for _ in range(300):
        nb, na = rng.integers(0, 8, size=2)
        lv = rng.integers(0, 6, size=(nb + na, 2)).astype(np.float64)
        lv[:, 1] *= rng.random(nb + na) < 0.6  # about 40 % deletions
        bids, asks = lv[:nb].reshape(-1), lv[nb:].reshape(-1)
        got = np.zeros(nb + na, dtype=EVENT_DTYPE)
        assert fill_diff(got, bids, asks, 7, 9) == nb + na
        assert got.tobytes() == _diff_ref(bids, asks, 7, 9).tobytes()
        # at an offset into a larger arena (the live stage's use), nothing before it touched
        arena = np.zeros(nb + na + 3, dtype=EVENT_DTYPE)
        assert fill_diff(arena, bids, asks, 7, 9, 3) == nb + na
        assert arena[3:].tobytes() == got.tobytes() and not arena[:3]["kind"].any()
        b = lv[:nb]
        repeats += bool(set(b[b[:, 1] == 0, 0]) & set(b[b[:, 1] != 0, 0]))
    assert repeats > 10  # the fallback branch was exercised


def test_put_one_writes_the_record_numpy_would() -> None:
    got = np.zeros(3, dtype=EVENT_DTYPE)
    want = np.zeros(3, dtype=EVENT_DTYPE)
    put_one(got, 1, 5, 6, 2, -1, 101.25, 0.5)
    want[1] = (5, 6, 101.25, 0.5, 2, -1)
    assert got.tobytes() == want.tobytes()


def test_fill_diff_never_crosses_a_book_the_message_leaves_uncrossed() -> None:
    """Market moves up through two asks: bids first would cross the book mid-message."""
    bids = np.array([101.0, 1.0, 99.0, 0.0])  # new best bid 101, drop 99
    asks = np.array([100.0, 0.0, 101.0, 0.0, 102.0, 3.0])  # asks 100, 101 gone
    rec = np.zeros(5, dtype=EVENT_DTYPE)
    fill_diff(rec, bids, asks, 1, 1)
    assert rec["qty"].tolist()[:3] == [0.0, 0.0, 0.0]  # the three deletions come first
    assert rec["price"].tolist() == [99.0, 100.0, 101.0, 101.0, 102.0]
    assert rec["side"].tolist() == [1, -1, -1, 1, -1]


def test_one_trade_kernel_for_spot_and_futures_the_live_path_takes_spot() -> None:
    """The converter and the live client share ``_trade_payload``: a futures trade (with its
    ``X`` order type) parses, and the live TradeParser still leaves it to the general path."""
    from mm_sim.venues.binance.fastparse import T_SIZE, T_X0, T_X1, TradeParser, _trade_payload

    fut = b'{"e":"trade","E":7,"T":6,"s":"BTCUSDT","t":9,"p":"1.5","q":"2","X":"MARKET","m":true}'
    spot = b'{"e":"trade","E":7,"s":"BTCUSDT","t":9,"p":"1.5","q":"2","T":6,"m":true,"M":true}'
    ints, vals = np.zeros(T_SIZE, dtype=np.int64), np.zeros(2)
    buf = np.frombuffer(fut, dtype=np.uint8)
    assert _trade_payload(buf, 0, ints, vals) == len(fut)  # the index after its }
    assert fut[ints[T_X0] : ints[T_X1]] == b"MARKET" and vals.tolist() == [1.5, 2.0]
    assert _trade_payload(np.frombuffer(spot, dtype=np.uint8), 0, ints, vals) == len(spot)
    assert ints[T_X1] == -1  # no X: a spot trade
    assert TradeParser().scan(fut) is None and TradeParser().scan(spot) is not None


_DECIMAL_BYTES = st.lists(
    st.sampled_from([b"0", b"1", b"5", b"9", b".", b"0000000000", b"9999999999", b"-", b"e", b"a"]),
    max_size=12,
).map(b"".join)


@settings(max_examples=600, deadline=None)
@given(body=_DECIMAL_BYTES, tail=st.sampled_from([b'"', b'",', b"", b"x"]), positive=st.booleans())
def test_decimal_fast_loops_agree_with_the_checked_loop(
    body: bytes, tail: bytes, positive: bool
) -> None:
    """``_decimal``'s two tight loops and end-of-number checks against the digit-by-digit loop:
    the same index and the same bits, for valid numbers, long ones (over 18 digits, leading
    zeros, past 2**53) and every malformed shape (signs, exponents, dots, letters, no quote)."""
    from mm_sim.venues.binance.fastparse import _decimal, _decimal_checked

    buf = np.frombuffer(b'"' + body + tail, dtype=np.uint8).copy()
    a, b = np.full(1, -1.0), np.full(1, -1.0)
    assert _decimal(buf, 0, a, 0, positive) == _decimal_checked(buf, 0, b, 0, positive)
    assert a.tobytes() == b.tobytes()
