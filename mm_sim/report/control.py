"""Tuned vs frozen: the tuner's real uplift, from the control arm run on the same feed and seed.

Both arms' numbers come from their own committed run directories, so the comparison is rebuilt
by ``mm_sim report`` exactly as the soak wrote it.
"""

from __future__ import annotations

from typing import Any

from mm_sim.events import atomic_write_bytes, atomic_write_json
from mm_sim.report.render import build_reports
from mm_sim.report.rundir import RunDir

COMPARISON_JSON = "CONTROL_COMPARISON.json"
SECTION_TITLE = "## Tuned vs frozen overrides (control arm)"


def _net(v: float | None) -> float | None:
    return None if v is None else float(v)


def comparison(tuned: RunDir, control: RunDir) -> dict[str, Any]:
    t_lines = tuned.committed_lines()
    c_lines = {ln.iteration: ln for ln in control.committed_lines()}
    rows = []
    for ln in t_lines:
        c = c_lines.get(ln.iteration)
        tn = _net(ln.edge.net_bps)
        cn = _net(c.edge.net_bps) if c is not None else None
        rows.append(
            {
                "iteration": ln.iteration,
                "tuned_net_bps": tn,
                "frozen_net_bps": cn,
                "uplift_bps": None if tn is None or cn is None else tn - cn,
                "tuned_pnl": ln.edge.pnl,
                "frozen_pnl": c.edge.pnl if c is not None else None,
                "tuned_fills": ln.edge.fills,
                "frozen_fills": c.edge.fills if c is not None else None,
            }
        )
    return {"schema_version": 1, "kind": "control_comparison", "iterations": rows}


def write_comparison(tuned: RunDir, control: RunDir) -> dict[str, Any]:
    """Write CONTROL_COMPARISON.json and append the comparison table to SOAK_RESULTS.md."""
    data = comparison(tuned, control)
    t_tot = build_reports(control, _profile(control), charts=False)
    data["totals"] = {"frozen_net_bps": t_tot["net_bps"], "frozen_verdict": t_tot["verdict"]}
    tuned_edge = tuned.reports / "EDGE_REPORT.json"
    if tuned_edge.exists():
        import json

        tn = json.loads(tuned_edge.read_text())["totals"]["net_bps"]
        data["totals"]["tuned_net_bps"] = tn
        fn = data["totals"]["frozen_net_bps"]
        data["totals"]["uplift_bps"] = None if tn is None or fn is None else tn - fn
    data["totals"]["uplift_ci"] = uplift_interval(tuned, control)
    atomic_write_json(tuned.reports / COMPARISON_JSON, data)
    md_path = tuned.reports / "SOAK_RESULTS.md"
    if md_path.exists():
        md = md_path.read_text()
        md = md.split("\n" + SECTION_TITLE)[0].rstrip("\n") + "\n\n" + _markdown(data)
        atomic_write_bytes(md_path, md.encode())
    return data["totals"]


def uplift_interval(tuned: RunDir, control: RunDir) -> dict[str, Any]:
    """The interval of tuned minus frozen net_bps: a paired block bootstrap (the same blocks of
    the same events resampled for both arms; ``mm_sim.report.paired``). Its estimate is the
    blocks' own (equal to ``uplift_bps`` up to rounding: the blocks add up to the totals)."""
    from mm_sim.report.paired import arms_difference, run_parts

    cfg = _profile(tuned).gates.error_bars
    iv, blocks = arms_difference(run_parts(tuned), run_parts(control), cfg)
    return {
        "estimate": iv.estimate,
        "lo": iv.lo,
        "hi": iv.hi,
        "confidence": cfg.confidence,
        "blocks": blocks,
        "method": "paired block bootstrap: the same time blocks resampled for both arms",
    }


def _fmt(v: float | None) -> str:
    return "n/a" if v is None else f"{v:+.3f}"


def _markdown(data: dict[str, Any]) -> str:
    out = [
        SECTION_TITLE,
        "",
        "Same feed and seed, overrides frozen at their starting values (`ROOT/control/`).",
        "",
        "| iteration | tuned net_bps | frozen net_bps | uplift bps | tuned fills | frozen fills |",
        "|---|---|---|---|---|---|",
    ]
    for r in data["iterations"]:
        out.append(
            f"| {r['iteration']} | {_fmt(r['tuned_net_bps'])} | {_fmt(r['frozen_net_bps'])} "
            f"| {_fmt(r['uplift_bps'])} | {r['tuned_fills']} | {r['frozen_fills']} |"
        )
    t = data.get("totals", {})
    out.append(
        f"| **total** | {_fmt(t.get('tuned_net_bps'))} | {_fmt(t.get('frozen_net_bps'))} "
        f"| {_fmt(t.get('uplift_bps'))} | | |"
    )
    out += [
        "",
        f"Uplift (tuned − frozen net_bps): {uplift_text(t.get('uplift_bps'), t.get('uplift_ci'))}.",
    ]
    return "\n".join(out) + "\n"


def uplift_text(uplift_bps: float | None, ci: dict[str, Any] | None) -> str:
    """``+0.063 bps, 95 % CI [-0.210, +0.330]`` (or why there is no interval)."""
    if uplift_bps is None:
        return "n/a (an arm without fills)"
    head = f"{uplift_bps:+.3f} bps"
    if not ci or ci.get("lo") is None or ci.get("hi") is None:
        return head + " (no interval: fewer than two time blocks)"
    return f"{head}, {ci['confidence']:.0%} CI [{ci['lo']:+.3f}, {ci['hi']:+.3f}]"


def _profile(rd: RunDir) -> Any:
    from mm_sim.report.runconfig import profile_from_config

    return profile_from_config(rd.load_config(), str(rd.run_json))
