"""A local cluster's workers print Dask's errors but not the lost connections a Ctrl-C's
shutdown makes (a lost heartbeat, a peer gone mid-transfer: mm_sim/sweep/worker_logs.py), and
run with the allocator's defaults (sweep/cluster.py: Dask's MALLOC_TRIM_THRESHOLD_ cost a tenth
of each run)."""

from __future__ import annotations

import io
import logging
import os

import pytest

from mm_sim.sweep.cluster import connect
from mm_sim.sweep.worker_logs import ConnectionLostFilter


def _record(
    msg: str, exc: BaseException | None, name: str = "distributed.worker"
) -> logging.LogRecord:
    exc_info = (type(exc), exc, None) if exc is not None else None
    return logging.LogRecord(name, logging.ERROR, __file__, 1, msg, None, exc_info)


def test_the_filter_drops_lost_connections_only() -> None:
    from distributed.comm.core import CommClosedError

    f = ConnectionLostFilter()
    # The three races seen on Ctrl-C: Dask logs each from an `except OSError`.
    assert not f.filter(_record("Failed to communicate with scheduler during heartbeat", OSError()))
    assert not f.filter(_record("failed during get data with a -> b", BrokenPipeError(32, "x")))
    assert not f.filter(_record("Worker stream died during communication: a", CommClosedError()))
    assert f.filter(_record("Compute Failed\nKey: cell-1", None))
    assert f.filter(_record("Unexpected exception during heartbeat.", ValueError("bad")))
    # Another logger's OSError is not a lost connection of the worker's: a full disk.
    assert f.filter(_record("Spill to disk failed", OSError(28, "No space"), "distributed.spill"))


def _log_two_errors() -> None:
    """In a worker: one lost connection, one other error, both with their traceback."""
    log = logging.getLogger("distributed.worker")
    for exc in (ConnectionResetError(104, "peer gone: mm-sim-test"), KeyError("mm-sim-test")):
        try:
            raise exc
        except Exception:
            log.exception("mm-sim-test %s", type(exc).__name__)


def _trim_threshold() -> str | None:
    return os.environ.get("MALLOC_TRIM_THRESHOLD_")


def _tick() -> str:
    import dask

    return str(dask.config.get("distributed.admin.tick.interval"))


def test_workers_keep_the_allocators_defaults_and_wake_once_a_second(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("MALLOC_TRIM_THRESHOLD_", raising=False)
    with connect(2, None, io.StringIO()) as (client, _):
        assert list(client.run(_trim_threshold).values()) == [None, None]
        assert list(client.run(_tick).values()) == ["1s", "1s"]  # not waking every 20 ms


def test_a_worker_prints_other_errors_but_not_a_lost_connection(
    capfd: pytest.CaptureFixture[str],
) -> None:
    """The workers' stderr is this process's (inherited): what a user's terminal would show."""
    with connect(2, None, io.StringIO()) as (client, _):
        client.run(_log_two_errors)  # on every worker
        logs = [[msg for _, msg in got] for got in client.get_worker_logs().values()]
    err = capfd.readouterr().err
    assert err.count("mm-sim-test KeyError") == 2 and "Traceback" in err
    assert "mm-sim-test ConnectionResetError" not in err and "peer gone" not in err
    for log in logs:  # still in each worker's own log
        assert any("mm-sim-test ConnectionResetError" in msg for msg in log), log
