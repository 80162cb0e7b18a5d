"""The sweep on Dask distributed: a LocalCluster by default, an existing cluster by address.

Why Dask: cells × days × symbols outgrow one machine first, and a scheduler that already knows
how to place tasks, notice a dead worker and run its task elsewhere is better than a home-made
one. The driver only submits small tasks (``CellTask``), commits each returned row to
sweep_results.csv as it arrives, and never holds events.

Phases: every cell on every training feed; score (``select``); the top cells on the test feeds;
report. A task is keyed by (cell, feed), submitted with ``retries`` (an exception in the task is
retried), and a task whose worker dies is re-run by the scheduler on another worker (up to
``distributed.scheduler.allowed-failures`` times). Only the returned row is committed, once per
key (``results.ResultsFile``), so a re-run is never counted twice and ``--resume`` runs only
what has no row.
"""

from __future__ import annotations

import contextlib
import json
import logging
import shutil
import sys
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

from mm_sim.config import (
    Overrides,
    Profile,
    RunSettings,
    load_overrides,
    load_profile,
    load_run_settings,
)
from mm_sim.errors import UserError
from mm_sim.events import atomic_write_json
from mm_sim.runtime.replay import replay_seconds
from mm_sim.sweep.cell import CellTask, ensure_feed, feed_cache_path, run_cell
from mm_sim.sweep.feeds import DEFAULT_TEST, DEFAULT_TRAIN, FeedCase, resolve_cases
from mm_sim.sweep.grid import Cell, Grid, load_grid
from mm_sim.sweep.progress import CellProgress
from mm_sim.sweep.report import SweepInfo, write_report
from mm_sim.sweep.results import ResultsFile
from mm_sim.sweep.select import CellScore, Criterion, Validation, score_cells, validate_top

META = "sweep.json"
TASK_RETRIES = 2
_DEFAULTS = RunSettings.model_fields


@dataclass
class SweepOptions:
    grid: Path
    train: Sequence[str] = DEFAULT_TRAIN
    test: Sequence[str] = DEFAULT_TEST
    out: Path = Path("sweep-artifacts")
    workers: int | None = None  # LocalCluster size; None = one per core
    scheduler: str | None = None  # tcp://HOST:PORT of an existing cluster
    resume: bool = False
    iterations: int = int(_DEFAULTS["iterations"].default)
    iteration_minutes: float = float(_DEFAULTS["iteration_minutes"].default)
    seed: int = int(_DEFAULTS["seed"].default)
    profile: str | None = None
    overrides: str | None = None
    top: int = 5
    criterion: Criterion = field(default_factory=Criterion)
    keep_records: bool = False


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


def _warm(client: Any) -> None:
    """One warm-up task pinned to each worker present (in its task thread, like a cell)."""
    workers = list(client.scheduler_info().get("workers", {}))
    futs = [
        client.submit(warm_worker, key=f"sweep-warm-{uuid.uuid4().hex}", workers=[w])
        for w in workers
    ]
    client.gather(futs)


@contextlib.contextmanager
def connect(workers: int | None, scheduler: str | None) -> Iterator[tuple[Any, str]]:
    """A Dask client and a description of the engine; the local cluster is closed on exit."""
    from dask.distributed import Client, LocalCluster

    if scheduler is not None:
        try:
            client = Client(scheduler, timeout="20s")
        except (OSError, TimeoutError, ValueError) as exc:
            raise UserError(
                f"--scheduler {scheduler}: cannot connect to a Dask scheduler ({exc}); start "
                "one with `dask scheduler` and workers with `dask worker ADDRESS`"
            ) from None
        try:
            n = len(client.scheduler_info().get("workers", {}))
            yield client, f"Dask cluster at {scheduler} ({n} worker(s) at start)"
        finally:
            client.close()
        return
    import os

    n = workers or os.cpu_count() or 1
    with (
        LocalCluster(
            n_workers=n,
            threads_per_worker=1,
            processes=True,
            host="127.0.0.1",
            dashboard_address=None,
            silence_logs=logging.ERROR,
        ) as cluster,
        Client(cluster) as client,
    ):
        yield client, f"Dask LocalCluster, {n} worker process(es) × 1 thread"


# --------------------------------------------------------------------------------------------
# Directory and resume
# --------------------------------------------------------------------------------------------


