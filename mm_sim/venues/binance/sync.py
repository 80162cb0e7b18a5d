"""Binance local order-book synchronisation as a pure state machine (no I/O, no clock, no asyncio).

Why sans-I/O: the converter replays recorded bytes, the live client reads a websocket and the fake
exchange's tests script both sides; all three must make the *same* decisions about the snapshot
seam and sequence continuity. The caller feeds parsed diffs and snapshots and gets back a list
of :class:`Action` saying what to do with its own book (and when to fetch a snapshot); nothing
here sleeps, fetches or logs.

The procedure (Binance's documented one, for ``market="spot"`` or ``"futures"``):

1. Until a snapshot is accepted, diffs are buffered (bounded: the oldest is discarded and counted
   when full). The first buffered diff asks for a snapshot (``NEED_SNAPSHOT``).
2. A snapshot is *too old* when no buffered diff could continue it: spot ``lastUpdateId + 1 <
   U_first``, futures ``lastUpdateId < U_first`` (this is exactly the negation of the seam rule in
   step 3, so no usable snapshot is refused; Binance's text says ``lastUpdateId < U`` for spot,
   which also refuses the one harmless case ``lastUpdateId == U_first - 1``). The buffer is kept
   and another snapshot is requested.
3. Otherwise the snapshot re-bases the book (``REBASE``) and the buffered diffs are replayed: those
   already contained in it are dropped (spot ``u <= lastUpdateId``, futures ``u <
   lastUpdateId``); the first applied one must straddle it (spot ``U <= lastUpdateId+1 <= u``,
   futures ``U <= lastUpdateId <= u``).
4. Afterwards each diff must continue the previous one: spot ``U == prev_u + 1`` (an overlapping
   ``U <= prev_u < u`` is applied too, as Binance's rule allows, and counted), futures ``pu ==
   prev_u``. A diff wholly at or before ``prev_u`` is dropped as stale. Anything else is a gap:
   ``RESYNC`` (discard the book), the gapping diff starts a new buffer, ``NEED_SNAPSHOT``.
5. After every applied diff the touch is checked; a crossed book (best bid >= best ask) is a
   resync too. A snapshot that is itself crossed is refused.

Crossed-book check: by default the machine keeps a :class:`LightBook` (per side, prices sorted in
arrays updated by a numba kernel), only for that check; a caller that keeps its own book can
pass ``track_book=False`` and call :meth:`BookSync.report_crossed` itself.

Snapshots that arrive while the book is valid are not needed and are ignored (``IGNORED``); the
caller forces a fresh start with :meth:`BookSync.reset` (e.g. on reconnect).
"""

from __future__ import annotations

import heapq
from collections import deque
from dataclasses import asdict, dataclass
from enum import Enum, StrEnum
from typing import Any

import numpy as np
from numba import njit

from mm_sim import kernel_cache
from mm_sim.core.jitcall import entry_point
from mm_sim.venues.binance.fastparse import flat_levels
from mm_sim.venues.binance.messages import DepthDiff, DepthSnapshot, Level

DEFAULT_MAX_BUFFER = 10_000


class Market(StrEnum):
    SPOT = "spot"
    FUTURES = "futures"  # USD-M and COIN-M behave the same


class SyncState(StrEnum):
    AWAITING_SNAPSHOT = "awaiting_snapshot"  # book invalid; diffs are buffered
    AWAITING_FIRST_DIFF = "awaiting_first_diff"  # snapshot applied; seam not yet confirmed
    SYNCED = "synced"


class ActionKind(Enum):
    BUFFER = "buffer"  # diff held until a snapshot arrives (do nothing with it yet)
    DROP = "drop"  # stale diff already contained in the book: ignore it
    REBASE = "rebase"  # clear the book and load ``snapshot``
    APPLY = "apply"  # apply ``diff``'s levels to the book (absolute quantities; 0 removes)
    RESYNC = "resync"  # the book is invalid: discard it (``reason`` says why)
    NEED_SNAPSHOT = "need_snapshot"  # fetch a (new) REST depth snapshot
    IGNORED = "ignored"  # snapshot not needed (the book is already valid)


class Reason(StrEnum):
    GAP = "gap"
    NO_STRADDLE = "first diff does not straddle the snapshot"
    CROSSED = "crossed book"
    RESET = "reset"
    START = "start"
    TOO_OLD = "snapshot too old"
    CROSSED_SNAPSHOT = "crossed snapshot"
    STALE = "stale"
    NOT_NEEDED = "book already valid"


@dataclass(frozen=True, slots=True)
class Action:
    kind: ActionKind
    diff: DepthDiff | None = None
    snapshot: DepthSnapshot | None = None
    reason: str = ""


