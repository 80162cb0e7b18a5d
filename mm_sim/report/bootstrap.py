"""Statistical error bars: a block bootstrap over time of net_bps and its components.

Why blocks of time and not single fills: fills cluster and their inventory PnL is serially
correlated (one position carried across many fills), so resampling fills one by one would
understate the noise. The run is cut into consecutive blocks of ``block_s`` of simulated time
on its marks; each block carries everything the decomposition needs, so the blocks add up to
the totals exactly:

- gross, slippage, fees_eff, notional: the sums over the block's fills (a fill belongs to the
  block whose end mark is the first mark at or after it, as a mark includes every fill at or
  before it);
- inventory: position at the block's first mark × (mid at its last mark − mid at its first)
  + Σ over its fills s·q·(mid at its last mark − m_f). Summed over blocks this telescopes to the
  report's inventory term, so Σ blocks net = the totals' net (``reconcile_residual``);
- adverse (informational, as in the report): the 1 s markout amounts and notional of the
  block's covered fills.

A resample draws as many blocks as the run has, with replacement, from a generator seeded with
``seed`` (same records, same intervals); a figure is the ratio of the resampled sums (amount ÷
notional ×1e4), as the report's own figure is. The interval is the percentile interval of the
resamples at ``confidence``. With fewer than ``min_blocks`` blocks of ``block_s``, the block is
shortened to span ÷ ``min_blocks`` (``block_s`` in the result says what was used).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from mm_sim.config import ErrorBarsCfg, GatesCfg
from mm_sim.report.edge import GATE_HORIZON_MS, Parts
from mm_sim.report.gate import band_of
from mm_sim.report.schema import BandSignificance, EdgeSection, StatisticalErrorBars
from mm_sim.report.schema import Interval as SchemaInterval

BPS = 1e4
FIGURES: tuple[str, ...] = (
    "net_bps",
    "gross_bps",
    "slippage_bps",
    "fees_eff_bps",
    "inventory_bps",
    "adverse_bps",
)


@dataclass(frozen=True)
class BlockSeries:
    """Per-block sums; every array has one entry per block."""

    start_ns: np.ndarray
    notional: np.ndarray
    gross: np.ndarray
    slippage: np.ndarray
    fees_eff: np.ndarray
    inventory: np.ndarray
    adverse: np.ndarray  # markout amount of covered fills
    adverse_notional: np.ndarray  # notional of covered fills
    block_ns: int

    @property
    def net(self) -> np.ndarray:
        return self.gross + self.slippage + self.fees_eff + self.inventory

    def __len__(self) -> int:
        return len(self.start_ns)


def _filled_mids(marks: np.ndarray) -> np.ndarray:
    """Mids carried forward over marks without one (leading gaps take the first finite mid)."""
    mid = marks["mid"].astype(np.float64)
    ok = np.isfinite(mid)
    if not ok.any():
        return mid
    idx = np.where(ok, np.arange(len(mid)), -1)
    idx = np.maximum.accumulate(idx)
    first = int(np.flatnonzero(ok)[0])
    idx[idx < 0] = first
    return mid[idx]


def block_series(
    marks: np.ndarray,
    fill_ts: np.ndarray,
    side_qty: np.ndarray,
    mid_fill: np.ndarray,
    notional: np.ndarray,
    gross: np.ndarray,
    slippage: np.ndarray,
    fees_eff: np.ndarray,
    adverse: np.ndarray,
    cfg: ErrorBarsCfg,
    position_start: float,
) -> BlockSeries | None:
    """Cut a run (all its marks, in time order, and all its fills) into time blocks."""
    if len(marks) < 2:
        return None
    ts = marks["ts"].astype(np.int64)
    mid = _filled_mids(marks)
    if not np.isfinite(mid).all():
        return None
    span = int(ts[-1] - ts[0])
    if span <= 0:
        return None
    block_ns = round(cfg.block_s * 1e9)
    if span / block_ns < cfg.min_blocks:
        block_ns = max(1, span // cfg.min_blocks)
    # Boundary marks: the first mark at or after each multiple of block_ns from the first mark.
    edges = ts[0] + block_ns * np.arange(1, span // block_ns + 1, dtype=np.int64)
    b = np.searchsorted(ts, edges, side="left")
    b = np.unique(np.concatenate([[0], b[b < len(ts) - 1], [len(ts) - 1]]))
    lo, hi = b[:-1], b[1:]
    # Position at each block's first mark (the run's start position for the first block).
    pos = marks["position"].astype(np.float64)
    pos_lo = pos[lo].copy()
    pos_lo[0] = position_start
    # A fill at or before mark hi[k] and after mark lo[k] belongs to block k.
    blk = np.searchsorted(ts[hi], fill_ts, side="left")
    blk = np.clip(blk, 0, len(lo) - 1)
    m_end_f = mid[hi][blk]
    n = len(lo)

    def per_block(x: np.ndarray) -> np.ndarray:
        return np.bincount(blk, weights=x, minlength=n) if len(x) else np.zeros(n)

    cov = np.isfinite(adverse)
    inventory = pos_lo * (mid[hi] - mid[lo]) + per_block(side_qty * (m_end_f - mid_fill))
    return BlockSeries(
        start_ns=ts[lo],
        notional=per_block(notional),
        gross=per_block(gross),
        slippage=per_block(slippage),
        fees_eff=per_block(fees_eff),
        inventory=inventory,
        adverse=per_block(np.where(cov, adverse, 0.0)),
        adverse_notional=per_block(np.where(cov, notional, 0.0)),
        block_ns=block_ns,
    )


@dataclass(frozen=True)
class Interval:
    estimate: float | None
    lo: float | None
    hi: float | None
    se: float | None


def _ratio_ci(
    num: np.ndarray, den: np.ndarray, draws: np.ndarray, alpha: float, estimate: float | None
) -> Interval:
    tot_n = num[draws].sum(axis=1)
    tot_d = den[draws].sum(axis=1)
    with np.errstate(divide="ignore", invalid="ignore"):
        rep = np.where(tot_d > 0, tot_n / tot_d * BPS, np.nan)
    rep = rep[np.isfinite(rep)]
    if estimate is None or len(rep) < 2:
        return Interval(estimate, None, None, None)
    lo, hi = np.percentile(rep, [100 * alpha / 2, 100 * (1 - alpha / 2)])
    return Interval(estimate, float(lo), float(hi), float(np.std(rep, ddof=1)))


def bootstrap(
    series: BlockSeries, cfg: ErrorBarsCfg, estimates: dict[str, float | None]
) -> dict[str, Interval]:
    """Percentile intervals of every figure in ``FIGURES`` (``estimates``: the report's values)."""
    n = len(series)
    rng = np.random.default_rng(cfg.seed)
    draws = rng.integers(0, n, size=(cfg.resamples, n))
    alpha = 1.0 - cfg.confidence
    nums = {
        "net_bps": series.net,
        "gross_bps": series.gross,
        "slippage_bps": series.slippage,
        "fees_eff_bps": series.fees_eff,
        "inventory_bps": series.inventory,
    }
    out = {
        k: _ratio_ci(v, series.notional, draws, alpha, estimates.get(k)) for k, v in nums.items()
    }
    out["adverse_bps"] = _ratio_ci(
        series.adverse, series.adverse_notional, draws, alpha, estimates.get("adverse_bps")
    )
    return out


def band_significance(net: Interval, gates: GatesCfg) -> tuple[str, str | None, str | None, bool]:
    """(band of the estimate, band of the interval's low end, of its high end, significant).

    The band decision is significant when the whole interval lies in the estimate's band.
    """
    band = band_of(net.estimate, gates)
    if net.lo is None or net.hi is None:
        return band, None, None, False
    lo_b = band_of(net.lo, gates)
    hi_b = band_of(net.hi, gates)
    return band, lo_b, hi_b, lo_b == hi_b == band


def total_net_check(series: BlockSeries, net_amount: float) -> float:
    """Σ blocks net − the report's net amount (≈ 0: the blocks reconcile with the totals)."""
    return math.fsum(series.net) - net_amount


def concat(arrays: Sequence[np.ndarray]) -> np.ndarray:
    return np.concatenate(list(arrays)) if arrays else np.empty(0)


def series_of(parts: Sequence[Parts], cfg: ErrorBarsCfg) -> BlockSeries | None:
    """A run's (or a window's) time blocks, from its iterations' parts.

    Amounts are rebuilt in the money view (the records themselves unless inverse). Two runs on
    the same events get the same blocks (marks fall on the same times), which is what a paired
    comparison of two arms relies on (``mm_sim.report.paired``).
    """
    marks = concat([p.money_marks for p in parts]) if parts else np.empty(0)
    if not parts or len(marks) < 2:
        return None
    fills = [p.money_fills for p in parts]
    f_ts = concat([f["ts"].astype(np.int64) for f in fills]).astype(np.int64)
    return block_series(
        marks,
        f_ts,
        concat([f["side"] * f["qty"] for f in fills]),
        concat([f["mid_fill"] for f in fills]),
        concat([p.notional for p in parts]),
        concat([p.gross for p in parts]),
        concat([p.slippage for p in parts]),
        concat([p.fees_eff for p in parts]),
        concat([p.markouts[GATE_HORIZON_MS] for p in parts]),
        cfg,
        parts[0].start.money().position if parts[0].start is not None else 0.0,
    )


METHOD = (
    "block bootstrap over time: the run's marks cut into consecutive blocks of block_s, blocks "
    "drawn with replacement (as many as the run has), figure = resampled amount / resampled "
    "notional; percentile interval"
)


def statistical_error_bars(
    parts: Sequence[Parts], totals: EdgeSection, gates: GatesCfg
) -> StatisticalErrorBars:
    """The run's statistical error bars (EDGE_REPORT.json ``error_bars.statistical``)."""
    cfg = gates.error_bars
    estimates = {k: getattr(totals, k) for k in FIGURES}
    series = series_of(parts, cfg)
    note = None
    if series is None or len(series) < 2 or totals.fills == 0:
        note = "no interval: fewer than two time blocks, or no fills"
        figures = {
            k: SchemaInterval(estimate=estimates[k], lo=None, hi=None, se=None) for k in FIGURES
        }
        residual = None
    else:
        got = bootstrap(series, cfg, estimates)
        figures = {
            k: SchemaInterval(estimate=v.estimate, lo=v.lo, hi=v.hi, se=v.se)
            for k, v in got.items()
        }
        residual = total_net_check(series, totals.amounts.net)
    net = figures["net_bps"]
    band, lo_b, hi_b, sig = band_significance(Interval(net.estimate, net.lo, net.hi, net.se), gates)
    return StatisticalErrorBars(
        method=METHOD,
        block_s=series.block_ns / 1e9 if series is not None else None,
        block_s_configured=cfg.block_s,
        blocks=len(series) if series is not None else 0,
        resamples=cfg.resamples,
        confidence=cfg.confidence,
        seed=cfg.seed,
        reconcile_residual=residual,
        figures=figures,
        band_decision=BandSignificance(band=band, band_lo=lo_b, band_hi=hi_b, significant=sig),
        note=note,
    )
