"""KPI gate: the decision matrix at each band boundary, hard-gate capping, soft statuses."""

from __future__ import annotations

import pytest
from test_edge import simulate_run

from mm_sim.config import DecisionBands, GatesCfg, HardGates, Profile
from mm_sim.report.edge import edge_sections
from mm_sim.report.gate import NEXT_STEPS, band_of, evaluate, kpi_gate
from mm_sim.report.schema import EdgeSection, KpiGate

GATES = Profile().gates


@pytest.fixture(scope="module")
def healthy() -> EdgeSection:
    """A real section (from simulated records) with every gate metric set to a passing value."""
    totals, _ = edge_sections(simulate_run(3, n_iter=1).slices(), 5.0)
    return totals.model_copy(
        update={
            "net_bps": 3.2,
            "adverse_cost_p95_bps": 2.0,
            "cancel_ratio": 0.3,
            "maker_share_pct": 95.0,
            "slippage_cost_p95_bps": 1.0,
            "order_age_p95_ms": 200.0,
            "ws_lag_p95_ms": 50.0,
            "neg_edge_drivers": [],
        }
    )


@pytest.mark.parametrize(
    ("net", "band"),
    [
        (3.5, "SUCCESS"),
        (3.0, "SUCCESS"),  # boundaries belong to the higher band
        (2.9999999, "OK"),
        (2.8, "OK"),
        (2.7999999, "WARN"),
        (2.5, "WARN"),
        (2.4999999, "FAIL"),
        (-1.0, "FAIL"),
        (None, "FAIL"),
    ],
)
def test_bands_at_boundaries(healthy: EdgeSection, net: float | None, band: str) -> None:
    assert band_of(net, GATES) == band
    res = evaluate(healthy.model_copy(update={"net_bps": net}), GATES)
    assert res.band == band
    # With all other hard gates passing, only the net_bps hard gate (>= 2.5) can cap it.
    assert res.verdict == band
    assert res.next_step.startswith(NEXT_STEPS[band])


def test_bands_come_from_the_profile(healthy: EdgeSection) -> None:
    gates = GatesCfg(
        hard=HardGates(net_bps_min=0.0), bands=DecisionBands(success=1.0, ok=0.5, warn=0.0)
    )
    for net, band in [(1.0, "SUCCESS"), (0.7, "OK"), (0.0, "WARN"), (-0.01, "FAIL")]:
        assert evaluate(healthy.model_copy(update={"net_bps": net}), gates).verdict == band


@pytest.mark.parametrize(
    ("field", "value", "gate"),
    [
        ("adverse_cost_p95_bps", 5.01, "adverse_p95"),
        ("cancel_ratio", 0.66, "cancel_ratio"),
        ("maker_share_pct", 79.9, "maker_share"),
        ("maker_share_pct", None, "maker_share"),
    ],
)
def test_failed_hard_gate_makes_fail(
    healthy: EdgeSection, field: str, value: float | None, gate: str
) -> None:
    res = evaluate(healthy.model_copy(update={field: value}), GATES)
    assert res.band == "SUCCESS"
    assert res.verdict == "FAIL"
    assert res.hard_failed == [gate]
    assert "Failed hard gates: " + gate in res.next_step


def test_hard_gate_thresholds_are_inclusive(healthy: EdgeSection) -> None:
    sec = healthy.model_copy(
        update={"adverse_cost_p95_bps": 5.0, "cancel_ratio": 0.65, "maker_share_pct": 80.0}
    )
    res = evaluate(sec, GATES)
    assert res.hard_failed == [] and res.verdict == "SUCCESS"


def test_soft_gates_status_and_no_effect_on_verdict(healthy: EdgeSection) -> None:
    sec = healthy.model_copy(
        update={
            "net_bps": 2.9,  # soft: >= 2.8 PASS, ideal 3.0 not met
            "slippage_cost_p95_bps": 3.6,  # FAIL (> 3.5)
            "order_age_p95_ms": 330.0,  # IDEAL (<= 330)
            "ws_lag_p95_ms": None,  # NO_DATA
            "maker_share_pct": 86.0,  # PASS, not ideal (90)
        }
    )
    res = evaluate(sec, GATES)
    soft = {c.name: c.status for c in res.checks if c.kind == "soft"}
    assert soft == {
        "net_bps": "PASS",
        "slippage_p95": "FAIL",
        "order_age_p95_ms": "IDEAL",
        "ws_lag_p95_ms": "NO_DATA",
        "maker_share": "PASS",
    }
    assert res.soft_failed == ["slippage_p95", "ws_lag_p95_ms"]
    assert res.verdict == "OK"
    assert "Soft gates missed: slippage_p95 3.600" in res.next_step


def test_kpi_gate_document_validates(healthy: EdgeSection) -> None:
    it0 = healthy.model_copy(update={"iteration": 0, "net_bps": 2.6})
    it1 = healthy.model_copy(update={"iteration": 1, "cancel_ratio": 0.9})
    doc = kpi_gate(healthy, [it0, it1], GATES)
    again = KpiGate.model_validate(doc.model_dump(mode="json"))
    assert again == doc
    assert [(v.iteration, v.verdict) for v in doc.iterations] == [(0, "WARN"), (1, "FAIL")]
    assert doc.bands == {"success": 3.0, "ok": 2.8, "warn": 2.5}
    assert [c.name for c in doc.hard] == [
        "net_bps_total",
        "adverse_p95",
        "cancel_ratio",
        "maker_share",
        "binance_ufr",
        "binance_icr",
        "binance_dr",
    ]


def test_negative_lag_is_a_clock_error_not_ideal(healthy: EdgeSection) -> None:
    # The hftbacktest captures' recorder clock runs ~1.27 s behind: lag p95 −1,266 ms.
    sec = healthy.model_copy(update={"ws_lag_p95_ms": -1266.0})
    res = evaluate(sec, GATES)
    ws = next(c for c in res.checks if c.name == "ws_lag_p95_ms")
    assert (ws.status, ws.passed) == ("CLOCK_ERROR", False)
    assert res.band == "SUCCESS" and res.verdict == "WARN" and res.clock_error
    assert "Clock error" in res.next_step and "ws_lag_p95_ms" in res.soft_failed
    # Capped at WARN, never raised: a FAIL stays FAIL.
    assert evaluate(sec.model_copy(update={"net_bps": 1.0}), GATES).verdict == "FAIL"
    ok = evaluate(healthy, GATES)
    assert ok.verdict == "SUCCESS" and not ok.clock_error
    assert next(c for c in ok.checks if c.name == "ws_lag_p95_ms").status == "IDEAL"


def test_one_iteration_with_negative_lag_flags_the_totals() -> None:
    from dataclasses import replace

    slices = simulate_run(3, n_iter=3).slices()
    slices[1] = replace(slices[1], ws_lag_p95_ms=-3.0)
    totals, iters = edge_sections(slices, 5.0)
    assert totals.ws_lag_p95_ms == 52.0  # the max over iterations is positive ...
    assert totals.clock_error and iters[1].clock_error and not iters[0].clock_error
    doc = kpi_gate(totals, iters, GATES)  # ... but the clock error is still caught
    assert doc.clock_error
    assert next(c for c in doc.soft if c.name == "ws_lag_p95_ms").status == "CLOCK_ERROR"
