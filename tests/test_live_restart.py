"""A venue that goes down and comes back restarted, in both client modes (issue 15).

The restarted fake exchange listens on the same port with a fresh book, update ids and trade
ids from the start, and a clock ten minutes behind the old one. Before the fix the client
reconnected and resynced the book but kept the old trade-id filter (every new trade dropped
as a duplicate) and the old clock (event times held at the last one seen: a frozen exchange
clock, and a soak iteration of NaN mids). Nothing here is timed: waits end when their
condition holds and only a hang guard stops them.
"""

from __future__ import annotations

import numpy as np
import pytest
from live_harness import MODES, SPEED, running, small_feed

from mm_sim.events import KIND_DEPTH, KIND_TRADE
from mm_sim.venues.binance.fake_exchange import FakeExchange
from mm_sim.venues.binance.sync import SyncState

BEHIND_MS = -600_000.0  # the restarted venue's clock, against the old one


@pytest.fixture(scope="module")
def feed():
    return small_feed()


async def _restart(run, feed, **fake) -> FakeExchange:
    """Stop the venue and start a new one on the same port (it keeps the old one's clients
    nothing: they see the connection drop and a refused reconnect until it is back)."""
    events, instrument = feed
    old = run.fx
    await old.stop()
    old.stop = _noop  # the harness stops it again on the way out
    new = FakeExchange(events, instrument, market=old.market, speed=SPEED, port=old.port, **fake)
    await new.start()
    run.fx = new
    return new


async def _noop() -> None:
    return None


@pytest.mark.parametrize("mode", MODES)
async def test_restarted_venue_is_resynced_clock_and_trade_ids_included(feed, mode: str):
    async with running(feed, mode, stale_after_s=0.5) as run:
        cl = run.cl
        await run.matches_truth()
        await run.until(lambda: cl.counters.trades >= 5)
        before = len(run.events)
        last_exch = int(run.events["exch_ts"].max())
        trades, diffs = cl.counters.trades, cl.counters.diffs
        new = await _restart(run, feed, clock_offset_ms=BEHIND_MS)
        try:
            await run.until(lambda: cl.counters.venue_restarts >= 1)
            await run.until(lambda: cl.counters.trades >= trades + 5)
            await run.until(lambda: cl.counters.diffs >= diffs + 20)
            await run.matches_truth()  # the new venue's book, at its own update ids
        finally:
            await new.stop()
    c = cl.counters
    assert c.venue_restarts == 1 and c.clock_rebases == 1
    (move,) = cl.clock_log
    assert move["rebased"] and move["moved_ms"] < BEHIND_MS / 2
    after = run.events[before:]
    market = (after["kind"] == KIND_DEPTH) | (after["kind"] == KIND_TRADE)
    # The run's exchange clock goes on from where it was (never back, never frozen) ...
    assert after["exch_ts"].min() >= last_exch
    assert len(np.unique(after["exch_ts"][market])) > 10
    # ... and the new venue's times sit on it: lags as before, not ten minutes
    lag_ms = (after["local_ts"][market] - after["exch_ts"][market]) / 1e6
    assert abs(float(np.median(lag_ms))) < abs(BEHIND_MS) / 10
    assert cl.sync.state is SyncState.SYNCED


@pytest.mark.parametrize("mode", MODES)
async def test_raw_clock_counts_the_restart_without_moving_times(feed, mode: str):
    """``clock: raw`` asks for no correction: the restart is still found and the book and
    trade ids resynced, the venue's times are left as sent."""
    async with running(feed, mode, stale_after_s=0.5, rebase_clock=False) as run:
        cl = run.cl
        await run.matches_truth()
        trades = cl.counters.trades
        new = await _restart(run, feed, clock_offset_ms=BEHIND_MS)
        try:
            await run.until(lambda: cl.counters.venue_restarts >= 1)
            await run.until(lambda: cl.counters.trades >= trades + 5)
            await run.matches_truth()
        finally:
            await new.stop()
    assert cl.counters.clock_rebases == 0 and cl.proc.venue_shift_ns == 0
    assert [m["rebased"] for m in cl.clock_log] == [False]


