"""The soak as a user runs it: real subprocesses, real files, real signals.

Short soaks (a few simulated minutes per iteration on the synthetic market) keep this fast;
the behaviour under test — artifacts, markers, determinism, kill + resume, interrupt, operator
hot-swap, control arm — does not depend on the length.
"""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from run_harness import committed, wait_for_commit

REPO = Path(__file__).resolve().parent.parent
ARGS = ["--iterations", "3", "--iteration-minutes", "2", "--seed", "7"]
OVERRIDE_FIELDS = {
    "min_interval_ms",
    "replace_rate_per_min",
    "base_spread_bps_delta",
    "tail_age_ms",
    "impact_cap_ratio",
    "max_delta_ratio",
}


def soak_cmd(artifacts: Path, *extra: str) -> list[str]:
    return [sys.executable, "-m", "mm_sim", "soak", *ARGS, "--artifacts", str(artifacts), *extra]


def run_soak(
    artifacts: Path, *extra: str, timeout: float = 300
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        soak_cmd(artifacts, *extra), capture_output=True, text=True, cwd=REPO, timeout=timeout
    )


def totals(artifacts: Path) -> dict:
    return json.loads((artifacts / "reports" / "EDGE_REPORT.json").read_text())["totals"]


@pytest.fixture(scope="module")
def baseline(
    tmp_path_factory: pytest.TempPathFactory,
) -> tuple[Path, subprocess.CompletedProcess[str]]:
    out = tmp_path_factory.mktemp("baseline") / "art"
    r = run_soak(out)
    assert r.returncode == 0, r.stderr[-3000:]
    return out, r


def test_soak_writes_every_artifact_and_markers(baseline) -> None:
    art, r = baseline
    for rel in (
        "reports/EDGE_REPORT.json",
        "reports/KPI_GATE.json",
        "reports/soak_metrics.json",
        "reports/SOAK_RESULTS.md",
        "reports/pnl.png",
        "soak/metrics.jsonl",
        "soak/summary.txt",
        "soak/runtime_overrides.json",
        "soak/fills.csv",
        "soak/run.json",
    ):
        assert (art / rel).is_file(), rel
    assert "| autotune | " in r.stdout
    assert "SOAK RESULTS  verdict " in r.stdout and "next step:" in r.stdout
    lines = [json.loads(x) for x in (art / "soak" / "metrics.jsonl").read_text().splitlines()]
    assert [ln["iteration"] for ln in lines] == [0, 1, 2]
    for ln in lines:
        assert set(ln["overrides"]) == OVERRIDE_FIELDS
    gate = json.loads((art / "reports" / "KPI_GATE.json").read_text())
    assert gate["verdict"] in {"SUCCESS", "OK", "WARN", "FAIL"}
    edge = json.loads((art / "reports" / "EDGE_REPORT.json").read_text())
    assert edge["schema_version"] == 1 and edge["totals"]["final_mid"] > 0
    assert edge["totals"]["fills"] > 0


def test_markers_match_recorded_decisions(baseline) -> None:
    art, r = baseline
    markers = [ln for ln in r.stdout.splitlines() if ln.startswith("| autotune | DRIVER:")]
    lines = [json.loads(x) for x in (art / "soak" / "metrics.jsonl").read_text().splitlines()]
    recorded = [d for ln in lines for d in ln["decisions"] if d["field"] is not None]
    assert len(markers) == len(recorded)
    final = json.loads((art / "soak" / "runtime_overrides.json").read_text())
    assert final == lines[-1]["overrides_next"]


def test_pnl_recomputed_from_fills_csv_and_final_mid(baseline) -> None:
    art, _ = baseline
    cash = pos = 0.0
    with open(art / "soak" / "fills.csv", newline="") as fh:
        for row in csv.DictReader(fh):
            s = 1.0 if row["side"] == "buy" else -1.0
            q, p = float(row["qty"]), float(row["price"])
            cash -= s * q * p + float(row["fee"])
            pos += s * q
    t = totals(art)
    pnl = cash + pos * t["final_mid"]
    assert pnl == pytest.approx(t["pnl"], rel=1e-9, abs=1e-9)
    assert t["net_bps"] * t["notional"] / 1e4 == pytest.approx(pnl, rel=1e-9, abs=1e-9)


