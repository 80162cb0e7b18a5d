"""Clocks on the live path: the venue's clock is the reference, the shift is added to local_ts.

The fake exchange can run its clock ahead of (or behind) the one it publishes; the client must
measure that from the server-time endpoint, correct its receive times by it, say so in the run
record and the recording's sidecar, and never hold exchange time still after a resync.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from live_harness import MODES, inject, running, small_feed
from test_live_soak import _env, _serve

from mm_sim.events import KIND_DEPTH, KIND_SNAPSHOT, KIND_TRADE
from mm_sim.feeds.spec import resolve_feed
from mm_sim.venues.binance.clock_sync import ServerOffset, best_offset, chosen_shift
from mm_sim.venues.binance.fake_exchange import FakeExchange
from mm_sim.venues.binance.live_source import open_live

REPO = Path(__file__).resolve().parent.parent
MS = 1_000_000


def _market_events(parts: list[np.ndarray]) -> int:
    return sum(int(np.isin(p["kind"], (KIND_DEPTH, KIND_TRADE)).sum()) for p in parts)


@pytest.fixture(scope="module")
def feed():
    return small_feed()


def test_best_offset_keeps_the_shortest_round_trip() -> None:
    # (t0, server ms, t1): the second reading has the tightest bracket.
    est = best_offset([(0, 1_005, 10 * MS), (20 * MS, 1_021, 22 * MS), (30 * MS, 0, 29 * MS)])
    assert est is not None and est.samples == 2 and est.rtt_ns == 2 * MS
    assert est.offset_ns == 1_021 * MS + MS // 2 - 21 * MS
    assert est.uncertainty_ns == MS + MS // 2


def test_chosen_shift_rules() -> None:
    est = ServerOffset(5 * MS, 2 * MS, 3 * MS, 5)
    assert chosen_shift("auto", est) == (5 * MS, "auto: server time")
    assert chosen_shift("auto", ServerOffset(MS, 2 * MS, 3 * MS, 5))[0] == 0
    assert chosen_shift("auto", None)[0] == 0
    assert chosen_shift("raw", est)[0] == 0
    assert chosen_shift(-2.5, est) == (-2_500_000, "manual")


@pytest.mark.parametrize("mode", MODES)
async def test_venue_clock_offset_is_measured_and_corrected(feed, mode: str) -> None:
    events, instrument = feed
    async with FakeExchange(events, instrument, speed=5.0, clock_offset_ms=1500.0) as fx:
        live = await open_live(resolve_feed(fx.ws_base))
        parts: list[np.ndarray] = []
        try:
            clock = live.identity["clock"]
            err = clock["server_uncertainty_ms"]
            assert abs(clock["server_offset_ms"] - 1500.0) <= err + 1.0
            assert clock["shift_ns"] == round(clock["server_offset_ms"] * 1e6) or (
                abs(clock["shift_ms"] - clock["server_offset_ms"]) < 0.01
            )
            # Count market events only: the first sync's snapshot alone can be 300 levels.
            if mode == "push":
                live.client.set_sink(lambda ev, _a: parts.append(ev))
                while _market_events(parts) < 300:
                    await asyncio.sleep(0.02)
            else:
                async for chunk in live.chunks(1, 10**15):
                    parts.append(chunk.events)
                    if _market_events(parts) >= 300:
                        break
        finally:
            await live.close()
    ev = np.concatenate(parts)
    market = (ev["kind"] == KIND_DEPTH) | (ev["kind"] == KIND_TRADE)
    lag_ms = (ev["local_ts"][market] - ev["exch_ts"][market]) / 1e6
    # Uncorrected the lag would be about -1500 ms, with the sign wrong about +3000 ms;
    # corrected it is a small positive latency (the fake's clock runs 5x: one wall ms shows as
    # 5 ms, so the bound leaves a loaded machine 280 wall ms).
    assert np.median(lag_ms) > -err - 1.0
    assert np.median(lag_ms) < 1400.0


@pytest.mark.parametrize("mode", MODES)
async def test_spot_snapshot_without_event_time_does_not_freeze_exchange_time(feed, mode):
    """Local clock 2 s ahead of the venue (not corrected here): a resync snapshot stamped
    with the receive time used to hold every later diff at that time for 2 s."""
    async with running(feed, mode, fake={"clock_offset_ms": -2000.0}) as run:
        cl = run.cl
        await run.matches_truth()
        await inject(run.fx, "gap")
        await run.until(lambda: cl.sync.counters.rebases >= 2)
        n0 = len(run.events)
        await run.until(lambda: cl.counters.diffs >= 30 and len(run.events) > n0 + 200)
        ev = run.events
        snaps = np.flatnonzero(ev["kind"] == KIND_SNAPSHOT)
        after = ev[snaps[-1] + 1 :]
        depth_ts = np.unique(after["exch_ts"][after["kind"] == KIND_DEPTH])
        assert len(depth_ts) >= 5  # the diffs keep their own times
        assert ev["exch_ts"][snaps[-1]] <= depth_ts[0]


def test_record_stores_raw_times_and_the_shift_in_its_sidecar(tmp_path) -> None:
    with _serve("--speed", "20", "--clock-offset-ms", "3000") as url:
        res = subprocess.run(
            [
                sys.executable,
                "-m",
                "mm_sim",
                "record",
                "--feed",
                url,
                "--minutes",
                "0.1",
                "-o",
                str(tmp_path / "rec.npy"),
            ],
            cwd=REPO,
            env=_env(),
            capture_output=True,
            text=True,
            timeout=120,
        )
    assert res.returncode == 0, res.stderr[-2000:]
    assert "clock:" in res.stdout
    meta = json.loads((tmp_path / "rec.json").read_text())
    clock = meta["clock"]
    live = meta["stats"]["clock"]
    assert abs(clock["shift_ms"] - 3000.0) <= live["server_uncertainty_ms"] + 1.0
    assert clock["method"].startswith("live-auto")
    # Stored lags are raw (about -3 s); with the sidecar's shift they are a small latency.
    assert clock["lag_ms_raw"]["p50"] < -1000.0
    assert -50.0 < clock["lag_ms_corrected"]["p50"] < 1000.0
