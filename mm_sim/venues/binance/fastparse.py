"""A numba fast path for the one message that dominates a live feed's cost: ``depthUpdate``.

Why: a diff carries tens of price levels as decimal strings; ``json`` plus one ``float()`` per
number costs ~25 µs per diff in Python, most of a live message's budget. This kernel reads the
raw frame bytes once and writes the levels straight into float arrays (~1 µs).

It only accepts the plain form Binance sends — an optional ``{"stream":"…","data":…}`` envelope
around one flat object with the keys ``e`` (= ``depthUpdate``), ``E``, ``T``, ``s``, ``U``,
``u``, ``pu``, ``b``, ``a`` and COIN-M's ``ps`` (the pair, read past) in any order, no
whitespace, integers without sign or leading zeros, levels as
``["<digits>[.<digits>]","<digits>[.<digits>]"]`` — and answers "not mine" for anything else
(other messages, whitespace, escapes, exponents, duplicate keys, a zero price, numbers too long
to convert exactly…). Those take the general path in :mod:`~mm_sim.venues.binance.messages`,
which is also the reference: for every input the fast path accepts, its result equals
``parse_payload(*decode(raw))`` exactly (tests/test_binance_fastparse.py checks it on
generated, mutated and recorded messages).

Exactness: a decimal ``d1…dk.f1…fn`` is converted as ``m / 10**n`` with ``m`` the integer of all
its digits. When ``m <= 2**53`` and ``n <= 22`` both operands are exact doubles, so the single
IEEE division is correctly rounded: the same double as Python's ``float()`` of the string.
Longer numbers are left to the general path.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from numba import njit

from mm_sim import kernel_cache
from mm_sim.core.jitcall import entry_point
from mm_sim.venues.binance.fill_events import warm as warm_fill
from mm_sim.venues.binance.messages import _PARTIAL_DEPTH, DepthDiff

# ints[] layout written by the kernel
I_E = 0
I_T = 1
I_FIRST = 2  # U
I_FINAL = 3  # u
I_PREV = 4  # pu
I_HAS_T = 5
I_HAS_PU = 6
I_NB = 7
I_NA = 8
I_SYM0 = 9
I_SYM1 = 10
I_STREAM0 = 11
I_STREAM1 = 12  # -1: no envelope
I_SIZE = 13

_MAX_EXACT = 2**53
_POW10 = np.array([10.0**k for k in range(23)])

# byte codes
_QUOTE = 34
_COMMA = 44
_COLON = 58
_LBRACE = 123
_RBRACE = 125
_LBRACKET = 91
_RBRACKET = 93
_DOT = 46
_ZERO = 48
_NINE = 57
_BACKSLASH = 92

_ENVELOPE = np.frombuffer(b'{"stream":"', dtype=np.uint8).copy()
_DATA = np.frombuffer(b'","data":', dtype=np.uint8).copy()
_DEPTH_UPDATE = np.frombuffer(b"depthUpdate", dtype=np.uint8).copy()


@njit(cache=True)
def _string(buf: np.ndarray, i: int) -> int:
    """``buf[i]`` opens a plain ASCII string; the index of its closing quote, or -1."""
    n = buf.shape[0]
    if i >= n or buf[i] != _QUOTE:
        return -1
    j = i + 1
    while j < n:
        c = buf[j]
        if c == _QUOTE:
            return j
        if c == _BACKSLASH or c < 32 or c >= 127:
            return -1
        j += 1
    return -1


@njit(cache=True)
def _string_into(buf: np.ndarray, i: int, out: np.ndarray, k0: int, k1: int) -> int:
    """A plain ASCII string at ``i``: its bounds (first byte, closing quote) into ``out[k0]``
    and ``out[k1]``; the index after it, or -1 (as :func:`_int`)."""
    se = _string(buf, i)
    if se < 0:
        return -1
    out[k0] = i + 1
    out[k1] = se
    return se + 1


@njit(cache=True)
def _int(buf: np.ndarray, i: int, out: np.ndarray, k: int) -> int:
    """An unsigned JSON integer at ``i`` into ``out[k]``; the index after it, or -1."""
    n = buf.shape[0]
    j = i
    v = 0
    while j < n and _ZERO <= buf[j] <= _NINE:
        v = v * 10 + (buf[j] - _ZERO)
        j += 1
        if j - i > 18:
            return -1
    if j == i or (buf[i] == _ZERO and j - i > 1):
        return -1
    out[k] = v
    return j


@njit(inline="always", cache=True)
def _put_decimal(vals: np.ndarray, k: int, m: int, frac: int, positive: bool, j: int) -> int:
    """Store a parsed decimal, ``m`` times 10**-``frac`` (``frac`` -1: no dot), in ``vals[k]``;
    the index after its closing quote at ``j``, or -1 for a zero that must be positive."""
    if positive and m == 0:
        return -1
    if frac > 0:
        vals[k] = m / _POW10[frac]
    else:
        vals[k] = float(m)
    return j + 1


@njit(cache=True)
def _decimal(buf: np.ndarray, i: int, vals: np.ndarray, k: int, positive: bool) -> int:
    """A quoted plain decimal at ``i`` into ``vals[k]``; the index after the quote, or -1.

    Two tight digit loops (whole part, fraction) and the checks once at the end: a capture's
    diff is mostly these, and the digit-by-digit checks were a third of parsing it. Up to 18
    digits the mantissa cannot overflow and only grows, so "over 2**53 at the end" is "over it at
    some digit"; longer ones (leading zeros can make them valid) take the checked loop."""
    n = buf.shape[0]
    if i >= n or buf[i] != _QUOTE:
        return -1
    j = i + 1
    m = 0
    while j < n:
        d = int(buf[j]) - _ZERO
        if d < 0 or d > 9:
            break
        m = m * 10 + d
        j += 1
    whole = j - i - 1
    frac = -1
    if j < n and buf[j] == _DOT:
        j += 1
        f0 = j
        while j < n:
            d = int(buf[j]) - _ZERO
            if d < 0 or d > 9:
                break
            m = m * 10 + d
            j += 1
        frac = j - f0
    if whole + max(frac, 0) > 18:
        return _decimal_checked(buf, i, vals, k, positive)
    if j >= n or buf[j] != _QUOTE or whole == 0 or frac == 0 or frac > 22 or m > _MAX_EXACT:
        return -1
    return _put_decimal(vals, k, m, frac, positive, j)


