"""Run directory: commit protocol, crash/resume truncation, fills.csv, overrides, refusals."""

from __future__ import annotations

import csv
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from test_edge import SimRun, simulate_run

from mm_sim.config import Overrides, Profile
from mm_sim.errors import UserError
from mm_sim.report.render import build_reports, evaluate_pending
from mm_sim.report.runconfig import make_run_config
from mm_sim.report.rundir import FILLS_CSV_HEADER, RECORD_DTYPES, RunDir
from mm_sim.report.schema import EdgeReport, IterationLine

PROFILE = Profile()
FEED = {"name": "synthetic-test", "events": 0}


def config(seed: int = 1) -> object:
    return make_run_config(
        settings={"iterations": 5, "iteration_minutes": 0.5},
        profile=PROFILE,
        overrides=Overrides(),
        feed=FEED,
        seed=seed,
    )


@dataclass(frozen=True)
class FakeDecision:
    """Shaped like the tuner's Decision (a dataclass with to_json)."""

    iteration: int
    driver: str
    field: str | None
    old: float | None
    new: float | None
    reason: str
    sim_ts: int | None = None

    def to_json(self) -> dict[str, object]:
        return self.__dict__.copy()


def write_iteration(rd: RunDir, run: SimRun, k: int) -> IterationLine:
    it = run.iterations[k]
    half = len(it["fills"]) // 2
    # Two chunks, as the runner appends them.
    rd.append(fills=it["fills"][:half], actions=it["actions"], marks=it["marks"][:10])
    rd.append(fills=it["fills"][half:], blocks=it["blocks"], marks=it["marks"][10:])
    pend = evaluate_pending(rd, PROFILE, k, ws_lag_p95_ms=40.0 + k)
    spread = 0.10 + 0.01 * k
    decisions = [
        FakeDecision(k, "slippage_bps", "base_spread_bps_delta", spread, spread + 0.01, "test"),
        {"iteration": k, "driver": "HOLD", "field": None, "old": None, "new": None,
         "reason": "no trigger", "sim_ts": int(it["marks"]["ts"][-1])},
    ]  # fmt: skip
    ovr = {**Overrides().as_dict(), "base_spread_bps_delta": spread}
    line = rd.commit_iteration(pend, overrides=ovr, decisions=decisions, extra={"events": 123})
    rd.append_summary(f"iteration {k}: net_bps {line.edge.net_bps}")
    return line


def write_run(root: Path, run: SimRun, n: int | None = None) -> RunDir:
    rd = RunDir(root)
    rd.begin(config())
    for k in range(len(run.iterations) if n is None else n):
        write_iteration(rd, run, k)
    return rd


@pytest.fixture(scope="module")
def run() -> SimRun:
    return simulate_run(11, n_iter=5, fills_per_iter=60)


def test_commit_lines_match_rebuilt_report(tmp_path: Path, run: SimRun) -> None:
    rd = write_run(tmp_path / "r", run, 3)
    build_reports(rd, PROFILE, charts=False)
    rd.close()
    report = EdgeReport.model_validate_json((rd.reports / "EDGE_REPORT.json").read_text())
    lines = RunDir(rd.root).committed_lines()
    assert [ln.iteration for ln in lines] == [0, 1, 2]
    for ln, sec in zip(lines, report.iterations, strict=True):
        assert ln.edge == sec  # the runner's view and the rebuilt report agree exactly
        assert ln.offsets["fills"] % RECORD_DTYPES["fills"].itemsize == 0
    assert lines[2].extra == {"events": 123}
    assert lines[2].ws_lag_p95_ms == 42.0
    assert report.totals.fills == sum(len(run.iterations[k]["fills"]) for k in range(3))
    summary = (rd.soak / "summary.txt").read_text().splitlines()
    assert len(summary) == 3 and summary[0].startswith("iteration 0: net_bps ")


