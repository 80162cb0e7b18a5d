"""The sweep on Dask distributed: a LocalCluster by default, an existing cluster by address.

Why Dask: cells × days × symbols outgrow one machine first, and a scheduler that already knows
how to place tasks, notice a dead worker and run its task elsewhere is better than a home-made
one. The driver only submits small tasks (``CellTask``), commits each returned row to
sweep_results.csv as it arrives, and never holds events.

Phases: every cell on every training feed; score (``select``); the top cells on the test feeds;
report. A task is keyed by (cell, feed). An exception in a task is not retried — a cell that
fails on a feed fails the same way again — and stops the sweep naming the cell, the feed and
the error; a task whose worker dies is re-run by the scheduler on another worker (up to
``distributed.scheduler.allowed-failures`` times). Only the returned row is committed, once per
key (``results.ResultsFile``), so a re-run is never counted twice and ``--resume`` runs only
what has no row. One sweep at a time per directory: ``DIR/.lock`` is flocked for the run.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import shutil
import signal
import socket
import sys
import threading
import time
import traceback
import uuid
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, TextIO

from mm_sim.config import (
    Overrides,
    Profile,
    RunSettings,
    load_overrides,
    load_profile,
    load_run_settings,
)
from mm_sim.errors import UserError
from mm_sim.events import atomic_write_json, hold_lock, sidecar_path
from mm_sim.runtime.arm_names import ALL as ALL_ARMS
from mm_sim.runtime.progress import COLD_COMPILE_NOTE, kernels_cached
from mm_sim.sweep import cache, worker_logs
from mm_sim.sweep.cell import CellTask, ensure_feed, feed_cache_path, run_cell
from mm_sim.sweep.feeds import DEFAULT_TEST, DEFAULT_TRAIN, FeedCase, resolve_cases
from mm_sim.sweep.grid import Cell, Grid, load_grid
from mm_sim.sweep.progress import CellProgress
from mm_sim.sweep.report import (
    BEST_CELL,
    BEST_PROFILE,
    HEATMAP,
    REPORT,
    SweepInfo,
    write_report,
)
from mm_sim.sweep.results import FILE as RESULTS_FILE
from mm_sim.sweep.results import ResultsFile
from mm_sim.sweep.select import CellScore, Criterion, Validation, score_cells, validate_top

META = "sweep.json"
LOCK = ".lock"
# What a sweep keeps at the top of its directory (docs/SWEEP.md, "Output"); hidden files (its
# own temp files, a desktop's) do not make a folder someone else's either
_OWN = frozenset(
    (META, LOCK, RESULTS_FILE, REPORT, HEATMAP, BEST_CELL, BEST_PROFILE, "feeds", "runs")
)
# Reaching a scheduler: a plain TCP connect first (a refused port fails at once), then Dask's
# handshake and one identity call within --connect-timeout (Dask's own handshake has no time
# limit: a silent listener would hang it forever).
PROBE_TIMEOUT_S = 3.0


@dataclass
class SweepOptions:
    """A sweep's settings. Run length, seed, profile and overrides left None come from the
    environment (``MM_ITERATIONS``, ``MM_PROFILE``, ...) and then the soak's defaults, exactly
    as ``mm_sim soak`` layers them."""

    grid: Path
    train: Sequence[str] = DEFAULT_TRAIN
    test: Sequence[str] = DEFAULT_TEST
    out: Path = Path("sweep-artifacts")
    workers: int | None = None  # LocalCluster size; None = one per core
    scheduler: str | None = None  # tcp://HOST:PORT of an existing cluster
    resume: bool = False
    iterations: int | None = None
    iteration_minutes: float | None = None
    seed: int | None = None
    profile: str | None = None
    overrides: str | None = None
    clock: str | None = None  # --clock, as the soak's (auto | raw | shift in ms)
    top: int = 5
    criterion: Criterion = field(default_factory=Criterion)
    keep_records: bool = False
    # Fill-model arms of the held-out runs of the top cells (runtime/model_arms.py).
    model_arms: tuple[str, ...] = ALL_ARMS
    wait_workers: float = 60.0  # --scheduler: how long to wait for a first worker
    connect_timeout: float = 10.0  # --scheduler: how long the scheduler may take to answer


@dataclass
class SweepOutcome:
    out_dir: Path
    grid: Grid
    ran: int  # cell × feed runs done by this invocation
    skipped: int  # already in sweep_results.csv (resume)
    ranked: list[CellScore]
    top: list[Validation]
    files: list[Path]
    engine: str
    timings: dict[str, float]


CellFn = Callable[..., dict[str, Any]]


# --------------------------------------------------------------------------------------------
# Cluster
# --------------------------------------------------------------------------------------------


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


def _warm(client: Any, warm_fn: Callable[[], float] = warm_worker) -> None:
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
                f"the warm-up cell failed on worker {w} ({type(exc).__name__}: {exc}{_origin(fut)})"
                ": that worker cannot run cells; check that it runs the same mm_sim, numba, "
                "numpy and dask as this driver"
            ) from None


def _origin(fut: Any) -> str:
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
        client.register_plugin(worker_logs.plugin())  # no shutdown traceback (worker_logs.py)
        yield client, f"Dask LocalCluster, {n} worker process(es) × 1 thread"


# --------------------------------------------------------------------------------------------
# Directory and resume
# --------------------------------------------------------------------------------------------


def _meta(
    settings: RunSettings, profile: Profile, overrides: Overrides, grid: Grid
) -> dict[str, Any]:
    return {
        "schema_version": 1,
        "grid": str(grid.path),
        "grid_keys": list(grid.keys),
        "iterations": settings.iterations,
        "iteration_minutes": settings.iteration_minutes,
        "profile": profile.model_dump(mode="json"),
        "overrides": overrides.as_dict(),
        "clock": settings.clock,
    }


_MUST_MATCH = ("iterations", "iteration_minutes", "profile", "overrides", "grid_keys", "clock")


def _lock(out: Path) -> IO[bytes]:
    """Hold ``DIR/.lock`` for the sweep: a second run or resume on one directory would redo
    (and race on) the same cells."""
    return hold_lock(
        out / LOCK,
        f"{out}/: another sweep is running in this directory (it holds {out / LOCK}); "
        "wait for it to end, or use another --out",
    )


def _prepare_dir(out: Path, meta: dict[str, Any], resume: bool) -> IO[bytes]:
    """Check and claim the output directory; the lock to hold until the sweep ends."""
    meta_path = out / META
    csv_path = out / RESULTS_FILE
    if out.exists() and not out.is_dir():
        raise UserError(f"--out {out}: a file, not a directory; give a (new or sweep) directory")
    if resume and not meta_path.is_file():
        raise UserError(
            f"--resume: no sweep to resume in {out}/ ({meta_path} not found); run without "
            "--resume to start one"
        )
    foreign = (
        sorted(p.name for p in out.iterdir() if p.name not in _OWN and not p.name.startswith("."))
        if out.is_dir()
        else []
    )
    if not resume and foreign and not meta_path.is_file():
        # Not a sweep's directory (no sweep.json) and holding other files: someone's folder.
        # A sweep writes its files here and prunes feeds/, so it is not the place.
        raise UserError(
            f"--out {out}: a directory with other files ({', '.join(foreign[:3])}) and no sweep "
            "in it; give a new or empty directory (or a sweep's, with --resume)"
        )
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise UserError(f"--out {out}: cannot create the directory ({exc.strerror})") from None
    lock = _lock(out)
    try:
        if not resume:
            # A sweep that committed nothing (e.g. no cluster reachable) may simply be started
            # again.
            if csv_path.exists() and csv_path.read_bytes().count(b"\n") > 1:
                raise UserError(
                    f"{out}/ already holds a sweep: pass --resume to continue it, or use a new "
                    "--out"
                )
            csv_path.unlink(missing_ok=True)
        else:
            try:
                old = json.loads(meta_path.read_text())
            except json.JSONDecodeError as exc:
                raise UserError(f"{meta_path}:{exc.lineno}: invalid JSON ({exc.msg})") from None
            diff = [k for k in _MUST_MATCH if old.get(k) != meta.get(k)]
            if diff:
                raise UserError(
                    f"--resume: {out}/ was swept with other {', '.join(diff)} than now "
                    f"(see {meta_path}); its results would not be comparable: use a new --out"
                )
        atomic_write_json(meta_path, meta)
    except BaseException:
        lock.close()
        raise
    return lock


def _remove_attempts(out: Path) -> None:
    """Delete the run directories of attempts that never finished (``runs/<cell>/.<feed>.*.tmp``).

    Under the directory's lock no other sweep writes here, so every such directory is left by
    a killed worker or driver; its cell has no row and runs again.
    """
    for tmp in (out / "runs").glob("*/.*.tmp"):
        shutil.rmtree(tmp, ignore_errors=True)


def _prune_feeds(out: Path, keep: set[Path]) -> None:
    """Delete the generated days in ``DIR/feeds/`` except ``keep`` (and their sidecars)."""
    cache = out / "feeds"
    if not cache.is_dir():
        return
    names = {p.name for p in keep} | {sidecar_path(p).name for p in keep}
    for entry in cache.iterdir():
        if entry.name not in names:
            if entry.is_dir():
                shutil.rmtree(entry, ignore_errors=True)
            else:
                entry.unlink(missing_ok=True)
    with contextlib.suppress(OSError):
        cache.rmdir()  # only when empty


# --------------------------------------------------------------------------------------------
# Phases
# --------------------------------------------------------------------------------------------


class _Phase:
    """Run (cell, feed) pairs on the cluster and commit each row as it comes back."""

    def __init__(
        self,
        name: str,
        client: Any,
        results: ResultsFile,
        grid: Grid,
        base: tuple[Profile, Overrides],
        opts: SweepOptions,
        settings: RunSettings,
        cell_fn: CellFn,
        out: TextIO,
        token: str,
    ) -> None:
        self.name = name
        self.settings = settings
        self.token = token
        self.client = client
        self.results = results
        self.grid = grid
        self.base = base
        self.opts = opts
        self.cell_fn = cell_fn
        self.out = out

    def task(self, cell: Cell, case: FeedCase) -> CellTask:
        p, o = self.base
        return CellTask(
            cell_id=cell.id,
            feed=case,
            profile=cell.profile(p).model_dump(mode="json"),
            overrides=cell.overrides(o).as_dict(),
            iterations=self.settings.iterations,
            iteration_minutes=self.settings.iteration_minutes,
            out_dir=str(self.opts.out.resolve()),
            keep_records=self.opts.keep_records,
            model_arms=self.opts.model_arms if self.name == "test" else (),
        )

    def run(self, cells: Sequence[Cell], feeds: Sequence[FeedCase]) -> int:
        from dask.distributed import as_completed

        todo = [(c, f) for c in cells for f in feeds if (c.id, f.label) not in self.results.rows]
        if not todo:
            return 0
        out_dir = str(self.opts.out.resolve())
        used = {f.label: f for _, f in todo}
        prepared = {
            label: self.client.submit(
                ensure_feed,
                case,
                out_dir,
                key=f"sweep-feed-{feed_cache_path(case, out_dir).stem}-{self.token}",
            )
            for label, case in used.items()
        }
        futures = []
        origin: dict[str, tuple[Cell, FeedCase]] = {}
        for cell, case in todo:
            fut = self.client.submit(
                self.cell_fn,
                self.task(cell, case),
                prepared[case.label],
                key=f"sweep-cell-{cell.id}-{case.slug}-{self.token}",
            )
            futures.append(fut)
            origin[fut.key] = (cell, case)
        remaining = Counter({c.id: 0 for c in cells})
        for cell, _ in todo:
            remaining[cell.id] += 1
        ran = 0
        with CellProgress(self.name, cells, len(feeds), remaining, self.out) as progress:
            try:
                for fut in as_completed(futures):
                    cell, case = origin[fut.key]
                    row = self._result(fut, cell, case)
                    row["split"] = self.name
                    row.update(cell.as_dict())
                    if self.results.append(row):
                        ran += 1
                    progress.result(cell, row)
            except BaseException:
                self.client.cancel(futures)
                raise
        return ran

    def _result(self, fut: Any, cell: Cell, case: FeedCase) -> dict[str, Any]:
        from dask.distributed import KilledWorker

        where = f"cell {cell.id} ({cell.label()}) on feed {case.label}"
        keep = f"the results so far are kept in {self.results.path}: fix the cause, then --resume"
        try:
            return dict(fut.result())
        except UserError as exc:
            raise UserError(f"{where}: {exc}; {keep}") from None
        except KilledWorker:
            raise UserError(
                f"{where}: every worker that ran it died (a crash or out of memory in the "
                f"cell; see the workers' logs); {keep}"
            ) from None
        except Exception as exc:  # a bug, not bad input: name it and where it was raised
            raise UserError(
                f"{where} failed: {type(exc).__name__}: {exc}{_origin(fut)}; for the full "
                f"traceback run it alone: `{self.soak_command(cell, case)}`; {keep}"
            ) from None

    def soak_command(self, cell: Cell, case: FeedCase) -> str:
        """The ``mm_sim soak`` that runs ``cell`` on ``case`` in one process."""
        s = self.settings
        words = [
            "python -m mm_sim soak --no-tune",
            f"--feed {case.label.rsplit('@', 1)[0]}",
            f"--seed {case.seed}",
            f"--iterations {s.iterations}",
            f"--iteration-minutes {s.iteration_minutes:g}",
            f"--profile {s.profile}",
        ]
        if s.overrides:
            words.append(f"--overrides {s.overrides}")
        words += [f"--set {k}={v}" for k, v in cell.values]
        return " ".join(words)


# --------------------------------------------------------------------------------------------
# Entry
# --------------------------------------------------------------------------------------------


def _order(
    grid: Grid, train: Sequence[FeedCase], test: Sequence[FeedCase]
) -> Callable[[dict[str, Any]], Any]:
    """Grid order: training rows then test rows, each by cell position then feed position."""
    pos = {c.id: c.index for c in grid.cells}
    fpos = {f.label: (0, i) for i, f in enumerate(train)}
    fpos.update({f.label: (1, i) for i, f in enumerate(test)})

    def key(row: dict[str, Any]) -> Any:
        split, i = fpos.get(row["feed"], (2, 0))
        return (split, pos.get(row["cell_id"], len(pos)), i, row["cell_id"], row["feed"])

    return key


def _split_of(feed: str, train: Sequence[str], test: Sequence[str]) -> str:
    return "train" if feed in train else "test" if feed in test else ""


def _settings(opts: SweepOptions) -> RunSettings:
    """Run length, seed, profile and overrides: the options given, then ``MM_*``, then the
    defaults — the soak's own layering (and its checks on the run length)."""
    given = {
        "iterations": opts.iterations,
        "iteration_minutes": opts.iteration_minutes,
        "seed": opts.seed,
        "profile": opts.profile,
        "overrides": opts.overrides,
        "clock": opts.clock,
    }
    return load_run_settings({k: v for k, v in given.items() if v is not None})


