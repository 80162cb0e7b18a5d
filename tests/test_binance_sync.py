"""The Binance book-sync state machine, driven with hand-made message sequences (no I/O)."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mm_sim.venues.binance.fastparse import flat_levels
from mm_sim.venues.binance.messages import DepthDiff, DepthSnapshot
from mm_sim.venues.binance.sync import (
    ActionKind,
    BookSync,
    LightBook,
    LightBookRef,
    Reason,
    SyncState,
)

A = ActionKind


def spot(first: int, final: int, bids=(), asks=()) -> DepthDiff:
    return DepthDiff("X", first, final, None, 0, None, list(bids), list(asks))


def fut(first: int, final: int, pu: int, bids=(), asks=()) -> DepthDiff:
    return DepthDiff("X", first, final, pu, 0, 0, list(bids), list(asks))


def snap(lid: int, bids=((99.0, 1.0),), asks=((101.0, 1.0),)) -> DepthSnapshot:
    return DepthSnapshot(lid, list(bids), list(asks))


def kinds(actions) -> list[ActionKind]:
    return [a.kind for a in actions]


def test_spot_seam_straddle_is_accepted_and_older_diffs_dropped() -> None:
    s = BookSync("spot")
    assert kinds(s.on_diff(spot(100, 105))) == [A.BUFFER, A.NEED_SNAPSHOT]
    assert kinds(s.on_diff(spot(106, 110))) == [A.BUFFER]  # one request is enough
    assert kinds(s.on_diff(spot(111, 115))) == [A.BUFFER]
    acts = s.on_snapshot(snap(108))
    assert kinds(acts) == [A.REBASE, A.DROP, A.APPLY, A.APPLY]
    assert [a.diff.first_id for a in acts[1:]] == [100, 106, 111]  # type: ignore[union-attr]
    assert s.state is SyncState.SYNCED and s.last_update_id == 115
    assert kinds(s.on_diff(spot(116, 120))) == [A.APPLY]
    c = s.counters
    assert (c.applied, c.dropped_stale, c.gaps, c.rebases) == (3, 1, 0, 1)


def test_spot_snapshot_one_before_first_diff_is_usable_two_before_is_too_old() -> None:
    s = BookSync("spot")
    s.on_diff(spot(100, 105))
    acts = s.on_snapshot(snap(98))  # would need update 99, which no buffered diff holds
    assert kinds(acts) == [A.NEED_SNAPSHOT] and acts[0].reason == Reason.TOO_OLD
    acts = s.on_snapshot(snap(99))  # 99 + 1 == U: the first diff continues it exactly
    assert kinds(acts) == [A.REBASE, A.APPLY]
    assert s.counters.snapshots_too_old == 1


def test_stale_snapshot_is_refetched_and_buffered_diffs_survive_the_retry() -> None:
    s = BookSync("spot")
    s.on_diff(spot(100, 105))
    s.on_diff(spot(106, 110))
    acts = s.on_snapshot(snap(90))
    assert kinds(acts) == [A.NEED_SNAPSHOT]
    assert s.state is SyncState.AWAITING_SNAPSHOT and not s.book_valid
    assert s.buffered == 2 and s.first_buffered_id == 100
    # Diffs keep arriving while the second snapshot is in flight; no duplicate request.
    assert kinds(s.on_diff(spot(111, 112))) == [A.BUFFER]
    acts = s.on_snapshot(snap(103))
    assert kinds(acts) == [A.REBASE, A.APPLY, A.APPLY, A.APPLY]
    assert s.last_update_id == 112 and s.counters.snapshot_requests == 2


def test_gap_right_after_the_seam_is_rejected() -> None:
    s = BookSync("spot")
    s.on_diff(spot(100, 105))
    s.on_snapshot(snap(103))
    acts = s.on_diff(spot(107, 110))  # 106 is missing
    assert kinds(acts) == [A.RESYNC, A.NEED_SNAPSHOT]
    assert acts[0].reason == Reason.GAP
    assert s.state is SyncState.AWAITING_SNAPSHOT and s.last_update_id is None
    assert s.buffered == 1 and s.first_buffered_id == 107  # the gapping diff is kept
    assert (s.counters.gaps, s.counters.resyncs) == (1, 1)
    # The next snapshot re-bases from the kept diff.
    assert kinds(s.on_snapshot(snap(108))) == [A.REBASE, A.APPLY]


def test_first_live_diff_must_straddle_a_snapshot_taken_before_any_diff() -> None:
    s = BookSync("spot")
    assert kinds(s.on_snapshot(snap(100))) == [A.REBASE]
    assert s.state is SyncState.AWAITING_FIRST_DIFF and s.book_valid
    assert kinds(s.on_diff(spot(95, 100))) == [A.DROP]
    acts = s.on_diff(spot(103, 104))  # 101..102 missing: the snapshot was too old
    assert kinds(acts) == [A.RESYNC, A.NEED_SNAPSHOT]
    assert acts[0].reason == Reason.NO_STRADDLE and s.counters.gaps == 1


def test_gap_inside_the_buffer_keeps_the_rest_for_the_next_snapshot() -> None:
    s = BookSync("spot")
    for d in (spot(100, 105), spot(110, 112), spot(113, 115)):
        s.on_diff(d)
    acts = s.on_snapshot(snap(103))
    assert kinds(acts) == [A.REBASE, A.APPLY, A.RESYNC, A.NEED_SNAPSHOT]
    assert s.buffered == 2 and s.first_buffered_id == 110
    assert kinds(s.on_snapshot(snap(111))) == [A.REBASE, A.APPLY, A.APPLY]
    assert s.last_update_id == 115


def test_spot_overlapping_diff_is_applied_and_counted() -> None:
    s = BookSync("spot")
    s.on_snapshot(snap(100))
    s.on_diff(spot(101, 105))
    assert kinds(s.on_diff(spot(104, 108))) == [A.APPLY]
    assert kinds(s.on_diff(spot(103, 108))) == [A.DROP]  # wholly old
    assert s.counters.overlaps == 1 and s.last_update_id == 108


def test_futures_seam_and_pu_continuity() -> None:
    s = BookSync("futures")
    s.on_diff(fut(90, 99, 80))
    s.on_diff(fut(100, 105, 99))
    s.on_diff(fut(107, 120, 105))
    # Futures drop u < lastUpdateId; the first applied must have U <= lastUpdateId <= u.
    acts = s.on_snapshot(snap(105))
    assert kinds(acts) == [A.REBASE, A.DROP, A.APPLY, A.APPLY]
    # Futures ids are not contiguous: only pu == previous u counts.
    assert kinds(s.on_diff(fut(140, 150, 120))) == [A.APPLY]
    acts = s.on_diff(fut(160, 170, 155))
    assert kinds(acts) == [A.RESYNC, A.NEED_SNAPSHOT] and acts[0].reason == Reason.GAP
    assert s.counters.gaps == 1


def test_futures_snapshot_too_old_uses_the_futures_bound() -> None:
    s = BookSync("futures")
    s.on_diff(fut(100, 105, 99))
    assert kinds(s.on_snapshot(snap(99))) == [A.NEED_SNAPSHOT]  # spot would accept 99
    assert kinds(s.on_snapshot(snap(100))) == [A.REBASE, A.APPLY]


def test_crossed_book_after_a_diff_forces_a_resync() -> None:
    s = BookSync("spot")
    s.on_snapshot(snap(10, bids=[(99.0, 1.0), (98.0, 2.0)], asks=[(101.0, 1.0)]))
    assert kinds(s.on_diff(spot(11, 11, bids=[(100.0, 1.0)]))) == [A.APPLY]
    acts = s.on_diff(spot(12, 12, bids=[(101.0, 3.0)]))
    assert kinds(acts) == [A.APPLY, A.RESYNC, A.NEED_SNAPSHOT]
    assert acts[1].reason == Reason.CROSSED
    assert s.counters.crossed == 1 and not s.book_valid
    # A removal of the old best ask un-crosses nothing any more: the book waits for a snapshot.
    assert kinds(s.on_diff(spot(13, 13, asks=[(101.0, 0.0)]))) == [A.BUFFER]


def test_crossed_snapshot_is_refused() -> None:
    s = BookSync("spot")
    acts = s.on_snapshot(snap(5, bids=[(101.0, 1.0)], asks=[(100.0, 1.0)]))
    assert kinds(acts) == [A.NEED_SNAPSHOT] and acts[0].reason == Reason.CROSSED_SNAPSHOT
    assert s.counters.snapshots_crossed == 1 and s.counters.rebases == 0


def test_caller_kept_book_reports_crossing_itself() -> None:
    s = BookSync("spot", track_book=False)
    s.on_snapshot(snap(10))
    assert kinds(s.on_diff(spot(11, 11, bids=[(200.0, 1.0)]))) == [A.APPLY]  # not checked
    assert kinds(s.report_crossed()) == [A.RESYNC, A.NEED_SNAPSHOT]
    assert s.report_crossed() == []  # already invalid
    assert s.counters.crossed == 1


def test_buffer_is_bounded_and_overflow_is_counted() -> None:
    s = BookSync("spot", max_buffer=3)
    acts = [s.on_diff(spot(i * 10, i * 10 + 9)) for i in range(1, 6)]
    assert sum(k == A.NEED_SNAPSHOT for a in acts for k in kinds(a)) == 1
    assert s.buffered == 3 and s.first_buffered_id == 30
    assert s.counters.buffered_overflow == 2
    assert kinds(s.on_snapshot(snap(15))) == [A.NEED_SNAPSHOT]  # 20..29 were discarded


def test_snapshot_while_valid_is_ignored_and_reset_starts_over() -> None:
    s = BookSync("spot")
    s.on_snapshot(snap(10))
    s.on_diff(spot(11, 12))
    assert kinds(s.on_snapshot(snap(50))) == [A.IGNORED]
    assert kinds(s.reset()) == [A.RESYNC]
    assert s.state is SyncState.AWAITING_SNAPSHOT
    s.on_diff(spot(60, 61))
    assert s.reset() == [] and s.counters.discarded == 1
    assert kinds(s.on_diff(spot(70, 71))) == [A.BUFFER, A.NEED_SNAPSHOT]
    assert (s.counters.snapshots_ignored, s.counters.resyncs) == (1, 1)


def test_wrong_market_diff_is_a_programming_error() -> None:
    with pytest.raises(ValueError, match="spot book sync fed a futures"):
        BookSync("spot").on_diff(fut(1, 2, 0))
    with pytest.raises(ValueError, match="futures book sync fed a spot"):
        BookSync("futures").on_diff(spot(1, 2))
    with pytest.raises(ValueError):
        BookSync("options")


def test_light_book_touch_after_updates() -> None:
    b = LightBook()
    b.load([(10.0, 1.0), (9.0, 1.0)], [(11.0, 1.0), (12.0, 1.0)])
    assert (b.best_bid(), b.best_ask()) == (10.0, 11.0)
    b.apply([(10.0, 0.0), (9.5, 2.0)], [(11.0, 0.0)])
    assert (b.best_bid(), b.best_ask()) == (9.5, 12.0)
    b.apply([(10.0, 1.0)], [(12.0, 0.0)])  # re-added price, emptied side
    assert (b.best_bid(), b.best_ask()) == (10.0, None) and not b.crossed()


@settings(max_examples=200, deadline=None)
@given(
    st.lists(
        st.tuples(st.integers(0, 3), st.integers(0, 2), st.integers(-1, 20)),
        min_size=1,
        max_size=60,
    )
)
def test_light_book_matches_a_brute_force_touch(ops: list[tuple[int, int, int]]) -> None:
    b = LightBook()
    bids: dict[float, float] = {}
    asks: dict[float, float] = {}
    for side, qty, px in ops:
        p, q = float(px), float(qty)
        book = bids if side % 2 == 0 else asks
        if q > 0:
            book[p] = q
        else:
            book.pop(p, None)
        b.apply([(p, q)] if side % 2 == 0 else [], [(p, q)] if side % 2 else [])
        assert b.best_bid() == (max(bids) if bids else None)
        assert b.best_ask() == (min(asks) if asks else None)


@settings(max_examples=300, deadline=None)
@given(
    market=st.sampled_from(["spot", "futures"]),
    steps=st.lists(
        st.one_of(
            st.tuples(st.just("diff"), st.integers(0, 3), st.integers(0, 4)),
            st.tuples(st.just("snap"), st.integers(-6, 6), st.just(0)),
            st.tuples(st.just("reset"), st.just(0), st.just(0)),
        ),
        max_size=60,
    ),
)
def test_sync_invariants_on_random_streams(market: str, steps: list[tuple[str, int, int]]) -> None:
    """Whatever arrives: every diff is accounted for once, applied diffs chain correctly from
    the snapshot that re-based them, and the book is valid exactly when not awaiting one."""
    s = BookSync(market, max_buffer=8, track_book=False)
    nxt = 100  # next update id the venue would send
    prev_u = 99
    last_applied: int | None = None
    for op, skip, width in steps:
        if op == "diff":
            first = nxt + skip  # skip > 0 loses updates
            final = first + width
            d = fut(first, final, prev_u) if market == "futures" else spot(first, final)
            nxt, prev_u = final + 1, final
            acts = s.on_diff(d)
        elif op == "snap":
            acts = s.on_snapshot(snap(max(0, nxt - 1 + skip)))
        else:
            acts = s.reset()
        for a in acts:
            if a.kind is A.REBASE:
                last_applied = a.snapshot.last_update_id  # type: ignore[union-attr]
                rebased = True
            elif a.kind is A.APPLY:
                d = a.diff
                assert d is not None and last_applied is not None
                if rebased:  # the seam
                    lid = last_applied
                    assert d.first_id <= (lid if market == "futures" else lid + 1) <= d.final_id
                elif market == "futures":
                    assert d.prev_final_id == last_applied
                else:
                    assert d.first_id <= last_applied + 1 <= d.final_id
                last_applied, rebased = d.final_id, False
            elif a.kind is A.RESYNC:
                last_applied = None
        assert s.book_valid == (s.state is not SyncState.AWAITING_SNAPSHOT)
        assert s.last_update_id == (last_applied if s.book_valid else None)
        c = s.counters
        assert c.diffs == c.applied + c.dropped_stale + c.buffered_overflow + c.discarded + (
            s.buffered
        )


@settings(max_examples=200, deadline=None)
@given(
    snap=st.lists(st.tuples(st.booleans(), st.integers(0, 30), st.integers(0, 3)), max_size=20),
    diffs=st.lists(
        st.lists(st.tuples(st.booleans(), st.integers(0, 30), st.integers(0, 3)), max_size=12),
        max_size=30,
    ),
)
def test_light_book_kernel_matches_its_reference(
    snap: list[tuple[bool, int, int]], diffs: list[list[tuple[bool, int, int]]]
) -> None:
    """The numba LightBook against LightBookRef (dicts + heaps): several levels per diff, the
    same price twice in one diff, deletions of absent prices, and growth past its capacity."""
    fast = LightBook(capacity=2)
    ref = LightBookRef()

    def split(levels: list[tuple[bool, int, int]]) -> tuple[list, list]:
        bids = [(50.0 + px * 0.5, float(q)) for is_bid, px, q in levels if is_bid]
        asks = [(55.0 + px * 0.5, float(q)) for is_bid, px, q in levels if not is_bid]
        return bids, asks

    fast.load(*split(snap))
    ref.load(*split(snap))
    for d in [[], *diffs]:
        bids, asks = split(d)
        ref.apply(bids, asks)
        crossed = fast.apply_flat(flat_levels(bids), flat_levels(asks))
        assert crossed == ref.crossed() == fast.crossed()
        assert (fast.best_bid(), fast.best_ask()) == (ref.best_bid(), ref.best_ask())
        assert fast.bids == ref.bids and fast.asks == ref.asks
