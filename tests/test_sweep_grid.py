"""GRID.toml parsing and validation, feed tokens, the results file, scoring and the report —
no cluster needed."""

from __future__ import annotations

import dataclasses
import json
import shutil
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from mm_sim.config import Overrides, Profile, load_overrides, load_profile
from mm_sim.errors import UserError
from mm_sim.events import write_feed
from mm_sim.feeds.spec import SyntheticFeedSpec, load_events, resolve_feed
from mm_sim.sweep.cell import CellTask, run_cell
from mm_sim.sweep.feeds import parse_token, resolve_cases
from mm_sim.sweep.grid import load_grid
from mm_sim.sweep.report import SweepInfo, render_markdown
from mm_sim.sweep.results import ResultsFile, read_rows
from mm_sim.sweep.select import Criterion, score_cells, validate_top

REPO = Path(__file__).resolve().parent.parent
BASE_P = load_profile("S1")
BASE_O = Overrides.model_validate({})


def grid_of(tmp_path: Path, text: str, name: str = "grid.toml"):
    p = tmp_path / name
    p.write_text(text)
    return load_grid(p, BASE_P, BASE_O)


def error_of(tmp_path: Path, text: str) -> str:
    with pytest.raises(UserError) as info:
        grid_of(tmp_path, text, "bad.toml")
    return str(info.value)


def test_lists_ranges_tables_and_scalars_expand_in_grid_order(tmp_path: Path) -> None:
    g = grid_of(
        tmp_path,
        "overrides.tail_age_ms = {start = 400, stop = 1000, step = 300}\n"
        '"overrides.base_spread_bps_delta" = {start = 0.0, stop = 0.3, step = 0.1}\n'
        "[profile]\nquoting.gamma = {values = [0.05, 0.2]}\nqueue.model = 'conservative'\n",
    )
    assert g.keys == (
        "overrides.tail_age_ms",
        "overrides.base_spread_bps_delta",
        "profile.quoting.gamma",
        "profile.queue.model",
    )
    assert g.axes[0].values == (400.0, 700.0, 1000.0)  # stop included, stored as the model's float
    assert g.axes[1].values == (0.0, 0.1, 0.2, 0.3)  # no 0.30000000000000004
    assert len(g.cells) == 3 * 4 * 2 * 1
    first, last = g.cells[0].as_dict(), g.cells[-1].as_dict()
    assert first["overrides.tail_age_ms"] == 400.0 and last["overrides.tail_age_ms"] == 1000.0
    assert [c.index for c in g.cells] == list(range(len(g.cells)))
    c = g.cells[-1]
    assert c.overrides(BASE_O).tail_age_ms == 1000.0
    assert c.overrides(BASE_O).min_interval_ms == BASE_O.min_interval_ms  # not swept: base
    prof = c.profile(BASE_P)
    assert prof.quoting.gamma == 0.2 and prof.queue.model == "conservative"
    assert prof.fees == BASE_P.fees


def test_cell_ids_hash_values_not_positions(tmp_path: Path) -> None:
    a = grid_of(tmp_path, "overrides.min_interval_ms = [40, 70]\n", "a.toml")
    b = grid_of(tmp_path, "overrides.min_interval_ms = [70.0, 100, 40.0]\n", "b.toml")
    ids_a = {c.as_dict()["overrides.min_interval_ms"]: c.id for c in a.cells}
    ids_b = {c.as_dict()["overrides.min_interval_ms"]: c.id for c in b.cells}
    assert ids_a[40.0] == ids_b[40.0] and ids_a[70.0] == ids_b[70.0]
    assert len(set(ids_b.values())) == 3