def test_same_seed_same_results(baseline, tmp_path: Path) -> None:
    art, _ = baseline
    r = run_soak(tmp_path / "again")
    assert r.returncode == 0, r.stderr[-3000:]
    assert (tmp_path / "again" / "soak" / "fills.csv").read_bytes() == (
        art / "soak" / "fills.csv"
    ).read_bytes()
    assert totals(tmp_path / "again") == totals(art)


def test_resume_continues_the_checkpointed_tuner(baseline, tmp_path: Path) -> None:
    """Cut the finished run back to two committed iterations and resume: the last iteration
    is re-run from the checkpointed tuner, so its final tuner state (and totals) are the
    uninterrupted run's; a fresh tuner would have forgotten the first two iterations."""
    import shutil

    from mm_sim.runtime.checkpoint import load_checkpoint
    from mm_sim.runtime.tuner import Tuner

    art, _ = baseline
    out = tmp_path / "cut"
    shutil.copytree(art, out)
    ck = out / "soak" / "checkpoints"
    want = load_checkpoint(ck, 2).tuner
    assert load_checkpoint(ck, 1).tuner != Tuner().state_dict(), "nothing for a resume to lose"
    metrics = out / "soak" / "metrics.jsonl"
    metrics.write_bytes(b"".join(metrics.read_bytes().splitlines(keepends=True)[:2]))
    (ck / "iteration-00002.npz").unlink()
    # Killed after iteration 1's commit, before its line in summary.txt (the human log is
    # written after the commit): the resume puts the line back from the record.
    summary = out / "soak" / "summary.txt"
    kept = [ln for ln in summary.read_text().splitlines() if ln.startswith("iteration 0")]
    lost = [ln for ln in summary.read_text().splitlines() if ln.startswith("iteration 1")]
    summary.write_text("\n".join(kept) + "\n")
    r = run_soak(out, "--resume")
    assert r.returncode == 0, r.stderr[-3000:]
    assert "resuming after iteration 1 (2/3 done" in r.stdout
    assert load_checkpoint(ck, 2).tuner == want
    assert totals(out) == totals(art)
    after = [ln for ln in summary.read_text().splitlines() if ln.startswith("iteration ")]
    assert [ln.split(":")[0] for ln in after] == ["iteration 0", "iteration 1", "iteration 2"]
    assert after[1] == f"{lost[0]} (restored from the record on resume)"


def test_killed_soak_resumes_to_the_same_totals(baseline, tmp_path: Path) -> None:
    art, _ = baseline
    out = tmp_path / "killed"
    # Paced so it is still running when killed; pacing never changes the chunking.
    proc = subprocess.Popen(
        soak_cmd(out, "--speed", "60"), cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    )
    wait_for_commit(proc, out, timeout=120)
    assert proc.poll() is None, "soak finished before it could be killed"
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    assert 1 <= committed(out) < 3
    r = run_soak(out, "--resume")
    assert r.returncode == 0, r.stderr[-3000:]
    assert "resuming after iteration" in r.stdout
    assert totals(out) == totals(art)
    assert (out / "soak" / "fills.csv").read_bytes() == (art / "soak" / "fills.csv").read_bytes()


