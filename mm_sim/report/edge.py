"""Edge decomposition: where each basis point of PnL came from, rebuilt from the records.

Every component is an amount of quote currency whose sum is, by construction, the PnL measured
from the account (cash plus position marked to the mid). For a fill with side s (+1 buy, -1
sell), quantity q, price p, our quote price p_q, the mid at the decision m_d and at the fill m_f:

- gross     = s·q·(m_d − p_q)                       the edge as quoted
- slippage  = s·q·[(m_f − p) − (m_d − p_q)]          what happened between decision and fill
- fees_eff  = −fee                                   a rebate is positive
- inventory = Σ_fills s·q·(m_end − m_f) + position_start·(m_end − m_start)

gross + slippage = s·q·(m_f − p), so the four add up to Σ s·q·(m_end − p) − Σ fee +
position_start·(m_end − m_start) = Δcash + position_end·m_end − position_start·m_start, the
account's PnL over the window. The report computes both sides independently and publishes their
difference as ``pnl_residual``: non-zero only if the recorded fills and marks disagree.

Markouts (adverse selection) are informational and not part of the sum: s·q·(M(t+h) − m_f),
where M is a step function — the mid of the last mark at or before t+h, or the fill's own mid
when no mark falls between the fill and t+h. A fill is covered at horizon h only when its
iteration has a mark at or after t+h; uncovered fills are left out of that horizon's statistics,
so an iteration's numbers never change once it is committed.

All bps divide an amount by traded notional (q·p), per fill or summed. Costs (slippage cost,
adverse cost) are minus the contribution, in bps of the fill's own notional.

An inverse (coin-margined) run is decomposed in its money view (mm_sim/report/inverse.py): the
same formulas on the records mirrored into the linear instrument priced 1/P, so every amount is
base coin and the notional is the coin notional q·C/P.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, replace

import numpy as np

from mm_sim.config import VenueRuleGates
from mm_sim.core.records import (
    ACT_CANCEL,
    ACT_PLACE,
    ACT_REPLACE,
    BLOCK_REASONS,
    LIQ_MAKER,
    MARK_DTYPE,
)
from mm_sim.errors import UserError
from mm_sim.report.churn import (
    REJECT_CODES,
    build_orders,
    churn_counts,
    rule_cycles,
    venue_rules,
)
from mm_sim.report.inverse import coin_fills, coin_marks, money_figures, rule_orders
from mm_sim.report.schema import (
    ActionCounts,
    Amounts,
    BlockReasons,
    Driver,
    EdgeSection,
    Markout,
    OrderCounts,
    PositionStats,
    QuoteStats,
)

HORIZONS_MS: tuple[int, ...] = (100, 1000, 5000)
GATE_HORIZON_MS = 1000  # the adverse gate reads the 1 s markout (see docs/REPORTS.md)
BLOCK_RATIO_LIMIT = 0.40  # the seed's "blocks > 40%" driver threshold
COMPONENTS: tuple[str, ...] = ("gross_bps", "slippage_bps", "fees_eff_bps", "inventory_bps")
BPS = 1e4


def horizon_key(ms: int) -> str:
    return f"{ms // 1000}s" if ms % 1000 == 0 else f"{ms}ms"


@dataclass(frozen=True)
class State:
    """The account at a mark: what the PnL of a window is measured between."""

    ts: int
    cash: float
    position: float
    mid: float | None  # last finite mid known at that mark
    contract_size: float = 0.0  # C of an inverse instrument (cash in coin), 0 = linear

    def value(self) -> float | None:
        """Cash plus position at the mid (inverse: cash − position·C/mid); flat needs no mid."""
        if self.position == 0.0:
            return self.cash
        if self.mid is None:
            return None
        if self.contract_size > 0.0:
            return self.cash - self.position * self.contract_size / self.mid
        return self.cash + self.position * self.mid

    def money(self) -> State:
        """This state in the money view (linear: itself; inverse: the mirrored instrument)."""
        c = self.contract_size
        if c <= 0.0:
            return self
        mid = None if self.mid is None else 1.0 / self.mid
        return State(self.ts, self.cash, -self.position * c, mid)


def _last_finite(x: np.ndarray) -> float | None:
    idx = np.flatnonzero(np.isfinite(x))
    return float(x[idx[-1]]) if len(idx) else None


def _first_finite(x: np.ndarray) -> float | None:
    idx = np.flatnonzero(np.isfinite(x))
    return float(x[idx[0]]) if len(idx) else None


def initial_state(marks: np.ndarray, contract_size: float = 0.0) -> State | None:
    """The run's starting point: its first mark (mid: first finite one if that mark has none)."""
    if len(marks) == 0:
        return None
    m0 = marks[0]
    mid = float(m0["mid"]) if np.isfinite(m0["mid"]) else _first_finite(marks["mid"])
    return State(int(m0["ts"]), float(m0["cash"]), float(m0["position"]), mid, contract_size)


