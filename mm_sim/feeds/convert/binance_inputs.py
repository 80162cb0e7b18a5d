"""Binance capture files: which format each is, what it holds, and the shared small helpers.

Why a pre-scan: listing a file's symbols, whether it is futures (``pu``) and whether it carries
both ``trade`` and ``aggTrade`` from the raw bytes (regex, no JSON) lets a wrong ``--symbol``
fail before anything is written and lets the main pass skip duplicated prints. Formats are told
apart by their first line, compression by magic bytes (see the ``binance`` module docstring).
"""

from __future__ import annotations

import re
import zlib
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from types import ModuleType
from typing import Any, cast

from mm_sim.errors import FeedError, UserError
from mm_sim.feeds.convert.base import (
    I64,
    BadLines,
    ConvertOptions,
    is_gzip,
    open_binary,
    time_problem,
)
from mm_sim.feeds.progress import current_tracker
from mm_sim.feeds.validate import MAX_TS_NS
from mm_sim.venues.binance.messages import (
    DepthDiff,
    DepthSnapshot,
    MessageError,
    SymbolInfo,
    Trade,
    decode,
    parse_exchange_info,
)

_inflate_lib: ModuleType
INFLATE_ERRORS: tuple[type[BaseException], ...]
try:  # ISA-L's inflate: ~3x zlib's on these captures (benchmarks/README.md, Conversion)
    from isal import isal_zlib

    _inflate_lib, INFLATE = isal_zlib, "isal"
    INFLATE_ERRORS = (OSError, EOFError, zlib.error, cast(type[BaseException], isal_zlib.error))
except ImportError:  # pragma: no cover (a dependency; the stdlib's zlib does the same, slower)
    _inflate_lib, INFLATE = zlib, "zlib"
    INFLATE_ERRORS = (OSError, EOFError, zlib.error)

FMT_CF_WS = "cryptofeed-ws"
FMT_CF_HTTP = "cryptofeed-http"
FMT_HFT = "hftbacktest"
FMT_JSONL = "jsonl"

MS = 1_000_000

WS_HEADER = re.compile(rb"^(\S+) <-> (\d+(?:\.\d+)?)\s*$")
HTTP_LINE = re.compile(rb"^(\S+) -> (\d+(?:\.\d+)?): ")
_CF_LINE = re.compile(rb"^\d+(?:\.\d+)?: [\[{]")
_HFT_LINE = re.compile(rb"^\d+ [\[{]")
_URL_SYMBOL = re.compile(rb"[?&]symbol=([A-Za-z0-9_\-]+)")
# Per line (no match crosses a newline, so a file's symbols do not depend on where its blocks
# are cut, and the main pass can collect them line by line: binance_block.read_fast).
SYM_RE = re.compile(rb'"s"[ \t\r\f\v]*:[ \t\r\f\v]*"([^"\\\n]{1,40})"')
_TRADE_RE = re.compile(
    rb'"e"[ \t\r\f\v]*:[ \t\r\f\v]*"(trade|aggTrade)"[^{}\n]*?'
    rb'"s"[ \t\r\f\v]*:[ \t\r\f\v]*"([^"\\\n]{1,40})"'
)


def sec_to_ns(text: bytes) -> int:
    """'1633998512.0633569' -> ns, exactly (no float rounding)."""
    whole, _, frac = text.partition(b".")
    return int(whole) * 1_000_000_000 + (int((frac + b"000000000")[:9]) if frac else 0)


@dataclass
class Input:
    path: Path
    fmt: str
    gz: bool
    connect_ns: int | None = None  # cryptofeed-ws header
    url: str = ""
    symbols: set[str] = field(default_factory=set)
    trade_symbols: set[str] = field(default_factory=set)  # only filled when aggTrade is present
    has_diffs: bool = False
    has_pu: bool = False
    has_agg: bool = False
    blocks: Blocks | None = None  # the main pass's reader, its first block already read
    # cryptofeed-http: (recv ns, line number, symbol) of each depth snapshot
    snapshot_lines: list[tuple[int, int, str]] = field(default_factory=list)
    exchange_info: dict[str, SymbolInfo] | None = None

    @property
    def is_messages(self) -> bool:
        return self.fmt != FMT_CF_HTTP


