"""The hftbacktest capture's steady state in one compiled call per block of lines.

Why: after the line scanner removed ``json``, what was left was Python per message — receive-time
bookkeeping, counters, the venue's "does this diff continue the book" step, the crossed-touch
check, the events — about 2 µs a line on ~100k lines a file. :func:`run_block` does all of it
for the lines that make up nearly every capture, in the order the Python code did:

- a ``bookTicker`` (counted, the last one of the symbol kept for the stats);
- a depth diff of the symbol that continues a synced book (applied to the touch book, its events
  written, a crossed book cleared), or of another symbol (counted);
- a trade (spot, or futures with ``X`` = ``MARKET``), its event written.

Every other line — a snapshot, a diff the book cannot simply continue, a snapshot due by
receive time, a bad or unusual line — stops the kernel *before* it (nothing about it changed):
the caller reads it the way it did before (:func:`mm_sim.feeds.convert.binance_fast.py_line`)
and calls the kernel again after it. So the kernel only ever takes lines whose outcome the
Python code would have decided the same way; the conversion's output is compared byte for byte
with the general path's (tests/test_convert_binance_fast.py).

State crosses the boundary as one int64 vector (``S_*``) that the caller loads from and stores
back into the Python objects around each call (:class:`BlockState`).
"""

from __future__ import annotations

from typing import Any

import numpy as np
from numba import njit

from mm_sim import kernel_cache
from mm_sim.events import EVENT_DTYPE, KIND_CLEAR, KIND_TRADE
from mm_sim.feeds.convert.base import I64
from mm_sim.feeds.convert.binance_book import TouchBook, fits, touch_apply
from mm_sim.feeds.convert.binance_columns import chunk_facts, on_grid
from mm_sim.feeds.convert.binance_fast import (
    _BOOK_TICKER,
    L_SIZE,
    L_SYM0,
    L_SYM1,
    BlockScanner,
    _ends_with,
    _flat_object,
    _receive_ns,
    depth_times_ok,
    flag_word,
    line_end,
    py_line,
    trade_times_ok,
    words_of,
)
from mm_sim.feeds.convert.binance_inputs import MS, OnePassMiss, line_symbols, scan_flags
from mm_sim.feeds.convert.binance_lines import AT_TRADE, MARKET, fill_diff_sorted, same
from mm_sim.venues.binance.fastparse import (
    I_E,
    I_FINAL,
    I_FIRST,
    I_HAS_PU,
    I_NA,
    I_NB,
    I_PREV,
    I_SIZE,
    I_STREAM0,
    I_STREAM1,
    I_SYM0,
    I_SYM1,
    T_E,
    T_HAS_T,
    T_M,
    T_SIZE,
    T_SYM0,
    T_SYM1,
    T_T,
    T_X0,
    T_X1,
    _trade_payload,
    _unwrap,
    _whole,
    parse_depth_bytes,
)

# S_*: the state vector
S_LINENO = 0
S_NMSGS = 1
S_LAST_RECV = 2
S_RECV_BACK = 3
S_FIRST_LOCAL = 4
S_HAS_FIRST = 5
S_SEEN_TRADE = 6
S_N_TICKER = 7  # counts since the last store (added to the Counter then)
S_N_DEPTH = 8
S_N_TRADE = 9
S_OTHER = 10
S_ZERO_QTY = 11
S_LAST_LOCAL = 12
S_LAST_EXCH = 13
S_NEXT_SNAP = 14
S_SYNCED = 15  # the book sync is SYNCED (and exists)
S_LAST_ID = 16
S_FUTURES = 17
S_DIFFS = 18  # sync counters since the last store
S_APPLIED = 19
S_OFF_N = 20
S_OFF_STEP = 21
S_OFF_TICK = 22
S_NEV = 23
S_TICK_START = 24  # the latest bookTicker of the symbol (when S_HAS_TICK)
S_TICK_END = 25
S_TICK_LOCAL = 26
S_TICK_LINENO = 27
S_HAS_TICK = 28
S_ONE_SYMBOL = 29  # 1: lines of other symbols are the caller's (it collects the symbols seen)
S_TOOK_SEL = 30  # a line of the symbol was taken
S_SAW_DIFF = 31  # a depth diff was taken (the pre-scan's has_diffs)
S_SAW_PU = 32  # one with ``pu`` (has_pu)
S_SIZE = 33

