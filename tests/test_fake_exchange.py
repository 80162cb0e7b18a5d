"""The fake exchange speaks Binance's wire format and keeps an exact, queryable true book."""

from __future__ import annotations

import asyncio
import itertools
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import aiohttp
import numpy as np
import pytest
from websockets.asyncio.client import connect as ws_connect

from mm_sim.events import ASK, BID, EVENT_DTYPE, KIND_CLEAR, KIND_DEPTH, KIND_SNAPSHOT, Instrument
from mm_sim.venues.binance.fake_exchange import FakeExchange, FaultPlan, TrueBook
from mm_sim.venues.binance.messages import (
    DepthDiff,
    Trade,
    decode,
    parse_exchange_info,
    parse_message,
    parse_snapshot,
)

REPO = Path(__file__).resolve().parent.parent


def connect(url: str, **kwargs: Any) -> Any:
    """A test's websocket client, with no cap on the frames it holds unread (as the live client
    runs). Why: with websockets' default cap of 16, a client that stops reading while the fake
    keeps sending stops reading the socket, so the server's answer to its close frame waits
    behind the unread frames, and every close took websockets' 10 s close timeout."""
    return ws_connect(url, max_queue=None, **kwargs)


INST = Instrument("TESTUSDT", "test", 0.5, 0.01, 1)


def _feed(seconds: float = 30.0) -> np.ndarray:
    """A tiny hand-made market: a snapshot, then level updates and trades every 20 ms."""
    rng = np.random.default_rng(3)
    rows = [(0, KIND_CLEAR, 0, 0.0, 0.0)]
    rows += [(0, KIND_SNAPSHOT, BID, 100.0 - 0.5 * i, 1.0 + i) for i in range(20)]
    rows += [(0, KIND_SNAPSHOT, ASK, 100.5 + 0.5 * i, 1.0 + i) for i in range(20)]
    t = 0
    while t < seconds * 1e9:
        t += 20_000_000
        side = BID if rng.random() < 0.5 else ASK
        px = (
            (100.0 - 0.5 * rng.integers(0, 20))
            if side == BID
            else 100.5 + 0.5 * rng.integers(0, 20)
        )
        rows.append((t, KIND_DEPTH, side, px, float(rng.integers(0, 5))))
        if rng.random() < 0.2:
            rows.append((t, 4, side, 100.25, 0.1))
    ev = np.zeros(len(rows), dtype=EVENT_DTYPE)
    for i, (ts, k, s, p, q) in enumerate(rows):
        ev[i] = (ts + 1_700_000_000_000_000_000, ts + 1_700_000_000_000_000_000, p, q, k, s)
    return ev


def test_true_book_history_replays_exactly() -> None:
    tb = TrueBook(history=3)
    tb.apply(1, 1, [(BID, 10.0, 1.0), (ASK, 11.0, 2.0)])
    tb.apply(2, 3, [(BID, 10.0, 0.0), (BID, 9.5, 4.0)])
    tb.apply(4, 4, [(ASK, 11.5, 1.0)])
    tb.apply(5, 6, [(ASK, 11.0, 0.0)])  # evicts id 1 into the base
    assert tb.at(6) == ({9.5: 4.0}, {11.5: 1.0})
    assert tb.at(3) == ({9.5: 4.0}, {11.0: 2.0})
    assert tb.at(1) == ({10.0: 1.0}, {11.0: 2.0})  # the base itself
    assert tb.at(2) is None  # not an id any diff ended at
    assert tb.at(0) is None  # older than the kept history


def test_fault_plan_rejects_unknown_faults_and_rates() -> None:
    assert FaultPlan.parse("gap,dup", 0.1).enabled == {"gap", "dup"}
    with pytest.raises(ValueError, match="unknown fault"):
        FaultPlan.parse("gap,explode", 0.1)
    with pytest.raises(ValueError, match="rate"):
        FaultPlan.parse("gap", 1.5)


