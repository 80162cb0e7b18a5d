"""``mm_sim convert --from FORMAT IN... -o OUT``: recorded data -> native feed."""

from __future__ import annotations

import argparse
import importlib
import json
from pathlib import Path

from mm_sim.errors import UserError
from mm_sim.events import open_feed
from mm_sim.feeds.convert import FORMATS
from mm_sim.feeds.convert.base import ConvertOptions


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
    p.add_argument("--tick-size", type=float, help="price tick (overrides exchangeInfo)")
    p.add_argument("--lot-size", type=float, help="quantity step (overrides exchangeInfo)")
    p.add_argument("--strict", action="store_true", help="stop at the first bad line")
    p.add_argument("--json", action="store_true", help="print the result as JSON")
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
    )
    result = module.convert(list(args.inputs), args.out, opts)
    summary = {
        "out": str(result.out),
        "events": result.events,
        "bad_lines": result.bad_lines.to_json(),
        **result.stats,
        "clock": open_feed(result.out).meta.clock,  # the sidecar's clock model (docs/FEEDS.md)
    }
    if args.json:
        print(json.dumps(summary, indent=2))
    else:
        print(f"wrote {result.events:,} events to {result.out}")
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
