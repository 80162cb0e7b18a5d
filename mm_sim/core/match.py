"""The venue: order lifecycle, queue position, fill matching, and fill reports to the strategy.

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

from typing import Any

import numpy as np
from numba import njit

from mm_sim.core.account import (
    A_POS,
    C_CANCEL_DONE,
    C_CANCEL_LOST,
    C_FILLS,
    C_MAKER,
    C_POST_ONLY_REJECTED,
    C_REPLACE_REJECTED,
    C_REPORT_FORCED,
    C_TAKER,
    C_WALK_TRUNCATED,
    apply_fill,
)
from mm_sim.core.book import ST_BASE, ST_BEST_ASK, ST_BEST_BID, mid_price
from mm_sim.core.limiter import S_SLOT
from mm_sim.core.records import (
    ACT_CANCEL,
    ACT_PLACE,
    ACT_REPLACE,
    LIQ_MAKER,
    LIQ_TAKER,
)

# Kernels never allocate, so they are compiled without numba's reference counting: passing
# state arrays between kernels then costs nothing (docs/CORE.md, "Speed").
JIT: dict[str, Any] = {"cache": True, "_nrt": False}
# Kernels that only other kernels call are compiled without the CPython and cfunc wrappers: a
# wrapper unboxes every member of every bundle (see "State bundles") and nothing would call it;
# dropping them took back the ~1.5 s of cold compile the bundles had added (measured).
INTERNAL: dict[str, Any] = {**JIT, "no_cpython_wrapper": True, "no_cfunc_wrapper": True}

QUEUE_CONSERVATIVE = 0
QUEUE_PROBABILISTIC = 1

WALK_MAX = 64  # most price levels one arriving order takes liquidity from

# Order status
OS_FREE = 0
OS_PENDING = 1  # sent, not yet at the venue
OS_RESTING = 2  # at the venue, matchable
OS_DONE = 3  # filled or cancelled; slot kept until nothing refers to it

# Order table, int columns oi[s, :]
O_ID = 0
O_SIDE = 1
O_STATUS = 2
O_PX = 3  # price tick at the venue (for a pending order: the tick it was sent with)
O_REST_TS = 4  # when it (re)joined the queue at the venue (queue_ns clock)
O_DECIDED_TS = 5  # local time of the decision that placed / last requeued it (order_age clock)
O_REFS = 6  # in-flight actions referring to it
O_CURRENT = 7  # 1 while the strategy considers it its live order on that side
O_NI = 8
# Order table, float columns of[s, :]
OF_QTY = 0  # total quantity (filled + remaining)
OF_FILLED = 1
OF_REM = 2
OF_FRONT = 3  # visible quantity ahead of us at our price
OF_LEVEL = 4  # visible quantity of our price level at the last update we saw
OF_TRADED = 5  # traded at our price since that update (probabilistic model)
OF_QUOTE_PX = 6  # our price at the decision that placed / last requeued it
OF_MID_DEC = 7  # mid at that decision
OF_CROSS_USED = 8  # opposite liquidity already matched while the book stays crossed
OF_NF = 9

# In-flight actions (a FIFO list), int columns pi[j, :] and float columns pf[j, :]
OP_KIND = 0  # ACT_*
OP_SLOT = 1
OP_ARRIVE = 2  # venue arrival time (exchange clock)
OP_ACK = 3  # acknowledgement time (local clock); the action stops counting as in flight
OP_PX = 4
OP_DECIDED_TS = 5
OP_DONE = 6  # 1 once processed at the venue
OP_NI = 7
OPF_QTY = 0  # new remaining quantity (place/replace)
OPF_MID = 1  # mid at the decision
OP_NF = 2

# Fill reports queued for the strategy (ring buffer)
R_KNOWN = 0  # local time the strategy learns of the fill
R_OID = 1
R_SIDE = 2
R_NI = 3
RF_QTY = 0
RF_REM = 1  # order's remaining quantity after the fill
R_NF = 2

# Venue scalars vs[:] (int64) and vsf[:] (float64)
VS_NEXT_ID = 0
VS_NLIVE = 1
VS_NOPS = 2
VS_LAST_ARRIVAL = 3
VS_RHEAD = 4
VS_RN = 5
VS_DIRTY = 6  # 1 when an order may have become releasable since the last sweep
VS_SIZE = 7
VSF_POS_VIEW = 0  # position as reported to the strategy so far (lags the account)
VSF_SIZE = 1

# State bundles. The kernels take their state as a few plain tuples of arrays instead of ~30
# loose arrays: the members of a bundle always travel together, so a signature says in a few
# words which parts a kernel touches, and a call site cannot swap two arrays of the same type.
# numba passes a tuple as its members, at no cost (jitclass and structref would cost cold-compile
# and cache time). A kernel takes the members it reads by name (``venue[VN_SI]``, the way table
# columns are read), which says what it touches and leaves the other members out of its compiled
# code; the small scalar tuples (Terms, engine.Intent) are unpacked. ``Engine`` builds the
# bundles from its named arrays. Small primitives on one or two tables (alloc_slot, push_op,
# purge_ops, sweep_free) keep their arrays.
BookArrays = tuple[np.ndarray, np.ndarray, np.ndarray]  # bid, ask, bst (book.py's arrays)
BOOK_BID, BOOK_ASK, BOOK_BST = range(3)
# Everything an action or a fill touches: the order table (oi, of) and its live list, the
# in-flight actions (pi, pf), the fill-report ring (ni, nf), the venue scalars (vs, vsf), the
# strategy's per-side table si (a final fill report clears it), the account and the counters.
Venue = tuple[np.ndarray, ...]
VENUE_KEYS = ("oi", "of", "live", "pi", "pf", "ni", "nf", "vs", "vsf", "si", "acc", "cnt")
VN_OI, VN_OF, VN_LIVE, VN_PI, VN_PF, VN_NI, VN_NF, VN_VS, VN_VSF, VN_SI, VN_ACC, VN_CNT = range(12)
# The record buffers and how many records each holds: fills, actions, blocks, marks, nout.
Out = tuple[np.ndarray, ...]
OUT_FILLS, OUT_ACTIONS, OUT_BLOCKS, OUT_MARKS, OUT_NOUT = range(5)
# The venue's terms for one event: tick, lot, maker_bps, taker_bps, delay (ns until the
# strategy learns of a fill, from this event's feed lag), queue model, queue power and the fill
# rules (RULE_* bits).
Terms = tuple[float, float, float, float, int, int, float, int]

# Fill rules (bits of Terms' last member; profile ``quoting.order_type`` and ``matching``)
RULE_POST_ONLY = 1  # an order that would cross on arrival is rejected, not filled as taker
RULE_NO_CROSS_FILLS = 2  # a book moving through a resting order without a print fills nothing
RULE_THROUGH_ORDER = 4  # a print through our price fills our whole remaining order
# Not a fill rule but the driver's, kept with them (profile ``quoting.decide``): the strategy
# decides after every event, not once per local timestamp.
RULE_DECIDE_EACH_EVENT = 8
# The arrays one fill touches, out of Venue and Out, for emit_fill and the report ring:
# oi, of, ni, nf, vs, vsf, si, acc, cnt, fills, nout. Why emit_fill does not take the whole
# bundles: numba passes a tuple as all its members, and LLVM inlines a call the more readily the
# more arguments inlining saves. Given Venue, Out and Terms (~150 machine arguments) it inlined
# emit_fill into the per-event loops of on_depth and on_trade, which cost 6-8 % of the engine's
# events/s (measured A/B); with this view emit_fill has the ~100 arguments it had as loose
# arrays and stays out of line.
FillPath = tuple[np.ndarray, ...]
FP_OI, FP_OF, FP_NI, FP_NF, FP_VS, FP_VSF, FP_SI, FP_ACC, FP_CNT, FP_FILLS, FP_NOUT = range(11)


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


@njit(**JIT)
def alloc_slot(oi: np.ndarray, live: np.ndarray, vs: np.ndarray) -> int:
    """Lowest free slot, appended to the live list (which stays in ascending order id)."""
    for s in range(oi.shape[0]):
        if oi[s, O_STATUS] == OS_FREE:
            live[vs[VS_NLIVE]] = s
            vs[VS_NLIVE] += 1
            return s
    return -1


@njit(inline="always", **JIT)
def sweep_free(oi: np.ndarray, live: np.ndarray, vs: np.ndarray) -> None:
    """Release finished orders nothing refers to any more; keeps the live list's order."""
    vs[VS_DIRTY] = 0
    n = vs[VS_NLIVE]
    w = 0
    for m in range(n):
        s = live[m]
        if oi[s, O_STATUS] == OS_DONE and oi[s, O_REFS] == 0 and oi[s, O_CURRENT] == 0:
            oi[s, O_STATUS] = OS_FREE
        else:
            live[w] = s
            w += 1
    vs[VS_NLIVE] = w


