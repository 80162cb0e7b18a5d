"""Orders as the venue counts them, the per-order cancel ratio, and Binance's per-cycle rules.

Hand-built action and fill records whose orders, endings and ratios are known exactly; a
quoter that only replaces (which the old per-action ratio read as 0) must fail the cancel gate;
and the real core's own counters must agree with the orders rebuilt from its records.
"""

from __future__ import annotations

import numpy as np
import pytest

from mm_sim.config import GatesCfg, HardGates, Profile, VenueRuleGates
from mm_sim.core.records import (
    ACT_CANCEL,
    ACT_PLACE,
    ACT_REPLACE,
    ACTION_DTYPE,
    BLOCK_DTYPE,
    FILL_DTYPE,
    LIQ_MAKER,
    MARK_DTYPE,
)
from mm_sim.report.churn import (
    END_CANCEL,
    END_FILL,
    END_OPEN,
    END_REJECTED,
    END_REPLACE,
    build_orders,
    churn_counts,
    rule_cycles,
    venue_rules,
)
from mm_sim.report.edge import Slice, chain_states
from mm_sim.report.gate import evaluate
from mm_sim.report.parts_memo import iteration_sections, keyed_parts
from mm_sim.report.schema import EdgeSection

S = 1_000_000_000
T0 = 2_833_334 * 600 * S  # a cycle boundary (multiple of 600 s since the epoch)


def _evaluated(sl: Slice, rules: VenueRuleGates | None = None) -> EdgeSection:
    """An iteration's section as the runner evaluates it when the iteration ends."""
    return iteration_sections(keyed_parts([sl]), 5.0, rules)[0]


def actions(rows: list[tuple[float, int, int, float, float]]) -> np.ndarray:
    """(t_s, order_id, action, qty, price) rows → action records."""
    a = np.zeros(len(rows), dtype=ACTION_DTYPE)
    for i, (t, oid, kind, qty, px) in enumerate(rows):
        a[i] = (T0 + round(t * S), oid, px, qty, kind, 1)
    return a


def fills(rows: list[tuple[float, int, float, float, float]]) -> np.ndarray:
    """(t_s, order_id, qty, age_s, price) rows → fill records (maker buys at the mid)."""
    f = np.zeros(len(rows), dtype=FILL_DTYPE)
    for i, (t, oid, qty, age, px) in enumerate(rows):
        f[i]["ts"] = T0 + round(t * S)
        f[i]["order_id"] = oid
        f[i]["order_age_ns"] = round(age * S)
        f[i]["price"] = f[i]["quote_price"] = px
        f[i]["mid_decision"] = f[i]["mid_fill"] = px
        f[i]["qty"] = qty
        f[i]["side"] = 1
        f[i]["liquidity"] = LIQ_MAKER
    return f


# Five ids, eight orders (see each comment); order D sits in the next 10-minute cycle.
ACTIONS = actions(
    [
        (0.0, 1, ACT_PLACE, 1.0, 100.0),  # A0: replaced after 1 s (invalid cancel)
        (0.0, 5, ACT_PLACE, 1.0, 100.0),  # E0: filled at 0.1 s
        (0.2, 5, ACT_REPLACE, 1.0, 100.02),  # E1: reached a filled order: rejected
        (0.5, 2, ACT_PLACE, 0.0001, 100.0),  # B: dust (0.01 quote), cancelled after 9.5 s
        (1.0, 1, ACT_REPLACE, 1.0, 100.01),  # A1: filled at 2 s
        (1.0, 3, ACT_PLACE, 2.0, 100.0),  # C0: 0.5 filled, then replaced at 2 s
        (2.0, 3, ACT_REPLACE, 1.5, 100.0),  # C1: same price, smaller: keeps the stamp; filled
        (3.0, 1, ACT_CANCEL, 0.0, 100.01),  # lost the race: A1 is already filled
        (10.0, 2, ACT_CANCEL, 0.0, 100.0),
        (601.0, 4, ACT_PLACE, 1.0, 100.0),  # D: open at the end, in the second cycle
    ]
)
FILLS = fills(
    [
        (0.1, 5, 1.0, 0.1, 100.0),
        (1.5, 3, 0.5, 0.5, 100.0),
        (2.0, 1, 1.0, 1.0, 100.01),
        (2.5, 3, 1.5, 1.5, 100.0),  # decided at 1 s (C0's stamp), rests as C1
    ]
)


