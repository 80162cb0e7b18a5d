"""Shadow arms and the walk-forward tuner on the live path, against the fake exchange only."""

from __future__ import annotations

import json
from pathlib import Path

from test_live_soak import _run, _serve


def test_live_walk_forward_with_every_candidate_in_a_shadow(tmp_path: Path) -> None:
    """--shadow 12 on a live feed: the twelve neighbours run beside the primary on the live
    events (paper), the tuner needs no replay but the incumbent's, and a winner would be a
    promoted shadow."""
    art = tmp_path / "art"
    with _serve("--speed", "50", "--duration-s", "120") as url:
        r = _run(
            ["soak", "--feed", url, "--iterations", "2", "--iteration-minutes", "0.2",
             "--tuner", "walk-forward", "--shadow", "12", "--artifacts", str(art)]
        )  # fmt: skip
    assert r.returncode == 0, r.stderr[-2000:]
    assert "shadow arms (paper;" in r.stdout and "| autotune | walk-forward | " in r.stdout
    lines = [json.loads(x) for x in (art / "soak" / "metrics.jsonl").read_text().splitlines()]
    assert len(lines) == 2
    for ln in lines:
        assert len(ln["extra"]["shadows"]) == 12
        t = ln["extra"]["tuning"]
        assert t["cost"]["replays"] == 1 and t["cost"]["from_shadows"] == 12
        sources = [c["source"] for c in t["candidates"]]
        assert sources == ["replay", *[f"shadow {i}" for i in range(1, 13)]]
        if t["winner"] is not None:
            assert t["promoted"].startswith("shadow ")
