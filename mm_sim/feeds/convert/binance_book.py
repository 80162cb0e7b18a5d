"""The converter's touch book: the venue's light book (crossed-touch check) at O(1) per level.

Why not :class:`~mm_sim.venues.binance.sync.LightBook`: it keeps each side sorted in an array,
so a level far from the touch shifts the whole side. A futures depth stream touches levels all
over a book of thousands (USD-M BTCUSDT: ~5,000 a side, ~50 µs a diff). Only the touch decides
whether the book is crossed, so this book keeps the levels in a hash table and the touch in a
lazy max-heap per side: setting or removing a level is a table probe (and a heap push for a new
price); after a diff only the tops of the heaps are looked at (entries whose price left the
table are popped then). Same answers as ``LightBook`` and its reference ``LightBookRef``
(tests/test_convert_binance_book.py); the live client keeps ``LightBook``.

The state is plain numpy arrays so the converter's block kernel
(:mod:`mm_sim.feeds.convert.binance_block`) applies a diff in the same compiled call that parsed
it. Per side ``s`` (0 bids, 1 asks): ``keys[s]``/``qtys[s]``/``used[s]`` the open-addressing
table (used: 0 empty, 1 live, 2 removed), ``heap[s]``/``hslot[s]`` the heap of ``sign * price``
(best on top) and the slot each entry was stored in (an entry is live while that slot holds
its price), ``meta[s]`` = (live levels, live + removed slots, heap size).
"""

from __future__ import annotations

import numpy as np
from numba import njit

from mm_sim import kernel_cache
from mm_sim.venues.binance.messages import Level
from mm_sim.venues.binance.sync import LightBook

M_LIVE = 0
M_USED = 1
M_HEAP = 2

_EMPTY = 0
_LIVE = 1
_GONE = 2


_GOLDEN = -7046029254386353131  # 0x9E3779B97F4A7C15 as int64


@njit(cache=True)
def _find(keys: np.ndarray, used: np.ndarray, p: float, bits: int) -> tuple[int, int]:
    """(slot holding ``p`` or -1, first free slot on its probe path); ``bits``: p's bits."""
    mask = keys.shape[0] - 1
    h = bits * _GOLDEN
    i = (h ^ (h >> 32)) & mask
    free = -1
    while True:
        u = used[i]
        if u == _EMPTY:
            return -1, i if free < 0 else free
        if u == _GONE:
            if free < 0:
                free = i
        elif keys[i] == p:
            return i, free
        i = (i + 1) & mask


@njit(cache=True)
def _push(heap: np.ndarray, hslot: np.ndarray, n: int, k: float, slot: int) -> int:
    i = n
    while i > 0:
        parent = (i - 1) >> 1
        if heap[parent] >= k:
            break
        heap[i] = heap[parent]
        hslot[i] = hslot[parent]
        i = parent
    heap[i] = k
    hslot[i] = slot
    return n + 1


@njit(cache=True)
def _pop(heap: np.ndarray, hslot: np.ndarray, n: int) -> int:
    n -= 1
    k = heap[n]
    slot = hslot[n]
    i = 0
    while True:
        c = 2 * i + 1
        if c >= n:
            break
        if c + 1 < n and heap[c + 1] > heap[c]:
            c += 1
        if k >= heap[c]:
            break
        heap[i] = heap[c]
        hslot[i] = hslot[c]
        i = c
    heap[i] = k
    hslot[i] = slot
    return n


@njit(cache=True)
def _rebuild_heap(
    keys: np.ndarray, used: np.ndarray, heap: np.ndarray, hslot: np.ndarray, sign: float
) -> int:
    """The heap from the live levels only (drops the removed entries it accumulated)."""
    n = 0
    for i in range(keys.shape[0]):
        if used[i] == _LIVE:
            n = _push(heap, hslot, n, sign * keys[i], i)
    return n


