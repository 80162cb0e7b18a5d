"""Numba kernels of the synthetic market (the model is described in docs/SYNTHETIC.md).

Why the layout: the whole simulation state lives in a few flat arrays (floats, integers, the
RNG word, two level arrays and their Fenwick trees) so the event loop can stop when an output
buffer is full, let Python grow it, and resume bit-identically. Every random number comes from
one splitmix64 stream in a fixed order, so a seed fully determines the output. (Across
platforms, a libm that rounds exp/log/cos/pow differently in the last bit would change the path;
on one platform the output is bit-identical on every run.)

Prices are integer ticks and quantities integer lots inside the loop: exact arithmetic, no
negative residues; they become floats only when written to an event.
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit

from mm_sim import kernel_cache
from mm_sim.core.book import ST_BASE, ST_BEST_ASK, ST_BEST_BID, book_apply
from mm_sim.events import BID, KIND_CLEAR, KIND_DEPTH, KIND_SNAPSHOT, KIND_TRADE

# Ticks covered by the simulator's own level arrays; re-centred on the fair price when it drifts
# towards an edge (levels pushed out are removed with a depth update, so consumers stay in sync).
WINDOW = 1 << 14
QUARTER = WINDOW // 4

# ---- float parameters (fp) -------------------------------------------------------------------
P_SIG0 = 0  # log-price volatility per sqrt(second), regimes 0..2 at P_SIG0 + r
P_DUR0 = 3  # mean regime duration, seconds
P_ACT0 = 6  # order-flow activity multiplier
P_NU = 9  # fair-price update rate, 1/s
P_LAMBDA = 10  # limit-order arrivals per side, 1/s
P_ALPHA = 11  # placement-distance power-law exponent
P_LIM_SCALE = 12  # Lomax scale of limit sizes, lots
P_LIM_SHAPE = 13  # Lomax shape of limit sizes
P_MKT_SCALE = 14
P_MKT_SHAPE = 15
P_SIZE_CAP = 16  # largest order, lots
P_LIM_MEAN = 17  # mean limit size, lots (cancel rate is per mean-sized order)
P_THETA = 18  # cancellations per resting mean-sized order, 1/s
P_PHI = 19  # fade rate of a stale touch level, 1/s
P_FADE_MARGIN = 20  # ticks beyond fair before a touch is stale
P_MU_NOISE = 21  # uninformed market orders, 1/s (both sides)
P_MU_INF = 22  # informed traders' look rate, 1/s
P_EDGE = 23  # ticks of mispricing an informed trader needs
P_LAT_MU = 24  # log of median feed latency (seconds)
P_LAT_SIG = 25  # stationary std of log latency
P_LAT_TAU = 26  # correlation time of log latency, s
P_SPIKE_RATE = 27  # latency spikes, 1/s
P_SPIKE_MEAN = 28  # mean spike height, s
P_SPIKE_TAU = 29  # spike decay time, s
P_TICK = 30
P_TICK_DIV = 31  # 1/tick when that is an integer (exact decimal prices), else 0
P_LOT = 32
P_LOT_DIV = 33
N_FP = 34

# ---- integer parameters (ip) -----------------------------------------------------------------
Q_KMAX = 0  # farthest placement distance, ticks
Q_PROTECT = 1  # market orders never fill beyond touch +- this many ticks
Q_START_NS = 2  # exch_ts of simulated time 0
N_IP = 3

# ---- float state (fs) ------------------------------------------------------------------------
S_T = 0  # simulated time, s (negative during warm-up)
S_LOGP = 1  # log of the fair price
S_FAIR = 2  # fair price in ticks (exp(S_LOGP) / tick)
S_VARP = 3  # fair-price variance accrued since the last update
S_TMARK = 4  # time up to which S_VARP is accrued
S_TSWITCH = 5  # time of the next regime switch
S_LATX = 6  # log-latency deviation (OU)
S_SPIKE = 7  # current spike excess latency, s
S_TMSG = 8  # time of the last emitted message
N_FS = 9

# ---- integer state (is) ----------------------------------------------------------------------
I_BASE = 0  # absolute tick of index 0
I_BB = 1  # best bid index, -1 when empty
I_BA = 2  # best ask index, -1 when empty
I_NB = 3  # non-empty bid levels
I_NA = 4
I_QB = 5  # total bid lots
I_QA = 6
I_REG = 7  # volatility regime 0..2
I_LAST_LOCAL = 8  # last local_ts written
I_HAVE_MSG = 9  # 1 once a message was emitted (latency state is live)
I_N_FADES = 10
I_N_INFORMED = 11
I_N_NOISE = 12
I_N_RECENTRES = 13
I_N_SKIPPED = 14  # placements that would have fallen outside the window
I_N_CANCELS = 15
I_N_PLACES = 16
I_N_FAIR = 17  # fair samples written
I_N_REGSW = 18  # regime switches written
N_IS = 19

# The generator's whole state, one tuple through every kernel (numba passes a tuple of arrays
# as its members): rng state, float and int parameters (fp, ip), float and int state (fs, ist),
# lots per tick of the window on each side (bq, aq) and their Fenwick trees (btree, atree).
Market = tuple[np.ndarray, ...]

STATUS_DONE = 0
STATUS_OUT_FULL = 1
STATUS_FAIR_FULL = 2
STATUS_REGIME_FULL = 3

_GOLDEN = np.uint64(0x9E3779B97F4A7C15)
_MIX1 = np.uint64(0xBF58476D1CE4E5B9)
_MIX2 = np.uint64(0x94D049BB133111EB)
_TWO_M53 = 1.0 / 9007199254740992.0


# ---- random numbers --------------------------------------------------------------------------


@njit(cache=True)
def rng_next(rs: np.ndarray) -> np.uint64:
    """splitmix64: one 64-bit word; ``rs[0]`` is the whole generator state."""
    s = rs[0] + _GOLDEN
    rs[0] = s
    z = (s ^ (s >> np.uint64(30))) * _MIX1
    z = (z ^ (z >> np.uint64(27))) * _MIX2
    return z ^ (z >> np.uint64(31))


@njit(cache=True)
def rng_uniform(rs: np.ndarray) -> float:
    """Uniform on [0, 1) with 53 random bits."""
    return float(rng_next(rs) >> np.uint64(11)) * _TWO_M53


@njit(cache=True)
def rng_exponential(rs: np.ndarray) -> float:
    return -math.log(1.0 - rng_uniform(rs))


@njit(cache=True)
def rng_normal(rs: np.ndarray) -> float:
    """Box-Muller, one variate per call (no cached twin: the stream stays easy to resume)."""
    u1 = rng_uniform(rs)
    u2 = rng_uniform(rs)
    return math.sqrt(-2.0 * math.log(1.0 - u1)) * math.cos(2.0 * math.pi * u2)


@njit(cache=True)
def lomax_lots(rs: np.ndarray, scale: float, shape: float, cap: int) -> int:
    """Heavy-tailed order size in lots: Lomax(scale, shape) rounded up, at least 1, capped."""
    u = rng_uniform(rs)
    x = scale * ((1.0 - u) ** (-1.0 / shape) - 1.0)
    if x >= cap:
        return cap
    n = math.ceil(x)
    return n if n >= 1 else 1


@njit(cache=True)
def placement_distance(rs: np.ndarray, alpha: float, kmax: int) -> int:
    """Distance in ticks, 1..kmax: floor of a power law with density ~ x^-alpha on [1, kmax+1)."""
    u = rng_uniform(rs)
    top = kmax + 1.0
    if abs(alpha - 1.0) < 1e-9:
        x = top**u
    else:
        b = 1.0 - alpha
        x = (1.0 + u * (top**b - 1.0)) ** (1.0 / b)
    i = math.floor(x)
    if i < 1:
        return 1
    return i if i <= kmax else kmax


# ---- Fenwick tree over level quantities (cancellations pick a level in proportion to size) ---


@njit(cache=True)
def fw_add(tree: np.ndarray, idx: int, delta: int) -> None:
    i = idx + 1
    n = tree.shape[0]
    while i < n:
        tree[i] += delta
        i += i & (-i)


@njit(cache=True)
def fw_find(tree: np.ndarray, target: int) -> int:
    """Smallest index whose prefix sum exceeds ``target`` (0 <= target < total)."""
    n = tree.shape[0] - 1
    pos = 0
    step = 1
    while step * 2 <= n:
        step *= 2
    rem = target
    while step > 0:
        nxt = pos + step
        if nxt <= n and tree[nxt] <= rem:
            pos = nxt
            rem -= tree[nxt]
        step //= 2
    return pos


@njit(cache=True)
def fw_build(tree: np.ndarray, q: np.ndarray) -> None:
    n = q.shape[0]
    tree[:] = 0
    for i in range(n):
        tree[i + 1] += q[i]
        j = i + 1 + ((i + 1) & (-(i + 1)))
        if j <= n:
            tree[j] += tree[i + 1]


# ---- output ----------------------------------------------------------------------------------


@njit(cache=True)
def _price(fp: np.ndarray, tick_abs: int) -> float:
    d = fp[P_TICK_DIV]
    return tick_abs / d if d > 0.0 else tick_abs * fp[P_TICK]


@njit(cache=True)
def _qty(fp: np.ndarray, lots: int) -> float:
    d = fp[P_LOT_DIV]
    return lots / d if d > 0.0 else lots * fp[P_LOT]


@njit(cache=True)
def latency_step(
    rs: np.ndarray, fp: np.ndarray, fs: np.ndarray, ist: np.ndarray, t: float
) -> float:
    """Advance the feed-latency process to time ``t`` and return the latency in seconds.

    Log-latency is an Ornstein-Uhlenbeck process (exact discretisation over the gap since the
    last message); spikes arrive as a Poisson process (at most one per gap) and decay
    exponentially, modelling a congested link that drains.
    """
    sig = fp[P_LAT_SIG]
    if ist[I_HAVE_MSG] == 0:
        fs[S_LATX] = sig * rng_normal(rs)
        fs[S_SPIKE] = 0.0
        ist[I_HAVE_MSG] = 1
    else:
        gap = t - fs[S_TMSG]
        rho = math.exp(-gap / fp[P_LAT_TAU])
        fs[S_LATX] = fs[S_LATX] * rho + sig * math.sqrt(1.0 - rho * rho) * rng_normal(rs)
        spike = fs[S_SPIKE] * math.exp(-gap / fp[P_SPIKE_TAU])
        if rng_uniform(rs) < 1.0 - math.exp(-fp[P_SPIKE_RATE] * gap):
            spike += fp[P_SPIKE_MEAN] * rng_exponential(rs)
        fs[S_SPIKE] = spike
    fs[S_TMSG] = t
    return math.exp(fp[P_LAT_MU] + fs[S_LATX]) + fs[S_SPIKE]


@njit(cache=True)
def _message(
    rs: np.ndarray, fp: np.ndarray, ip: np.ndarray, fs: np.ndarray, ist: np.ndarray, t: float
) -> tuple[int, int]:
    """(exch_ts, local_ts) of a message sent at ``t``; local_ts never goes backwards (TCP)."""
    exch = ip[Q_START_NS] + np.int64(t * 1e9)
    lat = latency_step(rs, fp, fs, ist, t)
    local = exch + np.int64(lat * 1e9)
    if local < ist[I_LAST_LOCAL]:
        local = ist[I_LAST_LOCAL]
    ist[I_LAST_LOCAL] = local
    return exch, local


@njit(cache=True)
def _write(
    out: np.ndarray,
    n: int,
    exch: int,
    local: int,
    price: float,
    qty: float,
    kind: int,
    side: int,
) -> int:
    r = out[n]
    r["exch_ts"] = exch
    r["local_ts"] = local
    r["price"] = price
    r["qty"] = qty
    r["kind"] = kind
    r["side"] = side
    return n + 1


# ---- book helpers ----------------------------------------------------------------------------


@njit(cache=True)
def _scan_down(q: np.ndarray, start: int) -> int:
    i = start
    while i >= 0:
        if q[i] > 0:
            return i
        i -= 1
    return -1


@njit(cache=True)
def _scan_up(q: np.ndarray, start: int) -> int:
    i = start
    n = q.shape[0]
    while i < n:
        if q[i] > 0:
            return i
        i += 1
    return -1


@njit(cache=True)
def _set_level(
    q: np.ndarray, tree: np.ndarray, ist: np.ndarray, side: int, idx: int, new: int
) -> None:
    """Set one level's quantity and keep totals, counts and the touch consistent."""
    old = q[idx]
    if new == old:
        return
    q[idx] = new
    fw_add(tree, idx, new - old)
    if side == BID:
        ist[I_QB] += new - old
        if old == 0:
            ist[I_NB] += 1
            if idx > ist[I_BB]:
                ist[I_BB] = idx
        elif new == 0:
            ist[I_NB] -= 1
            if idx == ist[I_BB]:
                ist[I_BB] = _scan_down(q, idx - 1) if ist[I_NB] > 0 else -1
    else:
        ist[I_QA] += new - old
        if old == 0:
            ist[I_NA] += 1
            if ist[I_BA] < 0 or idx < ist[I_BA]:
                ist[I_BA] = idx
        elif new == 0:
            ist[I_NA] -= 1
            if idx == ist[I_BA]:
                ist[I_BA] = _scan_up(q, idx + 1) if ist[I_NA] > 0 else -1