@pytest.mark.parametrize("market", ["spot", "futures"])
async def test_rest_endpoints_in_binance_format(market: str) -> None:
    async with FakeExchange(_feed(), INST, market=market, speed=10) as fx:
        await asyncio.sleep(0.2)
        prefix = "/fapi/v1" if market == "futures" else "/api/v3"
        async with aiohttp.ClientSession() as s:
            async with s.get(f"{fx.rest_base}{prefix}/depth?symbol=TESTUSDT&limit=5") as r:
                body = await r.json()
            snap = parse_snapshot(body, "TESTUSDT")
            assert len(snap.bids) == len(snap.asks) == 5
            assert snap.bids[0][0] > snap.bids[1][0] and snap.asks[0][0] < snap.asks[1][0]
            assert (snap.event_ms is not None) == (market == "futures")
            assert isinstance(body["bids"][0][0], str)  # decimal strings, as Binance
            async with s.get(f"{fx.rest_base}{prefix}/depth?symbol=NOPE") as r:
                assert r.status == 400 and (await r.json())["code"] == -1121
            async with s.get(f"{fx.rest_base}{prefix}/depth?symbol=TESTUSDT&limit=0") as r:
                assert r.status == 400
            async with s.get(f"{fx.rest_base}{prefix}/exchangeInfo") as r:
                info = parse_exchange_info(await r.json())
            assert info["TESTUSDT"].tick_size == 0.5 and info["TESTUSDT"].lot_size == 0.01
            async with s.get(f"{fx.rest_base}/fake/book?update_id={snap.last_update_id}") as r:
                truth = await r.json()
            assert [tuple(x) for x in truth["bids"][:5]] == snap.bids


@pytest.mark.parametrize("market", ["spot", "futures"])
async def test_stream_is_continuous_and_rebuilds_the_true_book(market: str) -> None:
    """Raw websocket (SUBSCRIBE on /ws): ids chain, and diffs on a snapshot give the truth."""
    async with FakeExchange(_feed(), INST, market=market, speed=10) as fx:
        await asyncio.sleep(0.1)
        async with connect(f"{fx.ws_base}/ws") as ws:
            await ws.send(json.dumps({"method": "SUBSCRIBE", "params": ["testusdt@depth@100ms",
                                      "testusdt@trade"], "id": 7}))  # fmt: skip
            assert json.loads(await ws.recv()) == {"result": None, "id": 7}
            diffs: list[DepthDiff] = []
            trades: list[Trade] = []
            while len(diffs) < 40:
                m = parse_message(await asyncio.wait_for(ws.recv(), 2))
                (diffs if isinstance(m, DepthDiff) else trades).append(m)  # type: ignore[arg-type]
        for a, b in itertools.pairwise(diffs):
            if market == "futures":
                assert b.prev_final_id == a.final_id
            else:
                assert b.first_id == a.final_id + 1
        assert trades and all(t.symbol == "TESTUSDT" for t in trades)
        assert [t.trade_id for t in trades] == sorted({t.trade_id for t in trades})
        # Rebuild from the true book at the first diff, apply the rest, compare at the last.
        async with aiohttp.ClientSession() as s:
            first, last = diffs[0].final_id, diffs[-1].final_id
            async with s.get(f"{fx.rest_base}/fake/book?update_id={first}&depth=100") as r:
                b0 = await r.json()
            async with s.get(f"{fx.rest_base}/fake/book?update_id={last}&depth=100") as r:
                b1 = await r.json()
        bids = {p: q for p, q in b0["bids"]}
        asks = {p: q for p, q in b0["asks"]}
        for d in diffs[1:]:
            for book, levels in ((bids, d.bids), (asks, d.asks)):
                for p, q in levels:
                    if q > 0:
                        book[p] = q
                    else:
                        book.pop(p, None)
        assert sorted(bids.items(), reverse=True) == [tuple(x) for x in b1["bids"]]
        assert sorted(asks.items()) == [tuple(x) for x in b1["asks"]]


async def test_injected_malformed_frame_is_not_json() -> None:
    """Injected before anyone subscribes, the fault waits for a receiver: it used to be spent
    on a diff sent to nobody when the client connected late (a loaded machine)."""
    async with FakeExchange(_feed(), INST, speed=10) as fx:
        fx.faults.injected["malformed"] = 1
        await asyncio.sleep(0.5)  # diffs broadcast meanwhile, with no client to hear them
        async with connect(f"{fx.ws_base}/stream?streams=testusdt@depth@100ms") as ws:
            bad = 0
            for _ in range(20):
                raw = await asyncio.wait_for(ws.recv(), 2)
                try:
                    decode(raw)
                except ValueError:
                    bad += 1
            assert bad == 1 and fx.faults.fired["malformed"] == 1