def test_overrides_written_after_each_commit(tmp_path: Path, run: SimRun) -> None:
    rd = write_run(tmp_path / "r", run, 2)
    ovr = json.loads(rd.overrides_json.read_text())
    assert ovr["base_spread_bps_delta"] == pytest.approx(0.12)  # 0.11 in force, +0.01 decided
    assert set(ovr) == set(Overrides.FIELDS)
    line = rd.committed_lines()[-1]
    assert line.overrides["base_spread_bps_delta"] == pytest.approx(0.11)
    assert line.overrides_next == ovr
    assert [d.driver for d in line.decisions] == ["slippage_bps", "HOLD"]
    assert rd.last_overrides_text == rd.overrides_json.read_text()  # own write, not an edit
    rd.close()


def test_crash_after_partial_write_resumes_exactly(tmp_path: Path, run: SimRun) -> None:
    rd = write_run(tmp_path / "crash", run, 3)
    committed = {n: rd.record_path(n).read_bytes() for n in RECORD_DTYPES}
    # Iteration 3 was being written: some records appended, flushed, never committed...
    rd.append(fills=run.iterations[3]["fills"], marks=run.iterations[3]["marks"][:5])
    rd.sizes()
    rd.close()
    # ...then the process died mid-write: torn records and half a metrics line.
    for n in RECORD_DTYPES:
        with open(rd.record_path(n), "ab") as fh:
            fh.write(b"\xde\xad\xbe\xef" * 3 + b"\x01")
    with open(rd.metrics_jsonl, "ab") as fh:
        fh.write(b'{"schema_version":1,"iteration":3,"edge":{"fil')
    (rd.overrides_json).write_text('{"stale": 1}')

    rd2 = RunDir(rd.root)
    lines = rd2.begin(config(), resume=True)
    assert [ln.iteration for ln in lines] == [0, 1, 2]
    for n in RECORD_DTYPES:
        assert rd2.record_path(n).read_bytes() == committed[n]
    assert rd2.metrics_jsonl.read_bytes().endswith(b"\n")
    assert json.loads(rd2.overrides_json.read_text()) == lines[-1].overrides_next
    # Finish the run after the resume; it must equal a run that never crashed.
    write_iteration(rd2, run, 3)
    write_iteration(rd2, run, 4)
    build_reports(rd2, PROFILE, charts=False)
    rd2.close()
    clean = write_run(tmp_path / "clean", run)
    build_reports(clean, PROFILE, charts=False)
    clean.close()
    for name in ("EDGE_REPORT.json", "KPI_GATE.json", "soak_metrics.json", "SOAK_RESULTS.md"):
        assert (rd2.reports / name).read_bytes() == (clean.reports / name).read_bytes(), name
    assert rd2.fills_csv.read_bytes() == clean.fills_csv.read_bytes()


def test_resume_removes_writes_a_killed_run_left_unfinished(tmp_path: Path, run: SimRun) -> None:
    """A SIGKILL between an atomic write's temp file and its rename leaves ``.NAME.*.tmp``
    behind; once the resumed run holds the lock they are leftovers, and a resumed directory
    must hold the files an uninterrupted run has (nothing else)."""
    rd = write_run(tmp_path / "r", run, 2)
    build_reports(rd, Profile())
    rd.close()
    stale = [
        rd.reports / ".EDGE_REPORT.json.ktkxjnve.tmp",
        rd.soak / ".run.json.a1b2c3.tmp",
        rd.soak / "checkpoints" / ".checkpoint.npz.x9.tmp",
    ]
    for f in stale:
        f.parent.mkdir(parents=True, exist_ok=True)
        f.write_bytes(b"half a file")
    kept = rd.reports / "notes.tmp"  # not a hidden temp file of ours: left alone
    kept.write_text("x")
    RunDir(rd.root).begin(config(), resume=True)
    assert [f for f in stale if f.exists()] == [] and kept.exists()