@pytest.mark.parametrize(
    ("text", "needles"),
    [
        (
            "overrides.tail_age = [500]\n",
            ["bad.toml:1", "'overrides.tail_age'", "no tunable field 'tail_age'", "tail_age_ms"],
        ),
        (
            "x = 1\n[overrides]\n\ntail_age_ms = [5, 500]\n",
            ["key 'x'", "expected overrides.<field> or profile.<section>.<field>"],
        ),
        (
            "# comment\n[overrides]\ntail_age_ms = [5, 500]\n",
            ["bad.toml:3", "'overrides.tail_age_ms'", "value 5", "greater than or equal to 10"],
        ),
        (
            "[profile.quoting]\ngama = [0.1]\n",
            ["bad.toml:2", "'profile.quoting.gama'", "no tunable field 'gama'", "gamma"],
        ),
        ("profile.quoting = [0.1]\n", ["'profile.quoting' is a section", "order_qty"]),
        ("'profile.quoting.gamma.x' = [0.1]\n", ["is a value, not a section"]),
        ("profile.quoting.gamma.x = [0.1]\n", ["invalid table", "range table"]),
        ("profile.queue.model = ['fifo']\n", ["'profile.queue.model'", "value 'fifo'"]),
        ("overrides.min_interval_ms = ['fast']\n", ["value 'fast'", "valid number"]),
        ("overrides.min_interval_ms = []\n", ["empty list", "range table"]),
        ("overrides.min_interval_ms = [70, 70.0]\n", ["listed twice"]),
        (
            "overrides.min_interval_ms = {start = 100, stop = 40, step = 10}\n",
            ["stop 40 is below start 100"],
        ),
        (
            "overrides.min_interval_ms = {start = 0, stop = 40, step = 0}\n",
            ["step: Input should be greater than 0"],
        ),
        ("overrides.min_interval_ms = {from = 0, to = 4}\n", ["invalid table", "start"]),
        # NaN or inf in a range failed later, counting its values (an internal error).
        (
            "overrides.tail_age_ms = {start = nan, stop = 1000, step = 300}\n",
            ["bad.toml:1", "start.float: Input should be a finite number"],
        ),
        (
            "overrides.tail_age_ms = {start = 400, stop = inf, step = 300}\n",
            ["stop.float: Input should be a finite number"],
        ),
        (
            "overrides.tail_age_ms = {start = 400, stop = 1000, step = inf}\n",
            ["step.float: Input should be a finite number"],
        ),
        # Gates judge the cells and fees/instrument describe the venue: not sweepable.
        (
            "profile.gates.bands.success = [2.0, 3.0]\n",
            ["bad.toml:1", "'profile.gates' cannot be swept", "loosest gates win", "--profile"],
        ),
        (
            "[profile]\ngates.hard = {cancel_ratio_max = [0.65, 0.9]}\n",
            ["bad.toml:2", "'profile.gates' cannot be swept"],
        ),
        (
            "[overrides]\nmin_interval_ms = [40]\n[profile.fees]\nmaker_bps = [-0.5, 0.0]\n",
            ["bad.toml:3", "'profile.fees' cannot be swept", "cheapest venue"],
        ),
        ("profile.instrument.tick_size = [0.1]\n", ["'profile.instrument' cannot be swept"]),
        # Booleans are not numbers.
        (
            "overrides.min_interval_ms = [true, false]\n",
            ["bad.toml:1", "value true is a boolean; expected float"],
        ),
        ("profile.quoting.impact_levels = {values = [false]}\n", ["value false is a boolean"]),
        # Line numbers follow the table headers: the same field name in two tables, and an
        # unknown table, point at the right line.
        (
            "[overrides]\ntail_age_ms = [500]\n\n[profile.quoting]\ntail_age_ms = [1]\n",
            ["bad.toml:5", "'profile.quoting.tail_age_ms'", "no tunable field"],
        ),
        (
            "[overrides]\nmin_interval_ms = [40]\n\n[foo]\na = 1\n",
            ["bad.toml:4", "unknown key 'foo'"],
        ),
        (
            "[profile]\nquoting = {gamma = [0.1], gama = [0.2]}\n",
            ["bad.toml:2", "'profile.quoting.gama'"],
        ),
        ("[overrides\n", ["invalid TOML"]),
        ("", ["no fields to sweep"]),
    ],
)
def test_bad_grids_name_file_key_and_expectation(
    tmp_path: Path, text: str, needles: list[str]
) -> None:
    msg = error_of(tmp_path, text)
    assert str(tmp_path / "bad.toml") in msg
    for n in needles:
        assert n in msg, (n, msg)


