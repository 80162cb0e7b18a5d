"""KPI gate: the seed's hard and soft gates and its decision matrix on net_bps.

Verdict rule: the band of net_bps (``>= success`` SUCCESS, ``>= ok`` OK, ``>= warn`` WARN, else
FAIL; boundaries belong to the higher band) — unless a hard gate fails, in which case the verdict
is FAIL whatever the band. Hard gates are the seed's "must pass" list: a run with too much churn,
adverse selection or taker flow is not acceptable because its average edge happens to look good,
so the band is reported next to the verdict (``band``) but cannot rescue it. Soft gates never
change the verdict; the ones missed are listed and named in the next-step text. A metric that
is undefined (no fills, no feed lag) fails its gate with status ``NO_DATA``.

Two rules are not plain thresholds. The venue's churn rules (Binance Futures' quantitative
rules) are hard gates judged per cycle: a cycle whose order count is below a rule's recording
threshold is not judged (``NOT_RECORDED`` passes), a judged cycle at or above the ban ratio
fails. A negative feed lag is a clock error, not a fast feed: the ws_lag gate says
``CLOCK_ERROR`` and the verdict is capped at WARN, because every latency-dependent figure of
the run (entry and cancel timing, fill reports, maker share) rests on a wrong clock.
"""

from __future__ import annotations

import operator
from collections.abc import Sequence

from mm_sim.config import GatesCfg
from mm_sim.report.schema import (
    BandSignificance,
    EdgeSection,
    GateCheck,
    GateResult,
    IterationVerdict,
    KpiGate,
    Verdict,
)

RULE = (
    "verdict = band of net_bps (>= success: SUCCESS, >= ok: OK, >= warn: WARN, else FAIL); "
    "any failed hard gate makes the verdict FAIL; a clock error (negative feed lag) caps it "
    "at WARN; other soft gates never change it"
)
CLOCK_NEXT_STEP = (
    "Clock error: the feed's local-minus-exchange lag is negative, so its recorder clock is "
    "behind the exchange; convert or replay the feed with its clock model (a shifted clock) "
    "and re-run before trusting any latency-dependent figure."
)
_RANK = {"FAIL": 0, "WARN": 1, "OK": 2, "SUCCESS": 3}

NEXT_STEPS: dict[str, str] = {
    "SUCCESS": "Run the 24h stability soak.",
    "OK": "Apply 1-2 targeted adjustments, then re-run the 3h soak.",
    "WARN": "Apply the targeted package for the top driver, then re-run the 3h soak.",
    "FAIL": "Review the block reasons and the edge breakdown, investigate, then re-run.",
}

_OPS = {">=": operator.ge, "<=": operator.le, "<": operator.lt}


def band_of(net_bps: float | None, gates: GatesCfg) -> Verdict:
    b = gates.bands
    if net_bps is None:
        return "FAIL"
    if net_bps >= b.success:
        return "SUCCESS"
    if net_bps >= b.ok:
        return "OK"
    if net_bps >= b.warn:
        return "WARN"
    return "FAIL"


def _check(
    name: str,
    kind: str,
    metric: str,
    op: str,
    threshold: float,
    ideal: float | None,
    value: float | None,
) -> GateCheck:
    cmp = _OPS[op]
    if value is None:
        passed, status = False, "NO_DATA"
    else:
        passed = bool(cmp(value, threshold))
        if not passed:
            status = "FAIL"
        elif ideal is not None and cmp(value, ideal):
            status = "IDEAL"
        else:
            status = "PASS"
    return GateCheck(
        name=name,
        kind=kind,
        metric=metric,
        op=op,
        threshold=threshold,
        ideal=ideal,
        value=value,
        passed=passed,
        status=status,
    )


