"""mm_sim feed (``EVENT_DTYPE``) -> hftbacktest's event array, so both simulators replay one feed.

hftbacktest's layout and flag bits are restated here rather than imported: the converter and its
tests must run where the optional ``peer`` extra is not installed. ``benchmarks.peer`` checks at
run time that they still match the installed package (``check_against``).

Mapping (one row per mm_sim event, in file order):

- CLEAR    -> ``DEPTH_CLEAR_EVENT`` with no side bit: hftbacktest then empties both sides, which
  is what mm_sim's CLEAR means;
- SNAPSHOT -> ``DEPTH_SNAPSHOT_EVENT``, DEPTH -> ``DEPTH_EVENT``, with ``BUY_EVENT`` for a bid
  level (side +1) and ``SELL_EVENT`` for an ask level (side -1); quantities are absolute in both;
- TRADE    -> ``TRADE_EVENT``, ``BUY_EVENT`` when the buyer was the aggressor (side +1),
  ``SELL_EVENT`` when the seller was (side -1): the same convention as mm_sim.

Decision points (``split_ties``): hftbacktest wakes the strategy once per local timestamp, after
every row carrying it; mm_sim decides after each event (only a snapshot batch is seen as one).
With ``split_ties`` a DEPTH or TRADE event sharing its ``local_ts`` with the event before it
reaches the strategy side 1 ns after that event (2 ns for the next one, ...), so hftbacktest
wakes after each event as mm_sim decides. Only the local clock moves; the exchange model sees
the original ``exch_ts``. A nudge that would reach the next distinct ``local_ts`` is not made
(counted in ``ties_kept``).

Message order (``deletions_first``, applied by ``benchmarks.peer`` to the feed both simulators
get): within one diff message, level deletions are listed before the other updates, so that a
book applied event by event is never crossed part-way through a message.

Two clocks: hftbacktest's exchange model reads the rows flagged ``EXCH_EVENT`` in ``exch_ts``
order and the strategy's side reads the rows flagged ``LOCAL_EVENT`` in ``local_ts`` order, both
from the same array. An mm_sim feed is in ``local_ts`` order; where ``exch_ts`` is also
non-decreasing (the synthetic feed, most captures) every row carries both flags. A row whose
``exch_ts`` is earlier than one before it keeps only ``LOCAL_EVENT`` where it stands and gets an
``EXCH_EVENT``-only copy placed earlier, among the exchange rows, where its ``exch_ts`` belongs.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from mm_sim.errors import FeedError
from mm_sim.events import (
    EVENT_DTYPE,
    KIND_CLEAR,
    KIND_DEPTH,
    KIND_NAMES,
    KIND_SNAPSHOT,
    KIND_TRADE,
)

# hftbacktest's event record (``hftbacktest.types.event_dtype``, 64 bytes, aligned).
HBT_EVENT_DTYPE = np.dtype(
    [
        ("ev", "u8"),
        ("exch_ts", "i8"),
        ("local_ts", "i8"),
        ("px", "f8"),
        ("qty", "f8"),
        ("order_id", "u8"),
        ("ival", "i8"),
        ("fval", "f8"),
    ],
    align=True,
)

# Event kinds (low bits) and flags (high bits) of ``ev``.
DEPTH_EVENT = 1
TRADE_EVENT = 2
DEPTH_CLEAR_EVENT = 3
DEPTH_SNAPSHOT_EVENT = 4
EXCH_EVENT = 1 << 31
LOCAL_EVENT = 1 << 30
BUY_EVENT = 1 << 29
SELL_EVENT = 1 << 28
KIND_MASK = 0xFF

_KIND_TO_HBT = {
    KIND_CLEAR: DEPTH_CLEAR_EVENT,
    KIND_SNAPSHOT: DEPTH_SNAPSHOT_EVENT,
    KIND_DEPTH: DEPTH_EVENT,
    KIND_TRADE: TRADE_EVENT,
}
_HBT_TO_KIND = {v: k for k, v in _KIND_TO_HBT.items()}


@dataclass
class ConvertStats:
    """What the conversion produced, for the bench's report."""

    events: int
    rows: int
    both_flags: int  # rows read by both the exchange and the strategy side
    split: int  # events whose exchange copy had to move (exch_ts earlier than a previous event)
    per_kind: dict[str, int]
    ties_split: int = 0  # events whose local_ts was nudged (split_ties)
    ties_kept: int = 0  # tied events left tied (the nudge would have reached the next event)
    max_nudge_ns: int = 0

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def _check(events: np.ndarray) -> None:
    if events.dtype != EVENT_DTYPE:
        raise TypeError(f"expected EVENT_DTYPE records, got {events.dtype}")
    kind = events["kind"]
    bad = ~np.isin(kind, list(_KIND_TO_HBT))
    if bad.any():
        i = int(np.argmax(bad))
        raise FeedError(
            f"event {i}: field 'kind' = {int(kind[i])}: expected one of "
            f"{sorted(_KIND_TO_HBT)} (clear, snapshot, depth, trade)"
        )
    side = events["side"]
    sided = kind != KIND_CLEAR
    bad = sided & (side != 1) & (side != -1)
    if bad.any():
        i = int(np.argmax(bad))
        raise FeedError(
            f"event {i} ({KIND_NAMES[int(kind[i])]}): field 'side' = {int(side[i])}: "
            "expected +1 (bid / buyer-initiated) or -1 (ask / seller-initiated)"
        )
    local = events["local_ts"]
    if len(local) > 1 and (np.diff(local) < 0).any():
        i = int(np.argmax(np.diff(local) < 0)) + 1
        raise FeedError(
            f"event {i}: field 'local_ts' = {int(local[i])} is earlier than the previous event's "
            f"{int(local[i - 1])}: a feed must be in local receive order"
        )