def test_cli_reports_a_bad_grid_without_traceback(tmp_path: Path) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text("[overrides]\nmin_interval_ms = [-1]\n")
    r = subprocess.run(
        [sys.executable, "-m", "mm_sim", "sweep", "--grid", str(bad), "--out", str(tmp_path / "o")],
        capture_output=True, text=True, cwd=REPO, timeout=120,
    )  # fmt: skip
    assert r.returncode == 2
    assert "Traceback" not in r.stderr
    assert f"{bad}:2: key 'overrides.min_interval_ms': value -1" in r.stderr
    assert not (tmp_path / "o").exists()  # nothing started


def test_feed_tokens(tmp_path: Path) -> None:
    assert parse_token("synthetic@7", 1) == ("synthetic", 7)
    assert parse_token("synthetic", 3) == ("synthetic", 3)
    assert parse_token("/data/a@b/x.npy@2", 1) == ("/data/a@b/x.npy", 2)
    with pytest.raises(UserError, match="NAME@SEED"):
        parse_token("synthetic@x", 1)
    cases = resolve_cases(["synthetic@1", "synthetic-short@2"], 1, 1, 1.0)
    assert [c.label for c in cases] == ["synthetic@1", "synthetic-short@2"]
    assert all(c.spec["duration_s"] == 61.0 for c in cases)  # the run (1 min) and a spare second
    # Two names of one market with one seed are one feed: refused (it would leak train to test).
    with pytest.raises(UserError, match="same events"):
        resolve_cases(["synthetic@1", "synthetic-short@1"], 1, 1, 1.0)
    with pytest.raises(UserError, match="same events"):
        resolve_cases(["synthetic", "synthetic@1"], 1, 1, 1.0)
    with pytest.raises(UserError, match="is live"):
        resolve_cases(["binance-spot-testnet"], 1, 1, 1.0)
    with pytest.raises(UserError, match="unknown feed"):
        resolve_cases(["no-such-feed@1"], 1, 1, 1.0)


def test_a_copy_of_a_stored_feed_is_the_same_feed(tmp_path: Path) -> None:
    """The same recorded events under another name (a copy, train on one and test on the
    other) leaked in-sample figures into the test rows: the data's digest, not the path, says
    what a stored feed replays."""
    spec = resolve_feed("synthetic-short")
    assert isinstance(spec, SyntheticFeedSpec)
    events, inst, ident = load_events(spec.model_copy(update={"duration_s": 40.0}), 3)
    day = write_feed(tmp_path / "day.npy", events, inst, source=ident)
    copy = tmp_path / "copy.npy"
    shutil.copyfile(day, copy)
    shutil.copyfile(day.with_suffix(".json"), copy.with_suffix(".json"))
    with pytest.raises(UserError, match=r"same events.*under any name or copy"):
        resolve_cases([f"{day}@1", f"{copy}@2"], 1, 1, 0.5)
    other = write_feed(tmp_path / "other.npy", events[:-1], inst, source=ident)
    assert len(resolve_cases([f"{day}@1", f"{other}@1"], 1, 1, 0.5)) == 2


