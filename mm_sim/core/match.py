"""The venue: order lifecycle, queue position and fill matching (one fill and its report to the
strategy: fills.py; the order table and the action channel: orders.py).

Market data is exogenous: our orders never change the book arrays. The venue keeps, per order,
where we stand in the queue at our price (``front`` = visible quantity ahead of us) and fills us
from the feed's trades and book moves (docs/CORE.md, "Matching"):

- a trade at our price first consumes ``front``; what goes beyond it fills us (partial fills);
- a trade through our price (worse for its aggressor than our price) fills us up to its size;
- a resting order the book moves through without a trade (best ask <= our bid) fills as maker at
  our price against the visible crossing quantity (``cross_used`` remembers what we already
  matched while the book stays crossed, so the same displayed size is not used twice);
- an order that arrives already crossing walks the visible levels as taker at their prices
  (at most ``WALK_MAX`` levels); the remainder rests.

Queue models (``queue_on_depth``): conservative clips ``front`` to a shrinking level; the
probabilistic model also attributes part of a cancel not explained by trades to the queue ahead
of us with probability P_ahead = f(front) / (f(front) + f(back)), f(x) = x**power (0 at the head,
1 at the tail; after Rigtorp 2013).

Actions travel on one ordered channel (arrivals are never earlier than the previous action's),
so a replace or cancel always reaches the venue after the order it refers to.
"""

from __future__ import annotations

import numpy as np
from numba import njit

from mm_sim import kernel_cache
from mm_sim.core.account import (
    C_CANCEL_DONE,
    C_CANCEL_LOST,
    C_POST_ONLY_REJECTED,
    C_REPLACE_REJECTED,
    C_WALK_TRUNCATED,
)
from mm_sim.core.book import ST_BASE, ST_BEST_ASK, ST_BEST_BID, mid_price
from mm_sim.core.fills import emit_fill, fill_path, push_report
from mm_sim.core.params import INTERNAL, JIT
from mm_sim.core.records import (
    ACT_CANCEL,
    ACT_PLACE,
    ACT_REPLACE,
    LIQ_MAKER,
    LIQ_TAKER,
)
from mm_sim.core.venue_state import (
    BOOK_BST,
    O_DECIDED_TS,
    O_ID,
    O_NI,
    O_PX,
    O_REST_TS,
    O_SIDE,
    O_STATUS,
    OF_CROSS_USED,
    OF_FILLED,
    OF_FRONT,
    OF_LEVEL,
    OF_MID_DEC,
    OF_NF,
    OF_QTY,
    OF_QUOTE_PX,
    OF_REM,
    OF_TRADED,
    OP_ARRIVE,
    OP_DECIDED_TS,
    OP_DONE,
    OP_KIND,
    OP_NF,
    OP_NI,
    OP_PX,
    OP_SLOT,
    OPF_MID,
    OPF_QTY,
    OS_DONE,
    OS_RESTING,
    QUEUE_PROBABILISTIC,
    R_NF,
    R_NI,
    RULE_NO_CROSS_FILLS,
    RULE_POST_ONLY,
    RULE_THROUGH_ORDER,
    VN_CNT,
    VN_LIVE,
    VN_OF,
    VN_OI,
    VN_PF,
    VN_PI,
    VN_VS,
    VS_DIRTY,
    VS_LAST_ARRIVAL,
    VS_NEXT_ID,
    VS_NLIVE,
    VS_NOPS,
    VS_SIZE,
    VSF_SIZE,
    WALK_MAX,
    BookArrays,
    Out,
    Terms,
    Venue,
)


@njit(**JIT)
def queue_on_depth(
    model: int, power: float, front: float, prev: float, new: float, traded: float
) -> float:
    """New ``front`` after our level went from ``prev`` to ``new`` with ``traded`` printed."""
    if model == QUEUE_PROBABILISTIC:
        chg = prev - new - traded
        if chg > 0.0:
            back = prev - traded - front
            if back < 0.0:
                back = 0.0
            fa = front**power
            fb = back**power
            p_ahead = 0.0
            if fa + fb > 0.0:
                p_ahead = fa / (fa + fb)
            ahead = p_ahead * chg
            behind = chg - ahead
            if behind > back:
                ahead += behind - back
            front -= ahead
            if front < 0.0:
                front = 0.0
    if front > new:
        front = new
    return front


@njit(**INTERNAL)
def _crossing_qty(book: BookArrays, side: int, px: int) -> float:
    """Visible opposite quantity at prices at or through our price ``px`` (best first)."""
    bid, ask, bst = book
    base = bst[ST_BASE]
    total = 0.0
    if side > 0:
        i = bst[ST_BEST_ASK]
        if i < 0:
            return 0.0
        n = ask.shape[0]
        while i < n and base + i <= px:
            total += ask[i]
            i += 1
    else:
        i = bst[ST_BEST_BID]
        while i >= 0 and base + i >= px:
            total += bid[i]
            i -= 1
    return total


@njit(inline="always", **JIT)
def _is_crossed(bst: np.ndarray, side: int, px: int) -> bool:
    base = bst[ST_BASE]
    if side > 0:
        i = bst[ST_BEST_ASK]
        return i >= 0 and base + i <= px
    i = bst[ST_BEST_BID]
    return i >= 0 and base + i >= px


