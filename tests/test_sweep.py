"""The sweep on a real 2-worker Dask LocalCluster: rows, best cell, report, resume, worker death,
Ctrl-C, failing cells, and schedulers that are not there or not Dask.

A small grid (4 × 2 = 8 cells) of 30-second runs on two synthetic training days and one test
day keeps this fast; what is under test — one row per cell × feed, nothing lost or counted
twice, a deterministic file, a best cell that is a cell of the grid and loads as overrides, the
numbers equal to the soak's own — does not depend on the length.
"""

from __future__ import annotations

import contextlib
import csv
import io
import json
import logging
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from functools import partial
from pathlib import Path
from typing import Any

import cloudpickle
import pytest

from mm_sim.config import load_overrides, load_profile
from mm_sim.errors import UserError
from mm_sim.runtime.arm_names import RULE_ARMS
from mm_sim.sweep.cell import CellTask, run_cell
from mm_sim.sweep.cluster import probe_scheduler, warm_workers
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
        dashboard_address=":0",
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
        assert r["iterations_run"] == "1"  # the whole run: 1 iteration of 30 s
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
    raw = json.loads((out / "best_cell.json").read_text())
    assert set(raw) == set(best.FIELDS)
    assert all(type(v) is float for v in raw.values()), raw  # 40.0, not 40: as the soak writes
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
    assert "iterations committed per run (`iterations_run`): 1." in md
    best = outcome.ranked[0]
    assert f"## Best cell `{best.cell.id}`" in md
    # The top table has one line per top cell, each with a test median (the test feed ran).
    for v in outcome.top:
        assert v.test is not None
        assert f"| {v.rank} | `{v.scored.cell.id}` |" in md
    # The heat map's axes are the fields that vary, most influential first.
    assert "## Heat map (`overrides." in md
    # The best cell's held-out run ran the model arms: its fill-model band is on its row and
    # spans that run's own net_bps; training runs have none.
    edges = list((out / "runs" / best.cell.id).glob("*/reports/EDGE_REPORT.json"))
    model = [json.loads(p.read_text())["error_bars"]["model"] for p in edges]
    held = [m for m in model if m]
    assert len(held) == len(TEST) and len(model) == len(TRAIN) + len(TEST)
    lo, hi = held[0]["lo"], held[0]["hi"]
    assert lo <= held[0]["net_bps"] <= hi and len(held[0]["arms"]) == len(RULE_ARMS)
    row = next(ln for ln in md.splitlines() if ln.startswith(f"| `{TEST[0]}` | test |"))
    assert f"[{lo:+.3f}, {hi:+.3f}]" in row


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
    cell = next(c for c in outcome.grid.cells if c.id == row["cell_id"])
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
    # A killed attempt's directory is swept away by the resume.
    stale = copy / "runs" / dropped[0][0] / ".synthetic-short@1.0123456789ab.tmp"
    stale.mkdir(parents=True)
    log = io.StringIO()
    outcome = run_sweep(options(copy, grid_file, scheduler=cluster, resume=True), log)
    assert not stale.exists()
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
    swept, grid_file: Path, tmp_path: Path
) -> None:
    out, _, _ = swept
    with pytest.raises(UserError, match="already holds a sweep"):
        run_sweep(options(out, grid_file), io.StringIO())
    with pytest.raises(UserError, match="other iterations"):
        run_sweep(options(out, grid_file, resume=True, iterations=2), io.StringIO())
    # --resume where no sweep ever ran: an error, not a silent fresh start.
    with pytest.raises(UserError, match=r"no sweep to resume in .*sweep\.json not found"):
        run_sweep(options(tmp_path / "never", grid_file, resume=True), io.StringIO())
    assert not (tmp_path / "never").exists()
    # --out naming a file.
    (tmp_path / "afile").write_text("x")
    with pytest.raises(UserError, match="afile: a file, not a directory"):
        run_sweep(options(tmp_path / "afile", grid_file), io.StringIO())