def test_two_definitions_with_one_name_are_two_feeds(tmp_path: Path) -> None:
    """Labels come from the tokens: two definitions calling themselves "day" keep apart rows."""
    tokens = []
    for sub, vol in (("a", 0.35), ("b", 0.9)):
        d = tmp_path / sub
        d.mkdir()
        (d / "day.json").write_text(
            json.dumps({"kind": "synthetic", "name": "day", "params": {"regime_vol": [vol] * 3}})
        )
        tokens.append(f"{d / 'day.json'}@1")
    cases = resolve_cases(tokens, 1, 1, 1.0)
    assert [c.label for c in cases] == tokens
    assert len({c.label for c in cases}) == 2 and len({c.slug for c in cases}) == 2


def test_a_stored_feed_shorter_than_the_run_is_replayed_to_its_end_and_flagged(
    tmp_path: Path,
) -> None:
    """One policy with the soak (docs/WHAT_HAPPENS_WHEN.md): the run is cut at the feed's end,
    and the row and the report say so."""
    spec = resolve_feed("synthetic-short")
    assert isinstance(spec, SyntheticFeedSpec)
    events, inst, ident = load_events(spec.model_copy(update={"duration_s": 45.0}), 3)
    path = write_feed(tmp_path / "day.npy", events, inst, source=ident)
    (case,) = resolve_cases([f"{path}@3"], 1, 2, 0.5)
    span = (int(events["exch_ts"][-1]) - int(events["exch_ts"][0])) / 60e9
    assert case.cut_note is not None and f"covers {span:.1f} simulated minutes" in case.cut_note
    assert case.label == f"{path}@3" and case.spec["path"] == str(path.resolve())
    (whole,) = resolve_cases([f"{path}@3"], 1, 1, 0.5)  # one 30-second iteration fits
    assert whole.cut_note is None

    profile = load_profile("S1")
    task = CellTask(
        cell_id="c0", feed=case, profile=profile.model_dump(mode="json"),
        overrides=load_overrides().model_dump(), iterations=2, iteration_minutes=0.5,
        out_dir=str(tmp_path / "out"),
    )  # fmt: skip
    row = run_cell(task)
    assert row["partial"] == "cut by the feed's end" and row["iterations_run"] == 2
    metrics = (task.run_dir / "soak" / "metrics.jsonl").read_text().splitlines()
    lines = [json.loads(x) for x in metrics]
    assert [m["partial"] for m in lines] == [False, True]


def test_results_file_commits_each_key_once_and_cuts_a_torn_tail(tmp_path: Path) -> None:
    keys = ["overrides.tail_age_ms"]
    rf = ResultsFile(tmp_path, keys)
    assert rf.open() == {}
    row = {"split": "train", "cell_id": "abc", "feed": "synthetic@1", "seed": 1,
           "overrides.tail_age_ms": 500.0, "net_bps": 0.1 + 0.2, "fills": 3,
           "hard_failed": ["net_bps_total", "maker_share"], "verdict": "FAIL"}  # fmt: skip
    assert rf.append(row) is True
    assert rf.append({**row, "net_bps": 9.0}) is False  # same key: not counted again
    rf.close()
    with rf.path.open("ab") as fh:
        fh.write(b"train,def,synthetic@1,1,500.0,1.5")  # torn: no newline
    rf2 = ResultsFile(tmp_path, keys)
    rows = rf2.open()
    rf2.close()
    assert list(rows) == [("abc", "synthetic@1")]
    got = rows[("abc", "synthetic@1")]
    assert got["net_bps"] == 0.1 + 0.2  # exact round trip
    assert got["fills"] == 3 and got["hard_failed"] == ["net_bps_total", "maker_share"]
    assert got["gross_bps"] is None
    assert not rf2.path.read_bytes().endswith(b"1.5")
    with pytest.raises(UserError, match="another grid"):
        read_rows(rf2.path, ResultsFile(tmp_path, ["overrides.min_interval_ms"]).columns)