def sniff(path: Path) -> Input:
    gz = is_gzip(path)
    first = b""
    with open_binary(path) as fh:
        try:
            for line in fh:
                if line.strip():
                    first = line
                    break
        except (OSError, EOFError, zlib.error) as exc:
            raise FeedError(f"{path}:1: unreadable compressed data ({exc})") from exc
    if not first:
        raise FeedError(f"{path}: empty file")
    m = WS_HEADER.match(first)
    if m:
        return Input(path, FMT_CF_WS, gz, sec_to_ns(m.group(2)), m.group(1).decode("latin1"))
    if HTTP_LINE.match(first):
        return Input(path, FMT_CF_HTTP, gz)
    if _CF_LINE.match(first):
        return Input(path, FMT_CF_WS, gz)
    if _HFT_LINE.match(first):
        return Input(path, FMT_HFT, gz)
    if first.lstrip()[:1] in (b"{", b"["):
        return Input(path, FMT_JSONL, gz)
    raise FeedError(
        f"{path}:1: unrecognised Binance capture: expected '<url> <-> <time>' (cryptofeed), "
        "'<url> -> <time>: <body>' (cryptofeed REST), '<seconds>: <json>', '<ns> <json>' "
        f"(hftbacktest) or a JSON message per line; got {first[:60]!r}"
    )


class Blocks:
    """A capture's bytes in blocks of about ``size`` (decompressed when gzip), for the main
    pass: :meth:`read1` gives the next block, ``b""`` at the end.

    Why not ``gzip.GzipFile``: the inflate is ISA-L's when installed (3x zlib here), and a
    truncated file still gives up everything before the cut, as GzipFile's ``read1`` does (the
    error comes with the call after the last readable block). Members are chained and zero
    padding between them skipped, as GzipFile does; the trailer's CRC and size are checked by
    the inflater. The raw file is registered with the progress bar's tracker."""

    def __init__(self, path: Path, size: int = 1 << 20, track: bool = True) -> None:
        self.gz = is_gzip(path)
        try:
            self.raw = open(path, "rb")  # noqa: SIM115 (closed by close())
        except OSError as exc:
            raise UserError(f"{path}: cannot read ({exc.strerror or exc})") from exc
        tracker = current_tracker() if track else None
        if tracker is not None:
            tracker.opened(path, self.raw)
        self.size = size
        self._unread: list[bytes] = []
        self._d: Any = None
        self._tail = b""  # compressed input not yet given to the inflater

    def unread(self, block: bytes) -> None:
        """Give ``block`` back: the next read1 returns it (a block looked at before the pass)."""
        self._unread.append(block)

    def read1(self, _n: int = -1) -> bytes:
        if self._unread:
            return self._unread.pop()
        if not self.gz:
            return self.raw.read(self.size)
        while True:
            d = self._d
            if d is None:  # between members
                if not self._tail:
                    self._tail = self.raw.read(1 << 18)
                    if not self._tail:
                        return b""
                self._tail = self._tail.lstrip(b"\0")  # padding between members
                if not self._tail:
                    continue
                d = self._d = _inflate_lib.decompressobj(31)
            # with an empty tail this drains output the last call held back (size reached)
            out = d.decompress(self._tail, self.size)
            self._tail = d.unconsumed_tail
            if d.eof:
                self._tail = d.unused_data + self._tail
                self._d = None
            elif not out and not self._tail:
                self._tail = self.raw.read(1 << 18)
                if not self._tail:
                    raise EOFError(
                        "Compressed file ended before the end-of-stream marker was reached"
                    )
            if out:
                return bytes(out)

    def close(self) -> None:
        self.raw.close()


