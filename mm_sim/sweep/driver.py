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

import contextlib
import sys
import time
import uuid
from collections import Counter
from collections.abc import Callable, Sequence
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
from mm_sim.runtime.arm_names import ALL as ALL_ARMS
from mm_sim.runtime.profile_fit import check_tick, size_notes
from mm_sim.runtime.progress import COLD_COMPILE_NOTE, kernels_cached
from mm_sim.sweep import cache
from mm_sim.sweep.cell import (
    CellTask,
    Refused,
    ensure_feed,
    feed_cache_path,
    returning_refusals,
    run_cell,
)
from mm_sim.sweep.cluster import connect, task_origin, warm_workers
from mm_sim.sweep.feeds import DEFAULT_TEST, DEFAULT_TRAIN, FeedCase, resolve_cases
from mm_sim.sweep.grid import Cell, Grid, load_grid
from mm_sim.sweep.outdir import prepare, prune_feeds, remove_attempts, sweep_meta
from mm_sim.sweep.progress import CellProgress
from mm_sim.sweep.report import SweepInfo, write_report
from mm_sim.sweep.results import ResultsFile
from mm_sim.sweep.select import CellScore, Criterion, Validation, score_cells, validate_top


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
            profile_source=self.settings.profile,
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
                returning_refusals,
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
                returning_refusals,
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
            got = fut.result()
        except KilledWorker:
            raise UserError(
                f"{where}: every worker that ran it died (a crash or out of memory in the "
                f"cell; see the workers' logs); {keep}"
            ) from None
        except Exception as exc:  # a bug, not bad input: name it and where it was raised
            raise UserError(
                f"{where} failed: {type(exc).__name__}: {exc}{task_origin(fut)}; for the full "
                f"traceback run it alone: `{self.soak_command(cell, case)}`; {keep}"
            ) from None
        if isinstance(got, Refused):
            raise UserError(f"{where}: {got.message}; {keep}")
        return dict(got)

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
        # The grid cannot change the instrument (grid.py), so its check and notes are per feed;
        # the order size against the feed's prices is each cell's (sweep/cell.py).
        assert case.instrument is not None
        used = profile.instrument_for(case.instrument)
        try:
            check_tick(settings.profile, case.instrument, used)
        except UserError as exc:
            raise UserError(f"feed {case.label}: {exc}") from None
        for note in size_notes(case.instrument, used):
            print(f"{note} (feed {case.label})", file=sys.stderr)
    lock = prepare(opts.out, sweep_meta(settings, profile, overrides, grid), opts.resume)
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
    remove_attempts(opts.out)
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
                    warm_workers(client)
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
        prune_feeds(opts.out, {feed_cache_path(f, opts.out) for f in keep})
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
