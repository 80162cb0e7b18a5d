"""ws_lag p95 from a replay's feed rows, with and without a memo, against the chunk-by-chunk way.

``IterationLag`` reads a replayed iteration's lags back from the feed at its end, and a sweep
worker keeps each iteration's figure for its next runs on the same feed. Both must give the bits
the soak computed before: the lags of each replayed chunk (shifted by the clock model, as
``shift_local`` shifts them), concatenated, 95th percentile. Any chunking, any shift, events
stamped with their receipt time only, empty chunks, and chunks that stop following each other.
"""

from __future__ import annotations

import asyncio
import itertools

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mm_sim.events import EVENT_DTYPE
from mm_sim.feeds.clock import shift_local
from mm_sim.runtime.bus import EventChunk
from mm_sim.runtime.feed_lag import IterationLag
from mm_sim.runtime.replay import plan_iterations, replay_chunks


def _feed(n: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    ev = np.zeros(n, dtype=EVENT_DTYPE)
    ev["exch_ts"] = 1_700_000_000_000_000_000 + np.cumsum(rng.integers(0, 3_000_000, n))
    lag = rng.integers(-1_300_000_000, 90_000_000, n)  # a recorder clock up to 1.3 s behind
    lag[rng.random(n) < 0.1] = 0  # receipt time only: moves with the shift, lag stays 0
    ev["local_ts"] = ev["exch_ts"] + lag
    return ev


def _reference(chunks: list[np.ndarray], shift: int) -> float:
    """The soak's computation before IterationLag: per replayed (shifted) chunk, then p95."""
    parts = []
    for ch in chunks:
        if len(ch):
            ch = shift_local(ch, shift) if shift else ch
            parts.append(np.divide(np.subtract(ch["local_ts"], ch["exch_ts"]), 1e6))
    lag = np.concatenate([np.zeros(0), *parts])
    return float(np.percentile(lag, 95)) if len(lag) else float("nan")


def _same(a: float, b: float) -> bool:
    return np.float64(a).tobytes() == np.float64(b).tobytes()


@settings(max_examples=60, deadline=None)
@given(
    n=st.integers(0, 400),
    seed=st.integers(0, 2**32 - 1),
    cuts=st.lists(st.integers(0, 400), max_size=8),
    shift=st.sampled_from([0, 1_270_000_000, -3_000_000]),
    gap=st.booleans(),
    live=st.booleans(),
)
def test_rows_and_memo_match_the_chunk_by_chunk_figure(
    n: int, seed: int, cuts: list[int], shift: int, gap: bool, live: bool
) -> None:
    feed = _feed(n, seed)
    bounds = sorted({0, n, *(min(c, n) for c in cuts)})
    spans = list(itertools.pairwise(bounds)) or [(0, 0)]
    gapped = gap and len(spans) > 2
    if gapped:
        spans.pop(1)  # rows that stop following each other
    chunks = [feed[lo:hi] for lo, hi in spans]
    want = _reference(chunks, shift)
    memo: dict[tuple[int, int], float] = {}
    for attempt in range(2):  # the second run reads the memo
        lag = IterationLag(feed, shift, memo)
        for k, (lo, hi) in enumerate(spans):
            events = shift_local(feed[lo:hi], shift) if shift else feed[lo:hi]
            rows = None if (live and k == len(spans) - 1) else (lo, hi)
            lag.add(EventChunk(0, events, k == len(spans) - 1, rows=rows))
        got = lag.p95()
        assert _same(got, want), (attempt, got, want)
    contiguous = not gapped and not live and n > 0
    assert bool(memo) == contiguous


def test_memo_is_by_rows_and_each_iteration_starts_afresh() -> None:
    feed = _feed(1000, 7)
    memo: dict[tuple[int, int], float] = {}
    lag = IterationLag(feed, 0, memo)
    lag.add(EventChunk(0, feed[:500], True, rows=(0, 500)))
    first = lag.p95()
    lag.add(EventChunk(1, feed[500:], True, rows=(500, 1000)))
    second = lag.p95()
    assert memo == {(0, 500): first, (500, 1000): second}
    assert _same(first, _reference([feed[:500]], 0))
    assert _same(second, _reference([feed[500:]], 0))
    assert not _same(first, second)
    assert np.isnan(IterationLag(feed, 0, memo).p95())  # no events: NaN, nothing kept
    assert len(memo) == 2


@pytest.mark.parametrize("shift", [0, 1_270_000_000])
def test_a_replay_through_the_soaks_chunks(shift: int) -> None:
    """The rows replay_chunks gives are the feed rows of its chunks, iteration by iteration."""
    feed = _feed(5000, 3)
    plan = plan_iterations(feed, 3, int(2e9))

    async def run() -> list[tuple[float, float]]:
        out = []
        lag = IterationLag(feed, shift, {})
        seen: list[np.ndarray] = []
        async for ch in replay_chunks(feed, plan, 97, chunk_ns=50_000_000, clock_shift_ns=shift):
            assert ch.rows is not None
            rows = feed[ch.rows[0] : ch.rows[1]]
            assert (shift_local(rows, shift) == ch.events).all()
            lag.add(ch)
            seen.append(feed[ch.rows[0] : ch.rows[1]])
            if ch.end_of_iteration:
                out.append((lag.p95(), _reference(seen, shift)))
                seen = []
        return out

    results = asyncio.run(run())
    assert len(results) == 3
    for got, want in results:
        assert _same(got, want)