def end_state(marks: np.ndarray, start: State | None, contract_size: float = 0.0) -> State | None:
    """State at a window's last mark; the mid is carried forward over marks without one."""
    if len(marks) == 0:
        return start
    last = marks[-1]
    mid = _last_finite(marks["mid"])
    if mid is None and start is not None:
        mid = start.mid
    return State(int(last["ts"]), float(last["cash"]), float(last["position"]), mid, contract_size)


def chain_states(
    mark_slices: Sequence[np.ndarray], contract_size: float = 0.0
) -> list[tuple[State | None, State | None]]:
    """(start, end) of each iteration: each starts where the previous one ended."""
    out: list[tuple[State | None, State | None]] = []
    prev: State | None = None
    for k, marks in enumerate(mark_slices):
        start = initial_state(marks, contract_size) if k == 0 or prev is None else prev
        end = end_state(marks, start, contract_size)
        out.append((start, end))
        prev = end
    return out


@dataclass(frozen=True)
class Slice:
    """One iteration's records and the state it starts from."""

    iteration: int
    fills: np.ndarray
    actions: np.ndarray
    blocks: np.ndarray
    marks: np.ndarray
    start: State | None
    ws_lag_p95_ms: float | None = None
    # Post-only rejections in the window as counted by the runner (engine counters), used when
    # the core records no rejection action; None: not reported.
    post_only_rejected: int | None = None
    contract_size: float = 0.0  # C of an inverse instrument (money in coin), 0 = linear


@dataclass
class Parts:
    """Per-fill terms and per-iteration sums; sections (one iteration or the totals) use these."""

    iteration: int
    notional: np.ndarray
    qty: np.ndarray
    maker: np.ndarray
    gross: np.ndarray
    slippage: np.ndarray
    fees_eff: np.ndarray
    order_age_ms: np.ndarray
    markouts: dict[int, np.ndarray]  # horizon -> amount per fill, NaN when not covered
    inventory: float
    start: State | None
    end: State | None
    actions: dict[int, int]
    block_counts: dict[str, int]
    marks: np.ndarray
    ws_lag_p95_ms: float | None
    fill_records: np.ndarray
    action_records: np.ndarray
    post_only_rejected: int
    # The money view (the records themselves for a linear instrument; mirrored for an inverse
    # one): what the bootstrap rebuilds amounts from.
    money_fills: np.ndarray
    money_marks: np.ndarray
    contract_size: float = 0.0


def markout_mids(fills: np.ndarray, marks: np.ndarray, horizon_ns: int) -> np.ndarray:
    """M(t+h) per fill (step function over the marks), NaN when the marks end before t+h."""
    ok = np.isfinite(marks["mid"])
    ts = marks["ts"][ok]
    mid = marks["mid"][ok]
    t = fills["ts"].astype(np.int64)
    out = np.full(len(fills), np.nan)
    if len(ts) == 0 or len(fills) == 0:
        return out
    target = t + horizon_ns
    idx = np.searchsorted(ts, target, side="right") - 1
    covered = target <= ts[-1]
    safe = np.clip(idx, 0, len(ts) - 1)
    after_fill = (idx >= 0) & (ts[safe] > t)
    val = np.where(after_fill, mid[safe], fills["mid_fill"])
    out[covered] = val[covered]
    return out


