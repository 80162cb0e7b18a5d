"""What a local cluster's workers log: everything Dask logs at ERROR, except the messages its
own shutdown makes.

Why: on Ctrl-C the driver closes the cluster, and a user pressing Ctrl-C saw, now and then, a
worker's traceback for one of two races: its heartbeat firing after the scheduler (in the
driver's process) had gone ("Failed to communicate with scheduler during heartbeat"), or a
peer closing while it was sending that peer a result ("failed during get data with ..."). A
lost scheduler ends the sweep anyway (the driver holds it), and a peer lost mid-run is the
scheduler's to handle (it reruns the task elsewhere), so neither says anything a user can act
on. Task failures ("Compute Failed", with the cell's traceback) stay in the workers' log.
"""

from __future__ import annotations

import logging
from typing import Any

SHUTDOWN_NOISE = (
    "Failed to communicate with scheduler during heartbeat",
    "failed during get data with",
)


class ShutdownNoiseFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return not record.getMessage().startswith(SHUTDOWN_NOISE)


def quiet_shutdown_noise() -> None:
    """Install the filter in this (worker) process, once."""
    log = logging.getLogger("distributed.worker")
    if not any(isinstance(f, ShutdownNoiseFilter) for f in log.filters):
        log.addFilter(ShutdownNoiseFilter())


def plugin() -> Any:
    """A worker plugin that installs the filter on every worker, those started later too."""
    from distributed.diagnostics.plugin import WorkerPlugin

    class QuietShutdownNoise(WorkerPlugin):
        name = "mm_sim-quiet-shutdown-noise"

        def setup(self, worker: Any) -> None:
            quiet_shutdown_noise()

    return QuietShutdownNoise()
