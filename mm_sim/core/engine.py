"""The simulator core: one fused numba loop over feed events, and the ``Engine`` that owns state.

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

import hashlib
import inspect
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from numba import njit

from mm_sim.config import LatencyMode, Overrides, Profile, QueueModel
from mm_sim.core import account, limiter, match, quote, rng
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
    ST_DROPPED,
    ST_RECENTRES,
    book_apply,
    make_book,
    mid_price,
    price_to_tick,
)
from mm_sim.core.jitcall import entry_point
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
    OF_CROSS_USED,
    OF_FILLED,
    OF_FRONT,
    OF_MID_DEC,
    OF_QTY,
    OF_QUOTE_PX,
    OF_REM,
    OS_PENDING,
    OS_RESTING,
    OUT_ACTIONS,
    OUT_BLOCKS,
    OUT_NOUT,
    VENUE_KEYS,
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
    WALK_MAX,
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
    QMF_SIZE,
    QMI_SIZE,
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
    ACTION_DTYPE,
    ACTION_NAMES,
    BLK_RISK,
    BLOCK_DTYPE,
    BLOCK_REASONS,
    FILL_DTYPE,
    MARK_DTYPE,
)
from mm_sim.errors import UserError
from mm_sim.events import (
    EVENT_DTYPE,
    KIND_CLEAR,
    KIND_DEPTH,
    KIND_SNAPSHOT,
    KIND_TRADE,
    Instrument,
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
K_SIZE = 31

# Engine scalars g[:] (int64)
G_NEXT_MARK = 0
G_LAST_EXCH = 1
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

DECISION_MARGIN = 8  # room kept for the actions (and blocks) of one decision: 2 sides x 2, x2
STATE_VERSION = 1


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
        if risk_breach(
            vsf[VSF_POS_VIEW], side, want_lots * p[K_LOT], px * p[K_TICK],
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


@njit(**JIT)
def run_chunk(
    events: np.ndarray,
    start: int,
    book: BookArrays,
    ctl: Ctl,
    venue: Venue,
    out: Out,
    fill_margin: int,
) -> int:
    """Process ``events[start:]``; returns the index of the first event not processed."""
    bid, ask, bst = book
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
    n = events.shape[0]
    qmi[QM_VALID] = 0  # parameters may have been hot-swapped since the last call
    i = start
    while i < n:
        ev = events[i]
        exch = ev.exch_ts
        local = ev.local_ts
        kind = ev.kind
        if (
            fills.shape[0] - nout[NO_FILLS] < fill_margin
            or actions.shape[0] - nout[NO_ACTIONS] < DECISION_MARGIN
            or blocks.shape[0] - nout[NO_BLOCKS] < DECISION_MARGIN
        ):
            return i
        # One pass of this loop either processes event i (and decides after it), or only runs
        # the decision of a snapshot batch that ended the previous slice, before event i.
        process = True
        decide_at = local
        if g[G_PENDING] == 1:
            g[G_PENDING] = 0
            if not (kind == KIND_SNAPSHOT and local == g[G_PENDING_TS]):
                process = False
                decide_at = g[G_PENDING_TS]
        now_decide = not process
        if process:
            if g[G_STARTED] == 0:
                g[G_NEXT_MARK] = -((-exch) // mark_ns) * mark_ns
                g[G_STARTED] = 1
            while g[G_NEXT_MARK] <= exch:
                if nout[NO_MARKS] >= marks.shape[0]:
                    return i
                write_mark(marks, nout[NO_MARKS], g[G_NEXT_MARK], book, ctl, venue)
                nout[NO_MARKS] += 1
                g[G_NEXT_MARK] += mark_ns
            lag = local - exch
            if lag < 0:
                lag = 0
            g[G_LAG] = lag
            delay = _leg(mode, p[K_ACK_NS], p[K_FEED_MULT], lag)
            terms = (tick, lot, maker_bps, taker_bps, delay, qmodel, qpower)
            if vs[VS_NOPS] > 0:
                venue_arrivals(exch, book, terms, venue, out)
            side = ev.side
            if kind == KIND_TRADE:
                if vs[VS_NLIVE] > 0:
                    on_trade(ev, price_to_tick(ev.price, tick), book, terms, venue, out)
            else:
                t = price_to_tick(ev.price, tick)
                recentres = bst[ST_RECENTRES]
                book_apply(bid, ask, bst, tick, kind, side, ev.price, ev.qty)
                if (
                    kind == KIND_CLEAR
                    or bst[ST_RECENTRES] != recentres
                    or (side > 0 and t >= qmi[QM_BND_B])
                    or (side <= 0 and t <= qmi[QM_BND_A])
                ):
                    qmi[QM_VALID] = 0
                if vs[VS_NLIVE] > 0 and kind in (KIND_DEPTH, KIND_SNAPSHOT):
                    on_depth(ev, t, book, terms, venue, out)
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
                    now_decide = not (nxt.kind == KIND_SNAPSHOT and nxt.local_ts == local)
                else:
                    now_decide = False
                    g[G_PENDING] = 1
                    g[G_PENDING_TS] = local
            g[G_LAST_EXCH] = exch
            g[G_LAST_LOCAL] = local
            cnt[C_EVENTS] += 1
            i += 1
        if now_decide:
            decide(decide_at, book, ctl, venue, out)
    return n


# ----------------------------------------------------------------------------------------------
# Python side
# ----------------------------------------------------------------------------------------------


@dataclass
class ChunkResult:
    """Records produced by one ``Engine.run`` call (copies owned by the caller)."""

    fills: np.ndarray
    actions: np.ndarray
    blocks: np.ndarray
    marks: np.ndarray


def override_values(o: Overrides) -> dict[int, float]:
    """Overrides -> parameter slots (the unit conversions live here and nowhere else)."""
    return {
        K_MIN_INTERVAL_NS: o.min_interval_ms * 1e6,
        K_REPL_CAP: float(o.replace_rate_per_min),
        K_REPL_RATE: o.replace_rate_per_min / 60e9,
        K_SPREAD_DELTA_BPS: float(o.base_spread_bps_delta),
        K_TAIL_AGE_NS: o.tail_age_ms * 1e6,
        K_IMPACT_RATIO: float(o.impact_cap_ratio),
        K_MAX_DELTA_RATIO: float(o.max_delta_ratio),
    }


def make_params(profile: Profile, overrides: Overrides, instrument: Instrument) -> np.ndarray:
    """The flat parameter vector the kernels read (units: ns, bps, base/quote currency)."""
    q = profile.quoting
    lat = profile.latency
    lim = profile.limiter
    tick = profile.instrument.tick_size or instrument.tick_size
    lot = profile.instrument.lot_size or instrument.lot_size
    if q.order_qty < lot:
        raise UserError(
            f"profile {profile.name}: quoting.order_qty = {q.order_qty} is below one lot "
            f"({lot}); the strategy could never quote"
        )
    p = np.zeros(K_SIZE)
    p[K_TICK] = tick
    p[K_LOT] = lot
    p[K_ORDER_QTY] = q.order_qty
    p[K_HALF_BPS] = q.base_half_spread_bps
    p[K_GAMMA] = q.gamma
    p[K_TAU_S] = q.horizon_s
    p[K_VOL_HL_S] = q.vol_halflife_s
    p[K_VOL_SAMPLE_NS] = q.vol_sample_ms * 1e6
    p[K_IMPACT_LEVELS] = q.impact_levels
    p[K_MAX_POS] = profile.inventory.max_position
    p[K_MAX_NOTIONAL] = profile.inventory.max_notional
    p[K_MAKER_BPS] = profile.fees.maker_bps
    p[K_TAKER_BPS] = profile.fees.taker_bps
    p[K_LAT_MODE] = LAT_FEED if lat.mode == LatencyMode.feed else LAT_CONSTANT
    p[K_ENTRY_NS] = lat.entry_ms * 1e6
    p[K_CANCEL_NS] = lat.cancel_ms * 1e6
    p[K_ACK_NS] = lat.ack_ms * 1e6
    p[K_FEED_MULT] = lat.feed_mult
    p[K_QUEUE_MODEL] = (
        match.QUEUE_PROBABILISTIC
        if profile.queue.model == QueueModel.probabilistic
        else match.QUEUE_CONSERVATIVE
    )
    p[K_QUEUE_POWER] = profile.queue.power
    p[K_MAX_IN_FLIGHT] = lim.max_in_flight
    p[K_VENUE_CAP] = lim.venue_budget
    p[K_VENUE_RATE] = lim.venue_budget / (lim.venue_window_ms * 1e6)
    p[K_MARK_NS] = round(profile.mark_interval_ms * 1e6)
    for idx, val in override_values(overrides).items():
        p[idx] = val
    return p


_STATE_KEYS = (
    "version", "p", "bid", "ask", "bst", "g", "vol_f", "vol_i", "lf", "li", "si",
    "oi", "of", "live", "pi", "pf", "ni", "nf", "vs", "vsf", "acc", "cnt", "rng",
)  # fmt: skip


class Engine:
    """One simulated strategy + venue over one instrument; feed it consecutive event slices."""

    def __init__(
        self,
        profile: Profile,
        overrides: Overrides,
        instrument: Instrument,
        seed: int,
        *,
        n_ticks: int = 1 << 18,
        report_capacity: int = 4096,
        out_capacity: int = 4096,
    ) -> None:
        self.profile = profile
        self.instrument = instrument
        self.seed = int(seed)
        self._p = make_params(profile, overrides, instrument)
        book = make_book(self._p[K_TICK], n_ticks)
        max_ops = profile.limiter.max_in_flight + 2
        venue = match.make_venue(max_ops + 4, max_ops, report_capacity)
        lf, li = limiter.make_buckets()
        g = np.zeros(G_SIZE, dtype=np.int64)
        self._s: dict[str, np.ndarray] = {
            "version": np.array([STATE_VERSION], dtype=np.int64),
            "p": self._p,
            "bid": book.bid,
            "ask": book.ask,
            "bst": book.st,
            "g": g,
            "vol_f": np.zeros(quote.VOL_F_SIZE),
            "vol_i": np.zeros(quote.VOL_I_SIZE, dtype=np.int64),
            "lf": lf,
            "li": li,
            "si": limiter.make_side_table(),
            **venue,
            "acc": account.make_account(),
            "cnt": account.make_counters(),
            "rng": rng.make_rng(self.seed),
        }
        # Fills one event can produce: each arriving action may walk WALK_MAX levels, and each
        # live order may be filled once by the event itself.
        self._fill_margin = (max_ops + 1) * (WALK_MAX + 1) + 2 * (max_ops + 4)
        cap = max(int(out_capacity), 1)
        self._out = {
            "fills": np.zeros(max(cap, 2 * self._fill_margin), dtype=FILL_DTYPE),
            "actions": np.zeros(max(cap, 4 * DECISION_MARGIN), dtype=ACTION_DTYPE),
            "blocks": np.zeros(max(cap, 4 * DECISION_MARGIN), dtype=BLOCK_DTYPE),
            "marks": np.zeros(cap, dtype=MARK_DTYPE),
        }
        self._nout = np.zeros(4, dtype=np.int64)
        # Memo of the last quote targets: a cache rebuilt at every run() call, not state.
        self._qmi = np.zeros(QMI_SIZE, dtype=np.int64)
        self._qmf = np.zeros(QMF_SIZE)
        # run_chunk's arguments after (events, start), bound again whenever a buffer grows
        self._args = self._bind_args()
        # run_live's compiled entry point (made on its first call)
        self._live_kernel: Any = None

    # -- running ------------------------------------------------------------------------------

    def run(self, events: np.ndarray) -> ChunkResult:
        """Process every event of this slice, in order; state carries over between calls."""
        ev = np.asarray(events)
        if ev.dtype != EVENT_DTYPE:
            raise TypeError(f"expected EVENT_DTYPE records, got {ev.dtype}")
        if ev.ndim != 1:
            raise TypeError("expected a 1-d slice of events")
        # One compiled signature only: a read-only memory map, a strided view or a dtype that
        # lost its "aligned" flag on disk would each make numba compile the driver again.
        if not (ev.flags.c_contiguous and ev.flags.writeable):
            ev = np.array(ev)
        if not ev.dtype.isalignedstruct:
            ev = ev.view(EVENT_DTYPE)
        out = self._out
        nout = self._nout
        nout[:] = 0
        i = 0
        n = len(ev)
        while i < n:
            i = run_chunk(ev, i, *self._args)
            if i < n:
                self._grow()
        return ChunkResult(
            fills=out["fills"][: nout[NO_FILLS]].copy(),
            actions=out["actions"][: nout[NO_ACTIONS]].copy(),
            blocks=out["blocks"][: nout[NO_BLOCKS]].copy(),
            marks=out["marks"][: nout[NO_MARKS]].copy(),
        )

    def run_live(self, events: np.ndarray) -> np.ndarray:
        """``run`` for a live feed's few events at a time, without ``run``'s per-call overhead.

        Why: one live message (a trade, a depth diff) is a handful of events, and ``run``'s input
        checks, output copies and the numba dispatcher (typing every state array per call) cost
        several times the kernel itself on that path. Same kernel, same state, same records as
        ``run`` on the same events, called through its compiled entry point (``core.jitcall``).
        The live client builds 1-d, C-contiguous, writeable, aligned EVENT_DTYPE arrays; any
        other EVENT_DTYPE array is copied into one first. The records stay in the engine's
        buffers until the next ``run`` or ``run_live``; ``live_result`` copies them out. Returns
        the output counts (fills, actions, blocks, marks), valid until the next call.
        """
        kernel = self._live_kernel
        if kernel is None:
            # Made for the types of the bound arrays, which a grown buffer keeps.
            kernel = entry_point(run_chunk, np.empty(1, dtype=EVENT_DTYPE), 0, *self._args)
            self._live_kernel = kernel
        f = events.flags
        if not (f.c_contiguous and f.writeable and f.aligned and events.dtype == EVENT_DTYPE):
            # The entry point would read any array as the kind it was made for.
            if events.dtype != EVENT_DTYPE or events.ndim != 1:
                raise TypeError(f"expected a 1-d slice of EVENT_DTYPE records, got {events.dtype}")
            events = np.array(events)
        nout = self._nout
        nout[:] = 0
        n = len(events)
        i = kernel(events, 0, *self._args)
        while i < n:
            self._grow()
            i = kernel(events, i, *self._args)
        return nout

    def _bind_args(self) -> tuple[BookArrays, Ctl, Venue, Out, int]:
        """The engine's arrays in the kernels' bundles (the arrays themselves, not copies)."""
        s = self._s
        o = self._out
        book = (s["bid"], s["ask"], s["bst"])
        ctl = (s["p"], s["g"], s["vol_f"], s["vol_i"], self._qmi, self._qmf, s["lf"], s["li"])
        venue = tuple(s[k] for k in VENUE_KEYS)
        out = (o["fills"], o["actions"], o["blocks"], o["marks"], self._nout)
        return book, ctl, venue, out, self._fill_margin

    def live_result(self) -> ChunkResult:
        """Copies of the records produced by the last ``run_live`` call."""
        out = self._out
        nout = self._nout
        return ChunkResult(
            fills=out["fills"][: nout[NO_FILLS]].copy(),
            actions=out["actions"][: nout[NO_ACTIONS]].copy(),
            blocks=out["blocks"][: nout[NO_BLOCKS]].copy(),
            marks=out["marks"][: nout[NO_MARKS]].copy(),
        )

    def _grow(self) -> None:
        """Double every buffer that is short of room for one more event."""
        need = {
            "fills": self._fill_margin,
            "actions": DECISION_MARGIN,
            "blocks": DECISION_MARGIN,
            "marks": 1,
        }
        for idx, name in enumerate(("fills", "actions", "blocks", "marks")):
            buf = self._out[name]
            if len(buf) - self._nout[idx] < need[name]:
                bigger = np.zeros(2 * len(buf), dtype=buf.dtype)
                bigger[: len(buf)] = buf
                self._out[name] = bigger
        self._args = self._bind_args()

    def set_overrides(self, o: Overrides) -> None:
        """Hot-swap the runtime overrides; they apply from the next event processed."""
        for idx, val in override_values(o).items():
            self._p[idx] = val

    # -- views --------------------------------------------------------------------------------

    def mark_now(self) -> np.ndarray:
        """One MARK_DTYPE record of the current state, stamped with the last event's exch_ts."""
        rec = np.zeros(1, dtype=MARK_DTYPE)
        book, ctl, venue, _out, _margin = self._args
        write_mark(rec, 0, self._s["g"][G_LAST_EXCH], book, ctl, venue)
        return rec

    @property
    def position(self) -> float:
        return float(self._s["acc"][A_POS])

    @property
    def cash(self) -> float:
        return float(self._s["acc"][A_CASH])

    @property
    def mid(self) -> float:
        return float(mid_price(self._s["bst"], self._p[K_TICK]))

    @property
    def position_view(self) -> float:
        """Position as the strategy knows it (fill reports lag by the ack latency)."""
        return float(self._s["vsf"][VSF_POS_VIEW])

    def account(self) -> dict[str, float]:
        names = [n for n in dir(account) if n.startswith("A_") and n != "A_SIZE"]
        acc = self._s["acc"]
        return {n[2:].lower(): float(acc[getattr(account, n)]) for n in names}

    def counters(self) -> dict[str, Any]:
        c = self._s["cnt"]
        acts = {name: int(c[C_ATTEMPT0 + code]) for code, name in ACTION_NAMES.items()}
        sent = {name: int(c[C_SENT0 + code]) for code, name in ACTION_NAMES.items()}
        return {
            "events": int(c[C_EVENTS]),
            "decisions": int(c[C_DECISIONS]),
            "attempts": acts,
            "blocks": {r: int(c[C_BLOCK0 + i]) for i, r in enumerate(BLOCK_REASONS)},
            "fills": int(c[account.C_FILLS]),
            "maker": int(c[account.C_MAKER]),
            "taker": int(c[account.C_TAKER]),
            "places": sent["place"],
            "replaces": sent["replace"],
            "cancels": sent["cancel"],
            "dropped": int(self._s["bst"][ST_DROPPED]),
            "other": {
                "cancels_done": int(c[account.C_CANCEL_DONE]),
                "cancels_lost_race": int(c[account.C_CANCEL_LOST]),
                "replaces_rejected": int(c[account.C_REPLACE_REJECTED]),
                "no_decision": int(c[C_NO_DECISION]),
                "reports_forced": int(c[account.C_REPORT_FORCED]),
                "walks_truncated": int(c[account.C_WALK_TRUNCATED]),
                "slots_exhausted": int(c[C_SLOT_EXHAUSTED]),
                "book_recentres": int(self._s["bst"][ST_RECENTRES]),
            },
        }

    def orders(self) -> list[dict[str, Any]]:
        """Orders currently known to the venue (pending, resting or awaiting release)."""
        s = self._s
        oi, of = s["oi"], s["of"]
        out = []
        for m in range(int(s["vs"][VS_NLIVE])):
            k = int(s["live"][m])
            out.append(
                {
                    "order_id": int(oi[k, O_ID]),
                    "side": int(oi[k, O_SIDE]),
                    "status": int(oi[k, O_STATUS]),
                    "price": float(oi[k, O_PX] * self._p[K_TICK]),
                    "qty": float(of[k, OF_QTY]),
                    "filled": float(of[k, OF_FILLED]),
                    "remaining": float(of[k, OF_REM]),
                    "front": float(of[k, OF_FRONT]),
                    "current": bool(oi[k, O_CURRENT]),
                    "refs": int(oi[k, O_REFS]),
                    "cross_used": float(of[k, OF_CROSS_USED]),
                }
            )
        return out

    # -- checkpoint ---------------------------------------------------------------------------

    def state_arrays(self) -> dict[str, np.ndarray]:
        """A deep copy of the complete state (parameters and overrides in force included)."""
        return {k: self._s[k].copy() for k in _STATE_KEYS}

    def load_state(self, d: dict[str, np.ndarray]) -> None:
        """Restore a ``state_arrays`` snapshot taken from an engine built the same way."""
        missing = [k for k in _STATE_KEYS if k not in d]
        if missing:
            raise UserError(f"checkpoint is missing core state {missing}")
        if int(np.asarray(d["version"])[0]) != STATE_VERSION:
            raise UserError(
                f"checkpoint core state version {int(np.asarray(d['version'])[0])} "
                f"!= {STATE_VERSION}; it was written by another mm_sim version"
            )
        for k in _STATE_KEYS:
            src = np.asarray(d[k])
            dst = self._s[k]
            if src.shape != dst.shape or src.dtype != dst.dtype:
                raise UserError(
                    f"checkpoint core state '{k}' has shape {src.shape} {src.dtype}, this engine "
                    f"expects {dst.shape} {dst.dtype} (different profile or engine size)"
                )
        for k in _STATE_KEYS:
            self._s[k][...] = d[k]


