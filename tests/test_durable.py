"""The deferred-fsync switch: where it holds, and that a published sweep run is synced whole.

A sweep cell skips its run directory's per-commit fsyncs and syncs what it keeps once, before
the rename that publishes it (mm_sim/durable.py). The switch must reach the soak's asyncio
tasks, end with its block and never leak into another thread; and a cell must leave every kept
file fsynced exactly once, before the rename, and the rename itself synced. The real fsync and
rename run throughout: the tests only note which paths they were called on.
"""

from __future__ import annotations

import asyncio
import os
import threading
from pathlib import Path

import pytest

from mm_sim import durable
from mm_sim.config import load_overrides, load_profile
from mm_sim.events import atomic_write_bytes
from mm_sim.sweep.cell import CellTask, run_cell
from mm_sim.sweep.feeds import resolve_cases


class Calls:
    """os.fsync and os.replace as they are, with the paths they were called on, in order."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.log: list[tuple[str, str]] = []
        real_fsync, real_replace = os.fsync, os.replace

        def fsync(fd: int) -> None:
            self.log.append(("fsync", os.readlink(f"/proc/self/fd/{fd}")))
            real_fsync(fd)

        def replace(src: str | os.PathLike[str], dst: str | os.PathLike[str]) -> None:
            self.log.append(("replace", f"{os.fspath(src)} -> {os.fspath(dst)}"))
            real_replace(src, dst)

        monkeypatch.setattr(os, "fsync", fsync)
        monkeypatch.setattr(os, "replace", replace)

    def fsynced(self) -> list[str]:
        return [p for op, p in self.log if op == "fsync"]


def test_the_switch_reaches_tasks_and_ends_with_its_block(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls = Calls(monkeypatch)

    async def write_in_a_task(path: Path) -> None:
        async def write() -> None:
            atomic_write_bytes(path, b"x")

        await asyncio.create_task(write())

    with durable.deferred():
        asyncio.run(write_in_a_task(tmp_path / "a"))
        assert calls.fsynced() == []  # the soak's tasks see the switch
        t = threading.Thread(target=atomic_write_bytes, args=(tmp_path / "b", b"y"))
        t.start()
        t.join()
        (synced,) = calls.fsynced()  # another thread keeps fsyncing
        assert Path(synced).parent == tmp_path
    asyncio.run(write_in_a_task(tmp_path / "c"))
    assert len(calls.fsynced()) == 2  # and so does everything after the block
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a", "b", "c"]


def test_a_sweep_cell_syncs_what_it_keeps_once_before_publishing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (case,) = resolve_cases(["synthetic-short@2"], 1, 1, 0.5)
    task = CellTask(
        "c0", case, load_profile(None).model_dump(mode="json"), load_overrides(None).as_dict(),
        1, 0.5, str(tmp_path),
    )  # fmt: skip
    calls = Calls(monkeypatch)
    run_cell(task)
    final = task.run_dir
    publish = next(
        i for i, (op, a) in enumerate(calls.log) if op == "replace" and a.endswith(f"-> {final}")
    )
    tmp = Path(calls.log[publish][1].split(" -> ")[0])
    before = [p for op, p in calls.log[:publish] if op == "fsync" and p.startswith(str(tmp))]
    kept = [str(p).replace(str(final), str(tmp), 1) for p in final.rglob("*")]
    kept_files = sorted(p for p in kept if not os.path.isdir(p.replace(str(tmp), str(final), 1)))
    assert kept_files and sorted(set(before) & set(kept_files)) == kept_files  # all kept, synced
    assert len(before) == len(set(before))  # each once: no per-commit fsync during the soak
    assert (tmp / "soak" / "metrics.jsonl").as_posix() in before
    assert not any("/records/" in p for p in before)  # dropped before the pass, never synced
    assert ("fsync", str(final.parent)) in calls.log[publish:]  # the rename itself
