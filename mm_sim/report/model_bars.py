"""Model error bars: the run's net_bps beside its value under each fill-model alternative.

The alternatives are the model arms the soak ran on the same events (runtime/model_arms.py),
recorded under ``ROOT/models/NAME``. Each arm's figures are computed here from its own
recorded fills and marks, with the same edge code as the primary arm's, over the iterations
both committed; nothing is taken from a report file. The band is [min, max] of net_bps over the
primary and every complete arm (docs/REPORTS.md, "Error bars").
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from mm_sim.config import GatesCfg
from mm_sim.report.edge import headline
from mm_sim.report.parts_memo import parts_of

MODELS_DIR = "models"
ARM_JSON = "arm.json"


def model_error_bars(
    root: Path, net_bps: float | None, iterations: int, gates: GatesCfg
) -> dict[str, Any] | None:
    """``error_bars.model`` of the run in ``root``; None when no arm was run."""
    # the report's own slicing of a run directory
    from mm_sim.report.render import _slices, run_contract_size
    from mm_sim.report.rundir import RunDir

    base = Path(root) / MODELS_DIR
    if not base.is_dir():
        return None
    arms: list[dict[str, Any]] = []
    for d in sorted(p for p in base.iterdir() if (p / ARM_JSON).is_file()):
        meta = json.loads((d / ARM_JSON).read_text())
        row: dict[str, Any] = {
            "arm": d.name,
            "switch": meta.get("switch"),
            "value": meta.get("value"),
            "complete": bool(meta.get("complete")),
            "net_bps": None,
            "delta_bps": None,
            "fills": None,
            "maker_share_pct": None,
        }
        rd = RunDir(d)
        lines = rd.committed_lines()[:iterations] if rd.run_json.exists() else []
        if row["complete"] and len(lines) == iterations and iterations > 0:
            recs = rd.iteration_records(lines)
            parts = parts_of(_slices(recs, lines, run_contract_size(rd)))
            # the totals' headline only: the rest of a section is the primary's business
            totals = headline(parts)
            row["net_bps"] = totals.net_bps
            row["fills"] = totals.fills
            row["maker_share_pct"] = totals.maker_share_pct
            if totals.net_bps is not None and net_bps is not None:
                row["delta_bps"] = totals.net_bps - net_bps
        else:
            row["complete"] = False
        arms.append(row)
    values = [a["net_bps"] for a in arms if a["net_bps"] is not None]
    if net_bps is not None:
        values.append(net_bps)
    return {
        "method": "net_bps of the same soak with one fill-model rule flipped per arm "
        "(docs/REPORTS.md, 'Error bars')",
        "net_bps": net_bps,
        "lo": min(values) if values else None,
        "hi": max(values) if values else None,
        "arms": arms,
    }


def model_bars_md(model: dict[str, Any] | None) -> list[str]:
    """The SOAK_RESULTS.md section of the model error bars."""
    out = ["### Error bars (model)", ""]
    if not model:
        return [*out, "No model arms were run (`soak --model-arms none`).", ""]
    lo, hi = model.get("lo"), model.get("hi")
    out += [
        "net_bps of this run under the other value of each rule that changes it, on the same "
        "events with the same overrides"
        + (f": **{lo:+.3f} to {hi:+.3f}** bps." if lo is not None and hi is not None else "."),
        "",
        "| rule | value in the arm | net_bps | Δ vs this run | fills | maker share |",
        "|---|---|---|---|---|---|",
    ]
    for a in model["arms"]:
        if a["net_bps"] is None:
            why = "undefined (fills without a finite mid)" if a["complete"] else "n/a (incomplete)"
            fills = "" if a["fills"] is None else f"{a['fills']:,}"
            out.append(f"| `{a['switch']}` | {a['value']} | {why} | | {fills} | |")
            continue
        share = "—" if a["maker_share_pct"] is None else f"{a['maker_share_pct']:.1f} %"
        delta = "—" if a["delta_bps"] is None else f"{a['delta_bps']:+.3f}"
        out.append(
            f"| `{a['switch']}` | {a['value']} | {a['net_bps']:+.3f} | {delta} | "
            f"{a['fills']:,} | {share} |"
        )
    return [*out, ""]
