"""``mm_sim sweep``: best-cell search over override and profile values on Dask distributed."""

from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path
from typing import Any

from mm_sim.commands import path_arg
from mm_sim.config import check_env_names, load_local_settings
from mm_sim.errors import UserError


def register(sub: argparse._SubParsersAction) -> None:
    from mm_sim.sweep.feeds import DEFAULT_TEST, DEFAULT_TRAIN

    p = sub.add_parser(
        "sweep",
        help="best-cell search: run a grid of override/profile values over many feeds (Dask)",
        description=(
            "Run every cell of GRID.toml (combinations of runtime-override and profile values) "
            "on every training feed with the soak's runner (tuner off), pick the best cell by a "
            "robust score, re-run the top cells on held-out test feeds, and write "
            "sweep_results.csv, SWEEP_REPORT.md with a heat map, and best_cell.json (usable as "
            "--overrides) under --out. Runs on a local Dask cluster, or on an existing one "
            "with --scheduler. See docs/SWEEP.md."
        ),
    )
    p.add_argument("--grid", required=True, metavar="GRID.toml", help="the grid (docs/SWEEP.md)")
    # Two names of one option, kept apart so that giving both is refused: as aliases the
    # second silently replaced the first's feeds.
    p.add_argument(
        "--feeds",
        "--train",
        dest="train",
        nargs="+",
        metavar="FEED",
        help=(
            "training feeds: NAME[@SEED] (a feed in feeds/, a .npy or a definition .json; "
            f"@SEED picks the synthetic day / core seed); --feeds and --train are one option: "
            f"give one of them, once. Default: {' '.join(DEFAULT_TRAIN)} "
            f"(and test feeds {' '.join(DEFAULT_TEST)})"
        ),
        action=_OnceAction,
    )
    p.add_argument(
        "--test",
        nargs="*",
        metavar="FEED",
        help="held-out feeds the top cells are re-run on (none when --feeds is given alone)",
    )
    cluster = p.add_mutually_exclusive_group()
    cluster.add_argument(
        "--workers", type=int, help="local cluster: worker processes (default: one per core)"
    )
    cluster.add_argument(
        "--scheduler",
        metavar="tcp://HOST:PORT",
        help="run on an existing Dask cluster (default: a local one)",
    )
    p.add_argument(
        "--wait-workers",
        type=float,
        default=60.0,
        metavar="SECONDS",
        help="with --scheduler: how long to wait for a first worker to join",
    )
    p.add_argument(
        "--connect-timeout",
        type=float,
        default=10.0,
        metavar="SECONDS",
        help="with --scheduler: how long the scheduler may take to answer",
    )
    p.add_argument(
        "-o", "--out", type=path_arg, default=Path("sweep-artifacts"), metavar="DIR",
        help="where results go",
    )  # fmt: skip
    p.add_argument("--resume", action="store_true", help="run only what has no result in --out")
    p.add_argument(
        "--iterations", type=int, help="iterations per run (MM_ITERATIONS; default 6, as the soak)"
    )
    p.add_argument(
        "--iteration-minutes",
        type=float,
        help="simulated minutes each (MM_ITERATION_MINUTES; default 30)",
    )
    p.add_argument(
        "--seed", type=int, help="seed of feeds given without @SEED (MM_SEED; default 1)"
    )
    p.add_argument("--profile", help="base profile name or path (MM_PROFILE; default S1)")
    p.add_argument(
        "--overrides",
        help="base runtime overrides JSON (MM_OVERRIDES; default overrides/runtime_overrides.json)",
    )
    p.add_argument(
        "--model-arms",
        metavar="all|none|RULE,...",
        help="fill-model arms run beside the held-out runs of the top cells, for their model "
        "error bars (as soak --model-arms; MM_MODEL_ARMS; default: all)",
    )
    p.add_argument(
        "--keep-records",
        action="store_true",
        help="keep each run's raw records (so `mm_sim report` can rebuild it); reports only "
        "otherwise",
    )
    p.add_argument(
        "--clock",
        metavar="auto|raw|SHIFT_MS",
        help="shift added to each feed's local_ts, as the soak's --clock (MM_CLOCK; default auto)",
    )
    p.add_argument("--top", type=int, default=5, help="cells re-run on the test feeds")
    p.add_argument(
        "--dispersion-weight",
        type=float,
        default=1.0,
        help="score penalty per bps of MAD of net_bps across training feeds",
    )
    p.add_argument(
        "--gate-penalty",
        type=float,
        default=1.0,
        help="score penalty in bps per failed hard gate per feed",
    )
    p.set_defaults(func=run)


