"""Pacing and pre-trade limits: every intended place/replace/cancel passes :func:`gate`.

A refusal carries exactly one reason, checked in this fixed order (docs/CORE.md, "Limiter"):

1. ``risk``: a place/replace whose fill could take |position| above ``inventory.max_position``
   or the position notional above ``inventory.max_notional`` (only when it adds exposure);
   for an inverse instrument the position is in contracts and its notional is contracts x C;
2. ``min_interval``: the previous action on the same side is younger than ``min_interval_ms``;
3. ``concurrency``: ``limiter.max_in_flight`` actions are sent and not yet acknowledged;
4. ``throttle``: the cancel/replace token bucket (``replace_rate_per_min``) is empty, or the
   venue request budget (``venue_budget`` per ``venue_window_ms``) is spent.

Both budgets are token buckets refilled continuously on the local clock; a token is taken only
when the action is actually sent.

This module also owns the per-side strategy table ``si`` (what the strategy believes it has on
each side and when it last acted) because pacing is keyed on it.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from numba import njit

from mm_sim import kernel_cache
from mm_sim.core.records import (
    ACT_CANCEL,
    ACT_PLACE,
    BLK_CONCURRENCY,
    BLK_MIN_INTERVAL,
    BLK_RISK,
    BLK_THROTTLE,
)

# Kernels never allocate, so they are compiled without numba's reference counting: passing
# state arrays between kernels then costs nothing (docs/CORE.md, "Speed").
JIT: dict[str, Any] = {"cache": True, "_nrt": False}

NO_TS = -(1 << 62)  # "never": far enough in the past, small enough not to overflow differences

# Token buckets: float levels and int64 last-refill times.
LF_REPLACE = 0
LF_VENUE = 1
LF_SIZE = 2
LI_REPLACE_TS = 0
LI_VENUE_TS = 1
LI_SIZE = 2

# Per-side strategy table si[k, :], k = 0 bid, 1 ask.
S_SLOT = 0  # order slot the strategy considers live on this side, -1 none
S_PX = 1  # tick of the last price sent
S_LOTS = 2  # lots of the last quantity sent
S_DECIDED = 3  # local time of the decision that last (re)queued the order (tail-age clock)
S_LAST_ACT = 4  # local time of the last action sent on this side (min_interval clock)
S_BK_ACT = 5  # last refused intent: action (-1 none), price tick, lots, reason
S_BK_PX = 6
S_BK_LOTS = 7
S_BK_REASON = 8
S_SIZE = 9


def make_side_table() -> np.ndarray:
    si = np.zeros((2, S_SIZE), dtype=np.int64)
    si[:, S_SLOT] = -1
    si[:, S_DECIDED] = NO_TS
    si[:, S_LAST_ACT] = NO_TS
    si[:, S_BK_ACT] = -1
    return si


def make_buckets() -> tuple[np.ndarray, np.ndarray]:
    lf = np.zeros(LF_SIZE)
    li = np.full(LI_SIZE, NO_TS, dtype=np.int64)
    return lf, li


@njit(inline="always", **JIT)
def bucket_level(tokens: float, last_ts: int, now: int, cap: float, rate_per_ns: float) -> float:
    """Tokens available at ``now``; a bucket never used is full."""
    if last_ts == NO_TS:
        return cap
    elapsed = now - last_ts
    if elapsed < 0:
        elapsed = 0
    level = tokens + elapsed * rate_per_ns
    if level > cap:
        return cap
    return level


@njit(inline="always", **JIT)
def risk_breach(
    pos: float, side: int, qty: float, unit_notional: float, max_pos: float, max_notional: float
) -> bool:
    """Could a full fill of this order push exposure beyond a limit (when it adds exposure)?

    ``unit_notional`` is the quote-currency value of one unit of quantity: the order's price for
    a linear instrument, the contract size for an inverse one (a contract is worth C dollars
    whatever the price), so ``max_notional`` is in quote currency for both.
    """
    new = pos + side * qty
    if abs(new) <= abs(pos):
        return False
    return abs(new) > max_pos * (1.0 + 1e-9) or abs(new) * unit_notional > max_notional


@njit(inline="always", **JIT)
def gate(
    action: int,
    risk_bad: bool,
    now: int,
    last_act_ts: int,
    min_interval_ns: float,
    in_flight: int,
    max_in_flight: int,
    lf: np.ndarray,
    li: np.ndarray,
    repl_cap: float,
    repl_rate: float,
    venue_cap: float,
    venue_rate: float,
) -> int:
    """The block reason for this intent, or -1 when it may be sent."""
    if risk_bad and action != ACT_CANCEL:
        return BLK_RISK
    if now - last_act_ts < min_interval_ns:
        return BLK_MIN_INTERVAL
    if in_flight >= max_in_flight:
        return BLK_CONCURRENCY
    if (
        action != ACT_PLACE
        and bucket_level(lf[LF_REPLACE], li[LI_REPLACE_TS], now, repl_cap, repl_rate) < 1.0
    ):
        return BLK_THROTTLE
    if bucket_level(lf[LF_VENUE], li[LI_VENUE_TS], now, venue_cap, venue_rate) < 1.0:
        return BLK_THROTTLE
    return -1


@njit(**JIT)
def consume(
    action: int,
    now: int,
    lf: np.ndarray,
    li: np.ndarray,
    repl_cap: float,
    repl_rate: float,
    venue_cap: float,
    venue_rate: float,
) -> None:
    """Take the tokens of an action that passed :func:`gate`."""
    if action != ACT_PLACE:
        lf[LF_REPLACE] = bucket_level(lf[LF_REPLACE], li[LI_REPLACE_TS], now, repl_cap, repl_rate)
        lf[LF_REPLACE] -= 1.0
        li[LI_REPLACE_TS] = now
    lf[LF_VENUE] = bucket_level(lf[LF_VENUE], li[LI_VENUE_TS], now, venue_cap, venue_rate) - 1.0
    li[LI_VENUE_TS] = now


kernel_cache.bind(__name__, kernel_cache.CORE)  # before any kernel loads: kernel_cache.py
