"""L2 order book as price-level arrays indexed by tick, for numba kernels.

Why arrays and not a tree: an update is one store plus, rarely, a short scan for the new best
level, so the hot loop never allocates. The window covers ``n_ticks`` ticks around the price
where the book was first seen and re-centres (one in-place shift of the written range) when the
touch drifts near an edge, or when an update outside the window would become its side's best
level (the touch is never dropped). Other levels that fall outside the window are deep in the
book; they are dropped and counted in ``st[ST_DROPPED]`` so nothing disappears silently.

State lives in three arrays so it can be passed to any kernel and cached on disk by numba:
``bid[i]``/``ask[i]`` hold the quantity at tick ``st[ST_BASE] + i``; ``st`` holds the integers
named by the ``ST_*`` constants below.

``st[ST_DROPPED]`` counts what the window cost: one per update that fell outside a non-empty
book's window (ignored), one per level discarded when a re-centre pushed it out, and one per
update whose price is not a finite number of ticks (ignored). A quantity that is negative or NaN
is stored as 0 (the level is removed), so the arrays only ever hold finite values >= 0.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import numpy as np
from numba import njit

from mm_sim import kernel_cache
from mm_sim.events import KIND_CLEAR, KIND_DEPTH, KIND_SNAPSHOT

# Without numba's reference counting, like the driver that calls them: with it, every call
# increments and decrements each array's count (atomic operations), which cost more than an
# update. Nothing here allocates.
JIT: dict[str, Any] = {"cache": True, "_nrt": False}

ST_BASE = 0  # tick number of index 0
ST_BEST_BID = 1  # index of the best bid, -1 when the side is empty
ST_BEST_ASK = 2  # index of the best ask, -1 when the side is empty
ST_NBID = 3  # number of non-empty bid levels
ST_NASK = 4  # number of non-empty ask levels
ST_DROPPED = 5  # updates ignored outside the window + levels a re-centre pushed out
ST_LO = 6  # lowest index ever written since the last clear (bounds clears and shifts)
ST_HI = 7  # highest index ever written since the last clear
ST_INIT = 8  # 1 once the window has been placed
ST_RECENTRES = 9  # number of window shifts
ST_SIZE = 10

DEFAULT_TICKS = 1 << 20


class Book(NamedTuple):
    bid: np.ndarray
    ask: np.ndarray
    st: np.ndarray
    tick_size: float


def make_book(tick_size: float, n_ticks: int = DEFAULT_TICKS) -> Book:
    st = np.zeros(ST_SIZE, dtype=np.int64)
    st[ST_BEST_BID] = -1
    st[ST_BEST_ASK] = -1
    st[ST_LO] = n_ticks
    st[ST_HI] = -1
    return Book(np.zeros(n_ticks), np.zeros(n_ticks), st, float(tick_size))


@njit(inline="always", **JIT)
def price_to_tick(price: float, tick_size: float) -> int:
    return int(np.floor(price / tick_size + 0.5))


# tick_of's answer for a price that is not a finite number of ticks (NaN, infinite, absurd):
# every real tick index is below 4e18 in magnitude.
OFF_GRID = -(1 << 62)


@njit(inline="always", **JIT)
def tick_of(price: float, tick_size: float) -> int:
    """``price_to_tick``, or ``OFF_GRID`` when the price has no tick."""
    x = price / tick_size
    if abs(x) < 4.0e18:
        return int(np.floor(x + 0.5))
    return OFF_GRID


@njit(**JIT)
def _clear(bid: np.ndarray, ask: np.ndarray, st: np.ndarray) -> None:
    lo = st[ST_LO]
    hi = st[ST_HI]
    if hi >= lo:
        bid[lo : hi + 1] = 0.0
        ask[lo : hi + 1] = 0.0
    st[ST_BEST_BID] = -1
    st[ST_BEST_ASK] = -1
    st[ST_NBID] = 0
    st[ST_NASK] = 0
    st[ST_LO] = bid.shape[0]
    st[ST_HI] = -1


@njit(**JIT)
def _recentre(bid: np.ndarray, ask: np.ndarray, st: np.ndarray, centre_tick: int) -> None:
    """Shift the window so ``centre_tick`` sits in the middle; levels pushed out are dropped.

    The shift is done in place over the written range only (no allocation in the replay loop):
    moving entries down the array walks upwards and moving them up walks downwards, so a
    destination slot is always already read (or was never written) before it is overwritten.
    """
    n = bid.shape[0]
    new_base = centre_tick - n // 2
    shift = new_base - st[ST_BASE]  # old index i becomes i - shift
    if shift == 0:
        return
    lo = st[ST_LO]
    hi = st[ST_HI]
    new_lo = n
    new_hi = -1
    if hi >= lo:
        step = 1 if shift > 0 else -1
        first = lo if shift > 0 else hi
        for k in range(hi - lo + 1):
            i = first + k * step
            b = bid[i]
            a = ask[i]
            if b == 0.0 and a == 0.0:
                continue
            bid[i] = 0.0
            ask[i] = 0.0
            j = i - shift
            if 0 <= j < n:
                bid[j] = b
                ask[j] = a
                if j < new_lo:
                    new_lo = j
                if j > new_hi:
                    new_hi = j
            else:
                if b > 0.0:
                    st[ST_NBID] -= 1
                    st[ST_DROPPED] += 1
                if a > 0.0:
                    st[ST_NASK] -= 1
                    st[ST_DROPPED] += 1
    st[ST_BASE] = new_base
    st[ST_LO] = new_lo
    st[ST_HI] = new_hi
    st[ST_RECENTRES] += 1
    st[ST_BEST_BID] = _scan_bid(bid, new_hi) if st[ST_NBID] > 0 else -1
    st[ST_BEST_ASK] = _scan_ask(ask, new_lo, n) if st[ST_NASK] > 0 else -1


@njit(inline="always", **JIT)
def _scan_bid(bid: np.ndarray, start: int) -> int:
    i = start
    while i >= 0:
        if bid[i] > 0.0:
            return i
        i -= 1
    return -1


@njit(inline="always", **JIT)
def _scan_ask(ask: np.ndarray, start: int, n: int) -> int:
    i = start
    while i < n:
        if ask[i] > 0.0:
            return i
        i += 1
    return -1


@njit(**JIT)
def book_apply(
    bid: np.ndarray,
    ask: np.ndarray,
    st: np.ndarray,
    tick_size: float,
    kind: int,
    side: int,
    price: float,
    qty: float,
) -> None:
    """Apply one event. Trades do not change the book: the venue's depth diffs carry that."""
    t = tick_of(price, tick_size)
    if t == OFF_GRID:
        if kind == KIND_CLEAR:
            _clear(bid, ask, st)
        elif kind in (KIND_DEPTH, KIND_SNAPSHOT):
            # NaN, infinite or absurd price: no tick to store it at; ignore it, visibly.
            st[ST_DROPPED] += 1
        return
    book_apply_tick(bid, ask, st, kind, side, t, qty)