# why run_block returned
R_MORE = 0  # no complete line left: read more
R_LINE = 1  # the line at the returned position is the caller's
R_FLUSH = 2  # the event buffer is full
R_GROW = 4  # the line at the returned position needs larger buffers
R_CROSSED = 3  # the last line applied crossed the book (its CLEAR is written)

OFFSET_SAMPLES = 50_000  # binance_stream keeps up to twice this many, then halves

_STREAM0 = len(b'{"stream":"')  # where a combined stream's name starts


@njit(cache=True)
def _seen(st: np.ndarray, local: int) -> None:
    """StreamConverter._seen, bar the snapshots due (the caller stopped before those)."""
    st[S_NMSGS] += 1
    if local < st[S_LAST_RECV]:
        st[S_RECV_BACK] += 1
    st[S_LAST_RECV] = local
    if st[S_HAS_FIRST] == 0:
        st[S_HAS_FIRST] = 1
        st[S_FIRST_LOCAL] = local


@njit(cache=True)
def _sample(st: np.ndarray, offs: np.ndarray, off: int) -> None:
    """StreamConverter._sample_offset: every step-th offset, halved when twice the budget."""
    st[S_OFF_TICK] += 1
    if st[S_OFF_TICK] < st[S_OFF_STEP]:
        return
    st[S_OFF_TICK] = 0
    offs[st[S_OFF_N]] = off
    st[S_OFF_N] += 1
    if st[S_OFF_N] >= 2 * OFFSET_SAMPLES:
        for k in range(OFFSET_SAMPLES):
            offs[k] = offs[2 * k]
        st[S_OFF_N] = OFFSET_SAMPLES
        st[S_OFF_STEP] *= 2


@njit(cache=True)
def _event(
    out: np.ndarray, k: int, exch: int, local: int, kind: int, side: int, p: float, q: float
) -> None:
    r = out[k]
    r.exch_ts = exch
    r.local_ts = local
    r.price = p
    r.qty = q
    r.kind = kind
    r.side = side


