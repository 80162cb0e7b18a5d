"""How many of the CPUs this process may use the machine leaves idle now: measured, not inferred.

Why: the soak forks its model arms only when a core is free for them (runtime/arms_process.py),
and the 1-minute load average it used to ask lags by minutes: right after a test run or a
benchmark it still reads ~1.5 on a quiet 2-core machine, so the soak kept its arms in one
process and took a fifth longer (benchmarks/README.md, "Soak end to end"). The kernel's idle
counters (``/proc/stat``, per CPU of the affinity mask) over the last moments say what the
cores are doing now. A container's CPU limit (a cgroup quota, ``--cpus``) leaves the mask and
the host's idle time as wide as the host's, so where there is one, what its cgroup used over
the same moments bounds the figure too.

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
class Quota:
    """The tightest CPU limit on this process's cgroup or one above it, and where that cgroup
    counts the CPU time its processes used."""

    cpus: float
    usage: Path
    seconds_per_unit: float  # v2 cpu.stat usage_usec: 1e-6; v1 cpuacct.usage: 1e-9


@dataclass(frozen=True)
class Sample:
    at: float  # time.monotonic()
    cpus: frozenset[int]
    idle: int  # idle + iowait ticks of ``cpus`` since boot
    total: int  # user..steal ticks of ``cpus`` since boot (guest time is already in user)
    quota: Quota | None = None
    used_s: float | None = None  # the quota's cgroup's CPU seconds since it began


def our_cpus() -> frozenset[int]:
    """The CPUs this process may run on (a container or ``taskset`` may give it fewer than the
    machine has)."""
    try:
        return frozenset(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - no affinity on this platform
        return frozenset(range(os.cpu_count() or 1))


def _read(path: Path) -> str | None:
    try:
        return path.read_text()
    except (OSError, ValueError):  # missing, unreadable, or not text
        return None


def _limit(d: Path) -> float | None:
    """The CPU limit set in cgroup folder ``d`` (v2 ``cpu.max``, or v1's CFS quota and period),
    in CPUs; None for none."""
    try:
        v2 = _read(d / "cpu.max")
        if v2 is not None:
            quota, period = v2.split()[:2]
            return None if quota == "max" else int(quota) / int(period)
        v1 = _read(d / "cpu.cfs_quota_us"), _read(d / "cpu.cfs_period_us")
        if v1[0] is None or v1[1] is None or int(v1[0]) < 0:
            return None
        return int(v1[0]) / int(v1[1])
    except (ValueError, ZeroDivisionError):
        return None


def _usage(d: Path, root: Path, rel: str) -> tuple[Path, float] | None:
    """Where cgroup ``d`` (``rel`` below its mount) counts its CPU time: v2's cpu.stat, v1's
    cpuacct.usage beside the quota or in the cpuacct hierarchy."""
    if (d / "cpu.stat").exists() and (d / "cpu.max").exists():
        return d / "cpu.stat", 1e-6
    for where in (d, root / "cpuacct" / rel, root / "cpu,cpuacct" / rel):
        if (where / "cpuacct.usage").exists():
            return where / "cpuacct.usage", 1e-9
    return None


def cpu_quota() -> Quota | None:
    """The tightest CPU limit along this process's cgroup path (its own and those above it,
    cgroup v1 or v2) and its usage counter; None for no limit, or no cgroups here."""
    text = _read(PROC_CGROUP)
    if text is None:
        return None
    root = CGROUP_ROOT
    best: Quota | None = None
    for line in text.splitlines():
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
            usage = _usage(d, root, str(d.relative_to(mount))) if lim else None
            if lim and lim > 0 and usage and (best is None or lim < best.cpus):
                best = Quota(lim, *usage)
            d = d.parent
    return best


def _used_s(q: Quota) -> float | None:
    text = _read(q.usage)
    if text is None:
        return None
    try:
        if q.usage.name == "cpu.stat":
            for line in text.splitlines():
                key, _, value = line.partition(" ")
                if key == "usage_usec":
                    return int(value) * q.seconds_per_unit
            return None
        return int(text.strip()) * q.seconds_per_unit
    except ValueError:
        return None


def sample(
    cpus: frozenset[int], path: Path = PROC_STAT, quota: Quota | None = None
) -> Sample | None:
    """The idle and total ticks of ``cpus`` (and the quota's usage), or None where ``path`` is
    not Linux's /proc/stat or says something else than expected."""
    text = _read(path)
    if text is None:
        return None
    idle = total = 0
    seen = 0
    try:
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
    except ValueError:
        return None
    if seen != len(cpus):
        return None
    used = _used_s(quota) if quota is not None else None
    return Sample(time.monotonic(), cpus, idle, total, quota, used)


def idle_between(start: Sample, end: Sample) -> float | None:
    """The average number of idle CPUs between two samples of the same CPUs (between 0 and
    their count: the kernel's idle counters can step back), bounded by what the quota left
    unused when both samples read it."""
    ticks = end.total - start.total
    if start.cpus != end.cpus or ticks <= 0:
        return None
    idle = len(end.cpus) * (end.idle - start.idle) / ticks
    idle = min(max(idle, 0.0), float(len(end.cpus)))
    q = end.quota
    if q is not None and start.quota == q and start.used_s is not None and end.used_s is not None:
        spare = q.cpus - (end.used_s - start.used_s) / max(end.at - start.at, 1e-9)
        idle = min(idle, max(spare, 0.0))
    return idle


_last: Sample | None = sample(our_cpus(), quota=cpu_quota())


def idle_cores(quota: Quota | None) -> float | None:
    """How many of this process's CPUs were idle, on average, since the last sample (this
    module's import, or the last call) if that was at most 30 s ago, else over 0.25 s from now;
    an interval shorter than 0.25 s is waited out. This process's own work counts as busy.
    None where there is no /proc/stat. ``quota``: ``cpu_quota()``, which the caller reads once
    for this and its own use."""
    global _last
    cpus = our_cpus()
    now = sample(cpus, quota=quota)
    if now is None:
        return None
    start = _last
    if start is None or start.cpus != cpus or now.at - start.at > MAX_INTERVAL_S:
        start = now
    if now.at - start.at < MIN_INTERVAL_S:
        time.sleep(MIN_INTERVAL_S - (now.at - start.at))
        now = sample(cpus, quota=quota)
        if now is None:
            return None
    _last = now
    return idle_between(start, now)
