"""The numba book kernel against the plain-Python reference book, event by event.

The kernel keeps levels in a window of ``n_ticks`` ticks and drops what falls outside it (it
counts those in ``st[ST_DROPPED]``); the reference keeps everything. The differential test
therefore tracks, next to the reference, which levels the kernel has legitimately lost (an
update outside a non-empty book's window, or a level a re-centre pushed out) and checks after
every event that:

- the kernel holds exactly the reference's levels minus those lost ones (full book, both sides),
- the drop counter equals the number of losses the window rules explain (an update outside the
  window that would become its side's best is kept: the window moves to it), and
- best bid/ask, mid, qty_at and the top-N levels agree with that view.

A small window (256 ticks) makes re-centring and drops frequent.
"""

from __future__ import annotations

import math

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sortedcontainers import SortedDict

from mm_sim.core.book import (
    ST_BASE,
    ST_BEST_ASK,
    ST_BEST_BID,
    ST_DROPPED,
    ST_INIT,
    ST_NASK,
    ST_NBID,
    ST_RECENTRES,
    Book,
    best_ask,
    best_bid,
    book_apply,
    book_apply_events,
    depth_near_touch,
    make_book,
    mid_price,
    qty_at,
    top_levels,
)
from mm_sim.core.reference_book import ReferenceBook, price_to_tick
from mm_sim.events import (
    ASK,
    BID,
    EVENT_DTYPE,
    KIND_CLEAR,
    KIND_DEPTH,
    KIND_SNAPSHOT,
    KIND_TRADE,
)

TICK = 0.01
N_TICKS = 256
TOP_N = 8
QTYS = [0.0, 0.0, 0.001, 0.5, 1.0, 2.25, 3.0, 17.5]


# ------------------------------------------------------------------------------------------
# Helpers
# ------------------------------------------------------------------------------------------


def kernel_levels(book: Book, side: int) -> dict[int, float]:
    arr = book.bid if side > 0 else book.ask
    base = int(book.st[ST_BASE])
    return {base + int(i): float(arr[i]) for i in np.flatnonzero(arr)}


def kernel_top(book: Book, side: int, n: int) -> list[tuple[float, float]]:
    px = np.zeros(n)
    qty = np.zeros(n)
    k = top_levels(book.bid, book.ask, book.st, book.tick_size, side, n, px, qty)
    return [(float(px[i]), float(qty[i])) for i in range(k)]


def same(a: float, b: float) -> bool:
    return (math.isnan(a) and math.isnan(b)) or a == b


