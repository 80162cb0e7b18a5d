"""The real client against the real fake exchange over loopback: faults, seams, reconnects.

After every injected fault the client's book must equal the server's TRUE book (top levels and
update id, from ``/fake/book``) within one resync. Each test is bounded by ``_until``.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import aiohttp
import numpy as np
import pytest

from mm_sim.events import KIND_CLEAR, KIND_DEPTH, KIND_NAMES, KIND_SNAPSHOT, KIND_TRADE
from mm_sim.feeds.convert.base import ConvertOptions
from mm_sim.feeds.spec import load_events, resolve_feed
from mm_sim.venues.binance.client import BinanceClient, ClientConfig, StreamProcessor
from mm_sim.venues.binance.fake_exchange import FakeExchange
from mm_sim.venues.binance.messages import DepthSnapshot, decode, parse_snapshot
from mm_sim.venues.binance.sync import Market, SyncState

SPEED = 20.0  # 200 diffs/s of exchange time: faults and recoveries take well under a second


@pytest.fixture(scope="module")
def feed() -> tuple[np.ndarray, object]:
    spec = resolve_feed("synthetic-short").model_copy(update={"duration_s": 60.0})
    events, instrument, _ = load_events(spec, 1)
    return events, instrument


HANG_S = 60.0  # waits end as soon as their condition holds; this only stops a hung test


async def _eventually(
    pred: Callable[[], bool],
    detail: Callable[[], object],
    step: Callable[[], Awaitable[object]] = lambda: asyncio.sleep(0.01),
) -> None:
    """Run ``step`` until ``pred`` holds; fail with ``detail`` only if the test hangs."""
    deadline = time.monotonic() + HANG_S
    while not pred():
        assert time.monotonic() < deadline, f"hung: condition not reached: {detail()}"
        await step()


async def _until(cl: BinanceClient, pred: Callable[[], bool]) -> None:
    """Poll the client (pull mode) until ``pred`` holds."""
    await _eventually(
        pred,
        lambda: f"{cl.counters.as_dict()} {cl.sync.counters.as_dict()} {cl.sync.state}",
        lambda: cl.poll(0.02),
    )


async def _true_book(fx: FakeExchange, uid: int, depth: int = 10) -> dict:
    async with (
        aiohttp.ClientSession() as s,
        s.get(f"{fx.rest_base}/fake/book", params={"update_id": uid, "depth": depth}) as r,
    ):
        assert r.status == 200, await r.text()
        return await r.json()


async def _assert_matches(fx: FakeExchange, cl: BinanceClient) -> None:
    await _until(cl, lambda: cl.sync.state is SyncState.SYNCED)
    uid = cl.proc.last_update_id
    assert uid is not None
    truth = await _true_book(fx, uid)
    bids, asks = cl.proc.top(10)
    assert len(bids) == len(asks) == 10
    assert [list(x) for x in bids] == truth["bids"]
    assert [list(x) for x in asks] == truth["asks"]


async def _inject(fx: FakeExchange, fault: str) -> None:
    async with (
        aiohttp.ClientSession() as s,
        s.post(f"{fx.rest_base}/fake/inject", params={"fault": fault}) as r,
    ):
        assert r.status == 200


def _cfg(fx: FakeExchange, **kw: object) -> ClientConfig:
    kw.setdefault("backoff_base_s", 0.05)
    kw.setdefault("snapshot_retry_base_s", 0.05)
    return ClientConfig(fx.symbol, fx.market, fx.ws_base, fx.rest_base, **kw)  # type: ignore[arg-type]


@contextlib.asynccontextmanager
async def _pair(
    feed: tuple[np.ndarray, object], market: str = "spot", **kw: object
) -> AsyncIterator[tuple[FakeExchange, BinanceClient]]:
    events, instrument = feed
    fx = FakeExchange(events, instrument, market=market, speed=SPEED)  # type: ignore[arg-type]
    await fx.start()
    await asyncio.sleep(0.25)  # some history, so a stale snapshot can be served
    cl = BinanceClient(_cfg(fx, **kw), clock=fx.now_ns)
    await cl.start()
    try:
        yield fx, cl
    finally:
        await cl.close()
        await fx.stop()


# (fault, how its detection shows, resyncs it may cost)
FAULT_CASES = {
    "gap": (lambda c, s: s.gaps >= 1, 1),
    "dup": (lambda c, s: s.dropped_stale >= 1, 0),
    "reorder": (lambda c, s: s.gaps >= 1, 1),
    "malformed": (lambda c, s: c.malformed >= 1 and s.gaps >= 1, 1),
    "disconnect": (lambda c, s: c.connects >= 2 and c.disconnects >= 1, 1),
    "stall": (lambda c, s: c.stale >= 1 and c.connects >= 2, 1),
}


@pytest.mark.parametrize("market", ["spot", "futures"])
@pytest.mark.parametrize("fault", sorted(FAULT_CASES))
async def test_book_equals_truth_after_each_fault(feed, fault: str, market: str) -> None:
    detected, max_resyncs = FAULT_CASES[fault]
    async with _pair(feed, market, stale_after_s=0.3) as (fx, cl):
        fx.faults.stall_s = 0.8
        await _assert_matches(fx, cl)
        before = cl.sync.counters.resyncs
        await _inject(fx, fault)
        await _until(cl, lambda: fx.faults.fired[fault] >= 1)
        await _until(cl, lambda: detected(cl.counters, cl.sync.counters))
        await _assert_matches(fx, cl)
        assert cl.sync.counters.resyncs - before <= max_resyncs
        assert cl.sync.counters.crossed == 0


async def test_gap_right_after_snapshot_seam_is_rejected(feed) -> None:
    events, instrument = feed
    async with FakeExchange(events, instrument, speed=SPEED) as fx:
        await _inject(fx, "gap-after-snapshot")
        async with BinanceClient(_cfg(fx), clock=fx.now_ns) as cl:
            await _until(cl, lambda: cl.sync.counters.rebases >= 2)
            s = cl.sync.counters
            assert fx.faults.fired["gap-after-snapshot"] == 1
            # The first snapshot was accepted, the diff continuing it never came: the next one
            # does not straddle the seam, so the book was discarded and re-based once more.
            assert s.gaps == 1 and s.resyncs == 1
            await _assert_matches(fx, cl)


async def test_buffered_diffs_kept_across_a_snapshot_retry(feed) -> None:
    events, instrument = feed
    async with FakeExchange(events, instrument, speed=SPEED) as fx:
        await asyncio.sleep(0.3)
        await _inject(fx, "stale-snapshot")
        async with BinanceClient(_cfg(fx), clock=fx.now_ns) as cl:
            await _until(cl, lambda: cl.sync.counters.rebases >= 1)
            s = cl.sync.counters
            assert fx.faults.fired["stale-snapshot"] == 1
            assert s.snapshots_too_old == 1  # refused, fetched again
            assert s.discarded == 0 and s.gaps == 0  # the buffer survived the retry...
            assert s.applied + s.dropped_stale >= 1  # ...and was replayed on the good snapshot
            assert cl.counters.snapshot_fetches == 2
            await _assert_matches(fx, cl)


async def test_failed_snapshot_is_retried(feed) -> None:
    events, instrument = feed
    async with FakeExchange(events, instrument, speed=SPEED) as fx:
        await _inject(fx, "snapshot-error")
        async with BinanceClient(_cfg(fx), clock=fx.now_ns) as cl:
            await _until(cl, lambda: cl.sync.counters.rebases >= 1)
            assert cl.counters.snapshot_failures == 1
            assert cl.sync.counters.gaps == 0
            await _assert_matches(fx, cl)


async def test_queue_overflow_is_counted_and_resynced(feed) -> None:
    async with _pair(feed, queue_size=8) as (fx, cl):
        await _assert_matches(fx, cl)
        await asyncio.sleep(0.4)  # a consumer that stops reading
        assert cl.counters.overflow > 0
        await _until(cl, lambda: cl.counters.overflow_resyncs >= 1)
        assert cl.sync.counters.resyncs >= 1
        # The reader never stopped: frames kept arriving while nobody consumed them.
        await _until(cl, lambda: cl.sync.counters.rebases >= 2)
        await _assert_matches(fx, cl)


@pytest.mark.parametrize("market", ["spot", "futures"])
async def test_proactive_reconnect_keeps_book_continuity(feed, market: str) -> None:
    async with _pair(feed, market, max_connection_s=0.4) as (fx, cl):
        await _until(cl, lambda: cl.counters.overlap_switches >= 2)
        s = cl.sync.counters
        assert cl.counters.rollovers >= 2 and cl.counters.connects >= 3
        assert s.resyncs == 0 and s.rebases == 1 and s.gaps == 0  # never lost the book
        await _assert_matches(fx, cl)


async def test_events_carry_both_clocks(feed) -> None:
    async with _pair(feed) as (_fx, cl):
        got = []
        await _until(cl, lambda: cl.sync.state is SyncState.SYNCED)

        async def take() -> None:
            got.append((await cl.poll(0.05)).events)

        await _eventually(lambda: sum(len(g) for g in got) >= 200, cl.counters.as_dict, take)
        ev = np.concatenate(got)
        assert set(np.unique(ev["kind"])) <= {KIND_DEPTH, KIND_TRADE, KIND_CLEAR, KIND_SNAPSHOT}
        assert np.all(np.diff(ev["exch_ts"]) >= 0)
        lag = ev["local_ts"] - ev["exch_ts"]
        # Receive time is on the exchange's clock (scaled by the fake's speed) and after the
        # event: a mixed-up clock would be off by years, a slow machine only by seconds.
        assert np.median(lag) >= 0 and np.median(lag) < 3_600 * 1_000_000_000


# --- a real recorded session through the client's parser path ------------------------------


def _sec(text: str) -> int:
    whole, _, frac = text.partition(".")
    return int(whole) * 1_000_000_000 + int((frac + "000000000")[:9])


def _replay_capture(ws: Path, http: Path, symbol: str) -> StreamProcessor:
    snaps: list[DepthSnapshot] = []
    for line in http.read_text().splitlines():
        url, _, rest = line.partition(" -> ")
        if f"symbol={symbol}&" not in url and not url.endswith(f"symbol={symbol}"):
            continue
        ts, _, body = rest.partition(": ")
        snap = parse_snapshot(decode(body)[0], symbol)
        snap.local_ts = _sec(ts)
        snaps.append(snap)
    snaps.sort(key=lambda s: s.local_ts)
    proc = StreamProcessor(symbol, Market.FUTURES)
    lines = ws.read_text().splitlines()
    connect = _sec(lines[0].rsplit(" <-> ", 1)[1])
    snaps = [s for s in snaps if s.local_ts >= connect]
    proc.reset("start", connect)
    i = 0
    for line in lines[1:]:
        ts, _, raw = line.partition(": ")
        local = _sec(ts)
        while i < len(snaps) and snaps[i].local_ts <= local:
            proc.on_snapshot(snaps[i], snaps[i].local_ts)
            i += 1
        proc.on_raw(raw, local)
    return proc


def test_cryptofeed_capture_through_the_client_parser_agrees_with_converter(
    shared_data: Path, tmp_path: Path
) -> None:
    from mm_sim.feeds.convert import binance as conv

    d = shared_data / "cryptofeed-binance"
    ws, http = d / "BINANCE_FUTURES.ws.1.0", d / "BINANCE_FUTURES.http.0.0"
    if not ws.exists() or not http.exists():
        pytest.skip("cryptofeed futures capture not present")
    proc = _replay_capture(ws, http, "SUSHIUSDT")
    ev = proc.take()
    counts = {KIND_NAMES[k]: int((ev["kind"] == k).sum()) for k in KIND_NAMES}
    c, s = proc.counters, proc.sync.counters
    # Counted from the capture: 255 sushiusdt diffs, 40 aggTrades, one usable snapshot.
    assert c.diffs == 255 and s.rebases == 1 and s.gaps == 0
    assert c.trades + c.trades_skipped + c.trades_duplicate == 40
    assert c.other_symbol > 0 and c.malformed == 0
    res = conv.convert([ws, http], tmp_path / "ref.npy", ConvertOptions(symbol="SUSHIUSDT"))
    assert counts == res.stats["events"]
    assert s.applied == res.stats["diffs_applied"]
    assert s.dropped_stale == res.stats["dropped_stale"]
    bb = max(proc.sync.book.bids) if proc.sync.book else None
    assert bb == res.stats["final_book"]["best_bid"]


# --- random faults, rate limits, serverShutdown ----------------------------------------------

ALL_FAULTS = "gap,dup,reorder,malformed,disconnect,stall,shutdown,stale-snapshot,rate-limit"


async def _post(fx: FakeExchange, path: str, **params: object) -> dict:
    async with (
        aiohttp.ClientSession() as s,
        s.post(f"{fx.rest_base}{path}", params={k: str(v) for k, v in params.items()}) as r,
    ):
        assert r.status == 200, await r.text()
        return await r.json()


@pytest.mark.parametrize("market", ["spot", "futures"])
async def test_random_faults_then_the_book_is_exact_within_one_resync(feed, market: str) -> None:
    """Every fault at a random rate (seeded), then faults off: the client converges on the
    exchange's true book with at most one more resync."""
    async with _pair(feed, market, stale_after_s=0.3) as (fx, cl):
        fx.faults.stall_s = 0.4
        fx.faults.retry_after_s = 0
        fx.faults.shutdown_grace_s = 0.3
        await _assert_matches(fx, cl)
        on = await _post(fx, "/fake/faults", faults=ALL_FAULTS, rate=0.01)
        assert set(on["faults"]) == set(ALL_FAULTS.split(","))
        # Run the storm until several kinds of fault have fired (however slow the machine is).
        await _until(cl, lambda: sum(1 for v in fx.faults.fired.values() if v) >= 5)
        await _post(fx, "/fake/faults", faults="", rate=0)
        fired = {k for k, v in fx.faults.fired.items() if v}
        assert len(fired) >= 5, fx.faults.fired
        resyncs_off = cl.sync.counters.resyncs
        await _assert_matches(fx, cl)
        assert cl.sync.counters.resyncs - resyncs_off <= 1
        assert cl.sync.counters.resyncs >= 1  # the storm did hit the book