def test_orders_and_their_endings() -> None:
    o = build_orders(ACTIONS, FILLS)
    by = {
        (int(i), int(t - T0) / S): k for i, t, k in zip(o.order_id, o.start_ts, o.end, strict=True)
    }
    assert by == {
        (1, 0.0): END_REPLACE,
        (5, 0.0): END_FILL,
        (5, 0.2): END_REJECTED,
        (2, 0.5): END_CANCEL,
        (1, 1.0): END_FILL,
        (3, 1.0): END_REPLACE,
        (3, 2.0): END_FILL,
        (4, 601.0): END_OPEN,
    }
    executed = {
        (int(i), int(t - T0) / S): q
        for i, t, q in zip(o.order_id, o.start_ts, o.executed, strict=True)
    }
    assert executed[(3, 1.0)] == 0.5 and executed[(3, 2.0)] == 1.5
    c = churn_counts(o)
    assert (c.orders_sent, c.ended_by_cancel, c.ended_by_replace, c.ended_by_fill) == (8, 1, 2, 3)
    assert (c.open_at_end, c.rejected, c.lost_cancels) == (1, 1, 1)
    assert c.cancel_ratio == pytest.approx(3 / 8)


def test_binance_rules_per_cycle() -> None:
    rules = VenueRuleGates()
    cycles = rule_cycles(build_orders(ACTIONS, FILLS), rules)
    assert [c.start_ns for c in cycles] == [T0, T0 + 600 * S]
    c1, c2 = cycles
    # Cycle 1: A0 A1 B C0 C1 E0 (E1 was rejected: not counted). Quantity 6.5001, executed 4.
    assert c1.orders == 6
    assert c1.unfilled_ratio == pytest.approx(1 - 4.0 / 6.5001, rel=1e-12)
    assert c1.invalid_cancel_ratio == pytest.approx(2 / 6)  # A0 and C0 lived 1 s; B 9.5 s
    assert c1.dust_ratio == pytest.approx(1 / 6)  # B: 0.0001 × 100 = 0.01 < 50
    assert (c2.orders, c2.unfilled_ratio, c2.invalid_cancel_ratio) == (1, 1.0, 0.0)
    vr = venue_rules(cycles, rules)
    ufr = vr.indicators["UFR"]
    assert ufr.worst == 1.0 and ufr.worst_cycle_start_ns == T0 + 600 * S
    assert ufr.mean == pytest.approx((c1.unfilled_ratio + 1.0) / 2)
    # Far below the default recording thresholds: nothing is judged.
    assert (ufr.cycles_recorded, ufr.worst_recorded, ufr.cycles_banned) == (0, None, 0)
    # A shorter invalid-cancel window: A0 and C0 (1 s) are no longer invalid.
    short = rule_cycles(build_orders(ACTIONS, FILLS), VenueRuleGates(invalid_cancel_s=1.0))
    assert short[0].invalid_cancel_ratio == 0.0


def _section(rules: VenueRuleGates | None = None, post_only: int | None = None) -> object:
    marks = np.zeros(2, dtype=MARK_DTYPE)
    marks["ts"] = [T0 - S, T0 + 700 * S]
    marks["mid"] = 100.0
    marks["position"] = [0.0, float(FILLS["qty"].sum())]
    marks["cash"] = [0.0, -float((FILLS["qty"] * FILLS["price"]).sum())]
    start = chain_states([marks])[0][0]
    sl = Slice(0, FILLS, ACTIONS, np.zeros(0, BLOCK_DTYPE), marks, start, 20.0, post_only)
    return _evaluated(sl, rules)


def test_recording_and_ban_thresholds_are_hard_gates() -> None:
    # Judged from 5 orders on: only cycle 1 is judged (6 orders); its UFR is 0.3846.
    judged = VenueRuleGates(ufr_recording_orders=5, ufr_ban=0.99)
    sec = _section(judged)
    ufr = sec.venue_rules.indicators["UFR"]
    assert ufr.cycles_recorded == 1 and ufr.cycles_banned == 0
    assert ufr.worst_recorded == pytest.approx(1 - 4.0 / 6.5001)
    gates = GatesCfg(hard=HardGates(cancel_ratio_max=1.0), venue_rules=judged)
    res = evaluate(sec, gates)
    ufr_check = next(c for c in res.checks if c.name == "binance_ufr")
    assert (ufr_check.status, ufr_check.passed, ufr_check.op) == ("PASS", True, "<")
    dr_check = next(c for c in res.checks if c.name == "binance_dr")
    assert (dr_check.status, dr_check.passed, dr_check.value) == ("NOT_RECORDED", True, None)
    # The same cycle with a ban at 0.3: the run would have been restricted → hard FAIL.
    banned = VenueRuleGates(ufr_recording_orders=5, ufr_ban=0.3)
    sec = _section(banned)
    res = evaluate(sec, gates.model_copy(update={"venue_rules": banned}))
    assert "binance_ufr" in res.hard_failed and res.verdict == "FAIL"


