"""Parsing of raw Binance market-data messages (spot, USD-M and COIN-M futures) into typed records.

Why a module of its own: the converter, the live websocket client and the fake exchange's tests
all read the same bytes, and the same mistakes (a ``depth5`` partial book taken for a diff, a
spot ``bookTicker`` without ``e`` reported as unknown) must be avoided once.

Shapes handled (prices and quantities are decimal strings on the wire, floats here):

- ``depthUpdate``: spot ``{e,E,s,U,u,b,a}``; futures add ``T`` and ``pu`` (the previous event's
  ``u``), which is how the market is told apart;
- ``trade`` ``{e,E,s,t,p,q,T,m}`` (futures add ``X``, the order type) and ``aggTrade``
  ``{e,E,s,a,p,q,f,l,T,m}``; ``m`` true means the buyer was the maker, so the aggressor sold.
  USD-M's ``aggTrade`` also has ``nq`` (since 2025-12-31): the quantity without the fills
  against Retail Price Improvement orders, which its depth streams and snapshots never show;
  ``q`` includes them. The trade's quantity is then ``nq`` (the part that took visible
  liquidity) and ``rpi_qty`` the rest;
- ``bookTicker``: spot ``{u,s,b,B,a,A}`` (no ``e``), futures ``{e,u,s,b,B,a,A,T,E}``;
- a REST depth snapshot ``{lastUpdateId,bids,asks}`` (futures also carry ``E`` and ``T``);
- the combined-stream wrapper ``{"stream": name, "data": payload}``. The stream name matters:
  partial-book streams (``<sym>@depth5``, ``@depth10@100ms``...) look like a REST snapshot on
  spot and like a diff on futures, and are reported as :class:`Skipped` instead;
- ``exchangeInfo``: tick size from ``PRICE_FILTER.tickSize``, lot from ``LOT_SIZE.stepSize``.

Parsing is a single ``json.loads`` plus direct field access; a problem raises
:class:`MessageError` whose ``reason`` is a short, value-free category (safe to count by) and
whose ``detail`` says what was found, so callers can report ``file:line: reason (detail)``.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass, field
from typing import Any

Level = tuple[float, float]  # (price, qty); qty 0 removes the level


def deletions_first(
    bids: list[Level], asks: list[Level]
) -> tuple[list[Level], list[Level], list[Level], list[Level]]:
    """A diff's levels as (bid deletions, ask deletions, bid updates, ask updates).

    Why: a diff is one atomic change at the venue, but its levels reach the book one by one,
    bids first. A diff that moves the market up would add the new best bid before deleting the
    asks it crossed, so a book read after every event would be crossed part-way through a message
    (a state that never existed, on which the core skips its decision). Deleting first never
    crosses a book that is uncrossed before and after the message. A price both deleted and set
    on one side keeps the message's own order (the last entry must win).
    """
    for side in (bids, asks):
        if {p for p, q in side if q == 0.0} & {p for p, q in side if q != 0.0}:
            return [], [], bids, asks
    return (
        [lv for lv in bids if lv[1] == 0.0],
        [lv for lv in asks if lv[1] == 0.0],
        [lv for lv in bids if lv[1] != 0.0],
        [lv for lv in asks if lv[1] != 0.0],
    )


_INF = math.inf
_PARTIAL_DEPTH = re.compile(r"@depth\d")  # <sym>@depth5, @depth10@100ms, @depth20@500ms


class MessageError(ValueError):
    """A message that cannot be used. ``reason`` is a category; ``detail`` names the value."""

    def __init__(self, reason: str, detail: str = "") -> None:
        super().__init__(f"{reason} ({detail})" if detail else reason)
        self.reason = reason
        self.detail = detail


@dataclass(slots=True)
class DepthDiff:
    symbol: str
    first_id: int  # U
    final_id: int  # u
    prev_final_id: int | None  # pu (futures only)
    event_ms: int  # E
    txn_ms: int | None  # T (futures only)
    bids: list[Level]
    asks: list[Level]
    local_ts: int = 0  # receive time in ns, filled in by the caller
    # The same levels as flat float arrays (price, qty, price, qty, ...), when the parser that
    # made this diff had them (the live client's fast path); not part of the diff's identity.
    flat: tuple[Any, Any] | None = field(default=None, compare=False, repr=False)

    @property
    def is_futures(self) -> bool:
        return self.prev_final_id is not None


@dataclass(slots=True)
class DepthSnapshot:
    last_update_id: int
    bids: list[Level]
    asks: list[Level]
    event_ms: int | None = None  # E (futures)
    txn_ms: int | None = None  # T (futures)
    symbol: str | None = None  # REST bodies do not say; the caller knows it from the URL
    local_ts: int = 0


@dataclass(slots=True)
class Trade:
    symbol: str
    price: float
    qty: float
    buyer_maker: bool  # m
    trade_ms: int  # T
    event_ms: int  # E
    trade_id: int  # t (trade) or a (aggTrade)
    aggregated: bool  # True for aggTrade
    order_type: str | None = None  # X on futures trades: MARKET, INSURANCE_FUND, ADL, ...
    local_ts: int = 0
    rpi_qty: float = 0.0  # USD-M aggTrade: q - nq, filled against hidden RPI orders

    @property
    def aggressor_side(self) -> int:
        """+1 buyer-initiated, -1 seller-initiated (the buyer was the resting maker)."""
        return -1 if self.buyer_maker else 1


@dataclass(slots=True)
class BookTicker:
    symbol: str
    update_id: int
    bid_price: float
    bid_qty: float
    ask_price: float
    ask_qty: float
    event_ms: int | None = None
    txn_ms: int | None = None
    local_ts: int = 0


@dataclass(slots=True)
class Skipped:
    """A well-formed message this package does not use (kline, partial depth, control reply)."""

    kind: str
    symbol: str | None = None


Message = DepthDiff | DepthSnapshot | Trade | BookTicker | Skipped

# Event types that are legitimate market data but not used for book or trades.
SKIPPED_EVENTS = frozenset(
    {
        "kline",
        "continuous_kline",
        "24hrTicker",
        "24hrMiniTicker",
        "markPriceUpdate",
        "forceOrder",
        "indexPriceUpdate",
        "contractInfo",
        "compositeIndex",
        "assetIndexUpdate",
        "avgPrice",
    }
)


@dataclass(frozen=True)
class SymbolInfo:
    """Per-symbol trading rules from ``exchangeInfo``."""

    symbol: str
    tick_size: float
    lot_size: float
    tick_text: str = ""
    lot_text: str = ""
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def price_decimals(self) -> int:
        return text_decimals(self.tick_text) if self.tick_text else float_decimals(self.tick_size)


# --- low-level field helpers --------------------------------------------------------------


def _int(d: dict[str, Any], key: str, etype: str) -> int:
    try:
        v = d[key]
    except KeyError:
        raise MessageError(f"missing field {key!r} in {etype}") from None
    if type(v) is not int:
        raise MessageError(f"bad field {key!r} in {etype}: expected an integer", repr(v)[:40])
    return v


def _opt_int(d: dict[str, Any], key: str, etype: str) -> int | None:
    v = d.get(key)
    if v is None or type(v) is int:
        return v
    raise MessageError(f"bad field {key!r} in {etype}: expected an integer", repr(v)[:40])


def _str(d: dict[str, Any], key: str, etype: str) -> str:
    try:
        v = d[key]
    except KeyError:
        raise MessageError(f"missing field {key!r} in {etype}") from None
    if type(v) is not str:
        raise MessageError(f"bad field {key!r} in {etype}: expected a string", repr(v)[:40])
    return v


def _num(d: dict[str, Any], key: str, etype: str, positive: bool) -> float:
    try:
        v = d[key]
    except KeyError:
        raise MessageError(f"missing field {key!r} in {etype}") from None
    try:
        x = float(v)
    except (TypeError, ValueError):
        raise MessageError(
            f"bad number in {etype} field {key!r}: expected a decimal string", repr(v)[:40]
        ) from None
    if not (0.0 < x < _INF if positive else 0.0 <= x < _INF):
        raise MessageError(
            f"bad number in {etype} field {key!r}: expected a finite "
            + ("positive" if positive else "non-negative")
            + " value",
            repr(v)[:40],
        )
    return x


def _levels(d: dict[str, Any], key: str, etype: str) -> list[Level]:
    try:
        raw = d[key]
    except KeyError:
        raise MessageError(f"missing field {key!r} in {etype}") from None
    try:
        if type(raw) is not list or any(type(lv) is not list for lv in raw):
            raise TypeError
        out = [(float(p), float(q)) for p, q in raw]
    except (TypeError, ValueError):
        raise MessageError(
            f"bad level in {etype} field {key!r}: expected [price, qty] decimal strings",
            repr(raw)[:60],
        ) from None
    for p, q in out:
        # Also rejects NaN: every comparison with NaN is false.
        if not (0.0 < p < _INF and 0.0 <= q < _INF):
            raise MessageError(
                f"bad number in {etype} field {key!r}: expected price > 0 and qty >= 0",
                f"{p!r}, {q!r}",
            )
    return out


# --- message parsers ----------------------------------------------------------------------
#
# Each parser first tries a fast path (direct indexing, one float() per number) and, if anything
# at all is off, re-reads the message with the checked helpers above, which raise a precise
# MessageError. Well-formed messages, nearly all of them, never pay for the checks.

_FAST_ERRORS = (KeyError, TypeError, ValueError, IndexError)


def _fast_levels(raw: Any) -> list[Level]:
    if type(raw) is not list:
        raise TypeError
    out: list[Level] = []
    add = out.append
    for lv in raw:
        if type(lv) is not list:
            raise TypeError
        p, q = lv
        p = float(p)
        q = float(q)
        if not (0.0 < p < _INF and 0.0 <= q < _INF):  # also false for NaN
            raise ValueError
        add((p, q))
    return out


def _depth_update(d: dict[str, Any]) -> DepthDiff:
    try:
        first = d["U"]
        final = d["u"]
        pu = d.get("pu")
        ev = d["E"]
        txn = d.get("T")
        sym = d["s"]
        if (
            type(first) is int
            and type(final) is int
            and first <= final
            and type(ev) is int
            and (pu is None or type(pu) is int)
            and (txn is None or type(txn) is int)
            and type(sym) is str
        ):
            return DepthDiff(
                sym, first, final, pu, ev, txn, _fast_levels(d["b"]), _fast_levels(d["a"])
            )
    except _FAST_ERRORS:
        pass
    return _depth_update_checked(d)


def _depth_update_checked(d: dict[str, Any]) -> DepthDiff:
    et = "depthUpdate"
    first = _int(d, "U", et)
    final = _int(d, "u", et)
    if final < first:
        raise MessageError("bad update ids in depthUpdate: expected U <= u", f"U={first} u={final}")
    return DepthDiff(
        _str(d, "s", et),
        first,
        final,
        _opt_int(d, "pu", et),
        _int(d, "E", et),
        _opt_int(d, "T", et),
        _levels(d, "b", et),
        _levels(d, "a", et),
    )


def _trade(d: dict[str, Any], aggregated: bool) -> Trade:
    try:
        m = d["m"]
        ev = d["E"]
        txn = d.get("T", ev)
        tid = d["a" if aggregated else "t"]
        sym = d["s"]
        price = float(d["p"])
        qty = float(d["q"])
        x = d.get("X")
        nq = d.get("nq")
        normal = qty if nq is None else float(nq)
        if (
            type(m) is bool
            and type(ev) is int
            and type(txn) is int
            and type(tid) is int
            and type(sym) is str
            and 0.0 < price < _INF
            and 0.0 <= normal <= qty < _INF
            and (x is None or type(x) is str)
        ):
            return Trade(sym, price, normal, m, txn, ev, tid, aggregated, x, 0, qty - normal)
    except _FAST_ERRORS:
        pass
    return _trade_checked(d, aggregated)


def _trade_checked(d: dict[str, Any], aggregated: bool) -> Trade:
    et = "aggTrade" if aggregated else "trade"
    m = d.get("m")
    if type(m) is not bool:
        if "m" not in d:
            raise MessageError(f"missing field 'm' in {et}")
        raise MessageError(f"bad field 'm' in {et}: expected true/false", repr(m)[:40])
    event_ms = _int(d, "E", et)
    trade_ms = _opt_int(d, "T", et)
    x = d.get("X")
    if x is not None and type(x) is not str:
        raise MessageError(f"bad field 'X' in {et}: expected a string", repr(x)[:40])
    qty = _num(d, "q", et, positive=False)
    normal = qty if d.get("nq") is None else _num(d, "nq", et, positive=False)
    if normal > qty:
        raise MessageError(f"bad field 'nq' in {et}: more than 'q'", f"nq={normal} q={qty}")
    return Trade(
        _str(d, "s", et),
        _num(d, "p", et, positive=True),
        normal,
        m,
        event_ms if trade_ms is None else trade_ms,
        event_ms,
        _int(d, "a" if aggregated else "t", et),
        aggregated,
        x,
        0,
        qty - normal,
    )


def _book_ticker(d: dict[str, Any]) -> BookTicker:
    try:
        uid = d["u"]
        sym = d["s"]
        b = float(d["b"])
        bq = float(d["B"])
        a = float(d["a"])
        aq = float(d["A"])
        ev = d.get("E")
        txn = d.get("T")
        if (
            type(uid) is int
            and type(sym) is str
            and 0.0 <= b < _INF
            and 0.0 <= bq < _INF
            and 0.0 <= a < _INF
            and 0.0 <= aq < _INF
            and (ev is None or type(ev) is int)
            and (txn is None or type(txn) is int)
        ):
            return BookTicker(sym, uid, b, bq, a, aq, ev, txn)
    except _FAST_ERRORS:
        pass
    et = "bookTicker"
    return BookTicker(
        _str(d, "s", et),
        _int(d, "u", et),
        _num(d, "b", et, positive=False),
        _num(d, "B", et, positive=False),
        _num(d, "a", et, positive=False),
        _num(d, "A", et, positive=False),
        _opt_int(d, "E", et),
        _opt_int(d, "T", et),
    )


def parse_snapshot(d: Any, symbol: str | None = None) -> DepthSnapshot:
    """A REST ``depth`` response body (already decoded)."""
    et = "depth snapshot"
    if type(d) is not dict:
        raise MessageError(f"bad {et}: expected a JSON object", type(d).__name__)
    if "code" in d and "msg" in d:
        raise MessageError("REST error response", f"code={d['code']!r} msg={str(d['msg'])[:60]!r}")
    return DepthSnapshot(
        _int(d, "lastUpdateId", et),
        _levels(d, "bids", et),
        _levels(d, "asks", et),
        _opt_int(d, "E", et),
        _opt_int(d, "T", et),
        symbol,
    )


def parse_payload(d: Any, stream: str | None = None) -> Message:
    """Classify and parse one decoded message (the ``data`` part when wrapped)."""
    if type(d) is not dict:
        raise MessageError("unknown message: expected a JSON object", type(d).__name__)
    e = d.get("e")
    if e is not None:
        if type(e) is not str:
            raise MessageError("bad field 'e': expected an event type string", repr(e)[:40])
        if e == "bookTicker":
            return _book_ticker(d)
        if e == "depthUpdate":
            if stream is not None and _PARTIAL_DEPTH.search(stream):
                return Skipped("partialDepth", d.get("s"))
            return _depth_update(d)
        if e == "trade":
            return _trade(d, aggregated=False)
        if e == "aggTrade":
            return _trade(d, aggregated=True)
        if e in SKIPPED_EVENTS:
            return Skipped(str(e), d.get("s"))
        raise MessageError("unknown message type", repr(e)[:40])
    if "lastUpdateId" in d:
        if stream is not None and _PARTIAL_DEPTH.search(stream):
            return Skipped("partialDepth", None)
        return parse_snapshot(d)
    if "u" in d and "b" in d and "a" in d and "s" in d:
        return _book_ticker(d)  # spot bookTicker has no "e"
    if "id" in d and ("result" in d or "error" in d):
        return Skipped("control", None)  # reply to SUBSCRIBE / LIST_SUBSCRIPTIONS
    if "code" in d and "msg" in d:
        raise MessageError("error response", f"code={d['code']!r}")
    raise MessageError("unknown message", ",".join(list(d)[:6]))


# The C scanner itself, without json.loads' wrappers (half the cost for short messages).
_scan = json.JSONDecoder().scan_once  # type: ignore[attr-defined]


def decode(text: bytes | str, start: int = 0) -> tuple[Any, str | None]:
    """JSON-decode one message starting at ``start`` and unwrap a combined-stream envelope.

    Returns (payload, stream name or None). Anything but whitespace after the value is an error.
    """
    if type(text) is not str:
        try:
            text = text.decode("utf-8")  # type: ignore[union-attr]
        except UnicodeDecodeError as exc:
            raise MessageError("malformed JSON", f"not UTF-8 ({exc.reason})") from None
    assert isinstance(text, str)
    try:
        obj, end = _scan(text, start)
    except StopIteration as exc:
        raise MessageError("malformed JSON", f"no JSON value at char {exc.value}") from None
    except ValueError as exc:
        raise MessageError("malformed JSON", str(exc)[:80]) from None
    except RecursionError:
        raise MessageError("malformed JSON", "nested too deeply") from None
    if end != len(text) and text[end:].strip():
        raise MessageError("malformed JSON", f"extra data at char {end}")
    if type(obj) is dict and "stream" in obj and "data" in obj:
        stream = obj["stream"]
        return obj["data"], stream if type(stream) is str else None
    return obj, None


def parse_message(text: bytes | str) -> Message:
    """Decode and parse one raw message (wrapped or not)."""
    payload, stream = decode(text)
    return parse_payload(payload, stream)


# --- exchangeInfo -------------------------------------------------------------------------


def parse_exchange_info(obj: Any) -> dict[str, SymbolInfo]:
    """Map symbol -> tick/lot from a decoded ``exchangeInfo`` response (spot or futures)."""
    if type(obj) is not dict or type(obj.get("symbols")) is not list:
        raise MessageError("not an exchangeInfo response: expected an object with 'symbols'")
    out: dict[str, SymbolInfo] = {}
    for s in obj["symbols"]:
        if type(s) is not dict or type(s.get("symbol")) is not str:
            continue
        tick = lot = ""
        for f in s.get("filters", ()):
            if type(f) is not dict:
                continue
            if f.get("filterType") == "PRICE_FILTER":
                tick = str(f.get("tickSize", ""))
            elif f.get("filterType") == "LOT_SIZE":
                lot = str(f.get("stepSize", ""))
        try:
            tick_f, lot_f = float(tick), float(lot)
        except ValueError:
            continue  # symbol without usable filters: leave it out, the caller reports absence
        if tick_f > 0 and lot_f > 0:
            keys = ("contractType", "contractSize", "marginAsset", "baseAsset", "status")
            extra = {k: s[k] for k in keys if k in s}
            out[s["symbol"]] = SymbolInfo(s["symbol"], tick_f, lot_f, tick, lot, extra)
    return out


# --- decimals (tick/lot inference) --------------------------------------------------------


def text_decimals(text: str) -> int:
    """Significant decimals of a decimal string: '0.01000000' -> 2, '5' -> 0."""
    i = text.find(".")
    if i < 0:
        return 0
    return len(text[i + 1 :].rstrip("0"))


def float_decimals(x: float) -> int:
    """Significant decimals of a float's shortest repr, which round-trips the wire string."""
    r = repr(x)
    k = r.find("e")
    if k >= 0:  # 1e-05, 1.5e-07
        mant, exp = r[:k], int(r[k + 1 :])
        return max(0, text_decimals(mant) - exp)
    if r.endswith(".0"):
        return 0
    return len(r) - r.find(".") - 1
