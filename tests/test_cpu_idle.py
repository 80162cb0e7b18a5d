"""Idle cores from the kernel's counters (runtime/cpu_idle.py), which decide where a soak's model
arms run: parsed from real /proc/stat-format files and cgroup trees, and measured live beside
busy processes."""

from __future__ import annotations

import math
import subprocess
import sys
import time
from pathlib import Path

import pytest

from mm_sim.runtime import cpu_idle
from mm_sim.runtime.arms_process import core_free, wanted

# user nice system idle iowait irq softirq steal guest guest_nice (guest is inside user)
STAT_A = """cpu  300 0 100 3000 20 5 5 20 40 0
cpu0 100 0 50 1000 10 5 5 0 0 0
cpu1 100 0 50 1000 10 0 0 20 0 0
cpu2 100 0 0 1000 0 0 0 0 40 0
intr 1 2 3
"""
# 100 ticks later on each CPU: cpu0 busy (user, system, irq, softirq); cpu1 idle 80, waiting on
# I/O 10 (idle too), stolen 10 (not ours: busy); cpu2 half idle, half running a guest (counted
# in user already: adding guest again would make it a third).
STAT_B = """cpu  420 0 120 3130 30 10 10 30 90 0
cpu0 170 0 70 1000 10 10 10 0 0 0
cpu1 100 0 50 1080 20 0 0 30 0 0
cpu2 150 0 0 1050 0 0 0 0 90 0
intr 1 2 3
"""


def _limit() -> float | None:
    """CPUs' worth of time the cgroup allows, None for no limit."""
    q = cpu_idle.cpu_quota()
    return None if q is None else q.cpus


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
    assert (sa.idle, sa.total) == (2020, 2350)
    assert cpu_idle.idle_between(sa, sb) == pytest.approx(0.9)
    for cpus, idle in (({0}, 0.0), ({1}, 0.9), ({2}, 0.5), ({0, 1, 2}, 1.4)):
        sa, sb = _samples(tmp_path, cpus)
        assert cpu_idle.idle_between(sa, sb) == pytest.approx(idle), cpus


def test_no_figure_rather_than_a_wrong_one(tmp_path: Path) -> None:
    assert cpu_idle.sample(frozenset({0}), tmp_path / "missing") is None
    sa, sb = _samples(tmp_path, {0, 1})
    (tmp_path / "c").write_text(STAT_A)
    assert cpu_idle.sample(frozenset({0, 7}), tmp_path / "c") is None  # a CPU not listed
    assert cpu_idle.idle_between(sb, sa) is None  # time runs forwards
    sc = cpu_idle.sample(frozenset({0}), tmp_path / "c")
    assert sc is not None and cpu_idle.idle_between(sc, sb) is None  # other CPUs
    for garbage in ("cpu0 1 2 x 4 5 6 7 8\n", "cpu0 1 2\n", b"cpu0 \xff\xfe\n"):
        bad = tmp_path / "bad"
        bad.write_bytes(garbage if isinstance(garbage, bytes) else garbage.encode())
        assert cpu_idle.sample(frozenset({0}), bad) is None, garbage


def test_the_figure_stays_between_none_and_all(tmp_path: Path) -> None:
    """The idle counters can step back (proc(5): iowait is not reliable)."""
    cpus = frozenset({0, 1})
    start = cpu_idle.Sample(0.0, cpus, 1000, 2000)
    assert cpu_idle.idle_between(start, cpu_idle.Sample(1.0, cpus, 990, 2100)) == 0.0
    assert cpu_idle.idle_between(start, cpu_idle.Sample(1.0, cpus, 1200, 2100)) == 2.0


def test_a_quota_bounds_the_idle_figure(tmp_path: Path) -> None:
    """Host idle 1.0 of 2 CPUs, but the cgroup used 1.2 of its 1.5 CPUs over that second."""
    cpus = frozenset({0, 1})
    q = cpu_idle.Quota(1.5, tmp_path / "cpu.stat", 1e-6)
    start = cpu_idle.Sample(10.0, cpus, 1000, 2000, q, 10.0)
    end = cpu_idle.Sample(11.0, cpus, 1100, 2200, q, 11.2)
    assert cpu_idle.idle_between(start, end) == pytest.approx(0.3)
    other = cpu_idle.Quota(3.0, tmp_path / "cpu.stat", 1e-6)
    assert cpu_idle.idle_between(start, cpu_idle.Sample(11.0, cpus, 1100, 2200, other, 11.2)) == 1.0


def _cgroup(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, proc: str) -> Path:
    """A cgroup tree under ``tmp_path``, and this process's /proc/self/cgroup saying ``proc``."""
    root = tmp_path / "cgroup"
    root.mkdir(parents=True)
    (tmp_path / "proc_cgroup").write_text(proc)
    monkeypatch.setattr(cpu_idle, "CGROUP_ROOT", root)
    monkeypatch.setattr(cpu_idle, "PROC_CGROUP", tmp_path / "proc_cgroup")
    return root


