"""What a local cluster's workers log: everything Dask logs at ERROR, except the one message
its own shutdown makes.

Why: on Ctrl-C the driver closes the cluster, and a worker whose heartbeat fires after the
scheduler (in the driver's process) has gone logs "Failed to communicate with scheduler during
heartbeat" with a traceback: a user pressing Ctrl-C saw it, now and then. A lost scheduler
ends the sweep anyway (the driver holds it), so the message says nothing a user can act on.
Task failures ("Compute Failed", with the cell's traceback) stay in the workers' log.
"""

from __future__ import annotations

import logging
from typing import Any

HEARTBEAT_LOSS = "Failed to communicate with scheduler during heartbeat"


class HeartbeatLossFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return not record.getMessage().startswith(HEARTBEAT_LOSS)


def quiet_heartbeat_loss() -> None:
    """Install the filter in this (worker) process, once."""
    log = logging.getLogger("distributed.worker")
    if not any(isinstance(f, HeartbeatLossFilter) for f in log.filters):
        log.addFilter(HeartbeatLossFilter())


def plugin() -> Any:
    """A worker plugin that installs the filter on every worker, those started later too."""
    from distributed.diagnostics.plugin import WorkerPlugin

    class QuietHeartbeatLoss(WorkerPlugin):
        name = "mm_sim-quiet-heartbeat-loss"

        def setup(self, worker: Any) -> None:
            quiet_heartbeat_loss()

    return QuietHeartbeatLoss()
