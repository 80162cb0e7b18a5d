"""``report`` and ``export`` on a run directory a soak is still writing: refused while it runs
(before, ``report`` rewrote reports/ from the first committed iteration with no word that the
run was unfinished), and run as usual once it has ended."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from pathlib import Path

from run_harness import wait_for_commit

REPO = Path(__file__).resolve().parent.parent


def mm(*argv: str, wait: bool = True) -> subprocess.CompletedProcess[str] | subprocess.Popen[str]:
    cmd = [sys.executable, "-m", "mm_sim", *argv]
    if not wait:
        return subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                text=True)  # fmt: skip
    return subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=600)


def test_report_and_export_wait_for_the_soak_to_end(tmp_path: Path) -> None:
    out = tmp_path / "art"
    soak = mm("soak", "--feed", "synthetic-short", "--iterations", "3", "--iteration-minutes",
              "0.5", "--no-tune", "--model-arms", "none", "--speed", "3", "--artifacts",
              str(out), wait=False)  # fmt: skip
    assert isinstance(soak, subprocess.Popen)
    wait_for_commit(soak, out)
    assert soak.poll() is None, "the soak ended before the readers could meet it"
    try:
        for argv in (["report", str(out)], ["export", str(out), "--out", str(tmp_path / "x")]):
            r = mm(*argv)
            assert isinstance(r, subprocess.CompletedProcess)
            assert r.returncode == 2, r.stderr[-2000:]
            lines = [ln for ln in r.stderr.splitlines() if ln.startswith("mm_sim")]
            assert len(lines) == 1 and "a soak is still running" in lines[0], r.stderr
        assert not (tmp_path / "x").exists()
    finally:
        soak.send_signal(signal.SIGINT)  # (the rest of the run is not needed: stop it early)
        _, err = soak.communicate(timeout=600)
    assert soak.returncode == 130, err[-2000:]
    gate = json.loads((out / "reports" / "KPI_GATE.json").read_text())
    r = mm("report", str(out), "--json")
    assert isinstance(r, subprocess.CompletedProcess) and r.returncode == 0, r.stderr[-2000:]
    assert json.loads(r.stdout)["iterations"] >= 1
    assert json.loads((out / "reports" / "KPI_GATE.json").read_text())["verdict"] == gate["verdict"]
    r = mm("export", str(out), "--out", str(tmp_path / "x"))
    assert isinstance(r, subprocess.CompletedProcess) and r.returncode == 0, r.stderr[-2000:]