@njit(cache=True)
def _recentre(
    mk: Market,
    out: np.ndarray,
    n: int,
    emit: bool,
) -> int:
    """Move the window so the fair price sits in the middle; far levels leave with a depth 0."""
    rs, fp, ip, fs, ist, bq, aq, btree, atree = mk
    new_base = math.floor(fs[S_FAIR]) - WINDOW // 2
    shift = new_base - ist[I_BASE]
    exch = 0
    local = 0
    have = False
    for side in (BID, -BID):
        q = bq if side == BID else aq
        for i in range(WINDOW):
            if q[i] > 0:
                j = i - shift
                if j < 0 or j >= WINDOW:
                    if emit:
                        if not have:
                            exch, local = _message(rs, fp, ip, fs, ist, fs[S_T])
                            have = True
                        n = _write(
                            out, n, exch, local, _price(fp, ist[I_BASE] + i), 0.0, KIND_DEPTH, side
                        )
                    if side == BID:
                        ist[I_QB] -= q[i]
                        ist[I_NB] -= 1
                    else:
                        ist[I_QA] -= q[i]
                        ist[I_NA] -= 1
                    q[i] = 0
        if shift > 0:
            for i in range(WINDOW):
                j = i + shift
                q[i] = q[j] if j < WINDOW else 0
        elif shift < 0:
            for i in range(WINDOW - 1, -1, -1):
                j = i + shift
                q[i] = q[j] if j >= 0 else 0
    ist[I_BASE] = new_base
    fw_build(btree, bq)
    fw_build(atree, aq)
    ist[I_BB] = _scan_down(bq, WINDOW - 1) if ist[I_NB] > 0 else -1
    ist[I_BA] = _scan_up(aq, 0) if ist[I_NA] > 0 else -1
    ist[I_N_RECENTRES] += 1
    return n