class _OnceAction(argparse.Action):
    """Store the feeds of --feeds/--train, refusing a second use of either name."""

    def __call__(
        self,
        parser: argparse.ArgumentParser,
        namespace: argparse.Namespace,
        values: Any,
        option_string: str | None = None,
    ) -> None:
        first = getattr(namespace, "_train_flag", None)
        if first is not None:
            raise UserError(
                f"{first} and {option_string} are one option (the training feeds): the second "
                "would replace the first's feeds; give all of them after one --feeds"
            )
        namespace._train_flag = option_string
        setattr(namespace, self.dest, values)


def run(args: argparse.Namespace) -> int:
    from mm_sim.sweep.driver import SweepOptions, run_sweep
    from mm_sim.sweep.feeds import DEFAULT_TEST, DEFAULT_TRAIN
    from mm_sim.sweep.select import Criterion

    for flag, value in (
        ("--dispersion-weight", args.dispersion_weight),
        ("--gate-penalty", args.gate_penalty),
    ):
        # NaN scored every cell NaN and still named a best one; a negative weight would reward
        # the cells whose results vary most, or fail most.
        if not (math.isfinite(value) and value >= 0.0):
            raise UserError(f"{flag} {value!r}: expected a finite number >= 0")
    # The workers read the same MM_* settings: a bad one is named here, before a cluster starts
    # (in a worker it surfaced as a failed warm-up that blamed the worker's versions).
    check_env_names()
    load_local_settings()
    if args.train is None:
        train, test = list(DEFAULT_TRAIN), list(DEFAULT_TEST if args.test is None else args.test)
    else:
        train, test = list(args.train), list(args.test or [])
    # Run length, seed, profile and overrides not given here come from MM_* or the defaults.
    opts = SweepOptions(
        grid=Path(args.grid),
        train=train,
        test=test,
        out=args.out,
        workers=args.workers,
        scheduler=args.scheduler,
        resume=args.resume,
        iterations=args.iterations,
        iteration_minutes=args.iteration_minutes,
        seed=args.seed,
        profile=args.profile,
        overrides=args.overrides,
        clock=args.clock,
        top=args.top,
        criterion=Criterion(args.dispersion_weight, args.gate_penalty),
        keep_records=args.keep_records,
        model_arms=_model_arms(args.model_arms),
        wait_workers=args.wait_workers,
        connect_timeout=args.connect_timeout,
    )
    try:
        outcome = run_sweep(opts, sys.stdout)
    except KeyboardInterrupt:
        print(
            f"\nsweep interrupted: every finished cell × feed is in {opts.out}/sweep_results.csv;"
            " run the same command with --resume to continue",
            file=sys.stderr,
        )
        return 130
    print_outcome(outcome)
    return 0


def print_outcome(outcome: object) -> None:
    from mm_sim.sweep.driver import SweepOutcome

    assert isinstance(outcome, SweepOutcome)
    o = outcome
    print(
        f"\nsweep: {len(o.grid.cells)} cells; {o.ran} run(s) now, {o.skipped} already done "
        f"({o.engine})"
    )
    if o.ranked:
        best = o.ranked[0]
        test = o.top[0].test if o.top else None
        oos = f"{test.median_net_bps:+.3f}" if test else "n/a (no test feeds)"
        print(
            f"best cell {best.cell.id}: {best.cell.label()}\n"
            f"  score {best.score:+.3f}  in-sample median net_bps "
            f"{best.train.median_net_bps:+.3f}  out-of-sample {oos}"
        )
    for f in o.files:
        print(f"  {f}")


def _model_arms(flag: str | None) -> tuple[str, ...]:
    from mm_sim.config import load_run_settings
    from mm_sim.runtime.arm_names import parse_arms

    return parse_arms(load_run_settings({"model_arms": flag}).model_arms)
