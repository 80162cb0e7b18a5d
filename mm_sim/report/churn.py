"""Order churn as the venue counts it: orders, how each ended, and Binance's per-cycle rules.

Why per order and not per action: a venue judges churn on orders. A replace on Binance is a
cancel of the resting order plus a new order, so each place and each replace starts an order
and each replace also ends the order it replaces. Counting actions instead (cancels ÷ all
actions) leaves replaces out of the churn and reads ~0 for a quoter that only replaces.

An *order* here is one incarnation: a place, or a replace, of an ``order_id`` (the core keeps
the id across replaces). It ends with the next action on that id (replace or cancel), or when
fills cover its quantity, or it is still open at the window's end. A fill belongs to the order
that was resting when it filled: the incarnation decided at ``ts − order_age_ns`` (the core
resets that stamp on every requeueing replace), or a later replace of the same id at the same
price decided at or before the fill (a quantity decrease keeps the queue and the stamp). An
action on an id whose quantity is already filled lost a race at the venue: a cancel then ends
nothing, a replace is an order rejected (counted as sent, never as resting).

Times: orders start and end at their decision stamps (local clock); fills are matched by the
decision stamp they carry, so no exchange time is compared with a local one except for the
same-price replace case above.

A rejection record (an action code whose name contains "reject", e.g. a post-only order that
would have crossed) ends the id's order in force as ``rejected``; later actions on the id then
lost the race as above. Without such records a rejected order looks open (or ended by the
strategy's next action), so the engine's count is reported beside (``post_only_rejected``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from mm_sim.config import VenueRuleGates
from mm_sim.core.records import ACT_CANCEL, ACT_PLACE, ACT_REPLACE, ACTION_NAMES
from mm_sim.report.schema import RuleCycle, RuleIndicator, VenueRules

END_OPEN = 0
END_FILL = 1
END_CANCEL = 2
END_REPLACE = 3
END_REJECTED = 4
END_NAMES = {
    END_OPEN: "open",
    END_FILL: "fill",
    END_CANCEL: "cancel",
    END_REPLACE: "replace",
    END_REJECTED: "rejected",
}
FILL_EPS = 1e-9  # relative: an order whose fills reach qty·(1 − eps) is filled
# Action codes a core may record when the venue rejects an order (e.g. a post-only order that
# would cross), found by name so a core that adds one needs no change here.
REJECT_CODES: tuple[int, ...] = tuple(c for c, n in ACTION_NAMES.items() if "reject" in n)


@dataclass(frozen=True)
class Orders:
    """One row per order incarnation, in decision order."""

    order_id: np.ndarray  # int64
    start_ts: np.ndarray  # int64, decision stamp of the place / replace
    end_ts: np.ndarray  # int64, decision stamp of the ending action; -1 if none
    qty: np.ndarray  # float64
    price: np.ndarray  # float64
    executed: np.ndarray  # float64, filled quantity
    end: np.ndarray  # int8, END_*
    lost_cancels: int  # cancels sent for an order already filled (ended nothing)

    def __len__(self) -> int:
        return len(self.order_id)


def build_orders(actions: np.ndarray, fills: np.ndarray) -> Orders:
    """Rebuild the orders of a window from its action and fill records."""
    act = actions["action"]
    keep = (
        (act == ACT_PLACE) | (act == ACT_REPLACE) | (act == ACT_CANCEL) | np.isin(act, REJECT_CODES)
    )
    a = actions[keep]
    # Actions in decision order; the recording order breaks ties (stable sort).
    a = a[np.argsort(a["ts"], kind="stable")]
    starts_mask = (a["action"] == ACT_PLACE) | (a["action"] == ACT_REPLACE)
    n = int(starts_mask.sum())
    order_id = a["order_id"][starts_mask].astype(np.int64)
    start_ts = a["ts"][starts_mask].astype(np.int64)
    qty = a["qty"][starts_mask].astype(np.float64)
    price = a["price"][starts_mask].astype(np.float64)
    end_ts = np.full(n, -1, dtype=np.int64)
    end = np.full(n, END_OPEN, dtype=np.int8)
    row_of_action = np.cumsum(starts_mask) - 1  # the order row a start action created

    # Group each id's actions (decision order kept within a group).
    by_id = np.argsort(a["order_id"], kind="stable")
    ids = a["order_id"][by_id]
    bounds = np.flatnonzero(np.diff(ids)) + 1
    groups = np.split(by_id, bounds) if len(by_id) else []

    # Per id: the rows of its incarnations and their starts (for fill attribution).
    rows_of_id: dict[int, np.ndarray] = {}
    for g in groups:
        kinds = a["action"][g]
        rows = row_of_action[g][(kinds == ACT_PLACE) | (kinds == ACT_REPLACE)]
        rows_of_id[int(a["order_id"][g[0]])] = rows

    executed = np.zeros(n, dtype=np.float64)
    _attribute_fills(fills, rows_of_id, start_ts, price, executed)
    filled = (qty > 0) & (executed >= qty * (1.0 - FILL_EPS))

    lost = 0
    for g in groups:
        kinds = a["action"][g]
        ts = a["ts"][g]
        current = -1  # the id's incarnation in force
        done = False  # its quantity has been filled: later actions on the id lost a race
        for j in range(len(g)):
            k = int(kinds[j])
            if k in REJECT_CODES:
                if current >= 0 and not done:
                    end[current] = END_REJECTED
                    end_ts[current] = ts[j]
                    done = True
                continue
            if k == ACT_CANCEL:
                if current >= 0 and not done:
                    end[current] = END_CANCEL
                    end_ts[current] = ts[j]
                    done = True
                elif done:
                    lost += 1
                continue
            row = int(row_of_action[g[j]])
            if k == ACT_REPLACE and done:
                end[row] = END_REJECTED
                end_ts[row] = ts[j]
                continue
            if current >= 0 and not done:
                end[current] = END_REPLACE
                end_ts[current] = ts[j]
            current = row
            done = bool(filled[row])
            if done:
                end[row] = END_FILL
    return Orders(order_id, start_ts, end_ts, qty, price, executed, end, lost)


def _attribute_fills(
    fills: np.ndarray,
    rows_of_id: dict[int, np.ndarray],
    start_ts: np.ndarray,
    price: np.ndarray,
    executed: np.ndarray,
) -> None:
    """Add each fill's quantity to the order it filled (see the module docstring)."""
    if not len(fills):
        return
    decided = (fills["ts"] - fills["order_age_ns"]).astype(np.int64)
    for i in range(len(fills)):
        rows = rows_of_id.get(int(fills["order_id"][i]))
        if rows is None or not len(rows):
            continue
        st = start_ts[rows]
        t = int(fills["ts"][i])
        j = int(np.searchsorted(st, decided[i], side="left"))
        if j < len(rows) and st[j] == decided[i]:
            # Later same-price replaces (a quantity decrease) decided by the fill's time.
            while j + 1 < len(rows) and st[j + 1] <= t and price[rows[j + 1]] == price[rows[j]]:
                j += 1
        else:
            j = int(np.searchsorted(st, t, side="right")) - 1
            if j < 0:
                continue
        executed[rows[j]] += float(fills["qty"][i])