def test_fills_csv_alone_recomputes_pnl(tmp_path: Path, run: SimRun) -> None:
    rd = write_run(tmp_path / "r", run)
    build_reports(rd, PROFILE, charts=False)
    rd.close()
    report = json.loads((rd.reports / "EDGE_REPORT.json").read_text())
    final_mid = report["totals"]["final_mid"]
    assert report["totals"]["position"]["start"] == 0.0  # the run starts flat
    cash = 0.0
    position = 0.0
    rows = 0
    with open(rd.fills_csv, newline="") as fh:
        reader = csv.reader(fh)
        assert tuple(next(reader)) == FILLS_CSV_HEADER
        assert ",".join(FILLS_CSV_HEADER) == (
            "ts_ns,iteration,side,price,qty,fee,liquidity,quote_price,mid_decision,mid_fill,"
            "order_age_ms"
        )
        for row in reader:
            rec = dict(zip(FILLS_CSV_HEADER, row, strict=True))
            s = {"buy": 1.0, "sell": -1.0}[rec["side"]]
            assert rec["liquidity"] in ("maker", "taker")
            q, p = float(rec["qty"]), float(rec["price"])
            cash -= s * q * p + float(rec["fee"])
            position += s * q
            rows += 1
    pnl = cash + position * final_mid
    assert rows == report["totals"]["fills"] > 0
    assert pnl == pytest.approx(report["totals"]["pnl"], rel=1e-9)
    assert position == pytest.approx(report["totals"]["position"]["end"], abs=1e-12)


def test_fresh_start_refuses_non_empty_directory(tmp_path: Path, run: SimRun) -> None:
    other = tmp_path / "other"
    other.mkdir()
    (other / "notes.txt").write_text("x")
    with pytest.raises(UserError, match=r"not empty.*--resume"):
        RunDir(other).begin(config())
    rd = write_run(tmp_path / "r", run, 1)
    rd.close()
    with pytest.raises(UserError, match="holds an existing run"):
        RunDir(rd.root).begin(config())
    with pytest.raises(UserError, match="not found"):
        RunDir(other).begin(config(), resume=True)  # not a run directory
    # Resuming an absent directory simply starts it.
    assert RunDir(tmp_path / "new").begin(config(), resume=True) == []


def test_resume_refuses_a_different_run(tmp_path: Path, run: SimRun) -> None:
    rd = write_run(tmp_path / "r", run, 1)
    rd.close()
    with pytest.raises(UserError, match="different --seed"):
        RunDir(rd.root).begin(config(seed=2), resume=True)
    # The refused attempt released its lock: a matching resume works.
    RunDir(rd.root).begin(config(), resume=True)


def test_second_writer_is_refused(tmp_path: Path, run: SimRun) -> None:
    rd = write_run(tmp_path / "r", run, 1)
    with pytest.raises(UserError, match="another mm_sim process"):
        RunDir(rd.root).begin(config(), resume=True)
    rd.close()


def test_damaged_directory_is_reported(tmp_path: Path, run: SimRun) -> None:
    rd = write_run(tmp_path / "r", run, 2)
    rd.close()
    path = rd.record_path("marks")
    path.write_bytes(path.read_bytes()[: -RECORD_DTYPES["marks"].itemsize])
    with pytest.raises(UserError, match=r"marks\.bin: .* shorter .* damaged"):
        RunDir(rd.root).begin(config(), resume=True)
    text = rd.metrics_jsonl.read_text().splitlines()
    rd.metrics_jsonl.write_text(text[0] + "\n{not json}\n")
    with pytest.raises(UserError, match=r"metrics\.jsonl:2: invalid JSON"):
        RunDir(rd.root).committed_lines()


def test_append_and_commit_misuse(tmp_path: Path, run: SimRun) -> None:
    rd = RunDir(tmp_path / "r")
    with pytest.raises(RuntimeError, match="before begin"):
        rd.append(fills=run.iterations[0]["fills"])
    rd.begin(config())
    with pytest.raises(TypeError, match="fills: expected dtype"):
        rd.append(fills=np.zeros(2, dtype=[("ts", np.int64)]))
    rd.append(fills=run.iterations[0]["fills"], marks=run.iterations[0]["marks"])
    pend = evaluate_pending(rd, PROFILE, 0, None)
    rd.append(marks=run.iterations[0]["marks"][:1])  # appended after the evaluation
    with pytest.raises(RuntimeError, match="evaluate again"):
        rd.commit_iteration(pend, overrides=Overrides())
    rd.close()


