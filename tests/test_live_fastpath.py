"""The live client's object-free path for continuing diffs gives exactly what the general path
(DepthDiff → BookSync.on_diff → actions) gives: same events, counters, sync state.

Two processors see the same frames; one takes them as raw bytes (``on_raw``: the fast path when
the diff continues the synced book), the other as parsed messages (``on_message(decode(raw))``:
always the general path). Sequences mix continuing diffs with stale, overlapping and gapping
ones, crossing books, other symbols, lower-case symbols, partial-book streams and trades.
"""

from __future__ import annotations

import json
import random

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mm_sim.venues.binance.client import StreamProcessor
from mm_sim.venues.binance.fastparse import (
    T_E,
    T_HAS_T,
    T_M,
    T_SYM0,
    T_SYM1,
    T_T,
    T_TID,
    TradeParser,
)
from mm_sim.venues.binance.messages import DepthSnapshot, Trade, decode, parse_payload

SYM = "BTCUSDT"


def _levels(rng: random.Random, base: float, sign: int, n: int) -> list[list[str]]:
    out = []
    for _ in range(n):
        p = base + sign * rng.randint(0, 12) * 0.5
        q = 0.0 if rng.random() < 0.25 else rng.randint(1, 50) / 10
        out.append([f"{p:.1f}", f"{q:g}"])
    return out


def _wire(stream: str, data: dict) -> bytes:
    return json.dumps({"stream": stream, "data": data}, separators=(",", ":")).encode()


def _frames(seed: int, market: str, n: int) -> list[tuple[bytes, int]]:
    """Frames with receive times, and where a snapshot (marker ``b""``) arrives."""
    rng = random.Random(seed)
    futures = market == "futures"
    last = 100
    out: list[tuple[bytes, int]] = []
    tid = 0
    t = 1_000
    for _ in range(n):
        t += rng.randint(0, 3)
        r = rng.random()
        if r < 0.2:
            tid += rng.choice([1, 1, 1, 0, -1])
            d = {"e": "trade", "E": t, "s": SYM, "t": tid, "p": "100.5", "q": "0.2", "T": t + 1,
                 "m": rng.random() < 0.5, "M": True}  # fmt: skip
            v = rng.random()
            if v < 0.05:
                d["q"] = "0.000"  # not a market print: skipped
            elif v < 0.1:
                d["s"] = "btcusdt"  # the general path decides (upper-cases it)
            elif v < 0.15:
                del d["T"]  # trade time defaults to event time
            elif v < 0.2:
                d["X"] = "MARKET"  # a key the fast parser does not take
            out.append((_wire("btcusdt@trade", d), t))
            continue
        if r < 0.22:
            out.append((b"", t))  # a snapshot arrives here
            continue
        kind = rng.random()
        first = last + 1
        if kind < 0.05:
            first = last + 3  # gap
        elif kind < 0.1:
            first = max(1, last - 2)  # overlap or stale
        final = first + rng.randint(0, 3)
        sym = SYM if rng.random() > 0.05 else rng.choice(["btcusdt", "ETHUSDT"])
        cross = rng.random() < 0.03
        bb = 101.0 if cross else 99.5
        d = {"e": "depthUpdate", "E": t, "s": sym, "U": first, "u": final}
        if futures:
            d["T"] = t
            d["pu"] = last if rng.random() > 0.05 else last - 1
        d["b"] = _levels(rng, bb, -1, rng.randint(0, 6))
        d["a"] = _levels(rng, 100.5, 1, rng.randint(0, 6))
        stream = "btcusdt@depth@100ms" if rng.random() > 0.03 else "btcusdt@depth5@100ms"
        out.append((_wire(stream, d), t))
        if final > last and stream.endswith("@depth@100ms") and sym == SYM:
            last = final
    return out


def _snapshot(proc: StreamProcessor, t: int) -> DepthSnapshot:
    """A snapshot that the other processor's buffered diffs can continue."""
    first = proc.sync.first_buffered_id
    lid = first if first is not None else 100
    return DepthSnapshot(lid, [(99.0, 1.0), (98.5, 2.0)], [(100.5, 1.0), (101.0, 3.0)], t, t)


