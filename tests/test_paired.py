"""Paired error bars of one arm's net_bps minus another's, on the same time blocks."""

from __future__ import annotations

import numpy as np

from mm_sim.config import ErrorBarsCfg
from mm_sim.report.bootstrap import BlockSeries
from mm_sim.report.paired import paired_difference


def series(net: np.ndarray, notional: np.ndarray, start: np.ndarray | None = None) -> BlockSeries:
    n = len(net)
    z = np.zeros(n)
    return BlockSeries(
        start_ns=np.arange(n, dtype=np.int64) if start is None else start,
        notional=notional,
        gross=net,
        slippage=z,
        fees_eff=z,
        inventory=z,
        adverse=z,
        adverse_notional=z,
        block_ns=1,
    )


def test_difference_sign_and_shared_noise() -> None:
    """a − b: positive when a earns more; the market's noise both arms share cancels, so a
    steady 0.5 bps lead is significant although each arm alone swings by ±20 bps."""
    rng = np.random.default_rng(3)
    notional = np.full(40, 1e4)
    shared = rng.normal(0.0, 20.0, 40)  # bps of the block, both arms
    b = series(shared * notional / 1e4, notional)
    a = series((shared + 0.5 + rng.normal(0.0, 0.05, 40)) * notional / 1e4, notional)
    cfg = ErrorBarsCfg()
    ab = paired_difference(a, b, cfg)
    ba = paired_difference(b, a, cfg)
    assert ab.estimate is not None and ab.lo is not None and ab.hi is not None
    assert 0.0 < ab.lo < ab.estimate < ab.hi < 1.0
    assert ba.estimate == -ab.estimate and ba.hi is not None and ba.hi < 0.0


def test_no_interval_when_blocks_differ_or_an_arm_never_filled() -> None:
    n = np.ones(10)
    a = series(n, n)
    shifted = series(n, n, start=np.arange(10, dtype=np.int64) + 5)
    assert paired_difference(a, shifted, ErrorBarsCfg()).lo is None
    empty = series(np.zeros(10), np.zeros(10))
    assert paired_difference(a, empty, ErrorBarsCfg()).estimate is None
