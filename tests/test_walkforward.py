"""The walk-forward tuner: its decision rule on hand-written evaluations, and its replays
against real soaks (a replay is the soak it stands for, bit for bit; resume; --tuner)."""

from __future__ import annotations

import contextlib
import io
import json
import subprocess
import zipfile
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pytest
from test_tuner import metrics

from mm_sim.config import ErrorBarsCfg, Overrides
from mm_sim.report.bootstrap import BlockSeries
from mm_sim.tuning.counterfactual import Evaluation
from mm_sim.tuning.search import STEPS, Candidate, neighbourhood
from mm_sim.tuning.walkforward import WalkForwardTuner

BASE = Overrides()
RNG = np.random.default_rng(5)
SHARED = RNG.normal(0.0, 20.0, 40)  # the market's noise, shared by every arm


def blocks(lead_bps: float, noise: float = 0.05) -> BlockSeries:
    n = len(SHARED)
    z = np.zeros(n)
    net = SHARED + lead_bps + np.random.default_rng(int(lead_bps * 1000) % 97).normal(0, noise, n)
    return BlockSeries(np.arange(n, dtype=np.int64), np.full(n, 1e4), net, z, z, z, z, z, 1)


def evaluation(c: Candidate, score: float, lead: float, noise: float = 0.05) -> Evaluation:
    return Evaluation(c.overrides.as_dict(), lead, 100, [score] * 3, score, 0.0,
                      blocks(lead, noise), "-", 0.0)  # fmt: skip


class Market:
    """Scores and leads per candidate id: a market where some moves earn and others do not."""

    def __init__(self, scores: dict[str, tuple[float, float, float]]) -> None:
        self.scores = scores  # id -> (score, lead bps over the incumbent, block noise)
        self.asked: list[list[str]] = []

    def __call__(self, cands: Sequence[Candidate]) -> list[Evaluation]:
        self.asked.append([c.id for c in cands])
        return [evaluation(c, *self.scores.get(c.id, (0.0, 0.0, 0.05))) for c in cands]


def tuner(**kw: object) -> WalkForwardTuner:
    return WalkForwardTuner(ErrorBarsCfg(), **kw)  # type: ignore[arg-type]


def test_a_candidate_that_really_beats_the_incumbent_wins_one_step() -> None:
    market = Market({"tail_age_ms+50": (0.8, 0.5, 0.05), "min_interval_ms+10": (0.5, 0.3, 0.05)})
    new, decs, rec = tuner().after_window(metrics(), BASE, market)
    assert rec["winner"] == "tail_age_ms+50"
    assert new.tail_age_ms == BASE.tail_age_ms + STEPS["tail_age_ms"]
    assert {k for k, v in new.as_dict().items() if v != BASE.as_dict()[k]} == {"tail_age_ms"}
    assert decs[0].marker().startswith("| autotune | walk-forward | tail_age_ms 650 -> 700 | ")
    assert len(rec["candidates"]) == 13 and rec["candidates"][0]["id"] == "incumbent"
    assert all("score" in r and "uplift_lo" in r for r in rec["candidates"][1:])


def test_a_higher_score_inside_the_noise_holds() -> None:
    market = Market({"tail_age_ms+50": (0.8, 0.3, 40.0)})  # its own swings drown the lead
    new, decs, rec = tuner().after_window(metrics(), BASE, market)
    assert new == BASE and rec["winner"] is None
    assert decs[0].field is None and "is not above zero" in decs[0].reason
    assert decs[0].marker().startswith("| autotune | walk-forward | HOLD | ")


def test_multi_fail_guard_leaves_only_calming_candidates() -> None:
    """A + B + D fire (the seed's multi-fail guard): faster, tighter moves are not searched,
    so a tighter spread that would earn more is not taken; a wider one is."""
    market = Market(
        {
            "base_spread_bps_delta-0.05": (2.0, 1.0, 0.05),
            "base_spread_bps_delta+0.05": (1.0, 0.5, 0.05),
        }
    )
    t = tuner()
    t.state.negative_streak = 1
    bad = metrics(net_bps=-2.0, drivers=("slippage_bps",), slippage_bps=-1.0, adverse_p95=6.0)
    new, _, rec = t.after_window(bad, BASE, market)
    assert rec["calm_only"] and "base_spread_bps_delta-0.05" in rec["guarded"]
    assert "base_spread_bps_delta-0.05" not in market.asked[0]
    assert len(market.asked[0]) == 7  # the incumbent and the six calming moves
    assert new.base_spread_bps_delta > BASE.base_spread_bps_delta