@njit(**INTERNAL)
def _taker_walk(s: int, ts: int, book: BookArrays, terms: Terms, venue: Venue, out: Out) -> float:
    """Take visible liquidity at or through our price, best level first; returns qty taken."""
    bid, ask, bst = book
    oi, of, cnt = venue[VN_OI], venue[VN_OF], venue[VN_CNT]
    tick, lot, _maker_bps, taker_bps, delay, _qmodel, _qpower, _rules = terms
    fp = fill_path(venue, out)
    side = oi[s, O_SIDE]
    px = oi[s, O_PX]
    base = bst[ST_BASE]
    mid = mid_price(bst, tick)
    # The opposite side from its best level outwards: asks upwards for a bid, bids downwards.
    if side > 0:
        levels_qty = ask
        i = bst[ST_BEST_ASK]
    else:
        levels_qty = bid
        i = bst[ST_BEST_BID]
    n = levels_qty.shape[0]
    taken = 0.0
    levels = 0
    while 0 <= i < n and (px - (base + i)) * side >= 0 and of[s, OF_REM] > 0.0:
        q = levels_qty[i]
        if q > 0.0:
            if levels == WALK_MAX:
                cnt[C_WALK_TRUNCATED] += 1
                break
            take = min(q, of[s, OF_REM])
            emit_fill(s, ts, (base + i) * tick, take, LIQ_TAKER, taker_bps, mid, delay, lot, fp)
            taken += take
            levels += 1
        i += side
    return taken


@njit(**INTERNAL)
def _join(s: int, px: int, ts: int, book: BookArrays, terms: Terms, venue: Venue, out: Out) -> None:
    """(Re)enter the book at ``px`` at time ``ts``: take if crossing (or, post-only, be
    rejected), then queue at the back."""
    bid, ask, bst = book
    oi, of, vs, cnt = venue[VN_OI], venue[VN_OF], venue[VN_VS], venue[VN_CNT]
    side = oi[s, O_SIDE]
    oi[s, O_PX] = px
    oi[s, O_REST_TS] = ts
    oi[s, O_STATUS] = OS_RESTING
    of[s, OF_CROSS_USED] = 0.0
    of[s, OF_TRADED] = 0.0
    if _is_crossed(bst, side, px):
        if terms[7] & RULE_POST_ONLY:
            # GTX / LIMIT_MAKER: the venue rejects it; the strategy learns so with the ack, as
            # a report that leaves nothing remaining.
            oi[s, O_STATUS] = OS_DONE
            of[s, OF_REM] = 0.0
            vs[VS_DIRTY] = 1
            cnt[C_POST_ONLY_REJECTED] += 1
            push_report(ts + terms[4], oi[s, O_ID], side, 0.0, 0.0, fill_path(venue, out))
            return
        of[s, OF_CROSS_USED] = _taker_walk(s, ts, book, terms, venue, out)
    i = px - bst[ST_BASE]
    level = 0.0
    if 0 <= i < bid.shape[0]:
        level = bid[i] if side > 0 else ask[i]
    of[s, OF_FRONT] = level
    of[s, OF_LEVEL] = level


@njit(inline="always", **JIT)
def venue_arrivals(exch_ts: int, book: BookArrays, terms: Terms, venue: Venue, out: Out) -> None:
    """Process, in channel order, the actions that reach the venue by ``exch_ts``."""
    oi, of, vs, cnt = venue[VN_OI], venue[VN_OF], venue[VN_VS], venue[VN_CNT]
    pi, pf = venue[VN_PI], venue[VN_PF]
    tick, _lot, _maker_bps, _taker_bps, _delay, _qmodel, _qpower, _rules = terms
    for j in range(vs[VS_NOPS]):
        if pi[j, OP_DONE] == 1:
            continue
        if pi[j, OP_ARRIVE] > exch_ts:
            break
        pi[j, OP_DONE] = 1
        s = pi[j, OP_SLOT]
        kind = pi[j, OP_KIND]
        t_arr = pi[j, OP_ARRIVE]
        if kind == ACT_PLACE:
            of[s, OF_REM] = pf[j, OPF_QTY]
            _join(s, pi[j, OP_PX], t_arr, book, terms, venue, out)
        elif kind == ACT_REPLACE:
            if oi[s, O_STATUS] != OS_RESTING:
                cnt[C_REPLACE_REJECTED] += 1
                continue
            newq = pf[j, OPF_QTY]
            px = pi[j, OP_PX]
            keep = px == oi[s, O_PX] and newq < of[s, OF_REM]
            of[s, OF_REM] = newq
            of[s, OF_QTY] = of[s, OF_FILLED] + newq
            if not keep:
                oi[s, O_DECIDED_TS] = pi[j, OP_DECIDED_TS]
                of[s, OF_QUOTE_PX] = px * tick
                of[s, OF_MID_DEC] = pf[j, OPF_MID]
                _join(s, px, t_arr, book, terms, venue, out)
        elif kind == ACT_CANCEL:
            if oi[s, O_STATUS] == OS_RESTING:
                oi[s, O_STATUS] = OS_DONE
                of[s, OF_REM] = 0.0
                vs[VS_DIRTY] = 1
                cnt[C_CANCEL_DONE] += 1
            else:
                cnt[C_CANCEL_LOST] += 1


