"""``make bench`` / ``make bench-quick``: measure the core and the soak, write latest.json/.md.

Usage: ``python -m benchmarks.run [--quick | --tiny] [--out DIR] [--skip-peer] [--skip-soak]``.
Figures are computed here and written as they were measured; nothing is asserted. Sizes:

- full:  synthetic 30 min (~1 M events), scaling 1x/4x/16x of it, levels on 10 min feeds, the
         default soak (6 x 30 min) cold and warm, every real data set, the peer when installed;
- quick: synthetic 5 min, scaling 1x/4x/16x of it, a 2 x 5 min warm soak, real data, no peer;
- tiny:  seconds-long feeds for the smoke test (no real data, 1 x 1 min soak).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import math
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numba
import numpy as np

from benchmarks import before, convert_bench, data, scaling, soak_e2e, soak_profile, stages
from benchmarks.jsonsafe import clean
from benchmarks.report import fmt, markdown, peer_markdown, peer_targets, targets
from mm_sim.config import load_profile
from mm_sim.events import atomic_write_bytes, atomic_write_json, write_feed

REPO = Path(__file__).resolve().parent.parent
RESULTS = REPO / "benchmarks" / "results"
PEER_VENV = REPO / ".venv-peer"  # hftbacktest pins numpy<2.3: its own venv (make peer-setup)

SIZES: dict[str, dict[str, Any]] = {
    "full": {
        "synthetic_s": 1800.0, "multiples": [1, 4, 16], "levels_s": 600.0,
        "depths": [20, 200, 2000], "soak": [], "cold": True, "real": True, "peer": True,
        "before": True, "repeats": 3,
    },
    "quick": {
        "synthetic_s": 300.0, "multiples": [1, 4, 16], "levels_s": 120.0,
        "depths": [20, 200, 2000], "soak": ["--iterations", "2", "--iteration-minutes", "5"],
        "cold": False, "real": True, "peer": False, "before": False, "repeats": 3,
    },
    "tiny": {
        "synthetic_s": 60.0, "multiples": [1, 2], "levels_s": 30.0, "depths": [20, 200],
        "soak": ["--iterations", "1", "--iteration-minutes", "1"], "cold": False, "real": False,
        "peer": False, "before": False, "repeats": 2,
    },
}  # fmt: skip


def environment() -> dict[str, Any]:
    def git(*args: str) -> str:
        try:
            r = subprocess.run(["git", *args], cwd=REPO, capture_output=True, text=True, timeout=10)
            return r.stdout.strip()
        except (OSError, subprocess.SubprocessError):
            return ""

    cpu = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    try:
        load = os.getloadavg()
    except OSError:
        load = (math.nan, math.nan, math.nan)
    return {
        "commit": git("rev-parse", "HEAD"),
        "dirty": bool(git("status", "--porcelain", "--untracked-files=no")),
        "cpu_model": cpu,
        "cpus": os.cpu_count(),
        "loadavg_at_start": list(load),
        "python": platform.python_version(),
        "numba": numba.__version__,
        "numpy": np.__version__,
        "platform": platform.platform(),
        "numba_cache_dir": os.environ.get("NUMBA_CACHE_DIR", ""),
        "date_utc": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
    }


def compile_times(feed_path: Path) -> dict[str, Any]:
    """Kernel compile (empty cache) vs load (warm cache) for one Engine.run, in subprocesses."""
    code = (
        "import time,sys\nt=time.perf_counter()\n"
        "from mm_sim.config import load_profile, Overrides\nfrom mm_sim.core.engine import Engine\n"
        "from mm_sim.events import open_feed\nimport numpy as np\n"
        "f=open_feed(sys.argv[1]);imp=time.perf_counter()-t\n"
        "e=Engine(load_profile('S1'),Overrides(),f.instrument,1)\n"
        "t=time.perf_counter();e.run(np.array(f.events[:1000]));"
        "print(imp,time.perf_counter()-t)\n"
    )
    out: dict[str, Any] = {}
    for label in ("cold", "warm"):
        with tempfile.TemporaryDirectory(prefix="mm_bench_numba_") as cache:
            env = dict(os.environ)
            if label == "cold":
                env["NUMBA_CACHE_DIR"] = cache
            r = subprocess.run(
                [sys.executable, "-c", code, str(feed_path)],
                cwd=REPO, env=env, capture_output=True, text=True, timeout=900,
            )  # fmt: skip
            if r.returncode != 0:
                out[label] = {"error": r.stderr.strip()[-1500:]}
                continue
            imp, first = (float(x) for x in r.stdout.split()[-2:])
            out[label] = {"import_s": imp, "first_run_s": first}
    return out


def peer_subprocess(feed_path: Path, work: Path, repeats: int, real: bool) -> dict[str, Any]:
    """The hftbacktest comparison, run by .venv-peer's Python on the same feed file.

    Both simulators then run in that one process, on the numpy/numba hftbacktest accepts; its
    JSON (``benchmarks.peer``) becomes ``res["peer"]`` as is.
    """
    py = PEER_VENV / "bin" / "python"
    if not py.exists():
        return {"peer": "not installed: make peer-setup (creates .venv-peer with the peer extra)"}
    out = work / "peer.json"
    env = dict(os.environ)
    env["NUMBA_CACHE_DIR"] = str(PEER_VENV / "numba-cache")  # another numpy: another cache
    cmd = [str(py), "-m", "benchmarks.peer", "--feed", str(feed_path),
           "--repeats", str(repeats), "--json", str(out)]  # fmt: skip
    if real:
        cmd.append("--real")
    try:
        r = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=1800)
    except subprocess.TimeoutExpired:
        return {"error": "peer comparison timed out after 1800 s"}
    if r.returncode != 0 or not out.exists():
        return {"error": f"peer comparison failed (exit {r.returncode}): {r.stderr[-1500:]}"}
    res: dict[str, Any] = json.loads(out.read_text())
    return res


def peer_only(args: argparse.Namespace) -> int:
    """The peer section alone, on the same feeds the mode's full bench gives it."""
    mode = "tiny" if args.tiny else "quick" if args.quick else "full"
    cfg = SIZES[mode]
    if args.peer_from:
        peer = json.loads(args.peer_from.read_text())
        mode = peer.pop("mode", mode)
        peer.pop("targets", None)
    else:
        with tempfile.TemporaryDirectory(prefix="mm_bench_") as tmp:
            work = Path(tmp)
            syn = data.synthetic(cfg["synthetic_s"])
            feed_path = work / "synthetic_1x.npy"
            write_feed(feed_path, syn.events, syn.instrument, source={"bench": "synthetic"})
            peer = peer_subprocess(feed_path, work, cfg["repeats"], cfg["real"])
    rows: list[dict[str, Any]] = []

    def add(name: str, target: str, value: Any, met: bool | None, note: str = "") -> None:
        rows.append({"target": name, "goal": target, "measured": value, "met": met, "note": note})

    peer_targets(peer, add)
    args.out.mkdir(parents=True, exist_ok=True)
    atomic_write_json(args.out / "peer.json", clean({"mode": mode, "targets": rows, **peer}))
    L = [f"# mm_sim vs hftbacktest ({mode})", "", "| target | goal | measured | met | note |",
         "|---|---|---|---|---|"]  # fmt: skip
    L += [f"| {r['target']} | {r['goal']} | {fmt(r['measured'], 3)} | {fmt(r['met'])} | "
          f"{r['note']} |" for r in rows]  # fmt: skip
    md = "\n".join([*L, "", *peer_markdown(peer)]) + "\n"
    atomic_write_bytes(args.out / "peer.md", md.encode())
    latest = args.out / "latest.json"
    if latest.exists():
        res = json.loads(latest.read_text())
        res["peer"] = peer
        res["targets"] = targets(res)
        atomic_write_json(latest, clean(res))
        atomic_write_bytes(args.out / "latest.md", markdown(res).encode())
    print(md)
    return 0


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m benchmarks.run", description=__doc__)
    g = ap.add_mutually_exclusive_group()
    g.add_argument("--quick", action="store_true", help="smaller sizes, no cold soak, no peer")
    g.add_argument("--tiny", action="store_true", help="seconds-long sizes (smoke test)")
    ap.add_argument("--out", type=Path, default=RESULTS, help="results directory")
    ap.add_argument("--skip-peer", action="store_true")
    ap.add_argument("--skip-soak", action="store_true")
    ap.add_argument("--skip-sweep", action="store_true")
    ap.add_argument(
        "--peer-only", action="store_true",
        help="only the hftbacktest comparison (the mode's feeds): writes peer.json and peer.md, "
        "and replaces the peer section of latest.json/.md if they exist",
    )  # fmt: skip
    ap.add_argument(
        "--peer-from", type=Path, metavar="JSON",
        help="with --peer-only: render this saved peer result (peer.json) instead of running",
    )  # fmt: skip
    args = ap.parse_args(argv)
    if args.peer_only:
        return peer_only(args)
    mode = "tiny" if args.tiny else "quick" if args.quick else "full"
    cfg = SIZES[mode]
    t_start = time.perf_counter()
    profile = load_profile("S1")
    res: dict[str, Any] = {"schema_version": 1, "mode": mode, "environment": environment()}

    def step(msg: str) -> None:
        print(f"[bench {time.perf_counter() - t_start:6.1f} s] {msg}", file=sys.stderr, flush=True)

    with tempfile.TemporaryDirectory(prefix="mm_bench_") as tmp:
        work = Path(tmp)
        step(f"synthetic feed, {cfg['synthetic_s']:.0f} s simulated")
        syn = data.synthetic(cfg["synthetic_s"])
        res["synthetic_feed"] = syn.info
        step("roofline scan")
        res["roofline"] = scaling.scan_floor(syn.events)
        floor = res["roofline"]["ns_per_event"]
        step("throughput, synthetic")
        tp: dict[str, Any] = {"synthetic": scaling.throughput(
            syn.events, profile, syn.instrument, repeats=cfg["repeats"])}  # fmt: skip
        feeds: list[data.BenchFeed] = []
        if cfg["real"]:
            step("converting real data sets")
            feeds, notes = data.real_feeds(work)
            res["real_data_notes"] = notes
            for f in feeds:
                step(f"throughput, {f.name}")
                prof, changed = data.profile_for(profile, f.instrument)
                try:
                    t = scaling.throughput(f.events, prof, f.instrument, repeats=cfg["repeats"])
                except Exception as exc:  # one data set must not sink the bench
                    tp[f.name] = {"error": repr(exc)}
                    continue
                t.update({k: f.info[k] for k in ("convert_s", "convert_events_per_s", "symbol")})
                t["profile_changes"] = changed
                t["scan_ns_per_event"] = scaling.scan_floor(f.events)["ns_per_event"]
                tp[f.name] = t
        for t in tp.values():
            if "ns_per_event" in t:
                t["x_scan_floor"] = t["ns_per_event"] / t.get("scan_ns_per_event", floor)
        res["throughput"] = tp
        if cfg["before"]:
            try:
                res["before"] = before.measure(
                    [syn, *feeds], work, repeats=cfg["repeats"], step=step
                )
            except Exception as exc:  # the comparison must not sink the rest of the bench
                res["before"] = {"commit": before.BEFORE_COMMIT, "error": repr(exc)}

        step("per-stage latency")
        res["stages"] = stages.measure_stages(
            syn.events, profile, syn.instrument, repeats=cfg["repeats"]
        )
        st = res["stages"]
        # quote + match = everything the engine does beyond the book update.
        eng_minus_book = _engine_minus_book(st)
        if eng_minus_book is not None:
            st["quote_match_ns_per_event"] = eng_minus_book
        st.pop("_raw", None)

        feed_path = work / "synthetic_1x.npy"
        write_feed(feed_path, syn.events, syn.instrument, source={"bench": "synthetic"})
        step(f"length scaling {cfg['multiples']}")
        res["scaling"] = {
            "length": scaling.length_scaling(feed_path, cfg["multiples"]),
            "levels": [],
            "resting_orders": (
                "not applicable: the S1 strategy rests at most one order per side by design "
                "(the engine's order table holds max_in_flight + 6 slots), so 10 or 100 resting "
                "orders per side is not a state the core can be driven into"
            ),
        }
        step(f"depth scaling {cfg['depths']}")
        res["scaling"]["levels"] = scaling.levels_scaling(
            profile, cfg["levels_s"], cfg["depths"], repeats=cfg["repeats"]
        )
        if mode == "full":
            step("kernel compile times (cold cache subprocess)")
            res["compile"] = compile_times(feed_path)
        if args.skip_soak:
            res["soak"] = {"args": [], "cold": {"skipped": "--skip-soak"},
                           "warm": {"skipped": "--skip-soak"}}  # fmt: skip
        else:
            step(f"soak {cfg['soak'] or '(default)'} cold={cfg['cold']}")
            res["soak"] = soak_e2e.soak_bench(cfg["soak"], cold=cfg["cold"])
            if mode == "tiny":
                res["soak_profile"] = {"skipped": "tiny mode (a minute-long soak is all start-up)"}
            else:
                step("the same soak under a sampling profiler (py-spy): time by stage")
                res["soak_profile"] = soak_profile.profile_soak(cfg["soak"], cache_dir=None)
        step("live path latency (fake exchange subprocess at 5,000 msg/s)")
        try:
            from benchmarks import live_latency

            res["live_latency"] = live_latency.measure(mode, busy_poll=True)
            step("live path latency, client event loop sleeping between frames")
            res["live_latency_sleeping"] = live_latency.measure(mode, busy_poll=False)
            step("live path latency, pull mode (the soak's 50 ms chunks)")
            res["live_latency"]["pull_mode"] = live_latency.measure_pull(mode)
            if mode == "full":
                res["live_latency"]["fake_exchange_max"] = live_latency.measure_server_max(5.0)
        except Exception as exc:  # one section must not sink the bench
            res["live_latency"] = {"error": repr(exc)}
        if args.skip_sweep:
            res["sweep"] = {"skipped": "--skip-sweep"}
        else:
            step("sweep on Dask: cells/min with 1 and 2 workers")
            from benchmarks import sweep_bench

            res["sweep"] = sweep_bench.measure(mode)
        step("conversion: Binance capture -> feed (fast vs general path), convert --workers")
        try:
            res["conversion"] = convert_bench.measure(mode, work)
        except Exception as exc:  # one section must not sink the bench
            res["conversion"] = {"error": repr(exc)}
        if cfg["peer"] and not args.skip_peer:
            step("peer: hftbacktest side by side, in .venv-peer")
            res["peer"] = peer_subprocess(feed_path, work, cfg["repeats"], cfg["real"])
        else:
            res["peer"] = {"peer": "skipped in this mode" if not cfg["peer"] else "--skip-peer"}
    res["elapsed_s"] = time.perf_counter() - t_start
    res["targets"] = targets(res)
    md = markdown(res)
    args.out.mkdir(parents=True, exist_ok=True)
    atomic_write_json(args.out / "latest.json", clean(res))
    atomic_write_bytes(args.out / "latest.md", md.encode())
    print(md)
    step(f"wrote {args.out / 'latest.json'} and latest.md")
    return 0


def _engine_minus_book(st: dict[str, Any]) -> dict[str, float] | None:
    raw = st.get("_raw")
    if raw is None:
        return None
    return stages.distribution(np.maximum(raw["engine"] - raw["book"], 0.0))


if __name__ == "__main__":
    sys.exit(main())