class Shadow:
    """The reference book plus the levels the kernel's window rules say it has lost."""

    def __init__(self, n_ticks: int) -> None:
        self.n = n_ticks
        self.truth = ReferenceBook(TICK)
        self.lost: dict[int, set[int]] = {BID: set(), ASK: set()}
        self.dropped = 0

    def view(self) -> ReferenceBook:
        """What the kernel should hold: the truth without the lost levels."""
        v = ReferenceBook(TICK)
        v.bids = SortedDict({t: q for t, q in self.truth.bids.items() if t not in self.lost[BID]})
        v.asks = SortedDict({t: q for t, q in self.truth.asks.items() if t not in self.lost[ASK]})
        return v

    def step(self, book: Book, kind: int, side: int, price: float, qty: float) -> None:
        """Apply one event to both books and account for what the window rules lose."""
        stt = book.st
        base0 = int(stt[ST_BASE])
        placed = bool(stt[ST_INIT])
        empty = stt[ST_NBID] == 0 and stt[ST_NASK] == 0
        before = self.view()
        book_apply(book.bid, book.ask, stt, book.tick_size, kind, side, price, qty)
        self.truth.apply(kind, side, price, qty)
        if kind == KIND_CLEAR:
            self.lost[BID].clear()
            self.lost[ASK].clear()
            return
        if kind not in (KIND_SNAPSHOT, KIND_DEPTH):
            return
        t = price_to_tick(price, TICK)
        s = BID if side > 0 else ASK
        outside = placed and not (0 <= t - base0 < self.n)
        # A level that would be its side's new best is never dropped (the window moves to it).
        bb, ba = before.best_bid_tick, before.best_ask_tick
        touch = qty > 0 and (
            (s == BID and (bb is None or t > bb)) or (s == ASK and (ba is None or t < ba))
        )
        if outside and not empty and not touch:
            self.dropped += 1  # ignored update
            if qty > 0:
                self.lost[s].add(t)
            else:
                self.lost[s].discard(t)
        else:
            self.lost[s].discard(t)
        base1 = int(stt[ST_BASE])
        if base1 != base0:  # a re-centre: known levels now outside the window are dropped
            for s2, levels in ((BID, self.truth.bids), (ASK, self.truth.asks)):
                for tick in levels:
                    if tick not in self.lost[s2] and not (0 <= tick - base1 < self.n):
                        self.lost[s2].add(tick)
                        self.dropped += 1

    def check(self, book: Book) -> None:
        v = self.view()
        stt = book.st
        assert kernel_levels(book, BID) == v.levels(BID)
        assert kernel_levels(book, ASK) == v.levels(ASK)
        assert int(stt[ST_DROPPED]) == self.dropped
        assert int(stt[ST_NBID]) == len(v.bids)
        assert int(stt[ST_NASK]) == len(v.asks)
        assert same(best_bid(book.bid, book.st, TICK), v.best_bid)
        assert same(best_ask(book.ask, book.st, TICK), v.best_ask)
        assert same(mid_price(book.st, TICK), v.mid)
        for side in (BID, ASK):
            assert kernel_top(book, side, TOP_N) == v.top_levels(side, TOP_N)
            assert depth_near_touch(book.bid, book.ask, book.st, side, 5) == v.depth_near_touch(
                side, 5
            )
        if not self.lost[BID] and not self.lost[ASK]:
            # Nothing lost: the kernel is the full book.
            assert same(best_bid(book.bid, book.st, TICK), self.truth.best_bid)
            assert same(best_ask(book.ask, book.st, TICK), self.truth.best_ask)


# ------------------------------------------------------------------------------------------
# Event stream generator
# ------------------------------------------------------------------------------------------

# Operations are resolved against the evolving reference book when the stream is played, so
# "remove the best bid" always hits the current best level.
OPS = [
    "bid",
    "bid",
    "ask",
    "ask",
    "remove_best",
    "remove_best",
    "cross",
    "drift",
    "drift",
    "jump",
    "far",
    "clear",
    "snapshot",
    "trade",
]


@st.composite
def op_streams(draw: st.DrawFn, wide: bool = True) -> list[tuple]:
    """A list of abstract operations; ``wide=False`` keeps every price in a 100-tick band."""
    ops: list[tuple] = []
    trend = draw(st.integers(-12, 12)) if wide else 0
    allowed = OPS if wide else [o for o in OPS if o not in ("drift", "jump", "far")]
    for _ in range(draw(st.integers(1, 160))):
        op = draw(st.sampled_from(allowed))
        side = draw(st.sampled_from([BID, ASK]))
        qty = draw(st.sampled_from(QTYS))
        if op in ("bid", "ask", "cross"):
            ops.append((op, side, draw(st.integers(0, 30)), qty))
        elif op == "remove_best":
            ops.append((op, side, 0, 0.0))
        elif op == "drift":
            ops.append((op, 0, trend + draw(st.integers(-40, 40)), 0.0))
        elif op == "jump":
            sign = draw(st.sampled_from([-1, 1]))
            ops.append((op, 0, sign * draw(st.integers(150, 3000)), 0.0))
        elif op == "far":
            sign = draw(st.sampled_from([-1, 1]))
            ops.append((op, side, sign * draw(st.integers(130, 2000)), qty))
        elif op == "snapshot":
            shift = draw(st.integers(-600, 600)) if wide else 0
            levels = draw(
                st.lists(
                    st.tuples(
                        st.sampled_from([BID, ASK]),
                        st.integers(0, 25),
                        st.sampled_from(QTYS[2:]),
                    ),
                    max_size=30,
                )
            )
            ops.append((op, shift, levels, 0.0))
        else:
            ops.append((op, side, draw(st.integers(-20, 20)), qty))
    return ops


