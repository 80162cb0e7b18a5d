"""The deferred-fsync switch: where it holds, and that a published tree is synced whole.

A sweep cell skips its run directory's per-commit fsyncs and syncs what it keeps once before
publishing (mm_sim/durable.py). The switch must reach the soak's asyncio tasks (they run in
copies of the context they were created in), end with its block, and never leak into another
thread: a soak running beside a sweep in the same process keeps its durability.
"""

from __future__ import annotations

import asyncio
import os
import threading
from pathlib import Path

import pytest

from mm_sim import durable
from mm_sim.events import atomic_write_bytes


def _deferred_now() -> bool:
    return durable._DEFERRED.get()


def test_the_switch_reaches_tasks_and_ends_with_its_block() -> None:
    async def inner() -> bool:
        return await asyncio.create_task(asyncio.sleep(0, _deferred_now()))

    assert not _deferred_now()
    with durable.deferred():
        assert asyncio.run(inner())
        seen: list[bool] = []
        t = threading.Thread(target=lambda: seen.append(_deferred_now()))
        t.start()
        t.join()
        assert seen == [False]  # another thread keeps fsyncing
    assert not _deferred_now()
    assert not asyncio.run(inner())


def test_atomic_writes_still_land_while_deferred(tmp_path: Path) -> None:
    with durable.deferred():
        atomic_write_bytes(tmp_path / "a" / "b.json", b"{}")
    assert (tmp_path / "a" / "b.json").read_bytes() == b"{}"
    assert sorted(p.name for p in (tmp_path / "a").iterdir()) == ["b.json"]  # no temp left


def test_sync_tree_walks_every_file_and_folder(tmp_path: Path) -> None:
    for rel in ("x.txt", "d/y.bin", "d/e/z.json"):
        p = tmp_path / "run" / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(b"1")
    durable.sync_tree(tmp_path / "run")  # opens each for fsync: an unreadable file would raise
    (tmp_path / "run" / "d" / "y.bin").chmod(0)
    try:
        if os.geteuid() != 0:  # root reads anything
            with pytest.raises(PermissionError):
                durable.sync_tree(tmp_path / "run")
    finally:
        (tmp_path / "run" / "d" / "y.bin").chmod(0o644)