def _ev_bits(events: np.ndarray) -> np.ndarray:
    kind = events["kind"]
    bits = np.zeros(len(events), dtype=np.uint64)
    for k, code in _KIND_TO_HBT.items():
        bits[kind == k] = code
    side = events["side"]
    sided = kind != KIND_CLEAR
    bits[sided & (side > 0)] |= np.uint64(BUY_EVENT)
    bits[sided & (side < 0)] |= np.uint64(SELL_EVENT)
    return bits


def split_local_ties(events: np.ndarray) -> tuple[np.ndarray, int, int, int]:
    """Local timestamps with DEPTH/TRADE ties spread 1 ns apart: (local_ts, split, kept, max).

    Within a run of events sharing one ``local_ts``, the k-th event (k = 0 first) moves k ns
    later if it is a DEPTH or TRADE event. A run where that would break the order (a snapshot
    row after a moved event) or reach the next run's timestamp is left as it was.
    """
    local = events["local_ts"].astype(np.int64)
    n = len(local)
    if n < 2:
        return local.copy(), 0, 0, 0
    kind = events["kind"]
    movable = (kind == KIND_DEPTH) | (kind == KIND_TRADE)
    start = np.r_[True, local[1:] != local[:-1]]
    run_id = np.cumsum(start) - 1
    firsts = np.flatnonzero(start)
    rank = np.arange(n) - firsts[run_id]
    tied = (rank > 0) & movable
    if not tied.any():
        return local.copy(), 0, 0, 0
    new = local + np.where(tied, rank, 0)
    next_start = np.r_[firsts[1:], n][run_id]
    next_ts = np.where(next_start < n, local[np.minimum(next_start, n - 1)], np.iinfo(np.int64).max)
    bad = new >= next_ts
    bad[1:] |= (new[1:] < new[:-1]) & (run_id[1:] == run_id[:-1])
    bad_run = np.zeros(len(firsts), dtype=bool)
    bad_run[run_id[bad]] = True
    revert = bad_run[run_id]
    new[revert] = local[revert]
    done = tied & ~revert
    return new, int(done.sum()), int((tied & revert).sum()), int(rank[done].max(initial=0))


