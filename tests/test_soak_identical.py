"""The soak's speed-ups change no byte of what it writes.

One short soak (all model arms, a clock shift so the clock arm runs too, the tuner on) three
times, as a user runs it (``python -m mm_sim soak`` in a subprocess):

- everything off: the synthetic day generated in the run, the model arms inline after the
  primary on each chunk (``MM_SYNTHETIC_CACHE=0``, ``MM_MODEL_ARMS_PROCESS=never``);
- cold: the day generated and written to an empty cache, most arms in a forked child and the
  rest in the parent (``SplitArms``);
- warm: the day read back from that cache, the arms split the same way.

Every file of the run directory is compared byte for byte: reports, charts, records, metrics
lines, summaries, checkpoints and every model arm's directory. Exceptions, none of them a
figure: nothing. The run directory's absolute path is in run.json, so each run writes
``art`` relative to a working directory of its own (the same relative path in all three), and
no artifact holds a wall-clock time (progress lines with wall times go to stdout only, which
is not compared).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

from mm_sim.runtime.arm_names import ALL as ALL_ARMS
from mm_sim.runtime.arms_process import arms_kept_inline

ARGS = ["--iterations", "2", "--iteration-minutes", "2", "--seed", "5", "--clock", "3"]
ARGS += ["--model-arms", "all"]  # tests/conftest.py switches them off for other soaks
EXCEPTIONS: frozenset[str] = frozenset()  # relative paths allowed to differ (see docstring)


CHILD = "model arms run in a child process"  # the soak's log line when it forks them
KEPT = arms_kept_inline(len(ALL_ARMS))
assert KEPT > 0  # both processes run arms in the comparison


def _soak(
    cwd: Path, env: dict[str, str], args: list[str] = ARGS, fresh: bool = True
) -> dict[str, bytes]:
    if fresh:
        cwd.mkdir()
    full = {**os.environ, **env}
    proc = subprocess.run(
        [sys.executable, "-m", "mm_sim", "soak", "--out", "art", *args],
        cwd=cwd,
        env=full,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert proc.returncode in (0, 1), proc.stderr[-3000:]  # 1: the verdict failed its gates
    assert (CHILD in proc.stderr) == (env["MM_MODEL_ARMS_PROCESS"] == "always"), proc.stderr[-3000:]
    if CHILD in proc.stderr:  # some arms in the child, some in the parent (SplitArms)
        assert f'"inline": {KEPT}' in proc.stderr, proc.stderr[-3000:]
    root = cwd / "art"
    return {
        str(p.relative_to(root)): p.read_bytes()
        for p in sorted(root.rglob("*"))
        if p.is_file() and str(p.relative_to(root)) not in EXCEPTIONS
    }


def test_speedups_write_the_same_bytes(tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    off = _soak(tmp_path / "off", {"MM_SYNTHETIC_CACHE": "0", "MM_MODEL_ARMS_PROCESS": "never"})
    on = {"MM_SYNTHETIC_CACHE": "1", "MM_SYNTHETIC_CACHE_DIR": str(cache)}
    on["MM_MODEL_ARMS_PROCESS"] = "always"  # whatever the load
    cold = _soak(tmp_path / "cold", on)
    assert len(list(cache.iterdir())) == 2  # the day was stored ...
    warm = _soak(tmp_path / "warm", on)  # ... and this run read it back
    # the run is what the comparison is about: every arm, its records, reports and charts
    assert {"reports/EDGE_REPORT.json", "reports/pnl.png", "soak/records/fills.bin"} <= set(off)
    arms = {p.split("/")[1] for p in off if p.startswith("models/")}
    assert len(arms) == len(ALL_ARMS), arms  # every fill-rule arm and the clock
    for name, run in (("cold cache, arms in a child", cold), ("warm cache", warm)):
        assert sorted(run) == sorted(off), name
        differ = [p for p in off if run[p] != off[p]]
        assert not differ, f"{name}: {differ}"


def _alive(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def test_a_killed_soak_with_arms_in_a_child_resumes_to_the_same_bytes(tmp_path: Path) -> None:
    """SIGKILL the soak after its first commit: its arms' child must not outlive it (it holds
    the arms' directory locks), and ``--resume`` must end with the uninterrupted run's bytes."""
    env = {"MM_SYNTHETIC_CACHE_DIR": str(tmp_path / "cache"), "MM_MODEL_ARMS_PROCESS": "always"}
    args = [*ARGS, "--iterations", "3"]
    full = _soak(tmp_path / "full", env, args)
    cut = tmp_path / "cut"
    cut.mkdir()
    err = cut / "stderr.txt"
    cmd = [sys.executable, "-m", "mm_sim", "soak", "--out", "art", *args]
    with err.open("w") as fe:
        proc = subprocess.Popen(
            cmd, cwd=cut, env={**os.environ, **env}, stdout=subprocess.DEVNULL, stderr=fe
        )
        # After the first commit and its summary line (the recorder writes the line after the
        # commit; a kill between the two loses the line whatever runs the arms)
        summary = cut / "art" / "soak" / "summary.txt"
        deadline = time.monotonic() + 600
        while not (summary.exists() and "iteration 0:" in summary.read_text()):
            assert proc.poll() is None and time.monotonic() < deadline, err.read_text()[-2000:]
            time.sleep(0.05)
        proc.kill()
        proc.wait()
    (line,) = [ln for ln in err.read_text().splitlines() if CHILD in ln]
    child = int(json.loads(line)["pid"])
    deadline = time.monotonic() + 120  # liveness bound, not a speed figure
    while _alive(child):
        assert time.monotonic() < deadline, "the arms' child outlived the killed soak"
        time.sleep(0.05)
    resumed = _soak(cut, env, [*args, "--resume"], fresh=False)
    assert sorted(resumed) == sorted(full)
    assert [p for p in full if resumed[p] != full[p]] == []
