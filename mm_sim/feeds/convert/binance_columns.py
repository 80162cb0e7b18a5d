"""Column-wise staging of converted events, checked chunk by chunk on their way to the writer.

Why columns: appending to typed arrays is several times cheaper than filling numpy records one
field at a time, and a whole chunk can then be checked with vectorized code (kinds, exchange
time range, local time order, the price/quantity grid).
"""

from __future__ import annotations

from array import array

import numpy as np
from numba import njit

from mm_sim import kernel_cache
from mm_sim.events import EVENT_DTYPE, KIND_CLEAR, KIND_DEPTH, KIND_TRADE, FeedWriter
from mm_sim.venues.binance.fill_events import fill_diff
from mm_sim.venues.binance.messages import Level

_CHUNK = 1 << 16
_MAX_DECIMALS = 18


def _grid_decimals(x: np.ndarray, start: int) -> int:
    """Fewest decimals >= ``start`` putting every value of ``x`` on a 10**-d grid.

    Exact for doubles parsed from decimal strings: for an on-grid value, ``x * 10**d`` is within
    far less than 0.5 of the integer k, and ``k / 10**d`` rounds back to the same double.
    """
    d = start
    while d < _MAX_DECIMALS:
        if on_grid(x, 10.0**d):
            return d
        d += 1
    return d


@njit(cache=True)
def on_grid(x: np.ndarray, scale: float) -> bool:
    """``np.array_equal(np.rint(x * scale) / scale, x)`` in one pass without temporaries (the
    same float operations, value by value; tests/test_convert_binance_book.py compares them)."""
    for i in range(x.shape[0]):
        v = x[i]
        if np.rint(v * scale) / scale != v:
            return False
    return True


def _off_grid(x: np.ndarray, step: float) -> int:
    r = x / step
    n = np.rint(r)
    # Absolute slack on the tick count (plus float error, ~1e-16 relative, for huge counts); a
    # value that is not zero but rounds to zero steps is off too (a step far larger than the
    # values, which the slack alone would let through).
    return int(np.count_nonzero((np.abs(r - n) > 1e-6 + 1e-12 * np.abs(r)) | ((n == 0) & (x != 0))))


@njit(cache=True)
def chunk_facts(
    rec: np.ndarray, kind_counts: np.ndarray, px: np.ndarray, qt: np.ndarray
) -> tuple[int, int, int, int, int, int]:
    """One pass over a chunk for its checks (the numpy version built a mask per question):
    kinds counted into ``kind_counts``, the prices of priced events (all but CLEAR) into ``px``
    and their positive quantities into ``qt``; returns (market events, their lowest and highest
    exch_ts, prices, quantities, local_ts steps backwards inside the chunk)."""
    n_market = 0
    lo = 0
    hi = 0
    n_px = 0
    n_qt = 0
    back = 0
    for i in range(rec.shape[0]):
        r = rec[i]
        k = r.kind
        if 0 <= k < kind_counts.shape[0]:
            kind_counts[k] += 1
        if k == KIND_DEPTH or k == KIND_TRADE:  # noqa: SIM109 (numba)
            t = r.exch_ts
            if n_market == 0 or t < lo:
                lo = t
            if n_market == 0 or t > hi:
                hi = t
            n_market += 1
        if k != KIND_CLEAR:
            px[n_px] = r.price
            n_px += 1
            q = r.qty
            if q > 0.0:
                qt[n_qt] = q
                n_qt += 1
        if i > 0 and r.local_ts < rec[i - 1].local_ts:
            back += 1
    return n_market, lo, hi, n_px, n_qt, back


