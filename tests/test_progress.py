"""The soak's and the sweep's progress: a rich bar on a terminal, plain lines otherwise."""

from __future__ import annotations

import io
from collections import Counter
from types import SimpleNamespace

import pytest

from mm_sim.runtime.progress import Progress
from mm_sim.runtime.replay import ReplayPlan
from mm_sim.sweep.progress import CellProgress


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def _soak(out: io.StringIO) -> str:
    with Progress(2, 0, ReplayPlan([], 2, None), out) as p:
        p.chunk(0, 10**9, 1000, 0.1, 0.5)
        p.iteration_done(0, {"net_bps": 0.5, "verdict_so_far": "OK", "fills": 3, "pnl": 1.0})
    return out.getvalue()


def _sweep(out: io.StringIO) -> str:
    cell = SimpleNamespace(id="c1", label=lambda: "x=1")
    with CellProgress("train", [cell], 2, Counter({"c1": 2}), out) as cp:  # type: ignore[list-item]
        cp.result(cell, {"net_bps": 0.25})  # type: ignore[arg-type]
        cp.result(cell, {"net_bps": 0.75})  # type: ignore[arg-type]
    return out.getvalue()


@pytest.mark.parametrize("report", [_soak, _sweep])
def test_plain_lines_off_a_terminal_and_a_bar_on_one(report) -> None:
    plain = report(io.StringIO())
    bar = report(_Terminal())
    assert "\x1b[" not in plain and plain.endswith("\n") and plain.count("\n") == 1
    assert "\x1b[" in bar
    if report is _soak:
        assert plain.startswith("iteration 1/2: net_bps +0.500  fills 3")
        assert "iteration 1/2" in bar and "net +0.50 bps" in bar and "verdict OK" in bar
    else:
        assert plain.startswith("[train] cell 1/1 c1 x=1: median net_bps +0.500 over 2 feed(s)")
        assert "1/1" in bar and "median net_bps +0.500" in bar
