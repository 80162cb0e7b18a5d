"""``mm_sim convert --from FORMAT IN... -o OUT``: recorded data -> native feed."""

from __future__ import annotations

import argparse
import importlib
import json
import os
import sys
from pathlib import Path

import numpy as np

from mm_sim.commands import JSON_HELP
from mm_sim.errors import UserError
from mm_sim.events import EVENT_DTYPE, open_feed, read_sidecar, sidecar_path
from mm_sim.feeds.convert import FORMATS
from mm_sim.feeds.convert.base import BadLines, ConvertOptions, ConvertResult
from mm_sim.feeds.progress import read_bar

# Above this share of skipped lines a non-strict conversion is refused unless
# --allow-bad-lines: a feed missing that much of its input is not the market it claims to be.
BAD_SHARE_LIMIT = 0.01


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "convert",
        help="convert recorded market data to a replayable feed",
        description=(
            "Convert recorded market data (several files are chained in order) into mm_sim's "
            "native feed: OUT.npy plus OUT.json metadata. Bad lines are skipped and counted "
            "(or, with --strict, stop the conversion at file:line)."
        ),
    )
    p.add_argument("--from", dest="fmt", required=True, choices=sorted(FORMATS))
    p.add_argument("inputs", nargs="+", type=Path, metavar="IN")
    p.add_argument("-o", "--out", required=True, type=Path, help="output feed (.npy)")
    p.add_argument("--symbol", help="instrument to keep from a multi-symbol capture")
    p.add_argument("--exchange-info", type=Path, help="exchangeInfo response for tick/lot sizes")
    p.add_argument(
        "--tick",
        "--tick-size",
        dest="tick_size",
        type=float,
        help="price tick (overrides exchangeInfo; without either it is inferred from the "
        "prices' decimals, a lower bound, with a warning)",
    )
    p.add_argument("--lot-size", type=float, help="quantity step (overrides exchangeInfo)")
    p.add_argument(
        "--contract-size",
        type=float,
        help="quote currency per contract of an inverse (COIN-M) contract, e.g. 100 for "
        "BTCUSD_PERP (overrides exchangeInfo's contractSize; makes the feed inverse)",
    )
    p.add_argument(
        "--ticker",
        help="lobster: the ticker of input files not named by LOBSTER's convention",
    )
    p.add_argument(
        "--date",
        help="lobster: the trading day (YYYY-MM-DD) of input files not named by LOBSTER's "
        "convention (it dates the messages' times)",
    )
    p.add_argument(
        "--strict",
        action="store_true",
        help="stop at the first bad line, and refuse a feed whose book is lost before its end",
    )
    p.add_argument(
        "--allow-bad-lines",
        action="store_true",
        help=f"publish even when more than {BAD_SHARE_LIMIT:.0%} of the lines were bad and "
        "skipped (default: refuse, nothing written)",
    )
    p.add_argument(
        "--force", action="store_true", help="replace OUT when it is already an mm_sim feed"
    )
    p.add_argument("--json", action="store_true", help=JSON_HELP)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    for path in args.inputs:
        if not path.exists():
            raise UserError(f"{path}: input file not found")
    module = importlib.import_module(FORMATS[args.fmt])
    opts = ConvertOptions(
        symbol=args.symbol,
        exchange_info=args.exchange_info,
        strict=args.strict,
        tick_size=args.tick_size,
        lot_size=args.lot_size,
        contract_size=args.contract_size,
        extra={k: v for k in ("ticker", "date") if (v := getattr(args, k)) is not None},
    )
    target = args.out if args.out.suffix == ".npy" else args.out.with_name(args.out.name + ".npy")
    _check_replace(target, args.force)
    _clean_stale_stages(target)
    stage = target.with_name(f".{target.stem}.converting-{os.getpid()}.npy")
    try:
        with read_bar(list(args.inputs), f"convert {target.name}", sys.stderr):
            result = module.convert(list(args.inputs), stage, opts)
        _check_bad_share(result, args.allow_bad_lines)
        cut = _check_book(stage, args.strict)
        # One unit: the sidecar names its data's size and hash, so a crash between the two
        # renames leaves a pair that open_feed refuses, never a valid-looking mix.
        os.replace(stage, target)
        os.replace(sidecar_path(stage), sidecar_path(target))
    finally:
        for leftover in (stage, sidecar_path(stage)):
            leftover.unlink(missing_ok=True)
    result.out = target
    if cut:
        result.stats["book_less_tail_cut"] = cut
    share = _bad_share(result)
    summary = {
        "out": str(result.out),
        "events": result.events,
        "lines": result.lines,
        "bad_lines": {**result.bad_lines.to_json(), "share": share},
        "warnings": result.warnings,
        **result.stats,
        "clock": open_feed(result.out).meta.clock,  # the sidecar's clock model (docs/FEEDS.md)
    }
    for w in result.warnings:
        print(f"warning: {w}", file=sys.stderr)
    if args.json:
        print(json.dumps(summary, indent=2))
    else:
        print(
            f"wrote {result.events:,} events to {result.out} (bad lines: "
            f"{result.bad_lines.total:,} of {result.lines:,} = {share:.2%})"
        )
        for key, value in result.stats.items():
            print(f"  {key}: {value}")
        clock = summary["clock"] or {}
        print(
            f"  clock: shift {clock.get('shift_ms', 0):+.3f} ms to add to local_ts "
            f"({clock.get('method')}; lag p1 raw {clock.get('lag_ms_raw', {}).get('p1')} ms)"
        )
        bad = result.bad_lines
        if bad.total:
            print(f"  skipped {bad.total:,} bad lines:")
            for reason, n in bad.counts.most_common():
                where = ", ".join(bad.examples.get(reason, []))
                print(f"    {n:>8,}  {reason}  (e.g. {where})")
        else:
            print("  bad lines: 0")
    return 0


