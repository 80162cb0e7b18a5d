"""``mm_sim inspect FEED [--json]``: what a feed holds, before anyone soaks on it."""

from __future__ import annotations

import argparse
import io
import json
import math
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TextIO

from mm_sim.commands import JSON_HELP
from mm_sim.errors import UserError
from mm_sim.events import open_feed
from mm_sim.feeds.clock import GENERATED
from mm_sim.feeds.inspect import clock_summary, inspect_events, inspect_feed, summarise
from mm_sim.feeds.progress import WorkBar
from mm_sim.feeds.spec import FileFeedSpec, load_events, resolve_feed


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "inspect",
        help="summarise a feed: span, counts, spread, depth, gaps, crossings, lag",
        description=(
            "One pass over a feed (a .npy path, a feeds/ name or a definition JSON): event "
            "counts, span, spread and depth sampled at exchange-timestamp boundaries, sequence "
            "and time gaps, crossed/locked books, feed lag and the final touch."
        ),
    )
    p.add_argument("feed", metavar="FEED", help="feed .npy, feed name from feeds/, or definition")
    p.add_argument("--seed", type=int, default=1, help="seed for generated feeds (default 1)")
    p.add_argument("--json", action="store_true", help=JSON_HELP)
    p.set_defaults(func=run)


def compute(feed_arg: str, seed: int = 1, bar_out: TextIO | None = None) -> dict[str, Any]:
    """Resolve ``feed_arg`` and inspect it (files stay memory-mapped); a progress bar on
    ``bar_out`` when it is a terminal (a feed of a day is a minute of work)."""
    bar_out = bar_out if bar_out is not None else io.StringIO()
    spec = resolve_feed(feed_arg)
    if isinstance(spec, FileFeedSpec):
        # Content problems are shown, not refused: inspect is where a user looks at them.
        feed = open_feed(spec.path, check=False)
        label = f"inspect {Path(spec.path).name}"
        with WorkBar(label, 2 * len(feed.events), "events", bar_out) as bar:
            return inspect_feed(feed, progress=lambda done: bar.update(completed=done))
    events, instrument, identity = load_events(spec, seed)
    state = inspect_events(events, instrument.tick_size)
    out = summarise(state, instrument.tick_size, {})
    out["clock"] = clock_summary(state, GENERATED)
    out.update(
        feed=identity.get("name", feed_arg), symbol=instrument.symbol, venue=instrument.venue
    )
    out["seed"] = seed
    return out


def _num(x: float | None, fmt: str = ",.4g") -> str:
    if x is None or (isinstance(x, float) and not math.isfinite(x)):
        return "-"
    return format(x, fmt)


def _ts(ns: int | None) -> str:
    if ns is None:
        return "-"
    return datetime.fromtimestamp(ns / 1e9, tz=UTC).isoformat(timespec="milliseconds")


def _clock_row(c: dict[str, Any]) -> tuple[str, str, str]:
    raw_p1 = _num(c["lag_ms_raw"]["p1"], ",.3f")
    return (
        "clock shift",
        f"{c['shift_ms']:+,.3f} ms",
        f"added to local_ts; {c['method']} (raw lag p1 {raw_p1} ms), {c['estimated']}",
    )


def render(r: dict[str, Any]) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(
        title=f"{r['symbol']} @ {r['venue']}, tick {r['tick_size']:g}"
        + (
            f", inverse: {r['contract_size']:g} quote per contract (quantities in contracts)"
            if r.get("contract_size")
            else ""
        ),
        caption=str(r["feed"]),
        title_justify="left",
        caption_justify="left",
    )
    table.add_column("figure", style="bold", no_wrap=True)
    table.add_column("value", justify="right", no_wrap=True)
    table.add_column("how")
    sp_t, sp_b, dep = r["spread_ticks"], r["spread_bps"], r["depth_top5"]
    lag, tg = r["feed_lag_ms"], r["time_gaps"]
    rows = [
        (
            "events",
            f"{r['events']:,}",
            ", ".join(f"{k} {v:,}" for k, v in r["events_by_kind"].items()),
        ),
        ("span", f"{_num(r['span_s'], ',.1f')} s", f"from {_ts(r['first_exch_ts'])}"),
        ("events/s", _num(r["events_per_s"], ",.1f"), "exchange time"),
        (
            "spread ticks",
            f"{_num(sp_t['median'], ',.0f')} / {_num(sp_t['p95'], ',.0f')}",
            "p50 / p95",
        ),
        ("spread bps", f"{_num(sp_b['median'], '.3f')} / {_num(sp_b['p95'], '.3f')}", "p50 / p95"),
        (
            f"depth top {dep['levels']}",
            f"{_num(dep['bid_median'])} / {_num(dep['ask_median'])}",
            "median qty, bid / ask",
        ),
        ("seq gaps", f"{r['gaps']:,}", "from the converter"),
        (
            f"time gaps>{tg['threshold_s']:g}s",
            f"{tg['count']:,}",
            f"max {_num(tg['max_s'], ',.3f')} s",
        ),
        ("crossed", f"{r['crossed']:,}", f"or locked, of {r['boundaries']:,} ts boundaries"),
        (
            "lag ms",
            f"{_num(lag['p50'], ',.3f')} / {_num(lag['p95'], ',.3f')}",
            "local-exch p50 / p95",
        ),
        _clock_row(r["clock"]),
        (
            "lag ms corrected",
            " / ".join(
                _num(r["clock"]["lag_ms_corrected"][k], ",.3f") for k in ("p1", "p50", "p95")
            ),
            "p1 / p50 / p95 as replay sees them (--clock auto)",
        ),
        (
            "final touch",
            f"{_num(r['final_best_bid'], ',.10g')} / {_num(r['final_best_ask'], ',.10g')}",
            "bid / ask",
        ),
    ]
    if r["exch_ts_backwards"] or r["local_ts_backwards"]:
        rows.append(
            (
                "ts backwards",
                f"{r['exch_ts_backwards']:,} / {r['local_ts_backwards']:,}",
                "events, exch / local",
            )
        )
    if r["book_dropped"]:
        rows.append(("window drops", f"{r['book_dropped']:,}", "far levels ignored"))
    for row in rows:
        table.add_row(*row)
    Console().print(table)


def run(args: argparse.Namespace) -> int:
    if not 0 <= args.seed < 2**64:
        raise UserError(f"--seed = {args.seed}: expected 0 <= seed < 2**64")
    result = compute(args.feed, args.seed, sys.stderr)
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        render(result)
        for p in result.get("problems", []):
            print(f"{'problem' if p['refused'] else 'note'}: {p['message']}")
    # A feed that a soak would refuse is reported with status 1 (figures cover its valid events).
    return 1 if any(p["refused"] for p in result.get("problems", [])) else 0