def _pending_feeds(
    rows: dict[tuple[str, str], Any],
    grid: Grid,
    train: Sequence[FeedCase],
    test: Sequence[FeedCase],
    top_cells: Sequence[Cell] | None,
) -> list[FeedCase]:
    """Feeds a ``--resume`` would still run cells on (test feeds: on the top cells, if known)."""
    test_cells = grid.cells if top_cells is None else top_cells
    return [
        f
        for feeds, cells in ((train, grid.cells), (test, test_cells))
        for f in feeds
        if any((c.id, f.label) not in rows for c in cells)
    ]


def run_sweep(
    opts: SweepOptions, out: TextIO = sys.stdout, cell_fn: CellFn = run_cell
) -> SweepOutcome:
    """Run (or resume) a sweep; everything it produces is under ``opts.out``."""
    timings: dict[str, float] = {}
    t_all = time.perf_counter()
    if opts.workers is not None and opts.scheduler is not None:
        raise UserError("--workers sizes a local cluster; with --scheduler the cluster is yours")
    if opts.workers is not None and opts.workers < 1:
        raise UserError(f"--workers {opts.workers}: expected at least 1")
    if opts.top < 1:
        raise UserError(f"--top {opts.top}: expected at least 1")
    for flag, v in (
        ("--wait-workers", opts.wait_workers),
        ("--connect-timeout", opts.connect_timeout),
    ):
        if not v > 0:
            raise UserError(f"{flag} {v:g}: expected a positive number of seconds")
    settings = _settings(opts)
    profile = load_profile(settings.profile)
    overrides = load_overrides(settings.overrides)
    grid = load_grid(opts.grid, profile, overrides)
    if not opts.train:
        raise UserError("no training feeds: give --feeds/--train F1 [F2 ...]")
    cases = resolve_cases(
        [*opts.train, *opts.test],
        settings.seed,
        settings.iterations,
        settings.iteration_minutes,
        settings.clock,
    )
    train, test = cases[: len(opts.train)], cases[len(opts.train) :]
    for case in cases:
        if case.cut_note:
            print(f"note: feed {case.label}: {case.cut_note} (every run on it is partial)",
                  file=sys.stderr)  # fmt: skip
    lock = _prepare_dir(opts.out, _meta(settings, profile, overrides, grid), opts.resume)
    try:
        return _run_locked(opts, settings, profile, overrides, grid, train, test, out, cell_fn,
                           timings, t_all)  # fmt: skip
    finally:
        lock.close()


