"""Every fault in both client modes (pull: the soak and ``record``; push: the low-latency path).

After each fault the client's book must equal the exchange's true book. The resync cases are
the ones push mode used to lose: the refused snapshot was processed inside the task that had
fetched it, the re-request was dropped, and the book stayed unsynced until a reconnect.
"""

from __future__ import annotations

import pytest
from live_harness import MODES, inject, running, small_feed

from mm_sim.venues.binance.sync import SyncState


@pytest.fixture(scope="module")
def feed():
    return small_feed()


# fault -> how its effect shows on (client counters, sync counters)
STREAM = {
    "gap": lambda c, s: s.gaps >= 1,
    "dup": lambda c, s: s.dropped_stale >= 1,
    "reorder": lambda c, s: s.gaps >= 1,
    "malformed": lambda c, s: c.malformed >= 1,
    "disconnect": lambda c, s: c.connects >= 2,
    "stall": lambda c, s: c.stale >= 1 and c.connects >= 2,
    "shutdown": lambda c, s: c.server_shutdown >= 1 and c.overlap_switches >= 1,
}


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("fault", sorted(STREAM))
async def test_stream_fault(feed, fault: str, mode: str) -> None:
    async with running(feed, mode, stale_after_s=0.3) as run:
        fx, cl = run.fx, run.cl
        fx.faults.stall_s = 0.8
        fx.faults.shutdown_grace_s = 1.0
        await run.matches_truth()
        await inject(fx, fault)
        await run.until(lambda: fx.faults.fired[fault] >= 1)
        await run.until(lambda: STREAM[fault](cl.counters, cl.sync.counters))
        await run.matches_truth()


@pytest.mark.parametrize("market", ["spot", "futures"])
@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("bad", ["stale-snapshot", "crossed-snapshot"])
async def test_refused_resync_snapshot_is_fetched_again(feed, bad: str, mode: str, market: str):
    async with running(feed, mode, market) as run:
        fx, cl = run.fx, run.cl
        await run.matches_truth()
        fetches = cl.counters.snapshot_fetches
        await inject(fx, bad)
        await inject(fx, "gap")  # the resync's snapshot is the bad one
        await run.until(lambda: fx.faults.fired[bad] >= 1)
        await run.until(lambda: cl.sync.state is SyncState.SYNCED)
        s = cl.sync.counters
        refused = s.snapshots_too_old if bad == "stale-snapshot" else s.snapshots_crossed
        assert refused >= 1
        assert cl.counters.snapshot_fetches >= fetches + 2  # the bad one, then a good one
        await run.matches_truth()


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("fault", ["rate-limit", "ban", "snapshot-error"])
async def test_snapshot_fault_on_resync(feed, fault: str, mode: str) -> None:
    async with running(feed, mode) as run:
        fx, cl = run.fx, run.cl
        fx.faults.retry_after_s = 0
        await run.matches_truth()
        await inject(fx, fault)
        await inject(fx, "gap")
        await run.until(lambda: fx.faults.fired[fault] >= 1)
        await run.until(lambda: cl.sync.counters.rebases >= 2)
        c = cl.counters
        assert (c.rate_limited if fault != "snapshot-error" else c.snapshot_failures) >= 1
        await run.matches_truth()
