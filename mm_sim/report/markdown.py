"""SOAK_RESULTS.md sections for error bars, order churn and the venue's rules.

Kept apart from render.py so the pipeline module stays about the pipeline; every figure shown
here is read from the EdgeReport / KpiGate models, never recomputed.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime

from mm_sim.report.model_bars import model_bars_md
from mm_sim.report.schema import EdgeReport, EdgeSection, KpiGate

FIGURE_LABELS = {
    "net_bps": "**net**",
    "gross_bps": "gross",
    "slippage_bps": "slippage",
    "fees_eff_bps": "fees_eff",
    "inventory_bps": "inventory",
    "adverse_bps": "adverse (1 s markout, not in net)",
}


def _n(v: float | None, d: int = 3) -> str:
    return "—" if v is None else f"{v:,.{d}f}"


def _table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> list[str]:
    out = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    out += ["| " + " | ".join(r) + " |" for r in rows]
    return [*out, ""]


def band_note(gate: KpiGate) -> str:
    """One sentence: is the band decision significant at the statistical interval?"""
    bd = gate.band_decision
    if bd is None or bd.band_lo is None:
        return "Band decision: no statistical interval (too little data)."
    if bd.significant:
        return f"Band decision significant: the whole net_bps interval lies in {bd.band}."
    return (
        f"Band decision **not significant**: the net_bps interval spans {bd.band_lo} to "
        f"{bd.band_hi}."
    )


def error_bars_md(edge: EdgeReport) -> list[str]:
    st = edge.error_bars.statistical
    out = ["### Error bars (statistical)", ""]
    if st is None:
        return [*out, "Not computed.", ""]
    pct = f"{st.confidence:.0%}"
    if st.note:
        out += [st.note + ".", ""]
    else:
        out += [
            f"{pct} intervals by a block bootstrap over time: {st.blocks} blocks of "
            f"{st.block_s:g} s (configured {st.block_s_configured:g} s), {st.resamples:,} "
            f"resamples, seed {st.seed}; blocks reconcile with the totals to "
            f"{(st.reconcile_residual or 0.0):.3e} (quote). See docs/REPORTS.md.",
            "",
        ]
    out += _table(
        ("figure", "estimate bps", f"{pct} low", f"{pct} high", "std. error"),
        [
            (FIGURE_LABELS[k], _n(v.estimate), _n(v.lo), _n(v.hi), _n(v.se))
            for k, v in st.figures.items()
        ],
    )
    return out + model_bars_md(edge.error_bars.model)


def _ts(ns: int | None) -> str:
    if ns is None:
        return "—"
    return datetime.fromtimestamp(ns / 1e9, UTC).strftime("%Y-%m-%d %H:%M")


def churn_md(t: EdgeSection, iterations: Sequence[EdgeSection]) -> list[str]:
    o = t.orders
    out = ["## Order churn and the venue's rules", ""]
    vr = t.venue_rules
    if o is None or vr is None:
        return [*out, "Not computed for this run.", ""]
    out += [
        f"{o.sent:,} orders sent (places {t.actions.place:,} + replaces {t.actions.replace:,}); "
        f"ended by cancel {o.ended_by_cancel:,}, by replace {o.ended_by_replace:,}, by fill "
        f"{o.ended_by_fill:,}; open at the end {o.open_at_end:,}; replaces rejected (order "
        f"already filled) {o.rejected:,}; cancels that lost the race {o.lost_cancels:,}. "
        f"**cancel_ratio {_n(t.cancel_ratio)}** (orders ended by cancel or replace ÷ orders "
        f"sent); cancels ÷ all actions {_n(t.cancel_action_share)}. Post-only rejections: "
        f"{t.post_only_rejected:,}"
        + (
            f" ({t.post_only_rejected_share:.2%} of orders sent)."
            if t.post_only_rejected_share is not None
            else "."
        ),
        "",
    ]
    out += [
        f"Binance Futures quantitative rules, per {vr.cycle_s:g} s cycle "
        f"({len(vr.cycles)} cycles with orders; invalid cancel < {vr.invalid_cancel_s:g} s, "
        f"dust < {vr.dust_notional:g} quote). A cycle is judged from the recording threshold "
        "on; a judged cycle at or above the ban threshold fails the hard gate.",
        "",
    ]
    out += _table(
        (
            "rule",
            "worst cycle",
            "worst cycle start (UTC)",
            "mean",
            "recording ≥ orders",
            "cycles judged",
            "ban ≥",
            "cycles banned",
        ),
        [
            (
                f"{ind.name} ({key})",
                _n(ind.worst, 4),
                _ts(ind.worst_cycle_start_ns),
                _n(ind.mean, 4),
                f"{ind.recording_orders:,}",
                str(ind.cycles_recorded),
                f"{ind.ban:g}",
                f"**{ind.cycles_banned}**" if ind.cycles_banned else "0",
            )
            for key, ind in vr.indicators.items()
        ],
    )
    rows = []
    for s in iterations:
        if s.venue_rules is None or s.orders is None:
            continue
        ind = s.venue_rules.indicators
        rows.append(
            (
                str(s.iteration),
                f"{s.orders.sent:,}",
                _n(s.cancel_ratio),
                _n(ind["UFR"].worst, 4),
                _n(ind["ICR"].worst, 4),
                _n(ind["DR"].worst, 4),
                f"{s.post_only_rejected:,}",
            )
        )
    if rows:
        out += _table(
            (
                "it",
                "orders sent",
                "cancel_ratio",
                "UFR worst",
                "ICR worst",
                "DR worst",
                "post-only rejected",
            ),
            rows,
        )
    return out