# --------------------------------------------------------------------------------------------
# Per-order cancel ratio
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ChurnCounts:
    orders_sent: int  # places + replaces
    ended_by_cancel: int
    ended_by_replace: int
    ended_by_fill: int
    open_at_end: int
    rejected: int  # replaces that reached an order already filled
    lost_cancels: int

    @property
    def cancel_ratio(self) -> float | None:
        if not self.orders_sent:
            return None
        return (self.ended_by_cancel + self.ended_by_replace) / self.orders_sent


def churn_counts(orders: Orders) -> ChurnCounts:
    e = orders.end
    return ChurnCounts(
        orders_sent=len(orders),
        ended_by_cancel=int(np.count_nonzero(e == END_CANCEL)),
        ended_by_replace=int(np.count_nonzero(e == END_REPLACE)),
        ended_by_fill=int(np.count_nonzero(e == END_FILL)),
        open_at_end=int(np.count_nonzero(e == END_OPEN)),
        rejected=int(np.count_nonzero(e == END_REJECTED)),
        lost_cancels=orders.lost_cancels,
    )


# --------------------------------------------------------------------------------------------
# Binance Futures quantitative rules, per cycle
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Cycle:
    """One rule cycle's figures over the orders placed in it (rejected orders left out)."""

    start_ns: int
    orders: int  # all orders placed (all ours are GTC/GTX limit orders)
    unfilled_ratio: float
    invalid_cancel_ratio: float
    dust_ratio: float
    invalid_cancels: int
    dust_orders: int