@dataclass
class ReorderStats:
    """What :func:`deletions_first` did, for the bench's report."""

    runs: int  # runs of 2+ DEPTH events sharing one exch_ts and local_ts (one diff message)
    reordered: int  # runs whose deletions were moved ahead of their other updates
    moved: int  # events that changed position
    kept_repeated_price: int  # runs left as they were: a price appears twice in them

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def deletions_first(events: np.ndarray) -> tuple[np.ndarray, ReorderStats]:
    """The feed with each diff message's level deletions ahead of its other level updates.

    Why: a depth diff is one atomic change at the venue, but a feed lists its levels one by one
    (Binance: bids, then asks). Applied in that order, a message that moves the market up adds
    the new best bid before it deletes the asks it crossed, so a simulator that looks at the book
    after every event sees a crossed book that never existed. mm_sim then skips the decision
    (``no_decision``); hftbacktest's book hides the crossed levels and decides. With deletions
    first, every level present part-way through the message is also present after it, so the
    book is never crossed mid-message (the converter guarantees it is not crossed after one) and
    both simulators decide on the same books.

    A message is a run of consecutive DEPTH events with equal ``exch_ts`` and ``local_ts``.
    Within a run, order is kept among deletions (quantity <= 0) and among the other updates. A
    run that lists one (side, price) twice is left as it is: moving a deletion ahead of an
    earlier update of the same level would change the book it leaves.
    """
    events = np.asarray(events)
    _check(events)
    n = len(events)
    if n < 2:
        return events.copy(), ReorderStats(0, 0, 0, 0)
    depth = events["kind"] == KIND_DEPTH
    ex = events["exch_ts"]
    lo = events["local_ts"]
    cont = depth[1:] & depth[:-1] & (ex[1:] == ex[:-1]) & (lo[1:] == lo[:-1])
    start = np.r_[True, ~cont]
    run_id = np.cumsum(start) - 1
    size = np.bincount(run_id)
    multi = size[run_id] > 1
    # Runs listing a (side, price) twice are left alone.
    idx = np.flatnonzero(multi)
    order = np.lexsort((events["price"][idx], events["side"][idx], run_id[idx]))
    srt = idx[order]
    dup = (
        (run_id[srt][1:] == run_id[srt][:-1])
        & (events["side"][srt][1:] == events["side"][srt][:-1])
        & (events["price"][srt][1:] == events["price"][srt][:-1])
    )
    bad_run = np.zeros(len(size), dtype=bool)
    bad_run[run_id[srt][1:][dup]] = True
    eligible = multi & ~bad_run[run_id]
    is_add = (events["qty"] > 0.0) & eligible
    perm = np.lexsort((np.arange(n), is_add, run_id))
    moved = int(np.sum(perm != np.arange(n)))
    changed = np.zeros(len(size), dtype=bool)
    changed[run_id[perm != np.arange(n)]] = True
    stats = ReorderStats(
        runs=int(np.sum(size > 1)),
        reordered=int(changed.sum()),
        moved=moved,
        kept_repeated_price=int(np.sum(bad_run & (size > 1))),
    )
    return events[perm], stats


