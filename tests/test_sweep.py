"""The sweep on a real 2-worker Dask LocalCluster: rows, best cell, report, resume, worker death.

A small grid (4 × 2 = 8 cells) of 30-second runs on two synthetic training days and one test
day keeps this fast; what is under test — one row per cell × feed, nothing lost or counted
twice, a deterministic file, a best cell that is a cell of the grid and loads as overrides, the
numbers equal to the soak's own — does not depend on the length.
"""

from __future__ import annotations

import csv
import io
import json
import logging
import os
import shutil
import statistics
import subprocess
import sys
from collections.abc import Iterator
from functools import partial
from pathlib import Path
from typing import Any

import cloudpickle
import pytest

from mm_sim.config import load_overrides, load_profile
from mm_sim.errors import UserError
from mm_sim.sweep.cell import CellTask, run_cell
from mm_sim.sweep.driver import SweepOptions, SweepOutcome, run_sweep
from mm_sim.sweep.results import TIMING_COLUMNS

REPO = Path(__file__).resolve().parent.parent
GRID = """\
[overrides]
base_spread_bps_delta = [0.0, 0.1, 0.3, 0.6]
min_interval_ms = [40, 70]

[profile.quoting]
gamma = 0.2
"""
TRAIN = ["synthetic-short@1", "synthetic-short@2"]
TEST = ["synthetic-short@3"]
N_CELLS = 8
TOP = 2
RUN = {"iterations": 1, "iteration_minutes": 0.5}

# The worker-death helper below is shipped by value: workers need not import this test module.
cloudpickle.register_pickle_by_value(sys.modules[__name__])


def options(out: Path, grid: Path, **kw: Any) -> SweepOptions:
    base: dict[str, Any] = {
        "grid": grid,
        "train": TRAIN,
        "test": TEST,
        "out": out,
        "top": TOP,
        **RUN,
    }
    base.update(kw)
    return SweepOptions(**base)


def read_csv(path: Path) -> tuple[list[str], list[dict[str, str]]]:
    with path.open(newline="") as fh:
        reader = csv.DictReader(fh)
        return list(reader.fieldnames or []), list(reader)


def without_timing(rows: list[dict[str, str]]) -> list[dict[str, str]]:
    return [{k: v for k, v in r.items() if k not in TIMING_COLUMNS} for r in rows]


@pytest.fixture(scope="module")
def grid_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    p = tmp_path_factory.mktemp("grid") / "grid.toml"
    p.write_text(GRID)
    return p


@pytest.fixture(scope="module")
def swept(
    tmp_path_factory: pytest.TempPathFactory, grid_file: Path
) -> tuple[Path, SweepOutcome, str]:
    """The sweep as the CLI runs it by default: the driver's own 2-worker LocalCluster."""
    out = tmp_path_factory.mktemp("sweep") / "out"
    log = io.StringIO()
    outcome = run_sweep(options(out, grid_file, workers=2), log)
    return out, outcome, log.getvalue()


@pytest.fixture(scope="module")
def cluster() -> Iterator[str]:
    """A second 2-worker LocalCluster, used by address (the --scheduler path)."""
    from dask.distributed import LocalCluster

    with LocalCluster(
        n_workers=2,
        threads_per_worker=1,
        processes=True,
        host="127.0.0.1",
        dashboard_address=None,
        silence_logs=logging.ERROR,
    ) as c:
        yield c.scheduler_address


