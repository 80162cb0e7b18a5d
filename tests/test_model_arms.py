"""Model arms: the same soak with one fill rule flipped, beside the primary (docs/REPORTS.md).

An arm must be exactly the soak a user would run with that setting flipped: same events, same
overrides, same records. Its figures are recomputed from its recorded fills and marks.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
RUN = ["--iterations", "2", "--iteration-minutes", "3", "--no-tune"]


def soak(out: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    cmd = [sys.executable, "-m", "mm_sim", "soak", *RUN, "--artifacts", str(out), *extra]
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=REPO, timeout=900)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "Traceback" not in proc.stderr
    return proc


def edge(run: Path) -> dict:
    return json.loads((run / "reports" / "EDGE_REPORT.json").read_text())


def resume_to_three(run: Path, arms: str) -> None:
    """The run resumed to three iterations with these arms; never a traceback."""
    proc = subprocess.run(
        [sys.executable, "-m", "mm_sim", "soak", "--iterations", "3", "--iteration-minutes",
         "3", "--no-tune", "--artifacts", str(run), "--resume", "--model-arms", arms],
        capture_output=True, text=True, cwd=REPO, timeout=900,
    )  # fmt: skip
    assert proc.returncode == 0 and "Traceback" not in proc.stderr, proc.stderr[-2000:]


@pytest.fixture(scope="module")
def with_arms(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("arms") / "run"
    soak(out, "--model-arms", "crossing_fills,event_order")
    return out


def test_each_arm_is_the_soak_with_that_setting_flipped(with_arms: Path, tmp_path: Path) -> None:
    model = edge(with_arms)["error_bars"]["model"]
    arms = {a["switch"]: a for a in model["arms"]}
    assert set(arms) == {"matching.crossing_fills", "matching.event_order"}
    assert all(a["complete"] for a in arms.values())
    for switch, value in (("crossing_fills", "false"), ("event_order", "file")):
        alone = tmp_path / switch
        soak(alone, "--model-arms", "none", "--set", f"profile.matching.{switch}={value}")
        arm_dir = with_arms / "models" / f"{switch}-{value}"
        # the same records, byte for byte, as the soak run with the setting flipped
        for rec in ("fills", "actions", "blocks", "marks"):
            got = (arm_dir / "soak" / "records" / f"{rec}.bin").read_bytes()
            want = (alone / "soak" / "records" / f"{rec}.bin").read_bytes()
            assert got == want, (switch, rec)
        assert arms[f"matching.{switch}"]["net_bps"] == edge(alone)["totals"]["net_bps"]


def test_the_band_spans_the_run_and_its_arms(with_arms: Path) -> None:
    e = edge(with_arms)
    model = e["error_bars"]["model"]
    nets = [a["net_bps"] for a in model["arms"]] + [e["totals"]["net_bps"]]
    assert model["lo"] == min(nets) and model["hi"] == max(nets)
    for a in model["arms"]:
        assert a["delta_bps"] == pytest.approx(a["net_bps"] - e["totals"]["net_bps"], abs=1e-12)
    md = (with_arms / "reports" / "SOAK_RESULTS.md").read_text()
    assert f"**{model['lo']:+.3f} to {model['hi']:+.3f}** bps" in md


def test_an_arm_added_on_resume_is_reported_incomplete(with_arms: Path, tmp_path: Path) -> None:
    """An arm cannot start mid-run; one that could not follow the run says so, with no figure."""
    resume_to_three(with_arms, "crossing_fills,event_order,through_fill")
    arms = {a["switch"]: a for a in edge(with_arms)["error_bars"]["model"]["arms"]}
    assert arms["matching.crossing_fills"]["complete"] and arms["matching.event_order"]["complete"]
    late = arms["matching.through_fill"]
    assert not late["complete"] and late["net_bps"] is None
    lines = (with_arms / "models" / "crossing_fills-false" / "soak" / "metrics.jsonl").read_text()
    assert len(lines.splitlines()) == 3  # the complete arms followed the resumed run


def test_unknown_arm_is_one_clear_error(tmp_path: Path) -> None:
    cmd = [sys.executable, "-m", "mm_sim", "soak", *RUN, "--artifacts", str(tmp_path / "x"),
           "--model-arms", "crossing_fills,bogus"]  # fmt: skip
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=REPO, timeout=300)
    assert proc.returncode != 0 and "Traceback" not in proc.stderr
    assert "--model-arms" in proc.stderr and "'bogus'" in proc.stderr


@pytest.mark.parametrize("damage", ["truncated", "header byte"])
def test_an_arm_with_a_damaged_checkpoint_is_dropped_on_resume(
    with_arms: Path, tmp_path: Path, damage: str
) -> None:
    """A resume never ends in a traceback over one arm's file: that arm says why it stopped."""
    run = tmp_path / "run"
    shutil.copytree(with_arms, run)
    ck = run / "models" / "crossing_fills-false" / "soak" / "checkpoint.npz"
    raw = ck.read_bytes()
    if damage == "truncated":
        ck.write_bytes(raw[:100])
    else:  # numpy's header parser raised SyntaxError or tokenize errors on this one
        ck.write_bytes(raw.replace(b"{'descr'", b";'descr'", 1))
    resume_to_three(run, "crossing_fills,event_order")
    arms = {a["switch"]: a for a in edge(run)["error_bars"]["model"]["arms"]}
    assert arms["matching.event_order"]["complete"]
    assert not arms["matching.crossing_fills"]["complete"]
    note = json.loads((run / "models" / "crossing_fills-false" / "arm.json").read_text())["note"]
    assert "checkpoint is damaged" in note
