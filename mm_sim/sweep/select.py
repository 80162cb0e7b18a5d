"""Choosing the best cell: a robust score over the training feeds, then a held-out check.

The score of a cell, in bps (higher is better)::

    score = median(net_bps over training feeds)
            - dispersion_weight × MAD(net_bps over training feeds)
            - gate_penalty_bps × (failed hard gates per training feed)

- the median, not the mean: one lucky day must not pick the cell;
- MAD (median absolute deviation from that median): a cell whose edge swings from day to day
  is worth less than a steady one with the same median;
- hard gates (the seed's must-pass list: adverse p95, cancel ratio, maker share) are counted per
  feed and averaged, against the BASE profile's gates (re-evaluated from the row's metrics, so
  every cell is held to the same bar whatever its row says; the grid cannot sweep gates
  either); ``net_bps_total`` is left out because net_bps is already the score's subject —
  counting it again would add a step at 2.5 bps that a continuous median already measures. A
  feed where the cell never filled counts 0 bps (it earned nothing) and its gates without data
  count as failed.

Ties are broken by the cell's position in the grid, so the choice is deterministic. The top
cells are then re-run on the test feeds, and the report sets their in-sample and out-of-sample
medians side by side: a best cell whose edge does not survive held-out days was fitted to noise.
"""

from __future__ import annotations

import statistics
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from mm_sim.config import GatesCfg
from mm_sim.report.gate import checks
from mm_sim.report.schema import EdgeSection
from mm_sim.sweep.cell import METRICS
from mm_sim.sweep.grid import Cell

EXCLUDED_GATES = frozenset({"net_bps_total"})


def hard_failed(row: Mapping[str, Any], gates: GatesCfg) -> list[str]:
    """The hard gates ``row``'s metrics fail under ``gates`` (the report's own gate checks).

    Only the totals the checks read are set (a result row holds every one of them).
    """
    totals: dict[str, Any] = {m: row.get(m) for m in METRICS}
    sec = EdgeSection.model_construct(**totals)
    hard, _ = checks(sec, gates)
    return [c.name for c in hard if not c.passed]


@dataclass(frozen=True)
class Criterion:
    dispersion_weight: float = 1.0
    gate_penalty_bps: float = 1.0

    def describe(self) -> str:
        return (
            f"score = median(net_bps) − {self.dispersion_weight:g} × MAD(net_bps) − "
            f"{self.gate_penalty_bps:g} bps × (failed hard gates per feed, net_bps_total "
            "excepted), over the training feeds; no fills counts 0 bps"
        )

    def score(self, s: FeedSummary) -> float:
        """The score of a summary over feeds (the walk-forward tuner's folds are its feeds)."""
        return (
            s.median_net_bps
            - self.dispersion_weight * s.mad_bps
            - self.gate_penalty_bps * s.gate_failures
        )


@dataclass(frozen=True)
class FeedSummary:
    """A cell over a set of feeds (training or test)."""

    feeds: int
    net_bps: tuple[float, ...]  # per feed, in the order given; no fills -> 0.0
    median_net_bps: float
    mad_bps: float
    gate_failures: float  # mean failed hard gates per feed (base gates; excluded not counted)
    verdicts: tuple[str, ...]


@dataclass(frozen=True)
class CellScore:
    cell: Cell
    train: FeedSummary
    score: float


def summarize_feeds(
    cell: Cell,
    feeds: Sequence[str],
    rows: Mapping[tuple[str, str], Mapping[str, Any]],
    gates: GatesCfg,
) -> FeedSummary | None:
    """The cell over ``feeds``, hard gates judged by ``gates``; None until every feed has a row."""
    got = [rows.get((cell.id, f)) for f in feeds]
    if not feeds or any(r is None for r in got):
        return None
    present = [r for r in got if r is not None]
    nets = tuple(float(r["net_bps"]) if r["net_bps"] is not None else 0.0 for r in present)
    med = statistics.median(nets)
    mad = statistics.median(abs(x - med) for x in nets)
    fails = [sum(1 for g in hard_failed(r, gates) if g not in EXCLUDED_GATES) for r in present]
    return FeedSummary(
        feeds=len(feeds),
        net_bps=nets,
        median_net_bps=med,
        mad_bps=mad,
        gate_failures=sum(fails) / len(fails),
        verdicts=tuple(str(r["verdict"]) for r in present),
    )


def score_cells(
    cells: Sequence[Cell],
    train_feeds: Sequence[str],
    rows: Mapping[tuple[str, str], Mapping[str, Any]],
    criterion: Criterion,
    gates: GatesCfg,
) -> list[CellScore]:
    """Every cell with a row on every training feed, best first (hard gates: ``gates``)."""
    out = []
    for cell in cells:
        s = summarize_feeds(cell, train_feeds, rows, gates)
        if s is None:
            continue
        out.append(CellScore(cell, s, criterion.score(s)))
    out.sort(key=lambda c: (-c.score, c.cell.index))
    return out


@dataclass(frozen=True)
class Validation:
    """A top cell's in-sample (training) and out-of-sample (test) figures."""

    rank: int
    scored: CellScore
    test: FeedSummary | None  # None without test feeds (or before its rows exist)

    @property
    def gap_bps(self) -> float | None:
        """Out-of-sample minus in-sample median net_bps: how much of the edge was fitted."""
        if self.test is None:
            return None
        return self.test.median_net_bps - self.scored.train.median_net_bps


def validate_top(
    ranked: Sequence[CellScore],
    k: int,
    test_feeds: Sequence[str],
    rows: Mapping[tuple[str, str], Mapping[str, Any]],
    gates: GatesCfg,
) -> list[Validation]:
    return [
        Validation(i + 1, s, summarize_feeds(s.cell, test_feeds, rows, gates))
        for i, s in enumerate(ranked[:k])
    ]
