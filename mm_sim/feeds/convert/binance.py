"""Binance recordings -> native feed, with the venue's own book-sync rules applied on the way.

Why the sync rules run here: a recording is only a valid book if the diffs are replayed exactly as
a live client would (buffer across the snapshot seam, drop what the snapshot already holds, stop
at the first sequence gap). :class:`~mm_sim.venues.binance.sync.BookSync` makes those decisions;
this module only reads files, routes messages and writes events.

Inputs are chained in the given order, gzip or plain (told apart by magic bytes), each detected
from its first line:

- ``cryptofeed-ws``: ``<url> <-> <connect time>`` then ``<recv seconds.fraction>: <message>``;
- ``cryptofeed-http``: ``<url> -> <recv time>: <response body>`` holding REST depth snapshots
  (symbol in the URL) and/or an ``exchangeInfo``; read before the message files and fed to the
  book sync at their receive time (those received before the stream opened are not used);
- ``hftbacktest``: ``<recv ns> <message>``, with the REST snapshot inline among the diffs;
- ``jsonl``: one message per line without receive time; ``local_ts`` is then the message's
  event time ``E`` (the snapshot takes the previous message's).

Memory is bounded: files are streamed line by line, events leave in 64k-record chunks, only the
selected symbol's snapshots are held. A pre-scan of each message file (regex over raw bytes, no
JSON) lists its symbols, whether it is futures (``pu``) and whether it carries both ``trade`` and
``aggTrade`` for a symbol (then ``trade`` is kept and ``aggTrade`` skipped, so prints are not
counted twice); it lets a wrong ``--symbol`` fail before anything is written.

hftbacktest captures skip it: decompressing a capture twice cost more than everything else the
fast path does. One pass guesses the symbol and market from the first block, collects on the way
what the pre-scan would have found, and checks both before publishing (:func:`_check_one_pass`);
when a guess or a decision that needed the whole file does not hold, the capture is converted
again with the pre-scan, so the output is the same either way (docs/FEEDS_BINANCE.md).
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np

from mm_sim.errors import FeedError, UserError
from mm_sim.events import KIND_NAMES, FeedWriter, Instrument
from mm_sim.feeds.convert.base import (
    ConvertOptions,
    ConvertResult,
    inferred_tick_warning,
    open_binary,
)
from mm_sim.feeds.convert.binance_columns import Columns
from mm_sim.feeds.convert.binance_inputs import (
    FMT_CF_HTTP,
    FMT_CF_WS,
    FMT_HFT,
    FMT_JSONL,
    HTTP_LINE,
    INFLATE_ERRORS,
    SYM_RE,
    Blocks,
    Input,
    OnePassMiss,
    exchange_info_market,
    iso,
    load_exchange_info,
    message_problem,
    prescan_http,
    prescan_messages,
    record_bad,
    resolve_symbol,
    sniff,
    url_market,
)
from mm_sim.feeds.convert.binance_stream import NEVER, StreamConverter, snapshot_verdict
from mm_sim.venues.binance.messages import (
    DepthSnapshot,
    MessageError,
    SymbolInfo,
    decode,
    float_decimals,
    parse_snapshot,
)
from mm_sim.venues.binance.sync import Market


def _load_snapshots(http: list[Input], symbol: str, conv: StreamConverter) -> None:
    """Parse the selected symbol's REST snapshots from the http captures, ordered by time."""
    out: list[DepthSnapshot] = []
    for inp in http:
        wanted = {ln: ts for ts, ln, s in inp.snapshot_lines if s == symbol.upper()}
        if not wanted:
            continue
        with open_binary(inp.path) as fh:
            for lineno, line in enumerate(fh, 1):
                ts = wanted.get(lineno)
                if ts is None:
                    continue
                m = HTTP_LINE.match(line)
                assert m is not None
                try:
                    snap = parse_snapshot(decode(line[m.end() :])[0], symbol)
                    err = message_problem(snap)
                    if err is not None:
                        raise err
                except MessageError as err:
                    record_bad(conv.bad, f"{inp.path}:{lineno}", err)
                    continue
                snap.local_ts = ts
                out.append(snap)
    out.sort(key=lambda s: s.local_ts)
    conv.snapshots = out
    conv.next_snap_ts = out[0].local_ts if out else NEVER


