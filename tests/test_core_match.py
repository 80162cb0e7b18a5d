"""Order lifecycle and fill matching: each known trap as a hand-built scenario.

Instrument: tick 0.01, lot 0.001, mid 100.00 (tick 10000). With a 1 bp half-spread and no skew
the strategy bids at 99.99 (tick 9999) and offers at 100.01 (tick 10001), i.e. it joins the touch.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from mm_sim.config import Overrides, Profile
from mm_sim.core.engine import Engine
from mm_sim.core.match import (
    queue_on_depth,
)
from mm_sim.core.records import ACT_CANCEL, ACT_PLACE, ACT_REPLACE, LIQ_MAKER, LIQ_TAKER
from mm_sim.core.reference import RefEngine
from mm_sim.core.script import Script
from mm_sim.core.venue_state import (
    QUEUE_CONSERVATIVE,
    QUEUE_PROBABILISTIC,
)
from mm_sim.events import Instrument

TICK = 0.01
INST = Instrument("TEST", "sim", TICK, 0.001)


def profile(
    model: str = "conservative",
    order_qty: float = 0.005,
    order_type: str = "post_only",
    **latency: float,
) -> Profile:
    lat = {"entry_ms": 2.0, "cancel_ms": 2.0, "ack_ms": 1.0, **latency}
    return Profile(
        quoting={
            "order_qty": order_qty,
            "base_half_spread_bps": 1.0,
            "gamma": 0.0,
            "impact_levels": 3,
            "order_type": order_type,
        },
        inventory={"max_position": 1.0, "max_notional": 1e9},
        fees={"maker_bps": -0.5, "taker_bps": 4.0},
        latency=lat,
        queue={"model": model},
        limiter={"max_in_flight": 4, "venue_budget": 1000, "venue_window_ms": 1000.0},
        mark_interval_ms=1000.0,
    )


def overrides(**kw: float) -> Overrides:
    base: dict[str, Any] = {
        "min_interval_ms": 0.0,
        "replace_rate_per_min": 6000,
        "base_spread_bps_delta": 0.0,
        "tail_age_ms": 60000.0,
        "impact_cap_ratio": 10.0,
        "max_delta_ratio": 10.0,
    }
    base.update(kw)
    return Overrides(**base)


def run(prof: Profile, ovr: Overrides, sc: Script) -> tuple[Engine, Any]:
    """Run on the engine, check the reference agrees, return the engine and its records."""
    ev = sc.events()
    eng = Engine(prof, ovr, INST, seed=0, n_ticks=4096)
    res = eng.run(ev)
    ref = RefEngine(prof, ovr, INST).run(ev)
    for name in ("fills", "actions", "blocks"):
        a, b = getattr(res, name), getattr(ref, name)
        assert len(a) == len(b), name
        for f in a.dtype.names or ():
            np.testing.assert_allclose(a[f].astype(float), b[f].astype(float), atol=1e-12)
    return eng, res


def book(sc: Script, bids: dict[int, float], asks: dict[int, float]) -> Script:
    return sc.at(0.0).snapshot(bids, asks)


def bid_order(eng: Engine) -> dict[str, Any]:
    (o,) = [o for o in eng.orders() if o["side"] == 1 and o["status"] == 2]
    return o


# --- cancel racing a fill --------------------------------------------------------------------


def cancel_race(trade_at_ms: float) -> tuple[Engine, Any]:
    # One visible level per side, impact cap 0.1: we quote 1 lot. At 10 ms the bid level
    # shrinks to 0.005 -> our size rounds to 0 lots -> the strategy cancels (arrives at 12 ms).
    sc = book(Script(TICK), {9999: 0.01}, {10001: 0.01})
    sc.at(3).depth(-1, 10005, 0.01)  # orders sent at 0 ms reach the venue (2 ms)
    sc.at(10).depth(1, 9999, 0.005)  # cancel sent
    sc.at(trade_at_ms).trade(-1, 9999, 0.006)  # 0.005 ahead of us, 0.001 for us
    sc.at(20).depth(-1, 10005, 0.02)
    return run(profile(), overrides(impact_cap_ratio=0.1), sc)


def test_fill_before_cancel_arrives_wins_the_race() -> None:
    eng, res = cancel_race(trade_at_ms=11.0)
    assert res.actions["action"].tolist().count(ACT_CANCEL) == 1
    assert len(res.fills) == 1 and res.fills["qty"][0] == pytest.approx(0.001)
    other = eng.counters()["other"]
    assert (other["cancels_lost_race"], other["cancels_done"]) == (1, 0)
    assert eng.position == pytest.approx(0.001)


def test_cancel_arriving_first_prevents_the_fill() -> None:
    eng, res = cancel_race(trade_at_ms=13.0)
    assert len(res.fills) == 0
    other = eng.counters()["other"]
    assert (other["cancels_lost_race"], other["cancels_done"]) == (0, 1)
    assert eng.position == 0.0


# --- replace and queue priority --------------------------------------------------------------


def priority_script(trade_after_up: float) -> Script:
    sc = book(Script(TICK), {9999: 0.02, 9998: 0.02, 9997: 0.01}, {10001: 0.02, 10002: 0.03})
    sc.at(3).depth(-1, 10010, 0.01)  # bid 5 lots joins behind 0.02 at 9999
    sc.at(4).trade(-1, 9999, 0.015)  # front 0.02 -> 0.005
    sc.at(4.5).depth(1, 9999, 0.005)  # depth 0.035 -> 3 lots: replace DOWN at the same price
    sc.at(7).depth(-1, 10010, 0.02)  # the replace has arrived
    return sc.at(8).depth(1, 9999, trade_after_up)


def test_replace_down_keeps_priority_and_up_loses_it() -> None:
    ovr = overrides(impact_cap_ratio=0.1)
    prof = profile(order_qty=0.01)
    sc = priority_script(0.045)  # others join behind us: depth 0.075 -> 7 lots: replace UP
    ev = sc.events()
    eng = Engine(prof, ovr, INST, seed=0, n_ticks=4096)
    acts = [eng.run(ev[ev["exch_ts"] < sc.t0 + 8_000_000]).actions]
    after_down = bid_order(eng)
    assert after_down["remaining"] == pytest.approx(0.003)
    assert after_down["front"] == pytest.approx(0.005)  # kept its place
    acts.append(eng.run(ev[ev["exch_ts"] >= sc.t0 + 8_000_000]).actions)
    acts.append(eng.run(Script(TICK, sc.t0).at(11).depth(-1, 10010, 0.03).events()).actions)
    after_up = bid_order(eng)
    assert after_up["order_id"] == after_down["order_id"]
    assert after_up["remaining"] == pytest.approx(0.007)
    assert after_up["front"] == pytest.approx(0.045)  # back of the queue
    a = np.concatenate(acts)
    bids = a[a["side"] == 1]
    assert bids["action"].tolist() == [ACT_PLACE, ACT_REPLACE, ACT_REPLACE]
    assert bids["qty"].tolist() == pytest.approx([0.005, 0.003, 0.007])
    assert bids["price"] == pytest.approx([99.99] * 3)


def test_replace_priority_decides_who_gets_the_next_print() -> None:
    """0.006 printed at our price: after the down-replace we are 0.005 from the front."""
    prof = profile(order_qty=0.01)
    sc = priority_script(0.005)  # level unchanged: no second replace
    sc.at(9).trade(-1, 9999, 0.006)
    _eng, res = run(prof, overrides(impact_cap_ratio=0.1), sc)
    bids = res.actions[res.actions["side"] == 1]
    assert bids["action"].tolist() == [ACT_PLACE, ACT_REPLACE]
    assert len(res.fills) == 1 and res.fills["qty"][0] == pytest.approx(0.001)
    assert res.fills["queue_ns"][0] == 9_000_000 - 2_000_000  # queued since the place arrived


# --- a book that moves through our order without a trade -------------------------------------


def test_crossed_book_fills_resting_order_as_maker_once() -> None:
    sc = book(Script(TICK), {9999: 0.01, 9998: 0.01}, {10001: 0.01, 10002: 0.01})
    sc.at(3).depth(-1, 10010, 0.01)  # bid 5 lots rests at 9999
    sc.at(5).depth(-1, 9999, 0.003)  # an ask appears at our price: no print
    sc.at(6).depth(-1, 10003, 0.02)  # still crossed: the same 0.003 must not fill us again
    sc.at(7).depth(-1, 9999, 0.004)  # 0.001 more shows at our price
    sc.at(8).depth(-1, 9999, 0.0)
    _eng, res = run(profile(), overrides(), sc)
    f = res.fills
    assert f["qty"].tolist() == pytest.approx([0.003, 0.001])
    assert (f["liquidity"] == LIQ_MAKER).all()
    assert f["price"] == pytest.approx([99.99, 99.99])
    assert f["fee"][0] == pytest.approx(99.99 * 0.003 * -0.5e-4)
    assert f["ts"].tolist() == [sc.t0 + 5_000_000, sc.t0 + 7_000_000]


# --- an order arriving into a book that moved through it: taker walk --------------------------


def test_order_arriving_crossed_walks_visible_levels_as_taker() -> None:
    sc = book(Script(TICK), {9999: 0.01, 9998: 0.01, 9997: 0.01}, {10001: 0.01, 10002: 0.01})
    sc.at(1).depth(-1, 10010, 0.01)  # our bid at 9999 is in flight (arrives at 5 ms)
    sc.at(2).depth(1, 9999, 0.0).depth(1, 9998, 0.0)
    sc.at(2).depth(-1, 9998, 0.001).depth(-1, 9999, 0.002)  # the book moved down through it
    sc.at(6).depth(-1, 10010, 0.02)
    eng, res = run(profile(order_type="limit", entry_ms=5.0), overrides(min_interval_ms=100.0), sc)
    f = res.fills
    assert f["price"].tolist() == pytest.approx([99.98, 99.99])
    assert f["qty"].tolist() == pytest.approx([0.001, 0.002])
    assert (f["liquidity"] == LIQ_TAKER).all()
    assert f["fee"] == pytest.approx(f["price"] * f["qty"] * 4e-4)
    assert (f["ts"] == sc.t0 + 5_000_000).all() and (f["queue_ns"] == 0).all()
    assert (f["order_age_ns"] == 5_000_000).all()
    assert bid_order(eng)["remaining"] == pytest.approx(0.002)  # the rest rests at 99.99
    assert eng.counters()["blocks"]["min_interval"] >= 1  # it wanted to reprice, paced out


def test_sell_arriving_crossed_walks_the_bids_downwards_as_taker() -> None:
    """The mirror case: the book moved up through our offer while it was in flight."""
    sc = book(Script(TICK), {9999: 0.01, 9998: 0.01}, {10001: 0.01, 10002: 0.01, 10003: 0.01})
    sc.at(1).depth(1, 9990, 0.01)  # our offer at 10001 is in flight (arrives at 5 ms)
    sc.at(2).depth(-1, 10001, 0.0).depth(-1, 10002, 0.0)
    sc.at(2).depth(1, 10002, 0.001).depth(1, 10001, 0.002)  # bids now at and above our price
    sc.at(6).depth(1, 9990, 0.02)
    eng, res = run(profile(order_type="limit", entry_ms=5.0), overrides(min_interval_ms=100.0), sc)
    f = res.fills[res.fills["side"] == -1]
    assert f["price"].tolist() == pytest.approx([100.02, 100.01])  # best bid first
    assert f["qty"].tolist() == pytest.approx([0.001, 0.002])
    assert (f["liquidity"] == LIQ_TAKER).all()
    assert (f["ts"] == sc.t0 + 5_000_000).all() and (f["queue_ns"] == 0).all()
    (o,) = [o for o in eng.orders() if o["side"] == -1 and o["status"] == 2]
    assert o["remaining"] == pytest.approx(0.002)  # the rest rests at 100.01
    assert o["price"] == pytest.approx(100.01)


# --- prints through our price, and never overfilling ------------------------------------------


def test_trade_through_fills_up_to_its_size_and_never_beyond_order_qty() -> None:
    sc = book(Script(TICK), {9999: 0.01, 9998: 0.01}, {10001: 0.01, 10002: 0.01})
    sc.at(3).depth(-1, 10010, 0.01)
    sc.at(4).trade(-1, 9998, 0.002)  # through our bid: fills 0.002 despite 0.01 ahead
    sc.at(5).trade(-1, 9997, 0.01)  # fills the remaining 0.003 only
    sc.at(6).trade(-1, 9997, 0.01)
    eng, res = run(profile(), overrides(), sc)
    oid = res.fills["order_id"]
    assert len(set(oid.tolist())) == 1
    assert res.fills["qty"].tolist() == pytest.approx([0.002, 0.003])
    assert res.fills["price"].tolist() == pytest.approx([99.99, 99.99])
    assert eng.position == pytest.approx(0.005)


def test_buyer_initiated_print_does_not_fill_our_bid() -> None:
    sc = book(Script(TICK), {9999: 0.01}, {10001: 0.01})
    sc.at(3).depth(-1, 10010, 0.01)
    sc.at(4).trade(1, 9999, 0.05)
    _, res = run(profile(), overrides(), sc)
    assert len(res.fills) == 0


@pytest.mark.parametrize("model", ["conservative", "probabilistic"])
def test_never_overfill_on_random_streams(model: str) -> None:
    """Step through hostile streams one event at a time; no order is ever filled beyond its qty."""
    rng = np.random.default_rng(11)
    prof = profile(model)
    ovr = overrides(tail_age_ms=10.0, impact_cap_ratio=0.2)
    for _ in range(3):
        filled: dict[int, float] = {}
        max_qty: dict[int, float] = {}
        sc = book(Script(TICK), {9999: 0.004, 9998: 0.01}, {10001: 0.004, 10002: 0.01})
        t = 1.0
        for _ in range(150):
            t += float(rng.choice([0.0, 0.5, 1.5, 4.0]))
            side = int(rng.choice([1, -1]))
            lvl = int(rng.integers(-1, 3))
            px = 9999 - lvl if side > 0 else 10001 + lvl
            if rng.random() < 0.4:
                qty = float(rng.uniform(0.001, 0.01))
                sc.at(t).trade(-side, px - side * int(rng.integers(0, 2)), qty)
            else:
                sc.at(t).depth(side, px, float(rng.choice([0.0, 0.002, 0.006, 0.02])))
        eng = Engine(prof, ovr, INST, seed=0, n_ticks=4096)
        for e in sc.events():
            res = eng.run(np.array([e]))
            for f in res.fills:
                filled[int(f["order_id"])] = filled.get(int(f["order_id"]), 0.0) + f["qty"]
            for o in eng.orders():
                max_qty[o["order_id"]] = max(max_qty.get(o["order_id"], 0.0), o["qty"])
                assert o["filled"] <= o["qty"] + 1e-12
                assert o["remaining"] >= 0.0
        assert eng.counters()["fills"] > 0
        for oid, q in filled.items():
            assert q <= max_qty[oid] + 1e-12


# --- queue models ------------------------------------------------------------------------------


def test_conservative_queue_only_clips() -> None:
    assert queue_on_depth(QUEUE_CONSERVATIVE, 2.0, 0.004, 0.01, 0.006, 0.0) == 0.004
    assert queue_on_depth(QUEUE_CONSERVATIVE, 2.0, 0.004, 0.01, 0.003, 0.0) == 0.003


def test_probabilistic_queue_head_and_tail() -> None:
    # at the head nothing can be cancelled ahead of us
    assert queue_on_depth(QUEUE_PROBABILISTIC, 2.0, 0.0, 0.01, 0.004, 0.0) == 0.0
    # at the tail (nothing behind) every cancel is ahead of us
    assert queue_on_depth(QUEUE_PROBABILISTIC, 2.0, 0.01, 0.01, 0.004, 0.0) == pytest.approx(0.004)


def test_probabilistic_queue_middle_uses_power_law_split() -> None:
    front, prev, new = 0.004, 0.012, 0.008  # back = 0.008, cancelled 0.004
    p_ahead = front**2 / (front**2 + 0.008**2)  # 0.2
    got = queue_on_depth(QUEUE_PROBABILISTIC, 2.0, front, prev, new, 0.0)
    assert got == pytest.approx(front - p_ahead * 0.004)
    # trades explain part of the decrease: only the rest is attributed
    got_t = queue_on_depth(QUEUE_PROBABILISTIC, 2.0, front, prev, new, 0.003)
    assert got_t == pytest.approx(front - front**2 / (front**2 + 0.005**2) * 0.001)
    # a cancel bigger than everything behind us is partly ahead: we end at the new level size
    got_big = queue_on_depth(QUEUE_PROBABILISTIC, 2.0, 0.001, 0.004, 0.0002, 0.0)
    assert got_big == pytest.approx(0.0002)
