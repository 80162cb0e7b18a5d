"""One fill and how the strategy learns of it: order state, account, fill record, fill report.

The venue records a fill at once (``emit_fill``); the strategy's view of its position and
orders changes only when the fill's report reaches it, ``ack`` later, in fill order
(``deliver_reports``; docs/CORE.md, "Latency"). ``FillPath`` is the narrow bundle one fill
touches (venue_state.py says why it exists).
"""

from __future__ import annotations

from numba import njit

from mm_sim import kernel_cache
from mm_sim.core.account import (
    A_POS,
    C_FILLS,
    C_MAKER,
    C_REPORT_FORCED,
    C_TAKER,
    apply_fill,
)
from mm_sim.core.limiter import S_SLOT
from mm_sim.core.params import INTERNAL, JIT
from mm_sim.core.records import (
    LIQ_MAKER,
)
from mm_sim.core.venue_state import (
    FP_ACC,
    FP_CNT,
    FP_FILLS,
    FP_NF,
    FP_NI,
    FP_NOUT,
    FP_OF,
    FP_OI,
    FP_SI,
    FP_VS,
    FP_VSF,
    O_CURRENT,
    O_DECIDED_TS,
    O_ID,
    O_REST_TS,
    O_SIDE,
    O_STATUS,
    OF_FILLED,
    OF_MID_DEC,
    OF_QUOTE_PX,
    OF_REM,
    OS_DONE,
    OUT_FILLS,
    OUT_NOUT,
    R_KNOWN,
    R_OID,
    R_SIDE,
    RF_QTY,
    RF_REM,
    VN_ACC,
    VN_CNT,
    VN_NF,
    VN_NI,
    VN_OF,
    VN_OI,
    VN_SI,
    VN_VS,
    VN_VSF,
    VS_DIRTY,
    VS_RHEAD,
    VS_RN,
    VSF_POS_VIEW,
    FillPath,
    Out,
    Venue,
)


@njit(inline="always", **JIT)
def fill_path(venue: Venue, out: Out) -> FillPath:
    """The arrays one fill touches, out of the Venue and Out bundles (see ``FillPath``)."""
    return (
        venue[VN_OI], venue[VN_OF], venue[VN_NI], venue[VN_NF], venue[VN_VS], venue[VN_VSF],
        venue[VN_SI], venue[VN_ACC], venue[VN_CNT], out[OUT_FILLS], out[OUT_NOUT],
    )  # fmt: skip


@njit(**INTERNAL)
def _apply_report(j: int, fp: FillPath) -> None:
    oi, ni, nf, si = fp[FP_OI], fp[FP_NI], fp[FP_NF], fp[FP_SI]
    vs, vsf = fp[FP_VS], fp[FP_VSF]
    side = ni[j, R_SIDE]
    vsf[VSF_POS_VIEW] += side * nf[j, RF_QTY]
    if nf[j, RF_REM] <= 0.0:
        k = 0 if side > 0 else 1
        s = si[k, S_SLOT]
        if s >= 0 and oi[s, O_ID] == ni[j, R_OID]:
            si[k, S_SLOT] = -1
            oi[s, O_CURRENT] = 0
            vs[VS_DIRTY] = 1


@njit(inline="always", **JIT)
def deliver_reports(now: int, fp: FillPath) -> None:
    """Apply, in fill order, the reports the strategy has received by ``now``."""
    ni, vs = fp[FP_NI], fp[FP_VS]
    cap = ni.shape[0]
    while vs[VS_RN] > 0:
        j = vs[VS_RHEAD]
        if ni[j, R_KNOWN] > now:
            break
        _apply_report(j, fp)
        vs[VS_RHEAD] = (j + 1) % cap
        vs[VS_RN] -= 1


@njit(**INTERNAL)
def push_report(known: int, oid: int, side: int, qty: float, rem: float, fp: FillPath) -> None:
    """Queue a report the strategy receives at ``known``; a full ring applies its oldest now."""
    ni, nf, vs, cnt = fp[FP_NI], fp[FP_NF], fp[FP_VS], fp[FP_CNT]
    cap = ni.shape[0]
    if vs[VS_RN] == cap:
        j = vs[VS_RHEAD]
        _apply_report(j, fp)
        vs[VS_RHEAD] = (j + 1) % cap
        vs[VS_RN] -= 1
        cnt[C_REPORT_FORCED] += 1
    j = (vs[VS_RHEAD] + vs[VS_RN]) % cap
    ni[j, R_KNOWN] = known
    ni[j, R_OID] = oid
    ni[j, R_SIDE] = side
    nf[j, RF_QTY] = qty
    nf[j, RF_REM] = rem
    vs[VS_RN] += 1


@njit(**INTERNAL)
def emit_fill(
    s: int,
    ts: int,
    price: float,
    qty: float,
    liquidity: int,
    fee_bps: float,
    mid: float,
    report_delay: int,
    lot: float,
    fp: FillPath,
) -> None:
    """One fill of order slot ``s``: order state, account, fill record, report to the strategy."""
    oi, of, vs, acc, cnt = fp[FP_OI], fp[FP_OF], fp[FP_VS], fp[FP_ACC], fp[FP_CNT]
    fills, nout = fp[FP_FILLS], fp[FP_NOUT]
    side = oi[s, O_SIDE]
    of[s, OF_FILLED] += qty
    rem = of[s, OF_REM] - qty
    if rem < lot * 1e-9:
        rem = 0.0
        oi[s, O_STATUS] = OS_DONE
        vs[VS_DIRTY] = 1
    of[s, OF_REM] = rem
    fee = apply_fill(acc, side, price, qty, fee_bps, liquidity)
    k = nout[0]
    rec = fills[k]
    rec.ts = ts
    rec.order_id = oi[s, O_ID]
    rec.order_age_ns = ts - oi[s, O_DECIDED_TS]
    rec.queue_ns = ts - oi[s, O_REST_TS]
    rec.price = price
    rec.qty = qty
    rec.fee = fee
    rec.quote_price = of[s, OF_QUOTE_PX]
    rec.mid_decision = of[s, OF_MID_DEC]
    rec.mid_fill = mid
    rec.position_after = acc[A_POS]
    rec.side = side
    rec.liquidity = liquidity
    rec.iteration = -1
    nout[0] = k + 1
    cnt[C_FILLS] += 1
    if liquidity == LIQ_MAKER:
        cnt[C_MAKER] += 1
    else:
        cnt[C_TAKER] += 1
    push_report(ts + report_delay, oi[s, O_ID], side, qty, rem, fp)


kernel_cache.bind(__name__, kernel_cache.CORE)  # before any kernel loads: kernel_cache.py
