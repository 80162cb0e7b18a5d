"""The sweep's Dask cluster: a LocalCluster started here, or an existing one reached by address.

Also what the soak and the converter use to spread their work (``connect``); a worker is
warmed with one tiny cell so the first real cell is not charged for imports and kernel loading.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import socket
import sys
import threading
import time
import traceback
import uuid
from collections.abc import Callable, Iterator
from typing import Any, TextIO

from mm_sim.config import Overrides, Profile
from mm_sim.errors import UserError
from mm_sim.sweep import worker_logs
from mm_sim.sweep.cell import CellTask, run_cell
from mm_sim.sweep.feeds import FeedCase

# Reaching a scheduler: a plain TCP connect first (a refused port fails at once), then Dask's
# handshake and one identity call within --connect-timeout (Dask's own handshake has no time
# limit: a silent listener would hang it forever).
PROBE_TIMEOUT_S = 3.0


def warm_worker() -> float:
    """Run one tiny cell, so imports and numba kernel loading are not charged to the first cell.

    Kernels come from the numba cache (``NUMBA_CACHE_DIR``, or ``__pycache__`` beside the
    package), so a warm worker loads them in well under a second instead of compiling them.
    """
    import tempfile

    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="mm_sweep_warm_") as tmp:
        spec = {"kind": "synthetic", "name": "warm-up", "params": {"warmup_s": 0.0},
                "duration_s": 3.0}  # fmt: skip
        case = FeedCase(label="warm-up@1", seed=1, spec=spec)
        task = CellTask(
            cell_id="warm-up",
            feed=case,
            profile=Profile.model_validate({}).model_dump(mode="json"),
            overrides=Overrides.model_validate({}).as_dict(),
            iterations=1,
            iteration_minutes=2.0 / 60.0,
            out_dir=tmp,
        )
        run_cell(task)
    return time.perf_counter() - t0


def warm_workers(client: Any, warm_fn: Callable[[], float] = warm_worker) -> None:
    """One warm-up task pinned to each worker present (in its task thread, like a cell).

    A worker that cannot run the warm-up cannot run a cell either: say which, and why.
    """
    workers = list(client.scheduler_info()["workers"])
    futs = [
        client.submit(warm_fn, key=f"sweep-warm-{uuid.uuid4().hex}", workers=[w], pure=False)
        for w in workers
    ]
    for w, fut in zip(workers, futs, strict=True):
        try:
            fut.result()
        except Exception as exc:
            raise UserError(
                f"the warm-up cell failed on worker {w} ({type(exc).__name__}: {exc}"
                f"{task_origin(fut)}): that worker cannot run cells; check that it runs the same "
                "mm_sim, numba, numpy and dask as this driver"
            ) from None


def task_origin(fut: Any) -> str:
    """`` at FILE:LINE in FUNC`` of a failed task's innermost frame (its traceback stays in the
    worker's log), or nothing."""
    with contextlib.suppress(Exception):
        frame = traceback.extract_tb(fut.traceback())[-1]
        return f" at {frame.filename}:{frame.lineno} in {frame.name}"
    return ""


@contextlib.contextmanager
def _sigint_ignored() -> Iterator[None]:
    """Ignore SIGINT while worker processes are spawned, so that they inherit the SIG_IGN.

    A Ctrl-C in a terminal goes to the whole process group: workers that caught it too would
    each print a Dask traceback while the driver already stops the sweep cleanly. The driver's
    own handler is restored as soon as the workers exist (a Ctrl-C during those few seconds is
    ignored).
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous if previous is not None else signal.SIG_DFL)


def _scheduler_address(scheduler: str) -> str:
    return scheduler if "://" in scheduler else f"tcp://{scheduler}"


async def _identify(address: str, timeout: float) -> dict[str, Any]:
    """The scheduler's identity, asked over one Dask comm (handshake included)."""
    from distributed.comm import connect as dask_connect

    comm = await dask_connect(address, timeout=timeout)
    try:
        await comm.write({"op": "identity", "reply": True})
        reply = await comm.read()
    finally:
        comm.abort()
    if not isinstance(reply, dict):
        raise ValueError(f"unexpected reply {reply!r:.80}")
    return reply


