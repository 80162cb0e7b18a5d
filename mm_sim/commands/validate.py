"""``mm_sim validate as2008``: reproduce a published result with this core's own functions."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from mm_sim.commands import JSON_HELP
from mm_sim.errors import UserError
from mm_sim.events import atomic_write_json


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
        "-o", "--out", type=Path, metavar="PATH", help="also write the rows as JSON to PATH"
    )
    # --json prints the result as JSON, as every command's --json does; --json PATH is the
    # older spelling of --out PATH.
    a.add_argument(
        "--json", nargs="?", const=True, metavar="PATH",
        help=f"{JSON_HELP} (--json PATH: the older spelling of --out PATH)",
    )  # fmt: skip
    a.set_defaults(func=run)


def _fmt(v: Any) -> str:
    return f"{v:8.2f}" if isinstance(v, float) else f"{v!s:>8}"


def run(args: argparse.Namespace) -> int:
    from mm_sim.core.as2008 import PAPER_VALUES, UNVERIFIED, run_study

    if args.paths < 2:
        raise UserError(f"--paths = {args.paths}: need at least 2 paths for a standard deviation")
    if args.seed < 0:
        raise UserError(f"--seed = {args.seed}: expected a non-negative integer")
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
