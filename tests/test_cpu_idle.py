"""Idle cores from the kernel's counters (runtime/cpu_idle.py), which decide where a soak's model
arms run: parsed from real /proc/stat-format files, and measured live beside busy processes."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pytest

from mm_sim.runtime import cpu_idle
from mm_sim.runtime.arms_process import core_free, wanted

# user nice system idle iowait irq softirq steal guest guest_nice
STAT_A = """cpu  300 0 100 3000 20 0 0 0 0 0
cpu0 100 0 50 1000 10 0 0 0 0 0
cpu1 100 0 50 1000 10 0 0 0 0 0
cpu2 100 0 0 1000 0 0 0 0 0 0
intr 1 2 3
"""
# cpu0 busy for 100 ticks (80 user, 20 system), cpu1 idle 90 + 10 waiting on I/O, cpu2 half.
STAT_B = """cpu  430 0 120 3140 30 0 0 0 0 0
cpu0 180 0 70 1000 10 0 0 0 0 0
cpu1 100 0 50 1090 20 0 0 0 0 0
cpu2 150 0 0 1050 0 0 0 0 0 0
intr 1 2 3
"""


def _samples(tmp_path: Path, cpus: set[int]) -> tuple[cpu_idle.Sample, cpu_idle.Sample]:
    a, b = tmp_path / "a", tmp_path / "b"
    a.write_text(STAT_A)
    b.write_text(STAT_B)
    sa = cpu_idle.sample(frozenset(cpus), a)
    sb = cpu_idle.sample(frozenset(cpus), b)
    assert sa is not None and sb is not None
    return sa, sb


def test_idle_is_counted_per_cpu_of_ours(tmp_path: Path) -> None:
    sa, sb = _samples(tmp_path, {0, 1})
    assert (sa.idle, sa.total) == (2020, 2320)
    assert cpu_idle.idle_between(sa, sb) == pytest.approx(1.0)  # I/O wait is idle time
    sa, sb = _samples(tmp_path, {0})
    assert cpu_idle.idle_between(sa, sb) == 0.0
    sa, sb = _samples(tmp_path, {0, 1, 2})
    assert cpu_idle.idle_between(sa, sb) == pytest.approx(1.5)


def test_no_figure_rather_than_a_wrong_one(tmp_path: Path) -> None:
    assert cpu_idle.sample(frozenset({0}), tmp_path / "missing") is None
    sa, sb = _samples(tmp_path, {0, 1})
    (tmp_path / "c").write_text(STAT_A)
    assert cpu_idle.sample(frozenset({0, 7}), tmp_path / "c") is None  # a CPU not listed
    assert cpu_idle.idle_between(sb, sa) is None  # time runs forwards
    sc = cpu_idle.sample(frozenset({0}), tmp_path / "c")
    assert sc is not None and cpu_idle.idle_between(sc, sb) is None  # other CPUs


@pytest.mark.skipif(not cpu_idle.PROC_STAT.exists(), reason="no /proc/stat on this platform")
def test_busy_cores_are_not_free() -> None:
    """One busy process per CPU of ours: the figure is near zero and ``auto`` keeps the arms
    inline, whatever the load average says; ``always`` and ``never`` do not look."""
    n = len(cpu_idle.our_cpus())
    busy = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(n)]
    try:
        time.sleep(0.3)
        cpu_idle.idle_cores()  # the next call measures from here
        time.sleep(0.5)
        idle = cpu_idle.idle_cores()
        assert idle is not None and idle < 0.35, idle
        free, why = core_free()
        limited = (cpu_idle.cpu_limit() or n) < 1.7  # a container's --cpus decides first
        assert not free and why.startswith("cgroup CPU" if limited else "idle cores "), why
        assert wanted("auto")[0] is False
        assert wanted("always") == (True, "MM_MODEL_ARMS_PROCESS=always")
        assert wanted("never") == (False, "MM_MODEL_ARMS_PROCESS=never")
    finally:
        for p in busy:
            p.kill()
            p.wait()


def _cgroup(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, proc: str) -> Path:
    """A cgroup tree under ``tmp_path``, and this process's /proc/self/cgroup saying ``proc``."""
    root = tmp_path / "cgroup"
    root.mkdir()
    (tmp_path / "proc_cgroup").write_text(proc)
    monkeypatch.setattr(cpu_idle, "CGROUP_ROOT", root)
    monkeypatch.setattr(cpu_idle, "PROC_CGROUP", tmp_path / "proc_cgroup")
    return root


def test_a_containers_cpu_limit_is_read_v2(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    root = _cgroup(tmp_path, monkeypatch, "0::/pod/box\n")
    (root / "cgroup.controllers").write_text("cpu memory\n")
    (root / "cpu.max").write_text("max 100000\n")
    (root / "pod" / "box").mkdir(parents=True)
    (root / "pod" / "box" / "cpu.max").write_text("max 100000\n")
    assert cpu_idle.cpu_limit() is None
    (root / "pod" / "box" / "cpu.max").write_text("150000 100000\n")
    assert cpu_idle.cpu_limit() == 1.5
    free, why = core_free()
    assert not free and why == "cgroup CPU limit 1.50"
    (root / "pod" / "cpu.max").write_text("50000 100000\n")  # a tighter limit above it
    assert cpu_idle.cpu_limit() == 0.5


def test_a_containers_cpu_limit_is_read_v1(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    root = _cgroup(tmp_path, monkeypatch, "5:memory:/x\n4:cpu,cpuacct:/docker/abc\n")
    box = root / "cpu,cpuacct" / "docker" / "abc"
    box.mkdir(parents=True)
    for d, quota in ((root / "cpu,cpuacct", "-1"), (box, "300000")):
        (d / "cpu.cfs_quota_us").write_text(f"{quota}\n")
        (d / "cpu.cfs_period_us").write_text("100000\n")
    assert cpu_idle.cpu_limit() == 3.0
    (box / "cpu.cfs_quota_us").write_text("-1\n")
    assert cpu_idle.cpu_limit() is None
    (tmp_path / "proc_cgroup").unlink()
    assert cpu_idle.cpu_limit() is None