def convert(inputs: list[Path], out: Path, opts: ConvertOptions) -> ConvertResult:
    started = time.perf_counter()
    if not inputs:
        raise UserError("no input files")
    sniffed = [sniff(Path(p)) for p in inputs]
    if all(i.fmt == FMT_HFT for i in sniffed) and not opts.extra.get("general_path"):
        try:
            return _convert(inputs, sniffed, out, opts, started, one_pass=True)
        except OnePassMiss:
            sniffed = [sniff(Path(p)) for p in inputs]
    return _convert(inputs, sniffed, out, opts, started, one_pass=False)


def _first_guess(inp: Input, opts: ConvertOptions) -> tuple[str, bool, bool]:
    """(symbol, has diffs, futures) as the first block of the first file suggests: what a
    single pass starts from, checked against the whole files at its end (_check_one_pass)."""
    blocks = inp.blocks = Blocks(inp.path)
    try:
        first = blocks.read1()
    except INFLATE_ERRORS as exc:
        raise OnePassMiss(str(exc)) from exc
    blocks.unread(first)
    if opts.symbol:
        symbol = opts.symbol.upper()
    else:
        m = SYM_RE.search(first)
        if m is None:
            raise OnePassMiss("no symbol in the first block")
        symbol = m.group(1).decode("latin1")
    if not (symbol.isascii() and symbol.isprintable() and SYM_RE.fullmatch(
        b'"s":"' + symbol.encode() + b'"'
    )):  # fmt: skip
        raise OnePassMiss("a symbol the line scanner does not take")
    if symbol in ("pu", "aggTrade", "depthUpdate"):  # words the block kernel flags (FLAG_WORDS)
        raise OnePassMiss("a symbol named like a flag word")
    return symbol, b'"depthUpdate"' in first, b'"pu"' in first


def _check_one_pass(
    conv: StreamConverter, opts: ConvertOptions, msg_inputs: list[Input], guess: tuple
) -> None:
    """The single pass's guesses against what the pre-scan would have found in the whole
    files: equal, or :class:`OnePassMiss` (the caller converts again with the pre-scan). A
    symbol error is the same either way and is raised as such."""
    symbol = resolve_symbol(opts, msg_inputs, [])
    futures = any(i.has_pu for i in msg_inputs)
    has_diffs = any(i.has_diffs for i in msg_inputs)
    if (symbol, has_diffs, futures) != guess:
        raise OnePassMiss("the first block was not like the files")
    for f in conv.file_states:
        if f.agg_kept:  # would the pre-scan have found the trades that make it a duplicate?
            raise OnePassMiss("aggTrades kept")
        if f.snapshot_verdicts - {snapshot_verdict(f.inp.symbols, symbol)}:
            raise OnePassMiss("an inline snapshot read before the file's symbols were known")


def _convert(
    inputs: list[Path],
    sniffed: list[Input],
    out: Path,
    opts: ConvertOptions,
    started: float,
    one_pass: bool,
) -> ConvertResult:
    """One conversion. ``one_pass``: no pre-scan; the symbol and market are guessed from the
    first block and checked at the end, before anything is published (a wrong ``--symbol`` is
    then refused after the pass rather than before it); any error on the way, or a guess that
    does not hold, raises :class:`OnePassMiss` and the caller converts again with the pre-scan,
    which reports errors in their usual order."""
    conv = StreamConverter(opts)
    conv.one_pass = one_pass
    msg_inputs = [i for i in sniffed if i.is_messages]
    http = [i for i in sniffed if not i.is_messages]
    if not msg_inputs:
        raise UserError(
            "no message files among the inputs (only REST captures); add the websocket capture"
        )
    try:
        return _convert_inputs(inputs, sniffed, msg_inputs, http, conv, out, opts, started)
    except (UserError, FeedError) as exc:
        # conv.one_pass: still unchecked (the check clears it; what follows is as two-pass)
        if conv.one_pass and not getattr(exc, "one_pass_checked", False):
            raise OnePassMiss(str(exc)) from exc
        raise
    finally:
        for inp in msg_inputs:
            if inp.blocks is not None:
                inp.blocks.close()


