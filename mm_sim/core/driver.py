"""The simulator core's driver: one fused numba loop over the feed's items (``run_chunk``).

An item is an event seen by the venue (at its venue time), by the strategy (at its local
time), or both; in the file-order model every event is one item seen by both (docs/CORE.md,
"Two clocks and the event loop"). Per item:

1. a decision deferred by a batch that ended the previous slice runs, unless this item
   continues the batch;
2. marks due on the venue's clock are written (state as it was before this item);
3. venue part: actions that reached the venue by the item's venue time are processed (place,
   replace, cancel; an arriving crossing order takes liquidity); the event updates the
   venue's book, our queue positions and fills (trades, crossed book);
4. strategy part: the event updates the strategy's book; fill reports the strategy has
   received by its ``local_ts`` are applied, acknowledged actions leave the in-flight list,
   finished orders are released;
5. the strategy decides (book -> quote -> limiter -> actions) once every event of this
   ``local_ts`` is applied: one decision per message received, never on a half-applied one
   (``quoting.decide = event``: after every event, only snapshot batches grouped).

A message's later events on one side (a depth diff's levels, a snapshot's) find steps 1-4's
clock work done by its first event and take only their event (the run noted in ``run_chunk``).

All state lives in numpy arrays (``state_arrays``), so a run can be checkpointed between chunks
and resumed bit for bit. The kernels take those arrays in a few tuples whose members always
travel together (``BookArrays``, ``Ctl``, ``Venue``, ``Out``; venue_state.py says why). Output
buffers are preallocated; when one runs short the kernel stops before the item it cannot finish,
the Python side grows the buffer and resumes there.
"""

from __future__ import annotations

import numpy as np
from numba import njit

from mm_sim import kernel_cache
from mm_sim.core.account import (
    A_CASH,
    A_POS,
    C_EVENTS,
)
from mm_sim.core.book import (
    OFF_GRID,
    ST_BASE,
    ST_BEST_ASK,
    ST_BEST_BID,
    ST_RECENTRES,
    book_apply,
    book_apply_tick,
    mid_price,
    tick_of,
)
from mm_sim.core.fills import deliver_reports, fill_path
from mm_sim.core.match import on_depth, on_trade, venue_arrivals
from mm_sim.core.orders import purge_ops, sweep_free
from mm_sim.core.params import (
    CT_G,
    CT_P,
    CT_QMI,
    CT_VOL_F,
    DECISION_MARGIN,
    G_LAG,
    G_LAST_LOCAL,
    G_NEXT_MARK,
    G_PENDING,
    G_PENDING_TS,
    G_STARTED,
    G_VCLOCK,
    JIT,
    K_ACK_NS,
    K_FEED_MULT,
    K_LAT_MODE,
    K_LOT,
    K_MAKER_BPS,
    K_MARK_NS,
    K_QUEUE_MODEL,
    K_QUEUE_POWER,
    K_RULES,
    K_TAKER_BPS,
    K_TICK,
    NO_ACTIONS,
    NO_BLOCKS,
    NO_FILLS,
    NO_MARK_TS,
    NO_MARKS,
    Ctl,
)
from mm_sim.core.quote import (
    QM_BND_A,
    QM_BND_B,
    QM_LOTS_A,
    QM_LOTS_B,
    QM_VALID,
    VOL_VAR,
)
from mm_sim.core.strategy import _leg, decide
from mm_sim.core.timeline import (
    ITEM_FLAGS,
    ITEM_S,
    ITEM_SYNC,
    ITEM_V,
    KIND_BITS,
    T_LMAX,
    T_NB,
    T_SHEAD,
    T_VN,
    TimelineArrays,
    compact,
    next_item,
)
from mm_sim.core.venue_state import (
    BOOK_BST,
    O_PX,
    O_SIDE,
    O_STATUS,
    OS_RESTING,
    OUT_MARKS,
    OUT_NOUT,
    RULE_DECIDE_EACH_EVENT,
    VN_ACC,
    VN_CNT,
    VN_LIVE,
    VN_OI,
    VN_PF,
    VN_PI,
    VN_VS,
    VS_DIRTY,
    VS_NLIVE,
    VS_NOPS,
    BookArrays,
    Out,
    Venue,
)
from mm_sim.events import (
    KIND_CLEAR,
    KIND_DEPTH,
    KIND_SNAPSHOT,
    KIND_TRADE,
)


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
def _marks_until(ts: int, mark_ns: int, book: BookArrays, ctl: Ctl, venue: Venue, out: Out) -> None:
    """Write the marks due by ``ts`` on the venue's clock (state before what happens at ts)."""
    g = ctl[CT_G]
    marks, nout = out[OUT_MARKS], out[OUT_NOUT]
    while g[G_NEXT_MARK] <= ts:
        write_mark(marks, nout[NO_MARKS], g[G_NEXT_MARK], book, ctl, venue)
        nout[NO_MARKS] += 1
        g[G_NEXT_MARK] += mark_ns