@pytest.mark.parametrize("mode", MODES)
async def test_a_reconnect_to_the_same_venue_is_not_a_restart(feed, mode: str):
    """A dropped connection to a venue that did not restart: clock checked, nothing moved."""
    from live_harness import inject

    async with running(feed, mode) as run:
        cl = run.cl
        await run.matches_truth()
        await inject(run.fx, "disconnect")
        await run.until(lambda: cl.counters.connects >= 2 and cl.counters.clock_checks >= 1)
        await run.matches_truth()
    assert cl.counters.venue_restarts == 0 and cl.clock_log == []


def _lines(path) -> list[dict]:
    import json

    if not path.exists():
        return []
    return [json.loads(x) for x in path.read_text().splitlines() if x.strip()]


def _wait(pred, what: str, proc) -> None:
    """Until ``pred()`` (a hang guard only: a cold numba cache on a loaded machine is slow)."""
    import time

    deadline = time.monotonic() + 600
    while not pred():
        assert proc.poll() is None, f"soak ended while waiting for {what}"
        assert time.monotonic() < deadline, f"hung waiting for {what}"
        time.sleep(0.1)


def test_soak_goes_on_after_a_venue_restart(tmp_path) -> None:
    """The user's case: a live soak, the fake exchange killed (iterations without one event:
    outages) and started again on the same port with a new clock, book and ids. The iteration
    after the outage has events and valid mids; the outage is in the summary and the verdict,
    the restart and the clock move in the feed's counters."""
    import json
    import signal
    import subprocess
    import sys

    from test_live_soak import REPO, _env, _serve

    from mm_sim.report.rundir import RunDir

    art = tmp_path / "art"
    metrics = art / "soak" / "metrics.jsonl"
    cmd = [sys.executable, "-m", "mm_sim", "soak", "--iterations", "1000",
           "--iteration-minutes", "1", "--no-tune", "--artifacts", str(art)]  # fmt: skip
    with _serve("--speed", "40", "--duration-s", "600") as url:
        port = url.rsplit(":", 1)[1]
        soak = subprocess.Popen([*cmd, "--feed", url], cwd=REPO, env=_env(), text=True,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE)  # fmt: skip
        try:
            _wait(lambda: len(_lines(metrics)) >= 1, "a first iteration", soak)
        except BaseException:
            soak.kill()
            raise
    try:
        _wait(lambda: any(x["extra"]["outage"] for x in _lines(metrics)), "an outage", soak)
        with _serve("--speed", "40", "--port", port):

            def back() -> bool:
                ls = _lines(metrics)
                out = max(i for i, x in enumerate(ls) if x["extra"]["outage"])
                return len(ls) >= out + 3 and ls[out + 1]["extra"]["events"] > 0

            _wait(back, "events after the restart", soak)
            soak.send_signal(signal.SIGINT)
            out, err = soak.communicate(timeout=600)
    finally:
        if soak.poll() is None:
            soak.kill()
    assert soak.returncode == 130, err[-3000:]
    assert "Traceback" not in out + err
    ls = _lines(metrics)
    outages = [i for i, x in enumerate(ls) if x["extra"]["outage"]]
    first = outages[-1] + 1  # the venue came back during this iteration
    assert ls[first]["extra"]["events"] > 0 and ls[first + 1]["extra"]["events"] > 0
    # The next whole iteration quotes on a book: its mids are valid (before the fix: 92 % NaN,
    # the new venue's event times held at the old clock's last one). The one the venue came
    # back in has none until its snapshot arrives.
    rd = RunDir(art)
    mid = rd.iteration_records(rd.committed_lines(), ["marks"])[first + 1]["marks"]["mid"]
    assert len(mid) and np.isfinite(mid).mean() > 0.9, np.isfinite(mid).mean()
    gate = json.loads((art / "reports" / "KPI_GATE.json").read_text())
    assert "feed_outage" in gate["hard_failed"]
    assert "feed outage" in (art / "soak" / "summary.txt").read_text()
    live = json.loads((art / "soak" / "live_feed.json").read_text())
    assert live["client"]["venue_restarts"] >= 1 and live["client"]["clock_rebases"] >= 1
    assert live["clock"]["venue_clock_moves"][0]["rebased"]
