"""One cell on one feed, inside a worker process: the soak's own runner, tuner off.

Why the soak and not a bare engine loop: a sweep's number for a cell must be the number a soak
with the same values would report — same replay plan, same iteration marks, same edge
decomposition and gates — so a best cell carries over to ``mm_sim soak --overrides`` unchanged.
``tune=False`` keeps the cell's values fixed, so what is measured is the cell, not the tuner.

A task holds only small JSON-able values (the full profile and overrides of the cell, the feed's
definition and seed, paths). Events are read here: a synthetic day is generated once into
``DIR/feeds/`` (written atomically; any worker finding it there reads it), a file feed is read
from its path; either is opened, verified and read into memory once per worker and kept for its
next cells (``sweep/cache.py``). Each attempt writes its run directory under a temporary name
and renames it into ``DIR/runs/<cell>/<feed>/`` when complete, so a worker killed mid-cell
leaves nothing that a re-run on another worker could trip over or that could be counted. Only a
run's reports and metrics are kept unless ``keep_records`` (raw records: tens of MB per
simulated hour).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import io
import json
import os
import shutil
import socket
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mm_sim import durable
from mm_sim.config import Overrides, Profile, given_run_settings
from mm_sim.errors import UserError
from mm_sim.events import open_feed, sidecar_path, write_feed
from mm_sim.feeds.clock import GENERATED, MODE_AUTO, MODE_RAW
from mm_sim.feeds.spec import load_events
from mm_sim.runtime.profile_fit import check_notional
from mm_sim.runtime.replay import plan_iterations
from mm_sim.sweep import cache
from mm_sim.sweep.feeds import FeedCase, spec_model

# Totals copied from EDGE_REPORT.json into a result row (gate metrics included).
METRICS = (
    "net_bps",
    "gross_bps",
    "fees_eff_bps",
    "slippage_bps",
    "inventory_bps",
    "adverse_bps",
    "pnl",
    "fills",
    "notional",
    "maker_share_pct",
    "cancel_ratio",
    "adverse_cost_p95_bps",
    "slippage_cost_p95_bps",
    "order_age_p95_ms",
    "ws_lag_p95_ms",
)


@dataclass(frozen=True)
class CellTask:
    """Everything a worker needs for one cell on one feed; a few kilobytes pickled."""

    cell_id: str
    feed: FeedCase
    profile: dict[str, Any]  # the cell's complete profile (model_dump, JSON mode)
    overrides: dict[str, float]  # the cell's six runtime overrides
    iterations: int
    iteration_minutes: float
    out_dir: str  # the sweep's DIR
    keep_records: bool = False  # keep the raw records (for `mm_sim report RUN_DIR`)
    model_arms: tuple[str, ...] = ()  # fill-model arms run beside it (the held-out runs)
    profile_source: str = ""  # the base profile as the user named it (--profile), for messages

    @property
    def run_dir(self) -> Path:
        return Path(self.out_dir) / "runs" / self.cell_id / self.feed.slug


def feed_cache_path(case: FeedCase, out_dir: str | Path) -> Path:
    digest = hashlib.sha256(case.data_key.encode()).hexdigest()[:10]
    return Path(out_dir) / "feeds" / f"{case.slug}-{digest}.npy"


def ensure_feed(case: FeedCase, out_dir: str) -> dict[str, Any]:
    """Path and identity of the feed's events, generating a synthetic day once if needed.

    Idempotent and safe to run concurrently: the generator is deterministic and the file and
    its sidecar (written last) are each replaced atomically, so a reader that finds the sidecar
    finds a complete file.
    """
    spec = spec_model(case)
    if spec.kind == "file":
        _, _, identity = load_events(spec, case.seed)  # a memory map: nothing is read
        return {"path": identity["path"], "identity": identity}
    path = feed_cache_path(case, out_dir)
    side = sidecar_path(path)
    if not (path.exists() and side.exists()):
        events, instrument, identity = load_events(spec, case.seed)
        write_feed(path, events, instrument, source=identity, clock=GENERATED)
    return {"path": str(path), "identity": open_feed(path).meta.source}


# Events per chunk at most in a sweep cell (40 MB of records): bounds a chunk's copies on a
# dense feed while leaving a 30 min iteration of the synthetic day in one or two chunks.
SWEEP_CHUNK_EVENTS = 1 << 20


def _soak(
    task: CellTask, profile: Profile, feed: cache.CachedFeed, identity: dict[str, Any],
    artifacts: Path,
) -> tuple[int, bool]:  # fmt: skip
    """Run the soak; the number of iterations it committed, and whether the feed cut it."""
    from mm_sim.runtime.soak import Soak
    from mm_sim.runtime.soak_config import SoakConfig

    overrides = Overrides.model_validate(task.overrides)
    # A feed shorter than the run is replayed to its end, as the soak does: the soak commits the
    # cut iteration as partial and the row says so (``partial``).
    plan = plan_iterations(feed.events, task.iterations, int(task.iteration_minutes * 60e9))
    settings = given_run_settings(
        profile=profile.name,
        feed=task.feed.label,
        iterations=task.iterations,
        iteration_minutes=task.iteration_minutes,
        seed=task.feed.seed,
        artifacts=str(task.run_dir),
        clock=_clock_setting(task.feed.clock),
        model_arms=",".join(task.model_arms) or "none",
    )
    cfg = SoakConfig(
        settings=settings,
        profile=profile,
        overrides=overrides,
        feed_identity={**identity, **task.feed.clock},
        instrument=profile.instrument_for(feed.instrument),
        events=feed.events,
        plan=plan,
        clock_shift_ns=task.feed.clock_shift_ns,
        lag_memo=feed.lag_memo(task.feed.clock_shift_ns),
        artifacts=artifacts,
        tune=False,
        # Tuner off and nobody editing the cell's overrides: one chunk per iteration, the
        # same records as 2 s chunks without their per-chunk work (SoakConfig.chunk_ns).
        chunk_ns=int(task.iteration_minutes * 60e9),
        chunk_events=SWEEP_CHUNK_EVENTS,
        checkpoints=False,  # a cell is never resumed: a failed one runs again from the start
        interim_reports=False,  # nor watched: its reports are built once, at its end
        fills_csv=task.keep_records,  # dropped with the records otherwise (_drop_records)
        model_arms=task.model_arms,
        # Charts are the slowest part of a short run's reports and nobody plots hundreds of
        # sweep runs one by one; ``mm_sim report RUN_DIR`` draws them from the records.
        charts=False,
    )
    soak = Soak(cfg, out=io.StringIO())
    # A fresh event loop in this (worker) thread; the soak's SIGINT hook is skipped off the
    # main thread, which is what a worker wants.
    done = asyncio.run(soak.run()).iterations_done
    return done, plan.note is not None


def _clock_setting(record: dict[str, Any]) -> str:
    """The ``--clock`` that gives the clock a feed case records (decided on the driver)."""
    mode = str(record.get("clock_mode", MODE_AUTO))
    return mode if mode in (MODE_AUTO, MODE_RAW) else str(float(record["clock_shift_ms"]))


def summarize(run_dir: Path) -> dict[str, Any]:
    """A result row's figures, read back from the run's written reports."""
    edge = json.loads((run_dir / "reports" / "EDGE_REPORT.json").read_text())
    gate = json.loads((run_dir / "reports" / "KPI_GATE.json").read_text())
    totals = edge["totals"]
    row: dict[str, Any] = {m: totals.get(m) for m in METRICS}
    row["verdict"] = gate["verdict"]
    row["band"] = gate["band"]
    row["hard_failed"] = list(gate["hard_failed"])
    row["soft_failed"] = list(gate["soft_failed"])
    return row


def _drop_records(run_dir: Path) -> None:
    """Keep a run's reports and metrics, drop its bulk (tens of MB per simulated hour).

    A sweep makes hundreds of runs; their rows and reports are the result. The raw records are
    only needed to rebuild a run's reports or charts (``--keep-records``).
    """
    for d in [run_dir, *sorted((run_dir / "models").glob("*"))]:
        for sub in ("records", "checkpoints"):
            shutil.rmtree(d / "soak" / sub, ignore_errors=True)
        (d / "soak" / "fills.csv").unlink(missing_ok=True)
        (d / "soak" / "checkpoint.npz").unlink(missing_ok=True)


@dataclass(frozen=True)
class Refused:
    """A task's refusal of its input (a UserError), returned instead of raised.

    Why: Dask logs a task that raises as "Compute Failed" with its traceback, on the worker's
    stderr, which is the user's terminal for a local cluster. A refusal is bad input, not a
    failure: the driver says it once, as one line naming the cell and feed.
    """

    message: str


def returning_refusals(fn: Callable[..., Any], *args: Any) -> Any:
    """``fn(*args)``, with a UserError returned as :class:`Refused`; an argument that is already
    a refusal (the feed a cell needs was refused) is passed on without calling ``fn``."""
    for a in args:
        if isinstance(a, Refused):
            return a
    try:
        return fn(*args)
    except UserError as exc:
        return Refused(str(exc))


def run_cell(task: CellTask, prepared: dict[str, Any] | None = None) -> dict[str, Any]:
    """Run ``task`` and return its result row: identity, figures, iterations, verdict, timing.

    ``prepared`` is ``ensure_feed``'s answer when the driver prepared the feed beforehand; when
    its file is not visible here (workers without a shared filesystem) the feed is prepared
    locally.
    """
    t0 = time.perf_counter()
    if prepared is None or not Path(prepared["path"]).exists():
        prepared = ensure_feed(task.feed, task.out_dir)
    profile = cache.profile(task.profile)
    feed = cache.feed(prepared["path"])  # opened and verified once per worker (sweep/cache.py)
    # As the soak refuses it, before anything of the run is written: an order the inventory
    # limit refuses at this feed's prices (a grid over quoting.order_qty or
    # inventory.max_notional can make one), not a row of 0 fills.
    used = profile.instrument_for(feed.instrument)
    check_notional(task.profile_source or profile.name, profile, used, feed.events)
    final = task.run_dir
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = final.parent / f".{final.name}.{uuid.uuid4().hex[:12]}.tmp"
    try:
        # Never resumed, so no fsync per commit: what is kept is synced once, before the
        # rename publishes it (mm_sim/durable.py).
        with durable.deferred():
            iterations_run, cut = _soak(task, profile, feed, prepared["identity"], tmp)
        if not task.keep_records:
            _drop_records(tmp)
        durable.sync_tree(tmp)
        # An earlier attempt may have finished its run but died before reporting: replace it.
        if final.exists():
            shutil.rmtree(final)
        os.replace(tmp, final)
        durable.sync_dir(final.parent)  # the rename itself, before the driver's row points here
    finally:
        if tmp.exists():
            with contextlib.suppress(OSError):
                shutil.rmtree(tmp)
    row = {"cell_id": task.cell_id, "feed": task.feed.label, "seed": task.feed.seed}
    row.update(summarize(final))
    row["iterations_run"] = iterations_run
    row["partial"] = "cut by the feed's end" if cut else ""
    row["run_dir"] = str(final.relative_to(task.out_dir))
    row["wall_s"] = time.perf_counter() - t0
    row["worker"] = f"{socket.gethostname()}:{os.getpid()}"
    return row
