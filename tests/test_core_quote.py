"""Quoting: the formulas in isolation, then each quoting override's effect on a real feed."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pytest

from mm_sim.config import Overrides, Profile
from mm_sim.core.book import (
    NO_BOUND,
    ST_HI,
    ST_LO,
    book_apply,
    depth_near_touch,
    make_book,
    side_depth,
    top_levels,
)
from mm_sim.core.engine import Engine
from mm_sim.core.quote import (
    VOL_VAR,
    as_total_spread,
    ask_tick_of,
    bid_tick_of,
    clamp_noncross,
    half_spread_px,
    inventory_skew_px,
    max_step_ticks,
    quote_lots,
    reservation_price,
    step_toward,
    target_ticks,
    vol_update,
)
from mm_sim.core.records import ACT_CANCEL, ACT_REPLACE
from mm_sim.core.reference import RefEngine
from mm_sim.core.script import Script
from mm_sim.events import KIND_DEPTH, Instrument
from mm_sim.feeds.synthetic import SyntheticParams, generate

# --- formulas --------------------------------------------------------------------------------


def test_reservation_price_and_spread_match_avellaneda_stoikov() -> None:
    assert reservation_price(100.0, 3.0, 0.1, 2.0, 0.5) == pytest.approx(100.0 - 3 * 0.1 * 4 * 0.5)
    assert reservation_price(100.0, -2.0, 0.1, 2.0, 1.0) > 100.0  # short -> bid up
    assert as_total_spread(0.1, 2.0, 1.0, 1.5) == pytest.approx(0.4 + 20 * math.log(1 + 0.1 / 1.5))
    assert as_total_spread(0.0, 2.0, 1.0, 1.5) == pytest.approx(2 / 1.5)
    assert as_total_spread(1e-9, 2.0, 1.0, 1.5) == pytest.approx(2 / 1.5, rel=1e-6)


def test_vol_estimate_converges_to_the_return_variance_rate() -> None:
    vol_f = np.zeros(2)
    vol_i = np.zeros(2, dtype=np.int64)
    mid = 100.0
    r = 1e-4  # +-1 bp every 100 ms -> variance rate r^2 / 0.1 s
    for k in range(2000):
        mid *= math.exp(r if k % 2 else -r)
        vol_update(vol_f, vol_i, k * 100_000_000, mid, 100e6, 5.0)
    assert vol_f[VOL_VAR] == pytest.approx(r * r / 0.1, rel=1e-6)
    # sub-step observations do not sample
    before = vol_f.copy()
    vol_update(vol_f, vol_i, 1999 * 100_000_000 + 50_000_000, mid * 1.01, 100e6, 5.0)
    assert np.array_equal(before, vol_f)


def test_half_spread_is_at_least_one_tick_and_rounding_is_away_from_the_touch() -> None:
    assert half_spread_px(100.0, 0.1, 0.01) == 0.01  # 0.1 bp of 100 < a tick
    assert half_spread_px(100.0, 5.0, 0.01) == pytest.approx(0.05)
    assert bid_tick_of(99.987, 0.01) == 9998
    assert ask_tick_of(100.013, 0.01) == 10002
    assert bid_tick_of(99.99, 0.01) == 9999  # on the grid up to float noise
    assert ask_tick_of(100.01, 0.01) == 10001


def test_quotes_never_cross_the_opposite_touch() -> None:
    assert clamp_noncross(1, 10001, 9999, 10001) == 10000
    assert clamp_noncross(-1, 9999, 9999, 10001) == 10000
    assert clamp_noncross(1, 9990, 9999, 10001) == 9990
    b, a, _ = target_ticks(100.0, 9999, 10000, 0.01, -50.0, 1e-3, 10.0, 60.0, 0.1, 100.0)
    assert b <= 9999 and a >= 10000  # a huge short skew still does not cross


def test_inventory_skew_moves_both_quotes_and_is_capped() -> None:
    flat = target_ticks(100.0, 9990, 10010, 0.01, 0.0, 1e-4, 0.1, 60.0, 5.0, 10.0)
    long = target_ticks(100.0, 9990, 10010, 0.01, 5.0, 1e-4, 0.1, 60.0, 5.0, 10.0)
    assert long[0] < flat[0] and long[1] < flat[1]
    # skew_bps = q * gamma * sigma_bps^2 * tau = 5 * 0.1 * 1 * 60 = 30 bp, capped at 0.5 * h
    assert inventory_skew_px(100.0, 5.0, 0.1, 1e-4, 60.0, 1.0) == pytest.approx(0.3)
    assert inventory_skew_px(100.0, 5.0, 0.1, 1e-4, 60.0, 0.025) == 0.025
    assert inventory_skew_px(100.0, -5.0, 0.1, 1e-4, 60.0, 0.025) == -0.025


def test_step_limit_and_size() -> None:
    assert max_step_ticks(0.14, 0.05, 0.01) == 1  # 0.007 -> at least one tick
    assert max_step_ticks(1.0, 0.05, 0.01) == 5
    assert step_toward(100, 120, 5) == 105
    assert step_toward(100, 97, 5) == 97
    assert quote_lots(0.01, 0.1, 0.05, 0.001) == 5
    assert quote_lots(0.01, 1.0, 0.05, 0.001) == 10
    assert quote_lots(0.01, 0.01, 0.05, 0.001) == 0


def test_side_depth_matches_the_book_helper() -> None:
    rng = np.random.default_rng(1)
    bk = make_book(0.01, 4096)
    for _ in range(300):
        side = int(rng.choice([1, -1]))
        t = 10000 - int(rng.integers(1, 12)) if side > 0 else 10000 + int(rng.integers(1, 12))
        book_apply(
            bk.bid, bk.ask, bk.st, 0.01, KIND_DEPTH, side, t * 0.01, float(rng.choice([0, 1, 2]))
        )
        for s in (1, -1):
            for n in (1, 3, 5):
                total, _ = side_depth(bk.bid, bk.ask, bk.st, s, n)
                assert total == depth_near_touch(bk.bid, bk.ask, bk.st, s, n)


def test_depth_scans_stop_at_the_written_range() -> None:
    """A side with fewer levels than asked: the scans end at the last index ever written
    (``ST_LO``/``ST_HI``) instead of walking the rest of the window, which cost ~130,000
    reads per decision on a feed that starts without a snapshot. A value planted outside that
    range (which no update can leave there) shows where they stop."""
    bk = make_book(0.01, 4096)
    book_apply(bk.bid, bk.ask, bk.st, 0.01, KIND_DEPTH, 1, 100.00, 2.0)
    book_apply(bk.bid, bk.ask, bk.st, 0.01, KIND_DEPTH, -1, 100.01, 3.0)
    lo, hi = int(bk.st[ST_LO]), int(bk.st[ST_HI])
    bk.bid[lo - 7] = 50.0
    bk.ask[hi + 7] = 50.0
    assert side_depth(bk.bid, bk.ask, bk.st, 1, 5) == (2.0, -NO_BOUND)
    assert side_depth(bk.bid, bk.ask, bk.st, -1, 5) == (3.0, NO_BOUND)
    assert depth_near_touch(bk.bid, bk.ask, bk.st, 1, 5) == 2.0
    assert depth_near_touch(bk.bid, bk.ask, bk.st, -1, 5) == 3.0
    px, qty = np.zeros(5), np.zeros(5)
    assert top_levels(bk.bid, bk.ask, bk.st, 0.01, 1, 5, px, qty) == 1
    assert top_levels(bk.bid, bk.ask, bk.st, 0.01, -1, 5, px, qty) == 1


# --- overrides on a real feed ----------------------------------------------------------------


@pytest.fixture(scope="module")
def feed() -> tuple[np.ndarray, Instrument]:
    return generate(SyntheticParams(), seed=5, duration_s=120)


PROF = Profile(
    quoting={"base_half_spread_bps": 0.3, "order_qty": 0.01},
    inventory={"max_position": 0.05, "max_notional": 1e7},
)
BASE = {
    "min_interval_ms": 20.0,
    "replace_rate_per_min": 1200.0,
    "base_spread_bps_delta": 0.0,
    "tail_age_ms": 500.0,
    "impact_cap_ratio": 0.5,
    "max_delta_ratio": 1.0,
}


def sim(feed: tuple[np.ndarray, Instrument], **o: float) -> tuple[Engine, Any]:
    eng = Engine(PROF, Overrides(**{**BASE, **o}), feed[1], seed=1)
    return eng, eng.run(feed[0])


def test_wider_spread_delta_quotes_further_out_and_trades_less(feed: Any) -> None:
    _, base = sim(feed)
    _, wide = sim(feed, base_spread_bps_delta=2.0)
    marks_b, marks_w = base.marks, wide.marks

    def dist(m: np.ndarray) -> float:
        ok = ~np.isnan(m["bid_quote"])
        return float(np.mean((m["mid"][ok] - m["bid_quote"][ok]) / m["mid"][ok] * 1e4))

    assert dist(marks_w) > dist(marks_b) + 1.5
    assert len(wide.fills) < len(base.fills)


def test_tail_age_bounds_the_order_age_of_fills(feed: Any) -> None:
    _, short = sim(feed, tail_age_ms=100.0)
    _, long = sim(feed, tail_age_ms=5000.0)
    age_s = short.fills["order_age_ns"] / 1e6
    # refreshed after 100 ms; a refresh may wait for pacing (min_interval 20 ms) and travels
    # with the entry latency before it requeues, so the tail stays near the bound
    assert len(age_s) > 50 and age_s.max() < 100.0 + 20.0 + 40.0
    assert long.fills["order_age_ns"].max() / 1e6 > age_s.max()
    assert refreshes(short.actions) > 2 * refreshes(long.actions)


def refreshes(actions: np.ndarray) -> int:
    """Replaces that change neither price nor size: tail-age refreshes."""
    n = 0
    for side in (1, -1):
        x = actions[(actions["side"] == side) & (actions["action"] != ACT_CANCEL)]
        same = (x["price"][1:] == x["price"][:-1]) & (x["qty"][1:] == x["qty"][:-1])
        n += int((same & (x["action"][1:] == ACT_REPLACE)).sum())
    return n


def test_impact_cap_shrinks_our_size(feed: Any) -> None:
    _, base = sim(feed)
    _, capped = sim(feed, impact_cap_ratio=0.0015)
    qty_b = base.actions["qty"][base.actions["action"] != ACT_CANCEL]
    qty_c = capped.actions["qty"][capped.actions["action"] != ACT_CANCEL]
    assert qty_b.max() == pytest.approx(0.01)
    assert qty_c.mean() < qty_b.mean() - 0.001
    assert (np.round(qty_c / 0.001, 6) % 1 == 0).all()  # whole lots


def test_max_delta_ratio_moves_a_quote_in_steps() -> None:
    """The touch jumps 20 ticks up: with a 1-tick step the bid walks up one tick per update."""
    inst = Instrument("T", "sim", 0.01, 0.001)
    prof = Profile(
        quoting={"order_qty": 0.005, "base_half_spread_bps": 1.0, "gamma": 0.0},
        latency={"entry_ms": 1.0, "cancel_ms": 1.0, "ack_ms": 1.0},
        limiter={"max_in_flight": 4, "venue_budget": 1000, "venue_window_ms": 1000.0},
    )
    ovr = Overrides(**{**BASE, "min_interval_ms": 0.0, "max_delta_ratio": 0.5})
    sc = Script(0.01).at(0).snapshot({9999: 0.01, 9998: 0.01}, {10001: 0.01, 10002: 0.01})
    sc.at(5).depth(-1, 10021, 0.01).depth(-1, 10022, 0.01)
    sc.at(6).depth(-1, 10001, 0.0).depth(-1, 10002, 0.0)
    sc.at(7).depth(1, 10019, 0.01).depth(1, 10018, 0.01)  # mid 100.00 -> 100.20
    for k in range(8):
        sc.at(10 + k).depth(1, 9990 - k, 0.01)  # far updates: one decision each
    ev = sc.events()
    eng = Engine(prof, ovr, inst, seed=0, n_ticks=4096)
    res = eng.run(ev)
    ref = RefEngine(prof, ovr, inst).run(ev)
    assert np.array_equal(res.actions, ref.actions)
    bids = res.actions[res.actions["side"] == 1]
    ticks = np.round(bids["price"] / 0.01).astype(int)
    assert ticks[0] == 9999 and np.all(np.diff(ticks) == 1)  # one tick per update
    assert len(ticks) >= 8


def same_order_moves(actions: np.ndarray, tick: float) -> np.ndarray:
    """Tick distance of each reprice of one order (consecutive actions with the same id)."""
    out = []
    for side in (1, -1):
        x = actions[(actions["side"] == side) & (actions["action"] != ACT_CANCEL)]
        same = x["order_id"][1:] == x["order_id"][:-1]
        out.append(np.abs(np.round(np.diff(x["price"]) / tick)).astype(int)[same])
    return np.concatenate(out)


def test_max_delta_ratio_caps_each_reprice_on_a_real_feed(feed: Any) -> None:
    tick = feed[1].tick_size
    small = same_order_moves(sim(feed, max_delta_ratio=0.05)[1].actions, tick)
    large = same_order_moves(sim(feed, max_delta_ratio=1.0)[1].actions, tick)
    # 0.05 x half-spread (0.3 bp ~ 9 ticks) rounds to the 1-tick minimum step; only the
    # never-cross pull-back may jump further
    assert len(small) > 500 and np.mean(small > 1) < 0.01
    assert np.mean(large > 1) > 0.2 and large.max() >= 9
