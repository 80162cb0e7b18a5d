"""``mm_sim validate``: check the simulator against outside references and its own promises.

``as2008`` reproduces a published result with this core's own functions; ``tuner`` measures
whether the tuners earn out of sample (``mm_sim.tuning.validation``)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from mm_sim.commands import JSON_HELP, file_in_the_way, path_arg
from mm_sim.errors import UserError
from mm_sim.events import atomic_write_json

DEFAULT_DATA = Path("../shared/data")  # the recorded captures beside a checkout
MAX_PATHS = 10_000_000
MAX_AS2008_SEED = (2**64 - 3) // 1000  # seed x 1000 + gamma index (0..2) < 2**64
# The study's own run length where neither a flag nor MM_* gives one: the soak's 6 x 30 minutes
# over 10 days and two tuners would take hours; this takes minutes.
STUDY_ITERATIONS = 4
STUDY_ITERATION_MINUTES = 3.0


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "validate",
        help="check the core against published results",
        description="Reproduce published studies with mm_sim's own quoting functions.",
    )
    studies = p.add_subparsers(dest="study", metavar="STUDY")
    studies.required = True
    a = studies.add_parser(
        "as2008",
        help="Avellaneda & Stoikov (2008) simulation: inventory vs symmetric strategy",
        description=(
            "Brownian mid (s0=100, sigma=2, T=1, dt=0.005), Poisson fills A*exp(-k*delta) "
            "(A=140, k=1.5), gamma in {0.1, 0.01, 0.5}: mean and std of profit and final "
            "inventory for the inventory strategy and the symmetric one (same spread)."
        ),
    )
    a.add_argument("--paths", type=int, default=1000, help="simulated paths per gamma")
    a.add_argument("--seed", type=int, default=2008, help="random seed (results are exact)")
    a.add_argument(
        "-o", "--out", type=path_arg, metavar="PATH", help="also write the rows as JSON to PATH"
    )
    # --json prints the result as JSON, as every command's --json does; --json PATH is the
    # older spelling of --out PATH.
    a.add_argument(
        "--json", nargs="?", const=True, metavar="PATH",
        help=f"{JSON_HELP} (--json PATH: the older spelling of --out PATH)",
    )  # fmt: skip
    a.set_defaults(func=run)
    t = studies.add_parser(
        "tuner",
        help="out-of-sample uplift of both tuners over synthetic days and real captures",
        description=(
            "Soak every day with each tuner (seed, walk-forward) and its control arm, and report "
            "the distribution of out-of-sample uplift (tuned minus frozen net_bps from the "
            "second iteration on): mean, 95 % CI of the mean, share of runs where tuned beats "
            "frozen (docs/TUNER.md). The defaults take a few minutes on two cores. Profile, "
            "iterations and minutes come from the flags, else MM_PROFILE, MM_ITERATIONS and "
            "MM_ITERATION_MINUTES, as for a soak; the other run settings are the study's own "
            "(MM_SEED, MM_SPEED, MM_SHADOW and the like are not used)."
        ),
    )
    t.add_argument(
        "--seeds", type=int, default=10, help="synthetic days, seeds 1..N (MM_SEED is not used)"
    )
    t.add_argument(
        "--iterations",
        type=int,
        help=f"iterations per synthetic day (MM_ITERATIONS; default {STUDY_ITERATIONS})",
    )
    t.add_argument(
        "--iteration-minutes",
        type=float,
        help=f"minutes per synthetic iteration (MM_ITERATION_MINUTES; default "
        f"{STUDY_ITERATION_MINUTES:g})",
    )
    t.add_argument(
        "--real-iteration-minutes",
        type=float,
        default=1.0,
        help="minutes per iteration on the real captures (they are about 6-11 minutes long)",
    )
    t.add_argument(
        "--data",
        type=path_arg,
        default=DEFAULT_DATA,
        help="real captures (skipped if absent)",
    )
    t.add_argument("--profile", help="profile name or path (MM_PROFILE; default S1)")
    t.add_argument(
        "-o", "--out", type=path_arg, default=Path("validation-artifacts/tuner"),
        help="where the runs and the report go",
    )  # fmt: skip
    t.add_argument("--json", action="store_true", help=JSON_HELP)
    t.add_argument("--md", type=path_arg, help="the report (default OUT/TUNER_VALIDATION.md)")
    t.set_defaults(func=run_tuner)


def _fmt(v: Any) -> str:
    return f"{v:8.2f}" if isinstance(v, float) else f"{v!s:>8}"


def run(args: argparse.Namespace) -> int:
    from mm_sim.core.as2008 import PAPER_VALUES, UNVERIFIED, run_study

    if args.paths < 2:
        raise UserError(f"--paths = {args.paths}: need at least 2 paths for a standard deviation")
    if args.paths > MAX_PATHS:
        # 10 million paths take about 5 minutes and 320 MB; 1e11 was a MemoryError (exit 70).
        raise UserError(f"--paths = {args.paths}: at most {MAX_PATHS:,} paths per gamma")
    if not 0 <= args.seed <= MAX_AS2008_SEED:
        # Each gamma's generator is seeded with seed x 1000 + its index, a 64-bit number: a
        # larger seed failed in the compiled kernel (an internal error, exit 70).
        raise UserError(f"--seed = {args.seed}: expected 0 <= seed <= {MAX_AS2008_SEED}")
    out_path = args.out if args.out is not None or args.json in (None, True) else Path(args.json)
    as_json = args.json is True
    rows = run_study(paths=args.paths, seed=args.seed)
    keys = ("gamma", "strategy", "profit_mean", "profit_std", "q_mean", "q_std")
    result = {
        "rows": [{k: r[k] for k in keys} for r in rows],
        "paths": args.paths,
        "seed": args.seed,
        "paper": {f"{g}/{s}": v for (g, s), v in PAPER_VALUES.items()} or UNVERIFIED,
    }
    if out_path is not None:
        atomic_write_json(out_path, result)
    if as_json:
        print(json.dumps(result, indent=2))
        return 0
    print(f"Avellaneda & Stoikov (2008) study, {args.paths} paths per gamma, seed {args.seed}")
    head = ("gamma", "strategy", "spread", "profit", "std(pr)", "final q", "std(q)")
    print(f"{head[0]:>6} {head[1]:>10} " + " ".join(f"{h:>8}" for h in head[2:]) + "   paper")
    for r in rows:
        paper = PAPER_VALUES.get((r["gamma"], r["strategy"]))
        ref = (
            " ".join(_fmt(paper[k]) for k in ("profit_mean", "profit_std", "q_mean", "q_std"))
            if paper
            else UNVERIFIED
        )
        vals = (r["spread_mean"], r["profit_mean"], r["profit_std"], r["q_mean"], r["q_std"])
        print(
            f"{r['gamma']:>6} {r['strategy']:>10} " + " ".join(_fmt(v) for v in vals) + f"   {ref}"
        )
    if out_path is not None:
        print(f"wrote {out_path}")
    return 0


def run_tuner(args: argparse.Namespace) -> int:
    import datetime as dt
    import shlex
    import sys

    from mm_sim.config import check_env_names, load_overrides, load_profile, load_run_settings
    from mm_sim.events import atomic_write_bytes
    from mm_sim.tuning.validation import (
        Day,
        check_days,
        markdown,
        real_days,
        run_study,
        summarize,
    )

    if args.seeds < 1:
        raise UserError(f"--seeds = {args.seeds}: too small")
    check_env_names()
    # The soak's settings, read as the soak reads them (flag, else MM_<NAME>, with its checks);
    # a value neither gives is the study's default, not the soak's.
    taken = ("iterations", "iteration_minutes", "profile")
    settings = load_run_settings({k: getattr(args, k) for k in taken})
    given = settings.model_fields_set
    iterations = settings.iterations if "iterations" in given else STUDY_ITERATIONS
    minutes = (
        settings.iteration_minutes if "iteration_minutes" in given else STUDY_ITERATION_MINUTES
    )
    # what the environment gave (no flag): the report's command line must say it to be rerun
    from_env = {
        f"MM_{k.upper()}": getattr(settings, k)
        for k in taken
        if k in given and getattr(args, k) is None
    }
    if iterations < 2:
        origin = "--iterations" if args.iterations is not None else "environment MM_ITERATIONS"
        raise UserError(f"{origin} = {iterations}: too small (the study needs 2 iterations)")
    if not args.real_iteration_minutes > 0:
        raise UserError(
            f"--real-iteration-minutes = {args.real_iteration_minutes}: expected minutes > 0"
        )
    if args.md is not None:
        _check_md(args.md)
    from mm_sim import logs

    # Each soak's info lines (every decision of every run) would bury the study's own output.
    logs.configure(getattr(args, "log_json", None), "ERROR")
    profile = load_profile(settings.profile, {})
    overrides = load_overrides(None, {})
    out: Path = args.out
    days = [
        Day(f"synthetic@{s}", "synthetic", s, iterations, minutes) for s in range(1, args.seeds + 1)
    ]
    if args.data != DEFAULT_DATA and not args.data.is_dir():
        # The default may be absent (a fresh clone): skipped and said in the report. A folder
        # the user named is meant to be there.
        raise UserError(f"--data {args.data}: no such folder of captures")
    real, skipped = real_days(args.data, out, args.real_iteration_minutes)
    days += real
    for note in check_days(days, profile, settings.profile):
        print(note, file=sys.stderr)
    talk = sys.stderr if args.json else sys.stdout  # --json: stdout holds the JSON only
    print(f"{len(days)} days x 2 tuners, each with its control arm; runs in {out}/runs", file=talk)

    def progress(r: Any) -> None:
        up = "n/a" if r.uplift_bps is None else f"{r.uplift_bps:+.3f}"
        line = f"  {r.day:<16} {r.tuner:<12} uplift {up:>7} bps  ({r.wall_s:.1f} s)"
        print(line, file=talk, flush=True)

    results = run_study(days, out, profile, overrides, progress)
    summary = summarize(results)
    setup = {
        "command": " ".join(
            [f"{k}={shlex.quote(str(v))}" for k, v in from_env.items()]
            + [f"python -m mm_sim validate tuner {shlex.join(_after(sys.argv, 'tuner'))}"]
        ).rstrip(),
        "written": dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "synthetic": f"{args.seeds} synthetic days (seeds 1-{args.seeds}), "
        f"{iterations} x {minutes:g} min each",
        "real": ", ".join(f"{d.label} ({d.iterations} x {d.iteration_minutes:g} min)" for d in real)
        or "none",
        "skipped": skipped,
    }
    md = markdown(results, summary, setup)
    path = args.md or out / "TUNER_VALIDATION.md"
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(path, md.encode())
    result = {"setup": setup, "summary": summary, "runs": [vars(r) for r in results]}
    atomic_write_json(path.with_suffix(".json"), result)
    if args.json:
        print(json.dumps(result, indent=2))
        return 0
    print()
    for tuner, s in summary.items():
        print(
            f"{tuner:<12} runs {s['runs']:>2}  mean uplift {s['mean_uplift_bps']:+.3f} bps  "
            f"95% CI [{s['ci_lo']:+.3f}, {s['ci_hi']:+.3f}]  tuned beats frozen "
            f"{s['win_share']:.0%}"
        )
    print(f"wrote {path} and {path.with_suffix('.json')}")
    return 0


def _check_md(md: Path) -> None:
    """Whether --md can be written, before the study's minutes of work (it was refused after)."""
    if md.is_dir():
        raise UserError(f"--md {md}: a directory; expected a file name, e.g. {md / 'TUNER.md'}")
    p = file_in_the_way(md.parent)
    if p is not None:
        raise UserError(f"--md {md}: {p} is a file, not a directory")


def _after(argv: list[str], word: str) -> list[str]:
    """The arguments after the first ``word`` (global options may come before the command,
    so its position in argv varies: a fixed slice repeated the command's name)."""
    rest = argv[1:]
    return rest[rest.index(word) + 1 :] if word in rest else rest
