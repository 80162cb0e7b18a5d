"""Content checks of a feed, run when it is opened: garbage must not become a verdict.

Why here and vectorised: every soak, sweep cell and inspect opens its feed through
``open_feed``, so one pass of numpy comparisons (chunked, bounded memory, well under a second
per 10 M events) stops NaN prices, unknown kinds or a clock running backwards before the core
turns them into fills. Nothing is repaired silently on open: a feed that fails a check is
refused with the count and the first offending event; ``mm_sim inspect`` lists every finding
(docs/WHAT_HAPPENS_WHEN.md). The one documented repair is ``convert``'s: a book-less tail
(a book reset with no snapshot after it) is cut, or refused with ``--strict``.

Rules (``CLEAR`` records carry no price, quantity or side and are exempt from those checks):

- kind is one of clear, snapshot, depth, trade; side is +1 or -1;
- price finite and > 0; quantity finite and >= 0;
- exchange timestamps > 0 and never more than ``FAR_BACK_NS`` (60 s) lower than the latest
  one before them. Smaller steps back are real (Binance stamps trades and depth updates from
  different clocks, and a REST snapshot carries only the local time, so real captures step
  back by up to a second or so): they are reported, not refused;
- receive timestamps (``local_ts``) > 0, never more than a day after their exchange time (the
  replay's strategy clock is the running maximum of them, so one such event would move every
  later one), and more than a day before it on at most 1 % of the events (reported below
  that: a recorder glitch);
- timestamps (both clocks) before 2100-01-01: the core's "never" times are -2^62 ns, and a
  difference from one must not overflow 64 bits;
- the feed has events, spans time (not every event at one timestamp), and carries book events
  (snapshot or depth), not trades only; its market events average at most a million a second
  (timestamps in milliseconds read as nanoseconds make a day last 0.09 s);
- the book it builds is crossed or locked (best bid >= best ask) at no more than 90 % of the
  exchange-time boundaries where it is two-sided (``check_crossed_book``, on open over the first
  million events; ``mm_sim inspect`` over all of them, and it reports more than 5 %). The
  captures here are crossed at none; a feed with its sides swapped, or one instrument's prices
  in another's, is crossed at nearly all, and a strategy on it never quotes: a verdict on it
  would be on nothing. A hole in a feed's diffs with no snapshot after it leaves stale levels
  that cross (56 % of the boundaries after a 6 s hole in the synthetic day): reported, since
  the strategy still quotes where the book is sound.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from mm_sim.events import KIND_CLEAR, KIND_DEPTH, KIND_SNAPSHOT, KIND_TRADE

CHUNK = 1 << 20


@dataclass
class Finding:
    """One kind of defect: how many events have it and where the first one is."""

    code: str
    what: str
    count: int = 0
    first: int = -1
    fatal: bool = True  # refused on open; a non-fatal finding is reported only

    def add(self, mask: np.ndarray, offset: int) -> None:
        n = int(np.count_nonzero(mask))
        if n:
            if self.first < 0:
                self.first = offset + int(np.argmax(mask))
            self.count += n

    def message(self) -> str:
        at = f" (first at event #{self.first})" if self.first >= 0 else ""
        return f"{self.count:,} {self.what}{at}" if self.count else self.what


_RULES = {
    "unknown_kind": "events of an unknown kind (expected 1 clear, 2 snapshot, 3 depth, 4 trade)",
    "unknown_side": "events with a side other than +1 (bid/buy) or -1 (ask/sell)",
    "price_not_finite": "events with a NaN or infinite price",
    "price_not_positive": "events with a price <= 0",
    "qty_not_finite": "events with a NaN or infinite quantity",
    "qty_negative": "events with a negative quantity",
    "ts_not_positive": "events with an exchange timestamp <= 0",
    "local_not_positive": "events with a receive timestamp (local_ts) <= 0",
    "received_a_day_late": "events received more than a day after their exchange time (a clock "
    "or unit error; the replay's clock would jump there for every later event)",
    "received_a_day_early": "events received more than a day before their exchange time (a "
    "clock or unit error; refused when more than 1 % of the feed)",
    "ts_backwards_far": "events whose exchange timestamp is more than 60 s before an earlier "
    "event's",
    "ts_backwards": "events whose exchange timestamp is lower than the previous event's "
    "(reported, not refused)",
    "ts_after_2100": "events with a timestamp (exch_ts or local_ts) after 2100-01-01 (a unit "
    "or clock error)",
}
FAR_BACK_NS = 60_000_000_000
DAY_NS = 86_400_000_000_000
# Market events (depth, trade) a second, averaged over a whole feed, beyond which its timestamps
# cannot be nanoseconds: the captures here average 66-1,353 (peaks of tens of thousands); times
# in milliseconds read as nanoseconds make a day of them last 0.09 s (millions a second).
# Snapshots are left out: a short extract may be one deep snapshot and a few diffs.
MAX_MEAN_RATE = 1_000_000
RATE_MIN_EVENTS = 10_000  # a short hand-made feed may pack its few events as it likes
MAX_TS_NS = 4_102_444_800 * 1_000_000_000  # 2100-01-01T00:00:00Z
# The crossed-book rule: the share of two-sided boundaries crossed or locked above which a feed
# is reported and refused, the boundaries it needs (a hand-made feed of ten may cross twice),
# and how many events the check on open replays (about 0.1 s; inspect replays the whole feed).
REPORT_CROSSED_SHARE = 0.05
REFUSE_CROSSED_SHARE = 0.9
CROSSED_MIN_BOUNDARIES = 100
BOOK_CHECK_EVENTS = 1 << 20


# The rules ``valid_mask`` drops events for (the others are about order, clocks or the feed)
MASKED = frozenset(
    ("unknown_kind", "unknown_side", "price_not_finite", "price_not_positive",
     "qty_not_finite", "qty_negative", "ts_not_positive", "local_not_positive")
)  # fmt: skip


def valid_mask(events: np.ndarray) -> np.ndarray:
    """Per event: passes every per-event rule (the regression rule is checked on the order)."""
    kind = events["kind"]
    priced = kind != KIND_CLEAR
    price, qty, side = events["price"], events["qty"], events["side"]
    with np.errstate(invalid="ignore"):
        ok = (kind >= KIND_CLEAR) & (kind <= KIND_TRADE)
        ok &= ~priced | (side == 1) | (side == -1)
        ok &= ~priced | (np.isfinite(price) & (price > 0))
        ok &= ~priced | (np.isfinite(qty) & (qty >= 0))
        ok &= events["exch_ts"] > 0
        ok &= events["local_ts"] > 0
    return np.asarray(ok)


def check_events(events: np.ndarray, chunk: int = CHUNK) -> list[Finding]:
    """Every rule broken by ``events`` (an array or a memory map), in the order of ``_RULES``,
    then the whole-feed rules (no events, no time span, timestamps not in ns, no book events)."""
    found = {code: Finding(code, what) for code, what in _RULES.items()}
    found["ts_backwards"].fatal = False
    prev_ts: int | None = None
    high = np.iinfo(np.int64).min  # the latest exchange time so far
    first_ts = last_ts = 0
    book = 0
    n_market = 0  # depth and trade events, and their exchange-time range (the rate rule)
    t_min, t_max = np.iinfo(np.int64).max, np.iinfo(np.int64).min
    for lo in range(0, len(events), chunk):
        part = np.asarray(events[lo : lo + chunk])
        kind, side = part["kind"], part["side"]
        price, qty, ts = part["price"], part["qty"], part["exch_ts"]
        priced = kind != KIND_CLEAR
        known = (kind >= KIND_CLEAR) & (kind <= KIND_TRADE)
        found["unknown_kind"].add(~known, lo)
        found["unknown_side"].add(priced & known & (side != 1) & (side != -1), lo)
        with np.errstate(invalid="ignore"):
            found["price_not_finite"].add(priced & ~np.isfinite(price), lo)
            found["price_not_positive"].add(priced & np.isfinite(price) & (price <= 0), lo)
            found["qty_not_finite"].add(priced & ~np.isfinite(qty), lo)
            found["qty_negative"].add(priced & np.isfinite(qty) & (qty < 0), lo)
        found["ts_not_positive"].add(ts <= 0, lo)
        local = part["local_ts"]
        found["local_not_positive"].add(local <= 0, lo)
        found["ts_after_2100"].add((ts > MAX_TS_NS) | (local > MAX_TS_NS), lo)
        with np.errstate(over="ignore"):  # a wrapped difference is over a day too
            lag = local - ts
        found["received_a_day_late"].add(lag > DAY_NS, lo)
        found["received_a_day_early"].add(lag < -DAY_NS, lo)
        market = (kind == KIND_DEPTH) | (kind == KIND_TRADE)
        n_market += int(np.count_nonzero(market))
        if market.any():
            t_min = min(t_min, int(ts[market].min()))
            t_max = max(t_max, int(ts[market].max()))
        back = np.zeros(len(part), dtype=bool)
        back[1:] = ts[1:] < ts[:-1]
        if prev_ts is not None and len(part):
            back[0] = ts[0] < prev_ts
        found["ts_backwards"].add(back, lo)
        if len(part):
            start = high if high > np.iinfo(np.int64).min else int(ts[0])
            running = np.maximum.accumulate(np.concatenate(([start], ts)))[:-1]
            found["ts_backwards_far"].add(ts < running - FAR_BACK_NS, lo)
            high = max(high, int(ts.max()))
        if len(part):
            if prev_ts is None:
                first_ts = int(ts[0])
            prev_ts = last_ts = int(ts[-1])
        book += int(np.count_nonzero((kind == KIND_SNAPSHOT) | (kind == KIND_DEPTH)))
    # A recorder glitch may stamp a few events early (harmless to the replay's running-maximum
    # clock); more of a feed so stamped is an error.
    early = found["received_a_day_early"]
    early.fatal = early.count * 100 > len(events)
    out = [f for f in found.values() if f.count]
    if len(events) == 0:
        out.append(Finding("no_events", "the feed has no events"))
    elif len(events) > 1 and last_ts == first_ts:
        out.append(Finding("no_time_span", "no time span: every event has the same timestamp"))
    elif n_market >= RATE_MIN_EVENTS and t_max > t_min:
        rate = n_market / ((t_max - t_min) / 1e9)
        if rate > MAX_MEAN_RATE:
            out.append(
                Finding(
                    "ts_not_ns",
                    f"{n_market:,} market events in {(t_max - t_min) / 1e9:.3g} s of exchange "
                    f"time, {rate:,.0f} a second: timestamps must be nanoseconds (these look "
                    "like milliseconds)",
                )
            )
    if len(events) and book == 0:
        out.append(
            Finding("no_book", "no book events (snapshot or depth): a trades-only feed has no book")
        )
    return out


def crossed_finding(two_sided: int, crossed: int, scope: str) -> Finding | None:
    """The crossed-book rule on a replay's boundary counts (``scope``: which events they
    cover, for the message): None below the reporting share, fatal above the refusing one."""
    if two_sided < CROSSED_MIN_BOUNDARIES or crossed <= REPORT_CROSSED_SHARE * two_sided:
        return None
    fatal = crossed > REFUSE_CROSSED_SHARE * two_sided
    why = (
        f"more than {REFUSE_CROSSED_SHARE:.0%}: bid and ask swapped, or prices that do not "
        "belong together"
        if fatal
        else f"reported, refused above {REFUSE_CROSSED_SHARE:.0%}: stale levels, e.g. a hole "
        "in the diffs with no snapshot after it"
    )
    return Finding(
        "crossed_book",
        f"of {two_sided:,} exchange-time boundaries with a two-sided book{scope} were crossed "
        f"or locked (best bid >= best ask; {why})",
        count=crossed,
        fatal=fatal,
    )


def check_crossed_book(events: np.ndarray, tick_size: float) -> Finding | None:
    """The crossed-book rule over the first ``BOOK_CHECK_EVENTS`` events (a feed whose other
    checks passed: the book kernel reads prices and sides as given)."""
    from mm_sim.feeds.inspect import A_CROSSED, A_TWO_SIDED, inspect_events

    head = np.asarray(events[:BOOK_CHECK_EVENTS])
    acc = inspect_events(head, tick_size).acc
    scope = f" in the first {len(head):,} events" if len(head) < len(events) else ""
    return crossed_finding(int(acc[A_TWO_SIDED]), int(acc[A_CROSSED]), scope)


def book_less_tail(events: np.ndarray) -> int | None:
    """Index of the last book reset (clear) that no snapshot follows, if the feed ends without
    a book after it (e.g. an update-id gap that never resynced); None when the book lasts."""
    kind = np.asarray(events["kind"])
    clears = np.flatnonzero(kind == KIND_CLEAR)
    if not len(clears):
        return None
    last = int(clears[-1])
    if np.any(kind[last:] == KIND_SNAPSHOT):
        return None
    return last


def has_snapshot(events: np.ndarray, chunk: int = CHUNK) -> bool:
    return any(
        bool(np.any(np.asarray(events[lo : lo + chunk]["kind"]) == KIND_SNAPSHOT))
        for lo in range(0, len(events), chunk)
    )
