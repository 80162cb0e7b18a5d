"""Quoting: volatility estimate, Avellaneda-Stoikov reservation price, target quotes and size.

Pure arithmetic over scalars so the same functions serve the simulator's strategy and the
``validate as2008`` study (which calls :func:`reservation_price` and :func:`as_total_spread` in
the paper's own units).

Units inside the simulator (see docs/CORE.md, "Quoting"): the volatility estimate is relative
(per sqrt(second)); the inventory skew is computed in basis points of mid with sigma expressed
in bps per sqrt(second), inventory ``q`` in units of ``quoting.order_qty`` and ``gamma`` in
1/bps, so ``skew_bps = q * gamma * sigma_bps**2 * horizon_s``.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from numba import njit

from mm_sim import kernel_cache

# Kernels never allocate, so they are compiled without numba's reference counting: passing
# state arrays between kernels then costs nothing (docs/CORE.md, "Speed").
JIT: dict[str, Any] = {"cache": True, "_nrt": False}

# Volatility estimator state: one float64 array, one int64 array.
VOL_LAST_MID = 0  # mid at the last sample
VOL_VAR = 1  # EWMA of squared log-return per second (relative variance rate)
VOL_F_SIZE = 2
VOL_LAST_TS = 0  # local time of the last sample, ns
VOL_INIT = 1  # 1 once a first mid has been seen
VOL_I_SIZE = 2

# Memo of the last target computation (a cache, not state: rebuilt whenever an input changed).
# Two parts with their own inputs: the target ticks and the step (touch, position, variance:
# QM_VALID) and each side's size (its depth in the best levels: QM_LOTS_B / QM_LOTS_A). On the
# synthetic day two thirds of the recomputations were a depth change inside the best levels on
# one side, which leaves the targets and the other side's size as they were.
QM_VALID = 0
QM_BB = 1
QM_BA = 2
QM_BND_B = 3  # tick of the last bid level counted in the depth (changes deeper cannot matter)
QM_BND_A = 4
QM_BT = 5
QM_AT = 6
QM_BL = 7
QM_AL = 8
QM_STEP = 9
QM_LOTS_B = 10  # 1 while QM_BL (and QM_BND_B) hold for the bid side's current depth
QM_LOTS_A = 11
QMI_SIZE = 12
QM_POS = 0
QM_VAR = 1
QM_H = 2
QMF_SIZE = 3

# Rounding guard: a price that is a whole number of ticks up to float noise stays on that tick.
TICK_EPS = 1e-9


@njit(**JIT)
def reservation_price(s: float, q: float, gamma: float, sigma: float, tau: float) -> float:
    """Avellaneda-Stoikov (2008): r = s - q*gamma*sigma^2*tau, all in consistent units."""
    return s - q * gamma * sigma * sigma * tau


@njit(**JIT)
def as_total_spread(gamma: float, sigma: float, tau: float, k: float) -> float:
    """A-S total spread gamma*sigma^2*tau + (2/gamma)*ln(1 + gamma/k); 2/k as gamma -> 0."""
    if gamma <= 0.0:
        return 2.0 / k
    return gamma * sigma * sigma * tau + (2.0 / gamma) * np.log(1.0 + gamma / k)


@njit(**JIT)
def vol_update(
    vol_f: np.ndarray,
    vol_i: np.ndarray,
    now: int,
    mid: float,
    sample_ns: float,
    halflife_s: float,
) -> None:
    """Feed one observation of mid; sample a log-return once ``sample_ns`` has elapsed.

    The EWMA runs on r^2/dt (variance per second) with a weight that depends on the actual
    elapsed time, so gaps in the feed neither inflate nor freeze the estimate.
    """
    if vol_i[VOL_INIT] == 0:
        vol_f[VOL_LAST_MID] = mid
        vol_i[VOL_LAST_TS] = now
        vol_i[VOL_INIT] = 1
        return
    elapsed = now - vol_i[VOL_LAST_TS]
    if elapsed < sample_ns:
        return
    dt = elapsed / 1e9
    r = np.log(mid / vol_f[VOL_LAST_MID])
    alpha = 1.0 - 2.0 ** (-dt / halflife_s)
    vol_f[VOL_VAR] = vol_f[VOL_VAR] + alpha * (r * r / dt - vol_f[VOL_VAR])
    vol_f[VOL_LAST_MID] = mid
    vol_i[VOL_LAST_TS] = now


@njit(**JIT)
def half_spread_px(mid: float, half_bps: float, tick: float) -> float:
    """Half-spread in price units, never below one tick."""
    h = mid * half_bps * 1e-4
    if h > tick:
        return h
    return tick


@njit(**JIT)
def inventory_skew_px(
    mid: float, q_lots: float, gamma: float, sigma_rel: float, tau_s: float, cap_px: float
) -> float:
    """mid - r in price units, capped at +-cap_px (the max_delta_ratio bound)."""
    sigma_bps = sigma_rel * 1e4
    skew_bps = -reservation_price(0.0, q_lots, gamma, sigma_bps, tau_s)
    skew = skew_bps * 1e-4 * mid
    if skew > cap_px:
        return cap_px
    if skew < -cap_px:
        return -cap_px
    return skew


@njit(inline="always", **JIT)
def bid_tick_of(x: float, tick: float) -> int:
    """Round a bid price DOWN to the tick grid (away from the touch)."""
    return int(np.floor(x / tick + TICK_EPS))


@njit(inline="always", **JIT)
def ask_tick_of(x: float, tick: float) -> int:
    """Round an ask price UP to the tick grid (away from the touch)."""
    return int(np.ceil(x / tick - TICK_EPS))


@njit(inline="always", **JIT)
def clamp_noncross(side: int, t: int, best_bid: int, best_ask: int) -> int:
    """Pull a quote back to one tick inside the opposite touch: a maker never sends a crossing
    order."""
    if side > 0:
        if t >= best_ask:
            return best_ask - 1
        return t
    if t <= best_bid:
        return best_bid + 1
    return t


@njit(**JIT)
def target_ticks(
    mid: float,
    best_bid: int,
    best_ask: int,
    tick: float,
    q_lots: float,
    sigma_rel: float,
    gamma: float,
    tau_s: float,
    half_bps: float,
    max_delta_ratio: float,
) -> tuple[int, int, float]:
    """Wanted (bid tick, ask tick) and the half-spread used, before the per-update step limit."""
    h = half_spread_px(mid, half_bps, tick)
    skew = inventory_skew_px(mid, q_lots, gamma, sigma_rel, tau_s, max_delta_ratio * h)
    r = mid - skew
    b = clamp_noncross(1, bid_tick_of(r - h, tick), best_bid, best_ask)
    a = clamp_noncross(-1, ask_tick_of(r + h, tick), best_bid, best_ask)
    return b, a, h


@njit(inline="always", **JIT)
def max_step_ticks(max_delta_ratio: float, h: float, tick: float) -> int:
    """Largest move of one quote in one update, in ticks (at least one)."""
    n = int(np.floor(max_delta_ratio * h / tick + TICK_EPS))
    if n < 1:
        return 1
    return n


@njit(inline="always", **JIT)
def step_toward(cur: int, want: int, max_step: int) -> int:
    if want > cur + max_step:
        return cur + max_step
    if want < cur - max_step:
        return cur - max_step
    return want


@njit(inline="always", **JIT)
def quote_lots(order_qty: float, impact_ratio: float, depth: float, lot: float) -> int:
    """Our size in lots: min(order_qty, impact_ratio * visible depth), rounded down."""
    q = order_qty
    cap = impact_ratio * depth
    if cap < q:
        q = cap
    return int(np.floor(q / lot + TICK_EPS))


kernel_cache.bind(__name__, kernel_cache.CORE)  # before any kernel loads: kernel_cache.py
