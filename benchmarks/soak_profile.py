"""Where a soak's wall time goes, by stage, from a sampling profiler (py-spy).

``python -m mm_sim soak`` runs under ``py-spy record --format raw`` (whole stacks, sampled at a
fixed rate, without touching the soak's code; the model arms inline,
``MM_MODEL_ARMS_PROCESS=never``, so that all of the work is in the one process sampled), and
each sample is put in one stage by the
frames on its stack. Why a sampler and not timers in the code: the stages interleave (the bus
hands chunks to the engine, the recorder writes while the tuner evaluates), and a sampler sees
them all the same way, including interpreter start-up and imports that no timer inside the
program can see.

Stages (the first rule that matches a stack wins):

- ``kernel compile/load``: numba's compiler or its cache loader is on the stack;
- ``charts``: matplotlib, or report/charts.py (drawing and encoding the PNGs);
- ``edge/markout evaluation``: report/edge.py, churn, markouts, bootstrap error bars, model
  bars (the report renderer's evaluation: it was counted under charts before 2026-12-05, which
  made charts look three times as costly as they were);
- ``reports``: the rest of mm_sim/report (gates, churn, markdown, run directory);
- ``recorder``: runtime/recorder.py (records to disk, fsync);
- ``kernel``: the core's Python side and the numba code it calls (mm_sim/core);
- ``feed``: feed generation or reading (mm_sim/feeds, events.py);
- ``tuner``: runtime/tuner*.py and mm_sim/tuning;
- ``bus and run loop``: the rest of mm_sim/runtime (bus, soak loop, checkpoints);
- ``start-up and imports``: no mm_sim frame below the import machinery;
- ``other``: anything else (CLI, config, logging).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent

STAGES = (
    "kernel compile/load",
    "charts",
    "edge/markout evaluation",
    "reports",
    "recorder",
    "kernel",
    "feed",
    "tuner",
    "bus and run loop",
    "start-up and imports",
    "other",
)

_FRAME = re.compile(r"^(?P<func>.*) \((?P<file>[^()]*?)(?::\d+)?\)$")


def _files(stack: str) -> list[str]:
    """The file of each frame, outermost first (py-spy raw: ``func (file:line);...``)."""
    out = []
    for frame in stack.split(";"):
        m = _FRAME.match(frame.strip())
        out.append(m.group("file") if m else frame)
    return out


def classify(stack: str) -> str:
    """The stage of one sampled stack (module docstring: the first rule that matches wins)."""
    files = _files(stack)
    joined = ";".join(files)
    if re.search(r"numba/core/(compiler|typed_passes|untyped_passes|caching|typeinfer)", joined):
        return "kernel compile/load"
    if "matplotlib/" in joined or "mm_sim/report/charts" in joined:
        return "charts"
    inner = [i for i, f in enumerate(files) if "mm_sim/" in f]
    if not inner:
        return "start-up and imports" if "importlib" in joined else "other"
    evaluation = ("report/edge", "report/churn", "report/bootstrap", "model_bars", "markout")
    if any(s in joined for s in evaluation):
        return "edge/markout evaluation"
    f = files[inner[-1]]
    if "importlib" in ";".join(files[inner[-1] + 1 :]):
        return "start-up and imports"  # a module imported on first use
    if "mm_sim/report/" in f:
        return "reports"
    if "runtime/recorder" in f:
        return "recorder"
    if "mm_sim/core/" in f:
        return "kernel"
    if "mm_sim/feeds/" in f or f.endswith("mm_sim/events.py"):
        return "feed"
    if "runtime/tuner" in f or "mm_sim/tuning/" in f:
        return "tuner"
    if "mm_sim/runtime/" in f:
        return "bus and run loop"
    return "other"


def breakdown(raw: str) -> dict[str, Any]:
    """Samples and shares per stage from py-spy's raw output (``stack count`` per line)."""
    counts: Counter[str] = Counter()
    for line in raw.splitlines():
        stack, _, n = line.rpartition(" ")
        if not stack or not n.isdigit():
            continue
        counts[classify(stack)] += int(n)
    total = sum(counts.values())
    return {
        "samples": total,
        "share": {s: (counts[s] / total if total else 0.0) for s in STAGES},
    }


def profile_soak(soak_args: list[str], cache_dir: str | None, rate: int = 250) -> dict[str, Any]:
    """Run one soak under py-spy and break its samples down by stage; a reason if it cannot."""
    spy = shutil.which("py-spy") or str(Path(sys.executable).with_name("py-spy"))
    if not Path(spy).exists():
        return {"skipped": "py-spy is not installed (pip install py-spy, or the dev extra)"}
    with tempfile.TemporaryDirectory(prefix="mm_bench_prof_") as tmp:
        out = Path(tmp) / "stacks.txt"
        # The model arms inline: py-spy samples one process, and in a forked child their work
        # would be missing from the shares (the soak's records are the same either way).
        env = {**os.environ, "MM_MODEL_ARMS_PROCESS": "never"}
        if cache_dir is not None:
            env["NUMBA_CACHE_DIR"] = cache_dir
        cmd = [spy, "record", "--rate", str(rate), "--format", "raw", "--output", str(out),
               "--", sys.executable, "-m", "mm_sim", "soak", "--out", str(Path(tmp) / "art"),
               *soak_args]  # fmt: skip
        t0 = time.perf_counter()
        proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=900)
        wall = time.perf_counter() - t0
        if proc.returncode != 0 or not out.exists():
            tail = (proc.stderr or proc.stdout).strip().splitlines()[-1:] or ["no output"]
            return {"skipped": f"py-spy exited {proc.returncode}: {tail[0]}"}
        res = breakdown(out.read_text())
    res.update({"profiler": f"py-spy record --rate {rate}", "wall_s": wall, "args": soak_args})
    res["seconds"] = {s: res["share"][s] * wall for s in STAGES}
    return res


def markdown(prof: dict[str, Any]) -> list[str]:
    if "skipped" in prof:
        return ["## Where the soak's time goes", "", f"not measured: {prof['skipped']}", ""]
    lines = [
        "## Where the soak's time goes",
        "",
        f"{prof['profiler']} over `python -m mm_sim soak {' '.join(prof['args'])}` "
        f"({prof['samples']:,} samples, {prof['wall_s']:.1f} s wall under the profiler).",
        "",
        "| stage | share | seconds |",
        "|---|---:|---:|",
    ]
    for s in STAGES:
        if prof["share"][s] > 0:
            lines.append(f"| {s} | {prof['share'][s] * 100:.1f} % | {prof['seconds'][s]:.2f} |")
    return [*lines, ""]


def main(argv: list[str] | None = None) -> int:
    """``python -m benchmarks.soak_profile [--rate HZ] [-- SOAK ARGS...]``: the stage table."""
    ap = argparse.ArgumentParser(
        prog="python -m benchmarks.soak_profile",
        description="Profile one `python -m mm_sim soak` with py-spy (warm kernel cache) and print "
        "the share and seconds of each stage (Markdown, or --json).",
    )
    ap.add_argument("--rate", type=int, default=250, help="samples per second (250)")
    ap.add_argument("--json", action="store_true", help="print the result as JSON")
    ap.add_argument("soak_args", nargs="*", help="arguments for mm_sim soak (after --)")
    args = ap.parse_args(argv)
    prof = profile_soak(args.soak_args, cache_dir=None, rate=args.rate)
    prof["load_avg_1m"] = os.getloadavg()[0]
    print(json.dumps(prof, indent=2) if args.json else "\n".join(markdown(prof)))
    return 0 if "skipped" not in prof else 1


if __name__ == "__main__":
    sys.exit(main())
