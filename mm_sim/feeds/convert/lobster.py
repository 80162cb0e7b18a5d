"""LOBSTER message + orderbook file pairs (NASDAQ equities) -> native L2 feed.

LOBSTER ships, per ticker and day, a message file (one row per order event: time, type, order
id, size, price x 10000, direction) and an orderbook file with the same number of rows, row k
being the top N levels of each side *after* message k (ask px, ask size, bid px, bid size for
levels 1..N). An L2 feed is derived from the pair without replaying orders:

- the first row becomes ``KIND_CLEAR`` + one ``KIND_SNAPSHOT`` per visible level;
- every later row is diffed against the book emitted so far: levels that left the top N are
  removed (qty 0) and changed or new levels are set (``KIND_DEPTH``), so after each message
  the replayed book is exactly the file's top N levels, no more (levels beyond N are unknown);
- executions (types 4 visible, 5 hidden) also give a ``KIND_TRADE`` emitted before the depth
  change it caused; the aggressor is opposite the resting order's direction. NASDAQ does not
  reveal a hidden order's side, so type-5 directions are unreliable (counted in the stats);
- cross trades (type 6, auctions) and halt markers (type 7) change no visible level and are
  only counted.

Message times are seconds after midnight, exchange local time (America/New_York unless
``opts.extra["timezone"]`` says otherwise), on the date carried by the standard file name
``TICKER_YYYY-MM-DD_START_END_message_LEVEL.csv``. LOBSTER has one clock, so local_ts equals
exch_ts. Prices are integers x 10000 in the files, dollars in the feed.
"""

from __future__ import annotations

import re
import zoneinfo
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, date, datetime
from itertools import pairwise
from pathlib import Path
from typing import Any

from mm_sim.errors import FeedError, UserError
from mm_sim.events import (
    ASK,
    BID,
    KIND_CLEAR,
    KIND_DEPTH,
    KIND_NAMES,
    KIND_SNAPSHOT,
    KIND_TRADE,
    FeedWriter,
    Instrument,
)
from mm_sim.feeds.convert.base import (
    BadLines,
    ConvertOptions,
    ConvertResult,
    EventBuffer,
    open_text,
    time_problem,
)

PRICE_SCALE = 10_000
EMPTY_ASK = 9_999_999_999  # LOBSTER's placeholder price for an unoccupied ask level
EMPTY_BID = -9_999_999_999
DEFAULT_TICK = 0.01
DEFAULT_LOT = 1.0
DEFAULT_TZ = "America/New_York"
MESSAGE_TYPES = {
    1: "submission",
    2: "cancellation",
    3: "deletion",
    4: "execution_visible",
    5: "execution_hidden",
    6: "cross_trade",
    7: "halt",
}
_NAME = re.compile(
    r"^(?P<ticker>[A-Za-z0-9.\-]+)_(?P<date>\d{4}-\d{2}-\d{2})_(?:.*_)?"
    r"(?P<kind>message|orderbook)(?:_(?P<level>\d+))?\.csv(?:\.gz)?$"
)

Levels = dict[int, int]  # price x 10000 -> size


@dataclass
class _Pair:
    ticker: str
    day: date
    level: int | None
    message: Path
    orderbook: Path


def _parse_name(path: Path) -> re.Match[str]:
    m = _NAME.match(path.name)
    if m is None:
        raise UserError(
            f"{path}: not a LOBSTER file name; expected TICKER_YYYY-MM-DD_START_END_message_N.csv "
            "or ..._orderbook_N.csv (the date in the name dates the messages' times); for files "
            "named otherwise give --ticker and --date"
        )
    return m


def _content_kind(path: Path) -> str:
    """'message' or 'orderbook' from the first row's column count (6, or 4 per level): a file
    renamed by its user carries no kind in its name."""
    try:
        with open_text(path) as fh:
            first = fh.readline()
    except (OSError, EOFError, UnicodeDecodeError) as exc:
        raise FeedError(f"{path}: unreadable ({exc})") from exc
    n = len(first.rstrip("\r\n").split(",")) if first.strip() else 0
    if n == 6:
        return "message"
    if n and n % 4 == 0:
        return "orderbook"
    raise UserError(
        f"{path}:1: neither a LOBSTER message file (6 columns) nor an orderbook file (4 columns "
        f"per level): {n} columns"
    )