def iteration_parts(sl: Slice) -> Parts:
    """Compute every per-fill term of one iteration and its carried-inventory term."""
    csize = sl.contract_size
    f = coin_fills(sl.fills, csize) if csize > 0.0 else sl.fills
    mmarks = coin_marks(sl.marks, csize) if csize > 0.0 else sl.marks
    s = f["side"].astype(np.float64)
    q = f["qty"].astype(np.float64)
    p = f["price"].astype(np.float64)
    pq = f["quote_price"]
    md = f["mid_decision"]
    mf = f["mid_fill"]
    start_nat = sl.start
    if start_nat is not None and start_nat.contract_size != csize:
        start_nat = replace(start_nat, contract_size=csize)
    end_nat = end_state(sl.marks, start_nat, csize)
    end = end_nat.money() if end_nat is not None else None
    start = start_nat.money() if start_nat is not None else None
    if len(f) and (end is None or end.mid is None):
        raise UserError(
            f"iteration {sl.iteration}: {len(f)} fills but no mark with a finite mid to value "
            "the inventory at (the runner must record marks, including a closing one)"
        )
    inventory = 0.0
    if len(f):
        assert end is not None and end.mid is not None
        inventory = math.fsum(s * q * (end.mid - mf))
    if start is not None and end is not None and start.position != 0.0:
        if start.mid is None or end.mid is None:
            raise UserError(f"iteration {sl.iteration}: carried position but no mid to mark it")
        inventory += start.position * (end.mid - start.mid)
    markouts = {h: s * q * (markout_mids(f, mmarks, h * 1_000_000) - mf) for h in HORIZONS_MS}
    act = sl.actions["action"]
    actions = {
        code: int(np.count_nonzero(act == code)) for code in (ACT_PLACE, ACT_REPLACE, ACT_CANCEL)
    }
    rejected = int(np.isin(act, REJECT_CODES).sum())
    if not rejected and sl.post_only_rejected is not None:
        rejected = int(sl.post_only_rejected)
    reasons = sl.blocks["reason"]
    blocks = {name: int(np.count_nonzero(reasons == i)) for i, name in enumerate(BLOCK_REASONS)}
    for code in np.unique(reasons):
        if not 0 <= int(code) < len(BLOCK_REASONS):
            blocks[f"unknown_{int(code)}"] = int(np.count_nonzero(reasons == code))
    return Parts(
        iteration=sl.iteration,
        notional=q * p,
        qty=sl.fills["qty"].astype(np.float64),  # the instrument's own unit (contracts)
        maker=f["liquidity"] == LIQ_MAKER,
        gross=s * q * (md - pq),
        slippage=s * q * ((mf - p) - (md - pq)),
        fees_eff=-f["fee"].astype(np.float64),
        order_age_ms=f["order_age_ns"].astype(np.float64) / 1e6,
        markouts=markouts,
        inventory=inventory,
        start=start_nat,
        end=end_nat,
        actions=actions,
        block_counts=blocks,
        marks=sl.marks,
        ws_lag_p95_ms=sl.ws_lag_p95_ms,
        fill_records=sl.fills,
        action_records=sl.actions,
        post_only_rejected=rejected,
        money_fills=f,
        money_marks=mmarks,
        contract_size=csize,
    )


# --------------------------------------------------------------------------------------------
# Sections
# --------------------------------------------------------------------------------------------


def _f(x: float | np.floating | None) -> float | None:
    if x is None:
        return None
    v = float(x)
    return v if math.isfinite(v) else None


def _pct(x: np.ndarray, q: float) -> float | None:
    x = x[np.isfinite(x)]
    return _f(np.percentile(x, q)) if len(x) else None


def _bps(amount: float, notional: float) -> float | None:
    return amount / notional * BPS if notional > 0 else None


def _cat(parts: Sequence[Parts], name: str) -> np.ndarray:
    arrays = [getattr(p, name) for p in parts]
    return np.concatenate(arrays) if arrays else np.empty(0)


def _cat_records(parts: Sequence[Parts], name: str) -> np.ndarray:
    from mm_sim.core.records import ACTION_DTYPE, FILL_DTYPE

    arrays = [getattr(p, name) for p in parts]
    if arrays:
        return np.concatenate(arrays)
    return np.empty(0, dtype=ACTION_DTYPE if name == "action_records" else FILL_DTYPE)


@dataclass(frozen=True)
class Headline:
    """The amounts every section starts from, and the three figures a model arm reports.

    Why apart: the model error bars need only net_bps, fills and maker share of each arm's
    totals, and a whole :func:`section` (orders, venue rules, markouts, positions) cost 12 % of
    the default soak when every report rebuild did it for every arm. Both use this one
    computation, so the arm's figures are the section's to the last bit."""

    notional_f: np.ndarray
    maker: np.ndarray
    notional: float
    gross: float
    slippage: float
    fees_eff: float
    inventory: float
    net: float
    net_bps: float | None
    maker_share_pct: float | None

    @property
    def fills(self) -> int:
        return len(self.notional_f)


