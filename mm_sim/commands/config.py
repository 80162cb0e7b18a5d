"""``mm_sim config show|docs``: the effective configuration, and its generated reference."""

from __future__ import annotations

import argparse
import json

from mm_sim.config import load_overrides, load_profile, load_run_settings, parse_set_flags


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("config", help="show the effective configuration or print its reference")
    action = p.add_subparsers(dest="config_action", metavar="ACTION")
    action.required = True
    show = action.add_parser("show", help="print the effective profile and overrides as JSON")
    show.add_argument("--profile", help="profile name or path (MM_PROFILE; default S1)")
    show.add_argument(
        "--overrides",
        help="overrides file (MM_OVERRIDES; default overrides/runtime_overrides.json)",
    )
    show.add_argument("--set", action="append", metavar="KEY=VALUE")
    show.set_defaults(func=_show)
    docs = action.add_parser("docs", help="print docs/CONFIG.md generated from the models")
    docs.set_defaults(func=_docs)


def _show(args: argparse.Namespace) -> int:
    prof_cli, ovr_cli = parse_set_flags(args.set)
    # The files are chosen as a soak chooses them: the flag, else MM_PROFILE / MM_OVERRIDES,
    # else the default. Read from the flags alone, `config show` printed S1 and the shipped
    # overrides while MM_PROFILE named another profile (or none that exists).
    files = load_run_settings({"profile": args.profile, "overrides": args.overrides})
    profile = load_profile(files.profile, prof_cli)
    overrides = load_overrides(files.overrides, ovr_cli)
    print(
        json.dumps(
            {"profile": profile.model_dump(mode="json"), "overrides": overrides.as_dict()},
            indent=2,
        )
    )
    return 0


def _docs(args: argparse.Namespace) -> int:
    from mm_sim.configdoc import render

    print(render(), end="")
    return 0
