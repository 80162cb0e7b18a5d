"""Edge decomposition: hand-computed components, markouts, drivers, and the PnL invariant.

``simulate_run`` (also used by the rundir and report tests) builds records the way an account
would: a random mid path, fills at quotes around it, cash −= s·q·p + fee, position += s·q, and
marks sampling that account on a fixed step plus a closing mark at each iteration's end. The
invariant test then checks the decomposition against that account, never against itself.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mm_sim.core.records import (
    ACT_CANCEL,
    ACT_PLACE,
    ACT_REPLACE,
    ACTION_DTYPE,
    BLK_CONCURRENCY,
    BLK_MIN_INTERVAL,
    BLOCK_DTYPE,
    FILL_DTYPE,
    LIQ_MAKER,
    LIQ_TAKER,
    MARK_DTYPE,
)
from mm_sim.report.edge import (
    Slice,
    chain_states,
    edge_sections,
    markout_mids,
    rolling_net_bps,
    tuner_inputs,
)
from mm_sim.report.parts_memo import iteration_sections, keyed_parts

T0 = 1_700_000_000_000_000_000
MS = 1_000_000


# --------------------------------------------------------------------------------------------
# A consistent run generator
# --------------------------------------------------------------------------------------------


@dataclass
class SimRun:
    iterations: list[dict[str, np.ndarray]]
    # The account at each iteration's closing mark (cash, position, mid), and at the start.
    start: tuple[float, float, float]
    ends: list[tuple[float, float, float]] = field(default_factory=list)

    def slices(self) -> list[Slice]:
        states = chain_states([it["marks"] for it in self.iterations])
        return [
            Slice(k, it["fills"], it["actions"], it["blocks"], it["marks"], states[k][0], 50.0 + k)
            for k, it in enumerate(self.iterations)
        ]


def simulate_run(
    seed: int,
    n_iter: int = 3,
    fills_per_iter: int = 40,
    iter_ms: int = 20_000,
    price: float = 100.0,
    tick: float | None = 0.01,
    position0: float = 0.0,
    cash0: float = 0.0,
    mark_ms: int = 100,
) -> SimRun:
    rng = np.random.default_rng(seed)
    step_ms = 10
    n_steps = n_iter * iter_ms // step_ms + 1
    moves = rng.choice([-1.0, 0.0, 1.0], size=n_steps, p=[0.3, 0.4, 0.3])
    unit = tick if tick is not None else price * 1e-4 * rng.uniform(0.3, 3.0)
    path = price + np.cumsum(moves) * unit
    path = np.maximum(path, price * 0.05)

    def mid_at(t: np.ndarray | int) -> np.ndarray:
        return path[(np.asarray(t) - T0) // (step_ms * MS)]

    cash, pos = cash0, position0
    run = SimRun([], (cash0, position0, float(mid_at(T0))))
    order_id = 0
    for k in range(n_iter):
        lo = T0 + k * iter_ms * MS
        mark_ts = np.arange(lo, lo + iter_ms * MS, mark_ms * MS, dtype=np.int64)
        close_ts = lo + iter_ms * MS - step_ms * MS  # closing mark, after every fill
        if mark_ts[-1] != close_ts:
            mark_ts = np.append(mark_ts, close_ts)
        n = int(rng.integers(0, fills_per_iter + 1))
        ts = np.sort(rng.integers(lo + 1, close_ts, size=n))
        fills = np.zeros(n, dtype=FILL_DTYPE)
        for i, t in enumerate(ts):
            s = 1 if rng.random() < 0.5 else -1
            q = float(rng.choice([0.001, 0.01, 0.013, 0.05, 0.2]))
            age_ns = int(rng.integers(1, 800)) * MS
            t_dec = max(T0, int(t) - age_ns)
            md = float(mid_at(t_dec))
            mf = float(mid_at(int(t)))
            half = md * float(rng.uniform(0.5, 4.0)) / 1e4
            pq = md - s * half
            if tick is not None:
                pq = round(pq / tick) * tick
            maker = rng.random() < 0.85
            p = pq if maker else pq + s * float(rng.uniform(0, 3)) * unit
            fee = (-0.5 if maker else 4.0) / 1e4 * q * p
            cash -= s * q * p + fee
            pos += s * q
            order_id += 1
            fills[i] = (
                t, order_id, age_ns, age_ns // 2, p, q, fee, pq, md, mf, pos, s,
                LIQ_MAKER if maker else LIQ_TAKER, k, 0,
            )  # fmt: skip
        marks = np.zeros(len(mark_ts), dtype=MARK_DTYPE)
        marks["ts"] = mark_ts
        marks["mid"] = mid_at(mark_ts)
        # The account as of each mark: initial state plus every fill at or before it.
        cum_dq = np.concatenate([[0.0], np.cumsum(fills["side"] * fills["qty"])])
        cum_dc = np.concatenate(
            [[0.0], np.cumsum(-(fills["side"] * fills["qty"] * fills["price"]) - fills["fee"])]
        )
        idx = np.searchsorted(ts, mark_ts, side="right")
        start_cash = cash - cum_dc[-1]
        start_pos = pos - cum_dq[-1]
        marks["cash"] = start_cash + cum_dc[idx]
        marks["position"] = start_pos + cum_dq[idx]
        marks["bid_quote"] = marks["mid"] * (1 - 2e-4)
        marks["ask_quote"] = marks["mid"] * (1 + 2e-4)
        marks["bid_quote"][::7] = np.nan  # sometimes one-sided
        marks["best_bid"] = marks["mid"] - unit / 2
        marks["best_ask"] = marks["mid"] + unit / 2
        marks["sigma"] = 1e-4
        n_act = int(rng.integers(0, 60))
        actions = np.zeros(n_act, dtype=ACTION_DTYPE)
        actions["ts"] = np.sort(rng.integers(lo, close_ts, size=n_act))
        actions["action"] = rng.choice([ACT_PLACE, ACT_REPLACE, ACT_CANCEL], size=n_act)
        actions["side"] = rng.choice([1, -1], size=n_act)
        n_blk = int(rng.integers(0, 20))
        blocks = np.zeros(n_blk, dtype=BLOCK_DTYPE)
        blocks["ts"] = np.sort(rng.integers(lo, close_ts, size=n_blk))
        blocks["reason"] = rng.integers(0, 4, size=n_blk)
        blocks["action"] = ACT_REPLACE
        run.iterations.append(
            {"fills": fills, "actions": actions, "blocks": blocks, "marks": marks}
        )
        run.ends.append((cash, pos, float(marks["mid"][-1])))
    return run


def account_pnl(start: tuple[float, float, float], end: tuple[float, float, float]) -> float:
    """PnL from the generator's own account: cash plus position at the mid, end minus start."""
    return (end[0] + end[1] * end[2]) - (start[0] + start[1] * start[2])