@njit(inline="always", **JIT)
def book_apply_tick(
    bid: np.ndarray, ask: np.ndarray, st: np.ndarray, kind: int, side: int, t: int, qty: float
) -> None:
    """``book_apply`` with the price already on the tick grid (``price_to_tick``), for a caller
    that needs the tick anyway: the division is the costly part of an update.

    Inlined where it is called: as a call, the driver's two updates per event (venue and
    strategy books) cost about three times the updates themselves (numba passes each array as
    seven words). Only the common case is inlined (a level update inside the placed window);
    clears, the first update and levels outside the window go to ``_apply_rare``."""
    i = t - st[ST_BASE]
    if (
        (kind != KIND_DEPTH and kind != KIND_SNAPSHOT)
        or st[ST_INIT] == 0
        or i < 0
        or i >= bid.shape[0]
    ):
        _apply_rare(bid, ask, st, kind, side, t, qty)
    else:
        _set_level(bid, ask, st, side, i, qty, False)


@njit(**JIT)
def _apply_rare(
    bid: np.ndarray, ask: np.ndarray, st: np.ndarray, kind: int, side: int, t: int, qty: float
) -> None:
    if kind == KIND_CLEAR:
        _clear(bid, ask, st)
        return
    if kind != KIND_DEPTH and kind != KIND_SNAPSHOT:
        return
    n = bid.shape[0]
    if st[ST_INIT] == 0:
        st[ST_BASE] = t - n // 2
        st[ST_INIT] = 1
    i = t - st[ST_BASE]
    if 0 <= i < n:
        _set_level(bid, ask, st, side, i, qty, False)
        return
    # Outside the window. An empty book has nothing to keep: move the window here. A level
    # that would become its side's best is the touch, not depth: move the window to it (around
    # both touches when they fit, else around it: the newest price wins). Anything else is far
    # from the touch and is dropped (counted).
    margin = n // 8
    live = qty > 0.0
    bb = st[ST_BEST_BID]
    ba = st[ST_BEST_ASK]
    if st[ST_NBID] == 0 and st[ST_NASK] == 0:
        _recentre(bid, ask, st, t)
    elif live and ((side > 0 and (bb < 0 or i > bb)) or (side <= 0 and (ba < 0 or i < ba))):
        opp = ba if side > 0 else bb
        centre = t
        if opp >= 0:
            o = st[ST_BASE] + opp
            if abs(t - o) <= n - 2 * margin:
                centre = (t + o) // 2
        _recentre(bid, ask, st, centre)
    else:
        st[ST_DROPPED] += 1
        return
    _set_level(bid, ask, st, side, t - st[ST_BASE], qty, True)  # at most one shift per event