def test_a_quoter_that_only_replaces_fails_cancel_ratio() -> None:
    # One place then 99 replaces, never filled: the old per-action share reads 0.
    rows = [(0.0, 7, ACT_PLACE, 0.01, 100.0)]
    rows += [(0.1 * k, 7, ACT_REPLACE, 0.01, 100.0 + 0.01 * k) for k in range(1, 100)]
    a = actions(rows)
    marks = np.zeros(2, dtype=MARK_DTYPE)
    marks["ts"] = [T0 - S, T0 + 20 * S]
    marks["mid"] = 100.0
    # Fills so that the other hard gates can pass: a maker fill at the mid, 3 bps rebate.
    f = fills([(0.05, 7, 0.001, 0.05, 100.0)])
    f["fee"] = -3e-4 * 0.1
    marks["position"] = [0.0, 0.001]
    marks["cash"] = [0.0, -0.1 + 3e-4 * 0.1]
    sec = _evaluated(
        Slice(0, f, a, np.zeros(0, BLOCK_DTYPE), marks, chain_states([marks])[0][0], 20.0)
    )
    assert sec.cancel_action_share == 0.0
    assert sec.orders.sent == 100 and sec.orders.ended_by_replace == 99
    assert sec.cancel_ratio == pytest.approx(0.99)
    res = evaluate(sec, Profile().gates)
    assert "cancel_ratio" in res.hard_failed and res.verdict == "FAIL"
    gate = next(c for c in res.checks if c.name == "cancel_ratio")
    assert gate.value == pytest.approx(0.99) and gate.threshold == 0.65


def test_post_only_rejections_count_and_share() -> None:
    assert _section().post_only_rejected == 0
    sec = _section(post_only=4)
    assert sec.post_only_rejected == 4
    assert sec.post_only_rejected_share == pytest.approx(4 / 8)


def test_real_core_counters_agree_with_rebuilt_orders() -> None:
    """The core's own counters (places, replaces, rejected replaces, cancels done and lost)
    against the orders rebuilt from its action and fill records."""
    import mm_sim.core.engine as engine_mod  # our own module: an import error must fail
    from mm_sim.config import Overrides, load_profile
    from mm_sim.feeds.spec import load_events, resolve_feed

    events, instrument, _ = load_events(resolve_feed("synthetic-short"), 1)
    profile = load_profile("S1", {"quoting.base_half_spread_bps": 0.2})
    eng = engine_mod.Engine(profile, Overrides(min_interval_ms=20), instrument, 1)
    acts, fls = [], []
    for c in range(0, 150_000, 25_000):
        r = eng.run(events[c : c + 25_000])
        acts.append(r.actions)
        fls.append(r.fills)
    o = build_orders(np.concatenate(acts), np.concatenate(fls))
    c = churn_counts(o)
    cnt = eng.counters()
    assert c.orders_sent == cnt["places"] + cnt["replaces"] > 100
    assert c.rejected == cnt["other"]["replaces_rejected"]
    assert c.ended_by_cancel == cnt["other"]["cancels_done"]
    assert c.lost_cancels == cnt["other"]["cancels_lost_race"]
    assert c.ended_by_fill > 0 and c.ended_by_replace > 0
    # Every fill was attributed to an order of its id (the executed quantity adds up).
    assert float(o.executed.sum()) == pytest.approx(float(np.concatenate(fls)["qty"].sum()))


def test_sections_written_before_these_fields_still_load_and_gate() -> None:
    from mm_sim.report.schema import EdgeSection

    data = _section().model_dump(mode="json")
    for k in ("cancel_action_share", "orders", "venue_rules", "post_only_rejected"):
        data.pop(k)
    data.pop("post_only_rejected_share")
    data.pop("clock_error")
    old = EdgeSection.model_validate(data)
    assert old.venue_rules is None and old.post_only_rejected == 0 and not old.clock_error
    names = [c.name for c in evaluate(old, Profile().gates).checks]
    assert "cancel_ratio" in names and "binance_ufr" not in names


@pytest.mark.parametrize("seed", range(40))
def test_array_endings_agree_with_the_one_by_one_rules(
    seed: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Random action sequences, odd ones included (cancels before any order, places after an
    id is done, rejection records): the array rules equal the loop's, order by order."""
    from mm_sim.report import churn

    monkeypatch.setattr(churn, "REJECT_CODES", (9,))
    rng = np.random.default_rng(seed)
    m = int(rng.integers(1, 80))
    oid = np.sort(rng.integers(0, 8, size=m))
    kind = rng.choice([ACT_PLACE, ACT_REPLACE, ACT_CANCEL, 9], size=m, p=[0.2, 0.45, 0.25, 0.1])
    is_start = (kind == ACT_PLACE) | (kind == ACT_REPLACE)
    row = np.cumsum(is_start) - 1
    n = int(is_start.sum())
    seq = churn._Seq(kind.astype(np.int64), np.arange(m, dtype=np.int64) * 10, row, oid)
    filled = rng.random(n) < 0.3
    end, end_ts, lost = churn._endings(seq, filled, n)
    ref_end = np.full(n, churn.END_OPEN, dtype=np.int8)
    ref_ts = np.full(n, -1, dtype=np.int64)
    ref_lost = churn._endings_loop(seq, filled, ref_end, ref_ts)
    assert end.tolist() == ref_end.tolist()
    assert end_ts.tolist() == ref_ts.tolist()
    assert lost == ref_lost