def _pair_renamed(paths: list[Path], ticker: str | None, day: str | None) -> _Pair:
    """The one message/orderbook pair among files not named by LOBSTER's convention."""
    if not ticker or not day:
        _parse_name(paths[0])  # the error that says how the files should be named
    assert ticker and day
    try:
        on = date.fromisoformat(day)
    except ValueError as exc:
        raise UserError(f"--date {day}: expected YYYY-MM-DD") from exc
    kinds: dict[str, list[Path]] = {"message": [], "orderbook": []}
    for p in paths:
        kinds[_content_kind(p)].append(p)
    for kind, found in kinds.items():
        if len(found) != 1:
            listed = ", ".join(map(str, paths))
            raise UserError(
                f"--ticker/--date name one day: expected one {kind} file among the inputs not "
                f"named by LOBSTER's convention ({listed}), found {len(found)}"
            )
    return _Pair(ticker.upper(), on, None, kinds["message"][0], kinds["orderbook"][0])


def pair_inputs(
    inputs: list[Path], ticker: str | None = None, date_text: str | None = None
) -> list[_Pair]:
    """Match each message file with its orderbook file; keep the message files' order.

    Files named by LOBSTER's convention carry their ticker, date and kind; the others (a user's
    own names) form one pair for ``ticker`` on ``date_text``, told apart by their columns."""
    renamed = [p for p in inputs if _NAME.match(p.name) is None]
    extra = [_pair_renamed(renamed, ticker, date_text)] if renamed else []
    messages: list[tuple[Path, re.Match[str]]] = []
    books: dict[tuple[str, str, str | None], Path] = {}
    for p in inputs:
        if p in renamed:
            continue
        m = _parse_name(p)
        key = (m["ticker"], m["date"], m["level"])
        if m["kind"] == "message":
            messages.append((p, m))
        else:
            books[key] = p
    pairs: list[_Pair] = []
    for p, m in messages:
        key = (m["ticker"], m["date"], m["level"])
        ob = books.pop(key, None)
        if ob is None:
            raise UserError(
                f"{p}: no matching orderbook file among the inputs "
                f"(expected {p.name.replace('_message', '_orderbook')})"
            )
        try:
            day = date.fromisoformat(m["date"])
        except ValueError as exc:
            raise UserError(f"{p}: the date {m['date']} in the file name is not a date") from exc
        lvl = int(m["level"]) if m["level"] else None
        pairs.append(_Pair(m["ticker"], day, lvl, p, ob))
    if books:
        alone = next(iter(books.values()))
        raise UserError(f"{alone}: orderbook file without its message file among the inputs")
    pairs += extra
    if not pairs:
        raise UserError("no LOBSTER message file among the inputs")
    return pairs


def midnight_ns(day: date, tz_name: str) -> int:
    """UTC nanoseconds of the exchange's local midnight (offset taken at noon: trading hours)."""
    try:
        tz = zoneinfo.ZoneInfo(tz_name)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError) as exc:
        raise UserError(f"unknown time zone {tz_name!r} for LOBSTER times ({exc})") from exc
    noon = datetime(day.year, day.month, day.day, 12, tzinfo=tz)
    offset = noon.utcoffset()
    assert offset is not None
    utc_midnight = datetime(day.year, day.month, day.day, tzinfo=UTC)
    return int(utc_midnight.timestamp()) * 1_000_000_000 - int(offset.total_seconds()) * 10**9


# Seconds after midnight of one day are below 86,400; 90,000 leaves room for the 25-hour day
# when clocks go back. Beyond, a time is corrupt (and as ns past int64 it would not fit a feed).
DAY_NS = 90_000 * 10**9


def seconds_to_ns(text: str) -> int:
    """'34200.004241176' -> ns, exactly (no float rounding of the fraction)."""
    whole, _, frac = text.strip().partition(".")
    if not whole.isdigit() or (frac and not frac.isdigit()) or len(frac) > 9:
        raise ValueError(text)
    return int(whole) * 1_000_000_000 + (int(frac.ljust(9, "0")) if frac else 0)


def _rows(path: Path) -> Iterator[tuple[int, list[str]]]:
    try:
        with open_text(path, track=True) as fh:
            lineno = 0
            for line in fh:
                lineno += 1
                yield lineno, line.rstrip("\r\n").split(",")
    except (OSError, EOFError, UnicodeDecodeError) as exc:
        raise FeedError(f"{path}: unreadable after line {lineno} ({exc})") from exc


