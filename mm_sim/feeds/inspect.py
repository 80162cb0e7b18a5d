"""What a feed contains, in one pass: counts, span, spread, depth, gaps, crossings, lag.

The pass is a numba kernel run chunk by chunk over the memory-mapped events, so a feed larger
than RAM is inspected in bounded memory: all state is a book, a vector of integer counters and
a few fixed-size histograms. Quantiles come from those histograms:

- spread in ticks: one bin per tick (exact up to ``SPREAD_TICK_BINS - 1`` ticks);
- spread in bps, depth and feed lag: log-spaced bins built from the float's binary exponent
  and leading mantissa bits (``math.frexp``, exact arithmetic, no ``log``), 1024 bins per
  doubling, so a reported quantile is the centre of a bin at most 0.1 % wide.

Book figures (spread, depth, crossed/locked) are sampled at exchange-timestamp boundaries:
just before the first event with a new ``exch_ts`` and once after the last event, so a snapshot
or a multi-level update that shares one timestamp is never seen half applied.

``inspect_reference`` is the plain-Python twin of the kernel (the reference book, the same
binning) used by the differential test; ``summarise`` turns either into the report.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from numba import njit

from mm_sim import kernel_cache
from mm_sim.core.book import (
    DEFAULT_TICKS,
    ST_BASE,
    ST_BEST_ASK,
    ST_BEST_BID,
    ST_DROPPED,
    book_apply,
    depth_near_touch,
    make_book,
)
from mm_sim.core.reference_book import ReferenceBook
from mm_sim.events import KIND_NAMES, Feed
from mm_sim.feeds.clock import ClockModel, model_of

# -- histogram layout -----------------------------------------------------------------------

SPREAD_TICK_BINS = 1 << 16  # last bin collects everything wider
LOG_SUB = 1024  # bins per doubling
LOG_E_MIN = -60  # frexp exponents kept: values from 2**-61 (~4e-19) ...
LOG_E_MAX = 70  # ... to 2**70 (~1.2e21); beyond: the under/overflow bins
LOG_BINS = (LOG_E_MAX - LOG_E_MIN) * LOG_SUB + 2

DEPTH_LEVELS = 5
TIME_GAP_S = 5.0
CHUNK = 1 << 20

# -- counters (indices into the int64 accumulator) ------------------------------------------

A_EVENTS = 0
A_KIND = 1  # A_KIND + kind for kinds 1..4 (so 2..5); A_KIND + 0 counts unknown kinds
A_FIRST_EXCH = 6
A_LAST_EXCH = 7
A_FIRST_LOCAL = 8
A_LAST_LOCAL = 9
A_PREV_EXCH = 10
A_PREV_LOCAL = 11
A_SAMPLES = 12  # exch_ts boundaries sampled
A_TWO_SIDED = 13  # ... with both sides present
A_CROSSED = 14  # ... with best bid >= best ask (crossed or locked)
A_SPREAD_N = 15  # ... in the spread histograms (two-sided, not crossed)
A_DEPTH_BID_N = 16
A_DEPTH_ASK_N = 17
A_TIME_GAPS = 18  # consecutive exch_ts more than the threshold apart
A_MAX_GAP = 19  # ns
A_EXCH_BACK = 20  # exch_ts lower than the previous event's
A_LOCAL_BACK = 21
A_LAG_ZERO = 22
A_LAG_POS_N = 23
A_LAG_NEG_N = 24
A_GAP_NS = 25  # parameter: time gap threshold
A_SIZE = 32

H_TICKS = 0
H_BPS = 1
H_DEPTH_BID = 2
H_DEPTH_ASK = 3
H_LAG_POS = 4  # local - exch > 0, in ns
H_LAG_NEG = 5  # exch - local > 0, in ns
N_LOG_HISTS = 6


def log_bin_py(x: float) -> int:
    """Bin of a positive finite ``x`` (plain-Python twin of ``_log_bin``)."""
    m, e = math.frexp(x)
    if e < LOG_E_MIN:
        return 0
    if e >= LOG_E_MAX:
        return LOG_BINS - 1
    return 1 + (e - LOG_E_MIN) * LOG_SUB + int((m - 0.5) * (2 * LOG_SUB))


@njit(cache=True, inline="always")
def _log_bin(x: float) -> int:
    m, e = math.frexp(x)
    if e < LOG_E_MIN:
        return 0
    if e >= LOG_E_MAX:
        return LOG_BINS - 1
    return 1 + (e - LOG_E_MIN) * LOG_SUB + int((m - 0.5) * (2 * LOG_SUB))


@functools.cache
def log_bin_centres() -> np.ndarray:
    """Centre value of every log bin (the under/overflow bins get their inner edge)."""
    j = np.arange(LOG_BINS - 2)
    e = LOG_E_MIN + j // LOG_SUB
    sub = j % LOG_SUB
    lo = (0.5 + sub / (2 * LOG_SUB)) * np.exp2(e)
    hi = (0.5 + (sub + 1) / (2 * LOG_SUB)) * np.exp2(e)
    inner = (lo + hi) / 2
    out = np.concatenate(([2.0 ** (LOG_E_MIN - 1)], inner, [2.0**LOG_E_MAX]))
    out.flags.writeable = False
    return out


@dataclass
class InspectState:
    """Everything the pass accumulates (kernel and reference fill the same layout)."""

    acc: np.ndarray = field(default_factory=lambda: _new_acc(TIME_GAP_S))
    ticks: np.ndarray = field(default_factory=lambda: np.zeros(SPREAD_TICK_BINS, np.int64))
    hists: np.ndarray = field(default_factory=lambda: np.zeros((N_LOG_HISTS, LOG_BINS), np.int64))
    final_bid: float = math.nan
    final_ask: float = math.nan
    dropped: int = 0


def _new_acc(gap_s: float) -> np.ndarray:
    acc = np.zeros(A_SIZE, np.int64)
    acc[A_GAP_NS] = round(gap_s * 1e9)
    return acc


# -- the kernel ------------------------------------------------------------------------------


@njit(cache=True)
def _sample(
    bid: np.ndarray,
    ask: np.ndarray,
    st: np.ndarray,
    acc: np.ndarray,
    ticks: np.ndarray,
    hists: np.ndarray,
) -> None:
    acc[A_SAMPLES] += 1
    bb = st[ST_BEST_BID]
    ba = st[ST_BEST_ASK]
    if bb >= 0:
        acc[A_DEPTH_BID_N] += 1
        hists[H_DEPTH_BID, _log_bin(depth_near_touch(bid, ask, st, 1, DEPTH_LEVELS))] += 1
    if ba >= 0:
        acc[A_DEPTH_ASK_N] += 1
        hists[H_DEPTH_ASK, _log_bin(depth_near_touch(bid, ask, st, -1, DEPTH_LEVELS))] += 1
    if bb >= 0 and ba >= 0:
        acc[A_TWO_SIDED] += 1
        if bb >= ba:
            acc[A_CROSSED] += 1
        else:
            width = ba - bb
            acc[A_SPREAD_N] += 1
            ticks[min(width, SPREAD_TICK_BINS - 1)] += 1
            both = 2 * st[ST_BASE] + bb + ba  # bid tick + ask tick
            if both > 0:
                hists[H_BPS, _log_bin(2.0e4 * width / both)] += 1


@njit(cache=True)
def inspect_chunk(
    events: np.ndarray,
    bid: np.ndarray,
    ask: np.ndarray,
    st: np.ndarray,
    tick_size: float,
    acc: np.ndarray,
    ticks: np.ndarray,
    hists: np.ndarray,
) -> None:
    """Fold one chunk of events into the state; chunks must be passed in feed order."""
    gap_ns = acc[A_GAP_NS]
    for k in range(events.shape[0]):
        e = events[k]
        ex = e.exch_ts
        lo = e.local_ts
        if acc[A_EVENTS] == 0:
            acc[A_FIRST_EXCH] = ex
            acc[A_FIRST_LOCAL] = lo
        else:
            prev = acc[A_PREV_EXCH]
            if ex != prev:
                _sample(bid, ask, st, acc, ticks, hists)
            if ex < prev:
                acc[A_EXCH_BACK] += 1
            elif ex - prev > gap_ns:
                acc[A_TIME_GAPS] += 1
            if ex - prev > acc[A_MAX_GAP]:
                acc[A_MAX_GAP] = ex - prev
            if lo < acc[A_PREV_LOCAL]:
                acc[A_LOCAL_BACK] += 1
        acc[A_EVENTS] += 1
        kind = e.kind
        if 1 <= kind <= 4:
            acc[A_KIND + kind] += 1
        else:
            acc[A_KIND] += 1
        lag = lo - ex
        if lag > 0:
            acc[A_LAG_POS_N] += 1
            hists[H_LAG_POS, _log_bin(float(lag))] += 1
        elif lag < 0:
            acc[A_LAG_NEG_N] += 1
            hists[H_LAG_NEG, _log_bin(float(-lag))] += 1
        else:
            acc[A_LAG_ZERO] += 1
        book_apply(bid, ask, st, tick_size, kind, e.side, e.price, e.qty)
        acc[A_PREV_EXCH] = ex
        acc[A_PREV_LOCAL] = lo
        acc[A_LAST_EXCH] = ex
        acc[A_LAST_LOCAL] = lo


@njit(cache=True)
def inspect_finish(
    bid: np.ndarray,
    ask: np.ndarray,
    st: np.ndarray,
    acc: np.ndarray,
    ticks: np.ndarray,
    hists: np.ndarray,
) -> None:
    """The last boundary: the book after the final event."""
    if acc[A_EVENTS] > 0:
        _sample(bid, ask, st, acc, ticks, hists)


def inspect_events(
    events: np.ndarray,
    tick_size: float,
    chunk: int = CHUNK,
    n_ticks: int = DEFAULT_TICKS,
    gap_s: float = TIME_GAP_S,
    progress: Callable[[int], None] | None = None,
) -> InspectState:
    """Run the kernel over ``events`` (an array or a memory map) ``chunk`` events at a time;
    ``progress(events done)`` after each chunk."""
    book = make_book(tick_size, n_ticks)
    s = InspectState(acc=_new_acc(gap_s))
    for i in range(0, len(events), chunk):
        part = np.asarray(events[i : i + chunk])
        inspect_chunk(part, book.bid, book.ask, book.st, book.tick_size, s.acc, s.ticks, s.hists)
        if progress is not None:
            progress(i + len(part))
    inspect_finish(book.bid, book.ask, book.st, s.acc, s.ticks, s.hists)
    st = book.st
    base = int(st[ST_BASE])
    if st[ST_BEST_BID] >= 0:
        s.final_bid = (base + int(st[ST_BEST_BID])) * book.tick_size
    if st[ST_BEST_ASK] >= 0:
        s.final_ask = (base + int(st[ST_BEST_ASK])) * book.tick_size
    s.dropped = int(st[ST_DROPPED])
    return s


# -- the plain-Python reference ---------------------------------------------------------------


def inspect_reference(
    events: np.ndarray, tick_size: float, gap_s: float = TIME_GAP_S
) -> InspectState:
    """Same figures as the kernel, written the obvious way (for small inputs)."""
    s = InspectState(acc=_new_acc(gap_s))
    acc, ticks, hists = s.acc, s.ticks, s.hists
    book = ReferenceBook(tick_size)

    def sample() -> None:
        acc[A_SAMPLES] += 1
        bb, ba = book.best_bid_tick, book.best_ask_tick
        if bb is not None:
            acc[A_DEPTH_BID_N] += 1
            hists[H_DEPTH_BID, log_bin_py(book.depth_near_touch(1, DEPTH_LEVELS))] += 1
        if ba is not None:
            acc[A_DEPTH_ASK_N] += 1
            hists[H_DEPTH_ASK, log_bin_py(book.depth_near_touch(-1, DEPTH_LEVELS))] += 1
        if bb is not None and ba is not None:
            acc[A_TWO_SIDED] += 1
            if bb >= ba:
                acc[A_CROSSED] += 1
            else:
                acc[A_SPREAD_N] += 1
                ticks[min(ba - bb, SPREAD_TICK_BINS - 1)] += 1
                if ba + bb > 0:
                    hists[H_BPS, log_bin_py(2.0e4 * (ba - bb) / (ba + bb))] += 1

    gap_ns = int(acc[A_GAP_NS])
    prev_ex = prev_lo = 0
    max_gap = 0
    for n, e in enumerate(events):
        ex, lo, kind = int(e["exch_ts"]), int(e["local_ts"]), int(e["kind"])
        if n == 0:
            acc[A_FIRST_EXCH], acc[A_FIRST_LOCAL] = ex, lo
        else:
            if ex != prev_ex:
                sample()
            if ex < prev_ex:
                acc[A_EXCH_BACK] += 1
            elif ex - prev_ex > gap_ns:
                acc[A_TIME_GAPS] += 1
            max_gap = max(max_gap, ex - prev_ex)
            if lo < prev_lo:
                acc[A_LOCAL_BACK] += 1
        acc[A_KIND + (kind if 1 <= kind <= 4 else 0)] += 1
        lag = lo - ex
        if lag > 0:
            acc[A_LAG_POS_N] += 1
            hists[H_LAG_POS, log_bin_py(float(lag))] += 1
        elif lag < 0:
            acc[A_LAG_NEG_N] += 1
            hists[H_LAG_NEG, log_bin_py(float(-lag))] += 1
        else:
            acc[A_LAG_ZERO] += 1
        book.apply(kind, int(e["side"]), float(e["price"]), float(e["qty"]))
        prev_ex, prev_lo = ex, lo
    acc[A_EVENTS] = len(events)
    acc[A_MAX_GAP] = max_gap
    if len(events):
        acc[A_PREV_EXCH] = acc[A_LAST_EXCH] = prev_ex
        acc[A_PREV_LOCAL] = acc[A_LAST_LOCAL] = prev_lo
        sample()
    s.final_bid, s.final_ask = book.best_bid, book.best_ask
    return s


# -- the report ------------------------------------------------------------------------------


def _nearest_rank(values: np.ndarray, counts: np.ndarray, q: float) -> float | None:
    """Smallest value whose cumulative count reaches ceil(q * n) (numpy's 'inverted_cdf')."""
    n = int(counts.sum())
    if n == 0:
        return None
    rank = max(1, math.ceil(q * n))
    i = int(np.searchsorted(np.cumsum(counts), rank))
    return float(values[i])


def _log_quantile(hist: np.ndarray, q: float) -> float | None:
    return _nearest_rank(log_bin_centres(), hist, q)


def _lag_quantile(s: InspectState, q: float) -> float | None:
    centres = log_bin_centres()
    values = np.concatenate((-centres[::-1], [0.0], centres))
    counts = np.concatenate((s.hists[H_LAG_NEG][::-1], [s.acc[A_LAG_ZERO]], s.hists[H_LAG_POS]))
    v = _nearest_rank(values, counts, q)
    return None if v is None else v / 1e6


def _finite(x: float) -> float | None:
    return float(x) if math.isfinite(x) else None


def sequence_gaps(stats: dict[str, Any]) -> int:
    """The converter's sequence-gap figure from the sidecar stats (0 when it recorded none)."""
    g = stats.get("gaps", 0)
    if isinstance(g, bool):
        return int(g)
    if isinstance(g, int | float):
        return int(g)
    if isinstance(g, dict):
        for key in ("count", "total", "n"):
            if isinstance(g.get(key), int | float):
                return int(g[key])
        return len(g)
    if isinstance(g, list):
        return len(g)
    return 0


def summarise(
    s: InspectState, tick_size: float, stats: dict[str, Any] | None = None
) -> dict[str, Any]:
    """The figures ``mm_sim inspect`` prints (and ``--json`` emits)."""
    acc = s.acc
    n = int(acc[A_EVENTS])
    span = (int(acc[A_LAST_EXCH]) - int(acc[A_FIRST_EXCH])) / 1e9 if n else 0.0
    kinds = {KIND_NAMES[k]: int(acc[A_KIND + k]) for k in sorted(KIND_NAMES)}
    if acc[A_KIND]:
        kinds["other"] = int(acc[A_KIND])
    tick_values = np.arange(SPREAD_TICK_BINS, dtype=np.float64)
    return {
        "events": n,
        "events_by_kind": kinds,
        "first_exch_ts": int(acc[A_FIRST_EXCH]) if n else None,
        "last_exch_ts": int(acc[A_LAST_EXCH]) if n else None,
        "span_s": span,
        "events_per_s": n / span if span > 0 else None,
        "spread_ticks": {
            "median": _nearest_rank(tick_values, s.ticks, 0.5),
            "p95": _nearest_rank(tick_values, s.ticks, 0.95),
            "samples": int(acc[A_SPREAD_N]),
        },
        "spread_bps": {
            "median": _log_quantile(s.hists[H_BPS], 0.5),
            "p95": _log_quantile(s.hists[H_BPS], 0.95),
        },
        "depth_top5": {
            "bid_median": _log_quantile(s.hists[H_DEPTH_BID], 0.5),
            "ask_median": _log_quantile(s.hists[H_DEPTH_ASK], 0.5),
            "levels": DEPTH_LEVELS,
        },
        "boundaries": int(acc[A_SAMPLES]),
        "two_sided": int(acc[A_TWO_SIDED]),
        "crossed": int(acc[A_CROSSED]),
        "gaps": sequence_gaps(stats or {}),
        "time_gaps": {
            "count": int(acc[A_TIME_GAPS]),
            "threshold_s": int(acc[A_GAP_NS]) / 1e9,
            "max_s": int(acc[A_MAX_GAP]) / 1e9,
        },
        "feed_lag_ms": {"p50": _lag_quantile(s, 0.5), "p95": _lag_quantile(s, 0.95)},
        "exch_ts_backwards": int(acc[A_EXCH_BACK]),
        "local_ts_backwards": int(acc[A_LOCAL_BACK]),
        "book_dropped": s.dropped,
        "final_best_bid": _finite(s.final_bid),
        "final_best_ask": _finite(s.final_ask),
        "tick_size": tick_size,
    }


def clock_summary(s: InspectState, model: ClockModel) -> dict[str, Any]:
    """The feed's clock model beside the lag quantiles of every event, raw and as replay
    (``--clock auto``) will see them: a constant shift moves every quantile by the shift."""
    raw = {f"p{round(q * 100)}": _lag_quantile(s, q) for q in (0.01, 0.5, 0.95)}
    shift_ms = model.shift_ns / 1e6
    return {
        "shift_ms": round(shift_ms, 3),
        "method": model.method,
        "estimated": model.estimated,
        "floor_ms": model.floor_ns / 1e6,
        "lag_ms_raw": raw,
        "lag_ms_corrected": {k: None if v is None else v + shift_ms for k, v in raw.items()},
    }


def inspect_feed(
    feed: Feed, chunk: int = CHUNK, progress: Callable[[int], None] | None = None
) -> dict[str, Any]:
    """Inspect an opened feed: the kernel pass plus the sidecar's identity, gap figure and
    clock model. ``progress(done)`` counts both passes (content checks, then the kernel) over
    ``2 * len(feed.events)``."""
    from mm_sim.feeds.validate import MASKED, check_events, crossed_finding, valid_mask

    n = len(feed.events)
    problems = check_events(feed.events, chunk=chunk)
    if progress is not None:
        progress(n)
    events = feed.events
    if any(p.code in MASKED for p in problems):
        # The book kernel reads prices and sides as given: feed it only well-formed events.
        events = np.concatenate(
            [
                part[valid_mask(part)]
                for part in (
                    np.asarray(events[i : i + chunk]) for i in range(0, len(events), chunk)
                )
            ]
            or [events[:0]]
        )
    after_checks = None if progress is None else (lambda done: progress(n + done))
    s = inspect_events(events, feed.instrument.tick_size, chunk=chunk, progress=after_checks)
    out = summarise(s, feed.instrument.tick_size, feed.meta.stats)
    crossed = crossed_finding(out["two_sided"], out["crossed"], "")
    if crossed is not None:
        problems.append(crossed)
    out["problems"] = [
        {
            "code": p.code,
            "count": p.count,
            "first_event": p.first,
            "refused": p.fatal,
            "message": p.message(),
        }
        for p in problems
    ]
    out["clock"] = clock_summary(s, model_of(feed))
    out["symbol"] = feed.instrument.symbol
    out["venue"] = feed.instrument.venue
    if feed.instrument.inverse:  # quantities are contracts of this many quote units
        out["contract_size"] = feed.instrument.contract_size
    out["feed"] = str(feed.path)
    return out


kernel_cache.bind(__name__, kernel_cache.CORE)  # before any kernel loads: kernel_cache.py
