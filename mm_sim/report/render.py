"""From the run directory to every artifact: the one code path for the runner and the CLI.

``evaluate_pending`` turns the records appended since the last commit into that iteration's
edge section and gate result (what the tuner reads and the metrics line stores);
``build_reports`` re-reads everything committed and rewrites EDGE_REPORT.json, KPI_GATE.json,
soak_metrics.json, fills.csv, the PNG charts and SOAK_RESULTS.md. Both are deterministic
functions of the directory's contents (no clocks, no randomness), so ``mm_sim report RUN_DIR``
reproduces the runner's files byte for byte.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from mm_sim.config import Profile
from mm_sim.errors import UserError
from mm_sim.events import atomic_write_bytes, atomic_write_json
from mm_sim.feeds.clock import clock_line
from mm_sim.logs import get_logger
from mm_sim.report.bootstrap import statistical_error_bars
from mm_sim.report.charts import CHARTS, chart_figures, png, run_chart_options
from mm_sim.report.currency import currencies
from mm_sim.report.edge import (
    GATE_HORIZON_MS,
    HORIZONS_MS,
    Slice,
    chain_states,
    horizon_key,
    section,
)
from mm_sim.report.gate import evaluate, kpi_gate
from mm_sim.report.inverse import contract_size_of, inverse_note
from mm_sim.report.markdown import band_note, churn_md, error_bars_md
from mm_sim.report.model_bars import model_error_bars
from mm_sim.report.parts_memo import iteration_sections, keyed_parts
from mm_sim.report.rundir import RECORD_DTYPES, PendingIteration, RunDir
from mm_sim.report.schema import (
    EdgeReport,
    EdgeSection,
    ErrorBars,
    IterationLine,
    KpiGate,
    RunConfig,
    RunIdentity,
    SoakMetrics,
    dump,
)

EDGE_REPORT = "EDGE_REPORT.json"
KPI_GATE = "KPI_GATE.json"
SOAK_METRICS = "soak_metrics.json"
SOAK_RESULTS = "SOAK_RESULTS.md"


# --------------------------------------------------------------------------------------------
# Evaluation
# --------------------------------------------------------------------------------------------


def run_contract_size(rd: RunDir) -> float:
    """C of the run's instrument if it is inverse (run.json ``instrument``), else 0."""
    return contract_size_of((rd.load_config().model_extra or {}).get("instrument"))


def _slices(
    recs: Sequence[dict[str, np.ndarray]], lines: Sequence[IterationLine], csize: float = 0.0
) -> list[Slice]:
    states = chain_states([r["marks"] for r in recs], csize)
    return [
        Slice(
            iteration=ln.iteration,
            fills=r["fills"],
            actions=r["actions"],
            blocks=r["blocks"],
            marks=r["marks"],
            start=st[0],
            ws_lag_p95_ms=ln.ws_lag_p95_ms,
            # The count the runner gave at commit time lives in the committed line.
            post_only_rejected=ln.edge.post_only_rejected,
            contract_size=csize,
        )
        for r, ln, st in zip(recs, lines, states, strict=True)
    ]


def evaluate_pending(
    rd: RunDir,
    profile: Profile,
    iteration: int,
    ws_lag_p95_ms: float | None,
    post_only_rejected: int | None = None,
) -> PendingIteration:
    """Edge and gates of the records appended since the last commit (nothing is written).

    The iteration starts from the state at the last committed mark, exactly as the rebuilt
    report will see it, so the committed line and EDGE_REPORT.json agree to the last bit.
    A NaN or infinite ``ws_lag_p95_ms`` (no lag measured) is stored as ``None``.
    ``post_only_rejected``: the venue's post-only rejections during the iteration, as the
    engine counted them (used when the action records carry no rejection code).
    """
    if ws_lag_p95_ms is not None and not math.isfinite(ws_lag_p95_ms):
        ws_lag_p95_ms = None
    lines = rd.committed_lines()
    committed_marks = [r["marks"] for r in rd.iteration_records(lines, ("marks",))]
    base = lines[-1].offsets if lines else dict.fromkeys(RECORD_DTYPES, 0)
    sizes = rd.sizes()
    pending = {name: rd.read_records(name, base[name], sizes[name]) for name in RECORD_DTYPES}
    csize = run_contract_size(rd)
    start = chain_states([*committed_marks, pending["marks"]], csize)[-1][0]
    sl = Slice(
        iteration=iteration,
        fills=pending["fills"],
        actions=pending["actions"],
        blocks=pending["blocks"],
        marks=pending["marks"],
        start=start,
        ws_lag_p95_ms=ws_lag_p95_ms,
        post_only_rejected=post_only_rejected,
        contract_size=csize,
    )
    g = profile.gates
    (sec,) = iteration_sections(keyed_parts([sl]), g.hard.adverse_p95_max, g.venue_rules)
    return PendingIteration(
        iteration=iteration,
        edge=sec,
        gate=evaluate(sec, profile.gates),
        offsets=sizes,
        ws_lag_p95_ms=ws_lag_p95_ms,
    )