def _v2(d: Path, cpu_max: str, usage_usec: int = 0) -> None:
    d.mkdir(parents=True, exist_ok=True)
    (d / "cpu.max").write_text(f"{cpu_max}\n")
    (d / "cpu.stat").write_text(f"usage_usec {usage_usec}\nuser_usec 0\nsystem_usec 0\n")


def _v1(d: Path, quota: int, usage_ns: int | None = 0) -> None:
    d.mkdir(parents=True, exist_ok=True)
    (d / "cpu.cfs_quota_us").write_text(f"{quota}\n")
    (d / "cpu.cfs_period_us").write_text("100000\n")
    if usage_ns is not None:
        (d / "cpuacct.usage").write_text(f"{usage_ns}\n")


def test_a_containers_cpu_limit_v2(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    root = _cgroup(tmp_path, monkeypatch, "0::/pod/box\n")
    (root / "cgroup.controllers").write_text("cpu memory\n")
    _v2(root, "max 100000")
    _v2(root / "pod" / "box", "max 100000")
    assert _limit() is None
    _v2(root / "pod" / "box", "150000 100000", usage_usec=5_000_000)
    q = cpu_idle.cpu_quota()
    assert q is not None and q.cpus == 1.5 and q.usage == root / "pod" / "box" / "cpu.stat"
    assert cpu_idle._used_s(q) == pytest.approx(5.0)
    assert core_free() == (False, "cgroup CPU limit 1.50")
    _v2(root / "pod", "50000 100000")  # a tighter limit above it
    assert _limit() == 0.5


def test_a_limit_with_room_for_the_child_is_judged_by_idle_time(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    root = _cgroup(tmp_path, monkeypatch, "0::/box\n")
    (root / "cgroup.controllers").write_text("cpu\n")
    _v2(root / "box", "180000 100000")
    free, why = core_free()
    if len(cpu_idle.our_cpus()) < 2:
        assert (free, why) == (False, "one CPU")
    else:
        assert why.startswith("idle cores ") and why.endswith("(cgroup CPU limit 1.80)"), why


def test_a_containers_cpu_limit_v1(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """cpu and cpuacct mounted together, as Docker's hosts do."""
    root = _cgroup(tmp_path, monkeypatch, "5:memory:/x\n4:cpu,cpuacct:/docker/abc\n")
    _v1(root / "cpu,cpuacct", -1)
    _v1(root / "cpu,cpuacct" / "docker" / "abc", 300000)
    assert _limit() == 3.0
    _v1(root / "cpu,cpuacct" / "docker" / "abc", -1)
    assert _limit() is None
    (tmp_path / "proc_cgroup").unlink()
    assert _limit() is None


def test_v1_layouts_seen_in_the_wild(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # cpu and cpuacct as two hierarchies (this kind of machine), the usage in the second
    root = _cgroup(tmp_path, monkeypatch, "3:cpuacct:/job\n2:cpu:/job\n0::/\n")
    _v1(root / "cpu" / "job", 250000, usage_ns=None)
    (root / "cpuacct" / "job").mkdir(parents=True)
    (root / "cpuacct" / "job" / "cpuacct.usage").write_text("7000000000\n")
    q = cpu_idle.cpu_quota()
    assert q is not None and q.cpus == 2.5 and cpu_idle._used_s(q) == pytest.approx(7.0)
    # a cgroup namespace: /proc says the host's path, the mount shows the container's own
    root = _cgroup(tmp_path / "ns", monkeypatch, "4:cpu,cpuacct:/docker/abc\n")
    _v1(root / "cpu,cpuacct", 120000)
    assert _limit() == 1.2
    # hybrid: the v2 hierarchy beside v1 has no CPU controller; v1's says no limit
    root = _cgroup(tmp_path / "hy", monkeypatch, "2:cpu:/\n0::/user.slice\n")
    (root / "unified" / "user.slice").mkdir(parents=True)
    (root / "unified" / "cgroup.controllers").write_text("")
    _v1(root / "cpu", -1)
    assert _limit() is None


@pytest.mark.skipif(not cpu_idle.PROC_STAT.exists(), reason="no /proc/stat on this platform")
def test_busy_cores_are_not_free() -> None:
    """Busy processes on every CPU this process may use (as many as its cgroup's limit allows,
    where it has one): the figure is near zero and ``auto`` keeps the arms inline, whatever the
    load average says; ``always`` and ``never`` do not look."""
    limit = _limit()
    n = len(cpu_idle.our_cpus())
    if limit is not None:
        n = min(n, math.ceil(limit))
    busy = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(n)]
    try:
        time.sleep(0.3)
        cpu_idle.idle_cores(cpu_idle.cpu_quota())  # the next call measures from here
        time.sleep(0.5)
        idle = cpu_idle.idle_cores(cpu_idle.cpu_quota())
        assert idle is not None and idle < 0.35, idle
        free, why = core_free()
        assert not free, why
        assert wanted("auto")[0] is False
        assert wanted("always") == (True, "MM_MODEL_ARMS_PROCESS=always")
        assert wanted("never") == (False, "MM_MODEL_ARMS_PROCESS=never")
    finally:
        for p in busy:
            p.kill()
            p.wait()