@njit(cache=True)
def _side(
    keys: np.ndarray,
    qtys: np.ndarray,
    used: np.ndarray,
    heap: np.ndarray,
    hslot: np.ndarray,
    meta: np.ndarray,
    flat: np.ndarray,
    sign: float,
) -> None:
    """One side's levels (price, qty interleaved) in order: qty > 0 sets, anything else
    removes (as LightBook). Prices are > 0 (the parsers refuse others), so a price's bits
    identify it."""
    live = meta[M_LIVE]
    nused = meta[M_USED]
    nh = meta[M_HEAP]
    bits = flat.view(np.int64)
    for j in range(flat.shape[0] // 2):
        p = flat[2 * j]
        q = flat[2 * j + 1]
        at, free = _find(keys, used, p, bits[2 * j])
        if q > 0.0:
            if at >= 0:
                qtys[at] = q
            else:
                if used[free] == _EMPTY:
                    nused += 1
                used[free] = _LIVE
                keys[free] = p
                qtys[free] = q
                live += 1
                nh = _push(heap, hslot, nh, sign * p, free)
        elif at >= 0:
            used[at] = _GONE
            live -= 1
    meta[M_LIVE] = live
    meta[M_USED] = nused
    meta[M_HEAP] = nh


@njit(cache=True)
def _top(
    keys: np.ndarray,
    used: np.ndarray,
    heap: np.ndarray,
    hslot: np.ndarray,
    meta: np.ndarray,
    sign: float,
) -> float:
    """The side's best price (NaN when empty), popping heap entries whose slot no longer holds
    their price (removed, or reused by another)."""
    nh = meta[M_HEAP]
    while nh > 0:
        p = sign * heap[0]
        slot = hslot[0]
        if used[slot] == _LIVE and keys[slot] == p:
            meta[M_HEAP] = nh
            return p
        nh = _pop(heap, hslot, nh)
    meta[M_HEAP] = nh
    return np.nan


@njit(cache=True)
def fits(keys: np.ndarray, heap: np.ndarray, meta: np.ndarray, s: int, extra: int) -> bool:
    """Room for ``extra`` more levels on side ``s`` (table at most half full, heap room)."""
    return (
        2 * (meta[s, M_USED] + extra) <= keys.shape[1] and meta[s, M_HEAP] + extra <= heap.shape[1]
    )


@njit(cache=True)
def touch_apply(
    keys: np.ndarray,
    qtys: np.ndarray,
    used: np.ndarray,
    heap: np.ndarray,
    hslot: np.ndarray,
    meta: np.ndarray,
    fb: np.ndarray,
    fa: np.ndarray,
) -> int:
    """A diff's levels into the book: 1 when it is then crossed (best bid >= best ask), 0 when
    not, -1 when a side might outgrow its arrays (nothing changed: grow and call again)."""
    if not fits(keys, heap, meta, 0, fb.shape[0] // 2) or not fits(
        keys, heap, meta, 1, fa.shape[0] // 2
    ):
        return -1
    _side(keys[0], qtys[0], used[0], heap[0], hslot[0], meta[0], fb, 1.0)
    _side(keys[1], qtys[1], used[1], heap[1], hslot[1], meta[1], fa, -1.0)
    # Heaps keep removed prices until they surface: rebuild when mostly garbage.
    for s in range(2):
        if meta[s, M_HEAP] > 4 * meta[s, M_LIVE] + 256:
            sign = 1.0 if s == 0 else -1.0
            meta[s, M_HEAP] = _rebuild_heap(keys[s], used[s], heap[s], hslot[s], sign)
    if meta[0, M_LIVE] == 0 or meta[1, M_LIVE] == 0:
        return 0
    bid = _top(keys[0], used[0], heap[0], hslot[0], meta[0], 1.0)
    ask = _top(keys[1], used[1], heap[1], hslot[1], meta[1], -1.0)
    return 1 if bid >= ask else 0


class TouchBook(LightBook):
    """LightBook's answers (crossed after a diff, best bid/ask, the levels) from a hash table and
    lazy heaps; see the module docstring."""

    def __init__(self, capacity: int = 1024) -> None:
        cap = 1 << max(4, (2 * capacity - 1).bit_length())
        self.keys = np.zeros((2, cap))
        self.qtys = np.zeros((2, cap))
        self.used = np.zeros((2, cap), dtype=np.int8)
        self.heap = np.zeros((2, cap))
        self.hslot = np.zeros((2, cap), dtype=np.int64)
        self.meta = np.zeros((2, 3), dtype=np.int64)

    def clear(self) -> None:
        self.used[:] = _EMPTY
        self.meta[:] = 0

    def load(self, bids: list[Level], asks: list[Level]) -> None:
        self.clear()
        fb = np.array([x for p, q in bids if q > 0.0 for x in (p, q)], dtype=np.float64)
        fa = np.array([x for p, q in asks if q > 0.0 for x in (p, q)], dtype=np.float64)
        self.apply_flat(fb, fa)

    def apply_flat(self, fb: np.ndarray, fa: np.ndarray) -> bool:
        """Levels as flat float arrays (price, qty interleaved); whether the book is now
        crossed (best bid >= best ask)."""
        fb = np.ascontiguousarray(fb, dtype=np.float64)
        fa = np.ascontiguousarray(fa, dtype=np.float64)
        r = touch_apply(*self.arrays(), fb, fa)
        if r < 0:
            self.grow(len(fb) // 2 + len(fa) // 2)
            r = touch_apply(*self.arrays(), fb, fa)
        return r == 1

    def arrays(
        self,
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """(keys, qtys, used, heap, hslot, meta): the state touch_apply works on."""
        return self.keys, self.qtys, self.used, self.heap, self.hslot, self.meta

    def grow(self, extra: int) -> None:
        """Room for ``extra`` more levels per side: the table rehashed (removed slots dropped)
        at twice the live levels plus ``extra``, at least, and the heap rebuilt."""
        need = int(self.meta[:, M_LIVE].max()) + extra
        cap = max(self.keys.shape[1], 1 << (4 * need).bit_length())
        live = [self._levels(s) for s in (0, 1)]
        self.keys = np.zeros((2, cap))
        self.qtys = np.zeros((2, cap))
        self.used = np.zeros((2, cap), dtype=np.int8)
        self.heap = np.zeros((2, cap))
        self.hslot = np.zeros((2, cap), dtype=np.int64)
        self.meta = np.zeros((2, 3), dtype=np.int64)
        touch_apply(*self.arrays(), live[0], live[1])

    def _levels(self, s: int) -> np.ndarray:
        on = self.used[s] == _LIVE
        out = np.empty(2 * int(on.sum()))
        out[0::2] = self.keys[s][on]
        out[1::2] = self.qtys[s][on]
        return out

    def _side_dict(self, s: int) -> dict[float, float]:
        flat = self._levels(s)
        order = np.argsort(flat[0::2] * (1.0 if s == 0 else -1.0), kind="stable")
        p, q = flat[0::2][order], flat[1::2][order]
        return dict(zip(p.tolist(), q.tolist(), strict=True))

    @property
    def bids(self) -> dict[float, float]:
        return self._side_dict(0)

    @property
    def asks(self) -> dict[float, float]:
        return self._side_dict(1)

    def best_bid(self) -> float | None:
        if self.meta[0, M_LIVE] == 0:
            return None
        return float(
            _top(self.keys[0], self.used[0], self.heap[0], self.hslot[0], self.meta[0], 1.0)
        )

    def best_ask(self) -> float | None:
        if self.meta[1, M_LIVE] == 0:
            return None
        return float(
            _top(self.keys[1], self.used[1], self.heap[1], self.hslot[1], self.meta[1], -1.0)
        )


kernel_cache.bind(__name__, kernel_cache.BINANCE)  # before any kernel loads: kernel_cache.py