log = get_logger("mm_sim.report")


def build_reports(
    rd: RunDir, profile: Profile, charts: bool = True, fills_csv: bool = True
) -> dict[str, Any]:
    """(Re)build every report from the committed data in ``rd``; returns a short summary.

    ``fills_csv=False`` leaves soak/fills.csv unwritten (a sweep cell that drops its records
    afterwards, fills.csv with them); the summary counts the fills all the same."""
    cfg = rd.load_config()
    lines = rd.committed_lines()
    recs = rd.iteration_records(lines)
    csize = contract_size_of((cfg.model_extra or {}).get("instrument"))
    keyed = keyed_parts(_slices(recs, lines, csize))
    parts = [p for _, p in keyed]
    g = profile.gates
    iters = iteration_sections(keyed, g.hard.adverse_p95_max, g.venue_rules)
    totals = section(parts, None, g.hard.adverse_p95_max, g.venue_rules)
    stat = statistical_error_bars(parts, totals, g)
    edge = EdgeReport(
        run=RunIdentity(profile=str(cfg.profile.get("name", "")), feed=cfg.feed, seed=cfg.seed),
        horizons_ms=list(HORIZONS_MS),
        gate_horizon_ms=GATE_HORIZON_MS,
        totals=totals,
        iterations=iters,
        error_bars=ErrorBars(
            statistical=stat, model=model_error_bars(rd.root, totals.net_bps, len(lines), g)
        ),
    )
    outages = [ln.iteration for ln in lines if ln.extra.get("outage")]
    partial = [ln.iteration for ln in lines if ln.partial]
    gate = kpi_gate(totals, iters, g, stat.band_decision, outages, partial)
    if rd.reports.exists() and not rd.reports.is_dir():
        raise UserError(f"{rd.reports}: is a file, expected the run's reports folder")
    rd.reports.mkdir(parents=True, exist_ok=True)
    atomic_write_json(rd.reports / EDGE_REPORT, dump(edge))
    atomic_write_json(rd.reports / KPI_GATE, dump(gate))
    # The records' digests guard metrics.jsonl against changed records; the report's copy of
    # the lines leaves them out (and stays the bytes it was for runs written before them).
    metrics = SoakMetrics(iterations=lines).model_dump(
        mode="json", exclude={"iterations": {"__all__": {"digests"}}}
    )
    atomic_write_json(rd.reports / SOAK_METRICS, metrics)
    rows = rd.write_fills_csv(lines) if fills_csv else sum(len(r["fills"]) for r in recs)
    files = [EDGE_REPORT, KPI_GATE, SOAK_METRICS, SOAK_RESULTS]
    chart_error = None
    if charts:
        marks = [r["marks"] for r in recs]
        try:
            figs = chart_figures(marks, iters, profile, lines, **run_chart_options(cfg))
            pngs = {key: png(fig) for key, fig in figs.items()}
        except Exception as exc:  # a picture must not cost the run its reports
            # The numbers are in the JSON and markdown reports; a chart the renderer cannot
            # draw (matplotlib has failed on extreme data: "raster overflow") is said, not fatal.
            chart_error = f"{type(exc).__name__}: {exc}"[:300]
            log.warning("charts not drawn", error=chart_error)
            pngs = {}
        for key, data in pngs.items():
            atomic_write_bytes(rd.reports / CHARTS[key][0], data)
            files.append(CHARTS[key][0])
    md = render_markdown(cfg, edge, gate, lines, charts, chart_error)
    atomic_write_bytes(rd.reports / SOAK_RESULTS, md.encode())
    return {
        "verdict": gate.verdict,
        "band": gate.band,
        "net_bps": totals.net_bps,
        "fills": totals.fills,
        "iterations": len(lines),
        "fills_csv_rows": rows,
        "reports": [str(rd.reports / f) for f in files],
        "next_step": gate.next_step,
        "net_bps_ci": [stat.figures["net_bps"].lo, stat.figures["net_bps"].hi],
        "band_significant": stat.band_decision.significant,
        "cancel_ratio": totals.cancel_ratio,
        "clock_error": gate.clock_error,
    }