def test_fault_plan_names_every_fault() -> None:
    from mm_sim.venues.binance.fake_exchange import FaultPlan

    plan = FaultPlan.parse(ALL_FAULTS, 0.5)
    assert plan.enabled == set(ALL_FAULTS.split(",")) and plan.rate == 0.5


@pytest.mark.parametrize(("fault", "status"), [("rate-limit", 429), ("ban", 418)])
async def test_snapshot_rate_limit_waits_retry_after(feed, fault: str, status: int) -> None:
    events, instrument = feed
    async with FakeExchange(events, instrument, speed=SPEED) as fx:
        fx.faults.retry_after_s = 1
        await _inject(fx, fault)
        async with BinanceClient(_cfg(fx), clock=fx.now_ns) as cl:
            await _until(cl, lambda: cl.sync.counters.rebases >= 1)
            c = cl.counters
            assert c.rate_limited == 1 and c.snapshot_fetches == 2 and c.snapshot_failures == 0
            log = list(fx.snapshot_log)
            assert [st for _, st in log] == [status, 200]
            assert c.rate_limit_wait_s == 1.0  # the client waited what Retry-After said
            assert log[1][0] > log[0][0]  # and asked again only after the refusal
            assert cl.sync.counters.gaps == 0
            await _assert_matches(fx, cl)


