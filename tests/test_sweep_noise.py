"""The sweep report knows the noise: each run's net_bps interval, a cell's score ± noise, and
cells statistically indistinguishable from the best marked as such."""

from __future__ import annotations

import json
from pathlib import Path

from test_sweep_grid import BASE_O, BASE_P, _info, _rows, grid_of

from mm_sim.sweep.report import cell_noise, render_markdown, run_intervals, tied_with_best
from mm_sim.sweep.select import Criterion, score_cells, validate_top

FEEDS = ["a@1", "b@1"]


def _run(out: Path, cell_id: str, feed: str, lo: float | None, hi: float | None) -> None:
    """A kept run directory as the sweep leaves it: run.json and the reports."""
    run = out / "runs" / cell_id / feed.replace("@", "_")
    (run / "soak").mkdir(parents=True)
    (run / "reports").mkdir(parents=True)
    (run / "soak" / "run.json").write_text(json.dumps({"settings": {"feed": feed}}))
    net = {"estimate": None, "lo": lo, "hi": hi, "se": None}
    edge = {"error_bars": {"statistical": {"figures": {"net_bps": net}}, "model": None}}
    (run / "reports" / "EDGE_REPORT.json").write_text(json.dumps(edge))


def _sweep(tmp_path: Path, nets: list[float], half: float):
    g = grid_of(tmp_path, "overrides.min_interval_ms = [40, 70, 100]\n")
    rows = _rows(g, FEEDS, [{"net_bps": n} for n in nets])
    ranked = score_cells(g.cells, FEEDS, rows, Criterion(), BASE_P.gates)
    out = tmp_path / "out"
    for c, n in zip(g.cells, nets, strict=True):
        for f in FEEDS:
            _run(out, c.id, f, n - half, n + half)
    return g, rows, ranked, out


def test_intervals_are_read_from_the_kept_runs(tmp_path: Path) -> None:
    out = tmp_path / "out"
    _run(out, "c1", "a@1", -1.0, 2.0)
    _run(out, "c1", "b@1", None, None)  # a run without an interval is left out
    assert run_intervals(out, "c1") == {"a@1": (-1.0, 2.0)}
    assert run_intervals(out, "missing") == {}


def test_a_lead_inside_the_noise_is_not_best_by_itself(tmp_path: Path) -> None:
    # Scores 3.0, 2.8, 1.0 with ± 0.5: the second overlaps the best, the third does not.
    g, rows, ranked, out = _sweep(tmp_path, [2.8, 3.0, 1.0], 0.5)
    noise = cell_noise(out, ranked, FEEDS)
    assert [s.cell.id for s in ranked] == [g.cells[1].id, g.cells[0].id, g.cells[2].id]
    assert noise[ranked[0].cell.id].noise_bps == 0.5
    assert tied_with_best(ranked, noise) == [g.cells[0].id]
    top = validate_top(ranked, 3, [], rows, BASE_P.gates)
    md = render_markdown(_info(g), ranked, top, [], BASE_O, BASE_P, noise)
    assert "**Not best by itself:**" in md and f"`{g.cells[0].id}`" in md
    assert " ± 0.500 ≈ best" in md  # the tied cell's row in the top table
    assert md.count("≈ best |") == 1  # the third cell is distinguishable
    assert "[+2.500, +3.500]" in md  # the best cell's per-feed interval
    assert "then the earlier cell in the grid" in md  # how ties are broken


def test_a_lead_beyond_the_noise_is_best_by_itself(tmp_path: Path) -> None:
    g, rows, ranked, out = _sweep(tmp_path, [2.0, 3.0, 1.0], 0.2)
    noise = cell_noise(out, ranked, FEEDS)
    assert tied_with_best(ranked, noise) == []
    top = validate_top(ranked, 3, [], rows, BASE_P.gates)
    md = render_markdown(_info(g), ranked, top, [], BASE_O, BASE_P, noise)
    assert "Best by itself" in md and "≈ best |" not in md


def test_unknown_noise_is_said(tmp_path: Path) -> None:
    g = grid_of(tmp_path, "overrides.min_interval_ms = [40, 70]\n")
    rows = _rows(g, FEEDS, [{}, {}])
    ranked = score_cells(g.cells, FEEDS, rows, Criterion(), BASE_P.gates)
    noise = cell_noise(tmp_path / "nothing", ranked, FEEDS)
    assert tied_with_best(ranked, noise) is None
    top = validate_top(ranked, 1, [], rows, BASE_P.gates)
    md = render_markdown(_info(g), ranked, top, [], BASE_O, BASE_P, noise)
    assert "Noise: unknown" in md


def test_cells_without_an_interval_are_listed_not_compared(tmp_path: Path) -> None:
    g, rows, ranked, out = _sweep(tmp_path, [2.0, 3.0, 1.0], 0.2)
    third = ranked[2].cell.id
    for run in (out / "runs" / third).iterdir():  # no interval on any training feed
        _edge = run / "reports" / "EDGE_REPORT.json"
        _edge.write_text(json.dumps({"error_bars": {"statistical": None, "model": None}}))
    noise = cell_noise(out, ranked, FEEDS)
    assert noise[third].noise_bps is None
    assert tied_with_best(ranked, noise) == []
    top = validate_top(ranked, 3, [], rows, BASE_P.gates)
    md = render_markdown(_info(g), ranked, top, [], BASE_O, BASE_P, noise)
    assert "Best by itself" in md and f"cannot be compared: `{third}`" in md