@dataclass
class SyncCounters:
    diffs: int = 0  # diffs received
    applied: int = 0
    dropped_stale: int = 0
    buffered: int = 0  # diffs put into the buffer (including re-buffered gap diffs)
    buffered_overflow: int = 0  # buffered diffs discarded because the buffer was full
    discarded: int = 0  # buffered diffs thrown away by reset()
    overlaps: int = 0  # spot diffs overlapping the previous one (applied)
    gaps: int = 0  # continuity breaks, including a first diff that misses the seam
    crossed: int = 0  # books found crossed after a diff
    resyncs: int = 0  # times a valid book was invalidated (gap, crossed, reset)
    rebases: int = 0  # snapshots accepted
    snapshots_too_old: int = 0
    snapshots_crossed: int = 0
    snapshots_ignored: int = 0
    snapshot_requests: int = 0  # NEED_SNAPSHOT actions emitted

    def as_dict(self) -> dict[str, int]:
        return asdict(self)


@njit(cache=True)
def _side_apply(keys: np.ndarray, qtys: np.ndarray, n: int, flat: np.ndarray, sign: float) -> int:
    """One side's levels (``flat``: price, qty interleaved) into ``keys``/``qtys``, kept sorted
    by ``key = sign * price`` ascending so the best level is last (a live diff mostly touches
    the levels near it: short shifts). A positive qty sets the level, anything else removes it,
    in order, as a dict would. Returns the new count; the caller guarantees the capacity."""
    for i in range(flat.shape[0] // 2):
        k = sign * flat[2 * i]
        q = flat[2 * i + 1]
        lo = 0
        hi = n
        while lo < hi:
            mid = (lo + hi) >> 1
            if keys[mid] < k:
                lo = mid + 1
            else:
                hi = mid
        found = lo < n and keys[lo] == k
        if q > 0.0:
            if found:
                qtys[lo] = q
            else:
                j = n
                while j > lo:
                    keys[j] = keys[j - 1]
                    qtys[j] = qtys[j - 1]
                    j -= 1
                keys[lo] = k
                qtys[lo] = q
                n += 1
        elif found:
            for j in range(lo, n - 1):
                keys[j] = keys[j + 1]
                qtys[j] = qtys[j + 1]
            n -= 1
    return n


@njit(cache=True)
def _book_apply(
    bk: np.ndarray,
    bq: np.ndarray,
    ak: np.ndarray,
    aq: np.ndarray,
    counts: np.ndarray,
    fb: np.ndarray,
    fa: np.ndarray,
) -> int:
    """A diff's bid and ask levels into the book; 1 when it is then crossed, 0 when not, -1
    (nothing changed) when a side could outgrow its arrays. Reference: :class:`LightBookRef`."""
    nb = counts[0]
    na = counts[1]
    if nb + fb.shape[0] // 2 > bk.shape[0] or na + fa.shape[0] // 2 > ak.shape[0]:
        return -1
    nb = _side_apply(bk, bq, nb, fb, 1.0)
    na = _side_apply(ak, aq, na, fa, -1.0)
    counts[0] = nb
    counts[1] = na
    if nb > 0 and na > 0 and bk[nb - 1] >= -ak[na - 1]:
        return 1
    return 0


# _book_apply's compiled entry point (core.jitcall) for the book's float64 arrays and flat
# C-contiguous float64 level arrays (what the parsers and ``flat_levels`` make), made on first
# use: the dispatcher's typing of seven arrays cost more than applying a 45-level diff.
_APPLY: list[Any] = []
_F8 = np.dtype(np.float64)


class LightBook:
    """Just enough of a book to know the touch: per side, prices sorted in numpy arrays with the
    best level last, updated by a numba kernel (a diff of ~45 levels in ~1 µs instead of ~12 µs
    of dict and heap work). Same answers as :class:`LightBookRef`, its plain-Python reference."""

    def __init__(self, capacity: int = 1024) -> None:
        self._bk = np.empty(capacity)  # bid prices ascending
        self._bq = np.empty(capacity)
        self._ak = np.empty(capacity)  # negated ask prices ascending
        self._aq = np.empty(capacity)
        self._counts = np.zeros(2, dtype=np.int64)

    def clear(self) -> None:
        self._counts[:] = 0

    def load(self, bids: list[Level], asks: list[Level]) -> None:
        b = {p: q for p, q in bids if q > 0.0}
        a = {p: q for p, q in asks if q > 0.0}
        self._grow(len(b), len(a))
        kb = sorted(b)
        ka = sorted(-p for p in a)
        self._bk[: len(kb)] = kb
        self._bq[: len(kb)] = [b[p] for p in kb]
        self._ak[: len(ka)] = ka
        self._aq[: len(ka)] = [a[-k] for k in ka]
        self._counts[0] = len(kb)
        self._counts[1] = len(ka)

    def apply(self, bids: list[Level], asks: list[Level]) -> None:
        self.apply_flat(flat_levels(bids), flat_levels(asks))

    def apply_flat(self, fb: np.ndarray, fa: np.ndarray) -> bool:
        """Levels as flat float arrays (price, qty interleaved); whether the book is now
        crossed (best bid >= best ask)."""
        if fb.dtype == _F8 and fa.dtype == _F8 and fb.flags.c_contiguous and fa.flags.c_contiguous:
            if not _APPLY:
                _APPLY.append(entry_point(_book_apply, self._bk, self._bq, self._ak, self._aq,
                                          self._counts, fb, fa))  # fmt: skip
            r = _APPLY[0](self._bk, self._bq, self._ak, self._aq, self._counts, fb, fa)
        else:
            r = _book_apply(self._bk, self._bq, self._ak, self._aq, self._counts, fb, fa)
        if r < 0:
            nb, na = self._counts.tolist()
            self._grow(nb + len(fb) // 2, na + len(fa) // 2)
            r = _book_apply(self._bk, self._bq, self._ak, self._aq, self._counts, fb, fa)
        return r == 1

    def _grow(self, nb: int, na: int) -> None:
        """Arrays for at least ``nb`` bid and ``na`` ask levels, keeping the current ones."""
        for kname, qname, need in (("_bk", "_bq", nb), ("_ak", "_aq", na)):
            keys = getattr(self, kname)
            if need > len(keys):
                cap = max(need, 2 * len(keys))
                for name in (kname, qname):
                    old = getattr(self, name)
                    arr = np.empty(cap)
                    arr[: len(old)] = old
                    setattr(self, name, arr)

    @property
    def bids(self) -> dict[float, float]:
        n = int(self._counts[0])
        return dict(zip(self._bk[:n].tolist(), self._bq[:n].tolist(), strict=True))

    @property
    def asks(self) -> dict[float, float]:
        n = int(self._counts[1])
        return dict(zip((-self._ak[:n]).tolist(), self._aq[:n].tolist(), strict=True))

    def best_bid(self) -> float | None:
        n = int(self._counts[0])
        return float(self._bk[n - 1]) if n else None

    def best_ask(self) -> float | None:
        n = int(self._counts[1])
        return float(-self._ak[n - 1]) if n else None

    def crossed(self) -> bool:
        b = self.best_bid()
        a = self.best_ask()
        return b is not None and a is not None and b >= a


def warm() -> None:
    """Load the light book's kernel (and make its entry point) before a stream opens: a first
    call inside it would stall the stream while numba loads it."""
    LightBook().apply_flat(np.array([1.0, 2.0]), np.array([1.5, 2.0]))


class LightBookRef:
    """Plain-Python reference of :class:`LightBook`: dicts of levels, heaps with lazy deletion."""

    def __init__(self) -> None:
        self.bids: dict[float, float] = {}
        self.asks: dict[float, float] = {}
        self._bh: list[float] = []  # negated bid prices
        self._ah: list[float] = []

    def clear(self) -> None:
        self.bids.clear()
        self.asks.clear()
        self._bh.clear()
        self._ah.clear()

    def load(self, bids: list[Level], asks: list[Level]) -> None:
        self.clear()
        self.bids.update((p, q) for p, q in bids if q > 0.0)
        self.asks.update((p, q) for p, q in asks if q > 0.0)
        self._bh = [-p for p in self.bids]
        self._ah = list(self.asks)
        heapq.heapify(self._bh)
        heapq.heapify(self._ah)

    def apply(self, bids: list[Level], asks: list[Level]) -> None:
        book, heap = self.bids, self._bh
        for p, q in bids:
            if q > 0.0:
                if p not in book:
                    heapq.heappush(heap, -p)
                book[p] = q
            else:
                book.pop(p, None)
        book, heap = self.asks, self._ah
        for p, q in asks:
            if q > 0.0:
                if p not in book:
                    heapq.heappush(heap, p)
                book[p] = q
            else:
                book.pop(p, None)
        # Heaps keep removed prices until they surface; rebuild when mostly garbage.
        if len(self._bh) > 4 * len(self.bids) + 256:
            self._bh = [-p for p in self.bids]
            heapq.heapify(self._bh)
        if len(self._ah) > 4 * len(self.asks) + 256:
            self._ah = list(self.asks)
            heapq.heapify(self._ah)

    def best_bid(self) -> float | None:
        heap, book = self._bh, self.bids
        while heap and -heap[0] not in book:
            heapq.heappop(heap)
        return -heap[0] if heap else None

    def best_ask(self) -> float | None:
        heap, book = self._ah, self.asks
        while heap and heap[0] not in book:
            heapq.heappop(heap)
        return heap[0] if heap else None

    def crossed(self) -> bool:
        b = self.best_bid()
        a = self.best_ask()
        return b is not None and a is not None and b >= a


def snapshot_crossed(snap: DepthSnapshot) -> bool:
    bb = max((p for p, q in snap.bids if q > 0.0), default=None)
    ba = min((p for p, q in snap.asks if q > 0.0), default=None)
    return bb is not None and ba is not None and bb >= ba


class BookSync:
    """Decides, diff by diff, whether the local book is in step with Binance's stream.

    One instance per symbol and connection. Feed every ``depthUpdate`` of the symbol to
    :meth:`on_diff` and every REST depth snapshot to :meth:`on_snapshot`, in the order they were
    received, and carry out the returned actions in order.
    """

    def __init__(
        self,
        market: Market | str,
        max_buffer: int = DEFAULT_MAX_BUFFER,
        track_book: bool = True,
    ) -> None:
        self.market = Market(market)
        if max_buffer < 1:
            raise ValueError(f"max_buffer must be >= 1, got {max_buffer}")
        self.max_buffer = max_buffer
        self.state = SyncState.AWAITING_SNAPSHOT
        self.counters = SyncCounters()
        self.book: LightBook | None = LightBook() if track_book else None
        self.last_update_id: int | None = None  # id the book is at (None while invalid)
        self._buffer: deque[DepthDiff] = deque()
        self._requested = False  # a NEED_SNAPSHOT is outstanding
        self._futures = self.market is Market.FUTURES

    # --- queries --------------------------------------------------------------------------

    @property
    def book_valid(self) -> bool:
        return self.state is not SyncState.AWAITING_SNAPSHOT

    @property
    def buffered(self) -> int:
        return len(self._buffer)

    @property
    def first_buffered_id(self) -> int | None:
        return self._buffer[0].first_id if self._buffer else None

    # --- inputs ---------------------------------------------------------------------------

    def on_diff(self, diff: DepthDiff) -> list[Action]:
        if (diff.prev_final_id is not None) != self._futures:
            raise ValueError(
                f"{self.market} book sync fed a "
                + ("futures" if diff.prev_final_id is not None else "spot")
                + " depthUpdate"
            )
        self.counters.diffs += 1
        if self.state is SyncState.AWAITING_SNAPSHOT:
            return self._buffer_diff(diff)
        out: list[Action] = []
        self._step(diff, out)
        return out

    def apply_next(self, first: int, final: int, prev: int, fb: np.ndarray, fa: np.ndarray) -> int:
        """The live path's common case without objects: a diff (ids, and its levels as flat
        float arrays) that continues the sequence while SYNCED. Returns 0 when it does not (or
        may not) continue it (nothing changed: feed it to :meth:`on_diff`), 1 when applied, 2
        when applied and the book is now crossed (invalidated, snapshot requested: the caller
        carries out APPLY, RESYNC(crossed), NEED_SNAPSHOT as :meth:`on_diff` would have said).
        ``prev`` is ``pu``, only read on futures; the caller checks the market matches."""
        if self.state is not SyncState.SYNCED:
            return 0
        last = self.last_update_id
        assert last is not None
        if self._futures:
            if prev != last or final <= last:
                return 0
        elif first != last + 1:
            return 0
        c = self.counters
        c.diffs += 1
        self.last_update_id = final
        c.applied += 1
        book = self.book
        if book is not None and book.apply_flat(fb, fa):
            c.crossed += 1
            c.resyncs += 1
            self._invalidate()
            self._request(Reason.CROSSED)
            return 2
        return 1

    def on_snapshot(self, snap: DepthSnapshot) -> list[Action]:
        c = self.counters
        if self.state is not SyncState.AWAITING_SNAPSHOT:
            c.snapshots_ignored += 1
            return [Action(ActionKind.IGNORED, snapshot=snap, reason=Reason.NOT_NEEDED)]
        self._requested = False
        if snapshot_crossed(snap):
            c.snapshots_crossed += 1
            return [self._request(Reason.CROSSED_SNAPSHOT)]
        lid = snap.last_update_id
        if self._buffer:
            first = self._buffer[0].first_id
            if (lid < first) if self._futures else (lid + 1 < first):
                c.snapshots_too_old += 1
                return [self._request(Reason.TOO_OLD)]
        c.rebases += 1
        self.state = SyncState.AWAITING_FIRST_DIFF
        self.last_update_id = lid
        if self.book is not None:
            self.book.load(snap.bids, snap.asks)
        out = [Action(ActionKind.REBASE, snapshot=snap)]
        pending = self._buffer
        self._buffer = deque()
        while pending:
            d = pending.popleft()
            self._step(d, out)
            if self.state is SyncState.AWAITING_SNAPSHOT:
                # A gap inside the buffer: the gapping diff was re-buffered, keep the rest after it.
                self._buffer.extend(pending)
                c.buffered += len(pending)
                break
        return out

    def reset(self, reason: str = Reason.RESET) -> list[Action]:
        """Start over (new connection): buffered diffs are discarded, the book is invalid."""
        was_valid = self.book_valid
        self.counters.discarded += len(self._buffer)
        self._buffer.clear()
        self._invalidate()
        self._requested = False
        if was_valid:
            self.counters.resyncs += 1
            return [Action(ActionKind.RESYNC, reason=reason)]
        return []

    def report_crossed(self) -> list[Action]:
        """For callers with their own book (``track_book=False``): their book is crossed."""
        if not self.book_valid:
            return []
        self.counters.crossed += 1
        self.counters.resyncs += 1
        self._invalidate()
        return [Action(ActionKind.RESYNC, reason=Reason.CROSSED), self._request(Reason.CROSSED)]

    # --- internals ------------------------------------------------------------------------

    def _request(self, reason: str) -> Action:
        self._requested = True
        self.counters.snapshot_requests += 1
        return Action(ActionKind.NEED_SNAPSHOT, reason=reason)

    def _invalidate(self) -> None:
        self.state = SyncState.AWAITING_SNAPSHOT
        self.last_update_id = None
        if self.book is not None:
            self.book.clear()

    def _buffer_diff(self, diff: DepthDiff) -> list[Action]:
        c = self.counters
        buf = self._buffer
        if len(buf) >= self.max_buffer:
            buf.popleft()
            c.buffered_overflow += 1
        buf.append(diff)
        c.buffered += 1
        out = [Action(ActionKind.BUFFER, diff=diff)]
        if not self._requested:
            out.append(self._request(Reason.START))
        return out

    def _step(self, d: DepthDiff, out: list[Action]) -> None:
        """One diff against a valid book (after a snapshot): drop, apply, or declare a gap."""
        c = self.counters
        last = self.last_update_id
        assert last is not None
        if self.state is SyncState.AWAITING_FIRST_DIFF:
            if self._futures:
                stale = d.final_id < last
                ok = d.first_id <= last <= d.final_id
            else:
                stale = d.final_id <= last
                ok = d.first_id <= last + 1 <= d.final_id
            if stale:
                c.dropped_stale += 1
                out.append(Action(ActionKind.DROP, diff=d, reason=Reason.STALE))
                return
            if not ok:
                self._gap(d, Reason.NO_STRADDLE, out)
                return
            self.state = SyncState.SYNCED
        elif d.final_id <= last:
            c.dropped_stale += 1
            out.append(Action(ActionKind.DROP, diff=d, reason=Reason.STALE))
            return
        elif self._futures:
            if d.prev_final_id != last:
                self._gap(d, Reason.GAP, out)
                return
        elif d.first_id != last + 1:
            if d.first_id > last + 1:
                self._gap(d, Reason.GAP, out)
                return
            c.overlaps += 1
        self.last_update_id = d.final_id
        c.applied += 1
        out.append(Action(ActionKind.APPLY, diff=d))
        book = self.book
        if book is not None:
            fl = d.flat
            fb, fa = fl if fl is not None else (flat_levels(d.bids), flat_levels(d.asks))
            if book.apply_flat(fb, fa):
                c.crossed += 1
                c.resyncs += 1
                self._invalidate()
                out.append(Action(ActionKind.RESYNC, diff=d, reason=Reason.CROSSED))
                out.append(self._request(Reason.CROSSED))

    def _gap(self, d: DepthDiff, reason: str, out: list[Action]) -> None:
        c = self.counters
        c.gaps += 1
        c.resyncs += 1
        self._invalidate()
        self._buffer.append(d)  # the gapping diff is good data for the next snapshot
        c.buffered += 1
        out.append(Action(ActionKind.RESYNC, diff=d, reason=reason))
        out.append(self._request(reason))


kernel_cache.bind(__name__, kernel_cache.BINANCE)  # before any kernel loads: kernel_cache.py