# --------------------------------------------------------------------------------------------
# Markdown
# --------------------------------------------------------------------------------------------


def _n(v: float | int | None, d: int = 3) -> str:
    if v is None:
        return "—"
    if isinstance(v, int):
        return f"{v:,}"
    return f"{v:,.{d}f}"


def _ts(ns: int | None) -> str:
    if ns is None:
        return "—"
    return datetime.fromtimestamp(ns / 1e9, UTC).isoformat(timespec="milliseconds")


def _table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> list[str]:
    out = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    out += ["| " + " | ".join(r) + " |" for r in rows]
    return [*out, ""]


def render_markdown(
    cfg: RunConfig,
    edge: EdgeReport,
    gate: KpiGate,
    lines: Sequence[IterationLine],
    charts: bool,
    chart_error: str | None = None,
) -> str:
    t = edge.totals
    feed = cfg.feed.get("name") or cfg.feed.get("path") or "?"
    out = [
        f"# Soak results — profile {edge.run.profile}, feed {feed}, seed {cfg.seed}",
        "",
        clock_line(cfg.feed),
        "",
        f"**Verdict: {gate.verdict}** (net_bps band {gate.band}) — net_bps {_n(t.net_bps)} "
        f"over {t.fills:,} fills, notional {_n(t.notional, 2)}, "
        f"PnL {_n(t.pnl, 4)}, {len(lines)} iterations"
        + (
            f", {len(gate.partial_iterations)} of them cut short (iteration "
            f"{', '.join(str(i) for i in gate.partial_iterations)})."
            if gate.partial_iterations
            else "."
        ),
        "",
        *inverse_note(t.money, t.pnl, t.notional),
        band_note(gate),
        "",
        f"**Next step:** {gate.next_step}",
        "",
        f"Rule: {gate.rule}.",
        "",
        "## Gates",
        "",
    ]
    out += _table(
        ("gate", "kind", "metric", "needs", "ideal", "value", "status"),
        [
            (
                c.name,
                c.kind,
                c.metric,
                f"{c.op} {c.threshold:g}",
                "—" if c.ideal is None else f"{c.op} {c.ideal:g}",
                _n(c.value),
                c.status,
            )
            for c in gate.hard + gate.soft
        ],
    )
    out += ["## Edge breakdown (all iterations)", ""]
    a = t.amounts
    out += _table(
        ("component", "bps of notional", f"amount ({money_name(cfg, t)})"),
        [
            ("gross", _n(t.gross_bps), _n(a.gross, 6)),
            ("slippage", _n(t.slippage_bps), _n(a.slippage, 6)),
            ("fees_eff", _n(t.fees_eff_bps), _n(a.fees_eff, 6)),
            ("inventory", _n(t.inventory_bps), _n(a.inventory, 6)),
            ("**net**", f"**{_n(t.net_bps)}**", f"**{_n(a.net, 6)}**"),
            ("PnL from the account (check)", "", _n(t.pnl, 6)),
            (
                "residual (PnL − net)",
                "",
                "—" if t.pnl_residual is None else f"{t.pnl_residual:.3e}",
            ),
        ],
    )
    out += error_bars_md(edge)
    out += ["Markouts (informational, not in net):", ""]
    out += _table(
        ("horizon", "fills covered", "adverse_bps", "cost p50 bps", "cost p95 bps"),
        [
            (
                horizon_key(h),
                _n(m.fills_covered),
                _n(m.adverse_bps),
                _n(m.cost_p50_bps),
                _n(m.cost_p95_bps),
            )
            for h in edge.horizons_ms
            for m in [t.adverse[horizon_key(h)]]
        ],
    )
    out += ["## Per iteration", ""]
    partial = {ln.iteration for ln in lines if ln.partial}
    verdicts = {v.iteration: v.verdict for v in gate.iterations}
    out += _table(
        (
            "it",
            "fills",
            "notional",
            "PnL",
            "net_bps",
            "gross",
            "slippage",
            "fees_eff",
            "inventory",
            "maker %",
            "cancel ratio",
            f"adverse p95 ({horizon_key(edge.gate_horizon_ms)})",
            "slip cost p95",
            "order age p95 ms",
            "ws lag p95 ms",
            "verdict",
        ),
        [
            (
                f"{s.iteration}{' (partial)' if s.iteration in partial else ''}",
                _n(s.fills),
                _n(s.notional, 2),
                _n(s.pnl, 4),
                _n(s.net_bps),
                _n(s.gross_bps),
                _n(s.slippage_bps),
                _n(s.fees_eff_bps),
                _n(s.inventory_bps),
                _n(s.maker_share_pct, 1),
                _n(s.cancel_ratio),
                _n(s.adverse_cost_p95_bps),
                _n(s.slippage_cost_p95_bps),
                _n(s.order_age_p95_ms, 1),
                _n(s.ws_lag_p95_ms, 1),
                verdicts.get(s.iteration if s.iteration is not None else -1, "—"),
            )
            for s in edge.iterations
        ],
    )
    out += churn_md(t, edge.iterations)
    out += ["## Negative-edge drivers", ""]
    out += [*_drivers_md(t), ""]
    rows = []
    for s in edge.iterations:
        names = ", ".join(d.name for d in s.neg_edge_drivers) or "none"
        rows.append((str(s.iteration), names))
    if rows:
        out += _table(("it", "drivers (most harmful first)"), rows)
    out += ["## Block reasons", ""]
    br = t.block_reasons
    out += [f"{br.attempts:,} attempted order actions in total.", ""]
    reasons = list(br.counts)
    out += _table(
        ("reason", "count", "ratio of attempts", *[f"it {s.iteration}" for s in edge.iterations]),
        [
            (
                r,
                _n(br.counts[r]),
                _n(br.ratios[r]),
                *[_n(s.block_reasons.ratios.get(r, 0.0)) for s in edge.iterations],
            )
            for r in reasons
        ],
    )
    out += ["## Overrides history", ""]
    out += _overrides_md(cfg, lines)
    if charts:
        out += ["## Charts", ""]
        if chart_error is None:
            out += [f"![{title}]({name})" for name, title in CHARTS.values()]
        else:
            out += [f"Not drawn: the renderer failed ({chart_error}); the figures above are whole."]
        out += [""]
    return "\n".join(out)


