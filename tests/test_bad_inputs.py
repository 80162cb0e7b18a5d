"""Bad inputs as a careless or unlucky user makes them, through the real CLI.

Each case asserts the standard (issue 15): a non-zero exit, exactly one message line naming
the culprit, no traceback anywhere in the output, and every file already written byte-identical
afterwards. Cases fail fast (before any simulation), so the table stays cheap: they run
``mm_sim.cli.main`` in this process (``cli``), a subprocess's start being most of a case's
time, and one case of each command runs in a subprocess too, which must say the same. The one
real run they damage copies is made once per module.
"""

from __future__ import annotations

import json
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest
from refusal_harness import (
    REPO,
    TINY,
    assert_refused,
    cli,
    copy_feed,
    copy_run,
    mm,
    rewrite_feed,
    snapshot,
)


@pytest.fixture(scope="module")
def feed(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from mm_sim.events import write_feed
    from mm_sim.feeds.synthetic import SyntheticParams, generate

    events, inst = generate(SyntheticParams(), seed=3, duration_s=20)
    return write_feed(tmp_path_factory.mktemp("feed") / "good.npy", events, inst)


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A real, finished two-iteration run (synthetic market): the source of damaged copies."""
    out = tmp_path_factory.mktemp("run") / "art"
    r = cli("soak", "--iterations", "2", "--iteration-minutes", "0.2", "--artifacts", str(out))
    assert r.returncode == 0, r.stderr[-3000:]
    return out


# -- the table ------------------------------------------------------------------------------


@dataclass
class Case:
    """``make(tmp, feed, run)`` builds the bad input and returns (argv, culprit, kept paths)."""

    name: str
    make: Callable[[Path, Path, Path], tuple[list[str], str, list[Path]]]
    code: int = 2
    env: dict[str, str] = field(default_factory=dict)


def _sidecar_dir(t: Path, f: Path, r: Path):
    p = copy_feed(f, t / "f")
    side = p.with_suffix(".json")
    side.unlink()
    side.mkdir()
    return ["inspect", str(p)], str(side), [p]


def _sidecar_latin1(t: Path, f: Path, r: Path):
    p = copy_feed(f, t / "f")
    p.with_suffix(".json").write_bytes(b'{"instrument": "\xe9"}')
    return ["inspect", str(p)], str(p.with_suffix(".json")), [p.parent]


def _empty_npy(t: Path, f: Path, r: Path):
    p = copy_feed(f, t / "f")
    p.write_bytes(b"")
    return ["inspect", str(p)], str(p), [p.parent]


def _stale_sidecar(t: Path, f: Path, r: Path):
    p = copy_feed(f, t / "f")
    arr = np.load(p)
    arr["price"][5] += 1.0  # same size, other data: the sidecar's hash no longer matches
    np.save(p, arr)
    return ["inspect", str(p)], "data.xxh3_128", [p.parent]


def _count_mismatch(t: Path, f: Path, r: Path):
    p = copy_feed(f, t / "f")
    meta = json.loads(p.with_suffix(".json").read_text())
    meta["count"] += 7
    p.with_suffix(".json").write_text(json.dumps(meta))
    return ["soak", "--feed", str(p), *TINY, "--artifacts", str(t / "a")], "'count'", [p.parent]


def _nan_prices(t: Path, f: Path, r: Path):
    def change(e: np.ndarray) -> np.ndarray:
        e["price"][100:103] = np.nan
        return e

    p = rewrite_feed(f, t, change)
    return ["soak", "--feed", str(p), *TINY, "--artifacts", str(t / "a")], "NaN", [p]


def _trades_only(t: Path, f: Path, r: Path):
    p = rewrite_feed(f, t, lambda e: e[e["kind"] == 4])
    return ["soak", "--feed", str(p), *TINY, "--artifacts", str(t / "a")], "trades-only", [p]


def _unknown_kind(t: Path, f: Path, r: Path):
    def change(e: np.ndarray) -> np.ndarray:
        e["kind"][50] = 9
        e["side"][60] = 3
        return e

    p = rewrite_feed(f, t, change)
    return ["soak", "--feed", str(p), *TINY, "--artifacts", str(t / "a")], "unknown kind", [p]


def _zero_ts(t: Path, f: Path, r: Path):
    def change(e: np.ndarray) -> np.ndarray:
        e["exch_ts"] = 0
        return e

    p = rewrite_feed(f, t, change)
    return ["soak", "--feed", str(p), *TINY, "--artifacts", str(t / "a")], "timestamp <= 0", [p]


def _ms_timestamps(t: Path, f: Path, r: Path):
    # Milliseconds taken for nanoseconds: 20 s of events in 20 µs; a soak gave a verdict.
    def change(e: np.ndarray) -> np.ndarray:
        e["exch_ts"] //= 1_000_000
        e["local_ts"] //= 1_000_000
        return e

    p = rewrite_feed(f, t, change)
    assert len(np.load(p)) >= 10_000  # the rule looks at feeds of 10,000 events or more
    argv = ["soak", "--feed", str(p), *TINY, "--artifacts", str(t / "a")]
    return argv, "timestamps must be nanoseconds", [p]


def _one_late(local: np.ndarray) -> np.ndarray:
    local[len(local) // 2] += 30 * 86_400_000_000_000
    return local


def _local_times(change_local: Callable[[np.ndarray], np.ndarray], culprit: str):
    """Receive times a unit or clock error made: a soak gave a verdict on them."""

    def make(t: Path, f: Path, r: Path):
        def change(e: np.ndarray) -> np.ndarray:
            e["local_ts"] = change_local(e["local_ts"])
            return e

        p = rewrite_feed(f, t, change)
        return ["soak", "--feed", str(p), *TINY, "--artifacts", str(t / "a")], culprit, [p]

    return make


def _profile_latin1(t: Path, f: Path, r: Path):
    p = t / "prof.json"
    p.write_bytes(b'{"name": "\xff"}')
    return ["soak", "--profile", str(p), *TINY, "--artifacts", str(t / "a")], str(p), [p]


def _unquotable_profile(t: Path, f: Path, r: Path):
    """A profile whose every order the notional limit refuses: validate tuner ran its whole
    study on it (tuned and frozen tied at 0 fills)."""
    data = json.loads((REPO / "profiles" / "market_maker_S1.json").read_text())
    data["inventory"]["max_notional"] = 1.0
    p = t / "prof.json"
    p.write_text(json.dumps(data))
    argv = ["validate", "tuner", "--profile", str(p), "--iterations", "2",
            "--iteration-minutes", "0.1", "--out", str(t / "o")]  # fmt: skip
    return argv, "day synthetic@1: profile", [p]


def _overrides_dir(t: Path, f: Path, r: Path):
    p = t / "ovr.json"
    p.mkdir()
    return (
        ["soak", "--overrides", str(p), *TINY, "--artifacts", str(t / "a")],
        (f"{p}: is a directory, expected an overrides file"),
        [],
    )


def _definition_latin1(t: Path, f: Path, r: Path):
    p = t / "def.json"
    p.write_bytes(b'{"kind": "synthetic", "description": "\xe9t\xe9"}')
    return ["soak", "--feed", str(p), *TINY, "--artifacts", str(t / "a")], str(p), [p]


def _grid_latin1(t: Path, f: Path, r: Path):
    p = t / "grid.toml"
    p.write_bytes(b"[overrides]\ntail_age_ms = [\xff]\n")
    return ["sweep", "--grid", str(p), "--out", str(t / "s")], str(p), [p]


def _ws_bad_port(t: Path, f: Path, r: Path):
    return ["soak", "--feed", "ws://127.0.0.1:abc", "--artifacts", str(t / "a")], "ws://", []


def _run_json_latin1(t: Path, f: Path, r: Path):
    d = copy_run(r, t)
    (d / "soak" / "run.json").write_bytes(b"\xff\xfe{}")
    return ["report", str(d), "--no-charts"], "run.json", [d]


def _metrics_dir(t: Path, f: Path, r: Path):
    d = copy_run(r, t)
    m = d / "soak" / "metrics.jsonl"
    m.unlink()
    m.mkdir()
    return ["report", str(d), "--no-charts"], "metrics.jsonl", [d]


def _metrics_emptied(t: Path, f: Path, r: Path):
    d = copy_run(r, t)
    (d / "soak" / "metrics.jsonl").write_bytes(b"")
    return ["report", str(d), "--no-charts"], "no committed iteration", [d]


def _records_garbled(name: str, command: str):
    """A records file overwritten with random bytes of the same size: every size check passes,
    and a report built from it printed figures of 270 digits with exit 0."""

    def make(t: Path, f: Path, r: Path):
        d = copy_run(r, t)
        rec = d / "soak" / "records" / f"{name}.bin"
        rec.write_bytes(np.random.default_rng(7).bytes(rec.stat().st_size))
        argv = ["report", str(d), "--no-charts"] if command == "report" else ["export", str(d)]
        kept = [d / "reports"] if command == "report" else [d]
        return [*argv, "-o", str(t / "x")] if command == "export" else argv, str(rec), kept

    return make


def _export_metrics_emptied(t: Path, f: Path, r: Path):
    d = copy_run(r, t)
    (d / "soak" / "metrics.jsonl").write_bytes(b"")
    argv = ["export", str(d), "-o", str(t / "x")]
    return argv, "no committed iteration to export", [d]


def _run_profile_damaged(t: Path, f: Path, r: Path):
    d = copy_run(r, t)
    run_json = d / "soak" / "run.json"
    cfg = json.loads(run_json.read_text())
    cfg["profile"]["quoting"]["gamma"] = "x"
    run_json.write_text(json.dumps(cfg))
    # one line naming the field, not pydantic's multi-line dump with a link
    return ["report", str(d), "--no-charts"], "field 'profile.quoting.gamma' = 'x'", [d]


def _report_over_a_file(t: Path, r: Path):
    d = copy_run(r, t)
    shutil.rmtree(d / "reports")
    (d / "reports").write_text("not a folder")
    return ["report", str(d), "--no-charts"], "is a file", [d]


def _metrics_duplicated(t: Path, f: Path, r: Path):
    d = copy_run(r, t)
    m = d / "soak" / "metrics.jsonl"
    m.write_bytes(m.read_bytes() * 2)
    return ["report", str(d), "--no-charts"], "metrics.jsonl:3", [d]


def _metrics_corrupt_line_resume(t: Path, f: Path, r: Path):
    d = copy_run(r, t)
    m = d / "soak" / "metrics.jsonl"
    lines = m.read_bytes().splitlines(keepends=True)
    m.write_bytes(lines[0] + b'{"iteration": 1, "edge": \n')
    argv = ["soak", "--iterations", "2", "--iteration-minutes", "0.2", "--resume"]
    return [*argv, "--artifacts", str(d)], "metrics.jsonl:2", [d]


def _checkpoint_corrupt(t: Path, f: Path, r: Path):
    d = copy_run(r, t)
    m = d / "soak" / "metrics.jsonl"
    m.write_bytes(m.read_bytes().splitlines(keepends=True)[0])
    ck = d / "soak" / "checkpoints" / "iteration-00000.npz"
    ck.write_bytes(ck.read_bytes()[:100])
    argv = ["soak", "--iterations", "2", "--iteration-minutes", "0.2", "--resume"]
    return [*argv, "--artifacts", str(d)], "iteration-00000.npz", [d]


def _resume_other_minutes(t: Path, f: Path, r: Path):
    d = copy_run(r, t)
    argv = ["soak", "--iterations", "3", "--iteration-minutes", "0.3", "--resume"]
    return [*argv, "--artifacts", str(d)], "--iteration-minutes", [d]


def _resume_no_tune(t: Path, f: Path, r: Path):
    d = copy_run(r, t)
    argv = ["soak", "--iterations", "3", "--iteration-minutes", "0.2", "--resume", "--no-tune"]
    return [*argv, "--artifacts", str(d)], "--no-tune", [d]


def _resume_control(t: Path, f: Path, r: Path):
    d = copy_run(r, t)
    argv = ["soak", "--iterations", "3", "--iteration-minutes", "0.2", "--resume", "--control"]
    return [*argv, "--artifacts", str(d)], "--control", [d]


def _metrics_gone_resume(how: str):
    """metrics.jsonl emptied or deleted beside the checkpoints of later iterations: the resume
    started over from iteration 0 (exit 0), cutting every record away."""

    def make(t: Path, f: Path, r: Path):
        d = copy_run(r, t)
        m = d / "soak" / "metrics.jsonl"
        m.write_bytes(b"") if how == "emptied" else m.unlink()
        argv = ["soak", "--iterations", "2", "--iteration-minutes", "0.2", "--resume"]
        return [*argv, "--artifacts", str(d)], "holds the checkpoint of iteration 1", [d]

    return make


def _resume_fewer_iterations(t: Path, f: Path, r: Path):
    # accepted, printing "resuming after iteration 1 (2/1 done; ...)"
    d = copy_run(r, t)
    argv = ["soak", "--iterations", "1", "--iteration-minutes", "0.2", "--resume"]
    return [*argv, "--artifacts", str(d)], "already committed 2 iterations", [d]


def _artifacts_under_a_file(t: Path, f: Path, r: Path):
    # an OS fault (exit 1) where --out on the file itself was a UserError (exit 2)
    (t / "afile").write_text("mine")
    argv = ["soak", *TINY, "--artifacts", str(t / "afile" / "sub")]
    return argv, f"{t / 'afile'} is a file, not a directory", [t / "afile"]


def _artifacts_user_folder(t: Path, f: Path, r: Path):
    d = t / "mine"
    d.mkdir()
    (d / "thesis.tex").write_text("years of work")
    return ["soak", *TINY, "--artifacts", str(d)], "not an mm_sim run directory", [d]


def _artifacts_too_long(t: Path, f: Path, r: Path):
    return ["soak", *TINY, "--artifacts", str(t / ("x" * 300))], "File name too long", []


def _convert_over_feed(t: Path, f: Path, r: Path):
    p = copy_feed(f, t / "f")
    src = t / "in.txt"
    src.write_text("")
    argv = ["convert", "--from", "binance", str(src), "-o", str(p)]
    return argv, "--force", [p.parent]


def _convert_over_non_feed(t: Path, f: Path, r: Path):
    out = t / "OUT.npy"
    out.write_bytes(b"not a feed, someone's file")
    src = t / "in.txt"
    src.write_text("")
    argv = ["convert", "--from", "binance", str(src), "-o", str(out), "--force"]
    return argv, "not an mm_sim feed", [out]


def _sweep_same_stored_feed(t: Path, f: Path, r: Path):
    p = copy_feed(f, t / "f")
    argv = ["sweep", "--grid", str(REPO / "sweeps" / "example.toml"), "--train", f"{p}@1",
            "--test", f"{p}@2", "--iterations", "1"]  # fmt: skip
    return [*argv, "--iteration-minutes", "0.1", "--out", str(t / "s")], "replays the same", [p]


def _edit_sidecar(t: Path, f: Path, change: Callable[[dict], None]) -> Path:
    p = copy_feed(f, t / "f")
    meta = json.loads(p.with_suffix(".json").read_text())
    change(meta)
    p.with_suffix(".json").write_text(json.dumps(meta))
    return p


def _sidecar_clock_of_years(t: Path, f: Path, r: Path):
    # A replay shifted by 10**30 ns waited forever on receive times that never came.
    p = _edit_sidecar(t, f, lambda m: m.update(clock={**m["clock"], "shift_ns": 10**30}))
    return ["soak", "--feed", str(p), *TINY, "--artifacts", str(t / "a")], "clock.shift_ns", [p]


def _sidecar_from_the_future(t: Path, f: Path, r: Path):
    p = _edit_sidecar(t, f, lambda m: m.update(format_version=99))
    return ["inspect", str(p)], "'format_version' = 99: written by a newer mm_sim", [p]


def _sidecar_tick_null(t: Path, f: Path, r: Path):
    p = _edit_sidecar(t, f, lambda m: m["instrument"].update(tick_size=None))
    return ["inspect", str(p)], "tick_size must be a number", [p]


def _sidecar_count_text(t: Path, f: Path, r: Path):
    p = _edit_sidecar(t, f, lambda m: m.update(count="many"))
    return ["inspect", str(p)], "field 'count' = 'many'", [p]


def _sweep(t: Path, feeds: list[str], *extra: str) -> list[str]:
    grid = str(REPO / "sweeps" / "example.toml")
    run = ["--iterations", "1", "--iteration-minutes", "0.1", "--out", str(t / "s")]
    return ["sweep", "--grid", grid, "--train", *feeds, *run, *extra]


def _sweep_into_a_users_folder(t: Path, f: Path, r: Path):
    mine = t / "mine"
    mine.mkdir()
    (mine / "notes.txt").write_text("someone's file")
    argv = [*_sweep(t, ["synthetic-short"]), "--out", str(mine)]  # the last --out wins
    return argv, "a directory with other files (notes.txt) and no sweep in it", [mine]


def _sweep_empty_feed(t: Path, f: Path, r: Path):
    p = rewrite_feed(f, t, lambda ev: ev[:0])
    return _sweep(t, [str(p)]), "has no events", [p.parent]


def _record_over_a_feed(t: Path, f: Path, r: Path):
    # Checked before connecting (nothing listens on the port): a recording cannot be had again.
    p = copy_feed(f, t / "f")
    return ["record", "--feed", "ws://127.0.0.1:9", "--minutes", "1", "-o", str(p)], "--force", [p]


def _synthetic_of_years(t: Path, f: Path, r: Path):
    d = t / "long.json"
    d.write_text(json.dumps({"kind": "synthetic", "duration_s": 1e12}))
    return ["inspect", str(d)], "s of synthetic market", []


def _convert(out: str, *flags: str) -> list[str]:
    """A Binance conversion of an existing file (refused on its flags before it is read)."""
    return ["convert", "--from", "binance", str(REPO / "README.md"), "-o", out, *flags]


def _plain(argv: list[str], culprit: str):
    return lambda t, f, r: ([a.replace("{t}", str(t)) for a in argv], culprit, [])


CASES = [
    Case("sidecar is a directory", _sidecar_dir),
    Case("sidecar not UTF-8", _sidecar_latin1),
    Case("0-byte .npy", _empty_npy),
    Case("sidecar of other data", _stale_sidecar),
    Case("sidecar count mismatch", _count_mismatch),
    Case("NaN prices", _nan_prices),
    Case("trades-only feed", _trades_only),
    Case("unknown kind and side", _unknown_kind),
    Case("all-zero timestamps", _zero_ts),
    Case("timestamps in milliseconds", _ms_timestamps),
    Case(
        "receive times all zero", _local_times(lambda x: x * 0, "receive timestamp (local_ts) <= 0")
    ),
    Case(
        "one receive time a month late (the replay's clock would jump there)",
        _local_times(_one_late, "1 events received more than a day after"),
    ),
    Case(
        "receive times 30 days late",
        _local_times(lambda x: x + 30 * 86_400_000_000_000, "more than a day after their exchange"),
    ),
    Case("profile not UTF-8", _profile_latin1),
    Case("overrides is a directory", _overrides_dir),
    Case(
        "an empty profile name (read as '.', a directory)",
        _plain(["soak", "--profile", "", *TINY, "--artifacts", "{t}/a"], "unknown profile ''"),
    ),
    Case("feed definition not UTF-8", _definition_latin1),
    Case("grid not UTF-8", _grid_latin1),
    Case("ws:// port not a number", _ws_bad_port),
    Case(
        "ws:// with a symbol path (dropped: the server's symbol was recorded)",
        _plain(
            ["record", "--feed", "ws://127.0.0.1:9/ETHUSDT", "--minutes", "1", "-o", "{t}/x"],
            "alone (it serves one symbol",
        ),
    ),
    Case(
        "validate tuner --md naming a directory (refused after the whole study)",
        _plain(["validate", "tuner", "--md", "{t}", "--out", "{t}/o"], "--md"),
    ),
    Case("validate tuner with a profile that could never quote", _unquotable_profile),
    Case("run.json not UTF-8", _run_json_latin1),
    Case("metrics.jsonl is a directory", _metrics_dir),
    Case("report on an emptied metrics.jsonl", _metrics_emptied),
    Case("report on a duplicated metrics.jsonl", _metrics_duplicated),
    Case("report on a run.json with a damaged profile", _run_profile_damaged),
    Case("export of an emptied metrics.jsonl", _export_metrics_emptied),
    Case("report on garbled fill records", _records_garbled("fills", "report")),
    Case("report on garbled mark records", _records_garbled("marks", "report")),
    Case("export of garbled action records", _records_garbled("actions", "export")),
    Case("corrupt last metrics line on resume", _metrics_corrupt_line_resume),
    Case("corrupt checkpoint on resume", _checkpoint_corrupt),
    Case("resume with another --iteration-minutes", _resume_other_minutes),
    Case("resume with --no-tune", _resume_no_tune),
    Case("resume with --control", _resume_control),
    Case("resume on an emptied metrics.jsonl", _metrics_gone_resume("emptied")),
    Case("resume on a deleted metrics.jsonl", _metrics_gone_resume("deleted")),
    Case("resume with fewer --iterations than committed", _resume_fewer_iterations),
    Case("--artifacts under a file", _artifacts_under_a_file),
    Case("--artifacts on a user's folder", _artifacts_user_folder),
    Case("--artifacts path too long", _artifacts_too_long, code=1),
    Case("convert over a feed without --force", _convert_over_feed),
    Case("convert --force over a non-feed", _convert_over_non_feed),
    Case("sweep X@1 vs X@2 on one stored feed", _sweep_same_stored_feed),
    Case("sidecar clock shift of years", _sidecar_clock_of_years),
    Case(
        "a feed's sidecar passed as the feed",
        lambda t, f, r: (
            (p := copy_feed(f, t / "f"), ["soak", "--feed", str(p.with_suffix(".json")), *TINY])[1],
            "this looks like the sidecar of",
            [t / "f"],
        ),
    ),
    Case("sidecar from a newer mm_sim", _sidecar_from_the_future),
    Case("sidecar tick_size null", _sidecar_tick_null),
    Case("sidecar count not a number", _sidecar_count_text),
    Case(
        "a --set that breaks a section's rule is named, not the profile file",
        _plain(
            ["soak", "--set", "profile.gates.bands.success=1", "--artifacts", "{t}/a"],
            "command line --set profile.gates.bands.success",
        ),
    ),
    Case(
        "a section from the environment is named, not the profile file",
        _plain(["soak", "--artifacts", "{t}/a"], "environment MM_PROFILE__QUOTING"),
        env={"MM_PROFILE__QUOTING": '{"gamma": "x"}'},
    ),
    Case(
        "validate --out a folder (the file is named, not its temp file)",
        _plain(["validate", "as2008", "--paths", "2", "--out", "{t}"], "is a directory"),
    ),
    Case(
        "a report over a file named reports",
        lambda t, f, r: _report_over_a_file(t, r),
    ),
    Case(
        "soak --no-tune with --control",
        _plain(["soak", "--no-tune", "--control", "--artifacts", "{t}/a"], "--control"),
    ),
    Case(
        "convert --strict --allow-bad-lines",
        _plain(_convert("{t}/o.npy", "--strict", "--allow-bad-lines"), "give one"),
    ),
    Case(
        "convert --date without --from lobster",
        _plain(_convert("{t}/o.npy", "--date", "2024-01-01"), "only for --from lobster"),
    ),
    Case(
        "validate tuner --data on a missing folder",
        _plain(["validate", "tuner", "--data", "{t}/nowhere"], "no such folder of captures"),
    ),
    Case(
        "config show with a --set of no such field",
        _plain(["config", "show", "--set", "profile.nothere=1"], "--set profile.nothere"),
    ),
    Case(
        "a profile given as --overrides",
        _plain(
            ["soak", "--overrides", str(REPO / "profiles" / "market_maker_S1.json")],
            "looks like a profile file: pass it as --profile",
        ),
    ),
    Case(
        "overrides given as --profile",
        _plain(
            ["soak", "--profile", str(REPO / "overrides" / "runtime_overrides.json")],
            "looks like an overrides file: pass it as --overrides",
        ),
    ),
    Case(
        "sweep --feeds A --train B (aliases: A was silently dropped)",
        lambda t, f, r: (
            [*_sweep(t, ["synthetic-short"]), "--feeds", "synthetic-short@2"],
            "--train and --feeds are one option",
            [],
        ),
    ),
    Case("sweep on a feed without events", _sweep_empty_feed),
    Case("sweep --out a user's folder", _sweep_into_a_users_folder),
    Case(
        "sweep --dispersion-weight nan",
        lambda t, f, r: (
            _sweep(t, ["synthetic-short"], "--dispersion-weight", "nan"),
            "--dispersion-weight",
            [],
        ),
    ),
    Case(
        "sweep FEED@SEED past 2**64",
        lambda t, f, r: (_sweep(t, [f"synthetic-short@{2**70}"]), "below 2**64", []),
    ),
    Case(
        "sweep with a bad MM_ setting (checked before a cluster starts)",
        lambda t, f, r: (_sweep(t, ["synthetic-short"]), "MM_SWEEP_FEED_CACHE_MB", []),
        env={"MM_SWEEP_FEED_CACHE_MB": "abc"},
    ),
    Case("record -o over a feed without --force", _record_over_a_feed),
    Case(
        "record --minutes inf",
        _plain(["record", "--feed", "ws://127.0.0.1:9", "--minutes", "inf"], "--minutes"),
    ),
    Case(
        "fake-exchange --duration-s -5",
        _plain(["fake-exchange", "--duration-s", "-5"], "--duration-s"),
    ),
    Case("synthetic definition of years", _synthetic_of_years),
    Case(
        "a soak longer than a synthetic market fits in memory",
        _plain(
            ["soak", "--iterations", "100", "--iteration-minutes", "60", "--artifacts", "{t}/a"],
            "(48 h)",
        ),
    ),
    Case(
        "convert --workers 99999",
        _plain(_convert("{t}/o", "--workers", "99999"), "--workers 99999"),
    ),
    Case("sweep --grid on a folder", _plain(["sweep", "--grid", "{t}"], "is a directory")),
    Case(
        "fake-exchange --symbol with a quote (it goes into every frame as it is)",
        _plain(["fake-exchange", "--symbol", 'BTC"USDT'], "--symbol"),
    ),
    Case(
        "fake-exchange --clock-offset-ms nan",
        _plain(["fake-exchange", "--clock-offset-ms", "nan"], "--clock-offset-ms"),
    ),
    Case("--log-level BOGUS", _plain(["--log-level", "BOGUS", "soak"], "--log-level")),
    Case("fake-exchange --stall-s -5", _plain(["fake-exchange", "--stall-s", "-5"], "--stall-s")),
    Case("--seed 2**64", _plain(["soak", "--seed", str(2**64), "--artifacts", "{t}/a"], "--seed")),
    Case(
        "order_qty=Infinity",
        _plain(["soak", "--set", "profile.quoting.order_qty=Infinity"], "order_qty"),
    ),
    Case(
        "unknown MM_OVERRIDES__ variable",
        _plain(["soak", "--artifacts", "{t}/a"], "MM_OVERRIDES__TAIL_AGE"),
        env={"MM_OVERRIDES__TAIL_AGE": "900"},
    ),
    Case(
        "NaN gate from the environment",
        _plain(["soak", "--artifacts", "{t}/a"], "MM_PROFILE__GATES__HARD__NET_BPS_MIN"),
        env={"MM_PROFILE__GATES__HARD__NET_BPS_MIN": "NaN"},
    ),
    Case(
        "a typo of an MM_ setting (ran the default 6 x 30 minutes)",
        _plain(["soak", "--artifacts", "{t}/a"], "did you mean MM_ITERATIONS?"),
        env={"MM_ITERATION": "1"},
    ),
    Case(
        "run setting from the environment named as such",
        _plain(["soak", "--artifacts", "{t}/a"], "environment MM_ITERATIONS"),
        env={"MM_ITERATIONS": "0"},
    ),
]


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_bad_input_is_refused_cleanly(
    case: Case, tmp_path: Path, feed: Path, run_dir: Path
) -> None:
    argv, culprit, kept = case.make(tmp_path, feed, run_dir)
    before = snapshot(*kept)
    r = cli(*argv, env=case.env)
    assert_refused(r, culprit, case.code)
    assert snapshot(*kept) == before, "an earlier output changed"


# One case of each command, of argparse's own refusal and of an OS error, in a subprocess too:
# the interpreter's own exit status and output must be what the call in this process gave.
ALSO_IN_A_SUBPROCESS = {
    "soak": "resume with another --iteration-minutes",
    "inspect": "sidecar of other data",
    "report": "report on garbled fill records",
    "export": "export of an emptied metrics.jsonl",
    "sweep": "sweep with a bad MM_ setting (checked before a cluster starts)",
    "validate": "validate --out a folder (the file is named, not its temp file)",
    "config": "config show with a --set of no such field",
    "convert": "convert --force over a non-feed",
    "record": "record -o over a feed without --force",
    "fake-exchange": "fake-exchange --duration-s -5",
    "argparse": "--log-level BOGUS",
    "OS error": "--artifacts path too long",
}


@pytest.mark.parametrize("name", ALSO_IN_A_SUBPROCESS.values(), ids=ALSO_IN_A_SUBPROCESS.keys())
def test_a_subprocess_refuses_as_the_in_process_call_did(
    name: str, tmp_path: Path, feed: Path, run_dir: Path
) -> None:
    (case,) = (c for c in CASES if c.name == name)
    argv, culprit, kept = case.make(tmp_path, feed, run_dir)
    before = snapshot(*kept)
    r = mm(*argv, env=case.env)
    assert_refused(r, culprit, case.code)
    here = cli(*argv, env=case.env)
    assert (here.returncode, here.stdout, here.stderr) == (r.returncode, r.stdout, r.stderr)
    assert snapshot(*kept) == before, "an earlier output changed"


# -- the named data-safety cases --------------------------------------------------------------


def test_artifacts_dot_is_refused(tmp_path: Path) -> None:
    (tmp_path / "notes.txt").write_text("mine")
    before = snapshot(tmp_path)
    r = cli("soak", *TINY, "--out", ".", cwd=tmp_path)
    assert_refused(r, "--out .")
    assert snapshot(tmp_path) == before


def test_a_second_soak_never_moves_a_running_one(tmp_path: Path) -> None:
    """Two soaks on one --artifacts: the second is refused while the first holds the lock,
    and the first goes on writing its own directory. Both are processes: the lock is held
    between processes, and the first is stopped by a signal."""
    out = tmp_path / "art"
    first = subprocess.Popen(
        [sys.executable, "-m", "mm_sim", "soak", "--iterations", "2", "--iteration-minutes",
         "0.5", "--speed", "2", "--artifacts", str(out)],
        cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 300  # a hang guard, not a timing assertion
        while not (out / "soak" / "run.json").exists():
            assert first.poll() is None, first.communicate()[1][-3000:]
            assert time.monotonic() < deadline
            time.sleep(0.1)
        r = mm("soak", *TINY, "--artifacts", str(out))
        assert_refused(r, "another mm_sim process")
        assert not list(tmp_path.glob("art-*")), "the running soak's directory was moved"
    finally:
        first.send_signal(signal.SIGINT)
        _, err = first.communicate(timeout=300)
    assert first.returncode == 130, err[-3000:]
    assert "Traceback" not in err
    assert json.loads((out / "soak" / "run.json").read_text())["settings"]["speed"] == 2.0


def test_a_previous_run_is_moved_aside_and_kept_whole(tmp_path: Path, run_dir: Path) -> None:
    d = copy_run(run_dir, tmp_path)
    before = {k.replace(str(d), ""): v for k, v in snapshot(d).items()}
    r = cli("soak", *TINY, "--artifacts", str(d))
    assert r.returncode == 0, r.stderr[-3000:]
    (moved,) = tmp_path.glob("run-*")
    after = {k.replace(str(moved), ""): v for k, v in snapshot(moved).items()}
    assert after == before


def test_more_iterations_on_resume_allowed_on_a_synthetic_feed(
    tmp_path: Path, run_dir: Path
) -> None:
    d = copy_run(run_dir, tmp_path)
    r = cli("soak", "--iterations", "3", "--iteration-minutes", "0.2", "--resume",
            "--artifacts", str(d))  # fmt: skip
    assert r.returncode == 0, r.stderr[-3000:]
    lines = (d / "soak" / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(x)["iteration"] for x in lines] == [0, 1, 2]


def test_convert_refuses_a_feed_without_a_book(tmp_path: Path, feed: Path, shared_data) -> None:
    """The second file of a real capture alone has no snapshot: the converted feed would have
    no book, so it is refused whole (with --force too) and the feed it would replace is kept."""
    src = shared_data / "hftbacktest-binance" / "spot" / "btcusdt_20240809.gz"
    p = copy_feed(feed, tmp_path / "f")
    before = snapshot(p.parent)
    r = cli("convert", "--from", "binance", str(src), "-o", str(p), "--force")
    assert_refused(r, "no book snapshot")
    assert snapshot(p.parent) == before


def test_a_feed_down_for_a_whole_iteration_is_an_outage(tmp_path: Path, feed: Path) -> None:
    """No event in a whole iteration (a live feed down, a hole in the data): the run record,
    the summary and the exit status say so."""

    def hole(e: np.ndarray) -> np.ndarray:
        t = e["exch_ts"] - e["exch_ts"][0]
        return e[(t < 6e9) | (t >= 12e9)]

    p = rewrite_feed(feed, tmp_path, hole)
    out = tmp_path / "a"
    r = cli("soak", "--feed", str(p), "--iterations", "3", "--iteration-minutes", "0.1",
            "--no-tune", "--artifacts", str(out))  # fmt: skip
    assert r.returncode == 3, r.stderr[-3000:]
    assert "Traceback" not in r.stdout + r.stderr
    assert "FEED OUTAGE: no events in iteration(s) 1" in r.stdout
    lines = [json.loads(x) for x in (out / "soak" / "metrics.jsonl").read_text().splitlines()]
    assert [ln["extra"]["outage"] for ln in lines] == [False, True, False]
    assert "feed outage" in (out / "soak" / "summary.txt").read_text()
    # ... and the verdict: a hard gate names the iteration the figures do not cover
    gate = json.loads((out / "reports" / "KPI_GATE.json").read_text())
    assert gate["verdict"] == "FAIL" and "feed_outage" in gate["hard_failed"]
    assert "iteration(s) 1" in gate["next_step"]


def test_an_error_line_quotes_a_value_not_a_whole_file(tmp_path: Path, run_dir: Path) -> None:
    """With 'profile' deleted from run.json the one line quoted the whole file (~3 KB)."""
    d = copy_run(run_dir, tmp_path)
    run_json = d / "soak" / "run.json"
    cfg = json.loads(run_json.read_text())
    del cfg["profile"]
    run_json.write_text(json.dumps(cfg))
    r = cli("report", str(d), "--no-charts")
    assert_refused(r, "field 'profile' = {")
    line = r.stderr.strip().splitlines()[-1]
    assert len(line) < 300 and "Field required" in line and "items)" in line, line


@pytest.mark.parametrize(
    "make",
    [_artifacts_user_folder, _resume_other_minutes, _metrics_gone_resume("emptied")],
    ids=["user's folder", "resume mismatch", "resume on emptied metrics"],
)
def test_a_refused_soak_prints_nothing_about_the_run(
    tmp_path: Path, feed: Path, run_dir: Path, make: Callable
) -> None:
    """The clock line (stdout) came before the error: two lines for one mistake."""
    argv, culprit, _ = make(tmp_path, feed, run_dir)
    r = cli(*argv)
    assert_refused(r, culprit)
    assert r.stdout == "", r.stdout