# --------------------------------------------------------------------------------------------
# Hand-built records
# --------------------------------------------------------------------------------------------


def fill(
    t_ms: float, side: int, qty: float, price: float, quote: float, md: float, mf: float,
    fee: float = 0.0, maker: bool = True, age_ms: float = 10.0,
) -> tuple:  # fmt: skip
    return (
        T0 + int(t_ms * MS), 1, int(age_ms * MS), 0, price, qty, fee, quote, md, mf, 0.0, side,
        LIQ_MAKER if maker else LIQ_TAKER, 0, 0,
    )  # fmt: skip


def marks_of(rows: list[tuple[float, float, float, float]]) -> np.ndarray:
    """(t_ms, mid, position, cash) rows → marks."""
    m = np.zeros(len(rows), dtype=MARK_DTYPE)
    for i, (t, mid, pos, cash) in enumerate(rows):
        m[i]["ts"] = T0 + int(t * MS)
        m[i]["mid"] = mid
        m[i]["position"] = pos
        m[i]["cash"] = cash
        m[i]["bid_quote"] = mid - 0.01
        m[i]["ask_quote"] = mid + 0.01
    return m


def one(fills: list[tuple], marks: np.ndarray, actions=None, blocks=None, start=None):
    f = np.array(fills, dtype=FILL_DTYPE)
    a = np.zeros(0, ACTION_DTYPE) if actions is None else actions
    b = np.zeros(0, BLOCK_DTYPE) if blocks is None else blocks
    st_ = chain_states([marks])[0][0] if start is None else start
    (sec,) = iteration_sections(keyed_parts([Slice(0, f, a, b, marks, st_, None)]), 5.0)
    return sec


def test_buy_at_the_quote_mid_unchanged_is_gross_only() -> None:
    # Buy 1 at our bid 99.99 with the mid at 100 throughout: +0.01 quoted edge, nothing else.
    marks = marks_of([(0, 100.0, 0.0, 0.0), (1000, 100.0, 1.0, -99.99)])
    sec = one([fill(500, 1, 1.0, 99.99, 99.99, 100.0, 100.0)], marks)
    assert sec.gross_bps == pytest.approx(0.01 / 99.99 * 1e4, rel=1e-12)
    assert sec.slippage_bps == 0.0
    assert sec.fees_eff_bps == 0.0
    assert sec.inventory_bps == 0.0
    assert sec.net_bps == pytest.approx(sec.gross_bps, rel=1e-12)
    assert sec.pnl == pytest.approx(0.01, abs=1e-12)
    assert sec.neg_edge_drivers == []