@njit(**JIT)
def push_op(
    pi: np.ndarray,
    pf: np.ndarray,
    vs: np.ndarray,
    kind: int,
    slot: int,
    arrive: int,
    ack_leg: int,
    px: int,
    decided: int,
    qty: float,
    mid: float,
) -> None:
    """Queue an action; the channel is ordered, so it cannot overtake an earlier one."""
    if arrive < vs[VS_LAST_ARRIVAL]:
        arrive = vs[VS_LAST_ARRIVAL]
    vs[VS_LAST_ARRIVAL] = arrive
    j = vs[VS_NOPS]
    pi[j, OP_KIND] = kind
    pi[j, OP_SLOT] = slot
    pi[j, OP_ARRIVE] = arrive
    pi[j, OP_ACK] = arrive + ack_leg
    pi[j, OP_PX] = px
    pi[j, OP_DECIDED_TS] = decided
    pi[j, OP_DONE] = 0
    pf[j, OPF_QTY] = qty
    pf[j, OPF_MID] = mid
    vs[VS_NOPS] = j + 1


@njit(inline="always", **JIT)
def purge_ops(now: int, pi: np.ndarray, pf: np.ndarray, oi: np.ndarray, vs: np.ndarray) -> None:
    """Drop actions processed at the venue whose acknowledgement has reached us by ``now``."""
    n = vs[VS_NOPS]
    w = 0
    for j in range(n):
        if pi[j, OP_DONE] == 1 and pi[j, OP_ACK] <= now:
            oi[pi[j, OP_SLOT], O_REFS] -= 1
            vs[VS_DIRTY] = 1
        else:
            if w != j:
                for c in range(OP_NI):
                    pi[w, c] = pi[j, c]
                for c in range(OP_NF):
                    pf[w, c] = pf[j, c]
            w += 1
    vs[VS_NOPS] = w