# ----------------------------------------------------------------------------------------------
# Numba's on-disk cache keys a function on its own file only; a change in a helper module would
# leave a stale compiled driver. Bind every core kernel's cache entry to the source of all the
# modules it is built from, so any edit there forces a recompile.
# ----------------------------------------------------------------------------------------------


def _core_sources_digest() -> str:
    from mm_sim import events
    from mm_sim.core import book, records

    h = hashlib.sha256()
    for mod in (events, records, book, quote, limiter, account, match, rng, Path(__file__)):
        path = Path(mod) if isinstance(mod, Path) else Path(inspect.getfile(mod))
        h.update(path.read_bytes())
    return h.hexdigest()


def bind_cache_to_sources(modules: tuple[Any, ...]) -> None:
    """Make the on-disk cache of every kernel defined in ``modules`` depend on the core sources."""
    digest = _core_sources_digest()
    for mod in modules:
        for obj in vars(mod).values():
            cache = getattr(obj, "_cache", None)
            cfile = getattr(cache, "_cache_file", None)
            stamp = getattr(cfile, "_source_stamp", None)
            py_func = getattr(obj, "py_func", None)
            if stamp is None or getattr(py_func, "__module__", None) != mod.__name__:
                continue
            if not (isinstance(stamp, tuple) and len(stamp) == 3 and stamp[2] == digest):
                setattr(cfile, "_source_stamp", (stamp, "mm_sim-core", digest))  # noqa: B010


bind_cache_to_sources((quote, limiter, account, match, rng, sys.modules[__name__]))
