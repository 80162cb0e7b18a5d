"""Per-line pieces of the capture converter's block kernel (binance_block.run_block): byte
literals, and the diff's events.

Why apart from fill_events: a capture's diffs can be a hundred levels on a side, where
fill_events.fill_diff's O(n^2) check of a price both removed and set was ~80 ns a level. (Trades,
spot and futures, are parsed by fastparse's ``_trade_payload``, the live client's kernel.)
"""

from __future__ import annotations

import numpy as np
from numba import njit

from mm_sim import kernel_cache
from mm_sim.venues.binance.fill_events import write_diff

MARKET = np.frombuffer(b"MARKET", dtype=np.uint8).copy()
AT_TRADE = np.frombuffer(b"@trade", dtype=np.uint8).copy()


@njit(cache=True)
def _strictly_monotonic(flat: np.ndarray, n: int) -> bool:
    """Whether the side's prices rise or fall strictly, so that none repeats: one pass, no
    sort (the sort and its allocation were a seventh of a spot capture's kernel time)."""
    if n < 2:
        return True
    up = flat[2] > flat[0]
    for i in range(1, n):
        a = flat[2 * (i - 1)]
        b = flat[2 * i]
        if not (b > a if up else b < a):
            return False
    return True


@njit(cache=True)
def _mixed(flat: np.ndarray, scratch: np.ndarray) -> bool:
    """Whether one price of this side is both removed (qty 0) and set in the same diff:
    fill_events' ``_deleted_and_set``, in O(n log n) instead of O(n^2) (a futures diff of a
    hundred levels was ~80 ns a level)."""
    n = flat.shape[0] // 2
    if _strictly_monotonic(flat, n):
        return False  # every price once (Binance sends each side sorted): none removed and set
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
    """fill_events.fill_diff with :func:`_mixed` for its check (a file's diffs can carry
    thousands of levels, where fill_diff's quadratic check is not cheap)."""
    keep = _mixed(bids, scratch) or _mixed(asks, scratch)
    return write_diff(rec, bids, asks, exch, local, 0, keep)


@njit(cache=True)
def same(buf: np.ndarray, a: int, b: int, lit: np.ndarray) -> bool:
    if b - a != lit.shape[0]:
        return False
    for k in range(lit.shape[0]):  # noqa: SIM110 (numba)
        if buf[a + k] != lit[k]:
            return False
    return True


kernel_cache.bind(__name__, kernel_cache.BINANCE)  # before any kernel loads: kernel_cache.py