@njit(cache=True)
def _decimal_checked(buf: np.ndarray, i: int, vals: np.ndarray, k: int, positive: bool) -> int:
    """:func:`_decimal` checking every digit (the reference of its fast loops)."""
    n = buf.shape[0]
    if i >= n or buf[i] != _QUOTE:
        return -1
    j = i + 1
    m = 0
    digits = 0
    frac = -1
    while j < n:
        c = buf[j]
        if _ZERO <= c <= _NINE:
            m = m * 10 + (c - _ZERO)
            digits += 1
            if m > _MAX_EXACT:
                return -1
            if frac >= 0:
                frac += 1
        elif c == _DOT:
            if frac >= 0 or digits == 0:
                return -1
            frac = 0
        elif c == _QUOTE:
            break
        else:
            return -1
        j += 1
    if j >= n or digits == 0 or frac == 0 or frac > 22:
        return -1
    return _put_decimal(vals, k, m, frac, positive, j)


@njit(cache=True)
def _levels(buf: np.ndarray, i: int, vals: np.ndarray, ints: np.ndarray, kcount: int) -> int:
    """``[["p","q"],…]`` at ``i`` into ``vals`` (p, q interleaved); the index after it, or -1."""
    n = buf.shape[0]
    if i >= n or buf[i] != _LBRACKET:
        return -1
    j = i + 1
    count = 0
    if j < n and buf[j] == _RBRACKET:
        ints[kcount] = 0
        return j + 1
    while True:
        if 2 * count + 1 >= vals.shape[0]:
            return -1
        if j >= n or buf[j] != _LBRACKET:
            return -1
        j = _decimal(buf, j + 1, vals, 2 * count, True)
        if j < 0 or j >= n or buf[j] != _COMMA:
            return -1
        j = _decimal(buf, j + 1, vals, 2 * count + 1, False)
        if j < 0 or j >= n or buf[j] != _RBRACKET:
            return -1
        j += 1
        count += 1
        if j >= n:
            return -1
        if buf[j] == _COMMA:
            j += 1
            continue
        if buf[j] == _RBRACKET:
            ints[kcount] = count
            return j + 1
        return -1