def test_fill_worse_than_quoted_is_negative_slippage() -> None:
    # Quoted 99.99 against mid 100, but paid 100.00 (mid still 100): slippage −0.01.
    marks = marks_of([(0, 100.0, 0.0, 0.0), (1000, 100.0, 1.0, -100.0)])
    sec = one([fill(500, 1, 1.0, 100.0, 99.99, 100.0, 100.0, maker=False)], marks)
    assert sec.amounts.gross == pytest.approx(0.01)
    assert sec.amounts.slippage == pytest.approx(-0.01)
    assert sec.slippage_bps == pytest.approx(-0.01 / 100.0 * 1e4)
    assert sec.slippage_cost_p95_bps == pytest.approx(1.0)  # cost = minus the contribution
    assert sec.net_bps == pytest.approx(0.0, abs=1e-12)
    assert [d.name for d in sec.neg_edge_drivers] == ["slippage_bps"]
    assert sec.maker_share_pct == 0.0


def test_mid_moving_between_decision_and_fill_is_slippage() -> None:
    # Sell quoted at 100.02 with mid 100.00; by the fill the mid is 100.03 → picked off.
    marks = marks_of([(0, 100.0, 0.0, 0.0), (1000, 100.03, -1.0, 100.02)])
    sec = one([fill(500, -1, 1.0, 100.02, 100.02, 100.0, 100.03)], marks)
    assert sec.amounts.gross == pytest.approx(0.02)
    assert sec.amounts.slippage == pytest.approx(-0.03)  # −[(100.03−100.02) − (100−100.02)]
    assert sec.amounts.inventory == 0.0
    assert sec.pnl == pytest.approx(-0.01)
    assert sec.amounts.net == pytest.approx(sec.pnl)


def test_rebate_is_positive_fees_eff() -> None:
    fee = -0.5e-4 * 1.0 * 99.99  # maker rebate of 0.5 bp
    marks = marks_of([(0, 100.0, 0.0, 0.0), (1000, 100.0, 1.0, -99.99 - fee)])
    sec = one([fill(500, 1, 1.0, 99.99, 99.99, 100.0, 100.0, fee=fee)], marks)
    assert sec.fees_eff_bps == pytest.approx(0.5)
    assert sec.amounts.fees_eff == pytest.approx(-fee)
    assert sec.amounts.net == pytest.approx(sec.pnl, rel=1e-12)


def test_carried_inventory_with_moving_mid() -> None:
    # Iteration 0: buy 2 at 100 (mid 100), close at mid 101 → inventory +2.
    m0 = marks_of([(0, 100.0, 0.0, 0.0), (1000, 101.0, 2.0, -200.0)])
    f0 = np.array([fill(500, 1, 2.0, 100.0, 100.0, 100.0, 100.0)], dtype=FILL_DTYPE)
    # Iteration 1: no fills, position 2 carried while the mid drops to 100.5 → inventory −1.
    m1 = marks_of([(1100, 100.8, 2.0, -200.0), (2000, 100.5, 2.0, -200.0)])
    empty_a, empty_b = np.zeros(0, ACTION_DTYPE), np.zeros(0, BLOCK_DTYPE)
    states = chain_states([m0, m1])
    slices = [
        Slice(0, f0, empty_a, empty_b, m0, states[0][0]),
        Slice(1, f0[:0], empty_a, empty_b, m1, states[1][0]),
    ]
    totals, (s0, s1) = edge_sections(slices, 5.0)
    assert s0.amounts.inventory == pytest.approx(2.0)
    assert s0.inventory_bps == pytest.approx(2.0 / 200.0 * 1e4)
    assert s0.pnl == pytest.approx(2.0)
    assert s1.amounts.inventory == pytest.approx(-1.0)
    assert s1.pnl == pytest.approx(-1.0)
    assert s1.net_bps is None  # no traded notional: bps undefined, amount still reported
    assert s1.position.start == 2.0 and s1.position.mid_start == 101.0
    assert totals.amounts.inventory == pytest.approx(1.0)
    assert totals.pnl == pytest.approx(1.0)
    assert totals.final_mid == 100.5


