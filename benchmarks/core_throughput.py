"""Throughput of the simulator core: events per second of ``Engine.run`` on the synthetic feed.

    python -m benchmarks.core_throughput [--duration-s 1800] [--repeats 5] [--json PATH]

The strategy decides on every depth and trade event (quote -> limiter -> match -> account).
Compilation and the first-touch of the book arrays are excluded by a warm-up run; each repeat
builds a fresh Engine and replays the whole feed in one ``run`` call. Two profiles are
measured: the shipped S1 profile (quotes 2.5 bp away, few fills) and a busy one (0.3 bp,
hundreds of fills, the limiter constantly engaged), so neither path hides a slow branch.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time
from pathlib import Path
from typing import Any

import numpy as np

from mm_sim.config import Overrides, Profile, load_overrides, load_profile
from mm_sim.core.engine import Engine
from mm_sim.events import Instrument

TARGET_EVENTS_PER_S = 10_000_000


def _busy_profile() -> tuple[Profile, Overrides]:
    prof = Profile(
        quoting={"base_half_spread_bps": 0.3, "order_qty": 0.01},
        inventory={"max_position": 0.05, "max_notional": 1e7},
    )
    ovr = Overrides(
        min_interval_ms=20.0,
        replace_rate_per_min=1200.0,
        base_spread_bps_delta=0.0,
        tail_age_ms=500.0,
        impact_cap_ratio=0.5,
        max_delta_ratio=1.0,
    )
    return prof, ovr


def _time_runs(
    prof: Profile, ovr: Overrides, events: np.ndarray, inst: Instrument, repeats: int
) -> dict[str, Any]:
    Engine(prof, ovr, inst, seed=1).run(events[: min(len(events), 50_000)])  # compile + warm
    rates = []
    counters: dict[str, Any] = {}
    for _ in range(repeats):
        eng = Engine(prof, ovr, inst, seed=1)
        t0 = time.perf_counter()
        eng.run(events)
        dt = time.perf_counter() - t0
        rates.append(len(events) / dt)
        counters = eng.counters()
    return {
        "events_per_s_best": max(rates),
        "events_per_s_median": statistics.median(rates),
        "decisions": counters["decisions"],
        "fills": counters["fills"],
        "actions": counters["places"] + counters["replaces"] + counters["cancels"],
        "blocks": sum(counters["blocks"].values()),
    }


def measure(duration_s: float = 1800.0, repeats: int = 5, seed: int = 1) -> dict[str, Any]:
    """Figures for ``make bench``: events/s (best and median of ``repeats``) per profile."""
    from mm_sim.feeds.synthetic import SyntheticParams, generate

    events, inst = generate(SyntheticParams(), seed=seed, duration_s=duration_s)
    s1 = (load_profile("S1"), load_overrides())
    results = {
        "S1": _time_runs(*s1, events, inst, repeats),
        "busy": _time_runs(*_busy_profile(), events, inst, repeats),
    }
    worst = min(r["events_per_s_median"] for r in results.values())
    return {
        "benchmark": "core_throughput",
        "feed": {
            "kind": "synthetic",
            "seed": seed,
            "duration_s": duration_s,
            "events": len(events),
        },
        "profiles": results,
        "events_per_s": worst,
        "target_events_per_s": TARGET_EVENTS_PER_S,
        "meets_target": worst >= TARGET_EVENTS_PER_S,
        "machine": {"python": platform.python_version(), "cpus": os.cpu_count()},
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m benchmarks.core_throughput", description=__doc__)
    ap.add_argument("--duration-s", type=float, default=1800.0, help="synthetic feed length")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--json", type=Path, help="write the figures as JSON")
    args = ap.parse_args(argv)
    fig = measure(args.duration_s, args.repeats, args.seed)
    print(f"core throughput, synthetic feed: {fig['feed']['events']:,} events")
    for name, r in fig["profiles"].items():
        print(
            f"  {name:5s} {r['events_per_s_median'] / 1e6:6.2f} M events/s median, "
            f"{r['events_per_s_best'] / 1e6:6.2f} best  "
            f"({r['decisions']:,} decisions, {r['actions']:,} actions, {r['blocks']:,} blocks, "
            f"{r['fills']:,} fills)"
        )
    verdict = "meets" if fig["meets_target"] else "BELOW"
    print(f"  slowest median {fig['events_per_s'] / 1e6:.2f} M/s: {verdict} the 10 M/s target")
    if args.json:
        args.json.write_text(json.dumps(fig, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
