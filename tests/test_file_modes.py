"""Files are published with the user's umask, not mkstemp's private 0600.

A Dask cluster on a shared filesystem (docs/SWEEP.md) reads feeds and reports written by another
user of the same group; a 0600 report or feed breaks it, while the records (plain ``open``)
were 0644 all along.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

import numpy as np
import pytest
from test_edge import simulate_run
from test_rundir import write_run

from mm_sim.cli import main
from mm_sim.events import EVENT_DTYPE, FeedWriter, Instrument, atomic_write_bytes, current_umask


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@pytest.fixture
def umask_002():
    old = os.umask(0o002)
    try:
        yield
    finally:
        os.umask(old)


def test_current_umask_reads_without_changing(umask_002: None) -> None:
    assert current_umask() == 0o002
    assert current_umask() == 0o002


def test_atomic_write_and_feed_writer_follow_the_umask(tmp_path: Path, umask_002: None) -> None:
    atomic_write_bytes(tmp_path / "a.json", b"{}\n")
    assert mode(tmp_path / "a.json") == 0o664
    with FeedWriter(tmp_path / "f.npy", Instrument("X", "test", 0.01, 0.01)) as w:
        w.write(np.zeros(3, dtype=EVENT_DTYPE))
    assert mode(tmp_path / "f.npy") == 0o664
    assert mode(tmp_path / "f.json") == 0o664


def test_report_command_writes_group_readable_reports(tmp_path: Path) -> None:
    rd = write_run(tmp_path / "run", simulate_run(3, n_iter=1, fills_per_iter=10))
    rd.close()
    old = os.umask(0o027)
    try:
        assert main(["report", str(rd.root), "--no-charts"]) == 0
    finally:
        os.umask(old)
    written = [*rd.reports.iterdir(), rd.fills_csv]
    assert written and all(mode(p) == 0o640 for p in written), {
        p.name: oct(mode(p)) for p in written
    }