@njit(cache=True)
def _literal(buf: np.ndarray, i: int, lit: np.ndarray) -> bool:
    n = lit.shape[0]
    if i + n > buf.shape[0]:
        return False
    k = 0
    while k < n:
        if buf[i + k] != lit[k]:
            return False
        k += 1
    return True


@njit(cache=True)
def _string_is(buf: np.ndarray, i: int, lit: np.ndarray) -> int:
    """The JSON string at ``i`` if it is exactly ``lit``: the index after it, or -1."""
    se = _string(buf, i)
    if se < 0 or se - i - 1 != lit.shape[0] or not _literal(buf, i + 1, lit):
        return -1
    return se + 1


@njit(cache=True)
def _next_member(buf: np.ndarray, j: int, seen: int, bit: int) -> tuple[int, int]:
    """After an object member whose value ended at ``j`` (-1: it did not parse) and whose key
    has ``bit``: (index of the next key, seen) after a comma, (-2 - index after the ``}``,
    seen) at the object's end, (-1, seen) when malformed or the key came twice."""
    if j < 0 or seen & bit:
        return -1, seen
    seen |= bit
    if j >= buf.shape[0]:
        return -1, seen
    if buf[j] == _COMMA:
        return j + 1, seen
    if buf[j] != _RBRACE:
        return -1, seen
    return -2 - (j + 1), seen


@njit(cache=True)
def _unwrap(buf: np.ndarray) -> tuple[int, int]:
    """(where the payload object starts, where the combined stream's name ends) of a frame:
    ``(0, -1)`` for a bare payload, ``(-1, -1)`` for a broken ``{"stream":..,"data":`` wrap."""
    if not _literal(buf, 0, _ENVELOPE):
        return 0, -1
    se = _string(buf, _ENVELOPE.shape[0] - 1)
    if se < 0 or not _literal(buf, se, _DATA):
        return -1, -1
    return se + _DATA.shape[0], se


@njit(cache=True)
def _whole(buf: np.ndarray, j: int, wrapped: bool) -> bool:
    """The payload parsed up to ``j`` (-1: it did not) and, when ``wrapped``, the wrap's ``}``
    follow: nothing may be left over."""
    if j < 0:
        return False
    if wrapped:
        if j >= buf.shape[0] or buf[j] != _RBRACE:
            return False
        j += 1
    return j == buf.shape[0]


