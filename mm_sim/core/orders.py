"""The venue's order table and the action channel: order slots, the live list, actions in flight.

Split from match.py (the matching itself) because the strategy's side uses them as well: it
takes a slot and queues an action (strategy.py), the driver releases what nothing refers to.
"""

from __future__ import annotations

import numpy as np
from numba import njit

from mm_sim import kernel_cache
from mm_sim.core.params import JIT
from mm_sim.core.venue_state import (
    O_CURRENT,
    O_REFS,
    O_STATUS,
    OP_ACK,
    OP_ARRIVE,
    OP_DECIDED_TS,
    OP_DONE,
    OP_KIND,
    OP_NF,
    OP_NI,
    OP_PX,
    OP_SLOT,
    OPF_MID,
    OPF_QTY,
    OS_DONE,
    OS_FREE,
    VS_DIRTY,
    VS_LAST_ARRIVAL,
    VS_NLIVE,
    VS_NOPS,
)


@njit(**JIT)
def alloc_slot(oi: np.ndarray, live: np.ndarray, vs: np.ndarray) -> int:
    """Lowest free slot, appended to the live list (which stays in ascending order id)."""
    for s in range(oi.shape[0]):
        if oi[s, O_STATUS] == OS_FREE:
            live[vs[VS_NLIVE]] = s
            vs[VS_NLIVE] += 1
            return s
    return -1


@njit(inline="always", **JIT)
def sweep_free(oi: np.ndarray, live: np.ndarray, vs: np.ndarray) -> None:
    """Release finished orders nothing refers to any more; keeps the live list's order."""
    vs[VS_DIRTY] = 0
    n = vs[VS_NLIVE]
    w = 0
    for m in range(n):
        s = live[m]
        if oi[s, O_STATUS] == OS_DONE and oi[s, O_REFS] == 0 and oi[s, O_CURRENT] == 0:
            oi[s, O_STATUS] = OS_FREE
        else:
            live[w] = s
            w += 1
    vs[VS_NLIVE] = w


@njit(**JIT)
def push_op(
    pi: np.ndarray,
    pf: np.ndarray,
    vs: np.ndarray,
    kind: int,
    slot: int,
    arrive: int,
    ack_leg: int,
    px: int,
    decided: int,
    qty: float,
    mid: float,
) -> None:
    """Queue an action; the channel is ordered, so it cannot overtake an earlier one."""
    if arrive < vs[VS_LAST_ARRIVAL]:
        arrive = vs[VS_LAST_ARRIVAL]
    vs[VS_LAST_ARRIVAL] = arrive
    j = vs[VS_NOPS]
    pi[j, OP_KIND] = kind
    pi[j, OP_SLOT] = slot
    pi[j, OP_ARRIVE] = arrive
    pi[j, OP_ACK] = arrive + ack_leg
    pi[j, OP_PX] = px
    pi[j, OP_DECIDED_TS] = decided
    pi[j, OP_DONE] = 0
    pf[j, OPF_QTY] = qty
    pf[j, OPF_MID] = mid
    vs[VS_NOPS] = j + 1


@njit(inline="always", **JIT)
def purge_ops(now: int, pi: np.ndarray, pf: np.ndarray, oi: np.ndarray, vs: np.ndarray) -> None:
    """Drop actions processed at the venue whose acknowledgement has reached us by ``now``."""
    n = vs[VS_NOPS]
    w = 0
    for j in range(n):
        if pi[j, OP_DONE] == 1 and pi[j, OP_ACK] <= now:
            oi[pi[j, OP_SLOT], O_REFS] -= 1
            vs[VS_DIRTY] = 1
        else:
            if w != j:
                for c in range(OP_NI):
                    pi[w, c] = pi[j, c]
                for c in range(OP_NF):
                    pf[w, c] = pf[j, c]
            w += 1
    vs[VS_NOPS] = w


kernel_cache.bind(__name__, kernel_cache.CORE)  # before any kernel loads: kernel_cache.py