def _run_locked(
    opts: SweepOptions,
    settings: RunSettings,
    profile: Profile,
    overrides: Overrides,
    grid: Grid,
    train: Sequence[FeedCase],
    test: Sequence[FeedCase],
    out: TextIO,
    cell_fn: CellFn,
    timings: dict[str, float],
    t_all: float,
) -> SweepOutcome:
    _remove_attempts(opts.out)
    results = ResultsFile(opts.out, grid.keys)
    before = len(results.open())
    # Task keys are unique to this invocation: two sweeps sharing a cluster never share a result.
    token = uuid.uuid4().hex[:8]
    ran = 0
    engine = "none (every result was already in sweep_results.csv)"
    train_labels = [f.label for f in train]
    test_labels = [f.label for f in test]
    top_cells: list[Cell] | None = None
    completed = False
    try:
        with contextlib.ExitStack() as stack:
            client = None

            def get_client() -> Any:
                nonlocal client, engine
                if client is None:
                    t = time.perf_counter()
                    client, engine = stack.enter_context(
                        connect(
                            opts.workers,
                            opts.scheduler,
                            out,
                            opts.wait_workers,
                            opts.connect_timeout,
                        )
                    )
                    if kernels_cached() is False:  # else the warm-up is silent and quick
                        print(f"{COLD_COMPILE_NOTE}: warming the workers", file=out, flush=True)
                    _warm(client)
                    timings["cluster_start_s"] = time.perf_counter() - t
                return client

            def phase(name: str, cells: Sequence[Cell], feeds: Sequence[FeedCase]) -> int:
                pending = any((c.id, f.label) not in results.rows for c in cells for f in feeds)
                if not pending:
                    return 0
                c = get_client()  # started (and timed) apart from the phase
                t = time.perf_counter()
                n = _Phase(
                    name,
                    c,
                    results,
                    grid,
                    (profile, overrides),
                    opts,
                    settings,
                    cell_fn,
                    out,
                    token,
                ).run(cells, feeds)
                timings[f"{name}_s"] = time.perf_counter() - t
                return n

            ran += phase("train", grid.cells, train)
            ranked = score_cells(
                grid.cells, train_labels, results.rows, opts.criterion, profile.gates
            )
            top_cells = [s.cell for s in ranked[: opts.top]]
            ran += phase("test", top_cells, test)
            if client is not None:
                # Workers keep feeds in memory between cells (sweep/cache.py); a long-lived
                # cluster should not hold a finished sweep's days.
                with contextlib.suppress(Exception):
                    client.run(cache.clear)
        for row in results.rows.values():  # a feed may have moved between splits on resume
            row["split"] = _split_of(row["feed"], train_labels, test_labels)
        results.rewrite_sorted(_order(grid, train, test))
        completed = True
    finally:
        results.close()
        # Generated days are kept only where --resume would run cells on them again.
        keep = [] if completed else _pending_feeds(results.rows, grid, train, test, top_cells)
        _prune_feeds(opts.out, {feed_cache_path(f, opts.out) for f in keep})
    top = validate_top(ranked, opts.top, test_labels, results.rows, profile.gates)
    current = {(c.id, f) for c in grid.cells for f in (*train_labels, *test_labels)}
    rows_now = [r for k, r in results.rows.items() if k in current]
    info = SweepInfo(
        grid=grid,
        train=train_labels,
        test=test_labels,
        iterations=settings.iterations,
        iteration_minutes=settings.iteration_minutes,
        profile_name=profile.name,
        overrides_source=str(settings.overrides or "overrides/runtime_overrides.json"),
        criterion=opts.criterion,
        rows=len(rows_now),
        stale_rows=len(results.rows) - len(rows_now),
        iterations_run=tuple(
            sorted({r["iterations_run"] for r in rows_now if r.get("iterations_run") is not None})
        ),
        all_fail=bool(ranked) and all(v == "FAIL" for s in ranked for v in s.train.verdicts),
        engine=engine,
        cut_feeds=tuple(f"{f.label}: {f.cut_note}" for f in (*train, *test) if f.cut_note),
    )
    files = [results.path, *write_report(opts.out, info, ranked, top, overrides, profile)]
    timings["total_s"] = time.perf_counter() - t_all
    return SweepOutcome(opts.out, grid, ran, before, ranked, top, files, engine, timings)