def test_one_row_per_cell_and_feed_and_a_usable_best_cell(swept) -> None:
    out, outcome, log = swept
    header, rows = read_csv(out / "sweep_results.csv")
    assert header[:4] == ["split", "cell_id", "feed", "seed"]
    assert header[-2:] == list(TIMING_COLUMNS)
    assert "Dask LocalCluster, 2 worker" in outcome.engine
    assert len(outcome.grid.cells) == N_CELLS
    train_rows = [r for r in rows if r["split"] == "train"]
    test_rows = [r for r in rows if r["split"] == "test"]
    assert len(train_rows) == N_CELLS * len(TRAIN)
    assert len(test_rows) == TOP * len(TEST)
    keys = [(r["cell_id"], r["feed"]) for r in rows]
    assert len(keys) == len(set(keys))
    assert {(c.id, f) for c in outcome.grid.cells for f in TRAIN} == {
        (r["cell_id"], r["feed"]) for r in train_rows
    }
    assert outcome.ran == len(rows)
    # Every row carries the cell's values, its figures and its verdict.
    for r in rows:
        assert r["overrides.min_interval_ms"] in ("40.0", "70.0")
        assert r["profile.quoting.gamma"] == "0.2"
        assert r["verdict"] in ("SUCCESS", "OK", "WARN", "FAIL")
        assert (r["net_bps"] == "") == (int(r["fills"]) == 0)  # no fills: no bps
        assert (out / r["run_dir"] / "reports" / "EDGE_REPORT.json").is_file()
        assert not (out / r["run_dir"] / "soak" / "records").exists()  # bulk dropped by default
    # The progress counted cells, up to all of them.
    assert f"[train] cell {N_CELLS}/{N_CELLS}" in log
    # best_cell.json is a runtime-overrides file holding one cell of the grid.
    best = load_overrides(out / "best_cell.json")
    values = outcome.ranked[0].cell.as_dict()
    assert best.base_spread_bps_delta == values["overrides.base_spread_bps_delta"]
    assert best.min_interval_ms == values["overrides.min_interval_ms"]
    assert set(json.loads((out / "best_cell.json").read_text())) == set(best.FIELDS)
    assert any(
        (best.base_spread_bps_delta, best.min_interval_ms)
        == (
            c.as_dict()["overrides.base_spread_bps_delta"],
            c.as_dict()["overrides.min_interval_ms"],
        )
        for c in outcome.grid.cells
    )
    # The profile value swept (fixed here) comes with it as a profile file.
    assert load_profile(out / "best_profile.json").quoting.gamma == 0.2
    # The feed cache is gone once the sweep is complete.
    assert not (out / "feeds").exists()


def test_report_shows_in_and_out_of_sample_and_a_heat_map(swept) -> None:
    out, outcome, _ = swept
    md = (out / "SWEEP_REPORT.md").read_text()
    png = out / "sweep_heatmap.png"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "](sweep_heatmap.png)" in md
    assert "in-sample vs out-of-sample" in md
    best = outcome.ranked[0]
    assert f"## Best cell `{best.cell.id}`" in md
    # The top table has one line per top cell, each with a test median (the test feed ran).
    for v in outcome.top:
        assert v.test is not None
        assert f"| {v.rank} | `{v.scored.cell.id}` |" in md
    # The heat map's axes are the fields that vary, most influential first.
    assert "## Heat map (`overrides." in md


def test_best_cell_maximises_the_documented_score(swept) -> None:
    """Recompute the criterion from the CSV alone: median - MAD - gate penalty."""
    out, outcome, _ = swept
    _, rows = read_csv(out / "sweep_results.csv")
    by_cell: dict[str, list[dict[str, str]]] = {}
    for r in rows:
        if r["split"] == "train":
            by_cell.setdefault(r["cell_id"], []).append(r)
    scores = {}
    for cid, rs in by_cell.items():
        nets = [float(r["net_bps"]) if r["net_bps"] else 0.0 for r in rs]
        med = statistics.median(nets)
        mad = statistics.median(abs(x - med) for x in nets)
        fails = [
            len([g for g in r["hard_failed"].split(";") if g and g != "net_bps_total"]) for r in rs
        ]
        scores[cid] = med - mad - sum(fails) / len(fails)
    order = {c.id: c.index for c in outcome.grid.cells}
    expected = sorted(scores, key=lambda c: (-scores[c], order[c]))
    assert [s.cell.id for s in outcome.ranked] == expected
    assert outcome.ranked[0].score == pytest.approx(scores[expected[0]], abs=1e-12)
    # The test rows are exactly the top cells on the test feed.
    tested = {r["cell_id"] for r in rows if r["split"] == "test"}
    assert tested == set(expected[:TOP])


def test_a_cell_equals_the_soak_with_the_same_values(swept, tmp_path: Path) -> None:
    """Differential: the sweep's figures are what `mm_sim soak --no-tune` reports."""
    out, outcome, _ = swept
    _, rows = read_csv(out / "sweep_results.csv")
    row = next(r for r in rows if r["feed"] == "synthetic-short@2" and r["split"] == "train")
    cell = outcome.grid.by_id()[row["cell_id"]]
    sets = [f"--set={k}={v}" for k, v in cell.values]
    art = tmp_path / "soak"
    r = subprocess.run(
        [sys.executable, "-m", "mm_sim", "soak", "--no-tune", "--feed", "synthetic-short",
         "--seed", "2", "--iterations", "1", "--iteration-minutes", "0.5",
         "--artifacts", str(art), *sets],
        capture_output=True, text=True, cwd=REPO, timeout=300,
    )  # fmt: skip
    assert r.returncode == 0, r.stderr[-2000:]
    totals = json.loads((art / "reports" / "EDGE_REPORT.json").read_text())["totals"]
    gate = json.loads((art / "reports" / "KPI_GATE.json").read_text())
    assert float(row["net_bps"]) == totals["net_bps"]
    assert int(row["fills"]) == totals["fills"]
    assert float(row["cancel_ratio"]) == totals["cancel_ratio"]
    assert row["verdict"] == gate["verdict"]
    assert row["hard_failed"].split(";") == gate["hard_failed"]