@njit(inline="always", **JIT)
def _set_level(
    bid: np.ndarray, ask: np.ndarray, st: np.ndarray, side: int, i: int, qty: float, moved: bool
) -> None:
    """Set the level at index ``i`` (inside the window) to ``qty``; then, unless the window
    has just ``moved``, keep the touch away from the window's edges."""
    if not (qty > 0.0):  # negative or NaN: the level is gone
        qty = 0.0
    n = bid.shape[0]
    # Counts move by (new level) - (old level), branch-free; the best level moves only when
    # the update is on it or beyond it. (Written this way the update is ~4x faster than with
    # the count updates nested in the level branches: fewer mispredicted branches.) A level at
    # the best is never empty, so removing the best always finds it non-empty.
    live = qty > 0.0
    if side > 0:
        old = bid[i]
        bid[i] = qty
        st[ST_NBID] += np.int64(live) - np.int64(old > 0.0)
        if not live and i == st[ST_BEST_BID]:
            st[ST_BEST_BID] = _scan_bid(bid, i - 1) if st[ST_NBID] > 0 else -1
        elif live and i > st[ST_BEST_BID]:
            st[ST_BEST_BID] = i
    else:
        old = ask[i]
        ask[i] = qty
        st[ST_NASK] += np.int64(live) - np.int64(old > 0.0)
        if not live and i == st[ST_BEST_ASK]:
            st[ST_BEST_ASK] = _scan_ask(ask, i + 1, n) if st[ST_NASK] > 0 else -1
        elif live and (st[ST_BEST_ASK] < 0 or i < st[ST_BEST_ASK]):
            st[ST_BEST_ASK] = i
    if live:
        if i < st[ST_LO]:
            st[ST_LO] = i
        if i > st[ST_HI]:
            st[ST_HI] = i
    # Keep the touch away from the window edges so deep updates near it are not lost (the next
    # event does it if this one already moved the window).
    if moved:
        return
    margin = n // 8
    bb = st[ST_BEST_BID]
    ba = st[ST_BEST_ASK]
    if (bb >= 0 and (bb < margin or bb > n - margin)) or (
        ba >= 0 and (ba < margin or ba > n - margin)
    ):
        centre = bb if bb >= 0 else ba
        if bb >= 0 and ba >= 0:
            centre = (bb + ba) // 2
        _recentre(bid, ask, st, st[ST_BASE] + centre)


@njit(**JIT)
def book_apply_events(
    bid: np.ndarray, ask: np.ndarray, st: np.ndarray, tick_size: float, events: np.ndarray
) -> None:
    for k in range(events.shape[0]):
        e = events[k]
        book_apply(bid, ask, st, tick_size, e.kind, e.side, e.price, e.qty)


