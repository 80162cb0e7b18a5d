"""``mm_sim soak``: replay a feed through the core, tune, and report (see docs)."""

from __future__ import annotations

import argparse
import time

import numpy as np

from mm_sim.config import load_overrides, load_profile, load_run_settings, parse_set_flags
from mm_sim.core.book import book_apply_events, make_book, mid_price
from mm_sim.feeds.spec import load_events, resolve_feed


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("soak", help="run a multi-iteration soak on a feed (the main job)")
    p.add_argument("--profile", help="profile name (S1) or path to a profile JSON")
    p.add_argument(
        "--overrides", help="runtime overrides JSON (default overrides/runtime_overrides.json)"
    )
    p.add_argument("--feed", help="feed name from feeds/ or a path (.npy feed or .json definition)")
    p.add_argument("--seed", type=int)
    p.add_argument("--set", action="append", metavar="KEY=VALUE", help="override a config value")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    settings = load_run_settings(
        {"profile": args.profile, "overrides": args.overrides, "feed": args.feed, "seed": args.seed}
    )
    prof_cli, ovr_cli = parse_set_flags(args.set)
    load_profile(settings.profile, prof_cli)
    load_overrides(settings.overrides, ovr_cli)
    spec = resolve_feed(settings.feed)
    t0 = time.perf_counter()
    events, instrument, identity = load_events(spec, settings.seed)
    t1 = time.perf_counter()
    book = make_book(instrument.tick_size)
    book_apply_events(book.bid, book.ask, book.st, book.tick_size, np.asarray(events))
    t2 = time.perf_counter()
    span = (int(events["exch_ts"][-1]) - int(events["exch_ts"][0])) / 1e9 if len(events) else 0.0
    print(
        f"feed {identity.get('name', identity.get('path'))}: {len(events):,} events, {span:,.0f} s"
    )
    mid = mid_price(book.st, book.tick_size)
    print(f"  load {t1 - t0:.2f} s, replay {t2 - t1:.2f} s, final mid {mid:.4f}")
    return 0