@njit(cache=True)
def _take(
    mk: Market,
    out: np.ndarray,
    n: int,
    emit: bool,
    side: int,
    size: int,
    limit_abs: int,
    scratch: np.ndarray,
) -> int:
    """Execute an aggressive order of ``size`` lots on ``side`` (+1 buy) up to ``limit_abs``.

    Emits one trade per level consumed, then the depth updates of those levels; the unfilled
    rest is dropped (immediate-or-cancel). Returns the new output length.
    """
    rs, fp, ip, fs, ist, bq, aq, btree, atree = mk
    base = ist[I_BASE]
    if side == BID:
        q = aq
        idx = ist[I_BA]
        step = 1
    else:
        q = bq
        idx = ist[I_BB]
        step = -1
    if idx < 0:
        return n
    exch = 0
    local = 0
    if emit:
        exch, local = _message(rs, fp, ip, fs, ist, fs[S_T])
    remaining = size
    k = 0
    while remaining > 0 and 0 <= idx < WINDOW and k < scratch.shape[0]:
        px = base + idx
        if (side == BID and px > limit_abs) or (side != BID and px < limit_abs):
            break
        avail = q[idx]
        if avail > 0:
            fill = avail if avail < remaining else remaining
            if emit:
                n = _write(out, n, exch, local, _price(fp, px), _qty(fp, fill), KIND_TRADE, side)
            scratch[k, 0] = idx
            scratch[k, 1] = avail - fill
            k += 1
            remaining -= fill
        idx += step
    book_side = -side
    tree = atree if side == BID else btree
    for j in range(k):
        idx = scratch[j, 0]
        _set_level(q, tree, ist, book_side, idx, scratch[j, 1])
        if emit:
            n = _write(
                out,
                n,
                exch,
                local,
                _price(fp, base + idx),
                _qty(fp, scratch[j, 1]),
                KIND_DEPTH,
                book_side,
            )
    return n


