"""The results summary printed at the end of a soak, read back from the written reports.

Printing from the report files (not from in-memory state) guarantees the console says exactly
what EDGE_REPORT.json and KPI_GATE.json say.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, TextIO


def _f(v: Any, fmt: str = "+.3f") -> str:
    return "n/a" if v is None else format(v, fmt)


def _partial_iterations(root: Path) -> set[int]:
    """Iterations committed as partial (metrics.jsonl is the run's record of them)."""
    out: set[int] = set()
    try:
        text = (root / "soak" / "metrics.jsonl").read_text(errors="replace")
    except OSError:
        return out
    for line in text.splitlines():
        try:
            data = json.loads(line)
        except ValueError:
            continue
        if isinstance(data, dict) and data.get("partial"):
            out.add(int(data.get("iteration", -1)))
    return out


def print_summary(outcome: Any, root: Path, out: TextIO) -> None:
    if outcome.interrupted and outcome.iterations_done == 0:
        print(
            "\nstopped before the first chunk was simulated: nothing to report, no reports "
            f"written ({root}; run the same command again, or add --resume)",
            file=out,
        )
        return
    reports = root / "reports"
    edge = json.loads((reports / "EDGE_REPORT.json").read_text())
    gate = json.loads((reports / "KPI_GATE.json").read_text())
    t = edge["totals"]
    print("", file=out)
    print("=" * 78, file=out)
    print(
        f"SOAK RESULTS  verdict {gate['verdict']}  (net_bps band {gate['band']})"
        + ("  [interrupted]" if outcome.interrupted else ""),
        file=out,
    )
    print("=" * 78, file=out)
    print(
        f"net_bps {_f(t['net_bps'])} = gross {_f(t['gross_bps'])} + fees_eff "
        f"{_f(t['fees_eff_bps'])} + slippage {_f(t['slippage_bps'])} + inventory "
        f"{_f(t['inventory_bps'])}   (adverse 1s {_f(t['adverse_bps'])}, not in the sum)",
        file=out,
    )
    money = t.get("money")
    if money:  # inverse: coin figures, their quote-currency values beside
        print(
            f"money in base coin (inverse, {money['contract_size']:g} quote per contract): "
            f"notional {t['notional']:,.8f} coin = {money['notional_quote']:,.2f} quote, "
            f"pnl {_f(t['pnl'], '+,.8f')} coin = {_f(money['pnl_quote'], '+,.2f')} quote "
            f"at mid {_f(money['quote_mid'], ',.2f')}",
            file=out,
        )
    print(
        f"fills {t['fills']:,}  notional {t['notional']:,.2f}  pnl {_f(t['pnl'], '+,.4f')}  "
        f"maker {_f(t['maker_share_pct'], '.1f')}%  cancel_ratio {_f(t['cancel_ratio'], '.3f')}  "
        f"order_age_p95 {_f(t['order_age_p95_ms'], '.0f')} ms",
        file=out,
    )
    print("", file=out)
    print("each iteration on its own (not cumulative):", file=out)
    print(f"{'iter':>4} {'net_bps':>9} {'fills':>7} {'pnl':>11} {'verdict':>8}", file=out)
    verdicts = {v["iteration"]: v["verdict"] for v in gate.get("iterations", [])}
    partial = _partial_iterations(root)
    for it in edge["iterations"]:
        print(
            f"{it['iteration']:>4} {_f(it['net_bps']):>9} {it['fills']:>7} "
            f"{_f(it['pnl'], '+.4f'):>11} {verdicts.get(it['iteration'], '-'):>8}"
            + ("  (partial)" if it["iteration"] in partial else ""),
            file=out,
        )
    if partial:
        which = ", ".join(str(i) for i in sorted(partial))
        print(
            f"partial iterations: {which} (shorter than --iteration-minutes: the feed ended or "
            "the run was interrupted; the verdict covers them as recorded)",
            file=out,
        )
    drivers = ", ".join(d["name"] for d in t.get("neg_edge_drivers", [])) or "none"
    print(f"\nnegative-edge drivers: {drivers}", file=out)
    blocks = t.get("block_reasons", {})
    if blocks.get("attempts"):
        parts = [f"{k} {blocks['ratios'].get(k, 0):.1%}" for k in blocks.get("counts", {})]
        print(f"block ratios (of {blocks['attempts']:,} attempts): {', '.join(parts)}", file=out)
    changes = [d for d in outcome.decisions if d.field is not None and d.driver != "operator"]
    print(f"tuner changes: {len(changes)}", file=out)
    from mm_sim.tuning.record import summary_lines

    for line in summary_lines(root):
        print(line, file=out)
    by_hand = [d for d in outcome.decisions if d.driver == "operator"]
    if by_hand:
        print(
            f"operator changes: {len(by_hand)} ("
            + ", ".join(f"{d.field} {d.old:g} -> {d.new:g}" for d in by_hand)
            + ")",
            file=out,
        )
    final = outcome.final
    if final.get("control"):
        from mm_sim.report.control import uplift_text

        c = final["control"]
        print(
            f"control arm (overrides frozen): net_bps {_f(c.get('frozen_net_bps'))}, "
            f"tuner uplift {uplift_text(c.get('uplift_bps'), c.get('uplift_ci'))}",
            file=out,
        )
    if final.get("outages"):
        which = ", ".join(str(i) for i in final["outages"])
        print(
            f"FEED OUTAGE: no events in iteration(s) {which}; their figures describe a market "
            "nobody saw (exit status 3)",
            file=out,
        )
    if final.get("note"):
        print(f"note: {final['note']}", file=out)
    failed = gate.get("hard_failed", [])
    if failed:
        print(f"hard gates failed: {', '.join(failed)}", file=out)
    print(f"\nnext step: {gate['next_step']}", file=out)
    print(f"reports: {reports}/SOAK_RESULTS.md (and EDGE_REPORT.json, KPI_GATE.json)", file=out)