def prescan_messages(inp: Input) -> None:
    """Symbols, futures-ness and trade/aggTrade presence from raw bytes (no JSON decoding)."""
    rest = b""
    fh = Blocks(inp.path, track=False)
    try:
        while True:
            # read1: what one decompression step yields, so a truncated gzip still gives up
            # its readable start.
            chunk = fh.read1()
            data = rest + chunk
            if chunk:
                cut = data.rfind(b"\n") + 1
                data, rest = data[:cut], data[cut:]
                if not data:
                    continue
            scan_symbols(inp, data)
            if not chunk:
                break
    except INFLATE_ERRORS:
        pass  # the main pass reports unreadable data at its line
    finally:
        fh.close()


def scan_symbols(inp: Input, data: bytes) -> None:
    """The pre-scan of complete lines ``data``: symbols, trade symbols (when aggTrade is
    present), diffs, ``pu``."""
    inp.symbols.update(s.decode("latin1") for s in set(SYM_RE.findall(data)))
    if inp.has_agg or b'"aggTrade"' in data:
        inp.has_agg = True  # only then does it matter which symbols carry `trade`
        inp.trade_symbols.update(
            sym.decode("latin1") for etype, sym in set(_TRADE_RE.findall(data)) if etype == b"trade"
        )
    scan_flags(inp, data)


def line_symbols(inp: Input, line: bytes) -> None:
    """The pre-scan's symbols of one line, collected by a single pass."""
    if b'"s"' in line:
        inp.symbols.update(s.decode("latin1") for s in SYM_RE.findall(line))


class OnePassMiss(Exception):
    """A single pass over the captures (no pre-scan) decided something the whole files' symbols
    and flags would have decided otherwise, or would be slower than two: convert again with the
    pre-scan (binance.convert)."""


def scan_flags(inp: Input, data: bytes) -> None:
    """Whether the complete lines ``data`` hold a depth diff, ``pu`` (futures), an aggTrade."""
    if not inp.has_diffs and b'"depthUpdate"' in data:
        inp.has_diffs = True
    if not inp.has_pu and b'"pu"' in data:
        inp.has_pu = True
    if not inp.has_agg and b'"aggTrade"' in data:
        inp.has_agg = True


def prescan_http(inp: Input, bad: BadLines) -> None:
    """Index the REST responses of a cryptofeed http capture (snapshots by symbol, exchangeInfo)."""
    with open_binary(inp.path) as fh:
        for lineno, line in enumerate(fh, 1):
            if not line.strip() or line.startswith(b"configuration:"):
                continue
            m = HTTP_LINE.match(line)
            if not m:
                bad.bad(
                    f"{inp.path}:{lineno}",
                    "malformed REST capture line: expected '<url> -> <time>: <body>'",
                )
                continue
            url = m.group(1)
            if b"exchangeInfo" in url:
                try:
                    inp.exchange_info = parse_exchange_info(decode(line[m.end() :])[0])
                except MessageError as err:
                    record_bad(bad, f"{inp.path}:{lineno}", err)
                continue
            sym = _URL_SYMBOL.search(url)
            if b"/depth" not in url or not sym:
                bad.bad(f"{inp.path}:{lineno}", "unknown REST response: expected a depth snapshot")
                continue
            inp.snapshot_lines.append(
                (sec_to_ns(m.group(2)), lineno, sym.group(1).decode("latin1").upper())
            )


def check_receive_ns(ns: int, text: str) -> int:
    """A receive time that fits a feed; else the bad line (a later one would overflow int64)."""
    if not 0 <= ns < MAX_TS_NS:
        raise MessageError(
            "bad receive time: expected nanoseconds since the epoch before 2100", repr(text[:30])
        )
    return ns