def test_message_rate_sets_the_speed() -> None:
    ev = _feed(10.0)
    fx = FakeExchange(ev, INST, msg_rate=500.0)
    kinds, ts = ev["kind"], ev["exch_ts"]
    trades = int(((kinds == 4) & (ev["qty"] > 0)).sum())
    buckets = len(np.unique((ts[kinds != 4] - ts[0]) // 100_000_000))
    span_s = (ts[-1] - ts[0] + 100_000_000) / 1e9
    assert fx.feed_msg_rate == pytest.approx((trades + buckets) / span_s)
    assert fx.speed == pytest.approx(500.0 / fx.feed_msg_rate)
    with pytest.raises(ValueError, match="rate"):
        FakeExchange(ev, INST, msg_rate=0.0)


@pytest.mark.parametrize(("fault", "status"), [("rate-limit", 429), ("ban", 418)])
async def test_rate_limited_snapshot_answers_with_retry_after(fault: str, status: int) -> None:
    async with FakeExchange(_feed(), INST, speed=10) as fx:
        fx.faults.retry_after_s = 7
        async with aiohttp.ClientSession() as s:
            async with s.post(f"{fx.rest_base}/fake/inject?fault={fault}") as r:
                assert r.status == 200
            url = f"{fx.rest_base}/api/v3/depth?symbol=TESTUSDT&limit=5"
            async with s.get(url) as r:
                assert r.status == status and r.headers["Retry-After"] == "7"
                assert (await r.json())["code"] == -1003
            async with s.get(url) as r:  # one-shot: the next one is served
                assert r.status == 200
            async with s.get(f"{fx.rest_base}/fake/info") as r:
                info = await r.json()
        assert [st for _, st in info["snapshot_requests"]] == [status, 200]
        assert info["fired"][fault] == 1


async def test_server_shutdown_is_announced_then_the_connection_closes() -> None:
    from websockets.exceptions import ConnectionClosed

    async with FakeExchange(_feed(), INST, speed=10) as fx:
        fx.faults.shutdown_grace_s = 0.2
        async with connect(f"{fx.ws_base}/stream?streams=testusdt@depth@100ms") as ws:
            await asyncio.wait_for(ws.recv(), 2)
            fx.faults.injected["shutdown"] = 1
            seen = []
            with pytest.raises(ConnectionClosed):
                while True:
                    seen.append(json.loads(await asyncio.wait_for(ws.recv(), 5)))
        notices = [m for m in seen if m.get("e") == "serverShutdown"]
        assert len(notices) == 1 and isinstance(notices[0]["E"], int)
        assert fx.stats["closed_shutdown"] == 1
        # New connections are served as usual.
        async with connect(f"{fx.ws_base}/stream?streams=testusdt@depth@100ms") as ws:
            assert "depthUpdate" in await asyncio.wait_for(ws.recv(), 2)


async def test_a_consumer_that_stops_reading_is_dropped() -> None:
    async with FakeExchange(_feed(), INST, msg_rate=20_000, max_client_buffer=1 << 16) as fx:
        url = f"{fx.ws_base}/stream?streams=testusdt@depth@100ms/testusdt@trade"
        # The library's default cap: it stops reading the socket after 16 frames we never read.
        async with ws_connect(url, close_timeout=0.1):
            for _ in range(500):
                if fx.stats["slow_client_disconnects"]:
                    break
                await asyncio.sleep(0.01)
        assert fx.stats["slow_client_disconnects"] == 1
        send = fx.send_stats()
        assert send["messages"] > 0 and send["late_us"]["p50"] is not None


async def test_send_stalls_are_reported_as_episodes() -> None:
    """The server blocked for 30 ms: the messages due meanwhile leave late, in one episode."""
    async with FakeExchange(_feed(), INST, msg_rate=5_000) as fx:
        url = f"{fx.ws_base}/stream?streams=testusdt@depth@100ms/testusdt@trade"
        async with connect(url) as ws:
            for _ in range(50):
                await asyncio.wait_for(ws.recv(), 2)
            t_block = time.monotonic()
            time.sleep(0.03)  # blocks the loop: the server cannot send meanwhile
            for _ in range(50):
                await asyncio.wait_for(ws.recv(), 2)
    eps = fx.send_stats()["stalls"]["episodes"]
    ours = [w for t, w in eps if t_block - 0.02 < t < t_block + 0.01]
    assert ours and 25_000 < max(ours) < 1e6, (t_block, eps)


def test_the_server_stops_when_its_feed_producer_fails() -> None:
    """A producer that dies leaves a server listening with nothing behind it: `fake-exchange`
    served no data until stopped, then printed the error. It now stops with it at once."""
    import dataclasses
    import gc

    from mm_sim.commands.fake_exchange import _serve

    inst = dataclasses.replace(INST)
    inst.price_decimals = -3  # what a sidecar could say before instruments checked it
    fx = FakeExchange(_feed(), inst, speed=10)
    try:
        with pytest.raises(ValueError, match="unsupported format character"):
            asyncio.run(asyncio.wait_for(_serve(fx), 60))
    finally:
        gc.enable()  # _serve turns automatic collections off for a serving process
        gc.unfreeze()


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["--speed", "inf"], "--speed must be a finite number > 0, got inf"),
        (["--msg-rate", "inf"], "--msg-rate must be a finite number > 0, got inf"),
        (["--speed", "1e300"], "speed must be > 0 and at most 10000, got 1e+300"),
        (["--msg-rate", "1e300"], "(--msg-rate 1e+300 on a feed of"),
        (["--stream-delay-s", "nan"], "--stream-delay-s = nan: expected a finite number"),
        (["--stream-delay-s", "inf"], "--stream-delay-s = inf: expected a finite number"),
        (["--retry-after-s", "inf"], "--retry-after-s = inf: expected a finite number"),
        (["--shutdown-grace-s", "inf"], "--shutdown-grace-s = inf: expected a finite number"),
    ],
)
def test_cli_refuses_an_endless_clock_or_delay_before_listening(
    args: list[str], needle: str
) -> None:
    """--speed/--msg-rate inf or 1e300 listened, then ended in an internal error (exit 70) on
    the first client; --stream-delay-s inf or nan listened and never sent a frame (a recording
    of 0 events, exit 0); an infinite Retry-After or shutdown grace never ended."""
    env = {**os.environ}
    env.setdefault("NUMBA_CACHE_DIR", str(REPO / ".venv" / "numba-cache"))
    r = subprocess.run(
        [sys.executable, "-m", "mm_sim", "fake-exchange", "--port", "0", *args],
        capture_output=True, text=True, cwd=REPO, env=env, timeout=300,
    )  # fmt: skip
    assert r.returncode == 2, (r.returncode, r.stderr[-800:])
    assert needle in r.stderr and "Traceback" not in r.stderr
    assert "listening" not in r.stdout


