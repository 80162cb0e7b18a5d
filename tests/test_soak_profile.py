"""The bench's stage breakdown puts each sampled stack in the stage its frames say."""

from __future__ import annotations

from benchmarks.soak_profile import STAGES, breakdown, classify

MAIN = "<module> (mm_sim/__main__.py:3);main (mm_sim/cli.py:160);run (mm_sim/commands/soak.py:228)"
LOOP = MAIN + ";Soak.run (mm_sim/runtime/soak.py:567)"


def test_each_stage_is_told_by_its_innermost_frames() -> None:
    cases = {
        LOOP + ";Engine.run (mm_sim/core/engine.py:341)": "kernel",
        LOOP + ";Engine.run (mm_sim/core/engine.py:341);_compile_for_args "
        "(numba/core/dispatcher.py:374);compile (numba/core/compiler.py:80)": "kernel compile/load",
        LOOP + ";generate (mm_sim/feeds/synthetic.py:400)": "feed",
        LOOP + ";Recorder.write (mm_sim/runtime/recorder.py:90)": "recorder",
        LOOP + ";edge_report (mm_sim/report/edge.py:100);markouts (numpy/core/x.py:3)": (
            "edge/markout evaluation"
        ),
        LOOP + ";render (mm_sim/report/render.py:10);savefig (matplotlib/figure.py:3)": "charts",
        # the renderer's evaluation is not drawing (it was counted as charts once)
        LOOP + ";build_reports (mm_sim/report/render.py:10);build_orders "
        "(mm_sim/report/churn.py:80)": "edge/markout evaluation",
        LOOP + ";png (mm_sim/report/charts.py:50)": "charts",
        LOOP + ";kpi_gate (mm_sim/report/gate.py:40)": "reports",
        LOOP + ";Tuner.decide (mm_sim/runtime/tuner.py:70)": "tuner",
        LOOP + ";Bus.put (mm_sim/runtime/bus.py:12)": "bus and run loop",
        MAIN + ";_find_and_load (<frozen importlib._bootstrap>:1)": "start-up and imports",
        "_run_code (<frozen runpy>:88);_find_and_load (<frozen importlib._bootstrap>:1)": (
            "start-up and imports"
        ),
        MAIN + ";load_profile (mm_sim/config.py:600)": "other",
    }
    for stack, stage in cases.items():
        assert classify(stack) == stage, stack


def test_shares_are_sample_weighted_and_sum_to_one() -> None:
    raw = "\n".join(
        [
            LOOP + ";Engine.run (mm_sim/core/engine.py:341) 30",
            LOOP + ";generate (mm_sim/feeds/synthetic.py:400) 10",
            "not a stack line",
        ]
    )
    res = breakdown(raw)
    assert res["samples"] == 40
    assert res["share"]["kernel"] == 0.75 and res["share"]["feed"] == 0.25
    assert set(res["share"]) == set(STAGES) and abs(sum(res["share"].values()) - 1.0) < 1e-12
