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
    row_of_action = np.cumsum(starts_mask) - 1  # the order row a start action created

    # Each id's actions together, in decision order within the id.
    by_id = np.argsort(a["order_id"], kind="stable")
    seq = _Seq(
        kind=a["action"][by_id].astype(np.int64),
        ts=a["ts"][by_id].astype(np.int64),
        row=row_of_action[by_id],
        oid=a["order_id"][by_id].astype(np.int64),
    )

    # Per id: the rows of its orders, in decision order (for fill attribution).
    s_rows = seq.row[seq.is_start]
    s_oid = seq.oid[seq.is_start]
    uniq, first = np.unique(s_oid, return_index=True)
    last = np.append(first[1:], len(s_oid))[: len(first)]
    rows_of_id = {int(u): s_rows[f:e] for u, f, e in zip(uniq, first, last, strict=True)}

    executed = np.zeros(n, dtype=np.float64)
    _attribute_fills(fills, rows_of_id, start_ts, price, executed)
    filled = (qty > 0) & (executed >= qty * (1.0 - FILL_EPS))
    end, end_ts, lost = _endings(seq, filled, n)
    return Orders(order_id, start_ts, end_ts, qty, price, executed, end, lost)


@dataclass(frozen=True)
class _Seq:
    """Actions grouped by id (decision order within an id); ``row`` is valid for starts."""

    kind: np.ndarray
    ts: np.ndarray
    row: np.ndarray
    oid: np.ndarray

    @property
    def is_start(self) -> np.ndarray:
        return (self.kind == ACT_PLACE) | (self.kind == ACT_REPLACE)

    def groups(self) -> np.ndarray:
        """Index of each id's first action."""
        if not len(self.oid):
            return np.zeros(0, dtype=np.int64)
        return np.flatnonzero(np.concatenate([[True], np.diff(self.oid) != 0]))


def _endings(seq: _Seq, filled: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray, int]:
    """How each order ended (``_endings_loop``'s rules, computed on whole arrays).

    Within an id, everything before its first *terminating* action — a start whose order is
    filled, or a cancel or rejection once the id has an order — is live: each live order ends
    with the id's next action. After it the id is done: replaces are rejected, cancels lost.
    An id with a place after it is done (not produced by the core, which gives every place a
    new id) is handled by the loop.
    """
    end = np.full(n, END_OPEN, dtype=np.int8)
    end_ts = np.full(n, -1, dtype=np.int64)
    m = len(seq.kind)
    if not m:
        return end, end_ts, 0
    g0 = seq.groups()
    gid = np.cumsum(np.isin(np.arange(m), g0)) - 1
    pos = np.arange(m)
    is_start = seq.is_start
    is_end = (seq.kind == ACT_CANCEL) | np.isin(seq.kind, REJECT_CODES)
    starts_excl = np.cumsum(is_start) - is_start
    started_before = starts_excl - starts_excl[g0][gid] > 0
    filled_start = np.append(filled, False)[np.where(is_start, seq.row, n)]
    terminating = filled_start | (is_end & started_before)
    big = np.iinfo(np.int64).max
    ft = np.minimum.reduceat(np.where(terminating, pos, big), g0)[gid]
    after = pos > ft
    odd = np.unique(gid[after & (seq.kind == ACT_PLACE)])
    plain = ~np.isin(gid, odd)

    nxt_same = np.zeros(m, dtype=bool)
    nxt_same[:-1] = gid[1:] == gid[:-1]
    nxt_kind = np.append(seq.kind[1:], 0)
    nxt_ts = np.append(seq.ts[1:], -1)
    live = plain & is_start & (pos < ft) & nxt_same
    for kinds, code in (
        ((ACT_PLACE, ACT_REPLACE), END_REPLACE),
        ((ACT_CANCEL,), END_CANCEL),
        (REJECT_CODES, END_REJECTED),
    ):
        sel = live & np.isin(nxt_kind, kinds)
        end[seq.row[sel]] = code
        end_ts[seq.row[sel]] = nxt_ts[sel]
    end[seq.row[plain & is_start & (pos == ft)]] = END_FILL
    rej = plain & after & (seq.kind == ACT_REPLACE)
    end[seq.row[rej]] = END_REJECTED
    end_ts[seq.row[rej]] = seq.ts[rej]
    lost = int(np.count_nonzero(plain & after & (seq.kind == ACT_CANCEL)))
    if len(odd):
        sel = np.flatnonzero(~plain)
        sub = _Seq(seq.kind[sel], seq.ts[sel], seq.row[sel], seq.oid[sel])
        lost += _endings_loop(sub, filled, end, end_ts)
    return end, end_ts, lost


def _endings_loop(seq: _Seq, filled: np.ndarray, end: np.ndarray, end_ts: np.ndarray) -> int:
    """The ending rules one action at a time (the reference ``_endings`` must agree with);
    fills ``end``/``end_ts`` for the orders of ``seq`` and returns the lost cancels."""
    lost = 0
    for g in np.split(np.arange(len(seq.kind)), seq.groups()[1:]):
        current = -1  # the id's order in force
        done = False  # the id is done: later replaces are rejected, later cancels lost
        for j in g:
            k = int(seq.kind[j])
            if k in REJECT_CODES or k == ACT_CANCEL:
                if current >= 0 and not done:
                    end[current] = END_REJECTED if k in REJECT_CODES else END_CANCEL
                    end_ts[current] = seq.ts[j]
                    done = True
                elif done and k == ACT_CANCEL:
                    lost += 1
                continue
            row = int(seq.row[j])
            if k == ACT_REPLACE and done:
                end[row] = END_REJECTED
                end_ts[row] = seq.ts[j]
                continue
            if current >= 0 and not done:
                end[current] = END_REPLACE
                end_ts[current] = seq.ts[j]
            current = row
            done = bool(filled[row])
            if done:
                end[row] = END_FILL
    return lost


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