@njit(inline="always", **JIT)
def _next(
    two: bool, final: bool, live: bool, bound: int, i: int, j: int, nb: int, vn: int,
    tl: TimelineArrays, events: np.ndarray,
) -> tuple[int, int, int, int, int]:  # fmt: skip
    """The item after cursors ``i``, ``j`` as ``timeline.next_item`` gives it: the two
    cursors' walk, or with one cursor the next event (flags in its kind)."""
    if two:
        _ts, skey, vkey, vq, _tk = tl
        return next_item(final, live, bound, i, j, nb, vn, skey, vkey, vq)
    if i < events.shape[0]:
        return i, events[i].kind & ITEM_FLAGS, 0, i + 1, 0
    return -1, 0, 0, i, 0


@njit(inline="always", **JIT)
def _tick(two: bool, tk: np.ndarray, b: int, price: float, tick: float) -> tuple[int, bool]:
    """Item ``b``'s price on the tick grid and whether it has one (0 when not): taken with the
    event by the timeline, divided here with one cursor."""
    t = tk[b] if two else tick_of(price, tick)
    return (t, True) if t != OFF_GRID else (0, False)


@njit(inline="always", **JIT)
def _room(fill_margin: int, out: Out) -> bool:
    """Whether the output buffers have room for one more item and a decision after it."""
    fills, actions, blocks, _marks, nout = out
    return (
        fills.shape[0] - nout[NO_FILLS] >= fill_margin
        and actions.shape[0] - nout[NO_ACTIONS] >= DECISION_MARGIN
        and blocks.shape[0] - nout[NO_BLOCKS] >= DECISION_MARGIN
    )


@njit(inline="always", **JIT)
def _book_event(
    kind: int, side: int, t: int, on_grid: bool, price: float, qty: float, tick: float,
    book: BookArrays,
) -> None:  # fmt: skip
    """One book takes a depth, snapshot or clear event (trades change no book: the venue's
    depth diffs carry what they took)."""
    bid, ask, st = book
    if on_grid:
        book_apply_tick(bid, ask, st, kind, side, t, qty)
    else:
        book_apply(bid, ask, st, tick, kind, side, price, qty)


@njit(inline="always", **JIT)
def _venue_event(
    kind: int, side: int, t: int, on_grid: bool, price: float, qty: float, exch: int,
    terms: tuple, vbook: BookArrays, venue: Venue, out: Out,
) -> None:  # fmt: skip
    """The venue part of an event once its arrivals are processed: a trade may fill our
    orders; a book update changes the venue's book and our queue positions."""
    vs = venue[VN_VS]
    if kind == KIND_TRADE:
        if vs[VS_NLIVE] > 0:
            on_trade(side, t, qty, exch, vbook, terms, venue, out)
    else:
        _book_event(kind, side, t, on_grid, price, qty, terms[0], vbook)
        if vs[VS_NLIVE] > 0 and kind in (KIND_DEPTH, KIND_SNAPSHOT):
            on_depth(side, t, qty, exch, vbook, terms, venue, out)


@njit(inline="always", **JIT)
def _strategy_event(
    kind: int, side: int, t: int, on_grid: bool, price: float, qty: float, tick: float,
    apply: bool, recentres: int, sbook: BookArrays, qmi: np.ndarray,
) -> None:  # fmt: skip
    """The strategy's book takes the event (``apply``: its own book, two clocks); the quote
    memo is dropped when the update can move the targets, or when the book's window moved
    since it counted ``recentres`` (in file order the venue's update of the one book may
    have moved it)."""
    if kind == KIND_TRADE:
        return
    sbst = sbook[2]
    if apply:
        _book_event(kind, side, t, on_grid, price, qty, tick, sbook)
    if kind == KIND_CLEAR or sbst[ST_RECENTRES] != recentres:
        qmi[QM_VALID] = 0
    elif side > 0:
        if t >= qmi[QM_BND_B]:
            qmi[QM_LOTS_B] = 0
    elif t <= qmi[QM_BND_A]:
        qmi[QM_LOTS_A] = 0