class _Converter:
    def __init__(self, opts: ConvertOptions, bad: BadLines, buf: EventBuffer) -> None:
        self.bad = bad
        self.buf = buf
        self.tz = str(opts.extra.get("timezone", DEFAULT_TZ))
        self.types: Counter[str] = Counter()
        self.kinds: Counter[str] = Counter()
        self.trade_sides: Counter[str] = Counter()
        self.levels_n = 0
        self.lines = 0  # message rows read

    def fail(self, where: str, reason: str, value: str) -> None:
        if self.bad.strict:
            raise FeedError(f"{where}: {reason}, got {value!r}")
        self.bad.bad(where, reason)

    def emit(self, ts: int, kind: int, side: int, price: float, qty: float) -> None:
        self.buf.add(ts, ts, kind, side, price, qty)
        self.kinds[KIND_NAMES[kind]] += 1

    def _book_row(self, fields: list[str], where: str) -> tuple[Levels, Levels] | None:
        if len(fields) % 4 or not fields:
            self.fail(where, "orderbook: expected 4 columns per level", str(len(fields)))
            return None
        n = len(fields) // 4
        if self.levels_n and n != self.levels_n:
            self.fail(where, f"orderbook: expected {self.levels_n} levels", str(n))
            return None
        try:
            vals = [int(f) for f in fields]
        except ValueError:
            self.fail(where, "orderbook: expected integers", ",".join(fields)[:80])
            return None
        asks: Levels = {}
        bids: Levels = {}
        for k in range(n):
            ap, asz, bp, bsz = vals[4 * k : 4 * k + 4]
            if asz > 0 and 0 < ap < EMPTY_ASK:
                asks[ap] = asz
            if bsz > 0 and 0 < bp < EMPTY_ASK:
                bids[bp] = bsz
            if asz < 0 or bsz < 0:
                self.fail(where, "orderbook: negative size", f"{asz},{bsz}")
                return None
        self.levels_n = n
        return bids, asks

    def _message(self, fields: list[str], where: str) -> tuple[int, int, int, int, int] | None:
        """(time ns after midnight, type, size, price x 10000, direction) or None if bad."""
        if len(fields) < 6:
            self.fail(where, "message: expected 6 columns", str(len(fields)))
            return None
        try:
            t = seconds_to_ns(fields[0])
        except ValueError:
            t = -1
        if not 0 <= t < DAY_NS:
            # One time past the day would also make every later row "go backwards".
            self.fail(where, "message: time must be seconds after midnight (0 to 90000)", fields[0])
            return None
        try:
            mtype, size, price, direction = (int(fields[i]) for i in (1, 3, 4, 5))
        except ValueError:
            self.fail(
                where, "message: expected integer type/size/price/direction", ",".join(fields)
            )
            return None
        if mtype not in MESSAGE_TYPES:
            self.fail(where, "message: type must be 1..7", fields[1])
            return None
        if direction not in (1, -1):
            self.fail(where, "message: direction must be 1 or -1", fields[5])
            return None
        return t, mtype, size, price, direction

    def run_pair(self, pair: _Pair) -> None:
        base = midnight_ns(pair.day, self.tz)
        if time_problem(base, 1) is not None or time_problem(base + DAY_NS, 1) is not None:
            raise UserError(
                f"{pair.message}: the day {pair.day} (from the file name or --date) is outside "
                "2000 to 2100, the times a feed holds"
            )
        self.levels_n = pair.level or 0
        cur_b: Levels = {}
        cur_a: Levels = {}
        started = False
        last_t = -1
        mit = _rows(pair.message)
        oit = _rows(pair.orderbook)
        while True:
            m = next(mit, None)
            o = next(oit, None)
            if m is None or o is None:
                if m is not None or o is not None:
                    longer, shorter = (
                        (pair.message, pair.orderbook)
                        if o is None
                        else (
                            pair.orderbook,
                            pair.message,
                        )
                    )
                    line = (m or o)[0]  # type: ignore[index]
                    raise FeedError(
                        f"{longer}:{line}: {shorter.name} ends at line {line - 1}: the message "
                        "and orderbook files must have one row per message"
                    )
                break
            mline, mfields = m
            self.lines += 1
            _, ofields = o
            mwhere = f"{pair.message}:{mline}"
            msg = self._message(mfields, mwhere)
            if msg is None:
                continue
            book = self._book_row(ofields, f"{pair.orderbook}:{mline}")
            if book is None:
                continue
            t, mtype, size, price, direction = msg
            if t < last_t:
                self.fail(mwhere, "message: time goes backwards", mfields[0])
                continue
            last_t = t
            ts = base + t
            self.types[MESSAGE_TYPES[mtype]] += 1
            if mtype in (4, 5):
                if size > 0 and price > 0:
                    aggressor = -direction
                    self.emit(ts, KIND_TRADE, aggressor, price / PRICE_SCALE, float(size))
                    key = "buy" if aggressor == BID else "sell"
                    self.trade_sides[f"{key}_hidden" if mtype == 5 else key] += 1
                else:
                    self.fail(
                        mwhere, "message: execution needs size > 0 and price > 0", ",".join(mfields)
                    )
            bids, asks = book
            if not started:
                self.emit(ts, KIND_CLEAR, 0, 0.0, 0.0)
                for side, levels in ((BID, sorted(bids, reverse=True)), (ASK, sorted(asks))):
                    src = bids if side == BID else asks
                    for p in levels:
                        self.emit(ts, KIND_SNAPSHOT, side, p / PRICE_SCALE, float(src[p]))
                started = True
            else:
                self._diff(ts, BID, cur_b, bids)
                self._diff(ts, ASK, cur_a, asks)
            cur_b, cur_a = bids, asks

    def _diff(self, ts: int, side: int, old: Levels, new: Levels) -> None:
        """Levels gone first (best first), then changed or new ones (best first)."""
        for p in sorted(old, reverse=side == BID):
            if p not in new:
                self.emit(ts, KIND_DEPTH, side, p / PRICE_SCALE, 0.0)
        for p in sorted(new, reverse=side == BID):
            q = new[p]
            if old.get(p) != q:
                self.emit(ts, KIND_DEPTH, side, p / PRICE_SCALE, float(q))


