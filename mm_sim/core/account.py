"""Exact account (position, cash with fees) and the activity counters.

The account is updated by every fill as it happens, independently of the fill records the
report reads, so the report's decomposition can be checked against it: cash + position * mid
must equal the sum of the per-fill terms.

Cash convention: a buy of ``qty`` at ``price`` costs ``price * qty``; the fee is
``price * qty * bps * 1e-4`` (positive = paid, negative = rebate) and always reduces cash.

Inverse (coin-margined) contracts, contract size ``C`` quote units per contract: quantity is in
contracts and money in the base coin. A contract is worth ``-C / price`` coin, so a buy of
``qty`` contracts *adds* ``qty * C / price`` coin to cash and the account is worth
``cash - position * C / mid``: long ``q`` contracts from ``P0`` to ``P1`` earns
``q * C * (1/P0 - 1/P1)``. The fee is ``bps`` of the coin notional ``qty * C / price``. This is a
linear account in the mirrored instrument (price ``1/P``, quantity ``C`` per contract, sides
swapped), which is how the reports decompose it (docs/CORE.md, "Inverse contracts").
"""

from __future__ import annotations

from typing import Any

import numpy as np
from numba import njit

from mm_sim import kernel_cache
from mm_sim.core.records import LIQ_MAKER

# Kernels never allocate, so they are compiled without numba's reference counting: passing
# state arrays between kernels then costs nothing (docs/CORE.md, "Speed").
JIT: dict[str, Any] = {"cache": True, "_nrt": False}

A_POS = 0  # base units (contracts for an inverse instrument)
A_CASH = 1  # quote currency (base coin for an inverse instrument), fees included
A_FEES = 2  # sum of fees (positive = paid)
A_BUY_QTY = 3
A_SELL_QTY = 4
A_BUY_NOTIONAL = 5
A_SELL_NOTIONAL = 6
A_MAKER_QTY = 7
A_TAKER_QTY = 8
A_SIZE = 10
# Not an account figure: the contract size C of an inverse instrument (0 = linear). Kept in the
# account because every fill path books through apply_fill, which needs nothing else.
CSIZE_SLOT = 9

# Counters (int64). Attempts/sent are indexed by ACT_* (1..3), blocks by BLK_* (0..3).
C_EVENTS = 0
C_ATTEMPT0 = 0  # C_ATTEMPT0 + ACT_* -> 1..3
C_SENT0 = 3  # C_SENT0 + ACT_* -> 4..6
C_BLOCK0 = 7  # C_BLOCK0 + BLK_* -> 7..10
C_FILLS = 11
C_MAKER = 12
C_TAKER = 13
C_CANCEL_DONE = 14  # cancels that removed an order at the venue
C_CANCEL_LOST = 15  # cancels that arrived after the order was already filled
C_REPLACE_REJECTED = 16  # replaces that arrived after the order was already filled
C_NO_DECISION = 17  # decision points skipped: book one-sided or crossed
C_REPORT_FORCED = 18  # fill reports delivered early because the report queue was full
C_WALK_TRUNCATED = 19  # taker walks stopped at the level cap
C_SLOT_EXHAUSTED = 20  # places skipped because the order table was full
C_DECISIONS = 21  # decision points evaluated
C_POST_ONLY_REJECTED = 22  # post-only places/replaces the venue rejected: they would have crossed
C_SIZE = 23


def make_account(contract_size: float = 0.0) -> np.ndarray:
    """A flat account; ``contract_size`` > 0 books fills as an inverse contract of that size."""
    acc = np.zeros(A_SIZE)
    acc[CSIZE_SLOT] = contract_size
    return acc


def make_counters() -> np.ndarray:
    return np.zeros(C_SIZE, dtype=np.int64)


@njit(**JIT)
def apply_fill(
    acc: np.ndarray, side: int, price: float, qty: float, fee_bps: float, liquidity: int
) -> float:
    """Book one fill into the account; returns the fee (positive = paid).

    Linear: the notional ``price * qty`` (quote currency) is paid on a buy. Inverse
    (``contract_size`` C > 0): the coin notional ``qty * C / price`` is received on a buy."""
    c = acc[CSIZE_SLOT]
    if c > 0.0:
        notional = qty * c / price
        flow = notional  # cash change of a buy
    else:
        notional = price * qty
        flow = -notional
    fee = notional * fee_bps * 1e-4
    if side > 0:
        acc[A_POS] += qty
        acc[A_CASH] += flow
        acc[A_BUY_QTY] += qty
        acc[A_BUY_NOTIONAL] += notional
    else:
        acc[A_POS] -= qty
        acc[A_CASH] -= flow
        acc[A_SELL_QTY] += qty
        acc[A_SELL_NOTIONAL] += notional
    acc[A_CASH] -= fee
    acc[A_FEES] += fee
    if liquidity == LIQ_MAKER:
        acc[A_MAKER_QTY] += qty
    else:
        acc[A_TAKER_QTY] += qty
    return fee


kernel_cache.bind(__name__, kernel_cache.CORE)  # before any kernel loads: kernel_cache.py
