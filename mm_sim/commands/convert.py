"""``mm_sim convert --from FORMAT IN... -o OUT``: recorded data -> native feed."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from mm_sim.commands import JSON_HELP, path_arg
from mm_sim.errors import UserError
from mm_sim.feeds.convert import FORMATS
from mm_sim.feeds.convert.base import ConvertOptions
from mm_sim.feeds.convert.publish import BAD_SHARE_LIMIT, BOOK_LOSS_LIMIT, publish


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
    p.add_argument("inputs", nargs="+", type=path_arg, metavar="IN")
    p.add_argument("-o", "--out", required=True, type=path_arg, help="output feed (.npy)")
    p.add_argument("--symbol", help="instrument to keep from a multi-symbol capture")
    p.add_argument(
        "--exchange-info", type=path_arg, help="exchangeInfo response for tick/lot sizes"
    )
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
        # argparse %-formats help texts: the percent sign is doubled
        help=f"publish even when more than {BAD_SHARE_LIMIT * 100:g}%% of the lines were bad and "
        "skipped (default: refuse, nothing written)",
    )
    p.add_argument(
        "--allow-book-loss",
        action="store_true",
        help=f"publish even when more than {BOOK_LOSS_LIMIT * 100:g}%% of the events would have "
        "no book (a sequence gap with no snapshot after it: the tail is cut) or of the depth "
        "updates were dropped on a synced book (default: refuse, nothing written)",
    )
    p.add_argument(
        "--force", action="store_true", help="replace OUT when it is already an mm_sim feed"
    )
    p.add_argument(
        "--workers",
        type=int,
        help="convert many files in parallel on a local Dask cluster of this many processes: "
        "one feed per input file (a LOBSTER pair, the tardis files of one day and symbol) in "
        "the directory OUT; outputs already complete are skipped (default: one conversion, "
        "no Dask)",
    )
    p.add_argument(
        "--scheduler",
        help="like --workers, on an existing Dask cluster (tcp://HOST:PORT); inputs and OUT "
        "must be on a filesystem the workers share, at the same path",
    )
    p.add_argument("--json", action="store_true", help=JSON_HELP)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    if args.strict and args.allow_bad_lines:
        raise UserError("--strict stops at the first bad line, --allow-bad-lines publishes "
                        "despite many: give one")  # fmt: skip
    if args.strict and args.allow_book_loss:
        raise UserError("--strict refuses a feed whose book is lost before its end, "
                        "--allow-book-loss publishes it: give one")  # fmt: skip
    lobster_only = [f"--{k}" for k in ("ticker", "date") if getattr(args, k) is not None]
    if lobster_only and args.fmt != "lobster":
        raise UserError(f"{', '.join(lobster_only)}: only for --from lobster")
    for path in args.inputs:
        if not path.exists():
            raise UserError(f"{path}: input file not found")
    opts = ConvertOptions(
        symbol=args.symbol,
        exchange_info=args.exchange_info,
        strict=args.strict,
        tick_size=args.tick_size,
        lot_size=args.lot_size,
        contract_size=args.contract_size,
        extra={k: v for k in ("ticker", "date") if (v := getattr(args, k)) is not None},
    )
    if args.workers is not None or args.scheduler is not None:
        return run_many(args, opts)
    target = args.out if args.out.suffix == ".npy" else args.out.with_name(args.out.name + ".npy")
    result, summary = publish(
        args.fmt,
        list(args.inputs),
        target,
        opts,
        args.allow_bad_lines,
        args.force,
        sys.stderr,
        args.allow_book_loss,
    )
    share = summary["bad_lines"]["share"]
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


def run_many(args: argparse.Namespace, opts: ConvertOptions) -> int:
    """Many files in parallel on Dask (mm_sim/feeds/convert/parallel.py); OUT is a directory."""
    import time

    from mm_sim.feeds.convert.parallel import Job, plan, run_all
    from mm_sim.feeds.progress import WorkBar
    from mm_sim.sweep.cluster import connect

    if args.workers is not None and args.scheduler is not None:
        raise UserError("--workers and --scheduler: give one (a local cluster, or an existing one)")
    if args.workers is not None and args.workers < 1:
        raise UserError(f"--workers {args.workers}: expected at least 1")
    out_dir: Path = args.out
    if out_dir.suffix == ".npy" or (out_dir.exists() and not out_dir.is_dir()):
        raise UserError(f"-o {out_dir}: with --workers/--scheduler OUT is a directory of feeds")
    out_dir.mkdir(parents=True, exist_ok=True)
    jobs: list[Job] = plan(args.fmt, list(args.inputs), out_dir, opts)
    if args.force:
        for job in jobs:  # converted again: publish replaces a feed of ours
            for p in (Path(job.target), Path(job.target).with_suffix(".json")):
                p.unlink(missing_ok=True)
    t0 = time.perf_counter()
    results: list[dict] = []
    bar = WorkBar(f"convert {len(jobs)} file(s)", len(jobs), "files", sys.stderr)

    def report(res: dict) -> None:
        results.append(res)
        bar.update(completed=len(results))
        if args.json:
            return
        line = _job_line(res)
        if bar.live is not None:
            bar.live.console.print(line, highlight=False)
        else:
            print(line, flush=True)

    with connect(args.workers, args.scheduler, out=sys.stderr) as (client, engine), bar:
        run_all(args.fmt, jobs, opts, args.allow_bad_lines, client, report, args.allow_book_loss)
    seconds = time.perf_counter() - t0
    failed = [r for r in results if not r["ok"]]
    skipped = [r for r in results if r.get("skipped")]
    if args.json:
        print(json.dumps({"engine": engine, "seconds": seconds, "files": results}, indent=2))
    else:
        print(
            f"converted {len(results) - len(failed) - len(skipped)} of {len(jobs)} file(s) in "
            f"{seconds:.1f} s on {engine} ({len(skipped)} already done, {len(failed)} failed)"
        )
    for r in failed:
        print(failure_line(r), file=sys.stderr)
    return 2 if failed else 0


def failure_line(res: dict) -> str:
    """A failed task's line: its inputs, unless the error already names one (most do, with the
    line: prefixing them again printed the path twice)."""
    error = str(res["error"])
    if any(p in error for p in res["inputs"]):
        return f"mm_sim convert: {error}"
    return f"mm_sim convert: {', '.join(res['inputs'])}: {error}"


def _job_line(res: dict) -> str:
    if res.get("skipped"):
        return f"skipped {res['target']}: {res['skipped']}"
    if not res["ok"]:
        return f"failed {res['key']}: {res['error']}"
    return (
        f"wrote {res['events']:,} events to {res['target']} (bad lines: {res['bad_lines']:,} of "
        f"{res['lines']:,} = {res['bad_share']:.2%}) in {res['seconds']:.1f} s"
    )