def _convert_inputs(
    inputs: list[Path],
    sniffed: list[Input],
    msg_inputs: list[Input],
    http: list[Input],
    conv: StreamConverter,
    out: Path,
    opts: ConvertOptions,
    started: float,
) -> ConvertResult:
    if conv.one_pass:
        guess = _first_guess(msg_inputs[0], opts)
        symbol, has_diffs, futures = guess
    else:
        for inp in msg_inputs:
            prescan_messages(inp)
        for inp in http:
            prescan_http(inp, conv.bad)
        symbol = resolve_symbol(opts, msg_inputs, http)
        futures = any(i.has_pu for i in msg_inputs)
        has_diffs = any(i.has_diffs for i in msg_inputs)
    conv.symbol = symbol

    # Tick and lot: flags win, then exchangeInfo (explicit file, else one found in the inputs),
    # else the most decimals seen in the data.
    info_src: str | None = None
    sym_info: SymbolInfo | None = None
    if opts.exchange_info is not None and (opts.tick_size is None or opts.lot_size is None):
        table = load_exchange_info(Path(opts.exchange_info))
        sym_info = table.get(symbol)
        if sym_info is None:
            raise UserError(
                f"{opts.exchange_info}: symbol {symbol} is not in this exchangeInfo "
                f"({len(table)} symbols); use the capture's own venue file or "
                "--tick-size/--lot-size"
            )
        info_market = exchange_info_market(table)
        if has_diffs and info_market != ("futures" if futures else "spot"):
            raise UserError(
                f"{opts.exchange_info}: this exchangeInfo is for {info_market} but the capture "
                f"is {'futures' if futures else 'spot'}"
            )
        info_src = str(opts.exchange_info)
    elif opts.tick_size is None or opts.lot_size is None:
        for inp in http:
            if inp.exchange_info and symbol in inp.exchange_info:
                sym_info = inp.exchange_info[symbol]
                info_src = str(inp.path)
    tick_source = "flag" if opts.tick_size else "exchange_info" if sym_info else "inferred"
    lot_source = "flag" if opts.lot_size else "exchange_info" if sym_info else "inferred"
    for name, v in (("--tick-size", opts.tick_size), ("--lot-size", opts.lot_size)):
        if v is not None and not v > 0:
            raise UserError(f"{name} must be > 0, got {v}")

    _load_snapshots(http, symbol, conv)
    if has_diffs:
        conv._make_sync(Market.FUTURES if futures else Market.SPOT)
    venue = "binance-futures" if futures else "binance-spot"
    writer = FeedWriter(out, Instrument(symbol, venue, 1.0, 1.0))
    conv.cols = Columns(writer)
    if tick_source != "inferred":
        conv.cols.tick = opts.tick_size if tick_source == "flag" else sym_info.tick_size  # type: ignore[union-attr]
    if lot_source != "inferred":
        conv.cols.lot = opts.lot_size if lot_source == "flag" else sym_info.lot_size  # type: ignore[union-attr]
    try:
        for inp in msg_inputs:
            conv.stream(inp)
        if conv.one_pass:
            try:
                _check_one_pass(conv, opts, msg_inputs, guess)
            except UserError as exc:  # the symbol error the pre-scan would have raised first
                exc.one_pass_checked = True  # type: ignore[attr-defined]
                raise
            conv.one_pass = False  # checked: what follows is as with the pre-scan
        conv.finish()
        conv.cols.flush()
        _check_grid(conv.cols, opts)
        tick, lot, decimals = _tick_lot(opts, sym_info, conv.cols, tick_source, lot_source)
        csize, csize_source = _contract_size(opts, sym_info, sniffed, symbol)
        writer.instrument = Instrument(symbol, venue, tick, lot, decimals, csize is not None, csize)
        elapsed = time.perf_counter() - started
        stats = _stats(conv, sniffed, futures, has_diffs, venue, tick, lot, elapsed)
        stats.update(tick_source=tick_source, lot_source=lot_source)
        if csize is not None:
            stats.update(inverse=True, contract_size=csize, contract_size_source=csize_source)
        if info_src:
            stats["exchange_info"] = info_src
        source = {
            "format": "binance",
            "inputs": [str(p) for p in inputs],
            "exchange_info": info_src,
            "symbol": symbol,
        }
        path = writer.close(source, {**stats, "bad_lines": conv.bad.to_json()})
    except BaseException:
        writer.abort()
        raise
    lines = sum(int(f.get("lines", 0)) for f in conv.files)
    warnings = [inferred_tick_warning(tick)] if tick_source == "inferred" else []
    return ConvertResult(path, writer.count, conv.bad, stats, lines, warnings)