def _meta(opts: SweepOptions, profile: Profile, overrides: Overrides, grid: Grid) -> dict[str, Any]:
    return {
        "schema_version": 1,
        "grid": str(grid.path),
        "grid_keys": list(grid.keys),
        "iterations": opts.iterations,
        "iteration_minutes": opts.iteration_minutes,
        "profile": profile.model_dump(mode="json"),
        "overrides": overrides.as_dict(),
    }


_MUST_MATCH = ("iterations", "iteration_minutes", "profile", "overrides", "grid_keys")


def _prepare_dir(out: Path, meta: dict[str, Any], resume: bool) -> None:
    meta_path = out / META
    csv_path = out / "sweep_results.csv"
    if not resume:
        # A sweep that committed nothing (e.g. no cluster reachable) may simply be started again.
        if csv_path.exists() and csv_path.read_bytes().count(b"\n") > 1:
            raise UserError(
                f"{out}/ already holds a sweep: pass --resume to continue it, or use a new --out"
            )
        csv_path.unlink(missing_ok=True)
    elif meta_path.exists():
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
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_json(meta_path, meta)


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
        cell_fn: CellFn,
        out: TextIO,
        token: str,
    ) -> None:
        self.name = name
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
            iterations=self.opts.iterations,
            iteration_minutes=self.opts.iteration_minutes,
            out_dir=str(self.opts.out.resolve()),
            keep_records=self.opts.keep_records,
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
                retries=TASK_RETRIES,
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
                retries=TASK_RETRIES,
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
    settings = load_run_settings(  # validates the run length the same way the soak does
        {
            "iterations": opts.iterations,
            "iteration_minutes": opts.iteration_minutes,
            "seed": opts.seed,
        }
    )
    profile = load_profile(opts.profile)
    overrides = load_overrides(opts.overrides)
    grid = load_grid(opts.grid, profile, overrides)
    duration = replay_seconds(settings.iterations, settings.iteration_minutes)
    if not opts.train:
        raise UserError("no training feeds: give --feeds/--train F1 [F2 ...]")
    cases = resolve_cases([*opts.train, *opts.test], settings.seed, duration)
    train, test = cases[: len(opts.train)], cases[len(opts.train) :]
    _prepare_dir(opts.out, _meta(opts, profile, overrides, grid), opts.resume)
    results = ResultsFile(opts.out, grid.keys)
    before = len(results.open())
    # Task keys are unique to this invocation: two sweeps sharing a cluster never share a result.
    token = uuid.uuid4().hex[:8]
    ran = 0
    engine = "none (every result was already in sweep_results.csv)"
    train_labels = [f.label for f in train]
    test_labels = [f.label for f in test]
    try:
        with contextlib.ExitStack() as stack:
            client = None

            def get_client() -> Any:
                nonlocal client, engine
                if client is None:
                    t = time.perf_counter()
                    client, engine = stack.enter_context(connect(opts.workers, opts.scheduler))
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
                    cell_fn,
                    out,
                    token,
                ).run(cells, feeds)
                timings[f"{name}_s"] = time.perf_counter() - t
                return n

            ran += phase("train", grid.cells, train)
            ranked = score_cells(grid.cells, train_labels, results.rows, opts.criterion)
            top_cells = [s.cell for s in ranked[: opts.top]]
            ran += phase("test", top_cells, test)
        for row in results.rows.values():  # a feed may have moved between splits on resume
            row["split"] = _split_of(row["feed"], train_labels, test_labels)
        results.rewrite_sorted(_order(grid, train, test))
    finally:
        results.close()
    shutil.rmtree(opts.out / "feeds", ignore_errors=True)  # regenerated on demand
    top = validate_top(ranked, opts.top, test_labels, results.rows)
    info = SweepInfo(
        grid=grid,
        train=train_labels,
        test=test_labels,
        iterations=settings.iterations,
        iteration_minutes=settings.iteration_minutes,
        profile_name=profile.name,
        overrides_source=str(opts.overrides or "overrides/runtime_overrides.json"),
        criterion=opts.criterion,
        rows=len(results.rows),
        engine=engine,
    )
    files = [results.path, *write_report(opts.out, info, ranked, top, overrides, profile)]
    timings["total_s"] = time.perf_counter() - t_all
    return SweepOutcome(opts.out, grid, ran, before, ranked, top, files, engine, timings)
