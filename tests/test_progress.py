"""The soak's and the sweep's progress: a rich bar on a terminal, plain lines otherwise."""

from __future__ import annotations

import io
from collections import Counter
from types import SimpleNamespace

import pytest

from mm_sim.runtime.progress import (
    COLD_COMPILE_NOTE,
    Progress,
    announce,
    kernels_cached,
    starting_note,
)
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
    if plain.startswith(COLD_COMPILE_NOTE):  # a stale kernel cache says so first
        plain = plain.split("\n", 1)[1]
    assert "\x1b[" not in plain and plain.endswith("\n") and plain.count("\n") == 1
    assert "\x1b[" in bar
    if report is _soak:
        # Numbered as metrics.jsonl numbers it; what is per iteration and what is so far, said.
        assert plain.startswith(
            "iteration 0 (1/2 done): this iteration net_bps +0.500  fills 3  pnl +1.00; "
            "so far: verdict OK, 1,000 events"
        )
        assert "iteration 0" in bar and "(1/2 done)" in bar and "net +0.50 bps" in bar
        assert "verdict OK" in bar
    else:
        assert plain.startswith("[train] cell 1/1 c1 x=1: median net_bps +0.500 over 2 feed(s)")
        assert "1/1" in bar and "median net_bps +0.500" in bar


class _Marker:
    def __init__(self, text: str) -> None:
        self.text = text

    def marker(self) -> str:
        return self.text

    def to_json(self) -> dict[str, str]:
        return {"driver": self.text}


def test_tuner_markers_print_above_the_bar_once(capsys: pytest.CaptureFixture) -> None:
    marker = "| autotune | DRIVER:slippage_bps | base_spread_bps_delta 0.1 -> 0.14 |"
    out = _Terminal()
    with Progress(2, 0, ReplayPlan([], 2, None), out) as p:
        announce(p, out, [_Marker(marker)], "autotune")
    text = out.getvalue()
    # on a line of its own: the bar's line is cleared first, the bar redrawn below it
    assert text.count(marker) == 1 and f"\r\x1b[2K{marker}\n" in text
    plain = io.StringIO()
    with Progress(2, 0, ReplayPlan([], 2, None), plain) as p:
        announce(p, plain, [_Marker(marker)], "autotune")
    assert plain.getvalue().endswith(f"\n{marker}\n") or plain.getvalue() == f"{marker}\n"


def test_the_bar_says_what_it_waits_for() -> None:
    assert starting_note() in ("starting", COLD_COMPILE_NOTE)
    assert kernels_cached() is not None  # the numba cache can be asked (else: no hint)


def test_an_iteration_without_fills_says_so_not_nan() -> None:
    """net_bps has no notional to divide by: the line printed "+nan" before."""
    out = io.StringIO()
    with Progress(1, 0, ReplayPlan([], 1, None), out) as p:
        p.iteration_done(
            0, {"net_bps": float("nan"), "verdict_so_far": "FAIL", "fills": 0, "pnl": 0.0}
        )
    line = out.getvalue().splitlines()[-1]
    assert "net_bps n/a (no fill)  fills 0" in line and "nan" not in line, line