def test_bounds_and_freeze_after_convergence() -> None:
    low = Overrides.model_validate({**BASE.as_dict(), "min_interval_ms": 0.0})
    ids = [c.id for c in neighbourhood(low, calm_only=False)[0]]
    assert "min_interval_ms-10" not in ids and "min_interval_ms+10" in ids
    t = tuner(freeze_after_convergence=True)
    market = Market({"tail_age_ms+50": (0.8, 0.5, 0.05)})
    cur, _, _ = t.after_window(metrics(), BASE, market)
    cur2, _, rec = t.after_window(metrics(net_bps=3.0), cur, market)
    assert cur2 == cur and t.state.frozen and "freezing" in rec["reason"]
    assert len(market.asked) == 1  # frozen: no replays


# -- against real soaks ---------------------------------------------------------------------------

ARGS = ["--iterations", "2", "--iteration-minutes", "1", "--seed", "7"]


def soak(out: Path, *extra: str, args: Sequence[str] = ARGS) -> subprocess.CompletedProcess[str]:
    """``mm_sim soak`` through the CLI's own entry point, in this process: the compiled kernels
    stay loaded from one soak to the next (a subprocess would load them again each time)."""
    from mm_sim.cli import main

    argv = ["soak", *args, "--artifacts", str(out), *extra]
    stdout, stderr = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(stdout), contextlib.redirect_stderr(stderr):
        code = main(argv)
    return subprocess.CompletedProcess(argv, code, stdout.getvalue(), stderr.getvalue())


def lines(out: Path) -> list[dict]:
    return [json.loads(x) for x in (out / "soak" / "metrics.jsonl").read_text().splitlines()]


def iteration_digest(out: Path, iteration: int) -> str:
    from mm_sim.report.rundir import RunDir
    from mm_sim.tuning.counterfactual import RECORDS, Replay

    rd = RunDir(out)
    committed = rd.committed_lines()
    recs = rd.iteration_records(committed)[iteration]
    return Replay({k: recs[k] for k in RECORDS}, 0).digest()