def test_run_settings_come_from_the_environment_like_the_soaks(
    swept, grid_file: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    out, _, _ = swept
    copy = tmp_path / "copy"
    shutil.copytree(out, copy)
    no_run = {k: None for k in RUN}
    # MM_ITERATIONS / MM_ITERATION_MINUTES match the sweep's 1 × 0.5: the resume has nothing to
    # do (with the soak's defaults of 6 × 30 it would refuse the directory).
    monkeypatch.setenv("MM_ITERATIONS", "1")
    monkeypatch.setenv("MM_ITERATION_MINUTES", "0.5")
    again = run_sweep(options(copy, grid_file, resume=True, **no_run), io.StringIO())
    assert again.ran == 0
    monkeypatch.setenv("MM_PROFILE", "no-such-profile")
    with pytest.raises(UserError, match="unknown profile 'no-such-profile'"):
        run_sweep(options(tmp_path / "fresh", grid_file, **no_run), io.StringIO())


def test_a_resume_on_a_smaller_grid_counts_only_its_rows(swept, tmp_path: Path) -> None:
    """Rows of cells no longer in the grid stay in the file but are not counted as current."""
    out, outcome, _ = swept
    copy = tmp_path / "copy"
    shutil.copytree(out, copy)
    top = [s.cell.as_dict() for s in outcome.ranked[:TOP]]
    spreads = sorted({c["overrides.base_spread_bps_delta"] for c in top})
    intervals = sorted({c["overrides.min_interval_ms"] for c in top})
    small = tmp_path / "small.toml"
    small.write_text(  # a sub-grid holding the top cells: their test rows exist, nothing runs
        f"[overrides]\nbase_spread_bps_delta = {spreads}\nmin_interval_ms = {intervals}\n"
        "[profile.quoting]\ngamma = 0.2\n"
    )
    again = run_sweep(options(copy, small, resume=True), io.StringIO())
    assert again.ran == 0
    n_cells = len(spreads) * len(intervals)
    current = n_cells * len(TRAIN) + TOP * len(TEST)
    total = N_CELLS * len(TRAIN) + TOP * len(TEST)
    md = (copy / "SWEEP_REPORT.md").read_text()
    assert f"Rows: {current} in `sweep_results.csv` ({total - current} more, of cells" in md
    assert f"Rows: {total}" not in md


def _raise_on_first_cell(marker: str, first: str, task: CellTask, prepared: Any = None) -> dict:
    """A bug in one cell (on one feed): every call is logged, so a retry would show."""
    if (task.cell_id, task.feed.label) == (first, TRAIN[0]):
        with open(marker, "a") as fh:
            fh.write(f"{os.getpid()}\n")
        raise RuntimeError("boom in the cell")
    return run_cell(task, prepared)


def test_a_failing_cell_names_cell_feed_and_error_and_is_not_retried(
    swept, cluster: str, tmp_path: Path, grid_file: Path
) -> None:
    _, outcome, _ = swept
    first = outcome.grid.cells[0]
    marker = tmp_path / "calls"
    # Left over from an earlier attempt at this directory: a day no longer swept, a torn write.
    stray = [tmp_path / "out" / "feeds" / n for n in ("gone@9-0123456789.npy", ".x.npy.1.tmp")]
    stray[0].parent.mkdir(parents=True)
    for f in stray:
        f.write_bytes(b"x")
    with pytest.raises(UserError) as info:
        run_sweep(
            options(tmp_path / "out", grid_file, scheduler=cluster),
            io.StringIO(),
            cell_fn=partial(_raise_on_first_cell, str(marker), first.id),
        )
    msg = str(info.value)
    assert f"cell {first.id} ({first.label()}) on feed {TRAIN[0]} failed" in msg
    assert "RuntimeError: boom in the cell at " in msg and "_raise_on_first_cell" in msg
    sets = " ".join(f"--set {k}={v}" for k, v in first.values)
    assert (
        f"`python -m mm_sim soak --no-tune --feed synthetic-short --seed 1 --iterations 1 "
        f"--iteration-minutes 0.5 --profile S1 {sets}`" in msg
    )
    assert "then --resume" in msg
    assert len(marker.read_text().split()) == 1  # deterministic: run once, not retried
    # The generated days a --resume would use are kept; nothing else is. (A day still being
    # written by a worker of the shared cluster may show as a dot file: not counted.)
    assert not any(f.exists() for f in stray)
    days = [p for p in (tmp_path / "out" / "feeds").iterdir() if not p.name.startswith(".")]
    kept = {p.name.rsplit("-", 1)[0] for p in days}  # SLUG-HASH.npy and .json
    assert kept and kept <= set(TRAIN), kept


def _broken_warm_up() -> float:
    raise ImportError("numba is not what the driver has")


def test_a_worker_failing_its_warm_up_is_named(cluster: str) -> None:
    from dask.distributed import Client

    with Client(cluster) as client:
        with pytest.raises(UserError) as info:
            warm_workers(client, _broken_warm_up)
        worker = next(iter(client.scheduler_info()["workers"]))
    msg = str(info.value)
    assert "the warm-up cell failed on worker tcp://127.0.0.1:" in msg
    assert "ImportError: numba is not what the driver has" in msg
    # A worker's address given as the scheduler's: Dask, but the wrong peer.
    with pytest.raises(UserError, match="a Dask Worker, not a scheduler"):
        probe_scheduler(worker, 5.0)


def test_a_scheduler_without_workers_times_out_with_a_message(
    grid_file: Path, tmp_path: Path
) -> None:
    from dask.distributed import LocalCluster

    log = io.StringIO()
    with (
        LocalCluster(n_workers=0, processes=True, host="127.0.0.1", dashboard_address=":0",
                     silence_logs=logging.ERROR) as empty,
        pytest.raises(UserError, match=r"no worker joined within 1\.5 s \(--wait-workers\)"),
    ):  # fmt: skip
        run_sweep(
            options(tmp_path / "o", grid_file, scheduler=empty.scheduler_address,
                    wait_workers=1.5),
            log,
        )  # fmt: skip
    assert "has no worker yet: waiting up to 1.5 s" in log.getvalue()


class _NotDask:
    """A loopback listener that accepts and then stays silent, or answers garbage."""

    def __init__(self, reply: bytes | None) -> None:
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.reply = reply
        self.conns: list[socket.socket] = []
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.conns.append(conn)
            if self.reply is not None:
                conn.sendall(self.reply)

    def close(self) -> None:
        for c in self.conns:
            c.close()
        self.sock.close()


def _refused_port() -> int:
    s = socket.create_server(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


@pytest.mark.parametrize(
    ("kind", "needle"),
    [
        ("silent", "did not answer as a Dask scheduler within 2 s (--connect-timeout)"),
        ("garbage", "not a Dask scheduler (its answer could not be read: "),
        ("refused", "cannot connect (Connection refused)"),
    ],
)
def test_a_scheduler_address_that_is_not_dask_fails_cleanly(
    kind: str, needle: str, tmp_path: Path, grid_file: Path
) -> None:
    server = None if kind == "refused" else _NotDask(None if kind == "silent" else b"\xff" * 64)
    port = _refused_port() if server is None else server.port
    try:
        r = subprocess.run(
            [sys.executable, "-m", "mm_sim", "sweep", "--grid", str(grid_file), "--feeds",
             TRAIN[0], "--iterations", "1", "--iteration-minutes", "0.5", "--out",
             str(tmp_path / "o"), "--scheduler", f"tcp://127.0.0.1:{port}",
             "--connect-timeout", "2"],
            capture_output=True, text=True, cwd=REPO, timeout=120,  # a hang fails here
        )  # fmt: skip
    finally:
        if server is not None:
            server.close()
    assert r.returncode == 2, r.stderr[-2000:]
    assert "Traceback" not in r.stderr
    assert f"error: --scheduler tcp://127.0.0.1:{port}: " in r.stderr and needle in r.stderr


def test_ctrl_c_stops_cleanly_keeps_rows_and_resume_finishes(
    swept, cluster: str, tmp_path: Path, grid_file: Path
) -> None:
    """Ctrl-C in a terminal signals the whole process group: the driver and its workers."""
    out_orig, _, _ = swept
    out = tmp_path / "out"
    cmd = [sys.executable, "-m", "mm_sim", "sweep", "--grid", str(grid_file), "--train", *TRAIN,
           "--test", *TEST, "--top", str(TOP), "--iterations", "1", "--iteration-minutes", "0.5",
           "--workers", "2", "--out", str(out)]  # fmt: skip
    proc = subprocess.Popen(
        cmd, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        start_new_session=True,
    )  # fmt: skip
    csv_path = out / "sweep_results.csv"
    try:
        deadline = time.monotonic() + 120
        while not (csv_path.exists() and csv_path.read_bytes().count(b"\n") >= 2):
            assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()
            time.sleep(0.02)
        # While it runs, a second sweep on the directory is refused (DIR/.lock).
        with pytest.raises(UserError, match="another sweep is running in this directory"):
            run_sweep(options(out, grid_file, scheduler=cluster, resume=True), io.StringIO())
        os.killpg(proc.pid, signal.SIGINT)
        stdout, stderr = proc.communicate(timeout=120)
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)  # our own process group, if anything is left
    assert proc.returncode == 130, stderr[-3000:]
    assert "Traceback" not in stderr and "Traceback" not in stdout, stderr[-3000:]
    assert "sweep interrupted" in stderr and "--resume" in stderr
    _, kept = read_csv(csv_path)
    assert 1 <= len(kept) < N_CELLS * len(TRAIN)
    # Only generated training days are kept for the resume (the held-out day was never made).
    kept_days = {p.name.rsplit("-", 1)[0] for p in (out / "feeds").iterdir()}  # SLUG-HASH.npy
    assert kept_days and kept_days <= set(TRAIN), kept_days
    outcome = run_sweep(options(out, grid_file, scheduler=cluster, resume=True), io.StringIO())
    assert outcome.skipped == len(kept)
    _, rows = read_csv(csv_path)
    _, original = read_csv(out_orig / "sweep_results.csv")
    assert without_timing(rows) == without_timing(original)
    assert not (out / "feeds").exists()


def test_a_cell_runs_and_records_the_sweeps_settings_not_the_workers_mm_variables(
    tmp_path: Path, grid_file: Path
) -> None:
    """MM_SHADOW, MM_TUNER and MM_MODEL_ARMS set for soaks reached every cell's run settings
    (shadow arms ran in each cell) and run.json named a tuner and arms the cell never ran."""
    out = tmp_path / "out"
    env = {**os.environ, "MM_SHADOW": "2", "MM_TUNER": "walk-forward", "MM_CLOCK": "12.5",
           "MM_MODEL_ARMS": "decide"}  # fmt: skip
    r = subprocess.run(
        [sys.executable, "-m", "mm_sim", "sweep", "--grid", str(grid_file), "--feeds",
         TRAIN[0], "--iterations", "1", "--iteration-minutes", "0.2", "--workers", "1",
         "--out", str(out)],
        capture_output=True, text=True, cwd=REPO, env=env, timeout=600,
    )  # fmt: skip
    assert r.returncode == 0, r.stderr[-3000:]
    runs = sorted(out.glob("runs/*/*/soak/run.json"))
    assert len(runs) == N_CELLS
    for path in runs:
        run = json.loads(path.read_text())
        s = run["settings"]
        assert (s["shadow"], s["tuner"], s["model_arms"]) == (0, "seed", "none"), path
        assert run["tune"] is False and run["shadow"] == 0
        # The sweep's own clock (MM_CLOCK, as --clock) is the one applied and the one named.
        assert s["clock"] == "12.5" and run["feed"]["clock_shift_ms"] == 12.5