# ---- the event loop --------------------------------------------------------------------------


@njit(cache=True)
def run(
    mk: Market,
    out: np.ndarray,
    n_out: int,
    fair_t: np.ndarray,
    fair_px: np.ndarray,
    reg_t: np.ndarray,
    reg_state: np.ndarray,
    scratch: np.ndarray,
    t_end: float,
    emit: bool,
) -> tuple[int, int]:
    """Simulate until ``t_end`` or until an output array is nearly full.

    Gillespie scheme over the competing Poisson clocks (see docs/SYNTHETIC.md); regime switches
    are scheduled times, and rates are re-evaluated after every event. Returns
    ``(status, n_out)``; on a ``*_FULL`` status nothing was drawn for the pending step, so calling
    again with larger arrays continues the same path.
    """
    rs, fp, ip, fs, ist, bq, aq, btree, atree = mk
    kmax = ip[Q_KMAX]
    protect = ip[Q_PROTECT]
    margin = 2 * (protect + 2) + 2 * WINDOW
    lim_scale = fp[P_LIM_SCALE]
    lim_shape = fp[P_LIM_SHAPE]
    cap = int(fp[P_SIZE_CAP])
    while True:
        if emit:
            if n_out + margin > out.shape[0]:
                return STATUS_OUT_FULL, n_out
            if ist[I_N_FAIR] >= fair_t.shape[0]:
                return STATUS_FAIR_FULL, n_out
            if ist[I_N_REGSW] >= reg_t.shape[0]:
                return STATUS_REGIME_FULL, n_out
        t = fs[S_T]
        reg = ist[I_REG]
        act = fp[P_ACT0 + reg]
        fair = fs[S_FAIR]
        base = ist[I_BASE]
        bb = ist[I_BB]
        ba = ist[I_BA]
        fmargin = fp[P_FADE_MARGIN]
        over_a = fair - fmargin - (base + ba) if ba >= 0 else 0.0
        over_b = (base + bb) - fair - fmargin if bb >= 0 else 0.0
        stale_a = over_a > 0.0
        stale_b = over_b > 0.0
        r_fair = fp[P_NU]
        r_place = act * fp[P_LAMBDA]
        r_cb = act * fp[P_THETA] * ist[I_QB] / fp[P_LIM_MEAN]
        r_ca = act * fp[P_THETA] * ist[I_QA] / fp[P_LIM_MEAN]
        r_noise = act * fp[P_MU_NOISE]
        r_inf = act * fp[P_MU_INF]
        # The more stale the touch, the sooner its owners pull it.
        r_fb = fp[P_PHI] * (1.0 + over_b) if stale_b else 0.0
        r_fa = fp[P_PHI] * (1.0 + over_a) if stale_a else 0.0
        total = r_fair + 2.0 * r_place + r_cb + r_ca + r_noise + r_inf + r_fb + r_fa
        tn = t + rng_exponential(rs) / total
        tsw = fs[S_TSWITCH]
        if tsw <= tn and tsw < t_end:
            # Regime switch first: rates change, the pending draw is discarded (memoryless).
            sig = fp[P_SIG0 + reg]
            fs[S_VARP] += sig * sig * (tsw - fs[S_TMARK])
            fs[S_TMARK] = tsw
            fs[S_T] = tsw
            nxt = (reg + 1 + int(rng_uniform(rs) * 2.0)) % 3
            ist[I_REG] = nxt
            fs[S_TSWITCH] = tsw + fp[P_DUR0 + nxt] * rng_exponential(rs)
            if emit:
                reg_t[ist[I_N_REGSW]] = tsw
                reg_state[ist[I_N_REGSW]] = nxt
                ist[I_N_REGSW] += 1
            continue
        if tn >= t_end:
            fs[S_T] = t_end
            return STATUS_DONE, n_out
        fs[S_T] = tn
        u = rng_uniform(rs) * total
        # --- fair-price update: Brownian increment accrued since the last one
        if u < r_fair:
            sig = fp[P_SIG0 + reg]
            var = fs[S_VARP] + sig * sig * (tn - fs[S_TMARK])
            fs[S_LOGP] += math.sqrt(var) * rng_normal(rs) - 0.5 * var
            fs[S_VARP] = 0.0
            fs[S_TMARK] = tn
            fs[S_FAIR] = math.exp(fs[S_LOGP]) / fp[P_TICK]
            if emit:
                fair_t[ist[I_N_FAIR]] = tn
                fair_px[ist[I_N_FAIR]] = fs[S_FAIR]
                ist[I_N_FAIR] += 1
            c = math.floor(fs[S_FAIR]) - ist[I_BASE]
            if c < QUARTER or c > WINDOW - QUARTER:
                n_out = _recentre(mk, out, n_out, emit)
            continue
        u -= r_fair
        # --- limit order arrivals, anchored to the better of the opposite touch and fair
        if u < 2.0 * r_place:
            side = BID if u < r_place else -BID
            dist = placement_distance(rs, fp[P_ALPHA], kmax)
            size = lomax_lots(rs, lim_scale, lim_shape, cap)
            ffair = math.floor(fair)
            if side == BID:
                ref = ffair + 1
                if ba >= 0 and base + ba < ref:
                    ref = base + ba
                idx = ref - dist - base
                q = bq
                tree = btree
            else:
                ref = ffair
                if bb >= 0 and base + bb > ref:
                    ref = base + bb
                idx = ref + dist - base
                q = aq
                tree = atree
            if idx < 0 or idx >= WINDOW:
                ist[I_N_SKIPPED] += 1
                continue
            _set_level(q, tree, ist, side, idx, q[idx] + size)
            ist[I_N_PLACES] += 1
            if emit:
                exch, local = _message(rs, fp, ip, fs, ist, tn)
                n_out = _write(
                    out,
                    n_out,
                    exch,
                    local,
                    _price(fp, base + idx),
                    _qty(fp, q[idx]),
                    KIND_DEPTH,
                    side,
                )
            continue
        u -= 2.0 * r_place
        # --- cancellations: a resting lot picked uniformly, i.e. a level in proportion to size
        if u < r_cb + r_ca:
            if u < r_cb:
                side = BID
                q = bq
                tree = btree
                tot = ist[I_QB]
            else:
                side = -BID
                q = aq
                tree = atree
                tot = ist[I_QA]
            target = int(rng_uniform(rs) * tot)
            if target >= tot:
                target = tot - 1
            idx = fw_find(tree, target)
            size = lomax_lots(rs, lim_scale, lim_shape, cap)
            new = q[idx] - size
            if new < 0:
                new = 0
            _set_level(q, tree, ist, side, idx, new)
            ist[I_N_CANCELS] += 1
            if emit:
                exch, local = _message(rs, fp, ip, fs, ist, tn)
                n_out = _write(
                    out, n_out, exch, local, _price(fp, base + idx), _qty(fp, new), KIND_DEPTH, side
                )
            continue
        u -= r_cb + r_ca
        # --- uninformed market order: either side, walks the book up to the protection band
        if u < r_noise:
            side = BID if rng_uniform(rs) < 0.5 else -BID
            size = lomax_lots(rs, fp[P_MKT_SCALE], fp[P_MKT_SHAPE], cap)
            if side == BID:
                if ba < 0:
                    continue
                limit_abs = base + ba + protect
            else:
                if bb < 0:
                    continue
                limit_abs = base + bb - protect
            n_out = _take(mk, out, n_out, emit, side, size, limit_abs, scratch)
            ist[I_N_NOISE] += 1
            continue
        u -= r_noise
        # --- informed trader: takes quotes that are stale against fair by more than the edge
        if u < r_inf:
            edge = fp[P_EDGE]
            size = lomax_lots(rs, fp[P_MKT_SCALE], fp[P_MKT_SHAPE], cap)
            if ba >= 0 and base + ba < fair - edge:
                limit_abs = math.ceil(fair - edge) - 1
                n_out = _take(mk, out, n_out, emit, BID, size, limit_abs, scratch)
                ist[I_N_INFORMED] += 1
            elif bb >= 0 and base + bb > fair + edge:
                limit_abs = math.floor(fair + edge) + 1
                n_out = _take(mk, out, n_out, emit, -BID, size, limit_abs, scratch)
                ist[I_N_INFORMED] += 1
            continue
        u -= r_inf
        # --- fade: a liquidity provider pulls a whole stale touch level
        if u < r_fb and stale_b:
            side = BID
            idx = bb
            q = bq
            tree = btree
        elif stale_a:
            side = -BID
            idx = ba
            q = aq
            tree = atree
        else:
            continue  # only reachable through rounding of the rate sum
        _set_level(q, tree, ist, side, idx, 0)
        ist[I_N_FADES] += 1
        if emit:
            exch, local = _message(rs, fp, ip, fs, ist, tn)
            n_out = _write(out, n_out, exch, local, _price(fp, base + idx), 0.0, KIND_DEPTH, side)


