"""Waiting on a soak that runs in a subprocess: how many iterations its run directory has
committed, and a wait until the first one is, so a test can act on a run still going."""

from __future__ import annotations

import subprocess
import time
from pathlib import Path


def committed(artifacts: Path) -> int:
    path = artifacts / "soak" / "metrics.jsonl"
    if not path.exists():
        return 0
    return path.read_bytes().count(b"\n")


def wait_for_commit(proc: subprocess.Popen, artifacts: Path, timeout: float = 300) -> None:
    """Until ``artifacts`` holds a committed iteration, the soak ends, or ``timeout`` passes;
    the caller asserts which."""
    deadline = time.monotonic() + timeout
    while committed(artifacts) < 1 and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
