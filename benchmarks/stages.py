"""Per-stage latency of the core, timed inside numba on fixed-size batches of events.

Why batches: a per-event timer read costs about as much as a book update (~10-20 ns), so timing
every event would mostly measure the timer. Reading the CPU cycle counter once per batch of
``batch`` events (default 1,024) and dividing keeps the timer's share below 0.1 %; the price is
that a slow event inside a batch is averaged with its 1,023 neighbours (README: "What the batch
figures hide").

Why cumulative pipelines: the engine is one fused loop (book -> matching -> reports -> decision),
so its stages cannot be called one by one on the real event stream without changing what they
do. We time, on the same events and in the same order:

1. ``book``          book_apply only;
2. ``book+quote``    + the quote decision (volatility, A-S targets, impact-capped size) with the
                     engine's own re-use rule (recomputed only when an input moved);
3. ``book+quote+limiter`` + the pacing/throttle gate and token consumption for both sides;
4. ``engine``        the real fused ``run_chunk`` (adds matching/queue, accounting, reports,
                     marks and action bookkeeping).

Stage costs are the per-batch differences between consecutive pipelines (same batch index, so
the same events). Matching/queue and accounting are also timed directly as kernels per call
(``queue_on_depth``, ``apply_fill``) since most events never reach them.
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np
from llvmlite import ir
from numba import njit, types
from numba.core import cgutils
from numba.extending import intrinsic

from mm_sim import kernel_cache
from mm_sim.config import MatchingCfg, Overrides, Profile
from mm_sim.core import driver as drv
from mm_sim.core import engine as eng
from mm_sim.core import limiter, match, quote, venue_state
from mm_sim.core import params as prm
from mm_sim.core.account import apply_fill, make_account
from mm_sim.core.book import ST_BASE, ST_BEST_ASK, ST_BEST_BID, book_apply, mid_price, side_depth
from mm_sim.core.params import CT_LF, CT_LI, CT_P, CT_VOL_F, CT_VOL_I, JIT, Ctl
from mm_sim.core.venue_state import (
    OUT_NOUT,
    BookArrays,
)
from mm_sim.events import KIND_TRADE, Instrument


@intrinsic
def _cycles_intrinsic(typingctx: Any) -> Any:
    """The CPU cycle counter (``llvm.readcyclecounter``; rdtsc on x86): ~20 cycles to read."""
    sig = types.int64()

    def codegen(context: Any, builder: Any, signature: Any, args: Any) -> Any:
        fnty = ir.FunctionType(ir.IntType(64), [])
        fn = cgutils.get_or_insert_function(builder.module, fnty, "llvm.readcyclecounter")
        return builder.call(fn, [])

    return sig, codegen


# Typed as Any: an intrinsic is called with no arguments from jitted code only.
_cycles: Any = _cycles_intrinsic


@njit(cache=True)
def read_cycles() -> int:
    return _cycles()


def cycles_per_ns(duration_s: float = 0.2) -> float:
    """Calibrate the cycle counter against the OS monotonic clock (busy wait, no sleep)."""
    read_cycles()
    c0 = read_cycles()
    t0 = time.perf_counter_ns()
    while time.perf_counter_ns() - t0 < duration_s * 1e9:
        pass
    c1 = read_cycles()
    t1 = time.perf_counter_ns()
    return (c1 - c0) / (t1 - t0)


# ----------------------------------------------------------------------------------------------
# Roofline: the memory-bound floor of touching every event once.
# ----------------------------------------------------------------------------------------------


@njit(cache=True)
def scan_sum(events: np.ndarray) -> float:
    """Sum one field of every event: the least work any replay of this array can do."""
    s = 0.0
    for i in range(events.shape[0]):
        s += events[i].qty
    return s


@njit(cache=True)
def scan_batches(events: np.ndarray, batch: int, out: np.ndarray) -> float:
    s = 0.0
    nb = events.shape[0] // batch
    for b in range(nb):
        c0 = _cycles()
        for i in range(b * batch, (b + 1) * batch):
            s += events[i].qty
        out[b] = _cycles() - c0
    return s


# ----------------------------------------------------------------------------------------------
# Cumulative pipelines (levels 1-3); level 4 is the engine's run_chunk.
# ----------------------------------------------------------------------------------------------

LEVEL_BOOK = 1
LEVEL_QUOTE = 2
LEVEL_LIMITER = 3


@njit(**JIT)
def pipeline_batches(
    events: np.ndarray,
    batch: int,
    level: int,
    book: BookArrays,
    ctl: Ctl,
    si: np.ndarray,
    cycles: np.ndarray,
) -> int:
    """Replay ``events`` through the first ``level`` stages, cycles per batch into ``cycles``.

    ``book`` and ``ctl`` are a fresh engine's bundles; only the arrays these stages use are
    touched (the book, the volatility state, the limiter buckets, the side table ``si``).
    """
    bid, ask, bst = book
    p, vol_f, vol_i, lf, li = ctl[CT_P], ctl[CT_VOL_F], ctl[CT_VOL_I], ctl[CT_LF], ctl[CT_LI]
    tick = p[prm.K_TICK]
    levels = int(p[prm.K_IMPACT_LEVELS])
    nb = events.shape[0] // batch
    sent = 0
    last_bb = -1
    last_ba = -1
    last_var = -1.0
    bnd_b = -(1 << 62)
    bnd_a = 1 << 62
    bt = 0
    at = 0
    bl = 0
    al = 0
    for b in range(nb):
        c0 = _cycles()
        for i in range(b * batch, (b + 1) * batch):
            ev = events[i]
            kind = ev.kind
            if kind == KIND_TRADE:
                touched = False
            else:
                book_apply(bid, ask, bst, tick, kind, ev.side, ev.price, ev.qty)
                t = int(np.floor(ev.price / tick + 0.5))
                touched = (ev.side > 0 and t >= bnd_b) or (ev.side <= 0 and t <= bnd_a)
            if level < LEVEL_QUOTE:
                continue
            bbi = bst[ST_BEST_BID]
            bai = bst[ST_BEST_ASK]
            if bbi < 0 or bai < 0 or bbi >= bai:
                continue
            now = ev.local_ts
            bb = bst[ST_BASE] + bbi
            ba = bst[ST_BASE] + bai
            mid = mid_price(bst, tick)
            quote.vol_update(vol_f, vol_i, now, mid, p[prm.K_VOL_SAMPLE_NS], p[prm.K_VOL_HL_S])
            var = vol_f[quote.VOL_VAR]
            if touched or bb != last_bb or ba != last_ba or var != last_var:
                bt, at, _h = quote.target_ticks(
                    mid, bb, ba, tick, 0.0, np.sqrt(var), p[prm.K_GAMMA], p[prm.K_TAU_S],
                    p[prm.K_HALF_BPS] + p[prm.K_SPREAD_DELTA_BPS], p[prm.K_MAX_DELTA_RATIO],
                )  # fmt: skip
                bdep, bnd_b = side_depth(bid, ask, bst, 1, levels)
                adep, bnd_a = side_depth(bid, ask, bst, -1, levels)
                bl = quote.quote_lots(p[prm.K_ORDER_QTY], p[prm.K_IMPACT_RATIO], bdep, p[prm.K_LOT])
                al = quote.quote_lots(p[prm.K_ORDER_QTY], p[prm.K_IMPACT_RATIO], adep, p[prm.K_LOT])
                last_bb = bb
                last_ba = ba
                last_var = var
            if level < LEVEL_LIMITER:
                continue
            for k in range(2):
                want = bt if k == 0 else at
                lots = bl if k == 0 else al
                if want == si[k, limiter.S_PX] and lots == si[k, limiter.S_LOTS]:
                    continue
                action = 3 if si[k, limiter.S_SLOT] >= 0 else 1  # replace, else place
                reason = limiter.gate(
                    action, False, now, si[k, limiter.S_LAST_ACT], p[prm.K_MIN_INTERVAL_NS], 0,
                    int(p[prm.K_MAX_IN_FLIGHT]), lf, li, p[prm.K_REPL_CAP], p[prm.K_REPL_RATE],
                    p[prm.K_VENUE_CAP], p[prm.K_VENUE_RATE],
                )  # fmt: skip
                if reason < 0:
                    limiter.consume(
                        action, now, lf, li, p[prm.K_REPL_CAP], p[prm.K_REPL_RATE],
                        p[prm.K_VENUE_CAP], p[prm.K_VENUE_RATE],
                    )  # fmt: skip
                    si[k, limiter.S_SLOT] = 0
                    si[k, limiter.S_PX] = want
                    si[k, limiter.S_LOTS] = lots
                    si[k, limiter.S_LAST_ACT] = now
                    sent += 1
        cycles[b] = _cycles() - c0
    return sent


@njit(**JIT)
def engine_batches(
    events: np.ndarray, batch: int, tl: Any, args: tuple[Any, ...], cycles: np.ndarray
) -> int:
    """The real fused engine loop (one cursor), one call per batch; returns batches completed
    in full. ``tl``: the empty timeline arrays; ``args``: ``run_chunk``'s arguments after the
    timeline's, as an ``Engine`` binds them.
    """
    book, sbook, ctl, venue, out, fill_margin = args
    nout = out[OUT_NOUT]
    nb = events.shape[0] // batch
    for b in range(nb):
        for j in range(nout.shape[0]):
            nout[j] = 0  # records are discarded: the buffers never need to grow
        chunk = events[b * batch : (b + 1) * batch]
        c0 = _cycles()
        done = drv.run_chunk(chunk, 0, tl, 0, False, False, book, sbook, ctl, venue, out,
                             fill_margin, 0)  # fmt: skip
        cycles[b] = _cycles() - c0
        if done < batch:
            return b
    return nb


@njit(**JIT)
def queue_batches(fronts: np.ndarray, prevs: np.ndarray, news: np.ndarray, batch: int,
                  model: int, power: float, out: np.ndarray) -> float:  # fmt: skip
    """``queue_on_depth`` per call: our queue position through a stream of level changes."""
    s = 0.0
    nb = prevs.shape[0] // batch
    for b in range(nb):
        c0 = _cycles()
        for i in range(b * batch, (b + 1) * batch):
            f = match.queue_on_depth(model, power, fronts[i], prevs[i], news[i], 0.0)
            s += f
        out[b] = _cycles() - c0
    return s


@njit(**JIT)
def fill_batches(acc: np.ndarray, sides: np.ndarray, prices: np.ndarray, qtys: np.ndarray,
                 batch: int, fee_bps: float, out: np.ndarray) -> float:  # fmt: skip
    """``apply_fill`` per call: the account update of one fill."""
    s = 0.0
    nb = sides.shape[0] // batch
    for b in range(nb):
        c0 = _cycles()
        for i in range(b * batch, (b + 1) * batch):
            s += apply_fill(acc, sides[i], prices[i], qtys[i], fee_bps, 0)
        out[b] = _cycles() - c0
    return s


# ----------------------------------------------------------------------------------------------
# Python side
# ----------------------------------------------------------------------------------------------


def distribution(ns_per_event: np.ndarray) -> dict[str, float]:
    """p50/p99/p99.9/max of per-batch ns/event (plus mean and the number of batches)."""
    x = np.asarray(ns_per_event, dtype=np.float64)
    if len(x) == 0:
        return {"batches": 0}
    return {
        "batches": len(x),
        "mean": float(x.mean()),
        "p50": float(np.percentile(x, 50)),
        "p99": float(np.percentile(x, 99)),
        "p99_9": float(np.percentile(x, 99.9)),
        "max": float(x.max()),
    }


def _pipeline(
    events: np.ndarray,
    level: int,
    profile: Profile,
    instrument: Instrument,
    batch: int,
    n_ticks: int,
) -> np.ndarray:
    e = _fresh_engine(profile, instrument, n_ticks)
    book, _sbook, ctl, _venue, _out, _margin = e._args
    cycles = np.zeros(len(events) // batch, dtype=np.int64)
    pipeline_batches(events, batch, level, book, ctl, e._s["si"], cycles)
    return cycles


def _engine(
    events: np.ndarray, profile: Profile, instrument: Instrument, batch: int, n_ticks: int
) -> np.ndarray:
    e = _fresh_engine(profile, instrument, n_ticks)
    cycles = np.zeros(len(events) // batch, dtype=np.int64)
    done = engine_batches(events, batch, eng.NO_TIMELINE, e._args, cycles)
    return cycles[:done]


def _fresh_engine(profile: Profile, instrument: Instrument, n_ticks: int) -> eng.Engine:
    """An engine on one cursor (file order): the stages time the fused loop on raw events; the
    two-clock timeline's own cost is in core_throughput's figures."""
    one = profile.model_copy(update={"matching": MatchingCfg(event_order="file")})
    return eng.Engine(one, Overrides(), instrument, 1, n_ticks=n_ticks, out_capacity=1 << 16)


def measure_stages(
    events: np.ndarray,
    profile: Profile,
    instrument: Instrument,
    *,
    batch: int = 1024,
    repeats: int = 3,
    n_ticks: int = 1 << 18,
) -> dict[str, Any]:
    """Per-stage ns/event distributions over batches of ``events`` (warm caches assumed).

    Each pipeline is replayed ``repeats`` times from a fresh state and, per batch, the fastest
    repeat is kept: the stage's own cost with as little interference from the other processes on
    this machine as the repeats allow. Increments are taken per batch and clipped at 0.
    """
    cpn = cycles_per_ns()
    ev = np.ascontiguousarray(events)
    nb = len(ev) // batch
    if nb < 1:
        raise ValueError(f"need at least {batch} events for one batch, got {len(ev)}")
    ev = ev[: nb * batch]

    def best(fn: Any) -> np.ndarray:
        runs = [fn() for _ in range(repeats)]
        n = min(len(r) for r in runs)
        return np.min(np.stack([r[:n] for r in runs]), axis=0) / cpn / batch

    t0 = time.perf_counter()
    scan_out = np.zeros(nb, dtype=np.int64)

    def scan() -> np.ndarray:
        scan_batches(ev, batch, scan_out)
        return scan_out.copy()

    cum = {
        "scan": best(scan),
        "book": best(lambda: _pipeline(ev, LEVEL_BOOK, profile, instrument, batch, n_ticks)),
        "book+quote": best(lambda: _pipeline(ev, LEVEL_QUOTE, profile, instrument, batch, n_ticks)),
        "book+quote+limiter": best(
            lambda: _pipeline(ev, LEVEL_LIMITER, profile, instrument, batch, n_ticks)
        ),
        "engine": best(lambda: _engine(ev, profile, instrument, batch, n_ticks)),
    }
    n = min(len(v) for v in cum.values())
    cum = {k: v[:n] for k, v in cum.items()}
    inc = {
        "book_update": cum["book"],
        "quote_decision": np.maximum(cum["book+quote"] - cum["book"], 0.0),
        "limiter": np.maximum(cum["book+quote+limiter"] - cum["book+quote"], 0.0),
        "matching_accounting_rest": np.maximum(cum["engine"] - cum["book+quote+limiter"], 0.0),
    }

    # Direct per-call kernels: a resting order's queue position through random level changes,
    # and the account update of random fills (both fed arrays prepared outside the timing).
    rng = np.random.default_rng(7)
    m = nb * batch
    prevs = rng.exponential(2.0, m)
    news = prevs * rng.uniform(0.0, 1.5, m)
    fronts = prevs * rng.uniform(0.0, 1.0, m)
    qout = np.zeros(nb, dtype=np.int64)

    def qrun() -> np.ndarray:
        queue_batches(fronts, prevs, news, batch, venue_state.QUEUE_PROBABILISTIC, 2.0, qout)
        return qout.copy()

    sides = np.where(rng.random(m) < 0.5, 1, -1).astype(np.int64)
    prices = 30000.0 + rng.normal(0.0, 10.0, m)
    qtys = np.full(m, 0.01)
    fout = np.zeros(nb, dtype=np.int64)

    def frun() -> np.ndarray:
        fill_batches(make_account(), sides, prices, qtys, batch, -0.5, fout)
        return fout.copy()

    direct = {"queue_on_depth_per_call": best(qrun), "apply_fill_per_call": best(frun)}
    return {
        "method": (
            f"cycle counter read once per batch of {batch} events inside numba "
            f"({cpn:.3f} cycles/ns calibrated against CLOCK_MONOTONIC); per batch the fastest of "
            f"{repeats} replays; stage = difference of cumulative pipelines on the same batch"
        ),
        "batch": batch,
        "events": int(n * batch),
        "repeats": repeats,
        "cycles_per_ns": cpn,
        "cumulative_ns_per_event": {k: distribution(v) for k, v in cum.items()},
        "stage_ns_per_event": {k: distribution(v) for k, v in inc.items()},
        "direct_ns_per_call": {k: distribution(v) for k, v in direct.items()},
        "elapsed_s": time.perf_counter() - t0,
        "_raw": cum,  # per-batch arrays for derived figures; dropped before writing JSON
    }


# Its kernels compile the core's book, quote and matching steps in: bound to the core's sources.
kernel_cache.bind(__name__, kernel_cache.CORE)
