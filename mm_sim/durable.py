"""fsync, unless the caller publishes the whole folder at once afterwards.

Why: a run directory fsyncs each commit so that a killed soak resumes from its last iteration.
A sweep cell is never resumed: it writes its run under a temporary name and renames it into
place when complete, and a cell killed before that runs again from the start. Its ~20 fsyncs
(records, metrics line, overrides, reports) were a tenth of a run's wall time spent waiting for
the disk, for files most of which it deletes (the raw records) before publishing. Inside
``deferred()`` those fsyncs are skipped, and ``sync_tree`` makes what is left durable in one pass
before the rename, so a published run is on disk exactly as before.

The switch is a context variable: it follows the soak into its event loop's tasks (they copy
the context they were created in) and no other thread or run sees it.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from contextvars import ContextVar
from pathlib import Path

_DEFERRED: ContextVar[bool] = ContextVar("mm_sim_fsync_deferred", default=False)


def fsync(fd: int) -> None:
    """``os.fsync(fd)``, skipped inside ``deferred()``."""
    if not _DEFERRED.get():
        os.fsync(fd)


def fsync_dir(path: Path) -> None:
    """Make the entries of folder ``path`` durable (where the platform allows it), skipped
    inside ``deferred()``."""
    if not _DEFERRED.get():
        sync_dir(path)


def _fsync_path(path: Path | str) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def sync_dir(path: Path | str) -> None:
    """fsync folder ``path`` now, deferred or not (a rename into it is then durable)."""
    with contextlib.suppress(OSError):
        _fsync_path(path)


@contextlib.contextmanager
def deferred() -> Iterator[None]:
    """Skip fsyncs made through this module meanwhile (the caller syncs with ``sync_tree``)."""
    token = _DEFERRED.set(True)
    try:
        yield
    finally:
        _DEFERRED.reset(token)


def sync_tree(root: Path) -> None:
    """fsync every file and folder under ``root``, files first, each folder after its entries."""
    for dirpath, _dirs, files in os.walk(root, topdown=False):
        for name in files:
            _fsync_path(os.path.join(dirpath, name))
        sync_dir(dirpath)