def to_hftbacktest(
    events: np.ndarray, *, split_ties: bool = False
) -> tuple[np.ndarray, ConvertStats]:
    """The same feed as hftbacktest rows (new array; the input is not modified)."""
    events = np.asarray(events)
    _check(events)
    n = len(events)
    local_ts = events["local_ts"]
    ties = (0, 0, 0)
    if split_ties:
        local_ts, *rest = split_local_ties(events)
        ties = (rest[0], rest[1], rest[2])
    bits = _ev_bits(events)
    exch = events["exch_ts"]
    late = exch < np.maximum.accumulate(exch) if n else np.zeros(0, dtype=bool)
    flags = np.full(n, EXCH_EVENT | LOCAL_EVENT, dtype=np.uint64)
    flags[late] = LOCAL_EVENT

    base = np.zeros(n, dtype=HBT_EVENT_DTYPE)
    base["ev"] = bits | flags
    base["exch_ts"] = exch
    base["local_ts"] = local_ts
    base["px"] = events["price"]
    base["qty"] = events["qty"]

    kept = np.flatnonzero(~late)
    late_idx = np.flatnonzero(late)
    if len(late_idx):
        # Each late event's exchange copy goes just before the first kept row whose exch_ts is
        # later than its own; copies sharing a slot are ordered by exch_ts, then file order.
        slot = np.searchsorted(exch[kept], exch[late_idx], side="right")
        copies = base[late_idx].copy()
        copies["ev"] = bits[late_idx] | np.uint64(EXCH_EVENT)
        rows = np.concatenate([base, copies])
        major = np.concatenate([2 * np.arange(n) + 1, 2 * kept[slot]])
        minor = np.concatenate([np.zeros(n, dtype=np.int64), exch[late_idx]])
        order = np.lexsort((np.arange(len(rows)), minor, major))
        rows = rows[order]
    else:
        rows = base
    per_kind = {KIND_NAMES[k]: int(np.sum(events["kind"] == k)) for k in _KIND_TO_HBT}
    stats = ConvertStats(
        events=n, rows=len(rows), both_flags=n - len(late_idx), split=len(late_idx),
        per_kind=per_kind, ties_split=ties[0], ties_kept=ties[1], max_nudge_ns=ties[2],
    )  # fmt: skip
    return rows, stats


def _to_events(rows: np.ndarray) -> np.ndarray:
    out = np.zeros(len(rows), dtype=EVENT_DTYPE)
    ev = rows["ev"]
    code = (ev & np.uint64(KIND_MASK)).astype(np.int64)
    kind = np.zeros(len(rows), dtype=np.int32)
    for c, k in _HBT_TO_KIND.items():
        kind[code == c] = k
    if (kind == 0).any():
        i = int(np.argmax(kind == 0))
        raise FeedError(f"hftbacktest row {i}: event kind {int(code[i])} has no mm_sim equivalent")
    side = np.zeros(len(rows), dtype=np.int32)
    side[(ev & np.uint64(BUY_EVENT)) != 0] = 1
    side[(ev & np.uint64(SELL_EVENT)) != 0] = -1
    out["exch_ts"] = rows["exch_ts"]
    out["local_ts"] = rows["local_ts"]
    out["price"] = rows["px"]
    out["qty"] = rows["qty"]
    out["kind"] = kind
    out["side"] = side
    return out


def local_stream(rows: np.ndarray) -> np.ndarray:
    """The rows the strategy side reads, in order, back as mm_sim events (round-trip checks)."""
    return _to_events(rows[(rows["ev"] & np.uint64(LOCAL_EVENT)) != 0])


def exchange_stream(rows: np.ndarray) -> np.ndarray:
    """The rows the exchange model reads, in order, as mm_sim events."""
    return _to_events(rows[(rows["ev"] & np.uint64(EXCH_EVENT)) != 0])


def check_against(hbt: Any) -> list[str]:
    """Differences between the layout restated here and the installed hftbacktest (empty = ok)."""
    problems = []
    if np.dtype(hbt.event_dtype) != HBT_EVENT_DTYPE:
        problems.append(f"event_dtype {hbt.event_dtype} != {HBT_EVENT_DTYPE}")
    for name in (
        "DEPTH_EVENT", "TRADE_EVENT", "DEPTH_CLEAR_EVENT", "DEPTH_SNAPSHOT_EVENT",
        "EXCH_EVENT", "LOCAL_EVENT", "BUY_EVENT", "SELL_EVENT",
    ):  # fmt: skip
        if int(getattr(hbt, name)) != globals()[name]:
            problems.append(f"{name} = {getattr(hbt, name)} != {globals()[name]}")
    return problems