def convert(inputs: list[Path], out: Path, opts: ConvertOptions) -> ConvertResult:
    """Convert LOBSTER message/orderbook pairs (several days chain in order) to a native feed."""
    pairs = pair_inputs([Path(p) for p in inputs], opts.extra.get("ticker"), opts.extra.get("date"))
    tickers = sorted({p.ticker for p in pairs})
    if opts.symbol:
        pairs = [p for p in pairs if p.ticker.upper() == opts.symbol.upper()]
        if not pairs:
            raise UserError(f"no LOBSTER files for symbol {opts.symbol} (tickers: {tickers})")
    elif len(tickers) > 1:
        raise UserError(
            f"LOBSTER files for several tickers ({', '.join(tickers)}): choose one with --symbol"
        )
    for prev, nxt in pairwise(pairs):
        if nxt.day < prev.day:
            raise UserError(f"{nxt.message}: dated before {prev.message}: pass the days in order")
    tick = opts.tick_size if opts.tick_size is not None else DEFAULT_TICK
    lot = opts.lot_size if opts.lot_size is not None else DEFAULT_LOT
    instrument = Instrument(pairs[0].ticker, "NASDAQ", tick, lot)
    bad = BadLines(strict=opts.strict)
    writer = FeedWriter(out, instrument)
    try:
        buf = EventBuffer(writer)
        conv = _Converter(opts, bad, buf)
        for pair in pairs:
            conv.run_pair(pair)
        buf.flush()
        if writer.count == 0:
            raise UserError(f"no usable LOBSTER rows in {', '.join(str(p.message) for p in pairs)}")
        stats: dict[str, Any] = {
            "messages_by_type": dict(conv.types),
            "events_by_kind": dict(conv.kinds),
            "trades_by_aggressor": dict(conv.trade_sides),
            "levels": conv.levels_n,
            "days": [p.day.isoformat() for p in pairs],
            "timezone": conv.tz,
            "gaps": 0,  # LOBSTER files carry no sequence numbers to check
        }
        source = {
            "format": "lobster",
            "symbol": instrument.symbol,
            "message_files": [str(p.message) for p in pairs],
            "orderbook_files": [str(p.orderbook) for p in pairs],
            "bad_lines": bad.to_json(),
        }
        path = writer.close(source=source, stats=stats)
    except BaseException:
        writer.abort()
        raise
    return ConvertResult(
        out=path, events=writer.count, bad_lines=bad, stats=stats, lines=conv.lines
    )
