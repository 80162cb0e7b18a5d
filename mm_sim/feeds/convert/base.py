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

MAX_EXAMPLES = 5
_GZIP_MAGIC = b"\x1f\x8b"


def is_gzip(path: Path) -> bool:
    """Captures arrive gzipped or plain under any name: trust the magic bytes, not the suffix."""
    try:
        with open(path, "rb") as fh:
            return fh.read(2) == _GZIP_MAGIC
    except OSError as exc:
        raise UserError(f"{path}: cannot read ({exc.strerror or exc})") from exc


def open_binary(path: Path) -> io.BufferedIOBase:
    """Open for reading bytes, gunzipping transparently."""
    gz = is_gzip(path)
    try:
        return gzip.GzipFile(path, "rb") if gz else open(path, "rb")
    except OSError as exc:
        raise UserError(f"{path}: cannot read ({exc.strerror or exc})") from exc


def open_text(path: Path) -> TextIO:
    """Open for reading UTF-8 text, gunzipping transparently."""
    if is_gzip(path):
        return io.TextIOWrapper(gzip.GzipFile(path, "rb"), encoding="utf-8", newline="")
    try:
        return open(path, encoding="utf-8", newline="")
    except OSError as exc:
        raise UserError(f"{path}: cannot read ({exc.strerror or exc})") from exc


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


@dataclass
class BadLines:
    strict: bool = False
    counts: Counter[str] = field(default_factory=Counter)
    examples: dict[str, list[str]] = field(default_factory=dict)

    def bad(self, where: str, reason: str) -> None:
        """Record a bad line at ``where`` (``file:line``); raise in strict mode."""
        if self.strict:
            raise FeedError(f"{where}: {reason}")
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