def play(ops: list[tuple], start_tick: int = 1_000_000) -> list[tuple[int, int, float, float]]:
    """Resolve operations into concrete (kind, side, price, qty) events."""
    centre = start_tick
    ref = ReferenceBook(TICK)
    out: list[tuple[int, int, float, float]] = []

    def emit(kind: int, side: int, tick: int, qty: float) -> None:
        price = tick * TICK
        out.append((kind, side, price, qty))
        ref.apply(kind, side, price, qty)

    for op, a, b, qty in ops:
        if op == "bid":
            emit(KIND_DEPTH, BID, centre - b, qty)
        elif op == "ask":
            emit(KIND_DEPTH, ASK, centre + 1 + b, qty)
        elif op == "cross":  # a level on the "wrong" side of the centre: crossed books happen
            emit(KIND_DEPTH, a, centre + a * b, qty)
        elif op == "remove_best":
            t = ref.best_bid_tick if a == BID else ref.best_ask_tick
            if t is not None:
                emit(KIND_DEPTH, a, t, 0.0)
        elif op in ("drift", "jump"):
            centre += b
        elif op == "far":
            emit(KIND_DEPTH, a, centre + b, qty)
        elif op == "clear":
            emit(KIND_CLEAR, 0, 0, 0.0)
        elif op == "snapshot":
            centre += a
            emit(KIND_CLEAR, 0, 0, 0.0)
            for side, off, q in b:
                emit(KIND_SNAPSHOT, side, centre - off if side == BID else centre + 1 + off, q)
        elif op == "trade":
            emit(KIND_TRADE, a, centre + b, max(qty, 1.0))
    return out


def run_differential(events: list[tuple[int, int, float, float]], n_ticks: int) -> Shadow:
    book = make_book(TICK, n_ticks=n_ticks)
    shadow = Shadow(n_ticks)
    for kind, side, price, qty in events:
        shadow.step(book, kind, side, price, qty)
        shadow.check(book)
    return shadow


# ------------------------------------------------------------------------------------------
# Differential properties
# ------------------------------------------------------------------------------------------


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(op_streams(wide=True))
def test_kernel_matches_reference_every_event_with_window_losses_explained(ops: list) -> None:
    run_differential(play(ops), N_TICKS)


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(op_streams(wide=False))
def test_kernel_is_exact_when_everything_fits_the_window(ops: list) -> None:
    """Prices confined to ~100 ticks: nothing may be dropped, the kernel is the full book."""
    events = play(ops)
    book = make_book(TICK, n_ticks=N_TICKS)
    ref = ReferenceBook(TICK)
    for kind, side, price, qty in events:
        book_apply(book.bid, book.ask, book.st, TICK, kind, side, price, qty)
        ref.apply(kind, side, price, qty)
        assert kernel_levels(book, BID) == ref.levels(BID)
        assert kernel_levels(book, ASK) == ref.levels(ASK)
        assert same(best_bid(book.bid, book.st, TICK), ref.best_bid)
        assert same(best_ask(book.ask, book.st, TICK), ref.best_ask)
        assert same(mid_price(book.st, TICK), ref.mid)
        for side in (BID, ASK):
            for n in (1, 3, TOP_N):
                assert kernel_top(book, side, n) == ref.top_levels(side, n)
        if kind in (KIND_DEPTH, KIND_SNAPSHOT):
            for side in (BID, ASK):
                assert qty_at(book.bid, book.ask, book.st, TICK, side, price) == ref.qty_at(
                    side, price
                )
    assert int(book.st[ST_DROPPED]) == 0


@settings(max_examples=60, deadline=None)
@given(op_streams(wide=True))
def test_batch_apply_equals_event_by_event(ops: list) -> None:
    events = play(ops)
    arr = np.zeros(len(events), dtype=EVENT_DTYPE)
    for i, (kind, side, price, qty) in enumerate(events):
        arr[i] = (i, i, price, qty, kind, side)
    one = make_book(TICK, n_ticks=N_TICKS)
    for kind, side, price, qty in events:
        book_apply(one.bid, one.ask, one.st, TICK, kind, side, price, qty)
    batch = make_book(TICK, n_ticks=N_TICKS)
    book_apply_events(batch.bid, batch.ask, batch.st, TICK, arr)
    assert np.array_equal(one.bid, batch.bid)
    assert np.array_equal(one.ask, batch.ask)
    assert np.array_equal(one.st, batch.st)


