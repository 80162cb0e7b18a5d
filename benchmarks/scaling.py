"""Core throughput, the scan roofline, and how cost grows with feed length and book depth.

Feed length: a 1x synthetic feed is written once to a temporary .npy file; a worker subprocess
(fresh interpreter, so ``ru_maxrss`` is its own) memory-maps it and replays it ``times`` times
back to back, each copy shifted in time, through one Engine in chunks, as the soak replays a
feed. Only the ``Engine.run`` calls are timed (the chunk copy + shift is excluded). Peak RSS then
holds the interpreter, the core's state, one chunk and the mapped 1x file: if the core grew with
the events it processed, RSS would grow with ``times``.

Run as a worker: ``python -m benchmarks.scaling FEED.npy TIMES [CHUNK]`` prints one JSON line.
"""

from __future__ import annotations

import json
import math
import os
import resource
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.stages import scan_sum
from mm_sim.config import MatchingCfg, Overrides, Profile
from mm_sim.core.book import ST_NASK, ST_NBID
from mm_sim.core.engine import Engine
from mm_sim.events import Instrument

REPO = Path(__file__).resolve().parent.parent


def scan_floor(events: np.ndarray, repeats: int = 5) -> dict[str, float]:
    """Fastest time to sum one field of every event in numba: the memory-bound floor."""
    scan_sum(events[:16])
    best = math.inf
    for _ in range(repeats):
        t0 = time.perf_counter()
        scan_sum(events)
        best = min(best, time.perf_counter() - t0)
    n = len(events)
    return {"events": n, "best_s": best, "ns_per_event": best / n * 1e9, "events_per_s": n / best}


def throughput(
    events: np.ndarray,
    profile: Profile,
    instrument: Instrument,
    *,
    repeats: int = 3,
    seed: int = 1,
) -> dict[str, Any]:
    """Engine.run over the whole array from a fresh engine, ``repeats`` times (best and median).

    The first call of the process loads (or compiles) the kernels; it is made on a short slice
    first and reported as ``first_call_s``, apart from the figures.
    """
    t0 = time.perf_counter()
    Engine(profile, Overrides(), instrument, seed).run(events[: min(len(events), 256)])
    first_call = time.perf_counter() - t0
    times = []
    counters: dict[str, Any] = {}
    pnl = math.nan
    for _ in range(repeats):
        e = Engine(profile, Overrides(), instrument, seed)
        t0 = time.perf_counter()
        e.run(events)
        times.append(time.perf_counter() - t0)
        counters = e.counters()
        pnl = e.cash + e.position * e.mid if e.position != 0 else e.cash
    n = len(events)
    best = min(times)
    med = float(np.median(times))
    # The same feed on one cursor (matching.event_order = file, the model before two clocks):
    # what the exchange-order timeline and the second book cost, measured side by side.
    one = profile.model_copy(update={"matching": MatchingCfg(event_order="file")})
    Engine(one, Overrides(), instrument, seed).run(events[: min(len(events), 256)])
    one_times = []
    for _ in range(repeats):
        e = Engine(one, Overrides(), instrument, seed)
        t0 = time.perf_counter()
        e.run(events)
        one_times.append(time.perf_counter() - t0)
    return {
        "event_order": profile.matching.event_order.value,
        "one_cursor_events_per_s": n / min(one_times),
        "x_one_cursor": min(one_times) / best,
        "events": n,
        "first_call_s": first_call,
        "best_s": best,
        "median_s": med,
        "events_per_s": n / best,
        "events_per_s_median": n / med,
        "ns_per_event": best / n * 1e9,
        "fills": int(counters.get("fills", 0)),
        "actions_sent": int(
            counters.get("places", 0) + counters.get("replaces", 0) + counters.get("cancels", 0)
        ),
        "pnl_quote": float(pnl),
    }


def peak_rss_kb() -> int:
    """This process's own peak RSS (kB): VmHWM of its address space.

    ``getrusage(RUSAGE_SELF).ru_maxrss`` is not used: Linux carries a forked child's copy of
    its parent's high-water mark through ``execve``, so a worker started by a 400 MB bench
    would report at least 400 MB whatever it did itself.
    """
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    except OSError:
        pass
    return int(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)