@njit(inline="always", **JIT)
def best_bid(bid: np.ndarray, st: np.ndarray, tick_size: float) -> float:
    """Best bid price, NaN when the side is empty."""
    i = st[ST_BEST_BID]
    if i < 0:
        return np.nan
    return (st[ST_BASE] + i) * tick_size


@njit(inline="always", **JIT)
def best_ask(ask: np.ndarray, st: np.ndarray, tick_size: float) -> float:
    i = st[ST_BEST_ASK]
    if i < 0:
        return np.nan
    return (st[ST_BASE] + i) * tick_size


@njit(inline="always", **JIT)
def mid_price(st: np.ndarray, tick_size: float) -> float:
    """Mid of the touch; NaN when either side is empty."""
    b = st[ST_BEST_BID]
    a = st[ST_BEST_ASK]
    if b < 0 or a < 0:
        return np.nan
    return (st[ST_BASE] * 2 + b + a) * tick_size * 0.5


@njit(inline="always", **JIT)
def qty_at(
    bid: np.ndarray, ask: np.ndarray, st: np.ndarray, tick_size: float, side: int, price: float
) -> float:
    """Visible quantity at ``price`` on ``side`` (0 outside the window)."""
    i = price_to_tick(price, tick_size) - st[ST_BASE]
    if i < 0 or i >= bid.shape[0]:
        return 0.0
    return bid[i] if side > 0 else ask[i]


@njit(**JIT)
def top_levels(
    bid: np.ndarray,
    ask: np.ndarray,
    st: np.ndarray,
    tick_size: float,
    side: int,
    n: int,
    out_px: np.ndarray,
    out_qty: np.ndarray,
) -> int:
    """Fill the best ``n`` levels of one side, best first; return how many exist."""
    count = 0
    if side > 0:
        i = st[ST_BEST_BID]
        while i >= st[ST_LO] and count < n:  # nothing is written outside [ST_LO, ST_HI]
            if bid[i] > 0.0:
                out_px[count] = (st[ST_BASE] + i) * tick_size
                out_qty[count] = bid[i]
                count += 1
            i -= 1
    else:
        i = st[ST_BEST_ASK]
        while 0 <= i <= st[ST_HI] and count < n:
            if ask[i] > 0.0:
                out_px[count] = (st[ST_BASE] + i) * tick_size
                out_qty[count] = ask[i]
                count += 1
            i += 1
    return count


# side_depth's bound when a side has fewer levels than asked: past every tick.
NO_BOUND = 1 << 62


@njit(**JIT)
def side_depth(
    bid: np.ndarray, ask: np.ndarray, bst: np.ndarray, side: int, n: int
) -> tuple[float, int]:
    """Visible quantity in the best ``n`` levels of one side (best first) and the tick of the
    last level counted; when the side has fewer than ``n`` levels the bound is open (any change
    on that side can alter the depth). The scan stops at the edge of the written range
    (``ST_LO``/``ST_HI``): on a side with fewer than ``n`` levels it walked the whole window,
    ~130,000 empty ticks per decision (a feed starting without a snapshot ran 30x slower)."""
    total = 0.0
    count = 0
    base = bst[ST_BASE]
    if side > 0:
        i = bst[ST_BEST_BID]
        lo = bst[ST_LO]
        while i >= lo and count < n:
            if bid[i] > 0.0:
                total += bid[i]
                count += 1
                if count == n:
                    return total, base + i
            i -= 1
        return total, -NO_BOUND
    i = bst[ST_BEST_ASK]
    hi = bst[ST_HI]
    while 0 <= i <= hi and count < n:
        if ask[i] > 0.0:
            total += ask[i]
            count += 1
            if count == n:
                return total, base + i
        i += 1
    return total, NO_BOUND


@njit(**JIT)
def depth_near_touch(bid: np.ndarray, ask: np.ndarray, st: np.ndarray, side: int, n: int) -> float:
    """Total visible quantity in the best ``n`` non-empty levels of one side."""
    return side_depth(bid, ask, st, side, n)[0]


kernel_cache.bind(__name__, kernel_cache.CORE)  # before any kernel loads: kernel_cache.py
