"""``python -m mm_sim ...`` in a subprocess, as a user runs it, on the project's kernel cache."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
ENV = {**os.environ, "NUMBA_CACHE_DIR": str(REPO / ".venv" / "numba-cache")}


def cli(*args: str, timeout: float = 600.0) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "mm_sim", *args],
        capture_output=True,
        text=True,
        cwd=REPO,
        env=ENV,
        timeout=timeout,
    )