def _rule_checks(sec: EdgeSection) -> list[GateCheck]:
    """One hard check per venue rule: no judged cycle at or above its ban ratio.

    ``value`` is the worst judged cycle's ratio; no judged cycle passes as ``NOT_RECORDED``.
    A section without rule figures (a sweep row written before they existed) is not judged.
    """
    rules = getattr(sec, "venue_rules", None)
    if rules is None:
        return []
    out = []
    for key, ind in rules.indicators.items():
        recorded = ind.cycles_recorded > 0
        passed = ind.cycles_banned == 0
        out.append(
            GateCheck(
                name=f"binance_{key.lower()}",
                kind="hard",
                metric=f"venue_rules.indicators.{key}.worst_recorded",
                op="<",
                threshold=ind.ban,
                ideal=None,
                value=ind.worst_recorded,
                passed=passed,
                status=("PASS" if passed else "FAIL") if recorded else "NOT_RECORDED",
            )
        )
    return out


def _ws_lag_check(sec: EdgeSection, gates: GatesCfg) -> GateCheck:
    s = gates.soft
    c = _check(
        "ws_lag_p95_ms",
        "soft",
        "ws_lag_p95_ms",
        "<=",
        s.ws_lag_p95_max_ms,
        s.ws_lag_p95_ideal_ms,
        sec.ws_lag_p95_ms,
    )
    if getattr(sec, "clock_error", False) or (c.value is not None and c.value < 0):
        return c.model_copy(update={"passed": False, "status": "CLOCK_ERROR"})
    return c


def checks(sec: EdgeSection, gates: GatesCfg) -> tuple[list[GateCheck], list[GateCheck]]:
    """(hard, soft) gate checks of one section (an iteration or the totals)."""
    h, s = gates.hard, gates.soft
    hard = [
        _check("net_bps_total", "hard", "net_bps", ">=", h.net_bps_min, None, sec.net_bps),
        _check(
            "adverse_p95",
            "hard",
            "adverse_cost_p95_bps",
            "<=",
            h.adverse_p95_max,
            None,
            sec.adverse_cost_p95_bps,
        ),
        _check(
            "cancel_ratio", "hard", "cancel_ratio", "<=", h.cancel_ratio_max, None, sec.cancel_ratio
        ),
        _check(
            "maker_share",
            "hard",
            "maker_share_pct",
            ">=",
            h.maker_share_min_pct,
            None,
            sec.maker_share_pct,
        ),
        *_rule_checks(sec),
    ]
    soft = [
        _check("net_bps", "soft", "net_bps", ">=", s.net_bps_min, s.net_bps_ideal, sec.net_bps),
        _check(
            "slippage_p95",
            "soft",
            "slippage_cost_p95_bps",
            "<=",
            s.slippage_p95_max,
            s.slippage_p95_ideal,
            sec.slippage_cost_p95_bps,
        ),
        _check(
            "order_age_p95_ms",
            "soft",
            "order_age_p95_ms",
            "<=",
            s.order_age_p95_max_ms,
            s.order_age_p95_ideal_ms,
            sec.order_age_p95_ms,
        ),
        _ws_lag_check(sec, gates),
        _check(
            "maker_share",
            "soft",
            "maker_share_pct",
            ">=",
            s.maker_share_min_pct,
            s.maker_share_ideal_pct,
            sec.maker_share_pct,
        ),
    ]
    return hard, soft


def _fmt(v: float | None) -> str:
    return "n/a" if v is None else f"{v:.3f}"


def next_step(verdict: str, hard: list[GateCheck], soft: list[GateCheck], sec: EdgeSection) -> str:
    """The decision matrix's step for ``verdict``, made concrete with what failed and why."""
    parts = [NEXT_STEPS[verdict]]
    if any(c.status == "CLOCK_ERROR" for c in soft):
        parts.append(CLOCK_NEXT_STEP)
    failed_hard = [c for c in hard if not c.passed]
    if failed_hard:
        parts.append(
            "Failed hard gates: "
            + ", ".join(
                f"{c.name} {_fmt(c.value)} (needs {c.op} {c.threshold:g})" for c in failed_hard
            )
            + "."
        )
    if sec.neg_edge_drivers:
        parts.append(
            "Negative-edge drivers: "
            + ", ".join(
                f"{d.name} {d.value:.3f}{' bps' if d.unit == 'bps' else ''}"
                for d in sec.neg_edge_drivers
            )
            + "."
        )
    missed = [c for c in soft if not c.passed]
    if missed:
        parts.append(
            "Soft gates missed: "
            + ", ".join(f"{c.name} {_fmt(c.value)} (target {c.op} {c.threshold:g})" for c in missed)
            + "."
        )
    return " ".join(parts)