def worker(feed_path: str, times: int, chunk: int = 65536) -> dict[str, Any]:
    from mm_sim.config import load_profile
    from mm_sim.events import open_feed

    feed = open_feed(feed_path)
    ev = feed.events
    n = len(ev)
    span = int(ev["local_ts"][-1] - ev["local_ts"][0]) + 1_000_000_000
    eng = Engine(load_profile("S1"), Overrides(), feed.instrument, 1)
    eng.run(np.array(ev[:16]))  # kernel load, before the timed part
    warm_rss_kb = peak_rss_kb()
    buf = np.empty(chunk, dtype=ev.dtype)
    run_s = 0.0
    done = 16
    first = True
    for k in range(times):
        for i in range(16 if first else 0, n, chunk):
            first = False
            m = min(chunk, n - i)
            part = buf[:m]
            part[:] = ev[i : i + m]
            if k:
                part["exch_ts"] += k * span
                part["local_ts"] += k * span
            t0 = time.perf_counter()
            eng.run(part)
            run_s += time.perf_counter() - t0
            done += m
    peak = peak_rss_kb()
    c = eng.counters()
    return {
        "times": times,
        "events": done,
        "run_s": run_s,
        "events_per_s": done / run_s,
        "ns_per_event": run_s / done * 1e9,
        "rss_after_load_mb": warm_rss_kb / 1024,
        "peak_rss_mb": peak / 1024,
        "fills": c["fills"],
        "feed_1x_mb": ev.nbytes / 2**20,
    }


def run_worker(feed_path: Path, times: int, timeout: float = 600.0) -> dict[str, Any]:
    env = dict(os.environ)
    env["PYTHONPATH"] = str(REPO) + os.pathsep + env.get("PYTHONPATH", "")
    t0 = time.perf_counter()
    proc = subprocess.run(
        [sys.executable, "-m", "benchmarks.scaling", str(feed_path), str(times)],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        return {"times": times, "error": proc.stderr.strip()[-2000:]}
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    out["wall_s"] = wall
    return out


def length_scaling(feed_path: Path, multiples: list[int]) -> dict[str, Any]:
    # One untimed worker first: it loads (or, after a core edit, compiles) the kernels for the
    # memory-mapped feed's record type, so compile memory never shows up in a measured row.
    run_worker(feed_path, 1)
    rows = [run_worker(feed_path, m) for m in multiples]
    ok = [r for r in rows if "error" not in r]
    verdict: dict[str, Any] = {}
    if len(ok) >= 2:
        lo, hi = ok[0], ok[-1]
        verdict = {
            "rss_growth_mb": hi["peak_rss_mb"] - lo["peak_rss_mb"],
            "rss_ratio": hi["peak_rss_mb"] / lo["peak_rss_mb"],
            "time_ratio": hi["run_s"] / lo["run_s"],
            "events_ratio": hi["events"] / lo["events"],
            "flat_rss": bool(hi["peak_rss_mb"] <= lo["peak_rss_mb"] * 1.10 + 16),
        }
    return {"rows": rows, **verdict}


def levels_scaling(
    profile: Profile, duration_s: float, depths: list[int], repeats: int = 3
) -> list[dict[str, Any]]:
    """Throughput when the synthetic market spreads its limit orders over 20/200/2000 ticks."""
    from benchmarks.data import synthetic

    rows = []
    for d in depths:
        try:
            feed = synthetic(duration_s, limit_max_distance_ticks=d)
        except Exception as exc:  # parameter validation: report, go on
            rows.append({"max_distance_ticks": d, "error": repr(exc)})
            continue
        tp = throughput(feed.events, profile, feed.instrument, repeats=repeats)
        e = Engine(profile, Overrides(), feed.instrument, 1)
        e.run(feed.events)
        st = e._s["bst"]
        rows.append(
            {
                "max_distance_ticks": d,
                "events": len(feed.events),
                "levels_bid_at_end": int(st[ST_NBID]),
                "levels_ask_at_end": int(st[ST_NASK]),
                "events_per_s": tp["events_per_s"],
                "ns_per_event": tp["ns_per_event"],
                "scan_ns_per_event": scan_floor(feed.events)["ns_per_event"],
            }
        )
    return rows


if __name__ == "__main__":
    a = sys.argv[1:]
    res = worker(a[0], int(a[1]), int(a[2]) if len(a) > 2 else 65536)
    print(json.dumps(res))
