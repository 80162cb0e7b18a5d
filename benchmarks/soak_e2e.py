"""The soak end to end, as a user runs it: ``python -m mm_sim soak`` in a subprocess.

Wall time covers everything the user waits for (interpreter start, kernel load or compile, feed
generation, replay, tuning, reports and plots); peak RSS is the child's own VmHWM, written by a
thin ``runpy`` wrapper at exit (``ru_maxrss`` of a child includes the high-water mark of the
parent it was forked from, so it would report this bench's size, not the soak's).
Cold = an empty NUMBA_CACHE_DIR and synthetic feed cache in a temporary directory, so every
kernel compiles and the day is generated; warm = the project's kernel cache and the user's feed
cache, primed by one untimed run first. CPU seconds (the soak and its model arms' child) and
the load average go with each run: on a shared machine wall time says more about the others.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent

# argv: VMHWM_FILE, then mm_sim's own arguments. Runs ``python -m mm_sim ...`` unchanged and, at
# exit, records the peak RSS of this address space (exec'd fresh, so nothing inherited).
_WRAPPER = """
import atexit, runpy, sys
out = sys.argv[1]
def _hwm():
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                with open(out, "w") as g:
                    g.write(line.split()[1])
atexit.register(_hwm)
sys.argv = ["mm_sim", *sys.argv[2:]]
runpy.run_module("mm_sim", run_name="__main__", alter_sys=True)
"""


def soak_once(
    soak_args: list[str], cache_dir: str | None, timeout: float = 900.0
) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="mm_bench_soak_") as tmp:
        art = Path(tmp) / "artifacts"
        env = dict(os.environ)
        if cache_dir is not None:
            # A cold run is a fresh clone's first: no compiled kernels and no generated day
            # (the synthetic feed's disk cache, docs/SYNTHETIC.md) either.
            env["NUMBA_CACHE_DIR"] = cache_dir
            env["MM_SYNTHETIC_CACHE_DIR"] = str(Path(tmp) / "feed-cache")
        hwm = Path(tmp) / "vmhwm.txt"
        cmd = [sys.executable, "-c", _WRAPPER, str(hwm), "soak", "--artifacts", str(art),
               *soak_args]  # fmt: skip
        t0 = time.perf_counter()
        ru0 = resource.getrusage(resource.RUSAGE_CHILDREN)
        code, out, err = run_measured(cmd, env, Path(tmp), timeout)
        ru1 = resource.getrusage(resource.RUSAGE_CHILDREN)
        try:
            rss_kb: int | None = int(hwm.read_text())
        except (OSError, ValueError):
            rss_kb = None
        wall = time.perf_counter() - t0
        if code is None:
            return {"error": f"timed out after {timeout} s", "command": " ".join(cmd[1:])}
        res: dict[str, Any] = {
            "command": "python -m mm_sim soak " + " ".join(soak_args),
            "exit_code": code,
            "wall_s": wall,
            # CPU of the soak and every process it started (a loaded machine stretches wall
            # time, not this): user + system, summed over cores.
            "cpu_s": (ru1.ru_utime - ru0.ru_utime) + (ru1.ru_stime - ru0.ru_stime),
            "load_avg_1m": os.getloadavg()[0],
            "peak_rss_mb": rss_kb / 1024 if rss_kb else None,
        }
        if code not in (0, 1):
            # 1 = the verdict said the configuration failed its gates: still a complete run.
            res["error"] = (err or out).strip()[-2000:]
            return res
        edge = art / "reports" / "EDGE_REPORT.json"
        try:
            report = json.loads(edge.read_text())
            n = int(report["run"]["feed"]["count"])
            res["events"] = n
            res["events_per_s"] = n / wall
            res["events_per_cpu_s"] = n / res["cpu_s"] if res["cpu_s"] > 0 else None
        except (OSError, KeyError, ValueError) as exc:
            res["error"] = f"could not read the event count from {edge.name}: {exc!r}"
        return res


def run_measured(
    cmd: list[str], env: dict[str, str], tmp: Path, timeout: float
) -> tuple[int | None, str, str]:
    """Run ``cmd``; (exit code or None when killed by the timeout, stdout, stderr).

    Output goes to files, so a chatty child cannot block on a full pipe while we wait.
    """
    so, se = tmp / "stdout.txt", tmp / "stderr.txt"
    with so.open("w") as fo, se.open("w") as fe:
        proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=fo, stderr=fe)
        timer = threading.Timer(timeout, proc.kill)
        timer.start()
        try:
            rc = proc.wait()
        finally:
            timer.cancel()
    return (rc if rc >= 0 else None), so.read_text(), se.read_text()


def soak_bench(soak_args: list[str], cold: bool) -> dict[str, Any]:
    out: dict[str, Any] = {"args": soak_args}
    if cold:
        with tempfile.TemporaryDirectory(prefix="mm_bench_numba_") as cache:
            out["cold"] = soak_once(soak_args, cache)
    else:
        out["cold"] = {"skipped": "quick mode"}
    soak_once(soak_args, None)  # prime the project cache (untimed)
    out["warm"] = soak_once(soak_args, None)
    return out


def main(argv: list[str] | None = None) -> int:
    """Time the soak alone: ``python -m benchmarks.soak_e2e [--runs N] [-- SOAK ARGS...]``."""
    ap = argparse.ArgumentParser(
        prog="python -m benchmarks.soak_e2e",
        description="Time `python -m mm_sim soak` end to end (warm kernel cache) and print JSON: "
        "wall and CPU seconds, events/s, peak RSS and the 1-minute load average per run.",
    )
    ap.add_argument("--runs", type=int, default=3, help="timed runs after one untimed (3)")
    ap.add_argument("--cold", action="store_true", help="also one run on an empty kernel cache")
    ap.add_argument("soak_args", nargs="*", help="arguments for mm_sim soak (after --)")
    args = ap.parse_args(argv)
    out: dict[str, Any] = {"args": args.soak_args}
    if args.cold:
        with tempfile.TemporaryDirectory(prefix="mm_bench_numba_") as cache:
            out["cold"] = soak_once(args.soak_args, cache)
    soak_once(args.soak_args, None)  # prime the kernel and feed caches (untimed)
    runs = [soak_once(args.soak_args, None) for _ in range(args.runs)]
    out["warm"] = runs
    ok = [r for r in runs if "error" not in r]
    if ok:
        out["best"] = {
            "wall_s": min(r["wall_s"] for r in ok),
            "cpu_s": min(r["cpu_s"] for r in ok),
            "events": ok[0].get("events"),
        }
    print(json.dumps(out, indent=2))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