def test_generator_reaches_recentres_drops_and_crossed_books() -> None:
    """The wide generator really exercises what the differential test claims to check."""
    recentres = drops = crossed = 0

    @settings(max_examples=80, deadline=None, database=None)
    @given(op_streams(wide=True))
    def probe(ops: list) -> None:
        nonlocal recentres, drops, crossed
        book = make_book(TICK, n_ticks=N_TICKS)
        for kind, side, price, qty in play(ops):
            book_apply(book.bid, book.ask, book.st, TICK, kind, side, price, qty)
            b, a = book.st[ST_BEST_BID], book.st[ST_BEST_ASK]
            crossed += int(b >= 0 and a >= 0 and b >= a)
        recentres += int(book.st[ST_RECENTRES])
        drops += int(book.st[ST_DROPPED])

    probe()
    assert recentres > 0
    assert drops > 0
    assert crossed > 0


# ------------------------------------------------------------------------------------------
# Window re-centring and drop accounting, scenario by scenario
# ------------------------------------------------------------------------------------------


def test_touch_walking_far_recentres_without_losing_the_sliding_book() -> None:
    """A 20-level book per side slides 3000 ticks up then down: nothing may be dropped."""
    book = make_book(TICK, n_ticks=N_TICKS)
    shadow = Shadow(N_TICKS)
    margin = N_TICKS // 8
    centre = 500_000
    for k in range(20):
        shadow.step(book, KIND_SNAPSHOT, BID, (centre - k) * TICK, 1.0 + k)
        shadow.step(book, KIND_SNAPSHOT, ASK, (centre + 1 + k) * TICK, 1.0 + k)
    path = [1] * 3000 + [-1] * 3000
    for step in path:
        old = centre
        centre += step
        if step > 0:  # new top on both sides, the deepest bid and the best ask go
            shadow.step(book, KIND_DEPTH, BID, centre * TICK, 2.0)
            shadow.step(book, KIND_DEPTH, BID, (old - 19) * TICK, 0.0)
            shadow.step(book, KIND_DEPTH, ASK, (old + 1) * TICK, 0.0)
            shadow.step(book, KIND_DEPTH, ASK, (centre + 20) * TICK, 2.0)
        else:
            shadow.step(book, KIND_DEPTH, ASK, (centre + 1) * TICK, 3.0)
            shadow.step(book, KIND_DEPTH, ASK, (old + 20) * TICK, 0.0)
            shadow.step(book, KIND_DEPTH, BID, old * TICK, 0.0)
            shadow.step(book, KIND_DEPTH, BID, (centre - 19) * TICK, 3.0)
        shadow.check(book)
        bb, ba = int(book.st[ST_BEST_BID]), int(book.st[ST_BEST_ASK])
        assert margin <= bb <= N_TICKS - margin
        assert margin <= ba <= N_TICKS - margin
        assert book.st[ST_NBID] == 20 and book.st[ST_NASK] == 20
    assert int(book.st[ST_DROPPED]) == 0
    # Each re-centre moves the window by at least (n/2 - margin) ticks of drift.
    assert int(book.st[ST_RECENTRES]) >= 6000 // (N_TICKS // 2)
    assert shadow.view().levels(BID) == shadow.truth.levels(BID)


def test_update_outside_a_non_empty_window_is_ignored_and_counted() -> None:
    book = make_book(TICK, n_ticks=N_TICKS)
    shadow = Shadow(N_TICKS)
    shadow.step(book, KIND_SNAPSHOT, BID, 100.00, 1.0)
    shadow.step(book, KIND_SNAPSHOT, ASK, 100.01, 1.0)
    far = 100.00 - 10.00  # 1000 ticks below, outside a 256-tick window
    shadow.step(book, KIND_DEPTH, BID, far, 5.0)
    shadow.check(book)
    assert int(book.st[ST_DROPPED]) == 1
    assert qty_at(book.bid, book.ask, book.st, TICK, BID, far) == 0.0
    assert shadow.truth.qty_at(BID, far) == 5.0
    # Removing a level outside the window is an ignored update too.
    shadow.step(book, KIND_DEPTH, BID, far, 0.0)
    shadow.check(book)
    assert int(book.st[ST_DROPPED]) == 2
    # The touch is untouched.
    assert best_bid(book.bid, book.st, TICK) == 100.00