def _bad_share(result: ConvertResult) -> float:
    return result.bad_lines.total / result.lines if result.lines else 0.0


def _check_bad_share(result: ConvertResult, allowed: bool) -> None:
    """Refuse (nothing written) a conversion that skipped more than BAD_SHARE_LIMIT of its
    lines, unless the user said that is fine."""
    share = _bad_share(result)
    if allowed or share <= BAD_SHARE_LIMIT:
        return
    raise UserError(
        f"{result.bad_lines.total:,} of {result.lines:,} lines ({share:.2%}) were bad and "
        f"skipped, more than {BAD_SHARE_LIMIT:.0%}: {_reasons(result.bad_lines)}; nothing "
        "written (pass --allow-bad-lines to publish anyway, or --strict to stop at the first)"
    )


def _reasons(bad: BadLines) -> str:
    parts = []
    for reason, n in bad.counts.most_common(3):
        where = ", ".join(bad.examples.get(reason, [])[:2])
        parts.append(f"{n:,} x {reason} (e.g. {where})")
    return "; ".join(parts)


def _check_replace(target: Path, force: bool) -> None:
    """An existing OUT is replaced only with --force, and only when it is a feed of ours."""
    side = sidecar_path(target)
    existing = [p for p in (target, side) if p.exists() or p.is_symlink()]
    if not existing:
        return
    if not force:
        raise UserError(f"{existing[0]}: already exists; pass --force to replace that feed")
    for p in existing:
        if not p.is_file():
            raise UserError(f"{p}: exists and is not a file; not replacing it")
    if target.exists():
        try:
            arr = np.load(target, mmap_mode="r")
            ours = arr.dtype == EVENT_DTYPE
        except (ValueError, OSError, EOFError):
            ours = False
        if not ours:
            raise UserError(f"{target}: exists and is not an mm_sim feed; not replacing it")
    if side.exists():
        try:
            meta = json.loads(side.read_bytes())
            ours = isinstance(meta, dict) and isinstance(meta.get("instrument"), dict)
        except ValueError:
            ours = False
        if not ours:
            raise UserError(f"{side}: exists and is not an mm_sim feed sidecar; not replacing it")


def _clean_stale_stages(target: Path) -> None:
    """Remove what a killed convert to the same OUT left (its process is gone)."""
    for p in target.parent.glob(f".{target.stem}.converting-*"):
        pid = p.name.rsplit("converting-", 1)[-1].split(".", 1)[0]
        if pid.isdigit() and not _alive(int(pid)):
            p.unlink(missing_ok=True)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:
        return True
    return True


def _check_book(stage: Path, strict: bool) -> dict[str, int] | None:
    """Refuse a converted feed with no book; cut (or, with --strict, refuse) a book-less tail.

    A feed without any snapshot has no book to quote against. A book reset (update-id gap)
    with no snapshot after it leaves the rest of the feed without a book: those events are
    cut (and reported) so a soak never quotes into nothing; ``--strict`` refuses instead.
    """
    from mm_sim.events import write_feed
    from mm_sim.feeds.validate import book_less_tail, check_events, has_snapshot

    feed = open_feed(stage, verify=False, check=False)
    events = feed.events
    if not has_snapshot(events):
        raise UserError(
            f"{feed.path.name}: the converted data holds no book snapshot, so the feed would "
            "have no book (give the snapshot file with the stream); nothing written"
        )
    bad = [f for f in check_events(events) if f.fatal]
    if bad:
        raise UserError(
            "the converted feed cannot be replayed: "
            + "; ".join(f.message() for f in bad)
            + "; nothing written"
        )
    tail = book_less_tail(events)
    if tail is None:
        return None
    lost = len(events) - tail
    ts = int(events["exch_ts"][tail])
    if strict:
        raise UserError(
            f"--strict: a book reset at event #{tail} (exch_ts {ts}) is followed by no snapshot: "
            f"the last {lost:,} events have no book; nothing written"
        )
    cut = {"at_event": tail, "exch_ts": ts, "events": lost}
    kept = np.array(events[:tail])
    stats = {**feed.meta.stats, "book_less_tail_cut": cut}
    del feed, events
    write_feed(stage, kept, read_sidecar(stage).instrument, read_sidecar(stage).source, stats)
    print(
        f"note: a book reset at event #{tail} is followed by no snapshot; the {lost:,} "
        "book-less events after it were cut (use --strict to refuse instead)",
        file=sys.stderr,
    )
    return cut