def _drop_rows(csv_path: Path, n: int) -> list[tuple[str, str]]:
    """Remove the last ``n`` rows and leave a torn half-row behind (a crash mid-append)."""
    lines = csv_path.read_bytes().splitlines(keepends=True)
    kept, dropped = lines[:-n], lines[-n:]
    csv_path.write_bytes(b"".join(kept) + dropped[0][: len(dropped[0]) // 2])
    return [tuple(next(csv.reader([ln.decode()]))[1:3]) for ln in dropped]  # type: ignore[misc]


def test_resume_runs_only_the_missing_rows_and_ends_identical(
    swept, cluster: str, tmp_path: Path, grid_file: Path
) -> None:
    out, _, _ = swept
    _, original = read_csv(out / "sweep_results.csv")
    copy = tmp_path / "resumed"
    shutil.copytree(out, copy)
    # The last rows of the completed file are test rows, then training rows of the last cell:
    # drop both kinds.
    dropped = _drop_rows(copy / "sweep_results.csv", 4)
    assert {f for _, f in dropped} >= {TEST[0], TRAIN[1]}
    log = io.StringIO()
    outcome = run_sweep(options(copy, grid_file, scheduler=cluster, resume=True), log)
    assert outcome.ran == 4
    assert outcome.skipped == len(original) - 4
    assert "Dask cluster at tcp://127.0.0.1" in outcome.engine
    _, resumed = read_csv(copy / "sweep_results.csv")
    assert without_timing(resumed) == without_timing(original)
    # Resuming a complete sweep runs nothing and needs no cluster.
    again = run_sweep(options(copy, grid_file, resume=True), io.StringIO())
    assert again.ran == 0 and again.engine.startswith("none")


def _kill_once_then_run(marker: str, task: CellTask, prepared: Any = None) -> dict[str, Any]:
    """The first cell to run kills its worker process mid-cell; every other call is normal."""
    try:
        fd = os.open(marker, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
    except FileExistsError:
        return run_cell(task, prepared)
    os.write(fd, f"{task.cell_id} {task.feed.label} {os.getpid()}".encode())
    os.close(fd)
    os._exit(1)


def test_a_worker_dying_mid_cell_loses_nothing_and_counts_nothing_twice(
    swept, cluster: str, tmp_path: Path, grid_file: Path
) -> None:
    out, _, _ = swept
    _, original = read_csv(out / "sweep_results.csv")
    marker = tmp_path / "killed"
    outcome = run_sweep(
        options(tmp_path / "out", grid_file, scheduler=cluster, keep_records=True),
        io.StringIO(),
        cell_fn=partial(_kill_once_then_run, str(marker)),
    )
    cell_id, feed, pid = marker.read_text().split()
    _, rows = read_csv(tmp_path / "out" / "sweep_results.csv")
    assert [(r["cell_id"], r["feed"]) for r in rows].count((cell_id, feed)) == 1
    assert all(not r["worker"].endswith(f":{pid}") for r in rows)  # re-run elsewhere
    assert outcome.ran == len(rows) == len(original)
    run = tmp_path / "out" / rows[0]["run_dir"]
    assert (run / "soak" / "records" / "marks.bin").stat().st_size > 0  # --keep-records
    assert not list(run.parent.glob(".*.tmp"))  # no attempt left behind
    # Same grid, feeds and seeds: the same file as the undisturbed sweep, timing aside.
    assert without_timing(rows) == without_timing(original)


def test_fresh_sweep_refuses_a_used_directory_and_resume_refuses_other_settings(
    swept, grid_file: Path
) -> None:
    out, _, _ = swept
    with pytest.raises(UserError, match="already holds a sweep"):
        run_sweep(options(out, grid_file), io.StringIO())
    with pytest.raises(UserError, match="other iterations"):
        run_sweep(options(out, grid_file, resume=True, iterations=2), io.StringIO())