@njit(cache=True)
def run_block(
    buf: np.ndarray,
    pos: int,
    st: np.ndarray,
    sel: np.ndarray,
    stream_ok: np.ndarray,
    out: np.ndarray,
    offs: np.ndarray,
    keys: np.ndarray,
    qtys: np.ndarray,
    used: np.ndarray,
    heap: np.ndarray,
    hslot: np.ndarray,
    meta: np.ndarray,
    row: np.ndarray,
    di: np.ndarray,
    ti: np.ndarray,
    vb: np.ndarray,
    va: np.ndarray,
    tv: np.ndarray,
    scratch: np.ndarray,
) -> tuple[int, int]:
    """Take the lines of ``buf`` from ``pos`` on (see the module docstring): (position of the
    first line not taken, R_* reason). ``sel``: the symbol's bytes; ``stream_ok``: the one
    combined-stream name of diffs known not to be a partial book stream."""
    n = buf.shape[0]
    words = words_of(buf)
    while pos < n:
        e = line_end(buf, words, pos)
        if e >= n:
            return pos, R_MORE
        if (e - pos) // 2 + 2 > vb.shape[0] or (e - pos) // 8 + 2 > out.shape[0]:
            return pos, R_GROW  # a line longer than the buffers were made for
        if st[S_NEV] + (e - pos) // 8 + 2 > out.shape[0]:
            return pos, R_FLUSH
        if e == pos:  # blank: skipped, as the general path does
            st[S_LINENO] += 1
            pos = e + 1
            continue
        local, js = _receive_ns(buf, pos, e)
        if js < 0 or local >= st[S_NEXT_SNAP]:
            return pos, R_LINE
        msg = buf[js:e]
        start, se = _unwrap(msg)
        if start < 0:
            return pos, R_LINE
        if se >= 0 and _ends_with(msg, se, _BOOK_TICKER):
            if not _whole(msg, _flat_object(msg, start, row), True):
                return pos, R_LINE
            ours = same(msg, row[L_SYM0], row[L_SYM1], sel)
            if not ours and st[S_ONE_SYMBOL] == 1:
                return pos, R_LINE
            st[S_LINENO] += 1
            _seen(st, local)
            if ours:
                st[S_TOOK_SEL] = 1
                st[S_N_TICKER] += 1
                st[S_TICK_START] = pos
                st[S_TICK_END] = e
                st[S_TICK_LOCAL] = local
                st[S_TICK_LINENO] = st[S_LINENO]
                st[S_HAS_TICK] = 1
            else:
                st[S_OTHER] += 1
            pos = e + 1
            continue
        # a trade stream's line is a trade (anything else there goes to Python anyway)
        is_trade = se >= 0 and _ends_with(msg, se, AT_TRADE)
        if not is_trade and parse_depth_bytes(msg, di, vb, va):
            if di[I_STREAM1] >= 0 and not same(msg, di[I_STREAM0], di[I_STREAM1], stream_ok):
                return pos, R_LINE
            st[S_SAW_DIFF] = 1
            if di[I_HAS_PU] == 1:
                st[S_SAW_PU] = 1
            if not same(msg, di[I_SYM0], di[I_SYM1], sel):
                if st[S_ONE_SYMBOL] == 1:
                    return pos, R_LINE
                st[S_LINENO] += 1
                _seen(st, local)
                st[S_OTHER] += 1
                pos = e + 1
                continue
            if st[S_SYNCED] == 0 or di[I_HAS_PU] != st[S_FUTURES] or not depth_times_ok(di):
                return pos, R_LINE
            last = st[S_LAST_ID]
            final = di[I_FINAL]
            if st[S_FUTURES] == 1:
                if di[I_PREV] != last or final <= last:
                    return pos, R_LINE
            elif di[I_FIRST] != last + 1:
                return pos, R_LINE
            nb = 2 * di[I_NB]
            na = 2 * di[I_NA]
            if not fits(keys, heap, meta, 0, nb // 2) or not fits(keys, heap, meta, 1, na // 2):
                return pos, R_LINE
            # BookSync.apply_next, then the converter's events for the diff
            st[S_TOOK_SEL] = 1
            st[S_LINENO] += 1
            _seen(st, local)
            st[S_DIFFS] += 1
            st[S_APPLIED] += 1
            st[S_LAST_ID] = final
            fb = vb[:nb]
            fa = va[:na]
            crossed = touch_apply(keys, qtys, used, heap, hslot, meta, fb, fa) == 1
            st[S_N_DEPTH] += 1
            exch = di[I_E] * MS
            st[S_LAST_LOCAL] = local
            st[S_LAST_EXCH] = exch
            _sample(st, offs, local - exch)
            k = st[S_NEV]
            k += fill_diff_sorted(out[k:], fb, fa, exch, local, scratch)
            if crossed:  # no book from here: the caller invalidates the sync
                _event(out, k, exch, local, KIND_CLEAR, 0, 0.0, 0.0)
                k += 1
            st[S_NEV] = k
            pos = e + 1
            if crossed:
                return pos, R_CROSSED
            continue
        if _whole(msg, _trade_payload(msg, start, ti, tv), se >= 0):
            if ti[T_X1] >= 0 and not same(msg, ti[T_X0], ti[T_X1], MARKET):
                return pos, R_LINE  # skipped by order type: counted by name in Python
            if se >= 0 and flag_word(msg, _STREAM0, se):
                return pos, R_LINE
            ours = same(msg, ti[T_SYM0], ti[T_SYM1], sel)
            if not ours and st[S_ONE_SYMBOL] == 1:
                return pos, R_LINE
            if ours and not trade_times_ok(ti):
                return pos, R_LINE
            st[S_LINENO] += 1
            _seen(st, local)
            if not ours:
                st[S_OTHER] += 1
                pos = e + 1
                continue
            st[S_TOOK_SEL] = 1
            st[S_N_TRADE] += 1
            st[S_SEEN_TRADE] = 1
            qty = tv[1]
            if qty <= 0.0:
                st[S_ZERO_QTY] += 1
            else:
                ev = ti[T_E]
                exch = ev * MS
                st[S_LAST_LOCAL] = local
                st[S_LAST_EXCH] = exch
                _sample(st, offs, local - exch)
                tm = ti[T_T] if ti[T_HAS_T] == 1 else ev
                side = -1 if ti[T_M] == 1 else 1
                _event(out, st[S_NEV], tm * MS, local, KIND_TRADE, side, tv[0], qty)
                st[S_NEV] += 1
            pos = e + 1
            continue
        return pos, R_LINE
    return pos, R_MORE


def _clamp(v: int) -> int:
    return -I64 if v < -I64 else I64 - 1 if v >= I64 else v


FLAG_WORDS = (b"pu", b"aggTrade", b"depthUpdate")


class BlockState:
    """The kernel's buffers, and the state vector loaded from / stored into the Python objects
    (the converter ``conv``, the file ``f``, the sync and its touch book) around each call."""

    def __init__(self, conv: Any, f: Any) -> None:
        self.conv = conv
        self.f = f
        self.st = np.zeros(S_SIZE, dtype=np.int64)
        # writable copies: one compiled signature of run_block (a read-only array is another)
        self.sel = np.frombuffer(conv.symbol.encode("ascii", "replace"), dtype=np.uint8).copy()
        self.stream_ok = np.zeros(0, dtype=np.uint8)
        self.row = np.zeros(L_SIZE, dtype=np.int64)
        self.di = np.zeros(I_SIZE, dtype=np.int64)
        self.ti = np.zeros(T_SIZE, dtype=np.int64)
        self.vb = np.empty(1 << 14)  # one line's levels (grown for a longer line: R_GROW)
        self.va = np.empty(1 << 14)
        self.tv = np.zeros(2)
        self.scratch = np.empty(1 << 14)  # a side's removed prices (fill_diff_sorted)
        self._empty_book = TouchBook(4)

    def run(self, block: bytes, pos: int) -> tuple[int, int]:
        """One kernel call from ``pos``: load, run, store. The events go straight into the
        columns' staging buffer (Columns.stage_for)."""
        buf = np.frombuffer(block, dtype=np.uint8)
        cols = self.conv.cols
        out = cols.stage_for(0)
        self.load()
        self.st[S_NEV] = cols.n
        sync = self.conv.sync
        book = sync.book if sync is not None and isinstance(sync.book, TouchBook) else None
        b = book if book is not None else self._empty_book
        if book is None:
            self.st[S_SYNCED] = 0
        res = run_block(
            buf, pos, self.st, self.sel, self.stream_ok, out, self.conv.offsets.arr,
            *b.arrays(),
            self.row, self.di, self.ti, self.vb, self.va, self.tv, self.scratch,
        )  # fmt: skip
        self.store(block)
        pos, why = int(res[0]), int(res[1])
        if why == R_FLUSH:
            cols.flush()
            return self.run(block, pos)
        if why == R_GROW:  # buffers for that line (bounded by the longest line, not the input)
            need = block.index(b"\n", pos) - pos + 16
            levels = max(len(self.vb), need // 2 + 2)
            self.vb, self.va, self.scratch = np.empty(levels), np.empty(levels), np.empty(levels)
            cols.stage_for(need // 8 + 2)
            return self.run(block, pos)
        return pos, why

    def load(self) -> None:
        conv, f, st = self.conv, self.f, self.st
        sync = conv.sync
        off = conv.offsets
        last_id = sync.last_update_id if sync is not None else None
        synced = (
            sync is not None and sync.state == "synced" and last_id is not None
            and 0 <= last_id < I64  # an id the general parser took beyond int64: Python's
        )  # fmt: skip
        st[:] = [
            f.lineno, f.n_msgs, _clamp(f.last_recv), f.recv_back,
            _clamp(f.first_local or 0), int(f.first_local is not None), int(f.seen_trade),
            0, 0, 0, 0, 0,
            _clamp(conv.last_local), _clamp(conv.last_exch), _clamp(conv.next_snap_ts),
            int(synced), last_id if synced else 0, int(conv.market == "futures"),
            0, 0, off.n, off.step, off.tick, 0, 0, 0, 0, 0, 0,
            int(conv.one_pass), 0, 0, 0,
        ]  # fmt: skip
        self.loaded = st.tolist()

    def store(self, block: bytes) -> None:
        conv, f = self.conv, self.f
        (
            f.lineno, f.n_msgs, last_recv, f.recv_back, first, has_first, seen_trade,
            n_tick, n_depth, n_trade, other, zero, last_local, last_exch, _,
            _, last_id, _, diffs, applied, off_n, off_step, off_tick, nev,
            t0, t1, t_local, t_line, has_tick, _, took_sel, saw_diff, saw_pu,
        ) = self.st.tolist()  # fmt: skip
        if took_sel:
            f.inp.symbols.add(conv.symbol)
        if saw_diff:
            f.inp.has_diffs = True
        if saw_pu:
            f.inp.has_pu = True
        was = self.loaded
        # Times the general parser read beyond int64 were clamped on load: only what the kernel
        # changed goes back.
        if last_recv != was[S_LAST_RECV]:
            f.last_recv = last_recv
        if last_local != was[S_LAST_LOCAL]:
            conv.last_local = last_local
        if last_exch != was[S_LAST_EXCH]:
            conv.last_exch = last_exch
        if has_first and not was[S_HAS_FIRST]:
            f.first_local = first
        f.seen_trade = bool(seen_trade)
        counts = conv.messages
        if n_tick:
            counts["bookTicker"] += n_tick
        if n_depth:
            counts["depthUpdate"] += n_depth
        if n_trade:
            counts["trade"] += n_trade
        conv.other_symbol += other
        conv.trades_zero_qty += zero
        off = conv.offsets
        off.n, off.step, off.tick = off_n, off_step, off_tick
        if diffs:
            sync = conv.sync
            sync.last_update_id = last_id
            sync.counters.diffs += diffs
            sync.counters.applied += applied
        conv.cols.staged(nev)
        if has_tick:
            conv.last_ticker_raw = (None, block[t0:t1], False, t_local, (f.inp.path, t_line))


def read_fast(conv: Any, f: Any, fh: Any) -> None:
    """Stream one hftbacktest file through the block kernel into ``conv``, a
    :class:`~mm_sim.feeds.convert.binance_stream.StreamConverter` (``f``: its per-file state);
    the lines the kernel leaves go through :func:`~mm_sim.feeds.convert.binance_fast.py_line`
    one at a time.

    In a single pass (``conv.one_pass``: no pre-scan) this also collects what the pre-scan
    would have found (binance_inputs.scan_symbols): the kernel leaves every line of another
    symbol, or with a flag word where it does not expect one, to Python and sets the flags of
    the lines it takes; Python lines are searched for symbols and flags. When more
    than one line in eight goes to Python the single pass is given up (:class:`OnePassMiss`):
    the two passes are faster then."""
    state = BlockState(conv, f)
    scanner = BlockScanner(4)
    inp = f.inp
    one_pass = conv.one_pass
    py_lines = 0
    rest = b""
    while True:
        # read1: what one decompression step yields, so a truncated gzip still gives up its
        # readable start, as the line-by-line reading did.
        chunk = fh.read1(1 << 20)
        block = rest + chunk if rest else chunk
        if not chunk:
            if block:  # a last line without a newline
                if one_pass:
                    scan_flags(inp, block)
                    line_symbols(inp, block)
                f.lineno += 1
                conv._general_line(f, block)
            return
        pos = 0
        while True:
            pos, why = state.run(block, pos)
            if why == R_MORE:
                break
            if why == R_LINE:
                end = block.index(b"\n", pos) + 1
                line = block[pos:end]
                if one_pass:
                    line_symbols(inp, line)
                    scan_flags(inp, line)
                    py_lines += 1
                    if py_lines > 4096 and 8 * py_lines > f.lineno:
                        raise OnePassMiss(f"{inp.path}: most lines need Python")
                stream = py_line(conv, f, line, scanner)
                if stream is not None and stream not in FLAG_WORDS:
                    state.stream_ok = np.frombuffer(stream, dtype=np.uint8).copy()
                pos = end
            elif why == R_CROSSED:
                # BookSync.apply_next's crossed branch (the kernel applied the diff)
                conv.sync.report_crossed()
                conv.invalidations += 1
        rest = block[pos:]


def warm() -> None:
    """Load (or compile) the block kernel and the touch book before anything is timed."""
    from mm_sim.feeds.convert.binance_fast import warm as warm_scanner

    warm_scanner()
    book = TouchBook(4)
    book.apply_flat(np.array([1.0, 1.0]), np.array([2.0, 1.0, 3.0, 0.0]))
    book.best_bid()
    chunk_facts(np.zeros(2, dtype=EVENT_DTYPE), np.zeros(8, np.int64), np.zeros(2), np.zeros(2))
    on_grid(np.zeros(2), 10.0)
    line = b'1 {"stream":"x@bookTicker","data":{"s":"X","u":1}}\n'
    st = np.zeros(S_SIZE, dtype=np.int64)
    st[S_NEXT_SNAP] = 1 << 62
    st[S_OFF_STEP] = 1
    f64 = np.zeros(64)
    run_block(
        np.frombuffer(line, dtype=np.uint8), 0, st, np.frombuffer(b"X", dtype=np.uint8).copy(),
        np.zeros(0, dtype=np.uint8), np.empty(64, dtype=EVENT_DTYPE), np.zeros(4, np.int64),
        *book.arrays(), np.zeros(16, np.int64), np.zeros(16, np.int64),
        np.zeros(16, np.int64), f64, f64.copy(), np.zeros(2), f64.copy(),
    )  # fmt: skip


__all__ = ["BlockState", "read_fast", "run_block", "warm"]


kernel_cache.bind(__name__, kernel_cache.BINANCE)  # before any kernel loads: kernel_cache.py