class Columns:
    """Column-wise event staging: appending to typed arrays is several times cheaper than
    assigning fields of a numpy record one by one, and level lists go in with one extend.
    Each chunk is also checked on its way out (vectorized): kinds, exchange-time range, local
    time order, and the price/qty grid (decimals to infer, or how many values miss a given
    tick/lot)."""

    def __init__(self, writer: FeedWriter) -> None:
        self.writer = writer
        self.price_decimals = 0
        self.qty_decimals = 0
        self.priced = 0  # events carrying a price (depth, snapshot, trade)
        self.sized = 0  # of them, those with a quantity > 0 (the ones checked against the lot)
        self.tick: float | None = None  # when known up front: count values off the grid
        self.lot: float | None = None
        self.off_tick = 0
        self.off_lot = 0
        self.kind_counts = np.zeros(8, dtype=np.int64)
        self.first_exch: int | None = None
        self.last_exch: int | None = None
        self.local_backwards = 0
        self._last_local: int | None = None
        self._scratch = np.empty(256, dtype=EVENT_DTYPE)  # diff_flat's events before copying
        # Records staged for the writer, in order, before the columns: the block kernel writes
        # its events straight into ``stage[n:]`` (stage_for / staged), nothing is copied twice.
        self.stage = np.empty(2 * _CHUNK, dtype=EVENT_DTYPE)
        self.n = 0
        self._px = np.empty(0)  # a chunk's prices and positive quantities (chunk_facts)
        self._qt = np.empty(0)
        self._reset()

    def _reset(self) -> None:
        self.ex = array("q")
        self.lo = array("q")
        self.px = array("d")
        self.qt = array("d")
        self.kd = array("i")
        self.sd = array("i")

    def one(self, exch: int, local: int, kind: int, side: int, price: float, qty: float) -> None:
        self.ex.append(exch)
        self.lo.append(local)
        self.kd.append(kind)
        self.sd.append(side)
        self.px.append(price)
        self.qt.append(qty)
        if len(self.ex) + self.n >= _CHUNK:
            self.flush()

    def levels(self, levels: list[Level], side: int, kind: int, exch: int, local: int) -> None:
        n = len(levels)
        if not n:
            return
        self.px.extend([p for p, _ in levels])
        self.qt.extend([q for _, q in levels])
        self.ex.extend([exch] * n)
        self.lo.extend([local] * n)
        self.kd.extend([kind] * n)
        self.sd.extend([side] * n)
        if len(self.ex) + self.n >= _CHUNK:
            self.flush()

    def diff_flat(self, fb: np.ndarray, fa: np.ndarray, exch: int, local: int) -> None:
        """A diff's levels (flat price, qty arrays) as DEPTH events, deletions of both sides
        first: fill_events.fill_diff, whose reference is messages.deletions_first (what
        :meth:`levels` is given on the general path)."""
        n = (len(fb) + len(fa)) // 2
        if n > len(self._scratch):
            self._scratch = np.empty(2 * n, dtype=EVENT_DTYPE)
        rec = self._scratch[: fill_diff(self._scratch, fb, fa, exch, local)]
        self.ex.frombytes(rec["exch_ts"].tobytes())
        self.lo.frombytes(rec["local_ts"].tobytes())
        self.px.frombytes(rec["price"].tobytes())
        self.qt.frombytes(rec["qty"].tobytes())
        self.kd.frombytes(rec["kind"].tobytes())
        self.sd.frombytes(rec["side"].tobytes())
        if len(self.ex) + self.n >= _CHUNK:
            self.flush()

    def records(self, rec: np.ndarray) -> None:
        """Events already in EVENT_DTYPE records, staged after those appended before them."""
        self.stage_for(len(rec))
        self.stage[self.n : self.n + len(rec)] = rec
        self.staged(self.n + len(rec))

    def stage_for(self, room: int) -> np.ndarray:
        """The staging buffer, with the events appended one by one moved into it and room for
        ``room`` more after ``self.n``: a caller (the block kernel) writes there and then says
        how far with :meth:`staged`."""
        self._seal()
        if self.n + room > len(self.stage):
            if self.n:
                self.flush()
            if room > len(self.stage):
                self.stage = np.empty(room + _CHUNK, dtype=EVENT_DTYPE)
        return self.stage

    def staged(self, n: int) -> None:
        """The stage holds ``n`` events now; past a chunk they go to the writer."""
        self.n = n
        if n >= _CHUNK:
            self.flush()

    def _seal(self) -> None:
        """The events appended one by one so far, into the stage (order kept)."""
        k = len(self.ex)
        if not k:
            return
        if self.n + k > len(self.stage):
            grown = np.empty(self.n + k + _CHUNK, dtype=EVENT_DTYPE)
            grown[: self.n] = self.stage[: self.n]
            self.stage = grown
        rec = self.stage[self.n : self.n + k]
        rec["exch_ts"] = np.frombuffer(self.ex, dtype=np.int64)
        rec["local_ts"] = np.frombuffer(self.lo, dtype=np.int64)
        rec["price"] = np.frombuffer(self.px, dtype=np.float64)
        rec["qty"] = np.frombuffer(self.qt, dtype=np.float64)
        rec["kind"] = np.frombuffer(self.kd, dtype=np.int32)
        rec["side"] = np.frombuffer(self.sd, dtype=np.int32)
        self.n += k
        self._reset()

    def flush(self) -> None:
        self._seal()
        if not self.n:
            return
        rec = self.stage[: self.n]
        self.n = 0
        if len(self._px) < len(rec):
            self._px = np.empty(len(rec))
            self._qt = np.empty(len(rec))
        n_market, lo, hi, n_px, n_qt, back = chunk_facts(rec, self.kind_counts, self._px, self._qt)
        if n_market:
            self.first_exch = lo if self.first_exch is None else min(lo, self.first_exch)
            self.last_exch = hi if self.last_exch is None else max(hi, self.last_exch)
        px = self._px[:n_px]
        qt = self._qt[:n_qt]
        self.priced += n_px
        if len(px):
            self.price_decimals = _grid_decimals(px, self.price_decimals)
            if self.tick is not None:
                self.off_tick += _off_grid(px, self.tick)
        self.sized += n_qt
        if len(qt):
            self.qty_decimals = _grid_decimals(qt, self.qty_decimals)
            if self.lot is not None:
                self.off_lot += _off_grid(qt, self.lot)
        self.local_backwards += back
        if self._last_local is not None and int(rec[0]["local_ts"]) < self._last_local:
            self.local_backwards += 1
        self._last_local = int(rec[-1]["local_ts"])
        self.writer.write(rec)


kernel_cache.bind(__name__, kernel_cache.BINANCE)  # before any kernel loads: kernel_cache.py