@pytest.mark.parametrize(
    ("market", "inst", "nq"),
    [
        ("spot", INST, False),
        ("futures", INST, True),  # USD-M: nq beside q
        ("futures", Instrument("TESTUSD_PERP", "test", 0.5, 0.01, 1, True, 100.0), False),
    ],
)
async def test_each_aggtrade_is_its_trade_in_the_markets_layout(
    market: str, inst: Instrument, nq: bool
) -> None:
    """An aggregate per trade, member for member as Binance sends aggTrade on that market (one
    format, with an nq member on USD-M only)."""
    async with FakeExchange(_feed(), inst, market=market, speed=10) as fx:
        sym = fx.symbol.lower()
        async with (
            connect(f"{fx.ws_base}/ws/{sym}@trade") as raw_ws,
            connect(f"{fx.ws_base}/ws/{sym}@aggTrade") as agg_ws,
        ):
            trades = [json.loads(await asyncio.wait_for(raw_ws.recv(), 5)) for _ in range(30)]
            aggs = {}
            while len(aggs) < 60:
                text = await asyncio.wait_for(agg_ws.recv(), 5)
                aggs[json.loads(text)["a"]] = text
    matched = [t for t in trades if t["t"] in aggs]
    assert len(matched) >= 20
    for t in matched:
        member = f'"nq":"{t["q"]}",' if nq else ""
        assert aggs[t["t"]] == (
            f'{{"e":"aggTrade","E":{t["E"]},"s":"{t["s"]}","a":{t["t"]},"p":"{t["p"]}",'
            f'"q":"{t["q"]}",{member}"f":{t["t"]},"l":{t["t"]},"T":{t["T"]},'
            f'"m":{str(t["m"]).lower()}}}'
        )


async def test_a_coinm_symbol_is_served_as_binance_spells_it() -> None:
    """A COIN-M feed's own symbol keeps its underscore (BTCUSD_PERP, not BTCUSDPERP), and its
    diffs name the pair before it (ps BTCUSD), as Binance's COIN-M streams do."""
    inst = Instrument("BTCUSD_PERP", "test", 0.5, 1.0, 1, inverse=True, contract_size=100.0)
    async with FakeExchange(_feed(), inst, market="futures", speed=10) as fx:
        assert fx.symbol == "BTCUSD_PERP"
        await asyncio.sleep(0.1)
        async with connect(f"{fx.ws_base}/ws") as ws:
            await ws.send(json.dumps({"method": "SUBSCRIBE", "params": ["btcusd_perp@depth@100ms"],
                                      "id": 1}))  # fmt: skip
            assert json.loads(await ws.recv()) == {"result": None, "id": 1}
            diff = json.loads(await asyncio.wait_for(ws.recv(), 2))
        assert (diff["e"], diff["s"], diff["ps"]) == ("depthUpdate", "BTCUSD_PERP", "BTCUSD")
        url = f"{fx.rest_base}/dapi/v1/depth?symbol=BTCUSD_PERP&limit=5"
        async with aiohttp.ClientSession() as s, s.get(url) as r:
            assert r.status == 200, await r.text()
            assert len(parse_snapshot(await r.json(), "BTCUSD_PERP").bids) == 5
