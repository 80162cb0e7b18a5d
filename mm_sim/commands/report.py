"""``mm_sim report RUN_DIR``: rebuild every report from a run's recorded data.

Nothing is re-simulated: the records and metrics lines in RUN_DIR/soak are read back and the
same ``build_reports`` the soak runner calls writes RUN_DIR/reports and RUN_DIR/soak/fills.csv.
The gates come from the profile recorded in run.json, so the verdict is the run's own.
"""

from __future__ import annotations

import argparse
import json
from typing import TYPE_CHECKING

from mm_sim.commands import JSON_HELP, path_arg
from mm_sim.errors import UserError

if TYPE_CHECKING:
    from mm_sim.report.rundir import RunDir


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "report",
        help="rebuild the reports of a run directory from its recorded data",
        description=(
            "Rebuild EDGE_REPORT.json, KPI_GATE.json, soak_metrics.json, SOAK_RESULTS.md, the "
            "PNG charts and soak/fills.csv from RUN_DIR's committed records (see docs/REPORTS.md)."
        ),
    )
    p.add_argument("run_dir", type=path_arg, metavar="RUN_DIR")
    p.add_argument("--no-charts", action="store_true", help="skip the PNG charts")
    p.add_argument("--json", action="store_true", help=JSON_HELP)
    p.add_argument(
        "--check",
        action="store_true",
        help="exit with status 1 when the verdict is FAIL (for scripts and CI)",
    )
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from mm_sim.report.rundir import RunDir

    if not args.run_dir.is_dir():
        raise UserError(f"{args.run_dir}: run directory not found")
    rd = RunDir(args.run_dir)
    with rd.not_running():
        return _report(args, rd)


def _report(args: argparse.Namespace, rd: RunDir) -> int:
    from mm_sim.report.render import build_reports
    from mm_sim.report.runconfig import profile_from_config
    from mm_sim.report.rundir import RunDir

    profile = profile_from_config(rd.load_config(), str(rd.run_json))
    # Check before replacing anything: a damaged metrics file must not overwrite good reports.
    if not rd.committed_lines():
        raise UserError(
            f"{rd.metrics_jsonl}: no committed iteration to report on "
            f"(the reports in {rd.reports} were left as they are)"
        )
    summary = build_reports(rd, profile, charts=not args.no_charts)
    control = args.run_dir / "control"
    if (control / "soak" / "run.json").exists():
        from mm_sim.report.control import write_comparison

        summary["control"] = write_comparison(rd, RunDir(control))
    if args.json:
        print(json.dumps(summary, indent=2))
    else:
        net = summary["net_bps"]
        net_s = "n/a" if net is None else f"{net:.3f}"
        print(
            f"verdict {summary['verdict']} (band {summary['band']}): net_bps {net_s} over "
            f"{summary['fills']:,} fills in {summary['iterations']} iterations"
        )
        print(f"next step: {summary['next_step']}")
        for path in summary["reports"]:
            print(f"  wrote {path}")
    return 1 if args.check and summary["verdict"] == "FAIL" else 0
