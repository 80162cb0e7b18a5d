"""The timeline's venue-order sort: insertion with a move budget, else a merge sort, both stable.

The order decides which event the venue sees first, so it must be exactly numpy's stable sort
(feed order on a tie) whichever path runs.
"""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from mm_sim.core.timeline import SHIFTS_PER_EVENT, Timeline, _insertion_order
from mm_sim.events import EVENT_DTYPE

keys = st.lists(st.integers(0, 40), min_size=0, max_size=200)


@settings(max_examples=200, deadline=None)
@given(keys)
def test_insertion_order_is_the_stable_sort(values: list[int]) -> None:
    k = np.array(values, dtype=np.int64)
    order = np.zeros(len(k), dtype=np.int64)
    assert _insertion_order(k, order, len(k) * len(k) + 1)
    assert order.tolist() == np.argsort(k, kind="stable").tolist()


def test_insertion_order_gives_up_past_its_budget() -> None:
    k = np.arange(100, dtype=np.int64)[::-1].copy()  # reversed: 4,950 moves
    order = np.zeros(100, dtype=np.int64)
    assert not _insertion_order(k, order, 1000)
    assert _insertion_order(k, order, 4950)
    assert order.tolist() == list(range(99, -1, -1))


def _feed(exch: np.ndarray) -> np.ndarray:
    ev = np.zeros(len(exch), dtype=EVENT_DTYPE)
    ev["exch_ts"] = exch
    ev["local_ts"] = np.maximum.accumulate(exch + 5)  # received in file order, some late
    ev["kind"] = 3
    ev["price"] = 100.0
    return ev


def _venue_order(ev: np.ndarray, slice_len: int) -> list[int]:
    """Feed positions (by their unique qty) in the order the venue sees them."""
    tl = Timeline(window_ns=1_000, tick_size=0.01)
    out = []
    for lo in range(0, len(ev), slice_len):
        items = tl.items(ev[lo : lo + slice_len], final=lo + slice_len >= len(ev))
        v = items[(items["kind"] & (1 << 8)) != 0]
        out.extend(v["qty"].astype(int).tolist())
    return out


def test_both_sort_paths_give_the_venue_the_same_order() -> None:
    """A few late events (insertion path) and a scrambled feed (past the budget: merge sort)."""
    rng = np.random.default_rng(5)
    for scramble in (0.01, 1.0):
        exch = np.arange(3000, dtype=np.int64) * 10
        late = rng.random(len(exch)) < scramble
        exch[late] -= rng.integers(0, 400, late.sum())
        ev = _feed(exch)
        ev["qty"] = np.arange(len(ev))
        want = np.argsort(np.maximum(exch, ev["local_ts"] - 1_000), kind="stable").tolist()
        for slice_len in (7, 500, 3000):
            assert _venue_order(ev, slice_len) == want
    assert SHIFTS_PER_EVENT >= 1
