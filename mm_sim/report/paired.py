"""Paired error bars: is one arm's net_bps really above another's, run on the same events?

Why paired: two arms replaying the same feed share the market's noise (a trend that costs one
inventory costs the other too). Separate intervals of each arm would overlap almost always and
say nothing about the difference; resampling the *same* time blocks for both arms keeps the
shared noise out of it. Each resample draws block indices once and computes
``(Σ net_a / Σ notional_a − Σ net_b / Σ notional_b) × 1e4`` over them; the interval is the
percentile interval of those differences at the profile's confidence (``gates.error_bars``,
the same settings, seed and block cut as the single-run error bars of
``mm_sim.report.bootstrap``).

The blocks are cut on marks, which fall at the same times in both arms (marks are taken on
the feed's clock); arms whose blocks do not line up get no interval rather than a wrong one.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from mm_sim.config import ErrorBarsCfg
from mm_sim.report.bootstrap import BPS, BlockSeries, Interval, series_of
from mm_sim.report.edge import Parts, iteration_parts
from mm_sim.report.render import _slices, run_contract_size
from mm_sim.report.rundir import RunDir


def _ratio(num: np.ndarray, den: np.ndarray) -> np.ndarray:
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(den > 0, num / den * BPS, np.nan)


def paired_difference(a: BlockSeries, b: BlockSeries, cfg: ErrorBarsCfg) -> Interval:
    """net_bps of ``a`` minus net_bps of ``b``, with its paired block-bootstrap interval.

    No interval (``lo``/``hi`` None) when the blocks differ, when there are fewer than two, or
    when an arm has no notional (no fills: its net_bps is undefined).
    """
    est_a = float(_ratio(np.array([a.net.sum()]), np.array([a.notional.sum()]))[0])
    est_b = float(_ratio(np.array([b.net.sum()]), np.array([b.notional.sum()]))[0])
    estimate = est_a - est_b if np.isfinite(est_a) and np.isfinite(est_b) else None
    n = len(a)
    if estimate is None or n < 2 or not np.array_equal(a.start_ns, b.start_ns):
        return Interval(estimate, None, None, None)
    rng = np.random.default_rng(cfg.seed)
    draws = rng.integers(0, n, size=(cfg.resamples, n))
    diff = _ratio(a.net[draws].sum(axis=1), a.notional[draws].sum(axis=1)) - _ratio(
        b.net[draws].sum(axis=1), b.notional[draws].sum(axis=1)
    )
    diff = diff[np.isfinite(diff)]
    if len(diff) < 2:
        return Interval(estimate, None, None, None)
    alpha = 1.0 - cfg.confidence
    lo, hi = np.percentile(diff, [100 * alpha / 2, 100 * (1 - alpha / 2)])
    return Interval(estimate, float(lo), float(hi), float(np.std(diff, ddof=1)))


def run_parts(rd: RunDir) -> list[Parts]:
    """Every committed iteration's parts, exactly as the run's reports are built from them."""
    lines = rd.committed_lines()
    recs = rd.iteration_records(lines)
    return [iteration_parts(sl) for sl in _slices(recs, lines, run_contract_size(rd))]


def arms_difference(
    a: Sequence[Parts], b: Sequence[Parts], cfg: ErrorBarsCfg
) -> tuple[Interval, int]:
    """(net_bps of a − net_bps of b with its interval, number of blocks)."""
    sa, sb = series_of(a, cfg), series_of(b, cfg)
    if sa is None or sb is None:
        return Interval(None, None, None, None), 0
    return paired_difference(sa, sb, cfg), len(sa)