@njit(inline="always", **JIT)
def fill_path(venue: Venue, out: Out) -> FillPath:
    """The arrays one fill touches, out of the Venue and Out bundles (see ``FillPath``)."""
    return (
        venue[VN_OI], venue[VN_OF], venue[VN_NI], venue[VN_NF], venue[VN_VS], venue[VN_VSF],
        venue[VN_SI], venue[VN_ACC], venue[VN_CNT], out[OUT_FILLS], out[OUT_NOUT],
    )  # fmt: skip


@njit(**INTERNAL)
def _apply_report(j: int, fp: FillPath) -> None:
    oi, ni, nf, si = fp[FP_OI], fp[FP_NI], fp[FP_NF], fp[FP_SI]
    vs, vsf = fp[FP_VS], fp[FP_VSF]
    side = ni[j, R_SIDE]
    vsf[VSF_POS_VIEW] += side * nf[j, RF_QTY]
    if nf[j, RF_REM] <= 0.0:
        k = 0 if side > 0 else 1
        s = si[k, S_SLOT]
        if s >= 0 and oi[s, O_ID] == ni[j, R_OID]:
            si[k, S_SLOT] = -1
            oi[s, O_CURRENT] = 0
            vs[VS_DIRTY] = 1


@njit(inline="always", **JIT)
def deliver_reports(now: int, fp: FillPath) -> None:
    """Apply, in fill order, the reports the strategy has received by ``now``."""
    ni, vs = fp[FP_NI], fp[FP_VS]
    cap = ni.shape[0]
    while vs[VS_RN] > 0:
        j = vs[VS_RHEAD]
        if ni[j, R_KNOWN] > now:
            break
        _apply_report(j, fp)
        vs[VS_RHEAD] = (j + 1) % cap
        vs[VS_RN] -= 1