def headline(parts: Sequence[Parts]) -> Headline:
    notional_f = _cat(parts, "notional")
    notional = math.fsum(notional_f)
    gross = math.fsum(_cat(parts, "gross"))
    slippage = math.fsum(_cat(parts, "slippage"))
    fees_eff = math.fsum(_cat(parts, "fees_eff"))
    inventory = math.fsum(p.inventory for p in parts)
    net = math.fsum((gross, slippage, fees_eff, inventory))
    maker = _cat(parts, "maker").astype(bool)
    return Headline(
        notional_f=notional_f,
        maker=maker,
        notional=notional,
        gross=gross,
        slippage=slippage,
        fees_eff=fees_eff,
        inventory=inventory,
        net=net,
        net_bps=_f(_bps(net, notional)),
        maker_share_pct=_f(
            math.fsum(notional_f[maker]) / notional * 100.0 if notional > 0 else None
        ),
    )


def section(
    parts: Sequence[Parts],
    iteration: int | None,
    adverse_threshold_bps: float,
    rules: VenueRuleGates | None = None,
) -> EdgeSection:
    """One iteration (one element of ``parts``) or the totals (all of them)."""
    rules = rules if rules is not None else VenueRuleGates()
    hl = headline(parts)
    notional_f, notional, maker = hl.notional_f, hl.notional, hl.maker
    gross, slippage, fees_eff, inventory, net = (
        hl.gross, hl.slippage, hl.fees_eff, hl.inventory, hl.net
    )  # fmt: skip
    start = parts[0].start if parts else None
    end = parts[-1].end if parts else None
    v0 = start.value() if start else None
    v1 = end.value() if end else None
    pnl = v1 - v0 if v0 is not None and v1 is not None else None

    with np.errstate(divide="ignore", invalid="ignore"):
        slip_cost = -_cat(parts, "slippage") / notional_f * BPS
    markouts: dict[str, Markout] = {}
    for h in HORIZONS_MS:
        amt = np.concatenate([p.markouts[h] for p in parts]) if parts else np.empty(0)
        cov = np.isfinite(amt)
        with np.errstate(divide="ignore", invalid="ignore"):
            cost = -amt[cov] / notional_f[cov] * BPS
        markouts[horizon_key(h)] = Markout(
            horizon_ms=h,
            fills_covered=int(cov.sum()),
            adverse_bps=_f(_bps(math.fsum(amt[cov]), math.fsum(notional_f[cov]))),
            cost_p50_bps=_pct(cost, 50),
            cost_p95_bps=_pct(cost, 95),
        )
    gate_mo = markouts[horizon_key(GATE_HORIZON_MS)]

    n_place = sum(p.actions[ACT_PLACE] for p in parts)
    n_replace = sum(p.actions[ACT_REPLACE] for p in parts)
    n_cancel = sum(p.actions[ACT_CANCEL] for p in parts)
    n_actions = n_place + n_replace + n_cancel
    counts: dict[str, int] = {name: 0 for name in BLOCK_REASONS}
    for p in parts:
        for k, v in p.block_counts.items():
            counts[k] = counts.get(k, 0) + v
    attempts = n_actions + sum(counts.values())
    ratios = {k: (v / attempts if attempts else 0.0) for k, v in counts.items()}
    age = _cat(parts, "order_age_ms")
    lags = [p.ws_lag_p95_ms for p in parts if p.ws_lag_p95_ms is not None]
    orders = build_orders(
        _cat_records(parts, "action_records"), _cat_records(parts, "fill_records")
    )
    churn = churn_counts(orders)
    csize = parts[0].contract_size if parts else 0.0
    post_only = sum(p.post_only_rejected for p in parts)

    bps = {
        "gross_bps": _bps(gross, notional),
        "slippage_bps": _bps(slippage, notional),
        "fees_eff_bps": _bps(fees_eff, notional),
        "inventory_bps": _bps(inventory, notional),
    }
    gate_cost_p95 = gate_mo.cost_p95_bps
    drivers = neg_edge_drivers(bps, gate_cost_p95, adverse_threshold_bps, ratios)
    return EdgeSection(
        iteration=iteration,
        ts_start_ns=start.ts if start else None,
        ts_end_ns=end.ts if end else None,
        fills=len(notional_f),
        maker_fills=int(maker.sum()),
        volume=math.fsum(_cat(parts, "qty")),
        notional=notional,
        pnl=_f(pnl),
        pnl_residual=_f(pnl - net) if pnl is not None else None,
        amounts=Amounts(
            gross=gross, slippage=slippage, fees_eff=fees_eff, inventory=inventory, net=net
        ),
        gross_bps=_f(bps["gross_bps"]),
        slippage_bps=_f(bps["slippage_bps"]),
        fees_eff_bps=_f(bps["fees_eff_bps"]),
        inventory_bps=_f(bps["inventory_bps"]),
        net_bps=hl.net_bps,
        adverse_bps=gate_mo.adverse_bps,
        adverse_cost_p50_bps=gate_mo.cost_p50_bps,
        adverse_cost_p95_bps=gate_cost_p95,
        adverse=markouts,
        maker_share_pct=hl.maker_share_pct,
        actions=ActionCounts(place=n_place, replace=n_replace, cancel=n_cancel),
        cancel_ratio=churn.cancel_ratio,
        cancel_action_share=n_cancel / n_actions if n_actions else None,
        orders=OrderCounts(
            sent=churn.orders_sent,
            ended_by_cancel=churn.ended_by_cancel,
            ended_by_replace=churn.ended_by_replace,
            ended_by_fill=churn.ended_by_fill,
            open_at_end=churn.open_at_end,
            rejected=churn.rejected,
            lost_cancels=churn.lost_cancels,
        ),
        venue_rules=venue_rules(rule_cycles(rule_orders(orders, csize), rules), rules),
        post_only_rejected=post_only,
        post_only_rejected_share=post_only / churn.orders_sent if churn.orders_sent else None,
        order_age_p50_ms=_pct(age, 50),
        order_age_p95_ms=_pct(age, 95),
        slippage_cost_p50_bps=_pct(slip_cost, 50),
        slippage_cost_p95_bps=_pct(slip_cost, 95),
        ws_lag_p95_ms=max(lags) if lags else None,
        clock_error=any(lag < 0 for lag in lags),
        block_reasons=BlockReasons(attempts=attempts, counts=counts, ratios=ratios),
        position=_position_stats(parts, start, end),
        quotes=_quote_stats(parts),
        final_mid=end.mid if end else None,
        neg_edge_drivers=drivers,
        money=money_figures(
            csize,
            _f(pnl),
            net,
            math.fsum(_cat(parts, "qty")),
            end.mid if end else None,
        ),
    )


