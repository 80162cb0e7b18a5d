"""What a local cluster's workers print: everything Dask logs at ERROR, except a connection
lost to the scheduler or to a peer.

Why: on Ctrl-C the driver closes the cluster, and a user pressing Ctrl-C saw, now and then, a
worker's traceback for one of the races that closing makes: its heartbeat firing after the
scheduler (in the driver's process) had gone, a peer closing while the worker sent it a
result, or while it fetched one from that peer ("Worker stream died during communication").
Dask's worker (the ``distributed.worker`` logger) logs each of these from an ``except OSError``
around a comm, so the filter goes by that logger and that class, not by the wording of each
message. None says anything a user can act on: a lost scheduler ends the sweep anyway (the
driver holds it), and a peer lost mid-run is the scheduler's to handle (it reruns the task
elsewhere). Task failures ("Compute Failed", with the cell's traceback) and every other logger's
errors (a spill to a full disk) are still printed, and the dropped records stay in the worker's
own log (``Client.get_worker_logs``, which keeps that logger's records): the filter sits on the
handler that writes to stderr.
"""

from __future__ import annotations

import logging
from typing import Any


class ConnectionLostFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        return not (record.name == "distributed.worker" and isinstance(exc, OSError))


def quiet_connection_losses() -> None:
    """Install the filter on the handlers of Dask's logger in this (worker) process, once:
    ``distributed.worker``'s records reach stderr through them."""
    for handler in logging.getLogger("distributed").handlers:
        if not any(isinstance(f, ConnectionLostFilter) for f in handler.filters):
            handler.addFilter(ConnectionLostFilter())


def plugin() -> Any:
    """A worker plugin that installs the filter on every worker, those started later too."""
    from distributed.diagnostics.plugin import WorkerPlugin

    class QuietConnectionLosses(WorkerPlugin):
        name = "mm_sim-quiet-connection-losses"

        def setup(self, worker: Any) -> None:
            quiet_connection_losses()

    return QuietConnectionLosses()