@njit(cache=True)
def _payload(buf: np.ndarray, i: int, ints: np.ndarray, vb: np.ndarray, va: np.ndarray) -> int:
    """One flat depthUpdate object at ``i``; the index after its ``}``, or -1."""
    n = buf.shape[0]
    if i >= n or buf[i] != _LBRACE:
        return -1
    j = i + 1
    seen = 0  # bit per key: e E T s U u pu b a ps
    while True:
        ke = _string(buf, j)
        if ke < 0 or ke + 1 >= n or buf[ke + 1] != _COLON:
            return -1
        klen = ke - j - 1
        k0 = buf[j + 1]
        v = ke + 2
        if klen == 1 and k0 == 101:  # e
            bit = 1
            j = _string_is(buf, v, _DEPTH_UPDATE)
        elif klen == 1 and k0 == 69:  # E
            bit = 2
            j = _int(buf, v, ints, I_E)
        elif klen == 1 and k0 == 84:  # T
            bit = 4
            j = _int(buf, v, ints, I_T)
        elif klen == 1 and k0 == 115:  # s
            bit = 8
            j = _string_into(buf, v, ints, I_SYM0, I_SYM1)
        elif klen == 1 and k0 == 85:  # U
            bit = 16
            j = _int(buf, v, ints, I_FIRST)
        elif klen == 1 and k0 == 117:  # u
            bit = 32
            j = _int(buf, v, ints, I_FINAL)
        elif klen == 2 and k0 == 112 and buf[j + 2] == 117:  # pu
            bit = 64
            j = _int(buf, v, ints, I_PREV)
        elif klen == 2 and k0 == 112 and buf[j + 2] == 115:  # ps (COIN-M: the pair; unused)
            bit = 512
            se = _string(buf, v)
            j = se + 1 if se >= 0 else -1
        elif klen == 1 and k0 == 98:  # b
            bit = 128
            j = _levels(buf, v, vb, ints, I_NB)
        elif klen == 1 and k0 == 97:  # a
            bit = 256
            j = _levels(buf, v, va, ints, I_NA)
        else:
            return -1
        j, seen = _next_member(buf, j, seen, bit)
        if j >= 0:
            continue
        if j == -1:
            return -1
        required = 1 | 2 | 8 | 16 | 32 | 128 | 256
        if seen & required != required:
            return -1
        ints[I_HAS_T] = 1 if seen & 4 else 0
        ints[I_HAS_PU] = 1 if seen & 64 else 0
        if ints[I_FIRST] > ints[I_FINAL]:
            return -1
        return -2 - j


@njit(cache=True)
def parse_depth_bytes(buf: np.ndarray, ints: np.ndarray, vb: np.ndarray, va: np.ndarray) -> bool:
    """Parse one frame; True when it was a plain depthUpdate (results in ``ints``, ``vb``,
    ``va``), False when the general parser must decide."""
    start, se = _unwrap(buf)
    ints[I_STREAM0] = _ENVELOPE.shape[0]
    ints[I_STREAM1] = se
    if start < 0:
        return False
    return _whole(buf, _payload(buf, start, ints, vb, va), se >= 0)


# ints[] layout written by the trade kernel
T_E = 0
T_T = 1
T_TID = 2
T_M = 3  # 1: the buyer was the maker
T_HAS_T = 4
T_SYM0 = 5
T_SYM1 = 6
T_X0 = 7  # the X (order type) value's span, futures trades; T_X1 < 0: no X
T_X1 = 8
T_SIZE = 9

_TRADE = np.frombuffer(b"trade", dtype=np.uint8).copy()
_TRUE = np.frombuffer(b"true", dtype=np.uint8).copy()
_FALSE = np.frombuffer(b"false", dtype=np.uint8).copy()


@njit(cache=True)
def _bool(buf: np.ndarray, i: int, ints: np.ndarray, k: int) -> int:
    """``true``/``false`` at ``i`` into ``ints[k]`` (when ``k >= 0``); the index after, or -1."""
    if _literal(buf, i, _TRUE):
        if k >= 0:
            ints[k] = 1
        return i + 4
    if _literal(buf, i, _FALSE):
        if k >= 0:
            ints[k] = 0
        return i + 5
    return -1