def neg_edge_drivers(
    component_bps: dict[str, float | None],
    adverse_cost_p95_bps: float | None,
    adverse_threshold_bps: float,
    block_ratios: dict[str, float],
) -> list[Driver]:
    """What pulls net_bps down, most harmful first.

    Components with a negative contribution come first, ranked by how many bps they take away.
    Adverse selection (its p95 cost above the gate) and block reasons above 40 % of attempts
    follow: they act *through* the components (stale or picked-off quotes show up as slippage
    and inventory), so they are causes to look at, not extra bps to add up.
    """
    out = [
        Driver(name=k, kind="component", value=v, unit="bps", harm_bps=-v, threshold=None)
        for k, v in component_bps.items()
        if v is not None and v < 0
    ]
    out.sort(key=lambda d: -(d.harm_bps or 0.0))
    if adverse_cost_p95_bps is not None and adverse_cost_p95_bps > adverse_threshold_bps:
        out.append(
            Driver(
                name="adverse_bps",
                kind="markout",
                value=adverse_cost_p95_bps,
                unit="bps",
                harm_bps=None,
                threshold=adverse_threshold_bps,
            )
        )
    blocked = sorted(
        ((k, r) for k, r in block_ratios.items() if r > BLOCK_RATIO_LIMIT), key=lambda kr: -kr[1]
    )
    out.extend(
        Driver(
            name=k, kind="block", value=r, unit="ratio", harm_bps=None, threshold=BLOCK_RATIO_LIMIT
        )
        for k, r in blocked
    )
    return out


