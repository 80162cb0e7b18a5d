"""Two cursors over one feed: the venue in exchange-time order, the strategy in local-time order.

A feed is stored in local receive order. On real captures that is not exchange order (trades
and depth diffs come on different streams; 12 % of spot trades arrive after an event with a
later exchange time), so a single cursor lets a print that happened before our order reached
the exchange fill it, and a cancel win a race it lost. The reference backtesters let the venue
read the feed in exchange-time order and the strategy in local-time order, with orders and
fill reports travelling between the two on their latencies. This module keeps the state of
that merge and defines its *items*, which the driver makes one at a time (``next_item``) and
runs as it goes, rather than writing them out first: copying every event out twice and reading
it back cost 6-16 % of the two-clock core (docs/CORE.md, "Two clocks"):

- a **venue item** (``ITEM_V``) is event ``j`` seen by the venue at its venue time
  ``vt_j = max(exch_j, L_j - W)``, where ``L_j`` is the running maximum of ``local_ts`` up to
  ``j`` and ``W`` the reorder window: an event received more than ``W`` after it happened is
  matched as if it happened ``W`` before its receipt (counted as *clamped*; with clock-corrected
  feeds this is rare). The item's ``exch_ts`` is ``vt_j``;
- a **strategy item** (``ITEM_S``) is event ``i`` seen by the strategy at ``L_i``. With
  ``ITEM_SYNC`` the venue's clock has reached ``L_i``: every venue item up to that time has been
  emitted, so the driver may process order arrivals and marks up to ``L_i`` first;
- items are ordered by time, venue before strategy on a tie, then by feed position. A venue
  item immediately followed by the strategy item of the same event is one item (both flags).

Streaming: the events still to come have ``L >= L_max`` and hence venue times
``>= L_max - W``, so everything earlier than that bound can go out and the rest is held for
the next call (at most ``W`` of feed). ``final`` lets everything out. Results therefore do not
depend on how a feed is sliced between two ``final`` calls.

The live path cannot hold the strategy back by ``W`` (it decides on arrival), so it uses
``live=True``: strategy items go out at once, venue items when the bound has passed them. While
a venue item waits, the strategy items behind it go out without ``ITEM_SYNC`` (the venue lags
the strategy by up to ``W``, and a fill report by as much); in order, they are synced as in
replay. The live window is therefore small (``matching.live_reorder_window_ms``).

Events without flags (``kind`` below ``ITEM_V``) are the file-order model: one cursor, both
sides at once (``matching.event_order = file``).

The timeline also keeps each buffered event's price on the tick grid (``tk``, ``book.OFF_GRID``
for a price with no tick), computed once when the event is taken: the driver needs it on both of
the event's items, and the division was a tenth of a snapshot level's cost.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from numba import njit

from mm_sim import kernel_cache
from mm_sim.core.book import tick_of
from mm_sim.core.jitcall import entry_point
from mm_sim.core.records import copy_rows
from mm_sim.events import EVENT_DTYPE

# Like the driver's kernels, the per-item ones never allocate and are compiled without numba's
# reference counting (with it, they ran 3x slower); only the out-of-order merge, called when a
# slice is not in venue order already, allocates (np.argsort).
JIT: dict[str, Any] = {"cache": True, "_nrt": False}
JIT_ALLOC: dict[str, Any] = {"cache": True}

ITEM_V = 1 << 8  # the venue processes this event (at exch_ts, the venue time)
ITEM_S = 1 << 9  # the strategy processes this event (at local_ts)
ITEM_SYNC = 1 << 10  # the venue's clock has reached this item's local_ts
ITEM_FLAGS = ITEM_V | ITEM_S | ITEM_SYNC
KIND_BITS = ITEM_V - 1  # the event kind under the flags

# Timeline scalars ts[:] (int64)
T_LMAX = 0  # running max of local_ts over the events taken so far
T_NB = 1  # events in the buffer (not yet emitted to both sides)
T_SHEAD = 2  # buffer events whose strategy item has been emitted (a prefix)
T_VN = 3  # pending venue items in vq (buffer indexes in venue-time order)
T_CLAMPED = 4  # events whose venue time was clamped to L - W
T_STARTED = 5
T_SIZE = 6

# The entry point of _take (core/jitcall.py), made on first use: the dispatcher's typing of
# its arguments cost more than the keys of a live frame.
_ENTRY: list[Any] = []

# The driver's view of the merge state: ts, skey, vkey, vq, tk (empty arrays: one cursor).
TimelineArrays = tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]


# A timeline's arrays before its first slice sizes them.
_NO_BUF = np.empty(0, dtype=EVENT_DTYPE)
_NO_KEYS = np.empty(0, dtype=np.int64)

NEG_INF = -(1 << 62)
BIG = 1 << 62


@njit(inline="always", **JIT)
def _copy(dst: np.ndarray, d: int, src: np.ndarray, s: int, exch: int, flags: int) -> None:
    """Record ``src[s]`` into ``dst[d]`` with ``exch_ts`` set to ``exch`` and ``flags`` or-ed
    into its kind (flags and kinds stay below 2**31)."""
    r = src[s]
    o = dst[d]
    o.exch_ts = exch
    o.local_ts = r.local_ts
    o.price = r.price
    o.qty = r.qty
    o.kind = r.kind | flags
    o.side = r.side


@njit(**JIT)
def ticks_of(buf: np.ndarray, n: int, tick: float, tk: np.ndarray) -> None:
    """``tk[:n]`` for the first ``n`` buffered events (a restored checkpoint's)."""
    for k in range(n):
        tk[k] = tick_of(buf[k].price, tick)


@njit(**JIT)
def _take(
    new: np.ndarray,
    window: int,
    tick: float,
    ts: np.ndarray,
    buf: np.ndarray,
    skey: np.ndarray,
    vkey: np.ndarray,
    vq: np.ndarray,
    tk: np.ndarray,
) -> bool:
    """Append the events of ``new`` to the buffer (positions ``T_NB`` on) with their keys and
    ticks and, when they are in venue order, their venue items to ``vq``; False leaves that to
    ``_merge_new``."""
    n = new.shape[0]
    nb = ts[T_NB]
    vn = ts[T_VN]
    lmax = ts[T_LMAX] if ts[T_STARTED] == 1 else NEG_INF
    last = vkey[vq[vn - 1]] if vn > 0 else NEG_INF
    in_order = True
    for k in range(n):
        b = nb + k
        _copy(buf, b, new, k, new[k].exch_ts, 0)
        tk[b] = tick_of(new[k].price, tick)
        local = new[k].local_ts
        if local > lmax:
            lmax = local
        skey[b] = lmax
        v = new[k].exch_ts
        if v < lmax - window:
            v = lmax - window
            ts[T_CLAMPED] += 1
        vkey[b] = v
        # The common case: venue order is feed order from the pending items on (otherwise
        # _merge_new rewrites vq, reading only its first T_VN entries).
        vq[vn + k] = b
        if v < last:
            in_order = False
        last = v
    ts[T_LMAX] = lmax
    ts[T_STARTED] = 1
    ts[T_NB] = nb + n
    if in_order:
        ts[T_VN] = vn + n
    return in_order


# Element moves an insertion sort may make per event before _merge_new sorts the slice with a
# merge sort instead (a feed far out of exchange order).
SHIFTS_PER_EVENT = 8


@njit(**JIT)
def _insertion_order(keys: np.ndarray, order: np.ndarray, budget: int) -> bool:
    """``order[:n]`` = the stable sort order of ``keys`` by insertion, False once more than
    ``budget`` moves were needed. Why: a capture is out of exchange order only where a stream
    arrives late behind another (a trade behind the depth diffs sent after it, 12 % of spot
    trades, ~80 ms back), so each late event moves past a few others and the sort costs about
    one pass, where a merge sort costs log2(n) passes and allocates."""
    n = keys.shape[0]
    moves = 0
    for k in range(n):
        key = keys[k]
        m = k
        while m > 0 and keys[order[m - 1]] > key:  # strict: feed order on a tie
            order[m] = order[m - 1]
            m -= 1
        order[m] = k
        moves += k - m
        if moves > budget:
            return False
    return True


@njit(**JIT_ALLOC)
def _merge_new(
    n: int, ts: np.ndarray, vkey: np.ndarray, vq: np.ndarray, tmp: np.ndarray, order: np.ndarray
) -> None:
    """Put the venue items of the last ``n`` buffer events into ``vq`` in venue-time order when
    they are not in it already: sorted (stable: feed order on a tie; each stream of a capture
    is in order by itself, so few events are out of place), then merged with the pending
    ones, which are earlier in the feed and so go first on a tie."""
    nb = ts[T_NB] - n
    vn = ts[T_VN]
    keys = vkey[nb : nb + n]
    if not _insertion_order(keys, order, SHIFTS_PER_EVENT * n):
        order[:n] = np.argsort(keys, kind="mergesort")
    a = 0
    c = 0
    w = 0
    while a < vn or c < n:
        if c >= n or (a < vn and vkey[vq[a]] <= vkey[nb + order[c]]):
            tmp[w] = vq[a]
            a += 1
        else:
            tmp[w] = nb + order[c]
            c += 1
        w += 1
    for k in range(w):
        vq[k] = tmp[k]
    ts[T_VN] = w


@njit(inline="always", **JIT)
def next_item(
    final: bool,
    live: bool,
    bound: int,
    i: int,
    j: int,
    nb: int,
    vn: int,
    skey: np.ndarray,
    vkey: np.ndarray,
    vq: np.ndarray,
) -> tuple[int, int, int, int, int]:
    """The item after cursors ``i`` (the strategy's next buffer event) and ``j`` (the venue's
    next entry of ``vq``): ``(b, flags, vt, i', j')``, buffer event ``b`` with its flags and,
    for a venue item, its venue time; ``b < 0`` when no item can go out yet (a later event
    could still precede it) or none is left. ``bound``: the venue times no event still to come
    can precede (``T_LMAX - window``); ``final`` emits everything."""
    vk = vkey[vq[j]] if j < vn else BIG
    sk = skey[i] if i < nb else BIG
    if vk <= sk:
        if j >= vn:  # (then i >= nb too: nothing left)
            return -1, 0, 0, i, j
        if not (final or vk <= bound):
            # A later event could still precede the venue's item: it waits. Replay waits with
            # it; live, the strategy does not (its items go out unsynced: the venue lags).
            if not live or i >= nb:
                return -1, 0, 0, i, j
            return i, ITEM_S, 0, i + 1, j
        b = vq[j]
        if i == b and (final or live or sk < bound) and (j + 1 >= vn or vkey[vq[j + 1]] > sk):
            # The strategy item of the same event comes next: one item for both.
            return b, ITEM_V | ITEM_S | ITEM_SYNC, vk, i + 1, j + 1
        return b, ITEM_V, vk, i, j + 1
    # The strategy's item is next: every venue item up to its time has gone out.
    if not (final or live or sk < bound):
        return -1, 0, 0, i, j
    return i, ITEM_S | ITEM_SYNC, 0, i + 1, j


@njit(**JIT)
def compact(
    i: int, j: int, ts: np.ndarray, buf: np.ndarray, skey: np.ndarray, vkey: np.ndarray,
    vq: np.ndarray, tk: np.ndarray,
) -> None:  # fmt: skip
    """Drop what both sides have seen, once the cursors stand at ``i`` and ``j``: the buffer
    keeps the events one side has not seen yet, from the first of them on."""
    nb = ts[T_NB]
    vn = ts[T_VN]
    lo = i
    for k in range(j, vn):
        if vq[k] < lo:
            lo = vq[k]
    if lo > 0:
        for k in range(lo, nb):
            _copy(buf, k - lo, buf, k, buf[k].exch_ts, 0)
            skey[k - lo] = skey[k]
            vkey[k - lo] = vkey[k]
            tk[k - lo] = tk[k]
    for k in range(j, vn):
        vq[k - j] = vq[k] - lo
    ts[T_NB] = nb - lo
    ts[T_SHEAD] = i - lo
    ts[T_VN] = vn - j


@njit(**JIT)
def _list(
    final: bool, live: bool, window: int, ts: np.ndarray, buf: np.ndarray, skey: np.ndarray,
    vkey: np.ndarray, vq: np.ndarray, tk: np.ndarray, out: np.ndarray,
) -> int:  # fmt: skip
    """The items the driver would run, written out as records (``Timeline.items``)."""
    i = ts[T_SHEAD]
    j = 0
    w = 0
    while True:
        b, flags, vt, i, j = next_item(
            final, live, ts[T_LMAX] - window, i, j, ts[T_NB], ts[T_VN], skey, vkey, vq
        )
        if b < 0:
            break
        _copy(out, w, buf, b, vt if flags & ITEM_V else buf[b].exch_ts, flags)
        w += 1
    compact(i, j, ts, buf, skey, vkey, vq, tk)
    return w


class Timeline:
    """The merge state of one engine: the events not yet seen by both sides, their keys and the
    venue's order, and the clock bound. The driver walks the two cursors over it."""

    def __init__(self, window_ns: int, tick_size: float) -> None:
        self.window = int(window_ns)
        self.tick = float(tick_size)
        self.ts = np.zeros(T_SIZE, dtype=np.int64)
        # Sized by the first slice (a short feed's run paid 40 us to grow it); until then,
        # empty arrays shared by every timeline (each np.empty is ~0.3 us of a 2,000-event run).
        self.cap = 0
        self.buf = _NO_BUF
        self.skey = self.vkey = self.vq = self.tk = _NO_KEYS
        self._scratch: tuple[np.ndarray, np.ndarray] | None = None

    def _alloc(self, cap: int) -> None:
        # Nothing reads a position before writing it (rows and keys past T_NB, the order past
        # T_VN), so the arrays need no zeroing.
        self.cap = cap
        self.buf = np.empty(cap, dtype=EVENT_DTYPE)
        self.skey = np.empty(cap, dtype=np.int64)
        self.vkey = np.empty(cap, dtype=np.int64)
        self.vq = np.empty(cap, dtype=np.int64)
        self.tk = np.empty(cap, dtype=np.int64)
        self._scratch = None

    def _merge_scratch(self) -> tuple[np.ndarray, np.ndarray]:
        """``_merge_new``'s two work arrays, made when a slice first arrives out of venue
        order (in-order feeds never need them)."""
        if self._scratch is None:
            self._scratch = (np.empty(self.cap, dtype=np.int64), np.empty(self.cap, np.int64))
        return self._scratch

    def _reserve(self, n: int) -> None:
        nb = int(self.ts[T_NB])
        if nb + n <= self.cap:
            return
        keep = self.pending() if nb else None
        self._fit(nb + n)
        if keep is not None:
            self._restore(keep)

    def _fit(self, need: int) -> None:
        """New arrays for at least ``need`` events: the capacity doubles from 1,024, so a
        growing feed reallocates a logarithmic number of times. What they held is not kept."""
        cap = max(self.cap, 1024)
        while cap < need:
            cap *= 2
        self._alloc(cap)

    def take(self, events: np.ndarray) -> None:
        """Append the feed's next slice: a 1-d, C-contiguous, writeable, aligned EVENT_DTYPE
        array (the entry point's one kind; ``Engine.run`` and ``run_live`` make sure)."""
        n = len(events)
        if self.ts.item(T_NB) + n > self.cap:
            self._reserve(n)
        args = (self.window, self.tick, self.ts, self.buf, self.skey, self.vkey, self.vq, self.tk)
        if not _ENTRY:
            _ENTRY.append(entry_point(_take, events, *args))
        if n and not _ENTRY[0](events, *args):
            _merge_new(n, self.ts, self.vkey, self.vq, *self._merge_scratch())

    def arrays(self) -> TimelineArrays:
        """The driver's view of the merge state (``run_chunk``'s ``tl``); rebound after a
        ``take``, which may reallocate."""
        return self.ts, self.skey, self.vkey, self.vq, self.tk

    def items(self, events: np.ndarray, final: bool, live: bool = False) -> np.ndarray:
        """The items the driver would run after ``take(events)``, as records (flags or-ed into
        ``kind``, a venue item's venue time as its ``exch_ts``): what the two cursors do, for
        tests and inspection. An exchange-order engine whose timeline is detached runs such
        records as the items they are (a file-order engine has one book for both sides)."""
        if events.dtype != EVENT_DTYPE or events.ndim != 1:
            raise TypeError(f"expected a 1-d slice of EVENT_DTYPE records, got {events.dtype}")
        f = events.flags
        if not (f.c_contiguous and f.writeable and f.aligned and events.dtype.isalignedstruct):
            events = np.array(events, dtype=EVENT_DTYPE)
        self.take(events)
        out = np.zeros(2 * int(self.ts[T_NB]), dtype=EVENT_DTYPE)
        w = _list(final, live, self.window, self.ts, self.buf, self.skey, self.vkey, self.vq,
                  self.tk, out)  # fmt: skip
        return out[:w]

    @property
    def held(self) -> int:
        """Events whose strategy item is still held back."""
        return int(self.ts[T_NB] - self.ts[T_SHEAD])

    @property
    def clamped(self) -> int:
        return int(self.ts[T_CLAMPED])

    # -- checkpoint ---------------------------------------------------------------------------

    def pending(self) -> dict[str, np.ndarray]:
        nb, vn = int(self.ts[T_NB]), int(self.ts[T_VN])
        return {
            "tl_ts": self.ts.copy(),
            "tl_buf": copy_rows(self.buf[:nb]),
            "tl_skey": self.skey[:nb].copy(),
            "tl_vkey": self.vkey[:nb].copy(),
            "tl_vq": self.vq[:vn].copy(),
        }

    def _restore(self, d: dict[str, np.ndarray]) -> None:
        nb, vn = len(d["tl_buf"]), len(d["tl_vq"])
        if nb > self.cap:
            self._fit(nb)
        self.ts[:] = d["tl_ts"]
        self.buf[:nb] = d["tl_buf"]
        self.skey[:nb] = d["tl_skey"]
        self.vkey[:nb] = d["tl_vkey"]
        self.vq[:vn] = d["tl_vq"]
        ticks_of(self.buf, nb, self.tick, self.tk)

    def load(self, d: dict[str, np.ndarray]) -> None:
        self._restore({k: np.asarray(v) for k, v in d.items()})


TIMELINE_KEYS = ("tl_ts", "tl_buf", "tl_skey", "tl_vkey", "tl_vq")


kernel_cache.bind(__name__, kernel_cache.CORE)  # before any kernel loads: kernel_cache.py
