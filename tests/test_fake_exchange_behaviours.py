"""The fake exchange's optional venue behaviours, each against the real client in both modes.

Each test switches one behaviour on, checks that the fake really did it (its own counters or
a direct request), and that the client's book still equals the true book. Nothing is timed.
(Split paths, late trades and the clock offset are in test_live_routes/_reorder/_clock.)
"""

from __future__ import annotations

import aiohttp
import pytest
from live_harness import MODES, inject, running, small_feed

from mm_sim.venues.binance.fake_options import BanState, WeightMeter, depth_weight
from mm_sim.venues.binance.sync import Market


@pytest.fixture(scope="module")
def feed():
    return small_feed()


@pytest.mark.parametrize("market", ["spot", "futures"])
@pytest.mark.parametrize("mode", MODES)
async def test_snapshot_strictly_inside_a_diff(feed, mode: str, market: str) -> None:
    async with running(feed, mode, market, fake={"snapshot_inside": True}) as run:
        fx, cl = run.fx, run.cl
        async with (
            aiohttp.ClientSession() as s,
            s.get(f"{fx.rest_base}{_depth_path(market)}?symbol={fx.symbol}&limit=100") as r,
        ):
            lid = (await r.json())["lastUpdateId"]
        hist = list(fx.book._hist)
        assert any(first < lid < final for first, final, _ in hist)  # strictly inside
        await run.matches_truth()
        assert fx.stats["snapshots_inside"] >= 2 and cl.sync.counters.gaps == 0


def _depth_path(market: str) -> str:
    return "/fapi/v1/depth" if market == "futures" else "/api/v3/depth"


@pytest.mark.parametrize("market", ["spot", "futures"])
@pytest.mark.parametrize("mode", MODES)
async def test_snapshot_ahead_of_the_stream(feed, mode: str, market: str) -> None:
    """The websocket lags the REST view: the snapshot is newer than the buffered diffs."""
    async with running(feed, mode, market, fake={"stream_delay_s": 0.05}) as run:
        cl = run.cl
        await run.matches_truth()
        assert cl.sync.counters.dropped_stale >= 1  # diffs older than the snapshot
        assert cl.sync.counters.gaps == 0


@pytest.mark.parametrize("mode", MODES)
async def test_spot_overlapping_diffs_are_applied_not_gaps(feed, mode: str) -> None:
    async with running(feed, mode, "spot", fake={"overlap_diffs": 0.3}) as run:
        fx, cl = run.fx, run.cl
        await run.until(lambda: cl.sync.counters.overlaps >= 3)
        assert fx.stats["overlapping_diffs"] >= 3
        assert cl.sync.counters.gaps == 0 and cl.sync.counters.resyncs == 0
        await run.matches_truth()


@pytest.mark.parametrize("market", ["spot", "futures"])
@pytest.mark.parametrize("mode", MODES)
async def test_stall_that_delivers_a_delayed_burst(feed, mode: str, market: str) -> None:
    async with running(feed, mode, market, stale_after_s=5.0) as run:
        fx, cl = run.fx, run.cl
        fx.faults.stall_s = 0.2
        await run.matches_truth()
        before = cl.sync.counters.as_dict()
        await inject(fx, "burst")
        await run.until(lambda: fx.stats["burst_frames"] > 0)
        await run.matches_truth()
        s = cl.sync.counters
        assert (s.gaps, s.resyncs) == (before["gaps"], before["resyncs"])  # nothing was lost
        assert cl.counters.stale == 0 and cl.counters.connects == 1


@pytest.mark.parametrize("market", ["spot", "futures"])
@pytest.mark.parametrize("mode", MODES)
async def test_the_venues_connection_cut(feed, mode: str, market: str) -> None:
    """The 24 h limit, shortened: the venue closes the connection; the client comes back."""
    async with running(feed, mode, market, fake={"cut_after_s": 1.0}) as run:
        fx, cl = run.fx, run.cl
        await run.until(lambda: fx.stats["closed_cut"] >= 2 and cl.counters.connects >= 3)
        await run.matches_truth()
        assert cl.counters.disconnects >= 2


@pytest.mark.parametrize("mode", MODES)
async def test_escalating_bans_are_waited_out(feed, mode: str) -> None:
    async with running(feed, mode, fake={"ban_escalation": True}, warmup_s=0.0) as run:
        fx, cl = run.fx, run.cl
        fx.faults.retry_after_s = 0.05
        await inject(fx, "ban", 3)
        await run.matches_truth()
        assert [st for _, st in fx.snapshot_log][:4] == [418, 418, 418, 200]
        assert fx.ban.bans == 3 and fx.ban.during == 0  # never asked while banned
        assert cl.counters.rate_limit_wait_s == pytest.approx(0.05 + 0.1 + 0.2)


@pytest.mark.parametrize(("market", "weight"), [("spot", 50), ("futures", 20)])
@pytest.mark.parametrize("mode", MODES)
async def test_weight_headers_are_read(feed, mode: str, market: str, weight: int) -> None:
    async with running(feed, mode, market, fake={"weight_headers": True}) as run:
        cl = run.cl
        await run.matches_truth()
        assert cl.counters.used_weight_1m_max >= weight
        assert cl.counters.used_weight_1m_max % weight == 0  # limit 1000: one request's worth


def test_weight_and_ban_bookkeeping() -> None:
    m = WeightMeter(window_s=60.0)
    assert m.add(20, now=0.0) == 20 and m.add(20, now=30.0) == 40 and m.add(5, now=61.0) == 25
    assert depth_weight(Market.FUTURES, 5) == 2 and depth_weight(Market.SPOT, 5000) == 250
    b = BanState()
    assert [b.start(2.0, now=0.0), b.start(2.0, now=10.0), b.start(2.0, now=20.0)] == [2, 4, 8]
    assert b.left(now=25.0) == 3.0


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["--overlap-diffs", "2"], "overlap_diffs must be within [0, 1]"),
        (["--late-trades", "x"], "--late-trades must be 'auto' or within [0, 1]"),
        (["--cut-after-s", "0"], "connection cut must be > 0 s"),
    ],
)
def test_bad_behaviour_flags_are_user_errors(args: list[str], expected: str) -> None:
    import subprocess
    import sys

    from test_live_soak import REPO, _env

    res = subprocess.run(
        [sys.executable, "-m", "mm_sim", "fake-exchange", "--port", "0", *args],
        cwd=REPO,
        env=_env(),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert res.returncode == 2 and expected in res.stderr and "Traceback" not in res.stderr