def test_markouts_step_function_and_coverage() -> None:
    # A sell at t=1000 ms, mid 100; the mid then rises (against the sell).
    marks = marks_of(
        [
            (0, 100.0, 0.0, 0.0),
            (1050, 100.5, -1.0, 100.0),  # before t+100 ms: used at h=100 ms
            (1100, 100.2, -1.0, 100.0),  # exactly t+100 ms: a mark at t+h counts
            (1900, 101.0, -1.0, 100.0),  # last mark ≤ t+1 s
            (2500, 102.0, -1.0, 100.0),
            (6000, 99.0, -1.0, 100.0),  # last mark ≤ t+5 s
            (6500, 99.0, -1.0, 100.0),
        ]
    )
    sec = one([fill(1000, -1, 1.0, 100.0, 100.0, 100.0, 100.0)], marks)
    f = np.array([fill(1000, -1, 1.0, 100.0, 100.0, 100.0, 100.0)], dtype=FILL_DTYPE)
    assert markout_mids(f, marks, 100 * MS)[0] == 100.2
    assert markout_mids(f, marks, 1000 * MS)[0] == 101.0
    assert markout_mids(f, marks, 5000 * MS)[0] == 99.0
    assert markout_mids(f, marks, 6000 * MS)[0] != markout_mids(f, marks, 6000 * MS)[0]  # NaN
    # Sell: contribution = −(M − 100); bps of notional 100.
    assert sec.adverse["100ms"].adverse_bps == pytest.approx(-0.2 / 100 * 1e4)
    assert sec.adverse["1s"].adverse_bps == pytest.approx(-1.0 / 100 * 1e4)
    assert sec.adverse["5s"].adverse_bps == pytest.approx(1.0 / 100 * 1e4)
    assert sec.adverse_cost_p95_bps == pytest.approx(100.0)  # gate horizon is 1 s
    assert sec.adverse["1s"].fills_covered == 1
    # Adverse cost 100 bps > the 5 bps gate → an 'adverse_bps' driver after the components.
    names = [d.name for d in sec.neg_edge_drivers]
    assert names[-1] == "adverse_bps"
    # Markouts are not in net: net is gross + slip + fees + inventory only.
    a = sec.amounts
    assert a.net == pytest.approx(a.gross + a.slippage + a.fees_eff + a.inventory)


def test_markout_uses_fill_mid_until_a_mark_follows_the_fill() -> None:
    # Marks every 100 ms; a fill 30 ms after one: at h=50 ms no mark lies in (t, t+h].
    marks = marks_of([(0, 100.0, 0, 0), (100, 100.0, 0, 0), (200, 104.0, 0, 0)])
    f = np.array([fill(130, 1, 1.0, 100.0, 100.0, 100.0, 101.0)], dtype=FILL_DTYPE)
    assert markout_mids(f, marks, 50 * MS)[0] == 101.0
    assert markout_mids(f, marks, 70 * MS)[0] == 104.0


def test_counts_ratios_and_drivers() -> None:
    marks = marks_of([(0, 100.0, 0.0, 0.0), (1000, 100.0, 0.0, 0.02)])
    actions = np.zeros(10, ACTION_DTYPE)
    actions["action"] = [ACT_PLACE] * 4 + [ACT_REPLACE] * 3 + [ACT_CANCEL] * 3
    blocks = np.zeros(10, BLOCK_DTYPE)
    blocks["reason"] = [BLK_MIN_INTERVAL] * 9 + [BLK_CONCURRENCY]
    fills = [
        fill(100, 1, 1.0, 99.99, 99.99, 100.0, 100.0, age_ms=100),
        fill(200, -1, 1.0, 100.01, 100.01, 100.0, 100.0, age_ms=300, maker=False),
    ]
    sec = one(fills, marks, actions, blocks)
    # Old per-action figure: cancels ÷ all actions.
    assert sec.cancel_action_share == pytest.approx(3 / 10)
    # Per order (one id, all at t=0): 7 orders, 6 ended by the next place/replace, 1 by the
    # first cancel; the two later cancels found nothing to end.
    assert sec.cancel_ratio == pytest.approx(1.0)
    assert (sec.orders.sent, sec.orders.lost_cancels) == (7, 2)
    assert sec.block_reasons.attempts == 20
    assert sec.block_reasons.counts["min_interval"] == 9
    assert sec.block_reasons.ratios["min_interval"] == pytest.approx(0.45)
    assert sec.block_reasons.ratios["concurrency"] == pytest.approx(0.05)
    assert sec.maker_share_pct == pytest.approx(99.99 / (99.99 + 100.01) * 100)
    assert sec.order_age_p50_ms == pytest.approx(200.0)
    assert sec.order_age_p95_ms == pytest.approx(100 + 0.95 * 200)
    # Only the block ratio above 40 % is a driver (the fills are at the quote, mid flat).
    assert [(d.name, d.kind) for d in sec.neg_edge_drivers] == [("min_interval", "block")]
    ti = tuner_inputs(sec)
    assert ti["drivers"] == ("min_interval",) and ti["fills"] == 2


