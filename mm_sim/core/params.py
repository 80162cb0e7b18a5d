"""The core's parameter vector, engine scalars and bundles, shared by the driver and the strategy.

One place for the slot numbers of ``p`` (K_*), ``g`` (G_*) and the output counts (NO_*), so the
engine that fills them and the kernels that read them cannot disagree.
"""

from __future__ import annotations

from typing import Any

import numpy as np

# Kernels never allocate, so they are compiled without numba's reference counting: passing
# state arrays between kernels then costs nothing (docs/CORE.md, "Speed").
JIT: dict[str, Any] = {"cache": True, "_nrt": False}
# Kernels that only other kernels call are compiled without the CPython and cfunc wrappers: a
# wrapper unboxes every member of every bundle (venue_state.py, "State bundles") and nothing
# would call it; dropping them took back the ~1.5 s of cold compile the bundles had added.
INTERNAL: dict[str, Any] = {**JIT, "no_cpython_wrapper": True, "no_cfunc_wrapper": True}

LAT_CONSTANT = 0
LAT_FEED = 1

# Parameter vector p[:] (float64). The overrides occupy K_MIN_INTERVAL_NS.. and may be hot-swapped.
K_TICK = 0
K_LOT = 1
K_ORDER_QTY = 2
K_HALF_BPS = 3
K_GAMMA = 4
K_TAU_S = 5
K_VOL_HL_S = 6
K_VOL_SAMPLE_NS = 7
K_IMPACT_LEVELS = 8
K_MAX_POS = 9
K_MAX_NOTIONAL = 10
K_MAKER_BPS = 11
K_TAKER_BPS = 12
K_LAT_MODE = 13
K_ENTRY_NS = 14
K_CANCEL_NS = 15
K_ACK_NS = 16
K_FEED_MULT = 17
K_QUEUE_MODEL = 18
K_QUEUE_POWER = 19
K_MAX_IN_FLIGHT = 20
K_VENUE_CAP = 21
K_VENUE_RATE = 22  # tokens per ns
K_MARK_NS = 23
K_MIN_INTERVAL_NS = 24
K_REPL_CAP = 25
K_REPL_RATE = 26  # tokens per ns
K_SPREAD_DELTA_BPS = 27
K_TAIL_AGE_NS = 28
K_IMPACT_RATIO = 29
K_MAX_DELTA_RATIO = 30
K_RULES = 31  # fill rules and the decision points, match.RULE_* bits
K_CSIZE = 32  # contract size of an inverse instrument, quote per contract (0 = linear)
K_SIZE = 33

# Engine scalars g[:] (int64)
G_NEXT_MARK = 0
G_VCLOCK = 1  # the venue's clock: the last venue time it advanced to
G_LAST_LOCAL = 2
G_PENDING = 3  # 1 when a batch (one local_ts) ending a slice deferred its decision
G_PENDING_TS = 4
G_LAG = 5  # feed lag of the current event, ns (local - exch, floored at 0)
G_STARTED = 6
G_SIZE = 7

# Output counts nout[:]
NO_FILLS = 0
NO_ACTIONS = 1
NO_BLOCKS = 2
NO_MARKS = 3

NO_MARK_TS = -(1 << 62)
DECISION_MARGIN = 8  # room kept for the actions (and blocks) of one decision: 2 sides x 2, x2
STATE_VERSION = 3  # 3: the account carries the contract size (inverse instruments)


# The engine's own bundles, beside match.py's (BookArrays, Venue, Out, Terms; see there why).
# Ctl: what the driver and the strategy keep apart from the book and the venue: the parameter
# vector p (K_*), the driver scalars g (G_*), the volatility estimate (vol_f, vol_i), the memo of
# the last quote targets (qmi, qmf) and the limiter's token buckets (lf, li).
Ctl = tuple[np.ndarray, ...]
CT_P, CT_G, CT_VOL_F, CT_VOL_I, CT_QMI, CT_QMF, CT_LF, CT_LI = range(8)
# One intent on one side, as the limiter, the block record and the sender take it: side index k
# (0 bid, 1 ask), side (+1/-1), action (ACT_*), price tick, lots.
Intent = tuple[int, int, int, int, int]
