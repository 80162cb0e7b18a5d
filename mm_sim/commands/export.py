"""``mm_sim export RUN_DIR --format parquet|csv [--out DIR]``: a run's data as files a user owns.

The same tables ``mm_sim.read_run`` returns (fills, marks, actions, blocks, iterations,
decisions), one file each, plus ``export.json`` with the schema version and column types.
"""

from __future__ import annotations

import argparse
import json

from mm_sim.commands import JSON_HELP, path_arg
from mm_sim.errors import UserError


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "export",
        help="write a run's fills, marks, actions, blocks and metrics as Parquet or CSV",
        description=(
            "Read RUN_DIR's committed records and metrics lines (as mm_sim.read_run does) and "
            "write one file per table plus export.json (schema version, rows, column types); "
            "see docs/REPORTS.md, 'Reading a run in Python'."
        ),
    )
    p.add_argument("run_dir", type=path_arg, metavar="RUN_DIR")
    p.add_argument(
        "--format",
        choices=("parquet", "csv"),
        default="parquet",
        help="file format (default: parquet)",
    )
    p.add_argument(
        "-o", "--out", type=path_arg, metavar="DIR",
        help="where the files go (default: RUN_DIR/export)",
    )  # fmt: skip
    p.add_argument("--json", action="store_true", help=JSON_HELP)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from mm_sim.report.export import check_out, export_run
    from mm_sim.report.frames import read_run
    from mm_sim.report.rundir import RunDir

    if not args.run_dir.is_dir():
        raise UserError(f"{args.run_dir}: run directory not found")
    out = args.out if args.out is not None else args.run_dir / "export"
    check_out(out)  # before the run is read: a refusal costs nothing
    with RunDir(args.run_dir).not_running():
        frames = read_run(args.run_dir)
    if frames.iterations.empty:
        # As report refuses it: tables of 0 rows would read as a run that did nothing.
        raise UserError(
            f"{RunDir(args.run_dir).metrics_jsonl}: no committed iteration to export "
            "(missing, empty or cut before its first line)"
        )
    manifest = export_run(frames, out, args.format)
    result = {"out": str(out), **manifest}
    if args.json:
        print(json.dumps(result, indent=2))
        return 0
    rows = ", ".join(f"{name} {t['rows']:,}" for name, t in manifest["tables"].items())
    print(f"exported {args.run_dir} (schema_version {manifest['schema_version']}) to {out}: {rows}")
    return 0