def test_retry_after_header_forms() -> None:
    from email.utils import formatdate

    from mm_sim.venues.binance.client import retry_after_s

    assert retry_after_s("3", 0.5) == 3.0
    assert retry_after_s(None, 0.5) == 0.5
    assert retry_after_s("soon", 0.5) == 0.5
    now = 1_733_000_000.0  # a fixed clock: no wall time in the assertion
    assert retry_after_s(formatdate(now + 8, usegmt=True), 0.5, now=now) == 8.0


@pytest.mark.parametrize("market", ["spot", "futures"])
async def test_server_shutdown_rolls_over_without_losing_the_book(feed, market: str) -> None:
    async with _pair(feed, market) as (fx, cl):
        fx.faults.shutdown_grace_s = 1.5
        await _assert_matches(fx, cl)
        before = cl.sync.counters.as_dict()
        await _inject(fx, "shutdown")
        await _until(cl, lambda: cl.counters.server_shutdown >= 1)
        await _until(cl, lambda: cl.counters.overlap_switches >= 1)
        # The notified connection is gone (we closed it after switching, or the server did).
        await _until(cl, lambda: cl.connections == 1 and len(fx.clients) == 1)
        s = cl.sync.counters
        assert fx.faults.fired["shutdown"] == 1 and cl.counters.rollovers == 1
        assert cl.counters.disconnects == 0 and cl.counters.connects == 2
        assert (s.resyncs, s.gaps, s.rebases) == (
            before["resyncs"],
            before["gaps"],
            before["rebases"],
        )  # no new snapshot was needed: the book stayed continuous
        await _assert_matches(fx, cl)


