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


@pytest.fixture(scope="module")
def soaked(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A real soak too short to fill: its n/a figures are what the soak writes for them."""
    root = tmp_path_factory.mktemp("soak") / "run"
    res = mm_sim("soak", "--iterations", "2", "--iteration-minutes", "0.02", "--out", str(root))
    assert res.returncode == 0, res.stderr[-2000:]
    return root


def test_a_run_with_undefined_figures_reports(soaked: Path) -> None:
    res = mm_sim("report", str(soaked), "--no-charts", "--json")
    assert res.returncode == 0, res.stderr
    assert json.loads(res.stdout)["net_bps"] is None


def test_the_amounts_a_run_writes_as_nan_are_read(soaked: Path, tmp_path: Path) -> None:
    """A fill into a book whose mid was unknown (a raw clock, a venue restart) leaves its
    amounts NaN in the line: the soak writes that itself, so its report must still build."""
    import shutil

    root = tmp_path / "run"
    shutil.copytree(soaked, root)
    metrics = root / "soak" / "metrics.jsonl"
    lines = metrics.read_text().splitlines()
    edited = json.loads(lines[0])
    for name in ("gross", "slippage", "inventory", "net"):
        edited["edge"]["amounts"][name] = float("nan")
    lines[0] = json.dumps(edited)
    metrics.write_text("\n".join(lines) + "\n")
    res = mm_sim("report", str(root), "--no-charts")
    assert res.returncode == 0, res.stderr


def _set(line: dict, dotted: str, value: object) -> None:
    *parents, last = dotted.split(".")
    for key in parents:
        line = line[key]
    line[last] = value


@pytest.mark.parametrize(
    ("field", "value", "expected"),
    [
        ("ws_lag_p95_ms", "NaN", "'NaN': Input should be a valid number"),
        ("ws_lag_p95_ms", float("nan"), "nan: expected a finite number or null"),
        ("partial", "yes", "'yes': Input should be a valid boolean"),
        ("extra.outage", "no", "'no': Input should be a valid boolean"),
        ("edge.pnl", float("inf"), "inf: expected a finite number or null"),
        ("edge.amounts.fees_eff", float("nan"), "nan: expected a finite number or null"),
        ("edge.fills", 3.0, "3.0: Input should be a valid integer"),
    ],
)
def test_a_hand_edited_metric_is_refused_and_nothing_is_written(
    soaked: Path, tmp_path: Path, field: str, value: object, expected: str
) -> None:
    """Lax parsing read "NaN" as a float and "yes" as true, and the verdict was computed on
    them; the report must stop at the bad value instead, with the reports left as they were."""
    import shutil

    root = tmp_path / "run"
    shutil.copytree(soaked, root)
    metrics = root / "soak" / "metrics.jsonl"
    lines = metrics.read_text().splitlines()
    edited = json.loads(lines[1])
    _set(edited, field, value)
    lines[1] = json.dumps(edited)  # a bare NaN / Infinity for the floats, as json writes them
    metrics.write_text("\n".join(lines) + "\n")
    written = sorted(p for p in root.rglob("*") if p.is_file() and p != metrics)
    before = {p: (p.read_bytes(), p.stat().st_mtime_ns) for p in written}
    res = mm_sim("report", str(root))
    assert res.returncode == 2
    assert res.stdout == "" and "Traceback" not in res.stderr
    assert res.stderr.count("\n") == 1, res.stderr
    assert f"{metrics}:2: field '{field}' = {expected}" in res.stderr
    assert sorted(p for p in root.rglob("*") if p.is_file() and p != metrics) == written
    assert {p: (p.read_bytes(), p.stat().st_mtime_ns) for p in written} == before


@pytest.mark.parametrize(
    ("field", "value", "expected"),
    [
        ("seed", "3", "'3': Input should be a valid integer"),
        ("initial_overrides.min_interval_ms", "700", "'700': Input should be a valid number"),
    ],
)
def test_a_hand_edited_run_json_is_refused_and_nothing_is_written(
    soaked: Path, tmp_path: Path, field: str, value: object, expected: str
) -> None:
    """run.json was read leniently too ("3" taken as the seed): the same strict read-back as
    the metrics lines."""
    import shutil

    root = tmp_path / "run"
    shutil.copytree(soaked, root)
    run_json = root / "soak" / "run.json"
    edited = json.loads(run_json.read_text())
    _set(edited, field, value)
    run_json.write_text(json.dumps(edited))
    written = sorted(p for p in root.rglob("*") if p.is_file())
    before = {p: (p.read_bytes(), p.stat().st_mtime_ns) for p in written}
    res = mm_sim("report", str(root))
    assert res.returncode == 2 and "Traceback" not in res.stderr
    assert res.stderr.count("\n") == 1, res.stderr
    assert f"{run_json}: field '{field}' = {expected}" in res.stderr
    assert {p: (p.read_bytes(), p.stat().st_mtime_ns) for p in written} == before
