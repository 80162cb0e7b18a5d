"""Limiter: reason order, token buckets, risk, and the pacing overrides on a real feed."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from mm_sim.config import Overrides, Profile
from mm_sim.core.engine import Engine
from mm_sim.core.limiter import (
    LF_REPLACE,
    LF_VENUE,
    LI_REPLACE_TS,
    LI_VENUE_TS,
    NO_TS,
    bucket_level,
    consume,
    gate,
    make_buckets,
    risk_breach,
)
from mm_sim.core.records import (
    ACT_CANCEL,
    ACT_PLACE,
    ACT_REPLACE,
    ACTION_NAMES,
    BLK_CONCURRENCY,
    BLK_MIN_INTERVAL,
    BLK_RISK,
    BLK_THROTTLE,
    BLOCK_REASONS,
)
from mm_sim.events import Instrument
from mm_sim.feeds.synthetic import SyntheticParams, generate

MS = 1_000_000


def check(action: int, risk: bool, now: int, last: int, inflight: int, lf: np.ndarray) -> int:
    li = np.array([0, 0], dtype=np.int64)
    # buckets last refilled at t=0; rates small enough that nothing refills by `now`
    return gate(action, risk, now, last, 50 * MS, inflight, 2, lf, li, 10.0, 1e-12, 10.0, 1e-12)


def test_reasons_are_checked_in_the_documented_order() -> None:
    empty = np.array([0.0, 0.0])
    full = np.array([5.0, 5.0])
    # everything fails: risk wins
    assert check(ACT_REPLACE, True, 10 * MS, 0, 2, empty) == BLK_RISK
    assert check(ACT_REPLACE, False, 10 * MS, 0, 2, empty) == BLK_MIN_INTERVAL
    assert check(ACT_REPLACE, False, 60 * MS, 0, 2, empty) == BLK_CONCURRENCY
    assert check(ACT_REPLACE, False, 60 * MS, 0, 1, empty) == BLK_THROTTLE
    assert check(ACT_REPLACE, False, 60 * MS, 0, 1, full) == -1
    # risk never blocks a cancel (it only reduces exposure)
    assert check(ACT_CANCEL, True, 60 * MS, 0, 1, full) == -1


def test_place_uses_only_the_venue_budget() -> None:
    no_replace_tokens = np.array([0.0, 5.0])
    assert check(ACT_PLACE, False, 60 * MS, 0, 1, no_replace_tokens) == -1
    assert check(ACT_CANCEL, False, 60 * MS, 0, 1, no_replace_tokens) == BLK_THROTTLE
    no_venue_tokens = np.array([5.0, 0.0])
    assert check(ACT_PLACE, False, 60 * MS, 0, 1, no_venue_tokens) == BLK_THROTTLE


def test_token_buckets_refill_continuously_up_to_capacity() -> None:
    rate = 280 / 60e9  # 280 per minute
    assert bucket_level(0.0, NO_TS, 5, 280.0, rate) == 280.0  # unused bucket is full
    assert bucket_level(0.0, 0, 30_000 * MS, 280.0, rate) == pytest.approx(140.0)
    assert bucket_level(200.0, 0, 60_000 * MS, 280.0, rate) == 280.0
    lf, li = make_buckets()
    consume(ACT_PLACE, 7, lf, li, 280.0, rate, 50.0, 50 / 1e9)
    assert (lf[LF_REPLACE], li[LI_REPLACE_TS]) == (0.0, NO_TS)  # untouched
    assert (lf[LF_VENUE], li[LI_VENUE_TS]) == (49.0, 7)
    consume(ACT_REPLACE, 7, lf, li, 280.0, rate, 50.0, 50 / 1e9)
    assert (lf[LF_REPLACE], lf[LF_VENUE]) == (279.0, 48.0)


def test_risk_only_refuses_orders_that_add_exposure() -> None:
    assert risk_breach(0.09, 1, 0.02, 100.0, 0.1, 1e9)  # long 0.09 + 0.02 > 0.1
    assert not risk_breach(0.09, -1, 0.02, 100.0, 0.1, 1e9)  # selling reduces
    assert not risk_breach(0.1, -1, 0.15, 100.0, 0.1, 1e9)  # to -0.05: smaller exposure
    assert risk_breach(0.1, -1, 0.25, 100.0, 0.1, 1e9)  # to -0.15: larger
    assert risk_breach(0.0, 1, 0.05, 30000.0, 1.0, 1000.0)  # 1500 notional > 1000
    assert not risk_breach(0.08, 1, 0.02, 100.0, 0.1, 1e9)  # exactly at the limit is fine


# --- pacing overrides on a real feed -----------------------------------------------------------


@pytest.fixture(scope="module")
def feed() -> tuple[np.ndarray, Instrument]:
    return generate(SyntheticParams(), seed=5, duration_s=120)


BASE = {
    "min_interval_ms": 20.0,
    "replace_rate_per_min": 1200.0,
    "base_spread_bps_delta": 0.0,
    "tail_age_ms": 500.0,
    "impact_cap_ratio": 0.5,
    "max_delta_ratio": 1.0,
}


def sim(
    feed: Any, max_in_flight: int = 4, max_pos: float = 0.05, budget: int = 50, **o: float
) -> tuple[Engine, Any]:
    prof = Profile(
        quoting={"base_half_spread_bps": 0.3, "order_qty": 0.01},
        inventory={"max_position": max_pos, "max_notional": 1e7},
        limiter={"max_in_flight": max_in_flight, "venue_budget": budget, "venue_window_ms": 1e3},
    )
    eng = Engine(prof, Overrides(**{**BASE, **o}), feed[1], seed=1)
    return eng, eng.run(feed[0])


def sent(eng: Engine) -> int:
    c = eng.counters()
    return int(c["places"] + c["replaces"] + c["cancels"])


def test_longer_min_interval_means_more_min_interval_blocks_and_fewer_actions(feed: Any) -> None:
    (fast, _), (slow, res) = sim(feed, min_interval_ms=5.0), sim(feed, min_interval_ms=300.0)
    assert slow.counters()["blocks"]["min_interval"] > 2 * fast.counters()["blocks"]["min_interval"]
    assert sent(slow) < sent(fast) / 2
    # no two actions on one side closer than the interval
    a = res.actions
    for side in (1, -1):
        assert np.diff(a["ts"][a["side"] == side]).min() >= 300 * MS


def test_lower_replace_rate_means_more_throttle_blocks_and_fewer_replaces(feed: Any) -> None:
    # a venue budget that never binds, so "throttle" means the replace bucket here
    runs = {
        rate: sim(feed, budget=100_000, replace_rate_per_min=rate)[0] for rate in (1200, 300, 30)
    }
    for rate, eng in runs.items():
        c = eng.counters()
        # a full bucket of `rate`, refilled at `rate` per minute, over a 2-minute feed
        assert c["replaces"] + c["cancels"] <= rate + 2 * rate
    assert runs[300].counters()["blocks"]["throttle"] > runs[1200].counters()["blocks"]["throttle"]
    assert runs[30].counters()["replaces"] < runs[300].counters()["replaces"] / 5


def test_fewer_in_flight_slots_mean_concurrency_blocks(feed: Any) -> None:
    (one, _), (many, _) = sim(feed, max_in_flight=1), sim(feed, max_in_flight=8)
    assert one.counters()["blocks"]["concurrency"] > 10 * max(
        1, many.counters()["blocks"]["concurrency"]
    )


def test_tighter_position_limit_means_risk_blocks_and_bounded_position(feed: Any) -> None:
    (tight, res), (loose, _) = sim(feed, max_pos=0.01), sim(feed, max_pos=1.0)
    assert tight.counters()["blocks"]["risk"] > loose.counters()["blocks"]["risk"]
    pos = res.fills["position_after"]
    # the limit applies to the position the strategy knows; fills in flight can overshoot by
    # at most the orders already working
    assert np.abs(pos).max() <= 0.01 + 2 * 0.01 + 1e-12


def test_every_attempt_is_either_sent_or_blocked_once(feed: Any) -> None:
    # one action in flight at a time: with two clocks an action is acknowledged 10 ms after it
    # is sent (entry + ack), too soon for two to be in flight often enough to block
    eng, res = sim(feed, min_interval_ms=50.0, replace_rate_per_min=120.0, max_in_flight=1)
    c = eng.counters()
    for code, name in ACTION_NAMES.items():
        n_sent = int((res.actions["action"] == code).sum())
        n_blocked = int((res.blocks["action"] == code).sum())
        assert c["attempts"][name] == n_sent + n_blocked
    for i, reason in enumerate(BLOCK_REASONS):
        assert c["blocks"][reason] == int((res.blocks["reason"] == i).sum())
    assert all(c["blocks"][r] > 0 for r in ("min_interval", "concurrency", "throttle"))
