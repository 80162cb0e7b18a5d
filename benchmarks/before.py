"""The two-clock core against the one-cursor core before it, on the same events (issue 13).

Issue 13 asks that the exchange-order core keep the events/s the core had before two clocks
(within 15 %). Within one build, the file-order switch is no stand-in for that core: it gains
from everything done since (one decision per message, the inlined book). So this measures the
old core itself: its commit's tree is extracted with ``git archive`` into the bench's temporary
directory, and ``before_worker.py`` runs there (own kernel cache: one cold compile, not timed)
and in this tree, alternately, on the very event arrays the rest of the bench uses. A clone
without that commit (shallow) reports the row as skipped.
"""

from __future__ import annotations

import io
import json
import math
import os
import shutil
import subprocess
import sys
import tarfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.data import REPO, BenchFeed

# The last commit with one cursor (matching in file order, a decision after every event).
BEFORE_COMMIT = "3c36a4b"
WORKER = Path(__file__).resolve().parent / "before_worker.py"
# Small feeds are run until this much was timed (before_worker.py says why).
MIN_TIMED_S = 0.3
WORKER_TIMEOUT_S = 1800.0  # a cold compile and every feed three times, with room to spare


def _git(*args: str) -> subprocess.CompletedProcess[bytes] | str:
    try:
        return subprocess.run(["git", "-C", str(REPO), *args], capture_output=True, timeout=120)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"git could not run: {exc}"


def _old_tree(work: Path) -> Path | str:
    """The old commit's files under ``work``, or why they cannot be had."""
    here = _git("rev-parse", "--git-dir")
    if isinstance(here, str):
        return here
    if here.returncode != 0:
        return f"{REPO} is not a git checkout: the old commit cannot be extracted"
    ok = _git("rev-parse", "--verify", "--quiet", f"{BEFORE_COMMIT}^{{commit}}")
    if isinstance(ok, str) or ok.returncode != 0:
        return f"commit {BEFORE_COMMIT} is not in this clone (shallow?): git fetch --unshallow"
    tar = _git("archive", "--format=tar", BEFORE_COMMIT)
    if isinstance(tar, str) or tar.returncode != 0:
        why = tar if isinstance(tar, str) else tar.stderr.decode()[-300:]
        return f"git archive {BEFORE_COMMIT} failed: {why}"
    tree = work / "before_tree"
    shutil.rmtree(tree, ignore_errors=True)
    tree.mkdir()
    with tarfile.open(fileobj=io.BytesIO(tar.stdout)) as tf:
        if hasattr(tarfile, "data_filter"):  # Python >= 3.11.4
            tf.extractall(tree, filter="data")
        else:  # our own repository's archive
            tf.extractall(tree)
    return tree


def _run(tree: Path, cache: str | None, job: Path, out: Path) -> dict[str, Any] | str:
    env = {**os.environ, "PYTHONPATH": str(tree)}
    if cache is not None:
        env["NUMBA_CACHE_DIR"] = cache
    try:
        r = subprocess.run(
            [sys.executable, str(WORKER), str(job), str(out)],
            env=env, capture_output=True, text=True, timeout=WORKER_TIMEOUT_S,
        )  # fmt: skip
    except subprocess.TimeoutExpired:
        return f"worker in {tree.name} did not finish in {WORKER_TIMEOUT_S:.0f} s"
    if r.returncode != 0:
        return f"worker in {tree.name} failed (exit {r.returncode}): {r.stderr[-800:]}"
    res: dict[str, Any] = json.loads(out.read_text())
    return res


def measure(
    feeds: list[BenchFeed],
    work: Path,
    *,
    rounds: int = 2,
    repeats: int = 3,
    step: Callable[[str], None] = lambda s: None,
) -> dict[str, Any]:
    """Per feed: ns/event of the old core and of this one (fastest over ``rounds`` alternating
    worker runs of ``repeats`` each) and ``ratio`` = this core's events/s ÷ the old one's."""
    tree = _old_tree(work)
    if isinstance(tree, str):
        return {"commit": BEFORE_COMMIT, "skipped": tree}
    job_feeds = []
    for f in feeds:
        path = work / f"before_{f.name}.npy"
        np.save(path, np.ascontiguousarray(f.events))
        inst = f.instrument
        job_feeds.append(
            {"name": f.name, "events": str(path), "symbol": inst.symbol, "venue": inst.venue,
             "tick_size": inst.tick_size, "lot_size": inst.lot_size}
        )  # fmt: skip
    job = work / "before_job.json"
    job.write_text(json.dumps({"repeats": repeats, "min_timed_s": MIN_TIMED_S, "feeds": job_feeds}))
    old_cache = str(work / "before_numba_cache")
    best: dict[str, dict[str, float]] = {"before": {}, "now": {}}
    t0 = time.perf_counter()
    for k in range(rounds):
        for side, root, cache in (("before", tree, old_cache), ("now", REPO, None)):
            step(f"one-cursor core before two clocks: {side}, round {k + 1} of {rounds}")
            res = _run(root, cache, job, work / f"before_out_{side}.json")
            if isinstance(res, str):
                return {"commit": BEFORE_COMMIT, "error": res}
            for name, r in res["feeds"].items():
                prev = best[side].get(name, math.inf)
                best[side][name] = min(prev, r["ns_per_event"])
    out: dict[str, Any] = {"commit": BEFORE_COMMIT, "rounds": rounds, "repeats": repeats,
                           "min_timed_s": MIN_TIMED_S, "wall_s": time.perf_counter() - t0,
                           "feeds": {}}  # fmt: skip
    for f in feeds:
        b, n = best["before"][f.name], best["now"][f.name]
        out["feeds"][f.name] = {
            "events": len(f.events), "before_ns_per_event": b, "now_ns_per_event": n,
            "ratio": b / n if n > 0 else math.nan,
        }  # fmt: skip
    return out
