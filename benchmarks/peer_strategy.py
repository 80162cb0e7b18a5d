"""The S1 market-making loop written against hftbacktest's bot API, for the peer comparison.

Why it reuses mm_sim's own quoting and limiter kernels: the comparison is only meaningful if
both simulators run the same strategy. :func:`decide` calls ``mm_sim.core.quote`` (volatility
EWMA, Avellaneda-Stoikov targets, step limit, never-cross clamp) and ``mm_sim.core.limiter``
(risk check, pacing, in-flight cap, token buckets) with the parameter vector
``engine_params.make_params`` builds, and follows ``strategy.decide`` /
``strategy._side_decision`` step by step, so the two simulators differ only where venue
simulators may differ: book, queue, matching, latency bookkeeping.

Why two layers: :func:`decide` is a plain kernel over small state arrays (no hftbacktest object,
no allocation, compiled without reference counting, cached on disk, with a plain-Python
reference, :func:`decide_reference`). It writes the actions it allowed into ``acts``;
:func:`run_mm` is the thin loop around hftbacktest's jitclass API that feeds it and carries the
actions out. Passing the bot object and a dozen arrays through per-side helper calls in one
reference-counted function cost hftbacktest about as much as its own replay; this split keeps
the peer's loop as lean as a careful user would write it.

What cannot be mirrored exactly, and how ``benchmarks.peer`` makes mm_sim do the same instead:

- quote size: mm_sim caps it at ``impact_cap_ratio`` x the visible size of the best
  ``impact_levels`` levels. Reading those levels here would cost one foreign call per tick
  scanned, on every event; the comparison sets the ratio to its maximum so the cap never binds
  and both quote ``order_qty``;
- tail-age refresh: mm_sim's same-price, same-size replace re-queues the order; hftbacktest's
  ``modify`` keeps the queue position in that case. The comparison sets ``tail_age_ms`` to its
  maximum (60 s), where a refresh almost never happens before the price moves;
- decision points: mm_sim decides after every event (a snapshot batch once complete);
  ``wait_next_feed`` returns once per group of feed rows sharing a local timestamp;
- the strategy learns that an order is gone when a fill report arrives (hftbacktest's trade
  count moves) and the order is no longer resting; mm_sim learns it from the report saying the
  order is fully filled. Same moment, same information. The same check counts the distinct
  orders with at least one fill (``R_ORDERS_FILLED``), the figure comparable with mm_sim's
  distinct filled order ids whatever each venue's partial-fill rule.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
from numba import njit

from mm_sim import kernel_cache
from mm_sim.core import limiter as L
from mm_sim.core import params as D
from mm_sim.core import quote as Q
from mm_sim.core.limiter import NO_TS, consume, gate, risk_breach
from mm_sim.core.quote import (
    VOL_VAR,
    clamp_noncross,
    max_step_ticks,
    step_toward,
    target_ticks,
    vol_update,
)
from mm_sim.core.records import ACT_CANCEL, ACT_PLACE, ACT_REPLACE, BLK_RISK

JIT: dict[str, Any] = {"cache": True, "_nrt": False}

# hftbacktest constants restated (hftbacktest.order); checked against the package in peer.py.
HBT_GTC = 0
HBT_LIMIT = 0
HBT_NEW = 1
HBT_PARTIALLY_FILLED = 5
WAIT_FEED = 2  # wait_next_feed: a market feed row was received
WAIT_END = 1  # wait_next_feed: end of data
FOREVER_NS = 1 << 60
HBT_INVALID = 1 << 62  # |best tick| beyond this: hftbacktest's "no best bid/ask" sentinels

# Output counters out[:] (int64).
R_DECISIONS = 0
R_NO_DECISION = 1
R_PLACES = 2
R_REPLACES = 3
R_CANCELS = 4
R_BLK_MIN_INTERVAL = 5  # R_BLK_MIN_INTERVAL + BLK_* (0..3): once per distinct intent, as mm_sim
R_BLK_CONCURRENCY = 6
R_BLK_RISK = 7
R_BLK_THROTTLE = 8
R_API_ERRORS = 9  # submit/modify/cancel calls hftbacktest refused
R_END_CODE = 10  # the last wait_next_feed code (1 = end of data)
R_FEED_WAKEUPS = 11
R_ORDERS_GONE = 12  # orders the strategy learned had ended (filled)
R_LOGGED = 13  # actions written to the action log (it stops when full)
R_ORDERS_FILLED = 14  # distinct orders the strategy learned had at least one fill
R_SIZE = 15

# Per-side strategy table sd[k, :], k = 0 bid, 1 ask (the counterpart of mm_sim's ``si``).
SD_OID = 0  # live order id, -1 none
SD_PX = 1
SD_LOTS = 2
SD_DECIDED = 3
SD_LAST_ACT = 4
SD_BK_ACT = 5
SD_BK_PX = 6
SD_BK_LOTS = 7
SD_BK_REASON = 8
SD_FILL_SEEN = 9  # the order id last counted in R_ORDERS_FILLED on this side (-1 none)
SD_SIZE = 10

# Loop scalars g[:] (int64): order ids, the in-flight ring, the target memo.
G_NEXT_ID = 0
G_RING_HEAD = 1
G_RING_N = 2
G_MEMO_VALID = 3
G_MEMO_BB = 4
G_MEMO_BA = 5
G_BT = 6
G_AT = 7
G_STEP = 8
G_SIZE = 9
GF_MEMO_POS = 0
GF_MEMO_VAR = 1
GF_SIZE = 2

ACK_RING = 64  # acknowledgement times of actions in flight (more than any max_in_flight used)
ACT_K = 0  # acts[j, :]: side index, action, price tick, lots, order id
ACT_ACTION = 1
ACT_PX = 2
ACT_LOTS = 3
ACT_OID = 4
ACT_NF = 5
# Action log rows log[i, :]: local time, side (+1 bid, -1 ask), action, price tick, lots.
LOG_TS = 0
LOG_SIDE = 1
LOG_ACTION = 2
LOG_PX = 3
LOG_LOTS = 4
LOG_NF = 5


def make_state(log_capacity: int = 1 << 16) -> dict[str, np.ndarray]:
    """Fresh decision state (the arrays :func:`decide` and :func:`run_mm` take), with room for
    ``log_capacity`` actions in the action log."""
    sd = np.zeros((2, SD_SIZE), dtype=np.int64)
    sd[:, SD_OID] = -1
    sd[:, SD_DECIDED] = NO_TS
    sd[:, SD_LAST_ACT] = NO_TS
    sd[:, SD_BK_ACT] = -1
    sd[:, SD_FILL_SEEN] = -1
    g = np.zeros(G_SIZE, dtype=np.int64)
    g[G_NEXT_ID] = 1
    lf, li = L.make_buckets()
    return {
        "sd": sd,
        "g": g,
        "gf": np.zeros(GF_SIZE),
        "acks": np.zeros(ACK_RING, dtype=np.int64),
        "vol_f": np.zeros(Q.VOL_F_SIZE),
        "vol_i": np.zeros(Q.VOL_I_SIZE, dtype=np.int64),
        "lf": lf,
        "li": li,
        "acts": np.zeros((4, ACT_NF), dtype=np.int64),
        "out": np.zeros(R_SIZE, dtype=np.int64),
        "log": np.zeros((max(1, log_capacity), LOG_NF), dtype=np.int64),
    }


STATE_ORDER = ("sd", "g", "gf", "acks", "vol_f", "vol_i", "lf", "li", "acts", "out", "log")


@njit(inline="always", **JIT)
def _block(
    k: int, action: int, reason: int, px: int, lots: int, sd: np.ndarray, out: np.ndarray
) -> None:
    """Count a refusal once per distinct intent (mm_sim's ``_block`` rule)."""
    if (
        sd[k, SD_BK_ACT] != action
        or sd[k, SD_BK_PX] != px
        or sd[k, SD_BK_LOTS] != lots
        or sd[k, SD_BK_REASON] != reason
    ):
        sd[k, SD_BK_ACT] = action
        sd[k, SD_BK_PX] = px
        sd[k, SD_BK_LOTS] = lots
        sd[k, SD_BK_REASON] = reason
        out[R_BLK_MIN_INTERVAL + reason] += 1


@njit(**JIT)
def decide(
    now: int,
    bb: int,
    ba: int,
    pos_view: float,
    p: np.ndarray,
    sd: np.ndarray,
    g: np.ndarray,
    gf: np.ndarray,
    acks: np.ndarray,
    vol_f: np.ndarray,
    vol_i: np.ndarray,
    lf: np.ndarray,
    li: np.ndarray,
    acts: np.ndarray,
    out: np.ndarray,
) -> int:
    """S1's decision at local time ``now`` on a valid book (``bb < ba``, absolute ticks).

    Returns how many actions were allowed; they are in ``acts[:n]`` in sending order, and the
    side table, token buckets and in-flight ring already count them as sent.
    """
    while g[G_RING_N] > 0 and acks[g[G_RING_HEAD]] <= now:
        g[G_RING_HEAD] = (g[G_RING_HEAD] + 1) % ACK_RING
        g[G_RING_N] -= 1
    out[R_DECISIONS] += 1
    tick = p[D.K_TICK]
    mid = (bb + ba) * tick * 0.5
    vol_update(vol_f, vol_i, now, mid, p[D.K_VOL_SAMPLE_NS], p[D.K_VOL_HL_S])
    var = vol_f[VOL_VAR]
    if (
        g[G_MEMO_VALID] == 0
        or g[G_MEMO_BB] != bb
        or g[G_MEMO_BA] != ba
        or gf[GF_MEMO_POS] != pos_view
        or gf[GF_MEMO_VAR] != var
    ):
        mdr = p[D.K_MAX_DELTA_RATIO]
        bt, at, h = target_ticks(
            mid, bb, ba, tick, pos_view / p[D.K_ORDER_QTY], np.sqrt(var), p[D.K_GAMMA],
            p[D.K_TAU_S], p[D.K_HALF_BPS] + p[D.K_SPREAD_DELTA_BPS], mdr,
        )  # fmt: skip
        g[G_MEMO_VALID] = 1
        g[G_MEMO_BB] = bb
        g[G_MEMO_BA] = ba
        g[G_BT] = bt
        g[G_AT] = at
        g[G_STEP] = max_step_ticks(mdr, h, tick)
        gf[GF_MEMO_POS] = pos_view
        gf[GF_MEMO_VAR] = var
    want_lots = int(np.floor(p[D.K_ORDER_QTY] / p[D.K_LOT] + Q.TICK_EPS))
    n = 0
    first = 1 if sd[1, SD_LAST_ACT] < sd[0, SD_LAST_ACT] else 0
    for j in range(2):
        k = first ^ j
        side = 1 if k == 0 else -1
        want_px = g[G_BT] if k == 0 else g[G_AT]
        has = sd[k, SD_OID] >= 0
        action = 0
        a_px = 0
        a_lots = 0
        intent = 0
        px = want_px
        if has:
            cur = sd[k, SD_PX]
            px = clamp_noncross(side, step_toward(cur, want_px, g[G_STEP]), bb, ba)
            if (
                px != cur
                or want_lots != sd[k, SD_LOTS]
                or now - sd[k, SD_DECIDED] >= p[D.K_TAIL_AGE_NS]
            ):
                intent = ACT_REPLACE
        else:
            intent = ACT_PLACE
        if risk_breach(
            pos_view, side, want_lots * p[D.K_LOT], px * tick, p[D.K_MAX_POS],
            p[D.K_MAX_NOTIONAL],
        ):  # fmt: skip
            if intent != 0:
                _block(k, intent, BLK_RISK, px, want_lots, sd, out)
            if has:
                action = ACT_CANCEL
                a_px = sd[k, SD_PX]
        elif intent != 0:
            action = intent
            a_px = px
            a_lots = want_lots
        if action == 0:
            continue
        reason = gate(
            action, False, now, sd[k, SD_LAST_ACT], p[D.K_MIN_INTERVAL_NS], g[G_RING_N],
            int(p[D.K_MAX_IN_FLIGHT]), lf, li, p[D.K_REPL_CAP], p[D.K_REPL_RATE],
            p[D.K_VENUE_CAP], p[D.K_VENUE_RATE],
        )  # fmt: skip
        if reason >= 0:
            _block(k, action, reason, a_px, a_lots, sd, out)
            continue
        # Sent: the side table as mm_sim's ``_send`` leaves it.
        acts[n, ACT_K] = k
        acts[n, ACT_ACTION] = action
        acts[n, ACT_PX] = a_px
        acts[n, ACT_LOTS] = a_lots
        if action == ACT_PLACE:
            oid = g[G_NEXT_ID]
            g[G_NEXT_ID] = oid + 1
            sd[k, SD_OID] = oid
            sd[k, SD_PX] = a_px
            sd[k, SD_LOTS] = a_lots
            sd[k, SD_DECIDED] = now
            out[R_PLACES] += 1
            leg = p[D.K_ENTRY_NS]
        elif action == ACT_REPLACE:
            oid = sd[k, SD_OID]
            keep = a_px == sd[k, SD_PX] and a_lots < sd[k, SD_LOTS]
            sd[k, SD_PX] = a_px
            sd[k, SD_LOTS] = a_lots
            if not keep:
                sd[k, SD_DECIDED] = now
            out[R_REPLACES] += 1
            leg = p[D.K_ENTRY_NS]
        else:
            oid = sd[k, SD_OID]
            sd[k, SD_OID] = -1
            out[R_CANCELS] += 1
            leg = p[D.K_CANCEL_NS]
        acts[n, ACT_OID] = oid
        n += 1
        consume(
            action, now, lf, li, p[D.K_REPL_CAP], p[D.K_REPL_RATE], p[D.K_VENUE_CAP],
            p[D.K_VENUE_RATE],
        )  # fmt: skip
        sd[k, SD_LAST_ACT] = now
        sd[k, SD_BK_ACT] = -1
        # In flight until its acknowledgement is back (constant latency: outbound + ack).
        acks[(g[G_RING_HEAD] + g[G_RING_N]) % ACK_RING] = now + int(leg) + int(p[D.K_ACK_NS])
        g[G_RING_N] += 1
    return n


def decide_reference(now: int, bb: int, ba: int, pos_view: float, p: np.ndarray, st: dict) -> int:
    """Plain-Python :func:`decide` (differential tests): same arrays, same updates.

    Written from docs/CORE.md ("Quoting", "Limiter") with the quote/limiter helpers' pure-Python
    bodies (``py_func``), so a compilation problem in the kernel cannot hide in both.
    """
    sd, g, gf, acks = st["sd"], st["g"], st["gf"], st["acks"]
    lf, li, acts, out = st["lf"], st["li"], st["acts"], st["out"]
    while g[G_RING_N] > 0 and acks[g[G_RING_HEAD]] <= now:
        g[G_RING_HEAD] = (g[G_RING_HEAD] + 1) % ACK_RING
        g[G_RING_N] -= 1
    out[R_DECISIONS] += 1
    tick = p[D.K_TICK]
    mid = (bb + ba) * tick * 0.5
    Q.vol_update.py_func(st["vol_f"], st["vol_i"], now, mid, p[D.K_VOL_SAMPLE_NS], p[D.K_VOL_HL_S])
    var = st["vol_f"][VOL_VAR]
    mdr = p[D.K_MAX_DELTA_RATIO]
    half = p[D.K_HALF_BPS] + p[D.K_SPREAD_DELTA_BPS]
    h = Q.half_spread_px.py_func(mid, half, tick)
    skew = Q.inventory_skew_px.py_func(
        mid, pos_view / p[D.K_ORDER_QTY], p[D.K_GAMMA], math.sqrt(var), p[D.K_TAU_S], mdr * h
    )
    r = mid - skew
    bt = Q.clamp_noncross.py_func(1, math.floor((r - h) / tick + Q.TICK_EPS), bb, ba)
    at = Q.clamp_noncross.py_func(-1, math.ceil((r + h) / tick - Q.TICK_EPS), bb, ba)
    step = max(1, math.floor(mdr * h / tick + Q.TICK_EPS))
    g[G_MEMO_VALID], g[G_MEMO_BB], g[G_MEMO_BA] = 1, bb, ba
    g[G_BT], g[G_AT], g[G_STEP] = bt, at, step
    gf[GF_MEMO_POS], gf[GF_MEMO_VAR] = pos_view, var
    lots = math.floor(p[D.K_ORDER_QTY] / p[D.K_LOT] + Q.TICK_EPS)

    def bucket(i_level: int, i_ts: int, cap: float, rate: float) -> float:
        if li[i_ts] == NO_TS:
            return cap
        return min(cap, lf[i_level] + max(0, now - li[i_ts]) * rate)

    def blocked(k: int, action: int, reason: int, px: int, n_lots: int) -> None:
        if tuple(sd[k, SD_BK_ACT : SD_BK_REASON + 1]) != (action, px, n_lots, reason):
            sd[k, SD_BK_ACT : SD_BK_REASON + 1] = (action, px, n_lots, reason)
            out[R_BLK_MIN_INTERVAL + reason] += 1

    n = 0
    first = 1 if sd[1, SD_LAST_ACT] < sd[0, SD_LAST_ACT] else 0
    for k in (first, 1 - first):
        side = 1 if k == 0 else -1
        want = bt if k == 0 else at
        has = sd[k, SD_OID] >= 0
        px, intent = want, ACT_PLACE
        if has:
            cur = sd[k, SD_PX]
            moved = min(max(want, cur - step), cur + step)
            px = Q.clamp_noncross.py_func(side, moved, bb, ba)
            stale = now - sd[k, SD_DECIDED] >= p[D.K_TAIL_AGE_NS]
            intent = ACT_REPLACE if (px != cur or lots != sd[k, SD_LOTS] or stale) else 0
        new = pos_view + side * lots * p[D.K_LOT]
        risky = abs(new) > abs(pos_view) and (
            abs(new) > p[D.K_MAX_POS] * (1.0 + 1e-9) or abs(new) * (px * tick) > p[D.K_MAX_NOTIONAL]
        )
        action, a_px, a_lots = 0, 0, 0
        if risky:
            if intent:
                blocked(k, intent, BLK_RISK, px, lots)
            if has:
                action, a_px = ACT_CANCEL, sd[k, SD_PX]
        elif intent:
            action, a_px, a_lots = intent, px, lots
        if not action:
            continue
        repl = (L.LF_REPLACE, L.LI_REPLACE_TS, p[D.K_REPL_CAP], p[D.K_REPL_RATE])
        venue = (L.LF_VENUE, L.LI_VENUE_TS, p[D.K_VENUE_CAP], p[D.K_VENUE_RATE])
        if now - sd[k, SD_LAST_ACT] < p[D.K_MIN_INTERVAL_NS]:
            reason = 0
        elif g[G_RING_N] >= int(p[D.K_MAX_IN_FLIGHT]):
            reason = 1
        elif (action != ACT_PLACE and bucket(*repl) < 1.0) or bucket(*venue) < 1.0:
            reason = 3
        else:
            reason = -1
        if reason >= 0:
            blocked(k, action, reason, a_px, a_lots)
            continue
        if action == ACT_PLACE:
            oid = g[G_NEXT_ID]
            g[G_NEXT_ID] += 1
            sd[k, SD_OID], sd[k, SD_PX], sd[k, SD_LOTS], sd[k, SD_DECIDED] = oid, a_px, a_lots, now
            out[R_PLACES] += 1
            leg = p[D.K_ENTRY_NS]
        elif action == ACT_REPLACE:
            oid = sd[k, SD_OID]
            keep = a_px == sd[k, SD_PX] and a_lots < sd[k, SD_LOTS]
            sd[k, SD_PX], sd[k, SD_LOTS] = a_px, a_lots
            if not keep:
                sd[k, SD_DECIDED] = now
            out[R_REPLACES] += 1
            leg = p[D.K_ENTRY_NS]
        else:
            oid = sd[k, SD_OID]
            sd[k, SD_OID] = -1
            out[R_CANCELS] += 1
            leg = p[D.K_CANCEL_NS]
        acts[n] = (k, action, a_px, a_lots, oid)
        n += 1
        if action != ACT_PLACE:
            lf[L.LF_REPLACE] = bucket(*repl) - 1.0
            li[L.LI_REPLACE_TS] = now
        lf[L.LF_VENUE] = bucket(*venue) - 1.0
        li[L.LI_VENUE_TS] = now
        sd[k, SD_LAST_ACT] = now
        sd[k, SD_BK_ACT] = -1
        acks[(g[G_RING_HEAD] + g[G_RING_N]) % ACK_RING] = now + int(leg) + int(p[D.K_ACK_NS])
        g[G_RING_N] += 1
    return n


@njit
def _order_news(hbt: Any, oid: int) -> int:
    """What the strategy has been told about its order: 0 resting and never filled, 1 resting
    after a fill, 2 no longer resting (filled, or ended)."""
    o = hbt.orders(0).get(oid)
    if o is None:
        return 2
    st = o.status
    if st != HBT_NEW and st != HBT_PARTIALLY_FILLED:
        return 2
    if st == HBT_PARTIALLY_FILLED or o.exec_qty > 0.0:
        return 1
    return 0


@njit
def _execute(
    hbt: Any,
    now: int,
    p: np.ndarray,
    acts: np.ndarray,
    n: int,
    sd: np.ndarray,
    out: np.ndarray,
    log: np.ndarray,
) -> None:
    """Carry out the actions :func:`decide` allowed, through hftbacktest's order API."""
    tick = p[D.K_TICK]
    lot = p[D.K_LOT]
    for j in range(n):
        i = out[R_LOGGED]
        if i < log.shape[0]:
            log[i, LOG_TS] = now
            log[i, LOG_SIDE] = 1 if acts[j, ACT_K] == 0 else -1
            log[i, LOG_ACTION] = acts[j, ACT_ACTION]
            log[i, LOG_PX] = acts[j, ACT_PX]
            log[i, LOG_LOTS] = acts[j, ACT_LOTS]
            out[R_LOGGED] = i + 1
        k = acts[j, ACT_K]
        action = acts[j, ACT_ACTION]
        oid = acts[j, ACT_OID]
        price = acts[j, ACT_PX] * tick
        qty = acts[j, ACT_LOTS] * lot
        if action == ACT_PLACE:
            if k == 0:
                r = hbt.submit_buy_order(0, oid, price, qty, HBT_GTC, HBT_LIMIT, False)
            else:
                r = hbt.submit_sell_order(0, oid, price, qty, HBT_GTC, HBT_LIMIT, False)
            if r != 0 and sd[k, SD_OID] == oid:
                sd[k, SD_OID] = -1
        elif action == ACT_REPLACE:
            r = hbt.modify(0, oid, price, qty, False)
        else:
            r = hbt.cancel(0, oid, False)
        if r != 0:
            out[R_API_ERRORS] += 1


@njit
def run_mm(
    hbt: Any,
    p: np.ndarray,
    sd: np.ndarray,
    g: np.ndarray,
    gf: np.ndarray,
    acks: np.ndarray,
    vol_f: np.ndarray,
    vol_i: np.ndarray,
    lf: np.ndarray,
    li: np.ndarray,
    acts: np.ndarray,
    out: np.ndarray,
    log: np.ndarray,
) -> int:
    """Drive ``hbt`` to the end of its data, deciding at every feed wake-up; returns the last
    ``wait_next_feed`` code (1 = end of data).

    ``p`` is ``mm_sim.core.engine_params.make_params(...)`` (the vector mm_sim's kernels read); the
    other arrays come from :func:`make_state` (``STATE_ORDER``). Not cached on disk: a function
    taking hftbacktest's jitclass cannot be, so its compile time is measured apart.
    """
    # Both views point into the backtest's own state and stay valid (and current) for its whole
    # life: reading them is a load, where ``hbt.position(0)`` is a foreign call each time.
    depth = hbt.depth(0)
    sv = hbt.state_values(0)
    last_trades = 0
    code = 0
    while True:
        code = hbt.wait_next_feed(False, FOREVER_NS)
        if code != WAIT_FEED:
            break
        out[R_FEED_WAKEUPS] += 1
        pos_view = sv.position
        n_trades = sv.num_trades
        if n_trades != last_trades:
            # A fill report arrived (the count, unlike the position, moves on every fill).
            last_trades = n_trades
            for k in range(2):
                oid = sd[k, SD_OID]
                if oid < 0:
                    continue
                news = _order_news(hbt, oid)
                if news > 0 and sd[k, SD_FILL_SEEN] != oid:
                    sd[k, SD_FILL_SEEN] = oid
                    out[R_ORDERS_FILLED] += 1
                if news == 2:
                    sd[k, SD_OID] = -1
                    out[R_ORDERS_GONE] += 1
            hbt.clear_inactive_orders(0)
        bb = depth.best_bid_tick
        ba = depth.best_ask_tick
        if bb >= ba or bb < -HBT_INVALID or ba > HBT_INVALID:
            out[R_NO_DECISION] += 1
            continue
        now = hbt.current_timestamp
        n = decide(
            now, bb, ba, pos_view, p, sd, g, gf, acks, vol_f, vol_i, lf, li, acts, out
        )  # fmt: skip
        if n > 0:
            _execute(hbt, now, p, acts, n, sd, out, log)
    out[R_END_CODE] = code
    return code


@njit
def count_wakeups(hbt: Any) -> int:
    """Replay only (no strategy): hftbacktest's own floor for this feed and cadence."""
    c = 0
    while hbt.wait_next_feed(False, FOREVER_NS) == WAIT_FEED:
        c += 1
    return c


# numba keys this module's on-disk cache on this file only, while ``decide`` compiles in the
# core's constants and kernels (params.K_*, quote, limiter): bind it to the core sources too.
kernel_cache.bind(__name__, kernel_cache.CORE)