def test_levels_left_behind_by_a_recentre_are_dropped_one_count_each() -> None:
    book = make_book(TICK, n_ticks=N_TICKS)
    shadow = Shadow(N_TICKS)
    base = 10_000
    # Three deep bids and three deep asks far below where the touch will go.
    for k in range(3):
        shadow.step(book, KIND_SNAPSHOT, BID, (base - 10 - k) * TICK, 1.0)
        shadow.step(book, KIND_SNAPSHOT, ASK, (base + 40 + k) * TICK, 1.0)
    # A touch that climbs: every step adds a bid and an ask one tick higher.
    t = base
    while t < base + 2 * N_TICKS:
        t += 1
        shadow.step(book, KIND_DEPTH, BID, t * TICK, 1.0)
        shadow.step(book, KIND_DEPTH, ASK, (t + 50) * TICK, 1.0)
        shadow.check(book)
    assert int(book.st[ST_RECENTRES]) >= 3
    assert int(book.st[ST_DROPPED]) > 0
    assert int(book.st[ST_DROPPED]) == shadow.dropped
    lost = len(shadow.lost[BID]) + len(shadow.lost[ASK])
    assert lost == int(book.st[ST_DROPPED])  # every drop is a level the kernel no longer has
    # The deep starting bids were among them.
    assert {base - 10, base - 11, base - 12} <= shadow.lost[BID]


def test_a_locked_pair_at_one_tick_counts_two_drops() -> None:
    """A bid and an ask at the same tick pushed out together are two levels lost."""
    book = make_book(TICK, n_ticks=N_TICKS)
    shadow = Shadow(N_TICKS)
    shadow.step(book, KIND_SNAPSHOT, BID, 50.00, 1.0)
    shadow.step(book, KIND_SNAPSHOT, ASK, 50.00, 1.0)  # locked at tick 5000
    seen_double = False
    for k in range(1, 400):  # bids climb, the stale ask keeps the book crossed
        before = int(book.st[ST_DROPPED])
        shadow.step(book, KIND_DEPTH, BID, (5000 + k) * TICK, 1.0)
        shadow.check(book)
        if 5000 in shadow.lost[BID] and 5000 in shadow.lost[ASK] and not seen_double:
            seen_double = True
            assert int(book.st[ST_DROPPED]) - before >= 2
    assert seen_double
    assert int(book.st[ST_DROPPED]) == shadow.dropped


def test_a_gap_past_the_window_keeps_the_new_touch() -> None:
    """A bid far above the window is the new touch: the window moves to it, deep levels go."""
    book = make_book(TICK, n_ticks=N_TICKS)
    shadow = Shadow(N_TICKS)
    for k in range(5):
        shadow.step(book, KIND_SNAPSHOT, BID, (10_000 - k) * TICK, 1.0)
        shadow.step(book, KIND_SNAPSHOT, ASK, (10_001 + k) * TICK, 1.0)
    shadow.step(book, KIND_DEPTH, BID, 10_000 * TICK, 2.0)  # in the window: no move
    assert int(book.st[ST_RECENTRES]) == 0
    shadow.step(book, KIND_DEPTH, ASK, 10_500 * TICK, 2.0)  # deep ask outside: dropped
    assert int(book.st[ST_DROPPED]) == 1
    shadow.step(book, KIND_DEPTH, BID, 12_000 * TICK, 3.0)  # gap up past the window
    shadow.check(book)
    assert best_bid(book.bid, book.st, TICK) == 12_000 * TICK
    assert int(book.st[ST_RECENTRES]) == 1
    # Everything of the old book was more than half a window away: 5 bids + 5 asks lost, plus
    # the ignored deep ask.
    assert int(book.st[ST_DROPPED]) == 1 + 5 + 5
    assert int(book.st[ST_NBID]) == 1 and int(book.st[ST_NASK]) == 0
    # An ask below the (now empty) ask side's window is its best: kept as well.
    shadow.step(book, KIND_DEPTH, ASK, 11_990 * TICK, 1.0)
    shadow.check(book)
    assert best_ask(book.ask, book.st, TICK) == 11_990 * TICK