@njit(cache=True)
def write_snapshot(
    mk: Market,
    out: np.ndarray,
    n: int,
) -> int:
    """One clear, then every non-empty level (bids best first, then asks best first)."""
    rs, fp, ip, fs, ist, bq, aq, _, _ = mk
    exch, local = _message(rs, fp, ip, fs, ist, fs[S_T])
    base = ist[I_BASE]
    n = _write(out, n, exch, local, 0.0, 0.0, KIND_CLEAR, 0)
    for i in range(WINDOW - 1, -1, -1):
        if bq[i] > 0:
            n = _write(out, n, exch, local, _price(fp, base + i), _qty(fp, bq[i]), KIND_SNAPSHOT, 1)
    for i in range(WINDOW):
        if aq[i] > 0:
            n = _write(
                out, n, exch, local, _price(fp, base + i), _qty(fp, aq[i]), KIND_SNAPSHOT, -1
            )
    return n


# ---- replay statistics (used by tests and by the docs' statistics script) --------------------


@njit(cache=True)
def touch_samples(
    events: np.ndarray,
    bid: np.ndarray,
    ask: np.ndarray,
    st: np.ndarray,
    tick_size: float,
    t0: int,
    step_ns: int,
    out_bid: np.ndarray,
    out_ask: np.ndarray,
    out_bq: np.ndarray,
    out_aq: np.ndarray,
) -> int:
    """Replay ``events`` into a book from ``make_book`` and record the touch on a time grid.

    Sample k is the book after every event with ``exch_ts <= t0 + k * step_ns`` (NaN price and
    zero quantity for an empty side). Returns how many events left the book crossed or locked.
    """
    n_samples = out_bid.shape[0]
    bad = 0
    k = 0
    for j in range(events.shape[0]):
        e = events[j]
        while k < n_samples and t0 + k * step_ns < e["exch_ts"]:
            _sample(bid, ask, st, tick_size, k, out_bid, out_ask, out_bq, out_aq)
            k += 1
        book_apply(bid, ask, st, tick_size, e["kind"], e["side"], e["price"], e["qty"])
        b = st[ST_BEST_BID]
        a = st[ST_BEST_ASK]
        if b >= 0 and a >= 0 and b >= a:
            bad += 1
    while k < n_samples:
        _sample(bid, ask, st, tick_size, k, out_bid, out_ask, out_bq, out_aq)
        k += 1
    return bad


@njit(cache=True)
def _sample(
    bid: np.ndarray,
    ask: np.ndarray,
    st: np.ndarray,
    tick_size: float,
    k: int,
    out_bid: np.ndarray,
    out_ask: np.ndarray,
    out_bq: np.ndarray,
    out_aq: np.ndarray,
) -> None:
    b = st[ST_BEST_BID]
    a = st[ST_BEST_ASK]
    out_bid[k] = (st[ST_BASE] + b) * tick_size if b >= 0 else np.nan
    out_ask[k] = (st[ST_BASE] + a) * tick_size if a >= 0 else np.nan
    out_bq[k] = bid[b] if b >= 0 else 0.0
    out_aq[k] = ask[a] if a >= 0 else 0.0


kernel_cache.bind(__name__, kernel_cache.CORE)  # before any kernel loads: kernel_cache.py
