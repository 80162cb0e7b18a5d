"""What the run record says about tuning by counterfactuals, for the console and for people.

Read back from the committed lines of ``metrics.jsonl`` (they carry ``extra.tuning`` and
``extra.shadows``), so the console says what the record holds: the walk-forward search's cost,
and the shadow arms' net_bps beside the primary's, iteration by iteration.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from mm_sim.report.rundir import RunDir


def _f(v: Any) -> str:
    return "n/a" if v is None else f"{v:+.3f}"


def summary_lines(root: Path) -> list[str]:
    """The search's cost (replays, their CPU and wall time, where) and the shadows' table."""
    lines = RunDir(root).committed_lines()
    out: list[str] = []
    costs = [ln.extra["tuning"]["cost"] for ln in lines if "tuning" in ln.extra]
    costs = [c for c in costs if c]
    if costs:
        n = sum(c["replays"] for c in costs)
        shadow = sum(c["from_shadows"] for c in costs)
        cpu = sum(c["replay_cpu_s"] for c in costs)
        wall = sum(c["search_wall_s"] for c in costs)
        where = sorted({c["where"] for c in costs})
        out.append(
            f"walk-forward search: {n} replays ({n / len(costs):.1f} per iteration, "
            f"{shadow} candidates from shadow arms), replay time {cpu:.2f} s, search wall "
            f"time {wall:.2f} s ({wall / len(costs):.2f} s per iteration) over {len(costs)} "
            f"iteration(s); on: {', '.join(where)}"
        )
    shadowed = [ln for ln in lines if ln.extra.get("shadows")]
    if shadowed:
        k = max(len(ln.extra["shadows"]) for ln in shadowed)
        out.append("shadow arms (paper; net_bps over each iteration from the primary's state):")
        out.append(
            f"{'iter':>4} {'primary':>9} " + " ".join(f"{'#' + str(i + 1):>9}" for i in range(k))
        )
        for ln in shadowed:
            nets = [_f(s["net_bps"]) for s in ln.extra["shadows"]]
            out.append(
                f"{ln.iteration:>4} {_f(ln.edge.net_bps):>9} " + " ".join(f"{x:>9}" for x in nets)
            )
        for s in shadowed[-1].extra["shadows"]:
            out.append(f"  #{s['shadow']} in the last iteration: {s['id']}")
    return out