def _all_marks(parts: Sequence[Parts]) -> np.ndarray:
    if not parts:
        return np.empty(0, dtype=MARK_DTYPE)
    return np.concatenate([p.marks for p in parts])


def _position_stats(
    parts: Sequence[Parts], start: State | None, end: State | None
) -> PositionStats:
    marks = _all_marks(parts)
    pos = marks["position"]
    absmax = float(np.max(np.abs(pos))) if len(pos) else None
    if start is not None:
        absmax = max(absmax or 0.0, abs(start.position))
    csize = parts[0].contract_size if parts else 0.0
    with np.errstate(invalid="ignore"):
        # Quote currency: an inverse contract is worth C whatever the price.
        inv = np.abs(pos) * csize if csize > 0.0 else np.abs(pos * marks["mid"])
    inv = inv[np.isfinite(inv)]
    return PositionStats(
        start=start.position if start else None,
        end=end.position if end else None,
        max_abs=absmax,
        mean_abs=float(np.mean(np.abs(pos))) if len(pos) else None,
        inventory_notional_max_abs=float(inv.max()) if len(inv) else None,
        mid_start=start.mid if start else None,
        mid_end=end.mid if end else None,
    )


def quoted_spread_bps(marks: np.ndarray) -> np.ndarray:
    """(ask quote − bid quote) / mid per mark, bps; NaN when a side is not quoted."""
    with np.errstate(invalid="ignore", divide="ignore"):
        return (marks["ask_quote"] - marks["bid_quote"]) / marks["mid"] * BPS


def _quote_stats(parts: Sequence[Parts]) -> QuoteStats:
    marks = _all_marks(parts)
    if not len(marks):
        return QuoteStats(
            quoted_spread_bps_mean=None, quoted_spread_bps_p50=None, two_sided_pct=None
        )
    spread = quoted_spread_bps(marks)
    ok = spread[np.isfinite(spread)]
    return QuoteStats(
        quoted_spread_bps_mean=_f(ok.mean()) if len(ok) else None,
        quoted_spread_bps_p50=_pct(ok, 50),
        two_sided_pct=len(ok) / len(marks) * 100.0,
    )


# --------------------------------------------------------------------------------------------
# Entry points
# --------------------------------------------------------------------------------------------


def sections_of(
    parts: Sequence[Parts], adverse_threshold_bps: float, rules: VenueRuleGates | None = None
) -> tuple[EdgeSection, list[EdgeSection]]:
    """(totals, per-iteration sections) of a run's parts."""
    iters = [section([p], p.iteration, adverse_threshold_bps, rules) for p in parts]
    return section(parts, None, adverse_threshold_bps, rules), iters


def edge_sections(
    slices: Sequence[Slice], adverse_threshold_bps: float, rules: VenueRuleGates | None = None
) -> tuple[EdgeSection, list[EdgeSection]]:
    """(totals, per-iteration sections) of a run."""
    return sections_of([iteration_parts(sl) for sl in slices], adverse_threshold_bps, rules)


def rolling_net_bps(fills: np.ndarray, mid_now: float) -> float | None:
    """net_bps of a window of fills marked at ``mid_now`` (for a mid-iteration emergency rule).

    Only the window's own fills are marked; a position carried into the window is ignored.
    """
    if not len(fills):
        return None
    s = fills["side"].astype(np.float64)
    q = fills["qty"]
    amount = math.fsum(s * q * (mid_now - fills["price"])) - math.fsum(fills["fee"])
    return _bps(amount, math.fsum(q * fills["price"]))


def tuner_inputs(sec: EdgeSection) -> dict[str, object]:
    """The fields the tuner's ``IterationMetrics`` reads, by its names (NaN when undefined)."""
    nan = float("nan")
    return {
        "iteration": sec.iteration if sec.iteration is not None else -1,
        "net_bps": sec.net_bps if sec.net_bps is not None else nan,
        "slippage_bps": sec.slippage_bps if sec.slippage_bps is not None else nan,
        "adverse_p95": sec.adverse_cost_p95_bps if sec.adverse_cost_p95_bps is not None else nan,
        "order_age_p95_ms": sec.order_age_p95_ms if sec.order_age_p95_ms is not None else nan,
        "drivers": tuple(d.name for d in sec.neg_edge_drivers),
        "block_ratios": dict(sec.block_reasons.ratios),
        "fills": sec.fills,
    }
