"""Per-line pieces of the capture converter's block kernel (binance_block.run_block): a trade
parser that also takes futures trades, a byte comparison, and the diff's events.

Why apart from the live client's fastparse kernels: the converter reads futures trades too (``X``
= ``MARKET``; fastparse's trade kernel is the spot one the live path needs), and its diffs can
be a hundred levels on a side, where fill_events.fill_diff's O(n^2) check of a price both
removed and set was ~80 ns a level.
"""

from __future__ import annotations

import numpy as np
from numba import njit

from mm_sim.events import KIND_DEPTH
from mm_sim.venues.binance.fastparse import (
    _bool,
    _decimal,
    _int,
    _next_member,
    _string,
    _string_is,
)
from mm_sim.venues.binance.fill_events import _fill_where, fill_levels

# trade ints
X_E = 0
X_T = 1
X_HAS_T = 2
X_M = 3
X_SYM0 = 4
X_SYM1 = 5
X_X0 = 6  # X (order type) span; X_X1 < 0: no X
X_X1 = 7
X_TID = 8
X_SIZE = 9

_LBRACE = 123
_TRADE = np.frombuffer(b"trade", dtype=np.uint8).copy()
MARKET = np.frombuffer(b"MARKET", dtype=np.uint8).copy()
AT_TRADE = np.frombuffer(b"@trade", dtype=np.uint8).copy()


@njit(cache=True)
def trade_payload(buf: np.ndarray, i: int, ints: np.ndarray, vals: np.ndarray) -> int:
    """One flat ``trade`` object (spot: e E s t p q T m M; futures: e E T s t p q X m), keys
    once each, e E s t p q m required; the index after its ``}``, or -1."""
    n = buf.shape[0]
    if i >= n or buf[i] != _LBRACE:
        return -1
    j = i + 1
    seen = 0
    ints[X_X1] = -1
    while True:
        ke = _string(buf, j)
        if ke < 0 or ke + 1 >= n or buf[ke + 1] != 58 or ke - j - 1 != 1:
            return -1
        k0 = buf[j + 1]
        v = ke + 2
        if k0 == 101:  # e
            bit = 1
            j = _string_is(buf, v, _TRADE)
        elif k0 == 69:  # E
            bit = 2
            j = _int(buf, v, ints, X_E)
        elif k0 == 115:  # s
            bit = 4
            se = _string(buf, v)
            if se < 0:
                return -1
            ints[X_SYM0] = v + 1
            ints[X_SYM1] = se
            j = se + 1
        elif k0 == 116:  # t
            bit = 8
            j = _int(buf, v, ints, X_TID)
        elif k0 == 112:  # p
            bit = 16
            j = _decimal(buf, v, vals, 0, True)
        elif k0 == 113:  # q
            bit = 32
            j = _decimal(buf, v, vals, 1, False)
        elif k0 == 84:  # T
            bit = 64
            j = _int(buf, v, ints, X_T)
        elif k0 == 109:  # m
            bit = 128
            j = _bool(buf, v, ints, X_M)
        elif k0 == 77:  # M (ignored, but a boolean)
            bit = 256
            j = _bool(buf, v, ints, -1)
        elif k0 == 88:  # X
            bit = 512
            se = _string(buf, v)
            if se < 0:
                return -1
            ints[X_X0] = v + 1
            ints[X_X1] = se
            j = se + 1
        else:
            return -1
        j, seen = _next_member(buf, j, seen, bit)
        if j >= 0:
            continue
        if j == -1:
            return -1
        required = 1 | 2 | 4 | 8 | 16 | 32 | 128
        if seen & required != required:
            return -1
        ints[X_HAS_T] = 1 if seen & 64 else 0
        return -2 - j


@njit(cache=True)
def _mixed(flat: np.ndarray, scratch: np.ndarray) -> bool:
    """Whether one price of this side is both removed (qty 0) and set in the same diff:
    fastparse's ``_deleted_and_set``, in O(n log n) instead of O(n^2) (a futures diff of a
    hundred levels was ~80 ns a level)."""
    n = flat.shape[0] // 2
    z = 0
    for i in range(n):
        if flat[2 * i + 1] == 0.0:
            scratch[z] = flat[2 * i]
            z += 1
    if z == 0 or z == n:
        return False
    gone = np.sort(scratch[:z])
    for i in range(n):
        if flat[2 * i + 1] != 0.0:
            p = flat[2 * i]
            k = np.searchsorted(gone, p)
            if k < z and gone[k] == p:
                return True
    return False


@njit(cache=True)
def fill_diff_sorted(
    rec: np.ndarray,
    bids: np.ndarray,
    asks: np.ndarray,
    exch: int,
    local: int,
    scratch: np.ndarray,
) -> int:
    """fill_events.fill_diff (a diff's levels as DEPTH events, deletions of both sides first
    unless a price is both removed and set), with :func:`_mixed` for its check."""
    if _mixed(bids, scratch) or _mixed(asks, scratch):
        k = fill_levels(rec, 0, bids, 1, KIND_DEPTH, exch, local)
        return fill_levels(rec, k, asks, -1, KIND_DEPTH, exch, local)
    k = _fill_where(rec, 0, bids, 1, True, exch, local)
    k = _fill_where(rec, k, asks, -1, True, exch, local)
    k = _fill_where(rec, k, bids, 1, False, exch, local)
    return _fill_where(rec, k, asks, -1, False, exch, local)


@njit(cache=True)
def same(buf: np.ndarray, a: int, b: int, lit: np.ndarray) -> bool:
    if b - a != lit.shape[0]:
        return False
    for k in range(lit.shape[0]):  # noqa: SIM110 (numba)
        if buf[a + k] != lit[k]:
            return False
    return True
