"""The simulator core's driver: one fused numba loop over feed events (``run_chunk``).

Per event, in file (local receive) order (docs/CORE.md, "Event loop"):

1. a decision deferred by a snapshot batch that ended the previous slice runs, unless this
   event continues the batch;
2. marks due on the exchange clock are written (state as it was before this event);
3. actions that reached the venue by this event's ``exch_ts`` are processed (place, replace,
   cancel; an arriving crossing order takes liquidity);
4. the event updates the book, our queue positions and fills (trades, crossed book);
5. fill reports the strategy has received by this event's ``local_ts`` are applied, acknowledged
   actions leave the in-flight list, finished orders are released;
6. the strategy decides (book -> quote -> limiter -> actions). After CLEAR/SNAPSHOT events the
   decision is deferred until the batch (same ``local_ts``) is complete.

All state lives in numpy arrays (``state_arrays``), so a run can be checkpointed between chunks
and resumed bit for bit. The kernels take those arrays in a few tuples whose members always
travel together (``BookArrays``, ``Ctl``, ``Venue``, ``Out``; match.py says why). Output buffers
are preallocated; when one runs short the kernel stops before the event it cannot finish, the
Python side grows the buffer and resumes there.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from numba import njit

from mm_sim.core.account import (
    A_CASH,
    A_POS,
    C_ATTEMPT0,
    C_BLOCK0,
    C_DECISIONS,
    C_EVENTS,
    C_NO_DECISION,
    C_SENT0,
    C_SLOT_EXHAUSTED,
)
from mm_sim.core.book import (
    ST_BASE,
    ST_BEST_ASK,
    ST_BEST_BID,
    ST_RECENTRES,
    book_apply,
    book_apply_tick,
    mid_price,
)
from mm_sim.core.limiter import (
    S_BK_ACT,
    S_BK_LOTS,
    S_BK_PX,
    S_BK_REASON,
    S_DECIDED,
    S_LAST_ACT,
    S_LOTS,
    S_PX,
    S_SLOT,
    consume,
    gate,
    risk_breach,
)
from mm_sim.core.match import (
    BOOK_BST,
    O_CURRENT,
    O_DECIDED_TS,
    O_ID,
    O_PX,
    O_REFS,
    O_SIDE,
    O_STATUS,
    OF_MID_DEC,
    OF_QTY,
    OF_QUOTE_PX,
    OS_PENDING,
    OS_RESTING,
    OUT_ACTIONS,
    OUT_BLOCKS,
    OUT_MARKS,
    OUT_NOUT,
    VN_ACC,
    VN_CNT,
    VN_LIVE,
    VN_OF,
    VN_OI,
    VN_PF,
    VN_PI,
    VN_SI,
    VN_VS,
    VN_VSF,
    VS_DIRTY,
    VS_NEXT_ID,
    VS_NLIVE,
    VS_NOPS,
    VSF_POS_VIEW,
    BookArrays,
    Out,
    Venue,
    alloc_slot,
    deliver_reports,
    fill_path,
    on_depth,
    on_trade,
    purge_ops,
    push_op,
    sweep_free,
    venue_arrivals,
)
from mm_sim.core.quote import (
    QM_AL,
    QM_AT,
    QM_BA,
    QM_BB,
    QM_BL,
    QM_BND_A,
    QM_BND_B,
    QM_BT,
    QM_POS,
    QM_STEP,
    QM_VALID,
    QM_VAR,
    VOL_VAR,
    clamp_noncross,
    max_step_ticks,
    quote_lots,
    side_depth,
    step_toward,
    target_ticks,
    vol_update,
)
from mm_sim.core.records import (
    ACT_CANCEL,
    ACT_PLACE,
    ACT_REPLACE,
    BLK_RISK,
)
from mm_sim.core.timeline import ITEM_FLAGS, ITEM_S, ITEM_SYNC, ITEM_V, KIND_BITS
from mm_sim.events import (
    KIND_CLEAR,
    KIND_DEPTH,
    KIND_SNAPSHOT,
    KIND_TRADE,
)

# Kernels never allocate, so they are compiled without numba's reference counting: passing
# state arrays between kernels then costs nothing (docs/CORE.md, "Speed").
JIT: dict[str, Any] = {"cache": True, "_nrt": False}
# Kernels only other kernels call: no CPython or cfunc wrapper (match.INTERNAL says why).
INTERNAL: dict[str, Any] = {**JIT, "no_cpython_wrapper": True, "no_cfunc_wrapper": True}

LAT_CONSTANT = 0
LAT_FEED = 1

# Parameter vector p[:] (float64). The overrides occupy K_MIN_INTERVAL_NS.. and may be hot-swapped.
K_TICK = 0
K_LOT = 1
K_ORDER_QTY = 2
K_HALF_BPS = 3
K_GAMMA = 4
K_TAU_S = 5
K_VOL_HL_S = 6
K_VOL_SAMPLE_NS = 7
K_IMPACT_LEVELS = 8
K_MAX_POS = 9
K_MAX_NOTIONAL = 10
K_MAKER_BPS = 11
K_TAKER_BPS = 12
K_LAT_MODE = 13
K_ENTRY_NS = 14
K_CANCEL_NS = 15
K_ACK_NS = 16
K_FEED_MULT = 17
K_QUEUE_MODEL = 18
K_QUEUE_POWER = 19
K_MAX_IN_FLIGHT = 20
K_VENUE_CAP = 21
K_VENUE_RATE = 22  # tokens per ns
K_MARK_NS = 23
K_MIN_INTERVAL_NS = 24
K_REPL_CAP = 25
K_REPL_RATE = 26  # tokens per ns
K_SPREAD_DELTA_BPS = 27
K_TAIL_AGE_NS = 28
K_IMPACT_RATIO = 29
K_MAX_DELTA_RATIO = 30
K_RULES = 31  # fill rules, match.RULE_* bits
K_CSIZE = 32  # contract size of an inverse instrument, quote per contract (0 = linear)
K_SIZE = 33

# Engine scalars g[:] (int64)
G_NEXT_MARK = 0
G_VCLOCK = 1  # the venue's clock: the last venue time it advanced to
G_LAST_LOCAL = 2
G_PENDING = 3  # 1 when a snapshot batch deferred its decision
G_PENDING_TS = 4
G_LAG = 5  # feed lag of the current event, ns (local - exch, floored at 0)
G_STARTED = 6
G_SIZE = 7

# Output counts nout[:]
NO_FILLS = 0
NO_ACTIONS = 1
NO_BLOCKS = 2
NO_MARKS = 3

NO_MARK_TS = -(1 << 62)
DECISION_MARGIN = 8  # room kept for the actions (and blocks) of one decision: 2 sides x 2, x2
STATE_VERSION = 3  # 3: the account carries the contract size (inverse instruments)


# The engine's own bundles, beside match.py's (BookArrays, Venue, Out, Terms; see there why).
# Ctl: what the driver and the strategy keep apart from the book and the venue: the parameter
# vector p (K_*), the driver scalars g (G_*), the volatility estimate (vol_f, vol_i), the memo of
# the last quote targets (qmi, qmf) and the limiter's token buckets (lf, li).
Ctl = tuple[np.ndarray, ...]
CT_P, CT_G, CT_VOL_F, CT_VOL_I, CT_QMI, CT_QMF, CT_LF, CT_LI = range(8)
# One intent on one side, as the limiter, the block record and the sender take it: side index k
# (0 bid, 1 ask), side (+1/-1), action (ACT_*), price tick, lots.
Intent = tuple[int, int, int, int, int]


@njit(inline="always", **JIT)
def _leg(mode: int, const_ns: float, mult: float, lag: int) -> int:
    """One latency leg in ns: constant, or a multiple of the observed feed lag plus a constant."""
    if mode == LAT_FEED:
        return int(mult * lag + const_ns)
    return int(const_ns)


@njit(**JIT)
def write_mark(
    marks: np.ndarray, k: int, ts: int, book: BookArrays, ctl: Ctl, venue: Venue
) -> None:
    """Write the state at time ``ts`` into ``marks[k]`` (mid, account, our quotes, volatility)."""
    bst = book[BOOK_BST]
    p, vol_f = ctl[CT_P], ctl[CT_VOL_F]
    oi, live, vs, acc = venue[VN_OI], venue[VN_LIVE], venue[VN_VS], venue[VN_ACC]
    tick = p[K_TICK]
    rec = marks[k]
    rec.ts = ts
    rec.mid = mid_price(bst, tick)
    rec.position = acc[A_POS]
    rec.cash = acc[A_CASH]
    bq = -1
    aq = -1
    for m in range(vs[VS_NLIVE]):
        s = live[m]
        if oi[s, O_STATUS] == OS_RESTING:
            if oi[s, O_SIDE] > 0:
                if bq < 0 or oi[s, O_PX] > bq:
                    bq = oi[s, O_PX]
            elif aq < 0 or oi[s, O_PX] < aq:
                aq = oi[s, O_PX]
    rec.bid_quote = bq * tick if bq >= 0 else np.nan
    rec.ask_quote = aq * tick if aq >= 0 else np.nan
    bb = bst[ST_BEST_BID]
    ba = bst[ST_BEST_ASK]
    rec.best_bid = (bst[ST_BASE] + bb) * tick if bb >= 0 else np.nan
    rec.best_ask = (bst[ST_BASE] + ba) * tick if ba >= 0 else np.nan
    rec.sigma = np.sqrt(vol_f[VOL_VAR])


@njit(inline="always", **JIT)
def _block(want: Intent, reason: int, now: int, venue: Venue, out: Out) -> None:
    """Record a refusal once per distinct intent (retrying the same intent is not recounted)."""
    k, _side, action, px, lots = want
    si = venue[VN_SI]
    if (
        si[k, S_BK_ACT] != action
        or si[k, S_BK_PX] != px
        or si[k, S_BK_LOTS] != lots
        or si[k, S_BK_REASON] != reason
    ):
        _block_record(want, reason, now, venue, out)


@njit(**INTERNAL)
def _block_record(want: Intent, reason: int, now: int, venue: Venue, out: Out) -> None:
    k, side, action, px, lots = want
    si, cnt = venue[VN_SI], venue[VN_CNT]
    blocks, nout = out[OUT_BLOCKS], out[OUT_NOUT]
    si[k, S_BK_ACT] = action
    si[k, S_BK_PX] = px
    si[k, S_BK_LOTS] = lots
    si[k, S_BK_REASON] = reason
    cnt[C_ATTEMPT0 + action] += 1
    cnt[C_BLOCK0 + reason] += 1
    j = nout[NO_BLOCKS]
    rec = blocks[j]
    rec.ts = now
    rec.reason = reason
    rec.action = action
    rec.side = side
    nout[NO_BLOCKS] = j + 1


@njit(inline="always", **JIT)
def _attempt(want: Intent, now: int, mid: float, ctl: Ctl, venue: Venue, out: Out) -> None:
    """Pass one intent through the limiter; send it (action record + in-flight entry) if allowed."""
    k, _side, action, _px, _lots = want
    p, lf, li = ctl[CT_P], ctl[CT_LF], ctl[CT_LI]
    vs, si = venue[VN_VS], venue[VN_SI]
    reason = gate(
        action,
        False,
        now,
        si[k, S_LAST_ACT],
        p[K_MIN_INTERVAL_NS],
        vs[VS_NOPS],
        int(p[K_MAX_IN_FLIGHT]),
        lf,
        li,
        p[K_REPL_CAP],
        p[K_REPL_RATE],
        p[K_VENUE_CAP],
        p[K_VENUE_RATE],
    )
    if reason >= 0:
        _block(want, reason, now, venue, out)
        return
    _send(want, now, mid, ctl, venue, out)


@njit(**INTERNAL)
def _send(want: Intent, now: int, mid: float, ctl: Ctl, venue: Venue, out: Out) -> None:
    """Send an action the limiter allowed: order table, in-flight list, tokens, action record."""
    k, side, action, px, lots = want
    p, g, lf, li = ctl[CT_P], ctl[CT_G], ctl[CT_LF], ctl[CT_LI]
    oi, of, live, vs, si = venue[VN_OI], venue[VN_OF], venue[VN_LIVE], venue[VN_VS], venue[VN_SI]
    pi, pf, cnt = venue[VN_PI], venue[VN_PF], venue[VN_CNT]
    actions, nout = out[OUT_ACTIONS], out[OUT_NOUT]
    tick = p[K_TICK]
    lot = p[K_LOT]
    mode = int(p[K_LAT_MODE])
    lag = g[G_LAG]
    ack_leg = _leg(mode, p[K_ACK_NS], p[K_FEED_MULT], lag)
    qty = lots * lot
    if action == ACT_PLACE:
        s = alloc_slot(oi, live, vs)
        if s < 0:
            cnt[C_SLOT_EXHAUSTED] += 1
            return
        oid = vs[VS_NEXT_ID]
        vs[VS_NEXT_ID] = oid + 1
        oi[s, O_ID] = oid
        oi[s, O_SIDE] = side
        oi[s, O_STATUS] = OS_PENDING
        oi[s, O_PX] = px
        oi[s, O_DECIDED_TS] = now
        oi[s, O_REFS] = 1
        oi[s, O_CURRENT] = 1
        of[s, :] = 0.0
        of[s, OF_QTY] = qty
        of[s, OF_QUOTE_PX] = px * tick
        of[s, OF_MID_DEC] = mid
        arrive = now + _leg(mode, p[K_ENTRY_NS], p[K_FEED_MULT], lag)
        push_op(pi, pf, vs, ACT_PLACE, s, arrive, ack_leg, px, now, qty, mid)
        si[k, S_SLOT] = s
        si[k, S_PX] = px
        si[k, S_LOTS] = lots
        si[k, S_DECIDED] = now
    elif action == ACT_REPLACE:
        s = si[k, S_SLOT]
        oid = oi[s, O_ID]
        keep = px == si[k, S_PX] and lots < si[k, S_LOTS]
        arrive = now + _leg(mode, p[K_ENTRY_NS], p[K_FEED_MULT], lag)
        push_op(pi, pf, vs, ACT_REPLACE, s, arrive, ack_leg, px, now, qty, mid)
        oi[s, O_REFS] += 1
        si[k, S_PX] = px
        si[k, S_LOTS] = lots
        if not keep:
            si[k, S_DECIDED] = now
    else:
        s = si[k, S_SLOT]
        oid = oi[s, O_ID]
        px = si[k, S_PX]
        qty = 0.0
        arrive = now + _leg(mode, p[K_CANCEL_NS], p[K_FEED_MULT], lag)
        push_op(pi, pf, vs, ACT_CANCEL, s, arrive, ack_leg, px, now, 0.0, mid)
        oi[s, O_REFS] += 1
        oi[s, O_CURRENT] = 0
        vs[VS_DIRTY] = 1
        si[k, S_SLOT] = -1
    consume(action, now, lf, li, p[K_REPL_CAP], p[K_REPL_RATE], p[K_VENUE_CAP], p[K_VENUE_RATE])
    si[k, S_LAST_ACT] = now
    si[k, S_BK_ACT] = -1
    cnt[C_ATTEMPT0 + action] += 1
    cnt[C_SENT0 + action] += 1
    j = nout[NO_ACTIONS]
    rec = actions[j]
    rec.ts = now
    rec.order_id = oid
    rec.price = px * tick
    rec.qty = qty
    rec.action = action
    rec.side = side
    nout[NO_ACTIONS] = j + 1


@njit(inline="always", **JIT)
def _side_decision(
    k: int,
    side: int,
    want_px: int,
    want_lots: int,
    max_step: int,
    best_bid: int,
    best_ask: int,
    now: int,
    mid: float,
    ctl: Ctl,
    venue: Venue,
    out: Out,
) -> None:
    """Compare the wanted quote with what the strategy believes rests, and act on the gap."""
    p = ctl[CT_P]
    vsf, si = venue[VN_VSF], venue[VN_SI]
    has = si[k, S_SLOT] >= 0
    action = 0
    a_px = 0
    a_lots = 0
    if want_lots <= 0:
        if has:
            action = ACT_CANCEL
            a_px = si[k, S_PX]
    else:
        intent = 0
        px = want_px
        if has:
            cur = si[k, S_PX]
            px = clamp_noncross(side, step_toward(cur, want_px, max_step), best_bid, best_ask)
            if (
                px != cur
                or want_lots != si[k, S_LOTS]
                or now - si[k, S_DECIDED] >= p[K_TAIL_AGE_NS]
            ):
                intent = ACT_REPLACE
        else:
            intent = ACT_PLACE
        # Notional per unit of quantity: the price, or for an inverse contract its fixed size.
        unit_notional = p[K_CSIZE] if p[K_CSIZE] > 0.0 else px * p[K_TICK]
        if risk_breach(
            vsf[VSF_POS_VIEW], side, want_lots * p[K_LOT], unit_notional,
            p[K_MAX_POS], p[K_MAX_NOTIONAL],
        ):  # fmt: skip
            # Refused for risk; a resting order whose fill would breach the limit is pulled.
            if intent != 0:
                _block((k, side, intent, px, want_lots), BLK_RISK, now, venue, out)
            if has:
                action = ACT_CANCEL
                a_px = si[k, S_PX]
        elif intent != 0:
            action = intent
            a_px = px
            a_lots = want_lots
    if action != 0:
        _attempt((k, side, action, a_px, a_lots), now, mid, ctl, venue, out)


@njit(inline="always", **JIT)
def decide(now: int, book: BookArrays, ctl: Ctl, venue: Venue, out: Out) -> None:
    """The strategy at local time ``now``: quote both sides from the current book."""
    bid, ask, bst = book
    p, qmi, qmf = ctl[CT_P], ctl[CT_QMI], ctl[CT_QMF]
    vol_f, vol_i = ctl[CT_VOL_F], ctl[CT_VOL_I]
    vsf, si, cnt = venue[VN_VSF], venue[VN_SI], venue[VN_CNT]
    bbi = bst[ST_BEST_BID]
    bai = bst[ST_BEST_ASK]
    if bbi < 0 or bai < 0 or bbi >= bai:
        cnt[C_NO_DECISION] += 1
        return
    cnt[C_DECISIONS] += 1
    base = bst[ST_BASE]
    bb = base + bbi
    ba = base + bai
    tick = p[K_TICK]
    mid = mid_price(bst, tick)
    vol_update(vol_f, vol_i, now, mid, p[K_VOL_SAMPLE_NS], p[K_VOL_HL_S])
    pos_view = vsf[VSF_POS_VIEW]
    var = vol_f[VOL_VAR]
    if (
        qmi[QM_VALID] == 0
        or qmi[QM_BB] != bb
        or qmi[QM_BA] != ba
        or qmf[QM_POS] != pos_view
        or qmf[QM_VAR] != var
    ):
        # Recompute the targets only when one of their inputs moved (most events are deeper in
        # the book than the impact levels); the result is the same either way.
        mdr = p[K_MAX_DELTA_RATIO]
        bt, at, h = target_ticks(
            mid, bb, ba, tick, pos_view / p[K_ORDER_QTY], np.sqrt(var), p[K_GAMMA], p[K_TAU_S],
            p[K_HALF_BPS] + p[K_SPREAD_DELTA_BPS], mdr,
        )  # fmt: skip
        levels = int(p[K_IMPACT_LEVELS])
        bdep, bbnd = side_depth(bid, ask, bst, 1, levels)
        adep, abnd = side_depth(bid, ask, bst, -1, levels)
        qmi[QM_VALID] = 1
        qmi[QM_BB] = bb
        qmi[QM_BA] = ba
        qmi[QM_BND_B] = bbnd
        qmi[QM_BND_A] = abnd
        qmi[QM_BT] = bt
        qmi[QM_AT] = at
        qmi[QM_BL] = quote_lots(p[K_ORDER_QTY], p[K_IMPACT_RATIO], bdep, p[K_LOT])
        qmi[QM_AL] = quote_lots(p[K_ORDER_QTY], p[K_IMPACT_RATIO], adep, p[K_LOT])
        qmi[QM_STEP] = max_step_ticks(mdr, h, tick)
        qmf[QM_POS] = pos_view
        qmf[QM_VAR] = var
    max_step = qmi[QM_STEP]
    # The side that acted longer ago goes first, so a busy side cannot starve the other of the
    # shared pacing budget (ties: bid first).
    first = 1 if si[1, S_LAST_ACT] < si[0, S_LAST_ACT] else 0
    for j in range(2):
        k = first ^ j
        if k == 0:
            _side_decision(
                0, 1, qmi[QM_BT], qmi[QM_BL], max_step, bb, ba, now, mid, ctl, venue, out
            )
        else:
            _side_decision(
                1, -1, qmi[QM_AT], qmi[QM_AL], max_step, bb, ba, now, mid, ctl, venue, out
            )


@njit(inline="always", **JIT)
def _marks_until(ts: int, mark_ns: int, book: BookArrays, ctl: Ctl, venue: Venue, out: Out) -> None:
    """Write the marks due by ``ts`` on the venue's clock (state before what happens at ts)."""
    g = ctl[CT_G]
    marks, nout = out[OUT_MARKS], out[OUT_NOUT]
    while g[G_NEXT_MARK] <= ts:
        write_mark(marks, nout[NO_MARKS], g[G_NEXT_MARK], book, ctl, venue)
        nout[NO_MARKS] += 1
        g[G_NEXT_MARK] += mark_ns


