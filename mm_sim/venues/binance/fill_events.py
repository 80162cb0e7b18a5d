"""Native events written straight into a record array from a frame's parsed levels.

Why a module of its own: the live stream processor (``processor.py``) and the capture converter
write the same DEPTH/SNAPSHOT events from the flat ``[price, qty, ...]`` arrays the parsers in
``fastparse.py`` leave, and the live path also stages single trades; each of these is one small
numba kernel so that a frame's events cost one compiled call, not a numpy assignment per field.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from numba import njit

from mm_sim import kernel_cache
from mm_sim.core.jitcall import entry_point
from mm_sim.events import EVENT_DTYPE, KIND_DEPTH, KIND_SNAPSHOT, KIND_TRADE


@njit(cache=True)
def fill_levels(
    rec: np.ndarray, start: int, flat: np.ndarray, side: int, kind: int, exch: int, local: int
) -> int:
    """Write the levels of ``flat`` (price, qty interleaved) as events ``rec[start:]``; returns
    the index after them. Reference: :func:`fill_levels_ref`."""
    n = flat.shape[0] // 2
    for i in range(n):
        r = rec[start + i]
        r.exch_ts = exch
        r.local_ts = local
        r.price = flat[2 * i]
        r.qty = flat[2 * i + 1]
        r.kind = kind
        r.side = side
    return start + n


def fill_levels_ref(
    rec: np.ndarray, start: int, flat: np.ndarray, side: int, kind: int, exch: int, local: int
) -> int:
    """Plain numpy reference of :func:`fill_levels`."""
    n = len(flat) // 2
    part = rec[start : start + n]
    part["exch_ts"] = exch
    part["local_ts"] = local
    part["price"] = flat[0::2]
    part["qty"] = flat[1::2]
    part["kind"] = kind
    part["side"] = side
    return start + n


@njit(cache=True)
def _deleted_and_set(flat: np.ndarray) -> bool:
    """Whether one price of this side is both deleted and set in the same diff."""
    n = flat.shape[0] // 2
    for i in range(n):
        if flat[2 * i + 1] == 0.0:
            for j in range(n):
                if flat[2 * j + 1] != 0.0 and flat[2 * j] == flat[2 * i]:
                    return True
    return False


@njit(cache=True)
def _fill_where(
    rec: np.ndarray, k: int, flat: np.ndarray, side: int, zero: bool, exch: int, local: int
) -> int:
    for i in range(flat.shape[0] // 2):
        q = flat[2 * i + 1]
        if (q == 0.0) == zero:
            r = rec[k]
            r.exch_ts = exch
            r.local_ts = local
            r.price = flat[2 * i]
            r.qty = q
            r.kind = KIND_DEPTH
            r.side = side
            k += 1
    return k


@njit(cache=True, inline="always")
def write_diff(
    rec: np.ndarray, bids: np.ndarray, asks: np.ndarray, exch: int, local: int, start: int,
    keep_order: bool,
) -> int:  # fmt: skip
    """A diff's levels as DEPTH events ``rec[start:]``, deletions of both sides first unless
    ``keep_order`` (one price of a side is both removed and set in this diff: reordering would
    change the book it leaves); returns the count. Callers choose how to check for that."""
    if keep_order:
        k = fill_levels(rec, start, bids, 1, KIND_DEPTH, exch, local)
        return fill_levels(rec, k, asks, -1, KIND_DEPTH, exch, local) - start
    k = _fill_where(rec, start, bids, 1, True, exch, local)
    k = _fill_where(rec, k, asks, -1, True, exch, local)
    k = _fill_where(rec, k, bids, 1, False, exch, local)
    return _fill_where(rec, k, asks, -1, False, exch, local) - start


@njit(cache=True)
def fill_diff(
    rec: np.ndarray, bids: np.ndarray, asks: np.ndarray, exch: int, local: int, start: int = 0
) -> int:
    """A diff's levels as DEPTH events ``rec[start:]``, deletions of both sides first (see
    :func:`mm_sim.venues.binance.messages.deletions_first`, its reference); returns the count.
    The check is quadratic in the diff's levels: a live frame has a few."""
    keep = _deleted_and_set(bids) or _deleted_and_set(asks)
    return write_diff(rec, bids, asks, exch, local, start, keep)


@njit(cache=True)
def put_one(
    rec: np.ndarray, i: int, exch: int, local: int, kind: int, side: int, price: float, qty: float
) -> None:
    """One event into ``rec[i]`` (a trade, a CLEAR): numpy's assignment of a tuple to a record
    costs several µs, this compiled call well under one."""
    r = rec[i]
    r.exch_ts = exch
    r.local_ts = local
    r.price = price
    r.qty = qty
    r.kind = kind
    r.side = side


# The compiled entry points (core.jitcall) of fill_diff and put_one for a writeable EVENT_DTYPE
# arena and flat, C-contiguous float64 level arrays, made on first use (``warm`` makes them
# before a stream opens): a dispatcher's typing of the arguments cost more than writing a
# frame's events.
_STAGE: list[Any] = []


def stage_kernels(rec: np.ndarray) -> list[Any]:
    """``[fill_diff, put_one]`` as entry points for arrays of ``rec``'s kind (see above)."""
    if not _STAGE:
        flat = np.zeros(2)
        _STAGE.append(entry_point(fill_diff, rec, flat, flat, 0, 0, 0))
        _STAGE.append(entry_point(put_one, rec, 0, 0, 0, 0, 0, 0.0, 0.0))
    return _STAGE


def warm() -> None:
    """Load (or compile) these kernels, in the forms the live stage calls them, before a stream
    opens: a first call inside it would stall the stream while numba loads them."""
    rec = np.empty(4, dtype=EVENT_DTYPE)
    flat = np.array([1.5, 2.0, 1.25, 0.0])
    fill_levels(rec, 0, flat, 1, KIND_SNAPSHOT, 1, 1)
    diff, one = stage_kernels(rec)
    diff(rec, flat, flat, 1, 1, 0)
    one(rec, 0, 1, 1, KIND_TRADE, 1, 1.5, 2.0)


kernel_cache.bind(__name__, kernel_cache.BINANCE)  # before any kernel loads: kernel_cache.py