def rule_cycles(orders: Orders, rules: VenueRuleGates) -> list[Cycle]:
    """Figures of every cycle (aligned on multiples of ``cycle_s`` since the epoch) with orders.

    UFR = 1 − executed base quantity ÷ base quantity of the orders placed in the cycle;
    ICR = orders placed in the cycle and ended by a cancel or a replace less than
    ``invalid_cancel_s`` after placement ÷ orders; DR = orders whose value (qty × price) is
    below ``dust_notional`` ÷ orders.
    """
    ok = orders.end != END_REJECTED
    if not ok.any():
        return []
    start = orders.start_ts[ok]
    cyc_ns = round(rules.cycle_s * 1e9)
    idx = start // cyc_ns
    qty = orders.qty[ok]
    executed = np.minimum(orders.executed[ok], qty)
    end = orders.end[ok]
    life = orders.end_ts[ok] - start
    invalid = ((end == END_CANCEL) | (end == END_REPLACE)) & (
        life < round(rules.invalid_cancel_s * 1e9)
    )
    dust = qty * orders.price[ok] < rules.dust_notional
    out = []
    for c in np.unique(idx):
        m = idx == c
        n = int(m.sum())
        q = math.fsum(qty[m])
        out.append(
            Cycle(
                start_ns=int(c) * cyc_ns,
                orders=n,
                unfilled_ratio=1.0 - math.fsum(executed[m]) / q if q > 0 else 1.0,
                invalid_cancel_ratio=int(invalid[m].sum()) / n,
                dust_ratio=int(dust[m].sum()) / n,
                invalid_cancels=int(invalid[m].sum()),
                dust_orders=int(dust[m].sum()),
            )
        )
    return out


# (attribute of ``Cycle``, recording threshold field, ban field, the rule's name)
INDICATORS: dict[str, tuple[str, str, str, str]] = {
    "UFR": ("unfilled_ratio", "ufr_recording_orders", "ufr_ban", "Unfilled Ratio"),
    "ICR": (
        "invalid_cancel_ratio",
        "icr_recording_orders",
        "icr_ban",
        "Invalid Cancellation Ratio",
    ),
    "DR": ("dust_ratio", "dr_recording_orders", "dr_ban", "Dust Ratio"),
}


def venue_rules(cycles: list[Cycle], rules: VenueRuleGates) -> VenueRules:
    """The rules' figures of a window: worst and mean cycle, and the cycles judged and banned.

    A cycle is judged on a rule when its order count reaches the rule's recording threshold
    (every order we send is a GTC/GTX limit order, so ICR's count is the order count too), and
    banned when the judged ratio is at or above the rule's ban threshold.
    """
    indicators = {}
    for key, (attr, rec_field, ban_field, name) in INDICATORS.items():
        rec = int(getattr(rules, rec_field))
        ban = float(getattr(rules, ban_field))
        vals = [getattr(c, attr) for c in cycles]
        worst_i = int(np.argmax(vals)) if vals else None
        judged = [getattr(c, attr) for c in cycles if c.orders >= rec]
        indicators[key] = RuleIndicator(
            name=name,
            recording_orders=rec,
            ban=ban,
            worst=vals[worst_i] if worst_i is not None else None,
            worst_cycle_start_ns=cycles[worst_i].start_ns if worst_i is not None else None,
            mean=math.fsum(vals) / len(vals) if vals else None,
            cycles_recorded=len(judged),
            worst_recorded=max(judged) if judged else None,
            cycles_banned=sum(1 for v in judged if v >= ban),
        )
    return VenueRules(
        cycle_s=rules.cycle_s,
        invalid_cancel_s=rules.invalid_cancel_s,
        dust_notional=rules.dust_notional,
        indicators=indicators,
        cycles=[
            RuleCycle(
                start_ns=c.start_ns,
                orders=c.orders,
                unfilled_ratio=c.unfilled_ratio,
                invalid_cancel_ratio=c.invalid_cancel_ratio,
                dust_ratio=c.dust_ratio,
            )
            for c in cycles
        ],
    )