def test_server_shutdown_is_recognised_in_both_shapes() -> None:
    proc = StreamProcessor("BTCUSDT", Market.SPOT)
    proc.decode(b'{"e":"serverShutdown","E":1}')
    proc.decode(b'{"event":{"e":"serverShutdown","E":1}}')
    assert proc.counters.server_shutdown == 2 and proc.counters.malformed == 0


# --- push mode and our own frame splitting ---------------------------------------------------


@pytest.mark.parametrize("busy_poll", [False, True])
async def test_push_mode_decides_on_each_frame_as_it_arrives(feed, busy_poll: bool) -> None:
    async with _pair(feed, busy_poll=busy_poll) as (fx, cl):
        calls: list[tuple[np.ndarray, list[int]]] = []
        cl.set_sink(lambda ev, arr: calls.append((ev, arr)))
        await _eventually(
            lambda: cl.sync.state is SyncState.SYNCED and len(calls) >= 50, cl.counters.as_dict
        )
        with pytest.raises(RuntimeError, match="sink"):
            await cl.poll(0)
        frames = [a for _, arr in calls for a in arr]
        assert frames == sorted(frames) and len(frames) >= 40
        # One frame at a time when keeping up: most calls carry exactly one frame.
        assert sum(len(arr) == 1 for _, arr in calls) >= 0.8 * len(calls)
        ev = np.concatenate([e for e, _ in calls])
        assert np.all(np.diff(ev["exch_ts"]) >= 0) and np.all(np.diff(ev["local_ts"]) >= 0)
        cl.set_sink(None)
        await _assert_matches(fx, cl)
        spinning = [t for t in asyncio.all_tasks() if t.get_name() == "binance-busy-poll"]
        assert len(spinning) == int(busy_poll)
    # closing the client stops its spinning
    assert not [t for t in asyncio.all_tasks() if t.get_name() == "binance-busy-poll"]