@pytest.mark.parametrize("content", [b"", b"split,cell_id,fe"])
def test_an_empty_or_torn_header_results_file_gets_its_header_back(
    tmp_path: Path, content: bytes
) -> None:
    keys = ["overrides.tail_age_ms"]
    (tmp_path / "sweep_results.csv").write_bytes(content)
    rf = ResultsFile(tmp_path, keys)
    assert rf.open() == {}
    assert rf.append({"cell_id": "abc", "feed": "synthetic@1", "seed": 1, "fills": 2})
    rf.close()
    rows = read_rows(rf.path, rf.columns)
    assert list(rows) == [("abc", "synthetic@1")] and rows[("abc", "synthetic@1")]["fills"] == 2


GOOD = {"net_bps": 1.0, "fills": 10, "maker_share_pct": 95.0, "cancel_ratio": 0.3,
        "adverse_cost_p95_bps": 1.0, "slippage_cost_p95_bps": 1.0, "order_age_p95_ms": 300.0,
        "ws_lag_p95_ms": 100.0, "hard_failed": ["net_bps_total"], "verdict": "FAIL"}  # fmt: skip


def _rows(grid, feeds: list[str], per_cell: list[dict[str, Any]]) -> dict:
    return {(c.id, f): {**GOOD, **extra, "cell_id": c.id, "feed": f}
            for c, extra in zip(grid.cells, per_cell, strict=True) for f in feeds}  # fmt: skip


def test_hard_gates_are_judged_by_the_base_profiles_gates(tmp_path: Path) -> None:
    """A row whose own gate list says "passed" still fails the base cancel-ratio gate."""
    g = grid_of(tmp_path, "overrides.min_interval_ms = [40, 70]\n")
    feeds = ["a@1", "b@1"]
    rows = _rows(g, feeds, [{"cancel_ratio": 0.9, "net_bps": 1.5}, {}])
    ranked = score_cells(g.cells, feeds, rows, Criterion(), BASE_P.gates)
    by_id = {s.cell.id: s for s in ranked}
    churny, calm = by_id[g.cells[0].id], by_id[g.cells[1].id]
    assert churny.train.gate_failures == 1.0  # cancel_ratio 0.9 > 0.65, whatever the row says
    assert calm.train.gate_failures == 0.0  # net_bps_total is not counted
    assert churny.score == pytest.approx(1.5 - 1.0) and calm.score == pytest.approx(1.0)
    assert [s.cell.id for s in ranked] == [g.cells[1].id, g.cells[0].id]
    # Looser base gates (--profile) are what a cell is then held to.
    loose = BASE_P.gates.model_copy(
        update={"hard": BASE_P.gates.hard.model_copy(update={"cancel_ratio_max": 0.95})}
    )
    assert score_cells(g.cells, feeds, rows, Criterion(), loose)[0].cell.id == g.cells[0].id


def _info(g, rows: int = 4, stale: int = 0, all_fail: bool = True) -> SweepInfo:
    return SweepInfo(grid=g, train=["a@1", "b@1"], test=[], iterations=1, iteration_minutes=1.0,
                     profile_name="S1", overrides_source="o.json", criterion=Criterion(),
                     rows=rows, stale_rows=stale, iterations_run=(1,), all_fail=all_fail,
                     engine="test")  # fmt: skip


def test_report_warns_when_every_verdict_is_fail_and_counts_stale_rows(tmp_path: Path) -> None:
    g = grid_of(tmp_path, "overrides.min_interval_ms = [40, 70]\n")
    feeds = ["a@1", "b@1"]
    rows = _rows(g, feeds, [{}, {}])
    ranked = score_cells(g.cells, feeds, rows, Criterion(), BASE_P.gates)
    top = validate_top(ranked, 1, [], rows, BASE_P.gates)
    md = render_markdown(_info(g, stale=3), ranked, top, [], BASE_O, BASE_P)
    assert "every cell's verdict is FAIL" in md
    assert "0.00 failed hard gates per feed, net_bps_total not counted" in md
    assert "Rows: 4 in `sweep_results.csv` (3 more, of cells or feeds no longer" in md
    assert "iterations committed per run (`iterations_run`): 1." in md
    md = render_markdown(_info(g, all_fail=False), ranked, top, [], BASE_O, BASE_P)
    assert "every cell's verdict is FAIL" not in md
    assert "Rows: 4 in `sweep_results.csv`; iterations committed" in md
    assert "cut short" not in md
    cut = dataclasses.replace(_info(g), cut_feeds=("a@1: the feed covers 0.8 simulated minutes",))
    md = render_markdown(cut, ranked, top, [], BASE_O, BASE_P)
    assert "- **cut short**: `a@1`: the feed covers 0.8 simulated minutes — every run" in md


