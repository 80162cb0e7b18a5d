"""How many of the CPUs this process may use the machine leaves idle now: measured, not inferred.

Why: the soak forks its model arms only when a core is free for them (runtime/arms_process.py),
and the 1-minute load average it used to ask lags by minutes: right after a test run or a
benchmark it still reads ~1.5 on a quiet 2-core machine, so the soak kept its arms in one
process and took a fifth longer (benchmarks/README.md, "Soak end to end"). The kernel's idle
counters (``/proc/stat``, per CPU) over the last moments say what the cores are doing now.

The first sample is taken when this module is imported, early in a command, so that the first
question is answered from the command's own start-up (about a second) without waiting. Each
answer covers the time since the last sample; under 0.25 s (a few 10 ms clock ticks) it waits
until that much has passed, and over 30 s (history, not now) it samples 0.25 s afresh.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from pathlib import Path

PROC_STAT = Path("/proc/stat")
CGROUP_ROOT = Path("/sys/fs/cgroup")
PROC_CGROUP = Path("/proc/self/cgroup")
MIN_INTERVAL_S = 0.25  # shorter is a few clock ticks (10 ms each): too coarse
MAX_INTERVAL_S = 30.0  # longer is history, not now


@dataclass(frozen=True)
class Sample:
    at: float  # time.monotonic()
    cpus: frozenset[int]
    idle: int  # idle + iowait ticks of ``cpus`` since boot
    total: int  # all ticks of ``cpus`` since boot (guest time is already in user time)


def our_cpus() -> frozenset[int]:
    """The CPUs this process may run on (a container or ``taskset`` may give it fewer than the
    machine has)."""
    try:
        return frozenset(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - no affinity on this platform
        return frozenset(range(os.cpu_count() or 1))


def _limit(d: Path) -> float | None:
    """The CPU limit set in cgroup folder ``d`` (v2 ``cpu.max``, or v1's CFS quota and period),
    in CPUs; None for none."""
    try:
        quota, period = (d / "cpu.max").read_text().split()[:2]
        return None if quota == "max" else int(quota) / int(period)
    except (OSError, ValueError):
        pass
    try:
        quota = (d / "cpu.cfs_quota_us").read_text().strip()
        period = (d / "cpu.cfs_period_us").read_text().strip()
        return None if int(quota) < 0 else int(quota) / int(period)
    except (OSError, ValueError):
        return None


def cpu_limit() -> float | None:
    """How many CPUs' worth of time this process's cgroup, or one above it, allows (a
    container's ``--cpus``), or None for no limit. Why: such a quota leaves the affinity mask,
    and /proc/stat's idle time, as wide as the host's, so the cores would look free to a second
    process that can only share the quota with the first."""
    try:
        lines = PROC_CGROUP.read_text().splitlines()
    except OSError:
        return None
    root = CGROUP_ROOT
    found: list[float] = []
    for line in lines:
        hid, controllers, path = [*line.split(":", 2), "", ""][:3]
        if hid == "0" and not controllers:  # cgroup v2, alone or beside v1
            mounts = [m for m in (root, root / "unified") if (m / "cgroup.controllers").exists()]
        elif "cpu" in controllers.split(","):
            mounts = [m for m in (root / controllers, root / "cpu") if m.is_dir()]
        else:
            continue
        if not mounts:
            continue
        mount = mounts[0]
        d = mount / path.strip("/")
        while mount == d or mount in d.parents:
            lim = _limit(d)
            if lim is not None and lim > 0:
                found.append(lim)
            d = d.parent
    return min(found) if found else None


def sample(cpus: frozenset[int], path: Path = PROC_STAT) -> Sample | None:
    """The idle and total ticks of ``cpus``, or None where ``path`` is not Linux's /proc/stat."""
    idle = total = 0
    seen = 0
    try:
        text = path.read_text()
    except OSError:
        return None
    for line in text.splitlines():
        name, _, rest = line.partition(" ")
        if not (name.startswith("cpu") and name[3:].isdigit() and int(name[3:]) in cpus):
            continue
        # user nice system idle iowait irq softirq steal [guest guest_nice]
        f = [int(x) for x in rest.split()[:8]]
        if len(f) < 5:
            return None
        idle += f[3] + f[4]
        total += sum(f)
        seen += 1
    if seen != len(cpus):
        return None
    return Sample(time.monotonic(), cpus, idle, total)


_last: Sample | None = sample(our_cpus())


def idle_between(start: Sample, end: Sample) -> float | None:
    """The average number of idle CPUs between two samples of the same CPUs."""
    ticks = end.total - start.total
    if start.cpus != end.cpus or ticks <= 0:
        return None
    return len(end.cpus) * (end.idle - start.idle) / ticks


def idle_cores() -> float | None:
    """How many of this process's CPUs were idle, on average, since the last sample (this
    module's import, or the last call) if that was at most 30 s ago, else over 0.25 s from now;
    an interval shorter than 0.25 s is waited out. This process's own work counts as busy.
    None where there is no /proc/stat."""
    global _last
    cpus = our_cpus()
    now = sample(cpus)
    if now is None:
        return None
    start = _last
    if start is None or start.cpus != cpus or now.at - start.at > MAX_INTERVAL_S:
        start = now
    if now.at - start.at < MIN_INTERVAL_S:
        time.sleep(MIN_INTERVAL_S - (now.at - start.at))
        now = sample(cpus)
        if now is None:
            return None
    _last = now
    return idle_between(start, now)