@njit(inline="always", **JIT)
def on_depth(
    side: int, t: int, qty: float, ts: int, book: BookArrays, terms: Terms, venue: Venue, out: Out
) -> None:
    """After the level update (``side``, tick ``t``, ``qty``, already applied to the book) at
    venue time ``ts``: queue updates and crossing fills."""
    bst = book[BOOK_BST]
    oi, of, live, vs = venue[VN_OI], venue[VN_OF], venue[VN_LIVE], venue[VN_VS]
    tick, lot, maker_bps, _taker_bps, delay, qmodel, qpower, rules = terms
    fp = fill_path(venue, out)
    if qty < 0.0:
        qty = 0.0
    mid = mid_price(bst, tick)
    taken = 0.0
    for m in range(vs[VS_NLIVE]):
        s = live[m]
        if oi[s, O_STATUS] != OS_RESTING:
            continue
        oside = oi[s, O_SIDE]
        px = oi[s, O_PX]
        if oside == side:
            if px == t:
                of[s, OF_FRONT] = queue_on_depth(
                    qmodel, qpower, of[s, OF_FRONT], of[s, OF_LEVEL], qty, of[s, OF_TRADED]
                )
                of[s, OF_LEVEL] = qty
                of[s, OF_TRADED] = 0.0
        elif rules & RULE_NO_CROSS_FILLS == 0 and _is_crossed(bst, oside, px):
            avail = _crossing_qty(book, oside, px) - of[s, OF_CROSS_USED] - taken
            if avail > 0.0:
                f = min(of[s, OF_REM], avail)
                of[s, OF_CROSS_USED] += f
                of[s, OF_FRONT] = 0.0
                taken += f
                emit_fill(s, ts, px * tick, f, LIQ_MAKER, maker_bps, mid, delay, lot, fp)
        else:
            of[s, OF_CROSS_USED] = 0.0


@njit(inline="always", **JIT)
def on_trade(
    aggressor: int, t: int, qty: float, ts: int, book: BookArrays, terms: Terms, venue: Venue,
    out: Out,
) -> None:  # fmt: skip
    """The print of ``qty`` at tick ``t`` and venue time ``ts``: fills our resting orders it
    reaches, oldest first."""
    bst = book[BOOK_BST]
    oi, of, live, vs = venue[VN_OI], venue[VN_OF], venue[VN_LIVE], venue[VN_VS]
    tick, lot, maker_bps, _taker_bps, delay, _qmodel, _qpower, rules = terms
    fp = fill_path(venue, out)
    if qty <= 0.0:
        return
    mid = mid_price(bst, tick)
    avail = qty
    for m in range(vs[VS_NLIVE]):
        s = live[m]
        if oi[s, O_STATUS] != OS_RESTING:
            continue
        oside = oi[s, O_SIDE]
        if oside == aggressor:  # a buyer-initiated print never hits our bid (and vice versa)
            continue
        px = oi[s, O_PX]
        through = t < px if oside > 0 else t > px
        if t == px:
            front = of[s, OF_FRONT] - qty
            of[s, OF_TRADED] += qty
            if front < 0.0:
                f = min(of[s, OF_REM], -front, avail)
                front = 0.0
                of[s, OF_FRONT] = front
                if f > 0.0:
                    avail -= f
                    emit_fill(s, ts, px * tick, f, LIQ_MAKER, maker_bps, mid, delay, lot, fp)
            else:
                of[s, OF_FRONT] = front
        elif through:
            of[s, OF_FRONT] = 0.0
            if rules & RULE_THROUGH_ORDER:
                f = of[s, OF_REM]  # the whole order, whatever printed (hftbacktest's rule)
            else:
                f = min(of[s, OF_REM], avail)
                avail -= f
            if f > 0.0:
                emit_fill(s, ts, px * tick, f, LIQ_MAKER, maker_bps, mid, delay, lot, fp)


def make_venue(slots: int, max_ops: int, ring: int) -> dict[str, np.ndarray]:
    vs = np.zeros(VS_SIZE, dtype=np.int64)
    vs[VS_NEXT_ID] = 1
    vs[VS_LAST_ARRIVAL] = -(1 << 62)
    return {
        "oi": np.zeros((slots, O_NI), dtype=np.int64),
        "of": np.zeros((slots, OF_NF)),
        "live": np.full(slots, -1, dtype=np.int64),
        "pi": np.zeros((max_ops, OP_NI), dtype=np.int64),
        "pf": np.zeros((max_ops, OP_NF)),
        "ni": np.zeros((ring, R_NI), dtype=np.int64),
        "nf": np.zeros((ring, R_NF)),
        "vs": vs,
        "vsf": np.zeros(VSF_SIZE),
    }


kernel_cache.bind(__name__, kernel_cache.CORE)  # before any kernel loads: kernel_cache.py