def message_problem(msg: Any) -> MessageError | None:
    """What makes a parsed diff, trade or snapshot unusable although it parsed: an exchange
    time no feed holds (µs or ns where Binance sends ms, or corrupt), or an update id beyond
    int64 (it would freeze the book: every later diff would look stale). None when usable.

    Only the lower bound 0: Binance's times have one unit (ms), so the upper bound is what
    tells another unit or corruption apart, and hand-made captures start at the epoch."""
    tm = type(msg)
    ids: tuple[tuple[str, int | None], ...]
    if tm is DepthDiff:
        etype = "depthUpdate"
        times = (("E", msg.event_ms), ("T", msg.txn_ms))
        ids = (("U", msg.first_id), ("u", msg.final_id), ("pu", msg.prev_final_id))
    elif tm is Trade:
        etype = "aggTrade" if msg.aggregated else "trade"
        times = (("E", msg.event_ms), ("T", msg.trade_ms))
        ids = ()
    elif tm is DepthSnapshot:
        etype = "depth snapshot"
        times = (("E", msg.event_ms), ("T", msg.txn_ms))
        ids = (("lastUpdateId", msg.last_update_id),)
    else:
        return None
    for key, ms in times:
        if ms is not None and (problem := time_problem(ms, MS, lowest=0)) is not None:
            return MessageError(f"bad field {key!r} in {etype}: {problem}", str(ms)[:30])
    for key, uid in ids:
        if uid is not None and not -I64 <= uid < I64:
            return MessageError(
                f"bad field {key!r} in {etype}: expected an update id within int64",
                str(uid)[:30],
            )
    return None


def record_bad(bad: BadLines, where: str, err: MessageError) -> None:
    """Count by the value-free reason; in strict mode stop with the full detail."""
    if bad.strict:
        raise FeedError(f"{where}: {err}")
    bad.bad(where, err.reason)


def load_exchange_info(path: Path) -> dict[str, SymbolInfo]:
    """An ``exchangeInfo`` JSON file, or a cryptofeed ``*.0``/http capture containing one."""
    if not path.exists():
        raise UserError(f"{path}: exchangeInfo file not found")
    with open_binary(path) as fh:
        data = fh.read()
    if data.lstrip()[:1] == b"{":
        try:
            return parse_exchange_info(decode(data)[0])
        except MessageError as err:
            raise UserError(f"{path}: {err}") from None
    for lineno, line in enumerate(data.splitlines(), 1):
        m = HTTP_LINE.match(line)
        if m and b"exchangeInfo" in m.group(1):
            try:
                return parse_exchange_info(decode(line[m.end() :])[0])
            except MessageError as err:
                raise UserError(f"{path}:{lineno}: {err}") from None
    raise UserError(
        f"{path}: no exchangeInfo response found (expected its JSON body, or a cryptofeed line "
        "'<url>/exchangeInfo -> <time>: <body>')"
    )


def iso(ns: int | None) -> str | None:
    if ns is None:
        return None
    return datetime.fromtimestamp(ns / 1e9, tz=UTC).isoformat(timespec="milliseconds")


def resolve_symbol(opts: ConvertOptions, msg_inputs: list[Input], http: list[Input]) -> str:
    present: set[str] = set()
    for inp in msg_inputs:
        present |= inp.symbols
    if not present:
        for inp in http:
            present |= {s for _, _, s in inp.snapshot_lines}
    listing = ", ".join(sorted(present)) or "none"
    if opts.symbol:
        want = opts.symbol.upper()
        for s in present:
            if s.upper() == want:
                return s
        raise UserError(
            f"symbol {opts.symbol!r} not found in the inputs; symbols present: {listing}"
        )
    if len(present) == 1:
        return next(iter(present))
    if not present:
        raise UserError("no Binance symbol found in the inputs (no message carries a symbol)")
    raise UserError(f"the inputs hold several symbols ({listing}); pick one with --symbol")


def url_market(url: bytes) -> str | None:
    if b"fapi." in url or b"fstream." in url:
        return "usd-m futures"
    if b"dapi." in url or b"dstream." in url:
        return "coin-m futures"
    if b"api.binance" in url or b"stream.binance" in url:
        return "spot"
    return None


def exchange_info_market(info: dict[str, SymbolInfo]) -> str:
    if any("contractType" in s.extra for s in info.values()):
        return "futures"
    return "spot"