@njit(**INTERNAL)
def _push_report(known: int, oid: int, side: int, qty: float, rem: float, fp: FillPath) -> None:
    ni, nf, vs, cnt = fp[FP_NI], fp[FP_NF], fp[FP_VS], fp[FP_CNT]
    cap = ni.shape[0]
    if vs[VS_RN] == cap:
        j = vs[VS_RHEAD]
        _apply_report(j, fp)
        vs[VS_RHEAD] = (j + 1) % cap
        vs[VS_RN] -= 1
        cnt[C_REPORT_FORCED] += 1
    j = (vs[VS_RHEAD] + vs[VS_RN]) % cap
    ni[j, R_KNOWN] = known
    ni[j, R_OID] = oid
    ni[j, R_SIDE] = side
    nf[j, RF_QTY] = qty
    nf[j, RF_REM] = rem
    vs[VS_RN] += 1


@njit(**INTERNAL)
def emit_fill(
    s: int,
    ts: int,
    price: float,
    qty: float,
    liquidity: int,
    fee_bps: float,
    mid: float,
    report_delay: int,
    lot: float,
    fp: FillPath,
) -> None:
    """One fill of order slot ``s``: order state, account, fill record, report to the strategy."""
    oi, of, vs, acc, cnt = fp[FP_OI], fp[FP_OF], fp[FP_VS], fp[FP_ACC], fp[FP_CNT]
    fills, nout = fp[FP_FILLS], fp[FP_NOUT]
    side = oi[s, O_SIDE]
    of[s, OF_FILLED] += qty
    rem = of[s, OF_REM] - qty
    if rem < lot * 1e-9:
        rem = 0.0
        oi[s, O_STATUS] = OS_DONE
        vs[VS_DIRTY] = 1
    of[s, OF_REM] = rem
    fee = apply_fill(acc, side, price, qty, fee_bps, liquidity)
    k = nout[0]
    rec = fills[k]
    rec.ts = ts
    rec.order_id = oi[s, O_ID]
    rec.order_age_ns = ts - oi[s, O_DECIDED_TS]
    rec.queue_ns = ts - oi[s, O_REST_TS]
    rec.price = price
    rec.qty = qty
    rec.fee = fee
    rec.quote_price = of[s, OF_QUOTE_PX]
    rec.mid_decision = of[s, OF_MID_DEC]
    rec.mid_fill = mid
    rec.position_after = acc[A_POS]
    rec.side = side
    rec.liquidity = liquidity
    rec.iteration = -1
    nout[0] = k + 1
    cnt[C_FILLS] += 1
    if liquidity == LIQ_MAKER:
        cnt[C_MAKER] += 1
    else:
        cnt[C_TAKER] += 1
    _push_report(ts + report_delay, oi[s, O_ID], side, qty, rem, fp)


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
            _push_report(ts + terms[4], oi[s, O_ID], side, 0.0, 0.0, fill_path(venue, out))
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
def on_depth(ev: Any, t: int, book: BookArrays, terms: Terms, venue: Venue, out: Out) -> None:
    """After the level update ``ev`` (tick ``t``, already applied to the book): queue updates
    and crossing fills."""
    bst = book[BOOK_BST]
    oi, of, live, vs = venue[VN_OI], venue[VN_OF], venue[VN_LIVE], venue[VN_VS]
    tick, lot, maker_bps, _taker_bps, delay, qmodel, qpower, rules = terms
    fp = fill_path(venue, out)
    side = ev.side
    qty = ev.qty
    if qty < 0.0:
        qty = 0.0
    ts = ev.exch_ts
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
def on_trade(ev: Any, t: int, book: BookArrays, terms: Terms, venue: Venue, out: Out) -> None:
    """The print ``ev`` at tick ``t``: fills our resting orders it reaches, oldest first."""
    bst = book[BOOK_BST]
    oi, of, live, vs = venue[VN_OI], venue[VN_OF], venue[VN_LIVE], venue[VN_VS]
    tick, lot, maker_bps, _taker_bps, delay, _qmodel, _qpower, rules = terms
    fp = fill_path(venue, out)
    qty = ev.qty
    if qty <= 0.0:
        return
    aggressor = ev.side
    ts = ev.exch_ts
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