def _drivers_md(sec: EdgeSection) -> list[str]:
    if not sec.neg_edge_drivers:
        return ["None: no component is negative, no threshold is exceeded."]
    out = []
    for i, d in enumerate(sec.neg_edge_drivers, 1):
        if d.kind == "component":
            out.append(f"{i}. `{d.name}` {d.value:.3f} bps")
        elif d.kind == "markout":
            out.append(f"{i}. `{d.name}`: cost p95 {d.value:.3f} bps > {d.threshold:g}")
        else:
            out.append(f"{i}. block `{d.name}`: {d.value:.1%} of attempts > {d.threshold:.0%}")
    return out


def _overrides_md(cfg: RunConfig, lines: Sequence[IterationLine]) -> list[str]:
    fields = list(cfg.initial_overrides)
    out = _table(
        ("in force", *fields),
        [("start", *[f"{cfg.initial_overrides[f]:g}" for f in fields])]
        + [
            (f"end of it {ln.iteration}", *[f"{ln.overrides.get(f, math.nan):g}" for f in fields])
            for ln in lines
        ],
    )
    decisions = [d for ln in lines for d in ln.decisions]
    if not decisions:
        return [*out, "No tuner decisions recorded.", ""]
    out += _table(
        ("it", "sim time", "driver", "field", "old", "new", "reason"),
        [
            (
                str(d.iteration),
                _ts(d.sim_ts),
                d.driver,
                d.field or "—",
                "—" if d.old is None else f"{d.old:g}",
                "—" if d.new is None else f"{d.new:g}",
                d.reason.replace("|", "/"),
            )
            for d in decisions
        ],
    )
    return out


def money_name(cfg: RunConfig, totals: EdgeSection) -> str:
    """What the run's money figures are in, named (USDT; BTC for an inverse BTCUSD_PERP)."""
    return currencies((cfg.model_extra or {}).get("instrument"), totals.money is not None).money


def report_paths(root: Path) -> list[Path]:
    """Every file ``build_reports`` writes under ``root``."""
    rd = RunDir(root)
    names = [EDGE_REPORT, KPI_GATE, SOAK_METRICS, SOAK_RESULTS] + [n for n, _ in CHARTS.values()]
    return [rd.reports / n for n in names] + [rd.fills_csv]
