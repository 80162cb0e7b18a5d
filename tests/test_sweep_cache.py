"""What a sweep worker keeps between cells (mm_sim/sweep/cache.py) changes no byte it writes.

Runs cells in this process with the cache cold, warm and off, and two small sweeps on a real
1-worker Dask LocalCluster (cache on, cache off), and compares their outputs byte for byte.
The only fields allowed to differ are the wall-clock ones: ``wall_s`` and ``worker`` (host:pid)
in sweep_results.csv (``results.TIMING_COLUMNS``); and a run's ``soak/run.json`` names its own
directory (``settings.artifacts``), which differs because the two sweeps write to two
directories, so that path is replaced before comparing.
"""

from __future__ import annotations

import io
import json
import os
import sys
from functools import partial
from pathlib import Path
from typing import Any

import cloudpickle
import numpy as np
import pytest

from mm_sim.config import load_overrides, load_profile
from mm_sim.errors import UserError
from mm_sim.events import open_feed, write_feed
from mm_sim.sweep import cache
from mm_sim.sweep.cell import CellTask, ensure_feed, run_cell
from mm_sim.sweep.cluster import warm_worker
from mm_sim.sweep.driver import SweepOptions, run_sweep
from mm_sim.sweep.feeds import FeedCase, resolve_cases
from mm_sim.sweep.results import TIMING_COLUMNS

GRID = """\
[overrides]
base_spread_bps_delta = [0.0, 0.3]
"""
FEEDS = ["synthetic-short@1", "synthetic-short@2"]
RUN = {"iterations": 1, "iteration_minutes": 0.5}

cloudpickle.register_pickle_by_value(sys.modules[__name__])


def _tree(root: Path) -> dict[str, bytes]:
    """Every file under ``root`` (relative path -> bytes), the root's own path made neutral."""
    out = {}
    for f in sorted(root.rglob("*")):
        if f.is_file() and f.name != ".lock":
            out[str(f.relative_to(root))] = f.read_bytes().replace(str(root).encode(), b"ROOT")
    return out


def _task(case: FeedCase, out: Path, cell_id: str) -> CellTask:
    p, o = load_profile(None), load_overrides(None)
    return CellTask(cell_id, case, p.model_dump(mode="json"), o.as_dict(), 1, 0.5, str(out))


@pytest.fixture(scope="module")
def day(tmp_path_factory: pytest.TempPathFactory) -> tuple[FeedCase, dict[str, Any], Path]:
    out = tmp_path_factory.mktemp("day")
    case = resolve_cases(["synthetic-short@1"], 1, **RUN)[0]
    return case, ensure_feed(case, str(out)), out


def test_cold_warm_and_off_runs_write_the_same_bytes(day, tmp_path: Path, monkeypatch) -> None:
    case, prepared, _ = day
    cache.clear()
    runs = {}
    for label in ("cold", "warm"):
        before = cache.stats()
        out = tmp_path / label
        run_cell(_task(case, out, "cell"), prepared)
        after = cache.stats()
        runs[label] = _tree(out / "runs")
        if label == "cold":
            assert after["feed_opens"] == before["feed_opens"] + 1
            assert after["profile_parses"] == before["profile_parses"] + 1
        else:  # the second run on the feed neither opened it nor parsed the profile again
            assert after["feed_opens"] == before["feed_opens"]
            assert after["feed_hits"] == before["feed_hits"] + 1
            assert after["profile_hits"] == before["profile_hits"] + 1
    assert cache.stats()["bytes_in_memory"] > 0
    monkeypatch.setenv(cache.BUDGET_ENV, "0")
    opens = cache.stats()["feed_opens"]
    run_cell(_task(case, tmp_path / "off", "cell"), prepared)
    assert cache.stats()["feed_opens"] == opens + 1
    runs["off"] = _tree(tmp_path / "off" / "runs")
    assert any(k.endswith("EDGE_REPORT.json") for k in runs["cold"])
    assert runs["warm"] == runs["cold"]
    assert runs["off"] == runs["cold"]


def test_runs_never_write_into_the_cached_events(day, tmp_path: Path) -> None:
    """The in-memory array is shared by every run on the feed: it must stay the file's bytes."""
    case, prepared, _ = day
    cache.clear()
    held = cache.feed(prepared["path"])
    assert held.in_memory and held.events.flags.writeable
    for i in range(2):
        run_cell(_task(case, tmp_path, f"c{i}"), prepared)
    assert cache.feed(prepared["path"]).events is held.events
    on_disk = np.load(prepared["path"], mmap_mode="r")
    assert held.events.tobytes() == on_disk.tobytes()


