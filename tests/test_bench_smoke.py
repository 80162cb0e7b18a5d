"""``python -m benchmarks.run --tiny`` end to end: the JSON has every section and sane figures.

No timing is asserted (speed belongs in the bench); only that each figure exists, is a finite
positive number and that the pieces agree with each other.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent


def _pos(x: object) -> bool:
    return isinstance(x, int | float) and not isinstance(x, bool) and math.isfinite(x) and x > 0


@pytest.mark.slow
def test_bench_tiny_writes_complete_results(tmp_path: Path) -> None:
    env = dict(os.environ)
    env.setdefault("NUMBA_CACHE_DIR", str(REPO / ".venv" / "numba-cache"))
    proc = subprocess.run(
        [sys.executable, "-m", "benchmarks.run", "--tiny", "--out", str(tmp_path)],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    res = json.loads((tmp_path / "latest.json").read_text())
    md = (tmp_path / "latest.md").read_text()
    assert md.startswith("# mm_sim bench (tiny)")
    assert res["mode"] == "tiny"

    env_info = res["environment"]
    for key in ("commit", "cpu_model", "python", "numba", "numpy"):
        assert env_info[key], key

    syn = res["throughput"]["synthetic"]
    assert syn["events"] == res["synthetic_feed"]["events"] > 0
    for key in ("events_per_s", "ns_per_event", "x_scan_floor", "best_s"):
        assert _pos(syn[key]), (key, syn[key])
    assert _pos(res["roofline"]["ns_per_event"])

    st = res["stages"]
    assert st["events"] > 0 and st["events"] % st["batch"] == 0
    for group in ("stage_ns_per_event", "cumulative_ns_per_event", "direct_ns_per_call"):
        for name, d in st[group].items():
            assert d["batches"] > 0, name
            assert d["p50"] <= d["p99"] <= d["p99_9"] <= d["max"], (name, d)
            assert math.isfinite(d["max"]), name
    cum = st["cumulative_ns_per_event"]
    for name in ("scan", "book", "book+quote", "book+quote+limiter", "engine"):
        assert _pos(cum[name]["p50"]), name
    assert set(st["stage_ns_per_event"]) == {
        "book_update", "quote_decision", "limiter", "matching_accounting_rest"
    }  # fmt: skip
    assert _pos(st["quote_match_ns_per_event"]["p99"])

    rows = res["scaling"]["length"]["rows"]
    assert [r["times"] for r in rows] == [1, 2]
    for r in rows:
        assert "error" not in r, r
        assert _pos(r["events_per_s"]) and _pos(r["peak_rss_mb"])
    assert rows[1]["events"] == 2 * rows[0]["events"]
    for r in res["scaling"]["levels"]:
        assert "error" not in r, r
        assert _pos(r["events_per_s"])

    warm = res["soak"]["warm"]
    assert "error" not in warm, warm
    assert _pos(warm["wall_s"]) and _pos(warm["events"]) and _pos(warm["peak_rss_mb"])
    assert "peer" in res["peer"]

    names = {t["target"] for t in res["targets"]}
    assert "core events/s, synthetic" in names
    assert "mm_sim / hftbacktest events/s" in names
    for t in res["targets"]:
        assert t["met"] in (True, False, None)

    sw = res["sweep"]
    assert "error" not in sw, sw
    for n in (1, 2):
        assert _pos(sw[f"workers_{n}"]["cells_per_min"]), sw
    assert _pos(sw["speedup_2_vs_1"]) and _pos(sw["plain_loop"]["cells_per_min"])
    assert "## Sweep on Dask" in md

    for key, busy in (("live_latency", True), ("live_latency_sleeping", False)):
        lv = res[key]
        assert "error" not in lv, lv
        assert lv["busy_poll"] is busy
        assert lv["messages"] > 0 and lv["frames_with_decision"] > 0
        d = lv["latency_us"]
        assert _pos(d["p50"]) and d["p50"] <= d["p99"] <= d["p99_9"] <= d["max"]
        assert isinstance(lv["backlogs"], list) and isinstance(lv["server_stalls"], list)
    assert "## Live path" in md and "| busy-poll | arrival -> decision |" in md
    assert "| sleeping | arrival -> decision |" in md
    assert {"live arrival -> decision p99 (busy-poll)",
            "live arrival -> decision p99 (sleeping loop)"} <= names  # fmt: skip