@njit(cache=True)
def _trade_payload(buf: np.ndarray, i: int, ints: np.ndarray, vals: np.ndarray) -> int:
    """One flat ``trade`` object at ``i`` (spot: keys e E s t p q T m M; futures: e E T s t p q
    X m), each key once, e E s t p q m required; the index after its ``}``, or -1. The live path
    takes spot trades only (``parse_trade_bytes``); the capture converter takes both."""
    n = buf.shape[0]
    if i >= n or buf[i] != _LBRACE:
        return -1
    j = i + 1
    seen = 0
    ints[T_X1] = -1
    while True:
        ke = _string(buf, j)
        if ke < 0 or ke + 1 >= n or buf[ke + 1] != _COLON or ke - j - 1 != 1:
            return -1
        k0 = buf[j + 1]
        v = ke + 2
        if k0 == 101:  # e
            bit = 1
            j = _string_is(buf, v, _TRADE)
        elif k0 == 69:  # E
            bit = 2
            j = _int(buf, v, ints, T_E)
        elif k0 == 115:  # s
            bit = 4
            j = _string_into(buf, v, ints, T_SYM0, T_SYM1)
        elif k0 == 116:  # t
            bit = 8
            j = _int(buf, v, ints, T_TID)
        elif k0 == 112:  # p
            bit = 16
            j = _decimal(buf, v, vals, 0, True)
        elif k0 == 113:  # q
            bit = 32
            j = _decimal(buf, v, vals, 1, False)
        elif k0 == 84:  # T
            bit = 64
            j = _int(buf, v, ints, T_T)
        elif k0 == 109:  # m
            bit = 128
            j = _bool(buf, v, ints, T_M)
        elif k0 == 77:  # M (ignored, but must be a boolean)
            bit = 256
            j = _bool(buf, v, ints, -1)
        elif k0 == 88:  # X (futures: the order type)
            bit = 512
            j = _string_into(buf, v, ints, T_X0, T_X1)
        else:
            return -1
        j, seen = _next_member(buf, j, seen, bit)
        if j >= 0:
            continue
        if j == -1:
            return -1
        required = 1 | 2 | 4 | 8 | 16 | 32 | 128
        if seen & required != required:
            return -1
        ints[T_HAS_T] = 1 if seen & 64 else 0
        return -2 - j


@njit(cache=True)
def parse_trade_bytes(buf: np.ndarray, ints: np.ndarray, vals: np.ndarray) -> bool:
    """Parse one frame; True when it was a plain spot trade (ids and flags in ``ints``, price
    and qty in ``vals``), False when the general parser must decide."""
    start, se = _unwrap(buf)
    if start < 0:
        return False
    # a futures trade (with X) is the general path's on the live client
    return _whole(buf, _trade_payload(buf, start, ints, vals), se >= 0) and ints[T_X1] < 0


_ENTRY: dict[tuple[Any, bool], Any] = {}
_U8 = np.dtype(np.uint8)  # a dtype object: np.frombuffer resolves a type name on every call


def _entry(kernel: Any, data: bytes | bytearray, buf: np.ndarray, *args: np.ndarray) -> Any:
    """``kernel``'s compiled entry point (``core.jitcall``) for a frame's bytes (``buf`` is
    read-only when ``data`` is ``bytes``, writeable when a ``bytearray``) and the parser's own
    buffers: the dispatcher's typing of four arrays cost about as much as parsing a trade."""
    key = (kernel, type(data) is not bytes)
    fn = _ENTRY.get(key)
    if fn is None:
        fn = _ENTRY[key] = entry_point(kernel, buf, *args)
    return fn


class TradeParser:
    """Reusable buffers around :func:`parse_trade_bytes`: a live feed's most frequent message
    without json or a Trade object. For every frame it accepts, the result equals the general
    path's :class:`~mm_sim.venues.binance.messages.Trade` (tests/test_live_fastpath.py)."""

    def __init__(self) -> None:
        self.ints = np.zeros(T_SIZE, dtype=np.int64)
        self.vals = np.zeros(2)
        self.data: bytes | bytearray = b""

    def scan(self, raw: bytes | bytearray | str) -> tuple[list[int], list[float]] | None:
        """(ints in the ``T_*`` layout, [price, qty]) of a plain trade frame, or None."""
        data: bytes | bytearray = raw.encode() if isinstance(raw, str) else raw
        if b'"e":"trade"' not in data:
            return None
        buf = np.frombuffer(data, _U8)
        parse = _entry(parse_trade_bytes, data, buf, self.ints, self.vals)
        if not parse(buf, self.ints, self.vals):
            return None
        self.data = data
        return self.ints.tolist(), self.vals.tolist()


def depth_diff(
    symbol: str, iv: Any, vb: list[float], va: list[float], fb: np.ndarray, fa: np.ndarray
) -> DepthDiff:
    """A :class:`DepthDiff` from a scanned frame's integers ``iv`` (``I_*``) and its levels,
    flat ``[price, qty, price, qty, ...]`` both as lists and as arrays (the live parser and the
    capture converter each have one form at hand)."""
    return DepthDiff(
        symbol,
        iv[I_FIRST],
        iv[I_FINAL],
        iv[I_PREV] if iv[I_HAS_PU] else None,
        iv[I_E],
        iv[I_T] if iv[I_HAS_T] else None,
        list(zip(vb[0::2], vb[1::2], strict=True)),
        list(zip(va[0::2], va[1::2], strict=True)),
        flat=(fb, fa),
    )