@pytest.fixture(scope="module")
def walked(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("wf") / "art"
    r = soak(out, "--tuner", "walk-forward")
    assert r.returncode == 0, r.stderr[-3000:]
    assert "| autotune | walk-forward | " in r.stdout
    assert "walk-forward search: 26 replays" in r.stdout
    return out


def _set_checkpoint_overrides(path: Path, overrides: dict[str, float]) -> None:
    """The checkpoint's overrides are what a resumed soak runs its next iteration with."""
    with np.load(path) as z:
        arrays = {k: z[k] for k in z.files}
    meta = json.loads(bytes(arrays["meta"]).decode())
    meta["overrides"] = overrides
    arrays["meta"] = np.frombuffer(json.dumps(meta).encode(), dtype=np.uint8)
    buf = io.BytesIO()
    np.savez_compressed(buf, **arrays)  # type: ignore[arg-type]
    path.write_bytes(buf.getvalue())
    assert zipfile.is_zipfile(path)


def test_a_replay_is_the_soak_with_those_overrides_from_the_same_state(
    walked: Path, tmp_path: Path
) -> None:
    """Iteration 1's candidate = a no-tune soak run to the end of iteration 0 with the same
    overrides (the same state: nothing tuned mid-iteration), then resumed with the candidate's
    overrides in its checkpoint. Iteration 0's candidate = a soak started with them."""
    ln = lines(walked)
    assert not [d for d in ln[0]["decisions"] if d["driver"] == "emergency"]
    for k in (0, 1):
        rec = ln[k]["extra"]["tuning"]
        inc = rec["candidates"][0]
        assert inc["records_sha256"] == iteration_digest(walked, k)  # the incumbent = primary
        assert inc["net_bps"] == ln[k]["edge"]["net_bps"]
    cand = ln[1]["extra"]["tuning"]["candidates"][3]
    out = tmp_path / "b"
    first = tmp_path / "first.json"
    first.write_text(json.dumps(ln[0]["overrides"]))
    one = ["--iterations", "1", "--iteration-minutes", "1", "--seed", "7"]
    r = soak(out, "--no-tune", "--overrides", str(first), args=one)
    assert r.returncode == 0, r.stderr[-3000:]
    _set_checkpoint_overrides(
        out / "soak" / "checkpoints" / "iteration-00000.npz", cand["overrides"]
    )
    r = soak(out, "--no-tune", "--overrides", str(first), "--resume")
    assert r.returncode == 0, r.stderr[-3000:]
    assert lines(out)[1]["overrides"] == cand["overrides"]
    assert iteration_digest(out, 1) == cand["records_sha256"]
    assert lines(out)[1]["edge"]["net_bps"] == cand["net_bps"]
    # iteration 0: a fresh soak with a candidate's overrides
    cand0 = ln[0]["extra"]["tuning"]["candidates"][5]
    c0 = tmp_path / "c0.json"
    c0.write_text(json.dumps(cand0["overrides"]))
    r = soak(tmp_path / "c", "--no-tune", "--overrides", str(c0), args=one)
    assert r.returncode == 0, r.stderr[-3000:]
    assert iteration_digest(tmp_path / "c", 0) == cand0["records_sha256"]


def test_a_cut_walk_forward_soak_resumes_identically(walked: Path, tmp_path: Path) -> None:
    """Cut back to its first committed iteration (what a kill leaves) and resume: the same
    decisions, candidates, scores and totals as the uninterrupted run."""
    import shutil

    out = tmp_path / "cut"
    shutil.copytree(walked, out)
    metrics = out / "soak" / "metrics.jsonl"
    metrics.write_bytes(metrics.read_bytes().splitlines(keepends=True)[0])
    (out / "soak" / "checkpoints" / "iteration-00001.npz").unlink()
    r = soak(out, "--tuner", "walk-forward", "--resume")
    assert r.returncode == 0, r.stderr[-3000:]
    assert [_strip_cost(x) for x in lines(walked)] == [_strip_cost(x) for x in lines(out)]
    edge = "reports/EDGE_REPORT.json"
    assert (
        json.loads((out / edge).read_text())["totals"]
        == json.loads((walked / edge).read_text())["totals"]
    )


def test_a_killed_walk_forward_soak_resumes_identically(walked: Path, tmp_path: Path) -> None:
    """SIGKILL mid-run (paced so it is still running; pacing never changes the chunking), then
    --resume: the same record and totals as the uninterrupted run."""
    import os
    import signal
    import sys

    from run_harness import committed, wait_for_commit

    out = tmp_path / "killed"
    cmd = [sys.executable, "-m", "mm_sim", "soak", *ARGS, "--artifacts", str(out),
           "--tuner", "walk-forward", "--speed", "20"]  # fmt: skip
    repo = Path(__file__).resolve().parent.parent
    proc = subprocess.Popen(
        cmd, cwd=repo, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=dict(os.environ)
    )
    wait_for_commit(proc, out)
    assert proc.poll() is None, "soak finished before it could be killed"
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    assert committed(out) == 1
    r = soak(out, "--tuner", "walk-forward", "--resume")
    assert r.returncode == 0, r.stderr[-3000:]
    assert "resuming after iteration" in r.stdout
    assert [_strip_cost(x) for x in lines(out)] == [_strip_cost(x) for x in lines(walked)]
    edge = "reports/EDGE_REPORT.json"
    assert (
        json.loads((out / edge).read_text())["totals"]
        == json.loads((walked / edge).read_text())["totals"]
    )


def _strip_cost(ln: dict) -> dict:
    """A metrics line without the search's timings (the only figures that depend on the clock)."""
    t = dict(ln["extra"]["tuning"])
    t.pop("cost")
    return {**ln, "extra": {**ln["extra"], "tuning": t}}


def test_resume_refuses_another_tuner(walked: Path, tmp_path: Path) -> None:
    import shutil

    out = tmp_path / "other"
    shutil.copytree(walked, out)
    r = soak(out, "--resume")
    assert r.returncode != 0 and "Traceback" not in r.stderr
    assert '--tuner (run: "walk-forward", now: "seed")' in r.stderr


def test_replays_on_a_dask_cluster_decide_the_same(walked: Path, tmp_path: Path) -> None:
    """--scheduler: the candidates run as tasks on the cluster; same records, same decisions."""
    from dask.distributed import LocalCluster

    with LocalCluster(
        n_workers=1, threads_per_worker=1, processes=True, host="127.0.0.1", dashboard_address=":0"
    ) as cluster:
        out = tmp_path / "dask"
        r = soak(out, "--tuner", "walk-forward", "--scheduler", cluster.scheduler_address)
    assert r.returncode == 0, r.stderr[-3000:]
    assert "walk-forward replays on the Dask cluster at" in r.stdout
    for a, b in zip(lines(walked), lines(out), strict=True):
        ta, tb = a["extra"]["tuning"], b["extra"]["tuning"]
        assert tb["cost"]["where"].startswith("Dask cluster at")
        assert ta["candidates"] == tb["candidates"] and a["decisions"] == b["decisions"]


# -- shadow arms -----------------------------------------------------------------------------


def test_shadows_are_the_replays_they_stand_for(walked: Path, tmp_path: Path) -> None:
    """--shadow 3: three candidates come from engines that ran beside the primary all iteration,
    with the very records and scores their replays had; the decisions are the same, with three
    replays fewer per iteration, and the shadows are reported beside the primary."""
    out = tmp_path / "sh"
    r = soak(out, "--tuner", "walk-forward", "--shadow", "3")
    assert r.returncode == 0, r.stderr[-3000:]
    assert "shadow arms (paper;" in r.stdout and "walk-forward search: 20 replays" in r.stdout
    for a, b in zip(lines(walked), lines(out), strict=True):
        ta, tb = a["extra"]["tuning"], b["extra"]["tuning"]
        strip = [{k: v for k, v in row.items() if k != "source"} for row in tb["candidates"]]
        assert strip == [
            {k: v for k, v in row.items() if k != "source"} for row in ta["candidates"]
        ]
        assert [row["source"] for row in tb["candidates"]][1:4] == [
            f"shadow {i}" for i in (1, 2, 3)
        ]
        assert tb["cost"]["replays"] == 10 and tb["cost"]["from_shadows"] == 3
        assert [d["new"] for d in a["decisions"]] == [d["new"] for d in b["decisions"]]
        shadows = b["extra"]["shadows"]
        assert [s["id"] for s in shadows] == [row["id"] for row in tb["candidates"][1:4]]
        assert [s["records_sha256"] for s in shadows] == [
            row["records_sha256"] for row in tb["candidates"][1:4]
        ]


def test_the_seed_tuner_with_shadows_reports_them_only(tmp_path: Path) -> None:
    out = tmp_path / "seed"
    r = soak(out, "--shadow", "2", args=["--iterations", "1", "--iteration-minutes", "1"])
    assert r.returncode == 0, r.stderr[-3000:]
    (ln,) = lines(out)
    assert "tuning" not in ln["extra"]
    assert [s["id"] for s in ln["extra"]["shadows"]] == ["min_interval_ms-10", "min_interval_ms+10"]
    assert "walk-forward search" not in r.stdout and "shadow arms (paper;" in r.stdout


def test_folds_add_up_to_the_window_and_survive_a_gap() -> None:
    """The score's folds split the window's PnL exactly (each fold starts where the previous
    one ended); a span without marks (a feed gap) gives fewer folds, never an empty one."""
    from mm_sim.config import load_profile
    from mm_sim.core.engine import Engine
    from mm_sim.feeds.synthetic import SyntheticParams, generate
    from mm_sim.report.edge import section
    from mm_sim.tuning.counterfactual import _cut, _parts, replay
    from mm_sim.tuning.window import Window

    events, inst = generate(SyntheticParams(), seed=2, duration_s=90)
    profile = load_profile("S1")
    inst = profile.instrument_for(inst)
    ts = events["exch_ts"]
    state = Engine(profile, BASE, inst, 1).state_arrays()
    w = Window(0, int(ts[0]), int(ts[0]) + 90 * 10**9, state, None)
    for lo in range(0, len(events), 20000):
        w.add(events[lo : lo + 20000], lo + 20000 >= len(events))
    rep = replay(w, profile, inst, 1, BASE)
    g = profile.gates

    def net_of(folds: list[dict]) -> float:
        start, total = None, 0.0
        for f in folds:
            p = _parts(w, f, start, None)
            total += section([p], 0, g.hard.adverse_p95_max, g.venue_rules).amounts.net
            start = p.end
        return total

    whole = section([_parts(w, rep.records, None, None)], 0, g.hard.adverse_p95_max, g.venue_rules)
    assert whole.fills > 0
    folds = _cut(rep.records, w, 3)
    assert len(folds) == 3 and all(len(f["marks"]) for f in folds)
    assert net_of(folds) == pytest.approx(whole.amounts.net, rel=1e-9, abs=1e-9)
    m = rep.records["marks"]
    third = int(ts[0]) + 30 * 10**9
    gap = {**rep.records, "marks": m[(m["ts"] < third) | (m["ts"] > third + 40 * 10**9)]}
    folds = _cut(gap, w, 3)
    assert len(folds) == 2 and all(len(f["marks"]) for f in folds)
