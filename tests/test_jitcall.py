"""Compiled entry points are made once per kernel and kind of arguments, and only reused for
arguments numba would type the same way."""

from __future__ import annotations

from collections import namedtuple

import numpy as np
from numba import njit

from mm_sim.core.jitcall import _kind, entry_point


@njit(cache=False)
def _total(a: np.ndarray, scale: float) -> float:
    s = 0.0
    for x in a:
        s += x
    return s * scale


def test_same_kinds_share_one_entry_point_and_others_get_their_own() -> None:
    a = np.arange(5.0)
    fn = entry_point(_total, a, 2.0)
    assert fn(a, 2.0) == 20.0
    assert entry_point(_total, np.ones(3), 1.0) is fn  # another array of the same kind
    ro = np.arange(4.0)
    ro.flags.writeable = False
    strided = np.arange(10.0)[::2]
    others = [
        entry_point(_total, ro, 1.0),  # read-only: another numba type
        entry_point(_total, strided, 1.0),  # not contiguous
        entry_point(_total, np.arange(3, dtype=np.int64), 1.0),  # another dtype
    ]
    assert all(f is not fn for f in others)
    assert others[0](ro, 1.0) == 6.0 and others[1](strided, 1.0) == 20.0
    assert others[2](np.arange(3, dtype=np.int64), 1.0) == 3.0
    assert len(_total.overloads) == 4


def test_named_tuples_and_ints_beyond_int64_are_kinds_of_their_own() -> None:
    pair = namedtuple("pair", "a b")
    assert _kind((1.0, 2.0)) != _kind(pair(1.0, 2.0))  # numba: Tuple vs NamedTuple
    assert _kind(5) != _kind(1 << 63)  # int64 vs uint64
    assert _kind(5) == _kind(-(1 << 63)) and _kind(True) != _kind(1)