def test_latency_stays_sweepable(tmp_path: Path) -> None:
    g = grid_of(tmp_path, "profile.latency.entry_ms = [5, 50]\n")
    assert [c.profile(BASE_P).latency.entry_ms for c in g.cells] == [5.0, 50.0]


def test_example_grid_is_valid() -> None:
    g = load_grid(REPO / "sweeps" / "example.toml", BASE_P, BASE_O)
    assert len(g.cells) >= 8
    assert all(isinstance(Profile.model_validate(c.profile(BASE_P).model_dump()), Profile)
               for c in g.cells[:2])  # fmt: skip


def _sweep_cli(tmp_path: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    """A one-cell sweep on a port nobody listens on: it stops at the connection, after its
    directory was claimed (sweep.json and the results header written), or before, on a check."""
    grid = tmp_path / "g.toml"
    grid.write_text("[overrides]\ntail_age_ms = [500]\n")
    s = socket.create_server(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    args = ["sweep", "--grid", str(grid), "--feeds", "synthetic@1", "--iterations", "1",
            "--iteration-minutes", "0.1", "--scheduler", f"tcp://127.0.0.1:{port}",
            "--out", str(tmp_path / "o"), *extra]  # fmt: skip
    return subprocess.run(
        [sys.executable, "-m", "mm_sim", *args],
        capture_output=True, text=True, cwd=REPO, timeout=300,
    )  # fmt: skip


@pytest.mark.parametrize(
    ("name", "content", "needle"),
    [
        ("sweep.json", b"\xff\xfe{}", "sweep.json: not UTF-8 text (byte 0"),
        ("sweep.json", b"[1]\n", "sweep.json: sweep record (sweep.json) must be a JSON object"),
        ("sweep_results.csv", b"\xff\n", "sweep_results.csv: not UTF-8 text"),
        ("sweep_results.csv", "ROW", "sweep_results.csv:2: column 'net_bps' = 'abc': expected"),
    ],
)
def test_resume_on_a_damaged_sweep_directory_names_the_file(
    tmp_path: Path, name: str, content: bytes | str, needle: str
) -> None:
    """--resume read sweep.json and sweep_results.csv as they came: not UTF-8, a JSON list or
    text in a number column ended in an internal error (exit 70) instead of naming the file."""
    first = _sweep_cli(tmp_path)
    assert first.returncode == 2 and "cannot connect" in first.stderr, first.stderr[-800:]
    path = tmp_path / "o" / name
    if content == "ROW":  # a complete row whose net_bps was edited into text
        header = path.read_text().splitlines()[0].split(",")
        row = {c: "" for c in header} | {"split": "train", "cell_id": "abc", "feed": "synthetic@1",
                                         "seed": "1", "net_bps": "abc"}  # fmt: skip
        path.write_text(path.read_text() + ",".join(row[c] for c in header) + "\n")
    else:
        assert isinstance(content, bytes)
        path.write_bytes(path.read_bytes() + content if name.endswith(".csv") else content)
    r = _sweep_cli(tmp_path, "--resume")
    assert r.returncode == 2, r.stderr[-800:]
    assert needle in r.stderr and "Traceback" not in r.stderr and "internal error" not in r.stderr