def test_empty_book_moves_the_window_instead_of_dropping() -> None:
    book = make_book(TICK, n_ticks=N_TICKS)
    shadow = Shadow(N_TICKS)
    shadow.step(book, KIND_SNAPSHOT, BID, 100.00, 1.0)
    shadow.step(book, KIND_SNAPSHOT, ASK, 100.01, 1.0)
    shadow.step(book, KIND_CLEAR, 0, 0.0, 0.0)
    shadow.step(book, KIND_SNAPSHOT, BID, 500.00, 2.0)  # 40,000 ticks away
    shadow.step(book, KIND_SNAPSHOT, ASK, 500.01, 3.0)
    shadow.check(book)
    assert int(book.st[ST_DROPPED]) == 0
    assert best_bid(book.bid, book.st, TICK) == 500.00
    assert best_ask(book.ask, book.st, TICK) == 500.01
    # Emptied by removals (not a CLEAR) works the same way.
    shadow.step(book, KIND_DEPTH, BID, 500.00, 0.0)
    shadow.step(book, KIND_DEPTH, ASK, 500.01, 0.0)
    shadow.step(book, KIND_DEPTH, ASK, 20.00, 1.0)
    shadow.check(book)
    assert int(book.st[ST_DROPPED]) == 0
    assert best_ask(book.ask, book.st, TICK) == 20.00


def test_non_finite_prices_are_ignored_and_bad_quantities_remove() -> None:
    book = make_book(TICK, n_ticks=N_TICKS)
    shadow = Shadow(N_TICKS)
    shadow.step(book, KIND_SNAPSHOT, BID, 10.00, 1.0)
    for price in (math.nan, math.inf, -math.inf, 1e300):
        before = int(book.st[ST_DROPPED])
        book_apply(book.bid, book.ask, book.st, TICK, KIND_DEPTH, BID, price, 1.0)
        assert int(book.st[ST_DROPPED]) == before + 1
    assert kernel_levels(book, BID) == {1000: 1.0}
    # NaN and negative quantities remove the level and leave only finite values behind.
    book_apply(book.bid, book.ask, book.st, TICK, KIND_DEPTH, BID, 10.00, math.nan)
    assert int(book.st[ST_NBID]) == 0 and math.isnan(best_bid(book.bid, book.st, TICK))
    book_apply(book.bid, book.ask, book.st, TICK, KIND_DEPTH, BID, 10.00, 4.0)
    assert int(book.st[ST_NBID]) == 1 and best_bid(book.bid, book.st, TICK) == 10.00
    book_apply(book.bid, book.ask, book.st, TICK, KIND_DEPTH, BID, 10.00, -1.0)
    assert int(book.st[ST_NBID]) == 0
    assert np.isfinite(book.bid).all() and np.isfinite(book.ask).all()
    ref = ReferenceBook(TICK)
    ref.apply(KIND_DEPTH, BID, 10.00, 4.0)
    ref.apply(KIND_DEPTH, BID, 10.00, math.nan)
    assert ref.levels(BID) == {}


def test_trades_never_change_either_book() -> None:
    book = make_book(TICK, n_ticks=N_TICKS)
    shadow = Shadow(N_TICKS)
    shadow.step(book, KIND_SNAPSHOT, BID, 10.00, 1.0)
    shadow.step(book, KIND_SNAPSHOT, ASK, 10.05, 1.0)
    before = (book.bid.copy(), book.ask.copy(), book.st.copy())
    shadow.step(book, KIND_TRADE, BID, 10.05, 1.0)
    shadow.step(book, KIND_TRADE, ASK, 10.00, 5.0)
    assert np.array_equal(before[0], book.bid) and np.array_equal(before[1], book.ask)
    assert np.array_equal(before[2], book.st)
    shadow.check(book)
