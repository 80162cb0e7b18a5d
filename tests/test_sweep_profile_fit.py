"""A sweep refuses a profile that could never quote on a feed, as the soak does
(mm_sim/runtime/profile_fit.py), instead of filling rows with 0-fill runs: the profile's tick
against each feed's before any cell runs, each cell's order size against the feed's prices
when the cell starts. The refusal is one line from the driver: no worker prints Dask's
"Compute Failed" traceback for it."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def _profile(tmp_path: Path, tick: float | None) -> Path:
    data = json.loads((REPO / "profiles" / "market_maker_S1.json").read_text())
    data["instrument"]["tick_size"] = tick
    path = tmp_path / "profile.json"
    path.write_text(json.dumps(data))
    return path


def _sweep(tmp_path: Path, profile: Path, grid: str) -> subprocess.CompletedProcess[str]:
    (tmp_path / "grid.toml").write_text(grid)
    env = {**os.environ}
    env.setdefault("NUMBA_CACHE_DIR", str(REPO / ".venv" / "numba-cache"))
    cmd = [sys.executable, "-m", "mm_sim", "sweep", "--grid", str(tmp_path / "grid.toml"),
           "--profile", str(profile), "--train", "synthetic-short@1", "--test",
           "synthetic-short@2", "--top", "1", "--iterations", "1", "--iteration-minutes", "0.5",
           "--workers", "1", "--out", str(tmp_path / "out")]  # fmt: skip
    return subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=300)


def test_a_cell_whose_orders_the_notional_limit_refuses_stops_the_sweep_in_one_line(
    tmp_path: Path,
) -> None:
    # 0.01 BTC at ~30,000 is worth ~300: a limit of 100 refuses every order.
    profile = _profile(tmp_path, 0.2)
    res = _sweep(tmp_path, profile, "[profile.inventory]\nmax_notional = [10000, 100]\n")
    assert res.returncode == 2, res.stderr[-2000:]
    assert "Traceback" not in res.stderr and "Compute Failed" not in res.stderr, res.stderr
    errors = [line for line in res.stderr.splitlines() if "error" in line]
    assert len(errors) == 1, res.stderr
    (err,) = errors
    assert "(max_notional=100) on feed synthetic-short@" in err
    assert f"profile {profile}: quoting.order_qty 0.01 is worth" in err  # as the user named it
    # Refused before anything of its run was written.
    cell = re.search(r"cell (\w+) \(max_notional=100\)", err)
    assert cell and not (tmp_path / "out" / "runs" / cell.group(1)).exists()
    assert "above inventory.max_notional 100" in err and "could never quote" in err
    assert "then --resume" in err
    assert "max_notional=10000) on feed" not in err
    # The profile's tick in place of the feed's is said once per feed, as the soak says it.
    for day in ("synthetic-short@1", "synthetic-short@2"):
        assert (
            "note: the profile's instrument.tick_size 0.2 replaces the feed's 0.1 (2x): the "
            f"feed's prices are rounded to it (feed {day})"
        ) in res.stderr


def test_a_profile_tick_that_does_not_fit_a_feed_is_refused_before_anything_runs(
    tmp_path: Path,
) -> None:
    res = _sweep(tmp_path, _profile(tmp_path, 1000.0), "[overrides]\ntail_age_ms = [400, 700]\n")
    assert res.returncode == 2, res.stderr[-2000:]
    assert res.stderr.count("\n") == 1 and "Traceback" not in res.stderr, res.stderr
    assert "feed synthetic-short@1: profile " in res.stderr
    assert "instrument.tick_size 1000 is 1e+04x the feed's own 0.1" in res.stderr
    assert not (tmp_path / "out").exists()  # refused before the output folder was made