def _same(a: StreamProcessor, b: StreamProcessor) -> None:
    ea, eb = a.take(), b.take()
    assert ea.dtype == eb.dtype and len(ea) == len(eb)
    assert np.array_equal(ea, eb)
    assert a.counters.as_dict() == b.counters.as_dict()
    assert a.sync.counters.as_dict() == b.sync.counters.as_dict()
    assert (a.sync.state, a.sync.last_update_id) == (b.sync.state, b.sync.last_update_id)
    assert (a.need_snapshot, a.last_exch, a.last_local) == (
        b.need_snapshot,
        b.last_exch,
        b.last_local,
    )
    assert a.top(5) == b.top(5)


@settings(max_examples=40, deadline=None)
@given(seed=st.integers(0, 10_000), market=st.sampled_from(["spot", "futures"]))
def test_fast_path_equals_general_path(seed: int, market: str) -> None:
    fast = StreamProcessor(SYM, market)
    slow = StreamProcessor(SYM, market)
    for raw, t in _frames(seed, market, 200):
        if not raw:
            snap = _snapshot(slow, t)
            fast.on_snapshot(snap, t)
            slow.on_snapshot(DepthSnapshot(snap.last_update_id, snap.bids, snap.asks, t, t), t)
        else:
            fast.on_raw(raw, t * 1000)
            msg = slow.decode(raw)
            if msg is not None:
                slow.on_message(msg, t * 1000)
        fast.need_snapshot = slow.need_snapshot = False
        _same(fast, slow)


@pytest.mark.parametrize("market", ["spot", "futures"])
def test_fast_path_is_taken_for_continuing_diffs(market: str, monkeypatch) -> None:
    """The sequences above do exercise the fast path (else the test would prove nothing)."""
    proc = StreamProcessor(SYM, market)
    calls = {"general": 0}
    real = proc.sync.on_diff

    def counting(d):  # type: ignore[no-untyped-def]
        calls["general"] += 1
        return real(d)

    monkeypatch.setattr(proc.sync, "on_diff", counting)
    frames = [(r, t) for r, t in _frames(4, market, 400) if r]
    proc.on_raw(frames[0][0], 1)
    proc.on_snapshot(_snapshot(proc, 1), 1)
    for raw, t in frames[1:]:
        proc.on_raw(raw, t)
        if proc.need_snapshot:
            proc.need_snapshot = False
            proc.on_snapshot(_snapshot(proc, t), t)
    c = proc.sync.counters
    assert c.applied > 2 * calls["general"]
    trades = [r for r, _ in frames if b'"trade"' in r]
    assert sum(TradeParser().scan(r) is not None for r in trades) > len(trades) // 2
    assert c.crossed > 0 and c.gaps > 0  # the fast path's resync and its limits both occur


_TRADE_FRAME = (
    b'{"stream":"btcusdt@trade","data":{"e":"trade","E":1700000000123,"s":"BTCUSDT",'
    b'"t":4242,"p":"30001.50","q":"0.012","T":1700000000120,"m":true,"M":true}}'
)


@settings(max_examples=400, deadline=None)
@given(
    pos=st.integers(0, len(_TRADE_FRAME) - 1),
    byte=st.sampled_from(list(b'0159.,:"{}[] -eEtTmMsqpX')),
)
def test_trade_parser_accepts_only_what_the_general_path_reads_the_same(
    pos: int, byte: int
) -> None:
    """A one-byte mutation of a trade frame: when the fast parser accepts it, the general
    parser must read the very same trade from it."""
    raw = _TRADE_FRAME[:pos] + bytes([byte]) + _TRADE_FRAME[pos + 1 :]
    got = TradeParser().scan(raw)
    if got is None:
        return
    iv, (price, qty) = got
    msg = parse_payload(*decode(raw))
    assert isinstance(msg, Trade)
    assert (msg.trade_id, msg.event_ms, msg.trade_ms, msg.buyer_maker) == (
        iv[T_TID],
        iv[T_E],
        iv[T_T] if iv[T_HAS_T] else iv[T_E],
        bool(iv[T_M]),
    )
    assert (msg.price, msg.qty, msg.order_type) == (price, qty, None)
    assert raw[iv[T_SYM0] : iv[T_SYM1]].decode() == msg.symbol


def test_trade_parser_reads_the_plain_frame() -> None:
    got = TradeParser().scan(_TRADE_FRAME)
    assert got is not None
    assert got[1] == [30001.5, 0.012] and got[0][T_TID] == 4242 and got[0][T_M] == 1