def test_partial_iteration_and_missing_lag(tmp_path: Path, run: SimRun) -> None:
    rd = RunDir(tmp_path / "r")
    rd.begin(config(), resume=False)
    rd.append(**run.iterations[0])
    pend = evaluate_pending(rd, PROFILE, 0, ws_lag_p95_ms=float("nan"))
    line = rd.commit_iteration(pend, overrides=Overrides(), partial=True)
    assert line.partial and line.ws_lag_p95_ms is None and line.edge.ws_lag_p95_ms is None
    assert line.overrides_next == Overrides().as_dict()
    build_reports(rd, PROFILE, charts=False)
    rd.close()
    md = (rd.reports / "SOAK_RESULTS.md").read_text()
    assert "| 0 (partial) |" in md
    # Strict JSON: no NaN anywhere in what was written.
    for name in ("EDGE_REPORT.json", "KPI_GATE.json", "soak_metrics.json"):
        json.loads((rd.reports / name).read_text(), parse_constant=_no_nan)
    json.loads(rd.metrics_jsonl.read_text(), parse_constant=_no_nan)


def _no_nan(token: str) -> float:
    raise AssertionError(f"non-standard JSON constant {token}")


def test_run_json_keeps_extra_keys(tmp_path: Path) -> None:
    cfg = make_run_config(
        settings={}, profile=PROFILE, overrides=Overrides(), feed=FEED, seed=3,
        instrument={"symbol": "BTCUSDT"}, control=False,
    )  # fmt: skip
    rd = RunDir(tmp_path / "r")
    rd.begin(cfg)
    rd.close()
    back = RunDir(rd.root).load_config()
    assert back.model_extra == {"instrument": {"symbol": "BTCUSDT"}, "control": False}
    assert Profile.model_validate(back.profile) == PROFILE


def test_real_core_output_through_the_run_directory(tmp_path: Path) -> None:
    """The lead's core, a short synthetic feed, three iterations: net = the engine's own PnL."""
    import mm_sim.core.engine as engine_mod  # our own module: an import error must fail
    from mm_sim.config import load_profile
    from mm_sim.feeds.spec import load_events, resolve_feed

    events, instrument, identity = load_events(resolve_feed("synthetic-short"), 1)
    profile = load_profile("S1", {"quoting.base_half_spread_bps": 0.2})
    ovr = Overrides(min_interval_ms=20, base_spread_bps_delta=0.0)
    eng = engine_mod.Engine(profile, ovr, instrument, 1)
    cfg = make_run_config(settings={}, profile=profile, overrides=ovr, feed=identity, seed=1)
    rd = RunDir(tmp_path / "real")
    rd.begin(cfg)
    for k in range(3):
        for c in range(k * 50_000, (k + 1) * 50_000, 25_000):
            res = eng.run(events[c : c + 25_000])
            rd.append(fills=res.fills, actions=res.actions, blocks=res.blocks, marks=res.marks)
        rd.append(marks=eng.mark_now())  # the closing mark
        rd.commit_iteration(evaluate_pending(rd, profile, k, 30.0), overrides=ovr)
    build_reports(rd, profile, charts=False)
    rd.close()
    report = EdgeReport.model_validate_json((rd.reports / "EDGE_REPORT.json").read_text())
    t = report.totals
    assert t.fills > 20
    engine_pnl = eng.cash + eng.position * eng.mid  # the account started flat with no cash
    assert t.net_bps is not None
    assert t.net_bps * t.notional / 1e4 == pytest.approx(engine_pnl, rel=1e-9, abs=1e-9)
    for sec in report.iterations:
        assert sec.pnl_residual is not None and abs(sec.pnl_residual) < 1e-9