@njit(inline="always", **JIT)
def _batch_ends(
    per_ts: bool, kind: int, local: int, b2: int, f2: int, settle: int, events: np.ndarray,
    g: np.ndarray,
) -> bool:  # fmt: skip
    """Whether the strategy decides after this item: a batch (same ``local_ts``: one message,
    a snapshot) is seen once complete, and the next item tells whether it continues; a batch
    that reaches the end of the items waits for the next call (``G_PENDING``) unless
    ``settle``."""
    if not (per_ts or kind in (KIND_CLEAR, KIND_SNAPSHOT)):
        return True
    if b2 >= 0:
        nxt = events[b2]
        return not (
            (f2 == 0 or (f2 & ITEM_S) != 0)
            and nxt.local_ts == local
            and (per_ts or nxt.kind & KIND_BITS == KIND_SNAPSHOT)
        )
    if settle == 0:
        g[G_PENDING] = 1
        g[G_PENDING_TS] = local
        return False
    return True


@njit(**JIT)
def run_chunk(
    events: np.ndarray,
    start: int,
    tl: TimelineArrays,
    window: int,
    final: bool,
    live: bool,
    vbook: BookArrays,
    sbook: BookArrays,
    ctl: Ctl,
    venue: Venue,
    out: Out,
    fill_margin: int,
    settle: int,
) -> int:
    """Process items until none is left or an output buffer runs short.

    Two clocks (``tl`` non-empty: the timeline's arrays, ``events`` its buffer): the items are
    the two cursors' walk over the buffer (``timeline.next_item``), made here one at a time
    rather than written out first; returns 1 when no item can go out any more, 0 when a
    buffer ran short (the cursors are kept in the timeline; call again once it has grown).
    ``window``, ``final`` and ``live`` are ``next_item``'s. One cursor (``tl`` empty): the
    items are ``events[start:]``, flags in their kind (none in the file-order model, where
    ``vbook`` and ``sbook`` are the same arrays); returns the index of the first item not
    processed.

    A decision whose batch reaches the last item waits for the next call, which may continue
    the batch (results then do not depend on how a feed is sliced); ``settle=1`` takes it at
    once: the end of a flushed run, and the live path, whose items are whole messages.
    """
    sbst = sbook[2]
    tts, tk = tl[0], tl[4]
    two = tts.shape[0] > 0
    p, g, qmi = ctl[CT_P], ctl[CT_G], ctl[CT_QMI]
    oi, live_o, vs, cnt = venue[VN_OI], venue[VN_LIVE], venue[VN_VS], venue[VN_CNT]
    pi, pf = venue[VN_PI], venue[VN_PF]
    marks, nout = out[OUT_MARKS], out[OUT_NOUT]
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
    # One decision per local timestamp (everything received at once is applied first), or
    # one per event with only snapshot batches grouped (docs/CORE.md, "Decision points").
    per_ts = rules & RULE_DECIDE_EACH_EVENT == 0
    qmi[QM_VALID] = 0  # parameters may have been hot-swapped since the last call
    # The current item (b, flags, venue time) and the cursors before (ci, cj) and after it.
    n = events.shape[0]
    nb = 0
    vn = 0
    bound = 0
    ci = start
    cj = 0
    if two:
        nb = tts[T_NB]
        vn = tts[T_VN]
        bound = tts[T_LMAX] - window
        ci = tts[T_SHEAD]
    b, flags, vt, ni, nj = _next(two, final, live, bound, ci, cj, nb, vn, tl, events)
    # A message's events on one side (a depth diff's levels, a snapshot) are consecutive items
    # at one time: venue items at one venue time, synced strategy items at one local_ts. What
    # the first of them did for that time (marks, arrivals, reports, releases) has nothing
    # left to do for the others, which take only their event (NKNUSDT's 1,609-level
    # snapshot: 85 -> 66 us; the cold compile 20 -> 36 s, docs/CORE.md "Speed"). The flags
    # and time of the run the next item may continue (-1: none):
    run_flags = -1
    run_ts = 0
    while b >= 0:
        ev = events[b]
        local = ev.local_ts
        # (decide is inlined once, at the end of the loop: a second copy doubled the compile)
        fast = False
        now_decide = False
        decide_at = local
        if flags == run_flags and (vt if flags == ITEM_V else local) == run_ts:
            kind = ev.kind & KIND_BITS
            if flags == ITEM_V:
                idle = vs[VS_NLIVE] == 0
                if idle or _room(fill_margin, out):
                    t, on_grid = _tick(two, tk, b, ev.price, tick)
                    lag = local - vt
                    if lag < 0:
                        lag = 0
                    delay = 0 if idle else _leg(mode, p[K_ACK_NS], p[K_FEED_MULT], lag)
                    terms = (tick, lot, maker_bps, taker_bps, delay, qmodel, qpower, rules)
                    _venue_event(kind, ev.side, t, on_grid, ev.price, ev.qty, vt, terms,
                                 vbook, venue, out)  # fmt: skip
                    ci, cj = ni, nj
                    b, flags, vt, ni, nj = _next(two, final, live, bound, ni, nj, nb, vn, tl,
                                                 events)  # fmt: skip
                    continue
            elif _room(fill_margin, out):
                t, on_grid = _tick(two, tk, b, ev.price, tick)
                lag = local - ev.exch_ts
                g[G_LAG] = lag if lag > 0 else 0
                _strategy_event(kind, ev.side, t, on_grid, ev.price, ev.qty, tick, True,
                                sbst[ST_RECENTRES], sbook, qmi)  # fmt: skip
                b2, f2, vt2, ni2, nj2 = _next(two, final, live, bound, ni, nj, nb, vn, tl,
                                              events)  # fmt: skip
                now_decide = _batch_ends(per_ts, kind, local, b2, f2, settle, events, g)
                g[G_LAST_LOCAL] = local
                cnt[C_EVENTS] += 1
                ci, cj = ni, nj
                b, flags, vt, ni, nj = b2, f2, vt2, ni2, nj2
                if not now_decide:
                    continue
                run_flags = -1
                fast = True
        if not fast:
            run_flags = -1
            exch = vt if two and flags & ITEM_V else ev.exch_ts
            kind = ev.kind & KIND_BITS
            # Unflagged items: one cursor, both sides at once (file order); no venue clock sync.
            on_v = flags == 0 or (flags & ITEM_V) != 0
            on_s = flags == 0 or (flags & ITEM_S) != 0
            if not _room(fill_margin, out):
                break
            # One pass of this loop either processes the item (and decides after it), or only
            # runs the decision of a batch that ended the previous slice, before the item.
            process = True
            if g[G_PENDING] == 1:
                g[G_PENDING] = 0
                if not (on_s and local == g[G_PENDING_TS] and (per_ts or kind == KIND_SNAPSHOT)):
                    process = False
                    decide_at = g[G_PENDING_TS]
            now_decide = not process
            if process:
                if g[G_STARTED] == 0:
                    g[G_NEXT_MARK] = -((-exch) // mark_ns) * mark_ns
                    g[G_STARTED] = 1
                # Marks due on the venue's clock: up to this item's venue time before the venue
                # part, up to local_ts (a synced strategy item) before the strategy part. Room for
                # all of them first, so an item is never left half-processed.
                vclock = exch if on_v else NO_MARK_TS
                if flags & ITEM_SYNC and local > vclock:
                    vclock = local
                if vclock >= g[G_NEXT_MARK]:
                    due = (vclock - g[G_NEXT_MARK]) // mark_ns + 1
                    if marks.shape[0] - nout[NO_MARKS] < due:
                        break
                # The next item, to tell whether a batch continues (and the one to run next).
                b2, f2, vt2, ni2, nj2 = _next(two, final, live, bound, ni, nj, nb, vn, tl, events)
                lag = local - exch
                if lag < 0:
                    lag = 0
                delay = _leg(mode, p[K_ACK_NS], p[K_FEED_MULT], lag)
                terms = (tick, lot, maker_bps, taker_bps, delay, qmodel, qpower, rules)
                t, on_grid = _tick(two, tk, b, ev.price, tick)
                recentres = sbst[ST_RECENTRES]
                if on_v:
                    _marks_until(exch, mark_ns, vbook, ctl, venue, out)
                    if vs[VS_NOPS] > 0:
                        venue_arrivals(exch, vbook, terms, venue, out)
                    _venue_event(kind, ev.side, t, on_grid, ev.price, ev.qty, exch, terms, vbook,
                                 venue, out)  # fmt: skip
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
                    _strategy_event(kind, ev.side, t, on_grid, ev.price, ev.qty, tick, flags != 0,
                                    recentres, sbook, qmi)  # fmt: skip
                    deliver_reports(local, fp)
                    if vs[VS_NOPS] > 0:
                        purge_ops(local, pi, pf, oi, vs)
                    if vs[VS_DIRTY] == 1:
                        sweep_free(oi, live_o, vs)
                    now_decide = _batch_ends(per_ts, kind, local, b2, f2, settle, events, g)
                    g[G_LAST_LOCAL] = local
                    cnt[C_EVENTS] += 1
                if flags == ITEM_V or (flags == ITEM_S | ITEM_SYNC and not now_decide):
                    run_flags = flags
                    run_ts = exch if flags == ITEM_V else local
                ci, cj = ni, nj
                b, flags, vt, ni, nj = b2, f2, vt2, ni2, nj2
        if now_decide:
            decide(decide_at, sbook, ctl, venue, out)
    if two:
        compact(ci, cj, tts, events, tl[1], tl[2], tl[3], tk)
        return 1 if b < 0 else 0
    return ci if b >= 0 else n


kernel_cache.bind(__name__, kernel_cache.CORE)  # before any kernel loads: kernel_cache.py
