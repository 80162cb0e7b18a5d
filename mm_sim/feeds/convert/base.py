"""What every converter shares: options, bad-line accounting, and a chunked event buffer.

Bad input is never silently dropped: in strict mode the first bad line stops the conversion
with ``file:line: reason``; otherwise each bad line is skipped and counted under its reason,
with the first few locations kept so the user can look at them.
"""

from __future__ import annotations

import gzip
import io
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

import numpy as np

from mm_sim.errors import FeedError, UserError
from mm_sim.events import EVENT_DTYPE, FeedWriter
from mm_sim.feeds.progress import current_tracker
from mm_sim.feeds.validate import MAX_TS_NS

MAX_EXAMPLES = 5
_GZIP_MAGIC = b"\x1f\x8b"

# Event times a feed may carry, ns since the epoch: 2000-01-01 to 2100-01-01 UTC (MAX_TS_NS, the
# bound a feed is checked against when opened: feeds/validate.py). A time outside
# is a unit mistake (milliseconds read as microseconds land in 1970, nanoseconds read as
# microseconds beyond what int64 holds) or corrupt data: written as is, it dates the feed wrongly
# or overflows the record's int64 field.
TS_MIN_NS = 946_684_800 * 10**9
I64 = 1 << 63  # update ids and times are int64 in the feed and in the book sync
_UNITS = {10**9: "seconds", 10**6: "milliseconds", 10**3: "microseconds", 1: "nanoseconds"}


def time_problem(value: int, ns_per_unit: int, lowest: int = TS_MIN_NS) -> str | None:
    """None when ``value`` (a time in units of ``ns_per_unit`` ns) lies between ``lowest`` and
    2100-01-01; else the reason of a bad line, naming the unit the value would fit in, if any,
    so a file in the wrong unit is recognised as such instead of reported as noise."""
    ns = value * ns_per_unit
    if lowest <= ns < MAX_TS_NS:
        return None
    span = "2000 to 2100" if lowest == TS_MIN_NS else "before 2100"
    want = f"expected {_UNITS[ns_per_unit]} since the epoch ({span})"
    for scale, name in _UNITS.items():
        if scale != ns_per_unit and TS_MIN_NS <= value * scale < MAX_TS_NS:
            return f"{want}, this looks like {name}"
    return want


def looks_like_other_unit(problem: str) -> bool:
    """Whether a :func:`time_problem` reason says the value fits another unit."""
    return ", this looks like " in problem


def is_gzip(path: Path) -> bool:
    """Captures arrive gzipped or plain under any name: trust the magic bytes, not the suffix."""
    try:
        with open(path, "rb") as fh:
            return fh.read(2) == _GZIP_MAGIC
    except OSError as exc:
        raise UserError(f"{path}: cannot read ({exc.strerror or exc})") from exc


def open_binary(path: Path, track: bool = False) -> io.BufferedIOBase:
    """Open for reading bytes, gunzipping transparently. ``track``: this is the converter's main
    pass over the file, whose progress a bar may show (mm_sim/feeds/progress.py)."""
    gz = is_gzip(path)
    try:
        raw = open(path, "rb")  # noqa: SIM115 (returned to the caller, who closes it)
    except OSError as exc:
        raise UserError(f"{path}: cannot read ({exc.strerror or exc})") from exc
    tracker = current_tracker() if track else None
    if tracker is not None:
        tracker.opened(path, raw)
    if not gz:
        return raw
    gzf = gzip.GzipFile(fileobj=raw, mode="rb")
    gzf.myfileobj = raw  # type: ignore[assignment]  # closed with the GzipFile, as with a path
    return gzf


def open_text(path: Path, track: bool = False) -> TextIO:
    """Open for reading UTF-8 text, gunzipping transparently (``track`` as in open_binary)."""
    return io.TextIOWrapper(open_binary(path, track), encoding="utf-8", newline="")  # type: ignore[type-var]


@dataclass
class ConvertOptions:
    symbol: str | None = None  # pick one instrument from a multi-symbol capture
    exchange_info: Path | None = None  # exchangeInfo response for tick/lot sizes
    strict: bool = False
    tick_size: float | None = None  # explicit tick/lot (win over exchange_info)
    lot_size: float | None = None
    # Quote currency per contract of an inverse (COIN-M) contract; wins over exchangeInfo.
    contract_size: float | None = None
    extra: dict[str, Any] = field(default_factory=dict)  # format-specific options


# The bad-line reason of a compressed input that ends early or is corrupt (the rest of the file
# cannot be read): publish refuses it whatever the share of bad lines.
TRUNCATED = "truncated or corrupt compressed data (rest of file skipped)"


@dataclass
class BadLines:
    strict: bool = False
    counts: Counter[str] = field(default_factory=Counter)
    examples: dict[str, list[str]] = field(default_factory=dict)
    last: str | None = None  # the latest bad line (a gap after it may be its doing)

    def bad(self, where: str, reason: str) -> None:
        """Record a bad line at ``where`` (``file:line``); raise in strict mode."""
        if self.strict:
            raise FeedError(f"{where}: {reason}")
        self.last = where
        self.counts[reason] += 1
        ex = self.examples.setdefault(reason, [])
        if len(ex) < MAX_EXAMPLES:
            ex.append(where)

    @property
    def total(self) -> int:
        return sum(self.counts.values())

    def to_json(self) -> dict[str, Any]:
        return {
            "total": self.total,
            "by_reason": dict(self.counts),
            "examples": self.examples,
        }


@dataclass
class ConvertResult:
    out: Path
    events: int
    bad_lines: BadLines
    stats: dict[str, Any]  # format-specific: messages by type, gaps, resyncs, symbols seen...
    lines: int = 0  # data lines (rows, messages) read: the base of the bad-line share
    warnings: list[str] = field(default_factory=list)  # printed by the command, kept in --json


def inferred_tick_warning(tick: float, what: str = "prices") -> str:
    """Why a warning: the most decimals seen is only a lower bound of the tick (Deribit
    BTC-PERPETUAL quotes 0.5 steps, written with one decimal: inferred 0.1), and a tick too
    fine makes the book kernel and the quoting rules work on prices the venue refuses."""
    return (
        f"the tick size {tick:g} was inferred from the most decimals seen in the {what}; it is a "
        "lower bound (the true tick may be a multiple of it, e.g. 0.5 for Deribit "
        "BTC-PERPETUAL where 0.1 is inferred): pass --tick (or --exchange-info) to set it"
    )


class EventBuffer:
    """Collects events into fixed-size numpy chunks and streams them to a FeedWriter."""

    def __init__(self, writer: FeedWriter, chunk: int = 1 << 16) -> None:
        self.writer = writer
        self.buf = np.zeros(chunk, dtype=EVENT_DTYPE)
        self.n = 0

    def add(
        self, exch_ts: int, local_ts: int, kind: int, side: int, price: float, qty: float
    ) -> None:
        if self.n == len(self.buf):
            self.flush()
        r = self.buf[self.n]
        r["exch_ts"] = exch_ts
        r["local_ts"] = local_ts
        r["kind"] = kind
        r["side"] = side
        r["price"] = price
        r["qty"] = qty
        self.n += 1

    def flush(self) -> None:
        if self.n:
            self.writer.write(self.buf[: self.n])
            self.n = 0
