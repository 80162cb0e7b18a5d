"""The checks that catch a broken run must fire when fed one: a detector never fed a fault
cannot be told from one that always says "fine"."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from test_edge import simulate_run

from mm_sim.config import Overrides
from mm_sim.report.edge import edge_sections
from mm_sim.runtime.operator import read_edit


def test_pnl_residual_reports_marks_that_disagree_with_the_fills() -> None:
    """The closing mark's cash is off by 5: the fills no longer explain the account's PnL, and
    the residual says by how much (in that iteration and in the totals, nowhere else)."""
    run = simulate_run(11, n_iter=3, fills_per_iter=60)
    totals, iters = edge_sections(run.slices(), 5.0)
    assert all(abs(s.pnl_residual or 0.0) < 1e-9 for s in [totals, *iters])
    run.iterations[-1]["marks"]["cash"][-1] += 5.0
    totals, iters = edge_sections(run.slices(), 5.0)
    assert iters[-1].pnl_residual == pytest.approx(5.0, abs=1e-9)
    assert totals.pnl_residual == pytest.approx(5.0, abs=1e-9)
    assert all(abs(s.pnl_residual or 0.0) < 1e-9 for s in iters[:-1])


def _edit(tmp_path: Path, raw: bytes, current: Overrides | None = None):
    path = tmp_path / "runtime_overrides.json"
    path.write_bytes(raw)
    return read_edit(path, current or Overrides(), None)


def test_operator_partial_edit_merges_onto_the_values_in_force(tmp_path: Path) -> None:
    current = Overrides(tail_age_ms=900.0, min_interval_ms=120.0)
    edit = _edit(tmp_path, b'{"max_delta_ratio": 0.2}', current)
    assert edit is not None and edit.overrides is not None
    assert edit.overrides.max_delta_ratio == 0.2
    assert edit.overrides.tail_age_ms == 900.0 and edit.overrides.min_interval_ms == 120.0
    assert edit.changed == ("max_delta_ratio",)
    assert "tail_age_ms" in edit.kept


@pytest.mark.parametrize(
    ("raw", "says"),
    [
        (b'{"tail_age_ms": 7\xff00}', "not UTF-8"),
        (b'{"tail_age_ms": ', "invalid JSON"),
        (b"[1, 2]", "JSON object"),
        (b'{"tail_age": 700}', "tail_age"),
        (b'{"tail_age_ms": 5}', "tail_age_ms"),
        (json.dumps({"tail_age_ms": float("nan")}).encode(), "tail_age_ms"),
    ],
)
def test_operator_bad_edit_is_rejected_whole(tmp_path: Path, raw: bytes, says: str) -> None:
    edit = _edit(tmp_path, raw)
    assert edit is not None and edit.overrides is None
    assert edit.error is not None and says in edit.error


def test_operator_watcher_ignores_its_own_write(tmp_path: Path) -> None:
    path = tmp_path / "runtime_overrides.json"
    path.write_bytes(b"{}")
    assert read_edit(path, Overrides(), b"{}") is None


def test_a_killed_writers_temp_file_is_cleaned_by_the_next_writer(tmp_path: Path) -> None:
    """A SIGKILLed `record`/`convert` leaves its hidden temp file; the next writer of the same
    name removes it, but never the temp file of a writer still running (it holds the lock)."""
    import fcntl

    from mm_sim.events import EVENT_DTYPE, Instrument, write_feed

    stale = tmp_path / ".f.npy.dead1234.tmp"
    stale.write_bytes(b"half a feed")
    live = tmp_path / ".f.npy.live5678.tmp"
    live.write_bytes(b"being written")
    with open(live, "rb") as held:
        fcntl.flock(held.fileno(), fcntl.LOCK_EX)
        write_feed(tmp_path / "f.npy", np.zeros(3, EVENT_DTYPE), Instrument("X", "v", 0.1, 0.1))
        assert not stale.exists()
        assert live.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == [".f.npy.live5678.tmp", "f.json", "f.npy"]
