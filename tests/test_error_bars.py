"""Statistical error bars: the block bootstrap of net_bps and its components.

Runs come from ``simulate_run`` (an account-consistent generator), so the blocks can be checked
against the decomposition they must add up to; the intervals must contain the estimates, narrow
with more data, and be the same for the same seed.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from test_edge import MS, T0, simulate_run

from mm_sim.config import DecisionBands, ErrorBarsCfg, GatesCfg, Profile
from mm_sim.core.records import ACTION_DTYPE, BLOCK_DTYPE, FILL_DTYPE, LIQ_MAKER, MARK_DTYPE
from mm_sim.report.bootstrap import (
    FIGURES,
    block_series,
    bootstrap,
    statistical_error_bars,
)
from mm_sim.report.edge import GATE_HORIZON_MS, Slice, chain_states, iteration_parts, sections_of

GATES = Profile().gates


def _bars(run_seed: int, n_iter: int, cfg: ErrorBarsCfg, bands: DecisionBands | None = None):
    parts = [iteration_parts(sl) for sl in simulate_run(run_seed, n_iter=n_iter).slices()]
    totals, _ = sections_of(parts, 5.0)
    gates = GatesCfg(error_bars=cfg, bands=bands or DecisionBands())
    return parts, totals, statistical_error_bars(parts, totals, gates)


def test_blocks_add_up_to_the_decomposition() -> None:
    parts = [iteration_parts(sl) for sl in simulate_run(5, n_iter=6).slices()]
    totals, _ = sections_of(parts, 5.0)
    marks = np.concatenate([p.marks for p in parts])
    f = np.concatenate([p.fill_records for p in parts])
    series = block_series(
        marks,
        f["ts"],
        f["side"] * f["qty"],
        f["mid_fill"],
        np.concatenate([p.notional for p in parts]),
        np.concatenate([p.gross for p in parts]),
        np.concatenate([p.slippage for p in parts]),
        np.concatenate([p.fees_eff for p in parts]),
        np.concatenate([p.markouts[GATE_HORIZON_MS] for p in parts]),
        ErrorBarsCfg(block_s=7.0, min_blocks=2),
        parts[0].start.position,
    )
    assert series is not None and len(series) == 18  # 120 s of marks in 7 s blocks
    a = totals.amounts
    assert series.notional.sum() == pytest.approx(totals.notional, rel=1e-12)
    assert series.gross.sum() == pytest.approx(a.gross, rel=1e-12)
    assert series.fees_eff.sum() == pytest.approx(a.fees_eff, rel=1e-12)
    # The per-block inventory terms telescope to the report's inventory.
    assert series.inventory.sum() == pytest.approx(a.inventory, rel=1e-9, abs=1e-9)
    assert series.net.sum() == pytest.approx(totals.pnl, rel=1e-9, abs=1e-9)


def test_intervals_contain_the_estimates_and_reconcile() -> None:
    _, totals, st = _bars(11, 12, ErrorBarsCfg(block_s=5.0, min_blocks=2, resamples=1000))
    assert st.note is None and st.blocks == 48 and st.block_s == 5.0
    assert st.reconcile_residual is not None and abs(st.reconcile_residual) < 1e-9
    for k in FIGURES:
        iv = st.figures[k]
        assert iv.estimate == getattr(totals, k)
        assert iv.lo is not None and iv.hi is not None and iv.se is not None
        assert iv.lo <= iv.estimate <= iv.hi, k
        assert iv.se > 0


def stationary_run(seed: int, seconds: int) -> list[Slice]:
    """One iteration of a stationary market: the mid wobbles around 100 (no drift), fills
    alternate buy and sell (the position stays 0 or q), so more seconds are more of the same."""
    rng = np.random.default_rng(seed)
    mark_ts = T0 + np.arange(0, seconds * 1000 + 1, 100, dtype=np.int64) * MS
    mid = 100.0 + rng.normal(0.0, 0.02, size=len(mark_ts))
    n = seconds // 2
    ts = np.sort(rng.choice(np.arange(1, len(mark_ts) - 1), size=n, replace=False))
    f = np.zeros(n, dtype=FILL_DTYPE)
    f["ts"] = mark_ts[ts] - MS  # just before a mark, which then includes it
    f["side"] = np.where(np.arange(n) % 2 == 0, 1, -1)
    f["qty"] = 0.1
    f["mid_decision"] = mid[ts - 1]
    f["mid_fill"] = mid[ts - 1]
    f["quote_price"] = f["mid_decision"] - f["side"] * 0.01
    f["price"] = f["quote_price"] + f["side"] * np.abs(rng.normal(0.0, 0.01, size=n))
    f["fee"] = -0.5e-4 * f["qty"] * f["price"]
    f["order_age_ns"] = 100 * MS
    f["liquidity"] = LIQ_MAKER
    marks = np.zeros(len(mark_ts), dtype=MARK_DTYPE)
    marks["ts"] = mark_ts
    marks["mid"] = mid
    idx = np.searchsorted(f["ts"], mark_ts, side="right")
    dq = np.concatenate([[0.0], np.cumsum(f["side"] * f["qty"])])
    dc = np.concatenate([[0.0], np.cumsum(-f["side"] * f["qty"] * f["price"] - f["fee"])])
    marks["position"] = dq[idx]
    marks["cash"] = dc[idx]
    empty_a = np.zeros(0, ACTION_DTYPE)
    empty_b = np.zeros(0, BLOCK_DTYPE)
    return [Slice(0, f, empty_a, empty_b, marks, chain_states([marks])[0][0], 20.0)]


def test_intervals_shrink_with_more_data() -> None:
    cfg = ErrorBarsCfg(block_s=10.0, min_blocks=2, resamples=1000)
    widths = []
    for seconds in (300, 1200, 4800):
        parts = [iteration_parts(sl) for sl in stationary_run(21, seconds)]
        totals, _ = sections_of(parts, 5.0)
        st = statistical_error_bars(parts, totals, GatesCfg(error_bars=cfg))
        assert st.reconcile_residual is not None and abs(st.reconcile_residual) < 1e-9
        iv = st.figures["net_bps"]
        assert iv.lo is not None and iv.hi is not None and iv.estimate is not None
        assert iv.lo <= iv.estimate <= iv.hi
        assert iv.lo is not None and iv.hi is not None
        widths.append(iv.hi - iv.lo)
    # 16× the blocks: about 4× narrower; require a clear, monotone narrowing.
    assert widths[0] > widths[1] > widths[2]
    assert widths[2] < 0.5 * widths[0]


def test_same_seed_same_intervals_other_seed_other_draws() -> None:
    cfg = ErrorBarsCfg(block_s=5.0, min_blocks=2, resamples=500, seed=7)
    _, _, a = _bars(3, 6, cfg)
    _, _, b = _bars(3, 6, cfg)
    assert a == b
    _, _, c = _bars(3, 6, cfg.model_copy(update={"seed": 8}))
    assert c.figures["net_bps"].estimate == a.figures["net_bps"].estimate
    assert c.figures["net_bps"].lo != a.figures["net_bps"].lo


def test_short_runs_use_shorter_blocks_and_empty_runs_have_no_interval() -> None:
    # 60 s of marks with the default 300 s blocks: 20 blocks of 3 s instead.
    _, _, st = _bars(4, 3, ErrorBarsCfg())
    assert st.block_s_configured == 300.0 and st.block_s == pytest.approx(3.0, rel=1e-3)
    assert st.blocks >= 19
    run = simulate_run(4, n_iter=1)
    it = run.iterations[0]
    it["fills"] = it["fills"][:0]
    parts = [iteration_parts(sl) for sl in run.slices()]
    totals, _ = sections_of(parts, 5.0)
    st = statistical_error_bars(parts, totals, GATES)
    assert st.note is not None and st.figures["net_bps"].lo is None
    assert st.band_decision.significant is False


def test_band_significance() -> None:
    cfg = ErrorBarsCfg(block_s=5.0, min_blocks=2, resamples=500)
    _, _, st = _bars(11, 12, cfg)
    net = st.figures["net_bps"]
    assert net.lo is not None and net.hi is not None and net.estimate is not None
    # Bands far away on both sides of the interval: the band holds over it.
    wide = DecisionBands(success=net.hi + 100, ok=net.hi + 50, warn=net.lo - 50)
    _, _, st_w = _bars(11, 12, cfg, wide)
    bd = st_w.band_decision
    assert (bd.band, bd.band_lo, bd.band_hi, bd.significant) == ("WARN", "WARN", "WARN", True)
    # A band boundary inside the interval (at the estimate): not significant.
    cut = DecisionBands(success=net.hi + 100, ok=net.estimate, warn=net.lo - 50)
    _, _, st_c = _bars(11, 12, cfg, cut)
    bd = st_c.band_decision
    assert (bd.band_lo, bd.band_hi, bd.significant) == ("WARN", "OK", False)


def test_bootstrap_draws_are_seeded_numpy() -> None:
    """The resampling is numpy's default generator with the configured seed (documented)."""
    parts = [iteration_parts(sl) for sl in simulate_run(9, n_iter=4).slices()]
    totals, _ = sections_of(parts, 5.0)
    cfg = ErrorBarsCfg(block_s=4.0, min_blocks=2, resamples=300, seed=99)
    st = statistical_error_bars(parts, totals, GatesCfg(error_bars=cfg))
    marks = np.concatenate([p.marks for p in parts])
    f = np.concatenate([p.fill_records for p in parts])
    series = block_series(
        marks,
        f["ts"],
        f["side"] * f["qty"],
        f["mid_fill"],
        np.concatenate([p.notional for p in parts]),
        np.concatenate([p.gross for p in parts]),
        np.concatenate([p.slippage for p in parts]),
        np.concatenate([p.fees_eff for p in parts]),
        np.concatenate([p.markouts[GATE_HORIZON_MS] for p in parts]),
        cfg,
        parts[0].start.position,
    )
    assert series is not None
    draws = np.random.default_rng(99).integers(0, len(series), size=(300, len(series)))
    rep = series.net[draws].sum(axis=1) / series.notional[draws].sum(axis=1) * 1e4
    lo, hi = np.percentile(rep, [2.5, 97.5])
    assert st.figures["net_bps"].lo == pytest.approx(lo, rel=1e-12)
    assert st.figures["net_bps"].hi == pytest.approx(hi, rel=1e-12)
    got = bootstrap(series, cfg, {"net_bps": totals.net_bps})
    assert got["net_bps"].lo == st.figures["net_bps"].lo


def test_reports_carry_the_error_bars(tmp_path: Path) -> None:
    from test_rundir import write_run

    from mm_sim.report.render import build_reports

    run = simulate_run(8, n_iter=4)
    rd = write_run(tmp_path / "r", run)
    build_reports(rd, Profile(), charts=False)
    rd.close()
    edge = json.loads((rd.reports / "EDGE_REPORT.json").read_text())
    gate = json.loads((rd.reports / "KPI_GATE.json").read_text())
    eb = edge["error_bars"]
    assert eb["model"] is None
    st = eb["statistical"]
    assert st["figures"]["net_bps"]["estimate"] == edge["totals"]["net_bps"]
    assert set(st["figures"]) == set(FIGURES)
    assert gate["band_decision"] == st["band_decision"]
    md = (rd.reports / "SOAK_RESULTS.md").read_text()
    assert "### Error bars (statistical)" in md
    assert "Band decision" in md
    assert "## Order churn and the venue's rules" in md
