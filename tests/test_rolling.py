"""The emergency rule's rolling net_bps against a record-at-a-time reference.

``Rolling.add`` skips the records its window would drop at once; what it keeps, and so the
net_bps the tuner reads, must be what appending every record and then trimming the front
gives, bit for bit, whatever the chunking, with marks without a mid, empty chunks, records out
of time order, and inverse contracts.
"""

from __future__ import annotations

import math

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from mm_sim.core.records import FILL_DTYPE, MARK_DTYPE
from mm_sim.runtime.rolling import ROLLING_WINDOW_NS, Rolling

MIN = 60 * 1_000_000_000


class Reference:
    """Every record appended one at a time, then the front trimmed to the horizon."""

    def __init__(self, csize: float) -> None:
        self.csize = csize
        self.equity: list[tuple[int, float]] = []
        self.fills: list[tuple[int, float]] = []

    def add(self, marks: np.ndarray, fills: np.ndarray) -> None:
        c = self.csize
        for r in marks:
            mid = float(r["mid"])
            if not math.isfinite(mid):
                continue
            pos = float(r["position"])
            value = -pos * c / mid if c > 0 else pos * mid
            self.equity.append((int(r["ts"]), float(r["cash"]) + value))
        for f in fills:
            q, px = float(f["qty"]), float(f["price"])
            self.fills.append((int(f["ts"]), q * c / px if c > 0 else q * px))
        if self.equity:
            horizon = self.equity[-1][0] - ROLLING_WINDOW_NS
            while self.equity and self.equity[0][0] < horizon:
                self.equity.pop(0)
            while self.fills and self.fills[0][0] < horizon:
                self.fills.pop(0)


def _chunk(rng: np.random.Generator, t0: int, minutes: int, shuffle: bool) -> tuple:
    n = minutes * 6
    marks = np.zeros(n, dtype=MARK_DTYPE)
    marks["ts"] = t0 + np.arange(n, dtype=np.int64) * 10_000_000_000
    marks["mid"] = 100.0 + rng.normal(0, 1, n)
    marks["mid"][rng.random(n) < 0.1] = np.nan
    marks["cash"] = rng.normal(0, 50, n)
    marks["position"] = rng.normal(0, 2, n)
    k = int(rng.integers(0, 3 * minutes + 1))
    fills = np.zeros(k, dtype=FILL_DTYPE)
    fills["ts"] = np.sort(t0 + rng.integers(0, max(n, 1) * 10_000_000_000, k))
    fills["qty"] = rng.random(k) + 0.01
    fills["price"] = 100.0 + rng.normal(0, 1, k)
    if shuffle:
        rng.shuffle(marks)
        rng.shuffle(fills)
    return marks, fills


@settings(max_examples=60, deadline=None)
@given(
    st.lists(st.integers(0, 40), min_size=1, max_size=8),
    st.integers(0, 2**32 - 1),
    st.booleans(),
    st.sampled_from([0.0, 100.0]),
)
def test_rolling_keeps_what_appending_then_trimming_keeps(
    minutes: list[int], seed: int, shuffle: bool, csize: float
) -> None:
    rng = np.random.default_rng(seed)
    got, want = Rolling(csize), Reference(csize)
    t = 0
    for m in minutes:
        marks, fills = _chunk(rng, t, m, shuffle)
        got.add(marks, fills)
        want.add(marks, fills)
        assert list(got.equity) == want.equity
        assert list(got.fills) == want.fills
        t += m * MIN
    a, b = got.net_bps()
    notional = sum(n for _, n in want.fills)
    if len(want.equity) >= 2 and notional > 0:
        assert a == (want.equity[-1][1] - want.equity[0][1]) / notional * 1e4
    else:
        assert math.isnan(a)
    assert b == len(want.fills)


def test_a_long_chunk_keeps_only_the_last_five_minutes() -> None:
    rng = np.random.default_rng(1)
    r = Rolling()
    marks, fills = _chunk(rng, 0, 30, False)
    marks["mid"] = 100.0
    r.add(marks, fills)
    horizon = int(marks["ts"][-1]) - ROLLING_WINDOW_NS
    assert r.equity[0][0] == horizon and len(r.equity) == 31
    assert all(ts >= horizon for ts, _ in r.fills)