def _contract_size(
    opts: ConvertOptions, sym_info: SymbolInfo | None, sniffed: list[Input], symbol: str
) -> tuple[float | None, str | None]:
    """(C, where it came from) of an inverse contract, (None, None) for a linear one.

    A COIN-M (dapi) symbol's exchangeInfo entry carries ``contractSize`` (quote currency per
    contract: 100 for BTCUSD_PERP, 10 for most altcoins); USD-M and spot entries have none.
    Order: --contract-size, exchangeInfo, Binance's documented default for a capture whose URL
    is COIN-M (dstream/dapi).
    """
    if opts.contract_size is not None:
        if not opts.contract_size > 0:
            raise UserError(f"--contract-size must be > 0, got {opts.contract_size}")
        return float(opts.contract_size), "flag"
    raw = sym_info.extra.get("contractSize") if sym_info is not None else None
    if raw is not None:
        try:
            c = float(raw)
        except (TypeError, ValueError):
            c = float("nan")
        if not c > 0:
            raise UserError(f"exchangeInfo: {symbol}: contractSize must be > 0, got {raw!r}")
        return c, "exchange_info"
    if any(url_market(i.url.encode()) == "coin-m futures" for i in sniffed):
        # Binance's contract specifications: 100 USD per BTC contract, 10 USD for altcoins
        # (a few differ: the source says so, and exchangeInfo or --contract-size settles it).
        return (100.0 if symbol.startswith("BTC") else 10.0), "binance_default"
    return None, None


def _tick_lot(
    opts: ConvertOptions,
    sym_info: SymbolInfo | None,
    cols: Columns,
    tick_source: str,
    lot_source: str,
) -> tuple[float, float, int | None]:
    if "inferred" in (tick_source, lot_source) and cols.priced == 0:
        raise UserError(
            "no prices in the inputs to infer the tick/lot size from; pass --tick-size and "
            "--lot-size or --exchange-info"
        )
    if tick_source == "flag":
        tick = float(opts.tick_size)  # type: ignore[arg-type]
        decimals = float_decimals(tick)
    elif tick_source == "exchange_info":
        assert sym_info is not None
        tick, decimals = sym_info.tick_size, sym_info.price_decimals
    else:
        decimals = cols.price_decimals
        tick = float(f"1e-{decimals}")
    if lot_source == "flag":
        lot = float(opts.lot_size)  # type: ignore[arg-type]
    elif lot_source == "exchange_info":
        assert sym_info is not None
        lot = sym_info.lot_size
    else:
        lot = float(f"1e-{cols.qty_decimals}")
    return tick, lot, decimals


def _check_grid(cols: Any, opts: ConvertOptions) -> None:
    """A --tick or --lot-size that nine in ten of the capture's values are not multiples of is
    a typo (a tick of 1,000,000 put every price off the grid, and the soak on it had no book);
    fewer off the grid are counted in the stats (``prices_off_tick``), as before."""
    for flag, given, off, checked, decimals in (
        ("--tick", opts.tick_size, cols.off_tick, cols.priced, cols.price_decimals),
        ("--lot-size", opts.lot_size, cols.off_lot, cols.sized, cols.qty_decimals),
    ):
        if given is not None and checked and off * 10 > checked * 9:
            raise UserError(
                f"{flag} {float(given):g}: {off:,} of the capture's {checked:,} values are "
                f"not multiples of it (they have up to {decimals} decimals); check the size, or "
                "leave the flag out to infer it"
            )


