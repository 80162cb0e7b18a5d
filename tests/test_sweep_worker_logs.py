"""A local cluster's workers keep Dask's errors in their log but not the heartbeat failure a
Ctrl-C's shutdown makes (mm_sim/sweep/worker_logs.py)."""

from __future__ import annotations

import io
import logging

from mm_sim.sweep.driver import connect
from mm_sim.sweep.worker_logs import HEARTBEAT_LOSS, HeartbeatLossFilter


def _record(msg: str) -> logging.LogRecord:
    return logging.LogRecord("distributed.worker", logging.ERROR, __file__, 1, msg, None, None)


def test_the_filter_drops_the_heartbeat_loss_only() -> None:
    f = HeartbeatLossFilter()
    assert not f.filter(_record(HEARTBEAT_LOSS + "."))
    assert f.filter(_record("Compute Failed\nKey: cell-1"))


def _installed() -> bool:
    filters = logging.getLogger("distributed.worker").filters
    return any(isinstance(f, HeartbeatLossFilter) for f in filters)


def test_every_worker_of_the_local_cluster_has_it() -> None:
    with connect(2, None, io.StringIO()) as (client, _):
        assert list(client.run(_installed).values()) == [True, True]