@pytest.mark.parametrize(("sig", "status"), [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_a_stop_signal_stops_cleanly_with_partial_reports(
    tmp_path: Path, sig: signal.Signals, status: int
) -> None:
    """Ctrl-C, or SIGTERM (kill, a service manager): before, SIGTERM killed the run at once
    (exit 143, no partial iteration, no reports)."""
    out = tmp_path / "int"
    proc = subprocess.Popen(
        soak_cmd(out, "--speed", "60"),
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    wait_for_commit(proc, out, timeout=120)
    proc.send_signal(sig)
    stdout, stderr = proc.communicate(timeout=60)
    assert proc.returncode == status, stderr[-3000:]
    assert "[interrupted]" in stdout
    lines = [json.loads(x) for x in (out / "soak" / "metrics.jsonl").read_text().splitlines()]
    # Interrupted mid-iteration the cut-short iteration is committed as partial; at an exact
    # iteration boundary there is nothing partial to commit.
    assert all(not ln["partial"] for ln in lines[:-1])
    assert lines[-1]["partial"] or len(lines) < 3
    assert (out / "reports" / "KPI_GATE.json").is_file()
    # The partial iteration is re-run in full on resume.
    r = run_soak(out, "--resume")
    assert r.returncode == 0, r.stderr[-3000:]
    lines = [json.loads(x) for x in (out / "soak" / "metrics.jsonl").read_text().splitlines()]
    assert [ln["iteration"] for ln in lines] == [0, 1, 2] and not lines[-1]["partial"]


def test_ctrl_c_during_a_slow_paced_wait_stops_at_once_with_nothing_to_report(
    tmp_path: Path,
) -> None:
    """At --speed 0.1 the replay waits 20 s before its first 2 s chunk. Before, Ctrl-C sat
    through that wait, then simulated the chunk and wrote a FAIL verdict on it; now the wait
    ends at once and, nothing having been simulated, no verdict is written."""
    out = tmp_path / "slow"
    err = tmp_path / "stderr.txt"
    with err.open("w") as fh:
        proc = subprocess.Popen(
            soak_cmd(out, "--speed", "0.1"), cwd=REPO, stdout=subprocess.PIPE, stderr=fh,
            text=True,
        )  # fmt: skip
        assert proc.stdout is not None
        first = proc.stdout.readline()  # "clock: ...", printed as the run starts
        assert first.startswith("clock:"), first + err.read_text()[-3000:]
        time.sleep(1.0)  # the stop signals' handlers are installed right after that line
        proc.send_signal(signal.SIGINT)
        rest, _ = proc.communicate(timeout=120)
    stdout = first + rest
    assert proc.returncode == 130, err.read_text()[-3000:]
    assert "stopped before the first chunk was simulated: nothing to report" in stdout
    assert "SOAK RESULTS" not in stdout
    assert not (out / "reports" / "KPI_GATE.json").exists()
    assert committed(out) == 0
    # The run directory is usable as it is: a resume starts it over and finishes it.
    r = run_soak(out, "--resume")
    assert r.returncode == 0, r.stderr[-3000:]
    assert committed(out) == 3


def test_operator_edit_is_hot_swapped_and_bad_edit_rejected(tmp_path: Path) -> None:
    out = tmp_path / "op"
    env = {**os.environ, "MM_LOG_JSON": "1"}
    proc = subprocess.Popen(
        [
            *soak_cmd(out, "--speed", "40", "--no-tune"),
        ],
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    live = out / "soak" / "runtime_overrides.json"
    deadline = time.monotonic() + 60
    while not live.exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    time.sleep(0.5)
    live.write_text('{"min_interval_ms": -3}')  # invalid: rejected, old values kept
    time.sleep(1.5)
    edited = json.loads((REPO / "overrides" / "runtime_overrides.json").read_text())
    edited["tail_age_ms"] = 1234
    live.write_text(json.dumps(edited))
    _, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 0, stderr[-3000:]
    assert "operator overrides rejected" in stderr
    assert '"source": "operator"' in stderr
    lines = [json.loads(x) for x in (out / "soak" / "metrics.jsonl").read_text().splitlines()]
    assert lines[-1]["overrides"]["tail_age_ms"] == 1234
    assert lines[0]["overrides"]["min_interval_ms"] == 70


def test_control_arm_reports_tuned_vs_frozen(tmp_path: Path) -> None:
    out = tmp_path / "ctl"
    r = run_soak(out, "--control")
    assert r.returncode == 0, r.stderr[-3000:]
    cmp = json.loads((out / "reports" / "CONTROL_COMPARISON.json").read_text())
    assert [row["iteration"] for row in cmp["iterations"]] == [0, 1, 2]
    # The sign is pinned: uplift is tuned minus frozen, in the totals, the rows and the console.
    tuned, frozen = totals(out)["net_bps"], totals(out / "control")["net_bps"]
    t = cmp["totals"]
    assert tuned != frozen and t["uplift_bps"] == tuned - frozen
    for row in cmp["iterations"]:
        assert row["uplift_bps"] == row["tuned_net_bps"] - row["frozen_net_bps"]
    ci = t["uplift_ci"]
    assert ci["lo"] < ci["hi"] and abs(ci["estimate"] - t["uplift_bps"]) < 1e-9
    assert f"tuner uplift {tuned - frozen:+.3f} bps, 95% CI [{ci['lo']:+.3f}," in r.stdout
    assert "Tuned vs frozen" in (out / "reports" / "SOAK_RESULTS.md").read_text()
    assert "each iteration on its own (not cumulative):\niter" in r.stdout
    frozen = [
        json.loads(x) for x in (out / "control" / "soak" / "metrics.jsonl").read_text().splitlines()
    ]
    first = frozen[0]["overrides"]
    assert all(ln["overrides"] == first for ln in frozen)
    # The README's artifact tree names what a --control run leaves.
    tree = (REPO / "README.md").read_text().split("## A soak's artifacts")[1].split("```")[1]
    for d in (out, out / "control"):
        for entry in [*d.iterdir(), *(d / "reports").iterdir()]:
            name = "*.png" if entry.suffix == ".png" else entry.name
            assert name in tree, f"README.md's artifact tree does not show {entry}"
    # ... and REPORTS.md names every key a real soak puts in a metrics line's `extra`.
    extra = (REPO / "docs" / "REPORTS.md").read_text().split("| `extra` |")[1].split("\n")[0]
    for line in (out / "soak" / "metrics.jsonl").read_text().splitlines():
        assert all(f"`{k}`" in extra for k in json.loads(line)["extra"]), line[-300:]


def test_a_second_run_moves_the_first_aside(tmp_path: Path) -> None:
    out = tmp_path / "art"
    args = ["--iterations", "1", "--iteration-minutes", "1"]
    for _ in range(2):
        r = subprocess.run(
            [sys.executable, "-m", "mm_sim", "soak", *args, "--artifacts", str(out)],
            capture_output=True,
            text=True,
            cwd=REPO,
            timeout=300,
        )
        assert r.returncode == 0, r.stderr[-3000:]
    assert "moved to" in r.stdout
    assert len(list(tmp_path.glob("art-*"))) == 1


def test_short_recorded_feed_ends_the_soak_with_a_clear_message(tmp_path: Path) -> None:
    from mm_sim.events import write_feed
    from mm_sim.feeds.synthetic import SyntheticParams, generate

    events, inst = generate(SyntheticParams(), seed=2, duration_s=90)
    feed = write_feed(tmp_path / "short.npy", events, inst)
    r = subprocess.run(
        [
            sys.executable,
            "-m",
            "mm_sim",
            "soak",
            "--feed",
            str(feed),
            "--iterations",
            "3",
            "--iteration-minutes",
            "1",
            "--artifacts",
            str(tmp_path / "a"),
        ],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=300,
    )
    assert r.returncode == 0, r.stderr[-3000:]
    assert "the feed covers 1.5 simulated minutes of the 3 requested" in r.stderr
    assert committed(tmp_path / "a") == 2
    # The cut iteration says so in the record, the summary and the report.
    lines = (tmp_path / "a" / "soak" / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(x)["partial"] for x in lines] == [False, True]
    assert "partial iterations: 1" in r.stdout
    md = (tmp_path / "a" / "reports" / "SOAK_RESULTS.md").read_text()
    assert "(partial)" in md and "2 iterations, 1 of them cut short (iteration 1)." in md
    gate = json.loads((tmp_path / "a" / "reports" / "KPI_GATE.json").read_text())
    assert gate["partial_iterations"] == [1]
    assert [it["partial"] for it in gate["iterations"]] == [False, True]
    assert gate["next_step"].startswith("Iteration(s) 1 ran shorter than asked")


def test_a_profile_tick_over_the_feeds_is_said(tmp_path: Path) -> None:
    """A profile's tick size replacing the feed's changes every reported number (prices are
    rounded to it): the soak says so, with the ratio; the feed's own size says nothing."""
    cmd = [sys.executable, "-m", "mm_sim", "soak", "--feed", "synthetic-short", "--iterations",
           "1", "--iteration-minutes", "0.2", "--model-arms", "none", "--artifacts"]  # fmt: skip
    r = subprocess.run(
        [*cmd, str(tmp_path / "a"), "--set", "profile.instrument.tick_size=0.5"],
        capture_output=True, text=True, cwd=REPO, timeout=300,
    )  # fmt: skip
    assert r.returncode in (0, 1), r.stderr[-2000:]  # a verdict either way
    assert "note: the profile's instrument.tick_size 0.5 replaces the feed's 0.1 (5x)" in r.stderr
    plain = subprocess.run([*cmd, str(tmp_path / "b")], capture_output=True, text=True, cwd=REPO,
                           timeout=300)  # fmt: skip
    assert "instrument.tick_size" not in plain.stderr