@njit(**JIT)
def run_chunk(
    events: np.ndarray,
    start: int,
    vbook: BookArrays,
    sbook: BookArrays,
    ctl: Ctl,
    venue: Venue,
    out: Out,
    fill_margin: int,
) -> int:
    """Process the items ``events[start:]``; returns the index of the first one not processed.

    ``vbook`` is the venue's book, ``sbook`` the strategy's; in the file-order model they are
    the same arrays and items carry no flags (timeline.py).
    """
    vbid, vask, vbst = vbook
    sbid, sask, sbst = sbook
    p, g, qmi = ctl[CT_P], ctl[CT_G], ctl[CT_QMI]
    oi, live, vs, cnt = venue[VN_OI], venue[VN_LIVE], venue[VN_VS], venue[VN_CNT]
    pi, pf = venue[VN_PI], venue[VN_PF]
    fills, actions, blocks, marks, nout = out
    fp = fill_path(venue, out)
    tick = p[K_TICK]
    lot = p[K_LOT]
    maker_bps = p[K_MAKER_BPS]
    taker_bps = p[K_TAKER_BPS]
    mark_ns = int(p[K_MARK_NS])
    mode = int(p[K_LAT_MODE])
    qmodel = int(p[K_QUEUE_MODEL])
    qpower = p[K_QUEUE_POWER]
    rules = int(p[K_RULES])
    n = events.shape[0]
    qmi[QM_VALID] = 0  # parameters may have been hot-swapped since the last call
    i = start
    while i < n:
        ev = events[i]
        exch = ev.exch_ts
        local = ev.local_ts
        flags = ev.kind & ITEM_FLAGS
        kind = ev.kind & KIND_BITS
        # Unflagged items: one cursor, both sides at once (file order); no venue clock sync.
        on_v = flags == 0 or (flags & ITEM_V) != 0
        on_s = flags == 0 or (flags & ITEM_S) != 0
        if (
            fills.shape[0] - nout[NO_FILLS] < fill_margin
            or actions.shape[0] - nout[NO_ACTIONS] < DECISION_MARGIN
            or blocks.shape[0] - nout[NO_BLOCKS] < DECISION_MARGIN
        ):
            return i
        # One pass of this loop either processes item i (and decides after it), or only runs
        # the decision of a snapshot batch that ended the previous slice, before item i.
        process = True
        decide_at = local
        if g[G_PENDING] == 1:
            g[G_PENDING] = 0
            if not (on_s and kind == KIND_SNAPSHOT and local == g[G_PENDING_TS]):
                process = False
                decide_at = g[G_PENDING_TS]
        now_decide = not process
        if process:
            if g[G_STARTED] == 0:
                g[G_NEXT_MARK] = -((-exch) // mark_ns) * mark_ns
                g[G_STARTED] = 1
            # Marks due on the venue's clock: up to this event's venue time before the venue
            # part, up to local_ts (a synced strategy item) before the strategy part. Room for
            # all of them first, so an item is never left half-processed.
            vclock = exch if on_v else NO_MARK_TS
            if flags & ITEM_SYNC and local > vclock:
                vclock = local
            if vclock >= g[G_NEXT_MARK]:
                due = (vclock - g[G_NEXT_MARK]) // mark_ns + 1
                if marks.shape[0] - nout[NO_MARKS] < due:
                    return i
            lag = local - exch
            if lag < 0:
                lag = 0
            delay = _leg(mode, p[K_ACK_NS], p[K_FEED_MULT], lag)
            terms = (tick, lot, maker_bps, taker_bps, delay, qmodel, qpower, rules)
            # The tick, once per item (book_apply would divide again on each side).
            x = ev.price / tick
            on_grid = abs(x) < 4.0e18  # not NaN, infinite or absurd
            t = int(np.floor(x + 0.5)) if on_grid else 0
            side = ev.side
            recentres = sbst[ST_RECENTRES]
            if on_v:
                _marks_until(exch, mark_ns, vbook, ctl, venue, out)
                if vs[VS_NOPS] > 0:
                    venue_arrivals(exch, vbook, terms, venue, out)
                if kind == KIND_TRADE:
                    if vs[VS_NLIVE] > 0:
                        on_trade(ev, t, vbook, terms, venue, out)
                else:
                    if on_grid:
                        book_apply_tick(vbid, vask, vbst, kind, side, t, ev.qty)
                    else:
                        book_apply(vbid, vask, vbst, tick, kind, side, ev.price, ev.qty)
                    if vs[VS_NLIVE] > 0 and kind in (KIND_DEPTH, KIND_SNAPSHOT):
                        on_depth(ev, t, vbook, terms, venue, out)
                g[G_VCLOCK] = exch
            if on_s:
                g[G_LAG] = lag
                if flags & ITEM_SYNC:
                    # Every venue item up to local_ts has run: marks and actions due by then.
                    _marks_until(local, mark_ns, vbook, ctl, venue, out)
                    if local > g[G_VCLOCK]:
                        g[G_VCLOCK] = local
                    if vs[VS_NOPS] > 0:
                        venue_arrivals(local, vbook, terms, venue, out)
                if kind != KIND_TRADE:
                    if flags != 0:
                        if on_grid:
                            book_apply_tick(sbid, sask, sbst, kind, side, t, ev.qty)
                        else:
                            book_apply(sbid, sask, sbst, tick, kind, side, ev.price, ev.qty)
                    if (
                        kind == KIND_CLEAR
                        or sbst[ST_RECENTRES] != recentres
                        or (side > 0 and t >= qmi[QM_BND_B])
                        or (side <= 0 and t <= qmi[QM_BND_A])
                    ):
                        qmi[QM_VALID] = 0
                deliver_reports(local, fp)
                if vs[VS_NOPS] > 0:
                    purge_ops(local, pi, pf, oi, vs)
                if vs[VS_DIRTY] == 1:
                    sweep_free(oi, live, vs)
                now_decide = True
                if kind in (KIND_CLEAR, KIND_SNAPSHOT):
                    # A snapshot batch (same local_ts) is seen by the strategy once complete.
                    if i + 1 < n:
                        nxt = events[i + 1]
                        nflags = nxt.kind & ITEM_FLAGS
                        now_decide = not (
                            (nflags == 0 or (nflags & ITEM_S) != 0)
                            and nxt.kind & KIND_BITS == KIND_SNAPSHOT
                            and nxt.local_ts == local
                        )
                    else:
                        now_decide = False
                        g[G_PENDING] = 1
                        g[G_PENDING_TS] = local
                g[G_LAST_LOCAL] = local
                cnt[C_EVENTS] += 1
            i += 1
        if now_decide:
            decide(decide_at, sbook, ctl, venue, out)
    return n