def probe_scheduler(scheduler: str, timeout: float = 10.0) -> str:
    """Check that ``scheduler`` is a Dask scheduler, within bounded time; its full address.

    A refused port fails at once (a plain TCP connect, ``PROBE_TIMEOUT_S``), and a listener
    that is not Dask — silent, or answering garbage — fails within ``timeout`` seconds, always
    as a UserError naming the address.
    """
    from distributed.comm.addressing import parse_address, parse_host_port

    address = _scheduler_address(scheduler)
    hint = (
        "start one with `dask scheduler` and workers with `dask worker ADDRESS`, or check the "
        "address"
    )
    try:
        scheme, loc = parse_address(address)
        if scheme in ("tcp", "tls"):
            host, port = parse_host_port(loc, default_port=8786)
            socket.create_connection((host, port), PROBE_TIMEOUT_S).close()
        ident = asyncio.run(asyncio.wait_for(_identify(address, timeout), timeout))
    except TimeoutError:
        raise UserError(
            f"--scheduler {scheduler}: something listens there but did not answer as a Dask "
            f"scheduler within {timeout:g} s (--connect-timeout); {hint}"
        ) from None
    except OSError as exc:
        raise UserError(
            f"--scheduler {scheduler}: cannot connect ({exc.strerror or exc}); {hint}"
        ) from None
    except Exception as exc:
        raise UserError(
            f"--scheduler {scheduler}: not a Dask scheduler (its answer could not be read: "
            f"{type(exc).__name__}: {exc}); {hint}"
        ) from None
    if ident.get("type") != "Scheduler":
        raise UserError(
            f"--scheduler {scheduler}: a Dask {ident.get('type', 'peer')}, not a scheduler; "
            "give the scheduler's address"
        )
    return address


def _wait_for_workers(client: Any, scheduler: str, wait_s: float, out: TextIO) -> int:
    n = len(client.scheduler_info()["workers"])
    if n:
        return n
    print(
        f"the cluster at {scheduler} has no worker yet: waiting up to {wait_s:g} s for one "
        "(--wait-workers)",
        file=out,
        flush=True,
    )
    try:
        client.wait_for_workers(1, timeout=wait_s)
    except TimeoutError:
        raise UserError(
            f"--scheduler {scheduler}: no worker joined within {wait_s:g} s (--wait-workers); "
            f"start workers with `dask worker {scheduler} --nthreads 1`"
        ) from None
    return len(client.scheduler_info()["workers"])


@contextlib.contextmanager
def connect(
    workers: int | None,
    scheduler: str | None,
    out: TextIO = sys.stdout,
    wait_workers: float = 60.0,
    connect_timeout: float = 10.0,
) -> Iterator[tuple[Any, str]]:
    """A Dask client and a description of the engine; the local cluster is closed on exit."""
    import dask
    from dask.distributed import Client, LocalCluster

    if scheduler is not None:
        address = probe_scheduler(scheduler, connect_timeout)
        try:
            client = Client(address, timeout=f"{connect_timeout}s")
        except Exception as exc:
            raise UserError(
                f"--scheduler {scheduler}: the Dask client could not connect "
                f"({type(exc).__name__}: {exc})"
            ) from None
        try:
            n = _wait_for_workers(client, scheduler, wait_workers, out)
            yield client, f"Dask cluster at {address} ({n} worker(s) at start)"
        finally:
            client.close()
        return
    cores = os.cpu_count() or 1
    n = workers or cores
    if n > max(4 * cores, 4):
        # Each worker is a process with its own compiled kernels and feed cache: thousands of
        # them only started until the time-out, competing for a few cores.
        raise UserError(
            f"--workers {n}: at most {max(4 * cores, 4)} local worker processes on this "
            f"machine's {cores} core(s); for more, start a Dask cluster and pass --scheduler"
        )
    # Dask's statistical profiler samples each worker's stacks every 10 ms: 12 % of a cell's
    # CPU on one worker (390 against 445 ms a run), for a dashboard page nobody opens here.
    # Dask also starts each worker with MALLOC_TRIM_THRESHOLD_=65536, which turns off glibc's
    # adaptive mmap threshold: every array over 128 kB a run allocates (the engine's buffers, a
    # million lags, the reports' columns) is then mapped and zero-faulted afresh, 10 % of a
    # run's CPU (measured in one process, 285-294 against 316-320 ms median). The workers keep
    # the allocator's default; a run's memory is reused by the next, not returned to the system.
    # Their event loops, the nannies' and the scheduler's also wake every 20 ms to time
    # themselves and every 100-500 ms to sample memory and CPU for the dashboard: with two
    # workers on two cores each wake-up preempts a run. At 1-10 s, 2 workers against 1 went
    # from 1.71-1.79x to 1.82-1.87x (sweep_bench, two runs each, alternating).
    # The workers of a cluster given by --scheduler keep their own configuration.
    local = {
        "distributed.worker.profile.enabled": False,
        "distributed.nanny.pre-spawn-environ.MALLOC_TRIM_THRESHOLD_": None,
        "distributed.admin.tick.interval": "1s",
        "distributed.admin.system-monitor.interval": "10s",
        "distributed.worker.memory.monitor-interval": "2s",
    }
    with _sigint_ignored(), dask.config.set(local):
        cluster = LocalCluster(
            n_workers=n,
            threads_per_worker=1,
            processes=True,
            host="127.0.0.1",
            dashboard_address=":0",  # its HTTP server always starts: any free port, no clash
            silence_logs=logging.ERROR,
        )
    with cluster, Client(cluster) as client:
        client.register_plugin(worker_logs.plugin())  # no shutdown tracebacks (worker_logs.py)
        yield client, f"Dask LocalCluster, {n} worker process(es) × 1 thread"