async def test_frame_splitting_keeps_order_through_odd_frames() -> None:
    """A server writing frames byte by byte, with a ping, a fragmented message and a binary
    frame in between: every trade arrives once and in order, and the ping is answered."""
    from aiohttp import WSMsgType, web

    from mm_sim.venues.binance.fake_exchange import ws_frame

    def trade(i: int) -> bytes:
        return (
            f'{{"stream":"x@trade","data":{{"e":"trade","E":{i},"s":"XUSDT","t":{i},"p":"1.5",'
            f'"q":"2","T":{i},"m":false,"M":true}}}}'
        ).encode()

    pongs: list[bytes] = []

    async def handler(req: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse(autoping=False, compress=False)
        await ws.prepare(req)
        tr = req.transport
        assert tr is not None
        tr.write(ws_frame(trade(1)))  # may share the read with the handshake response
        for b in ws_frame(trade(2)):  # one byte per TCP write
            tr.write(bytes([b]))
            await asyncio.sleep(0.001)
        tr.write(bytes((0x89, 4)) + b"ping" + b"".join(ws_frame(trade(i)) for i in range(3, 7)))
        whole = trade(7)  # fragmented text: the library assembles it, our splitting stops
        tr.write(bytes((0x01, 20)) + whole[:20])
        await asyncio.sleep(0.01)
        rest = whole[20:]
        tr.write(bytes((0x80, 126)) + len(rest).to_bytes(2, "big") + rest)
        body = trade(8)
        tr.write(bytes((0x82, 126)) + len(body).to_bytes(2, "big") + body)  # binary
        tr.write(b"".join(ws_frame(trade(i)) for i in range(9, 12)))
        async for msg in ws:
            if msg.type == WSMsgType.PONG:
                pongs.append(msg.data)
        return ws

    app = web.Application()
    app.router.add_get("/stream", handler)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    cfg = ClientConfig("XUSDT", Market.SPOT, f"ws://127.0.0.1:{port}", f"http://127.0.0.1:{port}")
    try:
        async with BinanceClient(cfg) as cl:
            got: list[np.ndarray] = []

            async def take() -> None:
                got.append((await cl.poll(0.05)).events)

            await _eventually(lambda: cl.counters.trades >= 11, cl.counters.as_dict, take)
            ev = np.concatenate(got)
            assert ev["exch_ts"].tolist() == [i * 1_000_000 for i in range(1, 12)]
            assert cl.counters.trades_duplicate == 0 and cl.counters.malformed == 0
            await _eventually(lambda: bool(pongs), lambda: "no pong")
            assert pongs == [b"ping"]
    finally:
        await runner.cleanup()
