"""The strategy's side of the core: one decision (book -> quote -> limiter -> actions) per event.

Split from the driver so the event loop (driver.py) and what the strategy does on each event
can be read apart. Everything here runs inside ``run_chunk`` (inlined or as internal calls).
"""

from __future__ import annotations

import numpy as np
from numba import njit

from mm_sim import kernel_cache
from mm_sim.core.account import (
    C_ATTEMPT0,
    C_BLOCK0,
    C_DECISIONS,
    C_NO_DECISION,
    C_SENT0,
    C_SLOT_EXHAUSTED,
)
from mm_sim.core.book import (
    ST_BASE,
    ST_BEST_ASK,
    ST_BEST_BID,
    mid_price,
    side_depth,
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
from mm_sim.core.orders import alloc_slot, push_op
from mm_sim.core.params import (
    CT_G,
    CT_LF,
    CT_LI,
    CT_P,
    CT_QMF,
    CT_QMI,
    CT_VOL_F,
    CT_VOL_I,
    G_LAG,
    INTERNAL,
    JIT,
    K_ACK_NS,
    K_CANCEL_NS,
    K_CSIZE,
    K_ENTRY_NS,
    K_FEED_MULT,
    K_GAMMA,
    K_HALF_BPS,
    K_IMPACT_LEVELS,
    K_IMPACT_RATIO,
    K_LAT_MODE,
    K_LOT,
    K_MAX_DELTA_RATIO,
    K_MAX_IN_FLIGHT,
    K_MAX_NOTIONAL,
    K_MAX_POS,
    K_MIN_INTERVAL_NS,
    K_ORDER_QTY,
    K_REPL_CAP,
    K_REPL_RATE,
    K_SPREAD_DELTA_BPS,
    K_TAIL_AGE_NS,
    K_TAU_S,
    K_TICK,
    K_VENUE_CAP,
    K_VENUE_RATE,
    K_VOL_HL_S,
    K_VOL_SAMPLE_NS,
    LAT_FEED,
    NO_ACTIONS,
    NO_BLOCKS,
    Ctl,
    Intent,
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
    QM_LOTS_A,
    QM_LOTS_B,
    QM_POS,
    QM_STEP,
    QM_VALID,
    QM_VAR,
    VOL_VAR,
    clamp_noncross,
    max_step_ticks,
    quote_lots,
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
from mm_sim.core.venue_state import (
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
    OUT_ACTIONS,
    OUT_BLOCKS,
    OUT_NOUT,
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
    VS_NOPS,
    VSF_POS_VIEW,
    BookArrays,
    Out,
    Venue,
)


@njit(inline="always", **JIT)
def _leg(mode: int, const_ns: float, mult: float, lag: int) -> int:
    """One latency leg in ns: constant, or a multiple of the observed feed lag plus a constant."""
    if mode == LAT_FEED:
        return int(mult * lag + const_ns)
    return int(const_ns)


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
def _side_size(
    side: int, valid: int, bound: int, lots: int, book: BookArrays, p: np.ndarray, qmi: np.ndarray
) -> None:
    """One side's quote size, unless its memo (``qmi[valid]``) holds: its depth in the impact
    levels, and the tick of the last level counted (``qmi[bound]``)."""
    if qmi[valid] == 0:
        bid, ask, bst = book
        dep, bnd = side_depth(bid, ask, bst, side, int(p[K_IMPACT_LEVELS]))
        qmi[bound] = bnd
        qmi[lots] = quote_lots(p[K_ORDER_QTY], p[K_IMPACT_RATIO], dep, p[K_LOT])
        qmi[valid] = 1


@njit(inline="always", **JIT)
def decide(now: int, book: BookArrays, ctl: Ctl, venue: Venue, out: Out) -> None:
    """The strategy at local time ``now``: quote both sides from the current book."""
    bst = book[2]
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
        qmi[QM_VALID] = 1
        qmi[QM_BB] = bb
        qmi[QM_BA] = ba
        qmi[QM_BT] = bt
        qmi[QM_AT] = at
        qmi[QM_LOTS_B] = 0
        qmi[QM_LOTS_A] = 0
        qmi[QM_STEP] = max_step_ticks(mdr, h, tick)
        qmf[QM_POS] = pos_view
        qmf[QM_VAR] = var
    _side_size(1, QM_LOTS_B, QM_BND_B, QM_BL, book, p, qmi)
    _side_size(-1, QM_LOTS_A, QM_BND_A, QM_AL, book, p, qmi)
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


kernel_cache.bind(__name__, kernel_cache.CORE)  # before any kernel loads: kernel_cache.py
