"""``mm_sim report RUN_DIR`` as a subprocess: same code path, same bytes as the runner's build."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from pydantic import BaseModel
from test_edge import simulate_run
from test_rundir import write_run

from mm_sim.config import Profile
from mm_sim.report import schema
from mm_sim.report.render import build_reports, report_paths
from mm_sim.report.rundir import RunDir

REPO = Path(__file__).resolve().parent.parent


def mm_sim(*args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "NUMBA_CACHE_DIR": str(REPO / ".venv" / "numba-cache")}
    return subprocess.run(
        [sys.executable, "-m", "mm_sim", *args],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> tuple[RunDir, dict[str, bytes], dict]:
    root = tmp_path_factory.mktemp("cli") / "run"
    rd = write_run(root, simulate_run(5, n_iter=3, fills_per_iter=50))
    summary = build_reports(rd, Profile(), charts=True)
    rd.close()
    files = {p.name: p.read_bytes() for p in report_paths(root)}
    return rd, files, summary


def test_cli_rebuild_gives_the_same_bytes(built: tuple[RunDir, dict[str, bytes], dict]) -> None:
    rd, before, summary = built
    for p in report_paths(rd.root):
        p.unlink()
    res = mm_sim("report", str(rd.root), "--json")
    assert res.returncode == 0, res.stderr
    out = json.loads(res.stdout)
    assert out["verdict"] == summary["verdict"] and out["net_bps"] == summary["net_bps"]
    after = {p.name: p.read_bytes() for p in report_paths(rd.root)}
    assert sorted(after) == sorted(before)
    for name, data in before.items():
        assert after[name] == data, name
    assert after["pnl.png"].startswith(b"\x89PNG")


def test_report_files_validate_against_the_schema(
    built: tuple[RunDir, dict[str, bytes], dict],
) -> None:
    rd, _, summary = built
    edge = schema.load(schema.EdgeReport, rd.reports / "EDGE_REPORT.json")
    gate = schema.load(schema.KpiGate, rd.reports / "KPI_GATE.json")
    soak = schema.load(schema.SoakMetrics, rd.reports / "soak_metrics.json")
    assert gate.verdict == summary["verdict"]
    assert len(edge.iterations) == len(soak.iterations) == 3
    assert edge.totals.final_mid is not None
    md = (rd.reports / "SOAK_RESULTS.md").read_text()
    assert f"**Verdict: {gate.verdict}**" in md
    assert gate.next_step in md
    for png in ("pnl.png", "inventory.png", "quoted_spread.png", "blocks.png"):
        assert f"]({png})" in md
    assert "| 0 | — | slippage_bps | base_spread_bps_delta | 0.1 | 0.11 | test |" in md


def test_cli_errors_are_one_line(tmp_path: Path) -> None:
    res = mm_sim("report", str(tmp_path / "missing"))
    assert res.returncode == 2
    assert (
        res.stderr.strip()
        == f"mm_sim report: error: {tmp_path / 'missing'}: run directory not found"
    )
    (tmp_path / "empty").mkdir()
    res = mm_sim("report", str(tmp_path / "empty"))
    assert res.returncode == 2 and "not a run directory" in res.stderr
    assert "Traceback" not in res.stderr


def test_check_flag_exits_1_on_fail(built: tuple[RunDir, dict[str, bytes], dict]) -> None:
    rd, _, summary = built
    res = mm_sim("report", str(rd.root), "--no-charts", "--check")
    assert res.returncode == (1 if summary["verdict"] == "FAIL" else 0), res.stderr
    assert res.stdout.startswith(f"verdict {summary['verdict']}")


def _fields(model: type[BaseModel], seen: set[type]) -> set[str]:
    out: set[str] = set()
    if model in seen:
        return out
    seen.add(model)
    for name, info in model.model_fields.items():
        out.add(name)
        for arg in re.findall(r"\w+", str(info.annotation)):
            sub = getattr(schema, arg, None)
            if isinstance(sub, type) and issubclass(sub, BaseModel):
                out |= _fields(sub, seen)
    return out


def test_every_schema_field_is_documented() -> None:
    doc = (REPO / "docs" / "REPORTS.md").read_text()
    seen: set[type] = set()
    names: set[str] = set()
    for model in (schema.EdgeReport, schema.KpiGate, schema.SoakMetrics, schema.RunConfig):
        names |= _fields(model, seen)
    missing = sorted(n for n in names if f"`{n}`" not in doc)
    assert not missing, f"docs/REPORTS.md does not describe: {missing}"
