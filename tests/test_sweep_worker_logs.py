"""A local cluster's workers keep Dask's errors in their log but not the races a Ctrl-C's
shutdown makes (a lost heartbeat, a peer gone mid-transfer: mm_sim/sweep/worker_logs.py), and
run with the allocator's defaults (sweep/cluster.py: Dask's MALLOC_TRIM_THRESHOLD_ cost a tenth
of each run)."""

from __future__ import annotations

import io
import logging
import os

import pytest

from mm_sim.sweep.cluster import connect
from mm_sim.sweep.worker_logs import SHUTDOWN_NOISE, ShutdownNoiseFilter


def _record(msg: str) -> logging.LogRecord:
    return logging.LogRecord("distributed.worker", logging.ERROR, __file__, 1, msg, None, None)


def test_the_filter_drops_the_shutdown_races_only() -> None:
    f = ShutdownNoiseFilter()
    assert not f.filter(_record(SHUTDOWN_NOISE[0] + "."))
    assert not f.filter(
        _record("failed during get data with tcp://127.0.0.1:1 -> tcp://127.0.0.1:2")
    )
    assert f.filter(_record("Compute Failed\nKey: cell-1"))


def _installed() -> bool:
    filters = logging.getLogger("distributed.worker").filters
    return any(isinstance(f, ShutdownNoiseFilter) for f in filters)


def _trim_threshold() -> str | None:
    return os.environ.get("MALLOC_TRIM_THRESHOLD_")


def _tick() -> str:
    import dask

    return str(dask.config.get("distributed.admin.tick.interval"))


def test_every_worker_of_the_local_cluster_has_it(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("MALLOC_TRIM_THRESHOLD_", raising=False)
    with connect(2, None, io.StringIO()) as (client, _):
        assert list(client.run(_installed).values()) == [True, True]
        assert list(client.run(_trim_threshold).values()) == [None, None]
        assert list(client.run(_tick).values()) == ["1s", "1s"]  # not waking every 20 ms
