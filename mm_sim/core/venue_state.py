"""The venue's state layout: the columns of its tables, the state bundles the kernels take, the
fill-rule bits. Constants and type aliases only, so that the driver, the strategy and the
engine read them without the matching kernels (``match.py``), and ``match.py`` stays the
matching.
"""

from __future__ import annotations

import numpy as np

QUEUE_CONSERVATIVE = 0
QUEUE_PROBABILISTIC = 1

WALK_MAX = 64  # most price levels one arriving order takes liquidity from

# Order status
OS_FREE = 0
OS_PENDING = 1  # sent, not yet at the venue
OS_RESTING = 2  # at the venue, matchable
OS_DONE = 3  # filled or cancelled; slot kept until nothing refers to it

# Order table, int columns oi[s, :]
O_ID = 0
O_SIDE = 1
O_STATUS = 2
O_PX = 3  # price tick at the venue (for a pending order: the tick it was sent with)
O_REST_TS = 4  # when it (re)joined the queue at the venue (queue_ns clock)
O_DECIDED_TS = 5  # local time of the decision that placed / last requeued it (order_age clock)
O_REFS = 6  # in-flight actions referring to it
O_CURRENT = 7  # 1 while the strategy considers it its live order on that side
O_NI = 8
# Order table, float columns of[s, :]
OF_QTY = 0  # total quantity (filled + remaining)
OF_FILLED = 1
OF_REM = 2
OF_FRONT = 3  # visible quantity ahead of us at our price
OF_LEVEL = 4  # visible quantity of our price level at the last update we saw
OF_TRADED = 5  # traded at our price since that update (probabilistic model)
OF_QUOTE_PX = 6  # our price at the decision that placed / last requeued it
OF_MID_DEC = 7  # mid at that decision
OF_CROSS_USED = 8  # opposite liquidity already matched while the book stays crossed
OF_NF = 9

# In-flight actions (a FIFO list), int columns pi[j, :] and float columns pf[j, :]
OP_KIND = 0  # ACT_*
OP_SLOT = 1
OP_ARRIVE = 2  # venue arrival time (exchange clock)
OP_ACK = 3  # acknowledgement time (local clock); the action stops counting as in flight
OP_PX = 4
OP_DECIDED_TS = 5
OP_DONE = 6  # 1 once processed at the venue
OP_NI = 7
OPF_QTY = 0  # new remaining quantity (place/replace)
OPF_MID = 1  # mid at the decision
OP_NF = 2

# Fill reports queued for the strategy (ring buffer)
R_KNOWN = 0  # local time the strategy learns of the fill
R_OID = 1
R_SIDE = 2
R_NI = 3
RF_QTY = 0
RF_REM = 1  # order's remaining quantity after the fill
R_NF = 2

# Venue scalars vs[:] (int64) and vsf[:] (float64)
VS_NEXT_ID = 0
VS_NLIVE = 1
VS_NOPS = 2
VS_LAST_ARRIVAL = 3
VS_RHEAD = 4
VS_RN = 5
VS_DIRTY = 6  # 1 when an order may have become releasable since the last sweep
VS_SIZE = 7
VSF_POS_VIEW = 0  # position as reported to the strategy so far (lags the account)
VSF_SIZE = 1

# State bundles. The kernels take their state as a few plain tuples of arrays instead of ~30
# loose arrays: the members of a bundle always travel together, so a signature says in a few
# words which parts a kernel touches, and a call site cannot swap two arrays of the same type.
# numba passes a tuple as its members, at no cost (jitclass and structref would cost cold-compile
# and cache time). A kernel takes the members it reads by name (``venue[VN_SI]``, the way table
# columns are read), which says what it touches and leaves the other members out of its compiled
# code; the small scalar tuples (Terms, engine.Intent) are unpacked. ``Engine`` builds the
# bundles from its named arrays. Small primitives on one or two tables (alloc_slot, push_op,
# purge_ops, sweep_free) keep their arrays.
BookArrays = tuple[np.ndarray, np.ndarray, np.ndarray]  # bid, ask, bst (book.py's arrays)
BOOK_BID, BOOK_ASK, BOOK_BST = range(3)
# Everything an action or a fill touches: the order table (oi, of) and its live list, the
# in-flight actions (pi, pf), the fill-report ring (ni, nf), the venue scalars (vs, vsf), the
# strategy's per-side table si (a final fill report clears it), the account and the counters.
Venue = tuple[np.ndarray, ...]
VENUE_KEYS = ("oi", "of", "live", "pi", "pf", "ni", "nf", "vs", "vsf", "si", "acc", "cnt")
VN_OI, VN_OF, VN_LIVE, VN_PI, VN_PF, VN_NI, VN_NF, VN_VS, VN_VSF, VN_SI, VN_ACC, VN_CNT = range(12)
# The record buffers and how many records each holds: fills, actions, blocks, marks, nout.
Out = tuple[np.ndarray, ...]
OUT_FILLS, OUT_ACTIONS, OUT_BLOCKS, OUT_MARKS, OUT_NOUT = range(5)
# The venue's terms for one event: tick, lot, maker_bps, taker_bps, delay (ns until the
# strategy learns of a fill, from this event's feed lag), queue model, queue power and the fill
# rules (RULE_* bits).
Terms = tuple[float, float, float, float, int, int, float, int]

# Fill rules (bits of Terms' last member; profile ``quoting.order_type`` and ``matching``)
RULE_POST_ONLY = 1  # an order that would cross on arrival is rejected, not filled as taker
RULE_NO_CROSS_FILLS = 2  # a book moving through a resting order without a print fills nothing
RULE_THROUGH_ORDER = 4  # a print through our price fills our whole remaining order
# Not a fill rule but the driver's, kept with them (profile ``quoting.decide``): the strategy
# decides after every event, not once per local timestamp.
RULE_DECIDE_EACH_EVENT = 8
# The arrays one fill touches, out of Venue and Out, for emit_fill and the report ring:
# oi, of, ni, nf, vs, vsf, si, acc, cnt, fills, nout. Why emit_fill does not take the whole
# bundles: numba passes a tuple as all its members, and LLVM inlines a call the more readily the
# more arguments inlining saves. Given Venue, Out and Terms (~150 machine arguments) it inlined
# emit_fill into the per-event loops of on_depth and on_trade, which cost 6-8 % of the engine's
# events/s (measured A/B); with this view emit_fill has the ~100 arguments it had as loose
# arrays and stays out of line.
FillPath = tuple[np.ndarray, ...]
FP_OI, FP_OF, FP_NI, FP_NF, FP_VS, FP_VSF, FP_SI, FP_ACC, FP_CNT, FP_FILLS, FP_NOUT = range(11)