def evaluate(sec: EdgeSection, gates: GatesCfg) -> GateResult:
    """Gate one section; used per iteration (metrics.jsonl) and on the totals (KPI_GATE.json)."""
    hard, soft = checks(sec, gates)
    band = band_of(sec.net_bps, gates)
    hard_failed = [c.name for c in hard if not c.passed]
    verdict: Verdict = "FAIL" if hard_failed else band
    clock_error = any(c.status == "CLOCK_ERROR" for c in soft)
    if clock_error and _RANK[verdict] > _RANK["WARN"]:
        verdict = "WARN"
    return GateResult(
        verdict=verdict,
        band=band,
        net_bps=sec.net_bps,
        clock_error=clock_error,
        hard_failed=hard_failed,
        soft_failed=[c.name for c in soft if not c.passed],
        checks=hard + soft,
        next_step=next_step(verdict, hard, soft, sec),
    )


def kpi_gate(
    totals: EdgeSection,
    iterations: Sequence[EdgeSection],
    gates: GatesCfg,
    band_decision: BandSignificance | None = None,
    outages: Sequence[int] = (),
    partial: Sequence[int] = (),
) -> KpiGate:
    """KPI_GATE.json: the totals gated, plus each iteration's verdict.

    ``band_decision``: whether the band of net_bps holds over its statistical interval.
    ``outages``: iterations in which the feed delivered no event at all (a live feed down, or
    a gap in the data). Such a run's figures cover less than it says, so the ``feed_outage``
    hard gate fails it, naming them (docs/REPORTS.md, section 3).
    ``partial``: iterations cut short (a stored feed that ended first, an interrupt). They are
    judged as recorded, and the verdict's next step says which they are, so a shorter run is
    never read as a whole one.
    """
    res = evaluate(totals, gates)
    if outages:
        gone = ", ".join(str(i) for i in outages)
        check = GateCheck(
            name="feed_outage", kind="hard", metric="iterations_without_events", op="<=",
            threshold=0.0, ideal=None, value=float(len(outages)), passed=False, status="FAIL",
        )  # fmt: skip
        res = res.model_copy(
            update={
                "verdict": "FAIL",
                "hard_failed": [*res.hard_failed, check.name],
                "checks": [check, *res.checks],
                "next_step": f"The feed delivered no event in iteration(s) {gone}: check the "
                f"feed (connection, data gap) and re-run; the figures cover only the rest. "
                + res.next_step,
            }
        )
    if partial:
        cut = ", ".join(str(i) for i in partial)
        res = res.model_copy(
            update={
                "next_step": f"Iteration(s) {cut} ran shorter than asked (the feed ended or the "
                "run was interrupted); the verdict covers them as recorded. " + res.next_step
            }
        )
    per_iter = []
    for sec in iterations:
        r = evaluate(sec, gates)
        per_iter.append(
            IterationVerdict(
                iteration=sec.iteration if sec.iteration is not None else -1,
                verdict=r.verdict,
                band=r.band,
                net_bps=r.net_bps,
                hard_failed=r.hard_failed,
                partial=sec.iteration in partial,
            )
        )
    return KpiGate(
        verdict=res.verdict,
        band=res.band,
        net_bps=res.net_bps,
        clock_error=res.clock_error,
        band_decision=band_decision,
        bands=gates.bands.model_dump(),
        rule=RULE,
        hard_failed=res.hard_failed,
        soft_failed=res.soft_failed,
        hard=[c for c in res.checks if c.kind == "hard"],
        soft=[c for c in res.checks if c.kind == "soft"],
        next_step=res.next_step,
        iterations=per_iter,
        partial_iterations=list(partial),
    )
