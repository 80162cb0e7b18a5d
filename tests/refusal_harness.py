"""What the refusal tests share: the CLI in a subprocess, the one-line-refusal standard, and
copies of a feed or a run directory to damage."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
TINY = ["--iterations", "1", "--iteration-minutes", "0.2"]


def mm(*argv: str, env: dict[str, str] | None = None, cwd: Path = REPO, timeout: float = 600):
    return subprocess.run(
        [sys.executable, "-m", "mm_sim", *argv],
        capture_output=True,
        text=True,
        cwd=cwd,
        env={**os.environ, **(env or {})},
        timeout=timeout,
    )


def snapshot(*roots: Path) -> dict[str, bytes]:
    """Every file under ``roots`` (or the file itself), by path: what must not change."""
    out: dict[str, bytes] = {}
    for root in roots:
        if root.is_file():
            out[str(root)] = root.read_bytes()
        elif root.is_dir():
            for p in sorted(root.rglob("*")):
                if p.is_file() and p.name != ".lock":
                    out[str(p)] = p.read_bytes()
    return out


def assert_refused(r: subprocess.CompletedProcess[str], culprit: str, code: int = 2) -> None:
    both = r.stdout + r.stderr
    assert "Traceback" not in both, both[-3000:]
    assert r.returncode == code, (r.returncode, both[-3000:])
    lines = [ln for ln in r.stderr.splitlines() if ln.startswith("mm_sim")]
    assert len(lines) == 1, r.stderr[-3000:]
    assert culprit in lines[0], (culprit, lines[0])


def copy_feed(feed: Path, dst: Path) -> Path:
    dst.mkdir(parents=True, exist_ok=True)
    shutil.copy(feed, dst / feed.name)
    shutil.copy(feed.with_suffix(".json"), dst / feed.with_suffix(".json").name)
    return dst / feed.name


def rewrite_feed(feed: Path, dst: Path, change: Callable[[np.ndarray], np.ndarray]) -> Path:
    from mm_sim.events import open_feed, write_feed

    f = open_feed(feed)
    return write_feed(dst / "bad.npy", change(np.array(f.events)), f.instrument)


def copy_run(r: Path, t: Path) -> Path:
    dst = t / "run"
    shutil.copytree(r, dst)
    return dst
