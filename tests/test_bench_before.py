"""``benchmarks.before``: the one-cursor core of an old commit timed beside this one.

No timing is asserted; only that both trees ran the same events and the figures are there.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from benchmarks import before, data
from benchmarks.report import _before_markdown

REPO = Path(__file__).resolve().parent.parent


def _small_feed() -> data.BenchFeed:
    return data.synthetic(20.0)


def test_worker_times_this_tree_on_saved_events(tmp_path: Path) -> None:
    feed = _small_feed()
    np.save(tmp_path / "ev.npy", feed.events)
    inst = feed.instrument
    job = {"repeats": 2, "feeds": [{
        "name": "syn", "events": str(tmp_path / "ev.npy"), "symbol": inst.symbol,
        "venue": inst.venue, "tick_size": inst.tick_size, "lot_size": inst.lot_size,
    }]}  # fmt: skip
    (tmp_path / "job.json").write_text(json.dumps(job))
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    env.setdefault("NUMBA_CACHE_DIR", str(REPO / ".venv" / "numba-cache"))
    r = subprocess.run(
        [sys.executable, str(before.WORKER), str(tmp_path / "job.json"), str(tmp_path / "o.json")],
        env=env, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert r.returncode == 0, r.stderr[-2000:]
    got = json.loads((tmp_path / "o.json").read_text())["feeds"]["syn"]
    assert got["events"] == len(feed.events)
    assert math.isfinite(got["ns_per_event"]) and got["ns_per_event"] > 0


def test_a_clone_without_the_commit_reports_it(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setattr(before, "BEFORE_COMMIT", "0" * 40)
    res = before.measure([_small_feed()], tmp_path)
    assert "0" * 40 in res["skipped"]
    md = "\n".join(_before_markdown(res))
    assert "Not measured" in md and "0" * 40 in md


def _has_commit() -> bool:
    r = subprocess.run(
        ["git", "-C", str(REPO), "cat-file", "-e", f"{before.BEFORE_COMMIT}^{{commit}}"],
        capture_output=True,
    )
    return r.returncode == 0


@pytest.mark.slow
@pytest.mark.skipif(not _has_commit(), reason="the old commit is not in this clone (shallow)")
def test_the_old_core_runs_beside_this_one(tmp_path: Path) -> None:
    feed = _small_feed()
    res = before.measure([feed], tmp_path, rounds=1, repeats=1)
    assert "error" not in res, res.get("error")
    row = res["feeds"]["synthetic"]
    assert row["events"] == len(feed.events)
    assert row["before_ns_per_event"] > 0 and row["now_ns_per_event"] > 0
    assert row["ratio"] == pytest.approx(row["before_ns_per_event"] / row["now_ns_per_event"])
    md = "\n".join(_before_markdown(res))
    assert f"({before.BEFORE_COMMIT})" in md and "| synthetic |" in md


def test_no_git_is_reported_not_raised(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))  # no git to be found
    res = before.measure([_small_feed()], tmp_path)
    assert "git could not run" in res["skipped"]
