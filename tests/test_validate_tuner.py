"""``mm_sim validate tuner``: its figures are the runs' own, and bad input is one clear error."""

from __future__ import annotations

import contextlib
import io
import json
import subprocess
from pathlib import Path


def run(*args: str) -> subprocess.CompletedProcess[str]:
    """The CLI's own entry point, in this process (the kernels stay loaded between tests)."""
    from mm_sim.cli import main

    argv = ["validate", "tuner", *args]
    stdout, stderr = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(stdout), contextlib.redirect_stderr(stderr):
        code = main(argv)
    return subprocess.CompletedProcess(argv, code, stdout.getvalue(), stderr.getvalue())


def test_uplift_is_tuned_minus_frozen_out_of_sample(tmp_path: Path) -> None:
    out = tmp_path / "v"
    (tmp_path / "none").mkdir()  # a folder without captures: synthetic days only
    r = run("--seeds", "1", "--iterations", "2", "--iteration-minutes", "1",
            "--data", str(tmp_path / "none"), "--out", str(out))  # fmt: skip
    assert r.returncode == 0, r.stderr[-3000:]
    data = json.loads((out / "TUNER_VALIDATION.json").read_text())
    assert [x["tuner"] for x in data["runs"]] == ["seed", "walk-forward"]
    for x in data["runs"]:
        root = out / "runs" / "synthetic-1" / x["tuner"]
        tuned = [json.loads(s) for s in (root / "soak" / "metrics.jsonl").read_text().splitlines()]
        ctl = root / "control" / "soak" / "metrics.jsonl"
        frozen = [json.loads(s) for s in ctl.read_text().splitlines()]
        # iteration 2 is the out-of-sample one; the sign is tuned minus frozen
        assert x["tuned_net_bps"] == tuned[1]["edge"]["net_bps"]
        assert x["frozen_net_bps"] == frozen[1]["edge"]["net_bps"]
        assert x["uplift_bps"] == x["tuned_net_bps"] - x["frozen_net_bps"]
    s = data["summary"]["seed"]
    assert s["runs"] == 1 and s["mean_uplift_bps"] == data["runs"][0]["uplift_bps"]
    md = (out / "TUNER_VALIDATION.md").read_text()
    assert "| seed | 1 |" in md and "| walk-forward | 1 |" in md and f"not in {tmp_path}" in md
    assert "walk-forward uplift" in r.stdout and "mean uplift" in r.stdout


def test_bad_arguments_are_one_clear_error() -> None:
    r = run("--iterations", "1")
    assert r.returncode == 2 and "Traceback" not in r.stderr and "--iterations = 1" in r.stderr


def test_run_length_comes_from_mm_settings_as_for_a_soak(tmp_path: Path, monkeypatch) -> None:
    """MM_ITERATIONS and MM_ITERATION_MINUTES were ignored (4 x 3 minutes all the same), while
    run settings the study does not offer (MM_SHADOW, MM_CLOCK) leaked into its runs."""
    for name, value in (("ITERATIONS", "2"), ("ITERATION_MINUTES", "1"), ("SHADOW", "1")):
        monkeypatch.setenv(f"MM_{name}", value)
    monkeypatch.setenv("MM_CLOCK", "raw")
    out = tmp_path / "v"
    (tmp_path / "none").mkdir()
    r = run("--seeds", "1", "--data", str(tmp_path / "none"), "--out", str(out))
    assert r.returncode == 0, r.stderr[-3000:]
    for tuner in ("seed", "walk-forward"):
        root = out / "runs" / "synthetic-1" / tuner / "soak"
        settings = json.loads((root / "run.json").read_text())["settings"]
        assert (settings["iterations"], settings["iteration_minutes"]) == (2, 1.0)
        assert (settings["shadow"], settings["clock"], settings["speed"]) == (0, "auto", None)
        assert len((root / "metrics.jsonl").read_text().splitlines()) == 2
    setup = json.loads((out / "TUNER_VALIDATION.json").read_text())["setup"]
    assert setup["synthetic"].endswith("2 x 1 min each")
    assert setup["command"].startswith(
        "MM_ITERATIONS=2 MM_ITERATION_MINUTES=1.0 python -m mm_sim validate tuner"
    )


def test_mm_settings_are_checked_as_for_a_soak(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("MM_ITERATIONS", "1")
    r = run("--out", str(tmp_path / "v"))
    assert r.returncode == 2 and "environment MM_ITERATIONS = 1: too small" in r.stderr
    monkeypatch.delenv("MM_ITERATIONS")
    monkeypatch.setenv("MM_ITERATION", "2")
    r = run("--out", str(tmp_path / "v"))
    assert r.returncode == 2 and "did you mean MM_ITERATIONS?" in r.stderr
    assert not (tmp_path / "v").exists()
