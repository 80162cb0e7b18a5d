"""``mm_sim.read_run`` and ``mm_sim export``: the tables read back what fills.csv and the reports
say, and the exported files read back the tables (with their schema version)."""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest
from test_edge import simulate_run
from test_rundir import write_run

import mm_sim
from mm_sim.cli import main
from mm_sim.config import Profile
from mm_sim.errors import UserError
from mm_sim.report.export import export_run
from mm_sim.report.frames import TABLES, RunFrames
from mm_sim.report.render import build_reports
from mm_sim.report.rundir import RunDir
from mm_sim.report.schema import SCHEMA_VERSION, EdgeReport, KpiGate

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, RunFrames]:
    root = tmp_path_factory.mktemp("read") / "run"
    rd = write_run(root, simulate_run(7, n_iter=3, fills_per_iter=40))
    build_reports(rd, Profile(), charts=False)
    rd.close()
    return root, mm_sim.read_run(root)


def test_fills_equal_fills_csv(run: tuple[Path, RunFrames]) -> None:
    root, frames = run
    with open(root / "soak" / "fills.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    fills = frames.fills
    assert len(rows) == len(fills) > 0
    for col in rows[0]:
        want = [r[col] for r in rows]
        got = fills[col].tolist()
        if col in ("side", "liquidity"):
            assert got == want, col
        elif col in ("ts_ns", "iteration"):
            assert got == [int(v) for v in want], col
        else:  # fills.csv holds repr floats: exact equality, not approx
            assert got == [float(v) for v in want], col
    assert (fills["time"] == pd.to_datetime(fills["ts_ns"], unit="ns", utc=True)).all()
    assert str(fills["time"].dtype) == "datetime64[ns, UTC]"


def test_figures_equal_the_reports(run: tuple[Path, RunFrames]) -> None:
    root, frames = run
    edge = EdgeReport.model_validate_json((root / "reports" / "EDGE_REPORT.json").read_text())
    gate = KpiGate.model_validate_json((root / "reports" / "KPI_GATE.json").read_text())
    f, its = frames.fills, frames.iterations
    for sec, (_, row) in zip(edge.iterations, its.iterrows(), strict=True):
        mine = f[f["iteration"] == sec.iteration]
        side = np.where(mine["side"] == "buy", 1.0, -1.0)
        notional = math.fsum(mine["price"] * mine["qty"])
        gross = math.fsum(side * mine["qty"] * (mine["mid_decision"] - mine["quote_price"]))
        assert len(mine) == sec.fills == row["fills"]
        assert int((mine["liquidity"] == "maker").sum()) == sec.maker_fills
        assert notional == pytest.approx(sec.notional, rel=1e-12)
        assert -math.fsum(mine["fee"]) == pytest.approx(sec.amounts.fees_eff, rel=1e-12)
        assert gross / notional * 1e4 == pytest.approx(sec.gross_bps, rel=1e-9)
        acts = frames.actions[frames.actions["iteration"] == sec.iteration]["action"]
        assert {k: int((acts == k).sum()) for k in ("place", "replace", "cancel")} == dict(
            sec.actions
        )
        blocks = frames.blocks[frames.blocks["iteration"] == sec.iteration]["reason"]
        assert blocks.value_counts().to_dict() == {
            k: v for k, v in sec.block_reasons.counts.items() if v
        }
        assert row["net_bps"] == sec.net_bps and row["ts_start_ns"] == sec.ts_start_ns
        assert row["time_end"] == pd.Timestamp(sec.ts_end_ns, unit="ns", tz="UTC")
    assert its["verdict"].tolist() == [v.verdict for v in gate.iterations]
    assert len(f) == edge.totals.fills
    last = frames.marks.iloc[-1]
    assert last["mid"] == edge.totals.final_mid
    assert last["position"] == pytest.approx(edge.totals.position.end, abs=1e-12)


def test_iterations_and_decisions_are_flat(run: tuple[Path, RunFrames]) -> None:
    _, frames = run
    its = frames.iterations
    assert not any(isinstance(v, dict | list) for v in its.iloc[0].tolist())
    assert {"overrides.base_spread_bps_delta", "extra.events", "actions.place"} <= set(its)
    assert its["decisions"].tolist() == [2, 2, 2]
    d = frames.decisions
    for name in ("fills", "marks", "actions", "blocks", "decisions"):  # docs/REPORTS.md §9
        assert list(frames.table(name).columns[:3]) == ["ts_ns", "time", "iteration"], name
    assert d.groupby("iteration").size().tolist() == [2, 2, 2]
    hold = d[d["driver"] == "HOLD"].iloc[0]
    assert hold["time"] == pd.Timestamp(int(hold["ts_ns"]), unit="ns", tz="UTC")
    assert pd.isna(d[d["driver"] != "HOLD"].iloc[0]["time"])  # a boundary decision: no time


def test_parquet_export_reads_back(run: tuple[Path, RunFrames], tmp_path: Path) -> None:
    _, frames = run
    manifest = export_run(frames, tmp_path, "parquet")
    assert manifest["schema_version"] == SCHEMA_VERSION
    assert json.loads((tmp_path / "export.json").read_text()) == manifest
    for name in TABLES:
        back = pd.read_parquet(tmp_path / f"{name}.parquet")
        pd.testing.assert_frame_equal(back, frames.table(name), check_dtype=False)
        meta = pq.read_schema(tmp_path / f"{name}.parquet").metadata[b"mm_sim"]
        assert json.loads(meta) == {"schema_version": SCHEMA_VERSION, "table": name}
        assert manifest["tables"][name]["rows"] == len(back)


def test_export_command_csv(
    run: tuple[Path, RunFrames], tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    root, frames = run
    argv = ["export", str(root), "--format", "csv", "--out", str(tmp_path), "--json"]
    assert main(argv) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["schema_version"] == SCHEMA_VERSION and out["format"] == "csv"
    fills = pd.read_csv(tmp_path / "fills.csv")
    pd.testing.assert_frame_equal(fills.drop(columns="time"), frames.fills.drop(columns="time"),
                                  check_dtype=False)  # fmt: skip
    assert (pd.to_datetime(fills["time"]) == frames.fills["time"]).all()


def test_export_of_a_missing_run_is_one_line(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    assert main(["export", str(tmp_path / "nowhere")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "nowhere: run directory not found" in err


def test_export_never_writes_over_files_that_are_not_an_export(
    run: tuple[Path, RunFrames], tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    """--out RUN/soak replaced the run's own fills.csv with the export's wider table, and
    --out / wrote into the root directory: a directory holding anything but an earlier export
    is refused before the run is read."""
    root, _ = run
    fills = (root / "soak" / "fills.csv").read_bytes()
    for out in (root / "soak", root, tmp_path.parent):
        assert main(["export", str(root), "--format", "csv", "--out", str(out)]) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and "is not empty and holds no earlier export" in err, err
    assert (root / "soak" / "fills.csv").read_bytes() == fills
    # An earlier export is replaced; the default place is RUN_DIR/export.
    out = tmp_path / "x"
    assert main(["export", str(root), "--format", "csv", "--out", str(out)]) == 0
    assert main(["export", str(root), "--format", "parquet", "--out", str(out)]) == 0
    assert json.loads((out / "export.json").read_text())["format"] == "parquet"
    capsys.readouterr()


def test_the_documented_example_runs(
    run: tuple[Path, RunFrames], capsys: pytest.CaptureFixture
) -> None:
    root, frames = run
    doc = (REPO / "docs" / "REPORTS.md").read_text().split("## 9. Reading a run in Python")[1]
    code = doc.split("```python\n")[1].split("```")[0]
    exec(code.replace('"artifacts"', repr(str(root))), {})
    out = capsys.readouterr().out.splitlines()
    mine, theirs = map(float, out[-1].split())
    assert mine == pytest.approx(theirs, rel=1e-12)
    for name in ("ts_ns", "time", "iteration", "adverse.1s.adverse_bps", "amounts.net"):
        assert f"`{name}`" in doc and (name in frames.iterations or name in frames.fills)


def test_record_layouts_read_with_one_json_load(run: tuple[Path, RunFrames]) -> None:
    root, frames = run
    cfg = json.loads((root / "soak" / "run.json").read_text())
    fills = cfg["records"]["fills"]
    assert fills["ts"] == "<i8" and fills["price"] == "<f8"
    raw = np.fromfile(root / "soak" / "records" / "fills.bin", dtype=np.dtype(list(fills.items())))
    assert raw["price"].tolist() == frames.fills["price"].tolist()


def test_runs_with_the_older_layout_text_still_load(
    run: tuple[Path, RunFrames], tmp_path: Path
) -> None:
    root, _ = run
    cfg = json.loads((root / "soak" / "run.json").read_text())
    old = {k: json.dumps([[n, t] for n, t in v.items()]) for k, v in cfg["records"].items()}
    (tmp_path / "soak").mkdir()
    (tmp_path / "soak" / "run.json").write_text(json.dumps({**cfg, "records": old}))
    assert RunDir(tmp_path).load_config().records == old
    changed = {**cfg["records"], "marks": {**cfg["records"]["marks"], "mid": "<f4"}}
    (tmp_path / "soak" / "run.json").write_text(json.dumps({**cfg, "records": changed}))
    with pytest.raises(UserError, match="records 'marks' were written with layout"):
        RunDir(tmp_path).load_config()