def _stats(
    conv: StreamConverter,
    sniffed: list[Input],
    futures: bool,
    has_diffs: bool,
    venue: str,
    tick: float,
    lot: float,
    elapsed: float,
) -> dict[str, Any]:
    cols = conv.cols
    assert cols is not None
    sync = conv.sync
    c = sync.counters if sync is not None else None
    msgs_total = sum(f.get("messages", 0) for f in conv.files)
    unsynced = (
        c.buffered_overflow + c.discarded + (sync.buffered if sync is not None else 0)
        if c is not None
        else 0
    )
    market = "futures" if futures else "spot" if has_diffs else "unknown (no depthUpdate)"
    url_markets = {m for i in sniffed if (m := url_market(i.url.encode()))}
    stats: dict[str, Any] = {
        "symbol": conv.symbol,
        "market": market,
        "market_detected_from": ("'pu' in depthUpdate" if futures else "no 'pu' in any depthUpdate")
        if has_diffs
        else "n/a",
        "venue": venue,
        "symbols_seen": sorted(set().union(*(i.symbols for i in sniffed if i.is_messages))),
        "messages": dict(sorted(conv.messages.items())),
        "other_symbol_messages": conv.other_symbol,
        "events": {KIND_NAMES[k]: int(cols.kind_counts[k]) for k in sorted(KIND_NAMES)},
        "snapshots": {
            "seen": conv.snapshots_seen,
            "used": c.rebases if c else 0,
            "too_old": c.snapshots_too_old if c else 0,
            "ignored_book_valid": c.snapshots_ignored if c else 0,
            "crossed": c.snapshots_crossed if c else 0,
            "before_stream": conv.snapshots_before_stream,
            "external_available": len(conv.snapshots),
        },
        "gaps": c.gaps if c else 0,
        "rebases": c.rebases if c else 0,
        "resyncs": c.resyncs if c else 0,
        "crossed": c.crossed if c else 0,
        "book_invalidations": conv.invalidations,
        "diffs_applied": c.applied if c else 0,
        "dropped_stale": c.dropped_stale if c else 0,
        "dropped_stale_in_sync": conv.stale_synced,
        "stale_in_sync_examples": conv.stale_examples,
        "gap_examples": conv.gap_examples,
        "last_gap": conv.last_gap,
        "unsynced_dropped": unsynced,
        "buffered_overflow": c.buffered_overflow if c else 0,
        "overlapping_diffs": c.overlaps if c else 0,
        "connections": conv.connections,
        "aggtrade_skipped_duplicate": conv.aggtrade_duplicates,
        "trades_skipped_non_market": dict(conv.trades_non_market),
        "trades_skipped_zero_qty": conv.trades_zero_qty,
        "book_ticker_skipped": conv.messages.get("bookTicker", 0),
        "tick_size": tick,
        "lot_size": lot,
        "decimals_seen": {"price": cols.price_decimals, "qty": cols.qty_decimals},
        "prices_off_tick": cols.off_tick,
        "qtys_off_lot": cols.off_lot,
        "local_ts_source": (
            "receive time"
            if all(f["format"] != FMT_JSONL for f in conv.files)
            else "exchange event time E (the input has no receive time)"
            if all(f["format"] == FMT_JSONL for f in conv.files)
            else "receive time, except jsonl files: exchange event time E"
        ),
        "first_exch_ts": iso(cols.first_exch),
        "last_exch_ts": iso(cols.last_exch),
        "first_exch_ts_ns": cols.first_exch,
        "last_exch_ts_ns": cols.last_exch,
        "clock_offset_ms_median": (
            round(float(np.median(offs)) / 1e6, 3) if len(offs := conv.offsets.array()) else None
        ),
        "receive_time_backwards": conv.recv_backwards,
        "events_local_ts_backwards": cols.local_backwards,
        "files": conv.files,
        "elapsed_s": round(elapsed, 3),
        "messages_per_s": round(msgs_total / elapsed) if elapsed > 0 else None,
    }
    if url_markets:
        stats["venue_from_url"] = sorted(url_markets)
    if conv.last_ticker is not None:
        t = conv.last_ticker
        stats["last_book_ticker"] = {
            "bid": t.bid_price,
            "ask": t.ask_price,
            "local_ts": iso(t.local_ts),
        }
    if sync is not None and sync.book is not None:
        stats["final_book"] = {
            "state": str(sync.state),
            "best_bid": sync.book.best_bid(),
            "best_ask": sync.book.best_ask(),
        }
    return stats


__all__ = ["FMT_CF_HTTP", "FMT_CF_WS", "FMT_HFT", "FMT_JSONL", "convert", "load_exchange_info"]
