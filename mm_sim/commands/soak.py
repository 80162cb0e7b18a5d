"""``mm_sim soak``: the main job — replay a feed through the core, tune, report a verdict."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime as dt
import sys
from collections.abc import AsyncIterator, Callable, Coroutine, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import numpy as np

from mm_sim.commands import file_in_the_way
from mm_sim.config import (
    Overrides,
    Profile,
    RunSettings,
    check_env_names,
    load_overrides,
    load_profile,
    load_run_settings,
    parse_set_flags,
)
from mm_sim.errors import UserError
from mm_sim.feeds.clock import check_resume_clock, clock_line, live_clock_setting
from mm_sim.feeds.spec import (
    BinanceLiveFeedSpec,
    SyntheticFeedSpec,
    load_events,
    replay_clock,
    resolve_feed,
)
from mm_sim.logs import get_logger
from mm_sim.runtime.arm_names import parse_arms
from mm_sim.runtime.profile_fit import check_profile_fits, check_tick, size_notes
from mm_sim.runtime.replay import plan_iterations, replay_seconds

if TYPE_CHECKING:
    from mm_sim.events import Instrument
    from mm_sim.runtime.bus import EventChunk
    from mm_sim.runtime.replay import ReplayPlan
    from mm_sim.runtime.soak import Soak
    from mm_sim.runtime.soak_config import SoakConfig, SoakOutcome

log = get_logger("mm_sim.soak")
T = TypeVar("T")


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "soak",
        help="run a multi-iteration soak on a feed (the main job)",
        description=(
            "Run ITERATIONS x ITERATION_MINUTES of simulated time through the core, tune the "
            "runtime overrides between iterations, and write the edge report, KPI gate and "
            "verdict under --out. Defaults reproduce the seed: profile S1, baseline "
            "overrides, 6 x 30 min on the embedded synthetic market."
        ),
    )
    p.add_argument("--profile", help="profile name (S1) or path to a profile JSON")
    p.add_argument(
        "--overrides",
        help="starting runtime overrides JSON (default: overrides/runtime_overrides.json)",
    )
    p.add_argument("--feed", help="feed name from feeds/, a .npy feed, or a definition .json")
    p.add_argument("--iterations", type=int, help="number of iterations (default 6)")
    p.add_argument(
        "--iteration-minutes", type=float, help="simulated minutes each, at least 0.01 (default 30)"
    )
    p.add_argument("--seed", type=int, help="seed of the synthetic market and the core (default 1)")
    p.add_argument(
        "-o", "--out", "--artifacts", dest="artifacts", metavar="DIR",
        help="where results go (default: artifacts; --artifacts is its older name)",
    )  # fmt: skip
    p.add_argument("--resume", action="store_true", help="continue an interrupted run in --out")
    p.add_argument("--no-tune", dest="tune", action="store_false", help="keep the overrides fixed")
    p.add_argument(
        "--freeze-after-convergence",
        action="store_true",
        help="stop tuning after the first iteration in the OK band following a change",
    )
    p.add_argument(
        "--tuner",
        choices=("seed", "walk-forward"),
        help="seed: the seed's scenarios A-D (default); walk-forward: replay each iteration "
        "under candidate overrides and apply a winner that beats the incumbent beyond its error "
        "bars to the next iteration (docs/TUNER.md; MM_TUNER)",
    )
    p.add_argument(
        "--shadow",
        type=int,
        metavar="K",
        help="run K shadow engines with candidate overrides on the same events, paper only, "
        "reported beside the primary (0-12; MM_SHADOW)",
    )
    p.add_argument(
        "--scheduler",
        metavar="tcp://HOST:PORT",
        help="run the walk-forward replays on this Dask cluster (docs/SWEEP.md; MM_SCHEDULER)",
    )
    p.add_argument(
        "--control",
        action="store_true",
        help="also run a frozen-overrides arm on the same feed and seed (tuner uplift)",
    )
    p.add_argument(
        "--speed", type=float,
        help="pace replay against the wall clock (1 = real time, at least 0.1; default: as fast "
        "as it runs)",
    )  # fmt: skip
    p.add_argument(
        "--model-arms",
        metavar="all|none|RULE,...",
        help="also run the soak once per fill-model rule flipped, for the model error bars "
        "(rules: crossing_fills, through_fill, event_order, order_type, decide, clock; "
        "MM_MODEL_ARMS; default: all)",
    )
    p.add_argument(
        "--clock",
        metavar="auto|raw|SHIFT_MS",
        help="shift added to the feed's local_ts: auto = the feed's clock model (default), "
        "raw = none, or milliseconds (docs/FEEDS.md)",
    )
    p.add_argument(
        "--set",
        action="append",
        metavar="KEY=VALUE",
        help="override a config value, e.g. overrides.tail_age_ms=700",
    )
    p.set_defaults(func=run)


def _check_out(root: Path, resume: bool) -> None:
    """Whether --out can take this run, checked before anything is loaded, written or printed
    (a refusal after the clock line was two lines, and a file on the way to --out an OS fault,
    exit 1). Nothing is changed here: a fresh run moves an older one aside later."""
    from mm_sim.report.rundir import is_run_dir

    p = file_in_the_way(root)
    if p is not None:
        what = "not a directory" if p == root else f"{p} is a file, not a directory"
        raise UserError(f"--out {root}: {what} (choose another --out)")
    if resume:
        run_json = root / "soak" / "run.json"
        if not run_json.exists():
            raise UserError(f"--resume: no run to resume in {root}/ ({run_json} not found)")
        return
    if not root.exists() or not any(root.iterdir()):
        return
    real = root.resolve()
    if real == Path.cwd().resolve() or real.parent == real:
        raise UserError(
            f"--out {root}: refusing to move the current (or root) directory aside; "
            "choose a subdirectory, e.g. --out artifacts"
        )
    if not is_run_dir(real):
        raise UserError(
            f"--out {root}: directory is not empty and is not an mm_sim run directory "
            "(no soak/run.json); choose an empty or new directory"
        )


def _check_resume(root: Path, iterations: int) -> None:
    """What the run directory says must agree with itself and with --iterations before a resume
    cuts it back to its last committed iteration: an emptied metrics.jsonl beside later
    checkpoints started over from iteration 0 (deleting the records), and fewer --iterations
    than were committed printed "3/2 done"."""
    import re

    from mm_sim.report.rundir import RunDir

    rd = RunDir(root)
    lines = rd.committed_lines()
    ck_dir = rd.soak / "checkpoints"
    found = (re.fullmatch(r"iteration-(\d+)\.npz", p.name) for p in ck_dir.glob("*.npz"))
    checkpoints = sorted(int(m.group(1)) for m in found if m)
    # A run killed between an iteration's checkpoint and its line in metrics.jsonl has one
    # checkpoint more than lines (the checkpoint is written first); a later one is a cut file.
    if checkpoints and (not rd.metrics_jsonl.exists() or checkpoints[-1] > len(lines)):
        said = (
            f"{rd.metrics_jsonl} records {len(lines)} committed iteration(s)"
            if rd.metrics_jsonl.exists()
            else f"{rd.metrics_jsonl} is missing"
        )
        raise UserError(
            f"--resume: {said}, but {ck_dir} holds the checkpoint of iteration "
            f"{checkpoints[-1]}: the metrics file was emptied, cut or "
            "deleted; restore it, or start a new run with another --out (nothing was changed)"
        )
    done = len(lines) - (1 if lines and lines[-1].partial else 0)
    if done > iterations:
        raise UserError(
            f"--iterations {iterations}: the run in {root}/ has already committed {done} "
            f"iterations; resume it with --iterations {done} or more (`mm_sim report {root}` "
            "rebuilds its reports)"
        )


def _archive_previous(root: Path) -> None:
    """A fresh run never overwrites an older one: the older one is moved aside, loudly.

    Only a directory an mm_sim run wrote is moved (``_check_out``, which ``run`` calls before
    anything is loaded, refused anything else that is not empty), and only while holding its
    lock: a run still writing to it keeps the lock, so the move is refused instead of pulling
    the directory from under it.
    """
    from mm_sim.events import hold_lock

    if not root.exists() or not any(root.iterdir()):
        return
    real = root.resolve()
    lock_path = real / "soak" / ".lock"
    lock_path.parent.mkdir(exist_ok=True)
    lock = hold_lock(
        lock_path,
        f"--out {root}: another mm_sim process is running in this directory; "
        "wait for it to finish, or choose another --out",
    )
    try:
        stamp = dt.datetime.fromtimestamp(real.stat().st_mtime).strftime("%Y%m%d-%H%M%S")
        target = real.with_name(f"{real.name}-{stamp}")
        n = 1
        while target.exists():
            n += 1
            target = real.with_name(f"{real.name}-{stamp}-{n}")
        real.rename(target)
    finally:
        lock.close()
    print(f"previous run in {root}/ moved to {target}/ (use --resume to continue it instead)")


def run(args: argparse.Namespace) -> int:
    from mm_sim.runtime.soak import Soak
    from mm_sim.runtime.summary import print_summary

    if not args.tune:
        # Flags about the tuner that --no-tune switches off: said, not silently ignored.
        idle = [flag for flag, given in (
            ("--tuner", args.tuner is not None),
            ("--freeze-after-convergence", args.freeze_after_convergence),
            ("--control", args.control),  # the tuner's uplift over a frozen arm: none here
        ) if given]  # fmt: skip
        if idle:
            raise UserError(
                f"--no-tune keeps the overrides fixed: {', '.join(idle)} would do nothing"
            )

    check_env_names()
    settings = load_run_settings(
        {
            "profile": args.profile,
            "overrides": args.overrides,
            "feed": args.feed,
            "iterations": args.iterations,
            "iteration_minutes": args.iteration_minutes,
            "seed": args.seed,
            "artifacts": args.artifacts,
            "speed": args.speed,
            "clock": args.clock,
            "model_arms": args.model_arms,
            "tuner": args.tuner,
            "shadow": args.shadow,
            "scheduler": args.scheduler,
        }
    )
    prof_cli, ovr_cli = parse_set_flags(args.set)
    profile = load_profile(settings.profile, prof_cli)
    span_ms = settings.iteration_minutes * 60_000
    if span_ms < profile.mark_interval_ms:
        raise UserError(
            f"an iteration of {span_ms / 1000:g} s (--iteration-minutes "
            f"{settings.iteration_minutes:g}) is shorter than the profile's mark_interval_ms "
            f"{profile.mark_interval_ms:g}: it would hold no mark to measure it by"
        )
    root = Path(settings.artifacts)
    _check_out(root, args.resume)
    if args.resume:
        _check_resume(root, settings.iterations)
    overrides = load_overrides(settings.overrides, ovr_cli)
    spec = resolve_feed(settings.feed)
    iteration_ns = int(settings.iteration_minutes * 60e9)
    if isinstance(spec, BinanceLiveFeedSpec):
        return _run_live(args, settings, profile, overrides, spec, root, iteration_ns)
    if isinstance(spec, SyntheticFeedSpec):
        # The synthetic market continues as long as the soak needs it.
        needed = replay_seconds(settings.iterations, settings.iteration_minutes)
        spec = spec.model_copy(update={"duration_s": needed})
    events, instrument, identity = load_events(spec, settings.seed)
    clock = replay_clock(spec, settings.clock)
    if args.resume:
        check_resume_clock(root / "soak" / "run.json", clock)
    identity = {**identity, **clock.record()}
    feed_instrument, instrument = instrument, profile.instrument_for(instrument)
    notes = check_profile_fits(settings.profile, profile, feed_instrument, instrument, events)
    plan = plan_iterations(events, settings.iterations, iteration_ns)
    if not plan.iterations:
        raise UserError(f"feed {settings.feed!r}: {plan.note}")
    if plan.note:
        notes.append(f"note: {plan.note}")

    def announce() -> None:
        # Said once the run directory has accepted the run (a refused resume says one line).
        print(clock.describe(), flush=True)
        for note in notes:
            print(note, file=sys.stderr)

    cfg = _soak_config(args, settings, profile, overrides, identity, instrument, events, plan)
    cfg.clock_shift_ns = clock.shift_ns
    cfg.announce = announce
    with _replay_cluster(settings) as (cfg.replay_client, cfg.replay_where):
        outcome = _run_loop(Soak(cfg, sys.stdout))
    print_summary(outcome, root, sys.stdout)
    return _exit_status(outcome)


def _soak_config(
    args: argparse.Namespace,
    settings: RunSettings,
    profile: Profile,
    overrides: Overrides,
    identity: dict[str, Any],
    instrument: Instrument,
    events: np.ndarray,
    plan: ReplayPlan,
    source: Callable[[int], AsyncIterator[EventChunk]] | None = None,
) -> SoakConfig:
    """The runner's configuration, the same for a replayed and a live feed; a fresh run moves
    the previous one aside first."""
    from mm_sim.runtime.soak_config import SoakConfig

    root = Path(settings.artifacts)
    if not args.resume:
        _archive_previous(root)
    return SoakConfig(
        settings=settings,
        profile=profile,
        overrides=overrides,
        feed_identity=identity,
        instrument=instrument,
        events=events,
        plan=plan,
        artifacts=root,
        resume=args.resume,
        tune=args.tune,
        freeze_after_convergence=args.freeze_after_convergence,
        control=args.control,
        model_arms=parse_arms(settings.model_arms),
        source=source,
    )


@contextlib.contextmanager
def _replay_cluster(settings: RunSettings) -> Iterator[tuple[Any, str]]:
    """(client, description) of the Dask cluster at --scheduler for the walk-forward replays,
    connected before the soak's event loop starts (Dask's connection set-up runs an event loop
    of its own); (None, "in-process") without one."""
    if settings.scheduler is None or settings.tuner != "walk-forward":
        if settings.scheduler is not None:
            print("note: --scheduler is used by --tuner walk-forward only", file=sys.stderr)
        yield None, "in-process"
        return
    from mm_sim.sweep.cluster import connect

    with connect(None, settings.scheduler) as conn:
        yield conn


def _run_loop(soak: Soak) -> SoakOutcome:
    """uvloop where available (not on Windows), plain asyncio otherwise."""
    return _run_coro(soak.run())


def _run_coro(coro: Coroutine[Any, Any, T]) -> T:
    try:
        import uvloop
    except ImportError:  # pragma: no cover - Windows
        return asyncio.run(coro)
    return uvloop.run(coro)


def _run_live(
    args: argparse.Namespace,
    settings: RunSettings,
    profile: Profile,
    overrides: Overrides,
    spec: BinanceLiveFeedSpec,
    root: Path,
    iteration_ns: int,
) -> int:
    """Paper trading: the same soak, fed in real time by a live feed instead of a file.

    ``--resume`` after an interrupted (even killed) live soak keeps the committed iterations and
    the state checkpointed after the last of them (position, cash, resting orders, tuner), and
    runs the next iteration on the live stream from now: a live feed cannot replay the time the
    process was down, so that gap belongs to no iteration (orders that were resting meet the
    market as it is now).
    """
    import gc

    from mm_sim.events import EVENT_DTYPE, atomic_write_json
    from mm_sim.runtime.replay import IterationPlan, ReplayPlan
    from mm_sim.runtime.soak import Soak
    from mm_sim.runtime.summary import print_summary
    from mm_sim.venues.binance.live_source import open_live

    if settings.speed is not None:
        print("note: --speed does not apply to a live feed (it runs in real time)", file=sys.stderr)
    if args.clock is not None:  # the same switch; a live feed measures its offset (docs/LIVE.md)
        spec = spec.model_copy(update={"clock": live_clock_setting(settings.clock)})
    n = settings.iterations
    counters_path = root / "soak" / "live_feed.json"
    previous = _previous_sessions(counters_path) if args.resume else []
    # Load the core's kernels before connecting: loading them once frames flow would stall the
    # stream and show as feed lag (seconds of exchange time on a fast fake exchange).
    _warm_engine(profile, overrides, settings.seed)

    async def main() -> SoakOutcome:
        feed = await open_live(spec)
        print(clock_line(feed.identity), flush=True)

        def save_counters() -> None:
            # Whether the feed was healthy (resyncs, gaps, overflow) sits next to the reports.
            data = feed.counters()
            if previous:
                data["previous_sessions"] = previous
            atomic_write_json(counters_path, data)

        async def source(start: int) -> AsyncIterator[EventChunk]:
            async for chunk in feed.chunks(n, iteration_ns, start):
                yield chunk
                if chunk.end_of_iteration:
                    save_counters()  # a killed run keeps the counters of what it committed

        try:
            instrument = profile.instrument_for(feed.instrument)
            # The venue's tick, from its exchange info; the order size against its prices is
            # not checked (no price before the first snapshot).
            check_tick(settings.profile, feed.instrument, instrument)
            for note in size_notes(feed.instrument, instrument):
                print(note, file=sys.stderr)
            t0 = feed.clock()
            plan = ReplayPlan(
                [
                    IterationPlan(
                        k, 0, 0, t0 + k * iteration_ns, t0 + (k + 1) * iteration_ns, False
                    )
                    for k in range(n)
                ],
                n,
                None,
            )
            cfg = _soak_config(
                args, settings, profile, overrides, feed.identity, instrument,
                np.empty(0, dtype=EVENT_DTYPE), plan, source,
            )  # fmt: skip
            cfg.replay_client, cfg.replay_where = replays
            soak = Soak(cfg, sys.stdout)
            # Everything alive now lives to the end: keep it out of the cyclic GC's full
            # collections, which would otherwise pause the stream for tens of milliseconds.
            gc.freeze()
            outcome = await soak.run()
        finally:
            await feed.close()
        save_counters()
        return outcome

    with _replay_cluster(settings) as replays:
        outcome = _run_coro(main())
    print_summary(outcome, root, sys.stdout)
    print(f"live feed counters: {counters_path}")
    return _exit_status(outcome)


def _exit_status(outcome: SoakOutcome) -> int:
    """0 done; 130 interrupted (Ctrl-C), 143 stopped by SIGTERM; 3 done, but the feed was down
    for whole iterations (their figures describe no market: docs/WHAT_HAPPENS_WHEN.md)."""
    if outcome.interrupted:
        return 128 + int(outcome.stop_signal)
    return 3 if outcome.final.get("outages") else 0


def _warm_engine(profile: Profile, overrides: Overrides, seed: int) -> None:
    """Run two events through a throwaway engine so numba loads (or compiles) its kernels."""
    from mm_sim.core.engine import Engine
    from mm_sim.events import EVENT_DTYPE, KIND_DEPTH, Instrument

    lot = profile.quoting.order_qty
    ev = np.zeros(2, dtype=EVENT_DTYPE)
    ev["kind"] = KIND_DEPTH
    ev["side"] = [1, -1]
    ev["price"] = [100.0, 100.01]
    ev["qty"] = 1.0
    Engine(profile, overrides, Instrument("WARMUP", "warmup", 0.01, lot, 2), seed).run(ev)


def _previous_sessions(path: Path) -> list[dict[str, Any]]:
    """Feed counters of the sessions a resumed live soak continues (oldest first)."""
    import json

    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return []
    if not isinstance(data, dict):
        return []
    earlier = data.pop("previous_sessions", [])
    return [*earlier, data] if isinstance(earlier, list) else [data]