class DepthParser:
    """Reusable buffers around :func:`parse_depth_bytes`; one per stream processor.

    :meth:`scan` leaves the result in the parser (ints, levels in ``vb``/``va``, the frame in
    ``data``) so the live path can use it without building a :class:`DepthDiff`; :meth:`build`
    makes the diff from the last scan, :meth:`parse` does both."""

    def __init__(self) -> None:
        self.ints = np.zeros(I_SIZE, dtype=np.int64)
        self.vb = np.empty(4096)
        self.va = np.empty(4096)
        self.data: bytes | bytearray = b""
        self._partial: dict[bytes | bytearray, bool] = {}  # stream name -> a partial book?

    def scan(self, raw: bytes | bytearray | str) -> list[int] | None:
        """The parsed ints (``I_*`` layout) of a plain depthUpdate frame, or None when ``raw`` is
        not one (or is one of a partial book stream, which the general path skips)."""
        data: bytes | bytearray = raw.encode() if isinstance(raw, str) else raw
        if b'"depthUpdate"' not in data:
            return None
        buf = np.frombuffer(data, _U8)
        cap = len(buf) // 2 + 2
        if cap > len(self.vb):
            self.vb = np.empty(cap)
            self.va = np.empty(cap)
        if not _entry(parse_depth_bytes, data, buf, self.ints, self.vb, self.va)(
            buf, self.ints, self.vb, self.va
        ):
            return None
        iv: list[int] = self.ints.tolist()
        if iv[I_STREAM1] >= 0:
            name = data[iv[I_STREAM0] : iv[I_STREAM1]]
            partial = self._partial.get(name)
            if partial is None:
                if len(self._partial) > 64:
                    self._partial.clear()
                partial = bool(_PARTIAL_DEPTH.search(name.decode("ascii")))
                self._partial[bytes(name)] = partial
            if partial:
                return None
        self.data = data
        return iv

    def build(self, iv: list[int]) -> DepthDiff:
        """The :class:`DepthDiff` of the last :meth:`scan` (which returned ``iv``)."""
        fb = self.vb[: 2 * iv[I_NB]].copy()
        fa = self.va[: 2 * iv[I_NA]].copy()
        symbol = self.data[iv[I_SYM0] : iv[I_SYM1]].decode("ascii")
        return depth_diff(symbol, iv, fb.tolist(), fa.tolist(), fb, fa)

    def parse(self, raw: bytes | bytearray | str) -> DepthDiff | None:
        """The diff in ``raw``, or None when ``raw`` is not a plain depthUpdate frame."""
        iv = self.scan(raw)
        return None if iv is None else self.build(iv)


def warm() -> None:
    """Load (or compile) the kernels now: a first call inside a live stream would stall it for
    the time numba takes to load them (a few hundred ms, seconds of exchange time when fast)."""
    tr = TradeParser().scan(
        b'{"e":"trade","E":1,"s":"X","t":1,"p":"1.5","q":"2","T":1,"m":true,"M":true}'
    )
    assert tr is not None
    diff = DepthParser().parse(
        b'{"e":"depthUpdate","E":1,"s":"X","U":1,"u":2,"b":[["1.5","2"]],"a":[["1.6","0"]]}'
    )
    assert diff is not None and diff.flat is not None
    warm_fill()


def flat_levels(levels: list[tuple[float, float]]) -> np.ndarray:
    """``[(p, q), ...]`` as a flat float array (price, qty interleaved)."""
    return np.array(levels, dtype=np.float64).reshape(-1)


__all__ = [
    "DepthParser",
    "TradeParser",
    "flat_levels",
    "parse_depth_bytes",
    "parse_trade_bytes",
    "warm",
]


kernel_cache.bind(__name__, kernel_cache.BINANCE)  # before any kernel loads: kernel_cache.py