def test_drivers_ranked_by_harm() -> None:
    # Slippage −1 bp-ish, fees −4 bp (taker), inventory −? : fees must come first.
    fee = 4e-4 * 100.0
    marks = marks_of([(0, 100.0, 0.0, 0.0), (1000, 99.9, 1.0, -100.0 - fee)])
    sec = one([fill(500, 1, 1.0, 100.0, 99.99, 100.0, 100.0, fee=fee, maker=False)], marks)
    names = [d.name for d in sec.neg_edge_drivers]
    assert names == ["inventory_bps", "fees_eff_bps", "slippage_bps"]
    harms = [d.harm_bps for d in sec.neg_edge_drivers]
    assert harms == sorted(harms, reverse=True)
    assert sec.amounts.net == pytest.approx(sec.pnl, rel=1e-12)


def test_rolling_net_bps_marks_window_fills_only() -> None:
    f = np.array([fill(0, 1, 1.0, 100.0, 100.0, 100.0, 100.0, fee=0.01)], dtype=FILL_DTYPE)
    assert rolling_net_bps(f, 100.1) == pytest.approx((0.1 - 0.01) / 100 * 1e4)
    assert rolling_net_bps(f[:0], 100.0) is None


def test_simulated_run_decomposes_to_the_account_pnl() -> None:
    run = simulate_run(7, n_iter=4, fills_per_iter=80, position0=0.3, cash0=-30.0)
    totals, iters = edge_sections(run.slices(), 5.0)
    start = run.start
    for k, sec in enumerate(iters):
        pnl = account_pnl(start, run.ends[k])
        assert sec.amounts.net == pytest.approx(pnl, rel=1e-9, abs=1e-12)
        start = run.ends[k]
    assert totals.fills == sum(len(it["fills"]) for it in run.iterations)
    assert totals.amounts.net == pytest.approx(account_pnl(run.start, run.ends[-1]), rel=1e-9)
    assert totals.ws_lag_p95_ms == 53.0  # max of the per-iteration p95s
    assert all(abs(s.pnl_residual or 0.0) < 1e-9 for s in [totals, *iters])


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    seed=st.integers(0, 2**32 - 1),
    n_iter=st.integers(1, 4),
    fills=st.integers(1, 40),
    price=st.sampled_from([0.0123, 1.0, 97.3, 2_500.0, 64_000.0]),
    tick=st.sampled_from([None, 0.01]),
    position0=st.sampled_from([0.0, 0.5, -1.25]),
    cash0=st.floats(-1e4, 1e4),
)
def test_invariant_net_equals_account_pnl(
    seed: int,
    n_iter: int,
    fills: int,
    price: float,
    tick: float | None,
    position0: float,
    cash0: float,
) -> None:
    if tick is not None and price < 1.0:
        tick = None  # a cent tick on a 0.01 price is not a market
    run = simulate_run(
        seed, n_iter, fills, iter_ms=5_000, price=price, tick=tick, position0=position0, cash0=cash0
    )
    totals, iters = edge_sections(run.slices(), 5.0)

    def scale(
        a: tuple[float, float, float], b: tuple[float, float, float], notional: float
    ) -> float:
        # The account's own PnL is only known to a few ulps of the numbers it is made of.
        return max(notional, abs(a[0]), abs(b[0]), abs(a[1] * a[2]), abs(b[1] * b[2]))

    start = run.start
    for k, sec in enumerate(iters):
        pnl = account_pnl(start, run.ends[k])
        tol = 1e-12 * scale(start, run.ends[k], sec.notional)
        start = run.ends[k]
        if sec.notional > 0:
            # net_bps × traded notional / 1e4 is the account's PnL.
            got = sec.net_bps * sec.notional / 1e4
            assert math.isclose(got, pnl, rel_tol=1e-9, abs_tol=tol), (k, got, pnl)
        else:
            assert math.isclose(sec.amounts.net, pnl, rel_tol=1e-9, abs_tol=tol)
    pnl = account_pnl(run.start, run.ends[-1])
    tol = 1e-12 * max(scale(run.start, e, totals.notional) for e in run.ends)
    if totals.notional > 0:
        got = totals.net_bps * totals.notional / 1e4
        assert math.isclose(got, pnl, rel_tol=1e-9, abs_tol=tol)
    parts = math.fsum(s.amounts.net for s in iters)
    assert math.isclose(totals.amounts.net, parts, rel_tol=1e-9, abs_tol=tol)