def test_a_feed_replaced_or_edited_at_its_path_is_opened_again(day, tmp_path: Path) -> None:
    _, prepared, _ = day
    src = open_feed(prepared["path"])
    path = tmp_path / "f.npy"
    first = np.array(src.events[:5000])
    write_feed(path, first, src.instrument, source={"kind": "test"})
    cache.clear()
    assert cache.feed(path).events.tobytes() == first.tobytes()
    # A new publish at the same path (write_feed replaces atomically: a new inode).
    second = np.array(src.events[5000:12000])
    write_feed(path, second, src.instrument, source={"kind": "test"})
    opens = cache.stats()["feed_opens"]
    assert cache.feed(path).events.tobytes() == second.tobytes()
    assert cache.stats()["feed_opens"] == opens + 1
    # Bytes changed in place: the cache opens it again, and the sidecar's hash refuses it.
    with path.open("r+b") as fh:
        fh.seek(-8, os.SEEK_END)
        fh.write(b"\x01" * 8)
    st = path.stat()
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000))
    with pytest.raises(UserError, match="xxh3_128"):
        cache.feed(path)


def test_a_feed_over_the_budget_stays_mapped_and_is_still_opened_once(day, monkeypatch) -> None:
    _, prepared, _ = day
    cache.clear()
    monkeypatch.setenv(cache.BUDGET_ENV, "0.001")  # 1 kB: no feed fits
    a = cache.feed(prepared["path"])
    assert not a.in_memory and isinstance(a.events, np.memmap)
    opens = cache.stats()["feed_opens"]
    assert cache.feed(prepared["path"]) is a
    assert cache.stats()["feed_opens"] == opens
    assert cache.stats()["bytes_in_memory"] == 0


def _signatures() -> dict[str, int]:
    from numba.core.registry import CPUDispatcher

    out = {}
    for name, mod in list(sys.modules.items()):
        if name.startswith("mm_sim"):
            for k, v in list(vars(mod).items()):
                if isinstance(v, CPUDispatcher):
                    out[f"{name}.{k}"] = len(v.signatures)
    return out


def test_after_the_warm_up_cells_add_no_compiled_signature(day, tmp_path: Path) -> None:
    """A cell that made numba type a new signature would compile or load it in the middle of
    the sweep: the warm-up must cover every kernel signature a cell uses."""
    case, prepared, _ = day
    warm_worker()
    before = _signatures()
    assert before  # the kernels are loaded
    for i in range(2):
        run_cell(_task(case, tmp_path, f"s{i}"), prepared)
        now = _signatures()
        assert now == before, {k: (before.get(k), v) for k, v in now.items() if before.get(k) != v}


def _run_and_log(log_dir: str, task: CellTask, prepared: Any = None) -> dict[str, Any]:
    """The real cell, then the worker's cache counters (one file per call)."""
    row = run_cell(task, prepared)
    stats = cache.stats()
    Path(log_dir, f"{task.cell_id}-{task.feed.slug}.json").write_text(json.dumps(stats))
    return row


def _strip_timing(csv_bytes: bytes) -> list[str]:
    lines = csv_bytes.decode().splitlines()
    assert lines[0].split(",")[-len(TIMING_COLUMNS) :] == list(TIMING_COLUMNS)
    return [ln.rsplit(",", len(TIMING_COLUMNS))[0] for ln in lines]


def test_a_sweep_with_the_cache_on_and_off_writes_the_same_results(
    tmp_path: Path, monkeypatch
) -> None:
    grid = tmp_path / "grid.toml"
    grid.write_text(GRID)
    outs = {}
    for label, budget in (("on", None), ("off", "0")):
        if budget is None:
            monkeypatch.delenv(cache.BUDGET_ENV, raising=False)
        else:
            monkeypatch.setenv(cache.BUDGET_ENV, budget)  # inherited by the worker process
        logs = tmp_path / f"log-{label}"
        logs.mkdir()
        out = tmp_path / label / "out"
        opts = SweepOptions(grid=grid, train=FEEDS, test=[], out=out, workers=1, **RUN)
        run_sweep(opts, io.StringIO(), cell_fn=partial(_run_and_log, str(logs)))
        stats = [json.loads(p.read_text()) for p in logs.glob("*.json")]
        assert len(stats) == 4
        hits = max(s["feed_hits"] for s in stats)
        # One worker ran 2 cells on each feed: with the cache on, every feed's second run was
        # a hit; off, none was.
        assert hits == (2 if label == "on" else 0), stats
        outs[label] = out
    on, off = outs["on"], outs["off"]
    assert _strip_timing((on / "sweep_results.csv").read_bytes()) == _strip_timing(
        (off / "sweep_results.csv").read_bytes()
    )
    for name in ("SWEEP_REPORT.md", "best_cell.json"):
        assert (on / name).read_bytes() == (off / name).read_bytes(), name
    assert _tree(on / "runs") == _tree(off / "runs")
