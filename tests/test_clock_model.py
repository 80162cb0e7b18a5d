"""The feed clock model: estimated when a feed is written, stored in its sidecar, applied by replay.

A recorder clock running behind the exchange is built by hand (a synthetic market whose local
times are moved back by a known offset), so the expected shift is computed here independently
of the estimator; soaks run as a user runs them (subprocesses, real files).
"""

from __future__ import annotations

import asyncio
import json
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from mm_sim.errors import UserError
from mm_sim.events import (
    EVENT_DTYPE,
    KIND_DEPTH,
    KIND_TRADE,
    Instrument,
    open_feed,
    sidecar_path,
    write_feed,
)
from mm_sim.feeds.clock import (
    FLOOR_NS,
    GENERATED,
    METHOD_FLOOR,
    METHOD_ONE_CLOCK,
    ClockModel,
    choose_clock,
    model_of,
    parse_clock_setting,
)
from mm_sim.feeds.synthetic import SyntheticParams, generate
from mm_sim.runtime.replay import plan_iterations, replay_chunks

REPO = Path(__file__).resolve().parent.parent
OFFSET_NS = 1_500_000_000  # the hand-built recorder clock runs 1.5 s behind the exchange


def nearest_rank_p1(values: list[int]) -> int:
    """The 1 % quantile as the smallest value whose rank reaches ceil(0.01 n)."""
    ordered = sorted(values)
    return ordered[max(1, math.ceil(0.01 * len(ordered))) - 1]


def per_message_lags(ev: np.ndarray) -> list[int]:
    """local - exch of depth/trade events, one per receive timestamp (plain Python)."""
    out: list[int] = []
    last = None
    for r in ev:
        if int(r["kind"]) not in (KIND_DEPTH, KIND_TRADE):
            continue
        local = int(r["local_ts"])
        if local != last:
            out.append(local - int(r["exch_ts"]))
        last = local
    return out


@pytest.fixture(scope="module")
def behind(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, np.ndarray]:
    """A 100 s synthetic market recorded by a clock 1.5 s behind; (feed path, events)."""
    events, inst = generate(SyntheticParams(), seed=3, duration_s=100)
    events = events.copy()
    events["local_ts"] -= OFFSET_NS
    path = write_feed(tmp_path_factory.mktemp("behind") / "behind.npy", events, inst)
    return path, events


# -- estimation ----------------------------------------------------------------------------------


def test_estimated_shift_puts_the_p1_lag_on_the_floor(behind) -> None:
    path, events = behind
    lags = per_message_lags(events)
    expected = FLOOR_NS - nearest_rank_p1(lags)
    clock = json.loads(sidecar_path(path).read_text())["clock"]
    assert clock["method"] == METHOD_FLOOR
    assert clock["shift_ns"] == expected
    assert clock["samples"] == len(lags)
    # The generator's own latency is tens of ms: the shift is the offset less its p1, plus 1 ms.
    assert OFFSET_NS - 50_000_000 < clock["shift_ns"] < OFFSET_NS
    corrected = [lag + clock["shift_ns"] for lag in lags]
    assert nearest_rank_p1(corrected) == FLOOR_NS
    assert clock["lag_ms_corrected"]["p1"] == pytest.approx(FLOOR_NS / 1e6)


def test_no_shift_for_positive_lags_and_for_one_clock_feeds(tmp_path: Path) -> None:
    events, inst = generate(SyntheticParams(), seed=3, duration_s=30)
    ok = write_feed(tmp_path / "ok.npy", events, inst)
    model = model_of(open_feed(ok))
    assert (model.method, model.shift_ns) == (METHOD_FLOOR, 0)
    assert model.lag_ms_raw["p1"] is not None and model.lag_ms_raw["p1"] > 1.0
    one = events.copy()
    one["local_ts"] = one["exch_ts"]  # LOBSTER-like: one clock
    one = one[np.argsort(one["local_ts"], kind="stable")]
    path = write_feed(tmp_path / "one.npy", one, inst)
    model = model_of(open_feed(path))
    assert (model.method, model.shift_ns) == (METHOD_ONE_CLOCK, 0)


def test_clock_switch_values() -> None:
    model = ClockModel(1_276_004_523, METHOD_FLOOR)
    assert choose_clock("auto", model).shift_ns == 1_276_004_523
    assert choose_clock("raw", model).shift_ns == 0
    manual = choose_clock("-2.5", model)
    assert (manual.mode, manual.shift_ns) == ("manual", -2_500_000)
    assert choose_clock("auto", GENERATED).shift_ns == 0
    for bad in ("fast", "nan", "1e12"):
        with pytest.raises(ValueError):
            parse_clock_setting(bad)


# -- the sidecar ---------------------------------------------------------------------------------


def test_sidecar_round_trip_and_old_sidecars(behind, tmp_path: Path) -> None:
    path, _ = behind
    stored = open_feed(path).meta.clock
    assert stored is not None
    model = ClockModel.from_json(stored, "x")
    assert model.to_json() == stored
    # A sidecar from before clock models: the model is estimated on open, by the same rule.
    old = tmp_path / "old.npy"
    old.write_bytes(path.read_bytes())
    meta = json.loads(sidecar_path(path).read_text())
    del meta["clock"]
    sidecar_path(old).write_text(json.dumps(meta))
    again = model_of(open_feed(old))
    assert again.shift_ns == model.shift_ns
    assert again.estimated.startswith("on open")
    # A damaged clock entry names the file and the field.
    meta["clock"] = {"shift_ns": "soon"}
    sidecar_path(old).write_text(json.dumps(meta))
    with pytest.raises(UserError, match=r"old\.json: field 'clock\.shift_ns'"):
        model_of(open_feed(old))
    # A shift beyond the --clock bound (a replay then waited on receive times that never came)
    # and a clock field of the wrong type are refused the same way.
    meta["clock"] = {**stored, "shift_ns": 10**30}
    sidecar_path(old).write_text(json.dumps(meta))
    with pytest.raises(UserError, match=r"old\.json: field 'clock\.shift_ns' = 1000.*±1 day"):
        model_of(open_feed(old))
    meta["clock"] = {**stored, "quantile": "high"}
    sidecar_path(old).write_text(json.dumps(meta))
    with pytest.raises(UserError, match=r"old\.json: field 'clock\.quantile' = 'high'"):
        model_of(open_feed(old))
    meta["clock"] = {**stored, "quantile": 5.0}
    sidecar_path(old).write_text(json.dumps(meta))
    with pytest.raises(UserError, match=r"'clock\.quantile' = 5\.0: expected a quantile"):
        model_of(open_feed(old))
    meta["clock"] = {**stored, "samples": 10**400}  # json reads it; float() overflows
    sidecar_path(old).write_text(json.dumps(meta))
    with pytest.raises(UserError, match=r"'clock\.samples' = 1000"):
        model_of(open_feed(old))


def test_on_open_estimate_of_a_long_feed_reads_blocks(tmp_path: Path) -> None:
    """Past the block budget the on-open estimate samples blocks and lands on the same shift
    for a stationary lag (constant offset, latency 5-24 ms)."""
    n = 1_200_000
    ev = np.zeros(n, dtype=EVENT_DTYPE)
    ev["exch_ts"] = 10**18 + np.arange(n, dtype=np.int64) * 1_000_000
    ev["local_ts"] = ev["exch_ts"] + (5 + np.arange(n) % 20) * 1_000_000 - OFFSET_NS
    ev["kind"] = KIND_DEPTH
    ev["side"] = 1
    ev["price"] = 100.0
    ev["qty"] = 1.0
    path = write_feed(tmp_path / "long.npy", ev, Instrument("X", "test", 0.01, 0.01))
    stored = model_of(open_feed(path))
    meta = json.loads(sidecar_path(path).read_text())
    del meta["clock"]
    sidecar_path(path).write_text(json.dumps(meta))
    on_open = model_of(open_feed(path))
    assert stored.shift_ns == on_open.shift_ns == OFFSET_NS - 4_000_000
    assert on_open.samples < stored.samples == n


# -- replay ------------------------------------------------------------------------------------


def test_replay_adds_the_shift_to_local_ts_only(behind) -> None:
    path, _ = behind
    events = open_feed(path).events
    plan = plan_iterations(events, 1, 60 * 10**9)

    async def collect(shift: int) -> list[np.ndarray]:
        return [c.events async for c in replay_chunks(events, plan, 4096, clock_shift_ns=shift)]

    raw = asyncio.run(collect(0))
    moved = asyncio.run(collect(1_234_567))
    assert len(raw) == len(moved) > 1
    for a, b in zip(raw, moved, strict=True):
        assert np.array_equal(a["exch_ts"], b["exch_ts"])
        assert np.array_equal(b["local_ts"] - a["local_ts"], np.full(len(a), 1_234_567))
    assert not events.flags.writeable  # the stored feed is untouched (a read-only map)


def soak(feed: Path, out: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    cmd = [sys.executable, "-m", "mm_sim", "soak", "--feed", str(feed), "--iterations", "1",
           "--iteration-minutes", "1", "--no-tune", "--artifacts", str(out), *extra]  # fmt: skip
    return subprocess.run(cmd, capture_output=True, text=True, cwd=REPO, timeout=600)


@pytest.fixture(scope="module")
def soaks(behind, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    path, _ = behind
    base = tmp_path_factory.mktemp("soaks")
    out = {}
    for name, flag in (("auto", []), ("raw", ["--clock", "raw"]), ("manual", ["--clock", "500"])):
        r = soak(path, base / name, *flag)
        assert r.returncode == 0, r.stderr[-3000:]
        assert "Traceback" not in r.stderr
        (base / f"{name}.stdout").write_text(r.stdout)
        out[name] = base / name
    return out


def test_soak_clock_changes_what_the_engine_sees(behind, soaks) -> None:
    path, events = behind
    shift = open_feed(path).meta.clock["shift_ns"]  # type: ignore[index]
    stdout = {k: (v.parent / f"{k}.stdout").read_text() for k, v in soaks.items()}
    assert f"clock: shift {shift / 1e6:+.3f} ms" in stdout["auto"].splitlines()[0]
    assert "clock: shift +0.000 ms" in stdout["raw"]
    assert "clock: shift +500.000 ms" in stdout["manual"]
    lag = {
        k: json.loads((v / "reports" / "EDGE_REPORT.json").read_text())["totals"]["ws_lag_p95_ms"]
        for k, v in soaks.items()
    }
    # ws_lag is the p95 of local - exch over the events the engine was given.
    it = plan_iterations(events, 1, 60 * 10**9).iterations[0]
    ev = events[it.lo : it.hi]
    raw_p95 = float(np.percentile((ev["local_ts"] - ev["exch_ts"]) / 1e6, 95))
    assert lag["raw"] == pytest.approx(raw_p95, abs=1e-6)
    assert lag["raw"] < -1400
    assert lag["auto"] == pytest.approx(raw_p95 + shift / 1e6, abs=1e-6)
    assert lag["manual"] == pytest.approx(raw_p95 + 500.0, abs=1e-6)
    # The fills differ too: the strategy decides on other clocks.
    fills = {k: (v / "soak" / "fills.csv").read_text() for k, v in soaks.items()}
    assert fills["auto"] != fills["raw"]


def test_applied_clock_is_in_run_json_and_the_reports(behind, soaks) -> None:
    path, _ = behind
    shift_ms = open_feed(path).meta.clock["shift_ns"] / 1e6  # type: ignore[index]
    expected = (("auto", "auto", shift_ms), ("raw", "raw", 0.0), ("manual", "manual", 500.0))
    for name, mode, ms in expected:
        run = json.loads((soaks[name] / "soak" / "run.json").read_text())
        assert run["feed"]["clock_mode"] == mode
        assert run["feed"]["clock_shift_ms"] == pytest.approx(ms, abs=1e-6)
        edge = json.loads((soaks[name] / "reports" / "EDGE_REPORT.json").read_text())
        assert edge["run"]["feed"]["clock_shift_ms"] == run["feed"]["clock_shift_ms"]
        md = (soaks[name] / "reports" / "SOAK_RESULTS.md").read_text()
        assert f"Clock: shift {ms:+.1f} ms added to local_ts ({mode}," in md


def test_resume_with_another_clock_is_refused(behind, soaks, tmp_path: Path) -> None:
    path, _ = behind
    r = soak(path, soaks["auto"], "--resume", "--clock", "raw")
    assert r.returncode != 0
    assert "Traceback" not in r.stderr
    assert "--clock" in r.stderr and "run: auto" in r.stderr and "now: raw" in r.stderr
    # The same clock resumes (nothing left to run: the one iteration is committed).
    r = soak(path, soaks["raw"], "--resume", "--clock", "raw")
    assert r.returncode == 0, r.stderr[-2000:]


# -- sweep and inspect ------------------------------------------------------------------------


def test_sweep_feeds_carry_the_soak_clock(behind) -> None:
    from mm_sim.sweep.feeds import resolve_case

    path, _ = behind
    shift = open_feed(path).meta.clock["shift_ns"]  # type: ignore[index]
    auto = resolve_case(str(path), 1, 1, 1.0)
    assert auto.clock_shift_ns == shift and auto.clock["clock_mode"] == "auto"
    assert resolve_case(str(path), 1, 1, 1.0, "raw").clock_shift_ns == 0
    assert resolve_case(str(path), 1, 1, 1.0, "12.5").clock_shift_ns == 12_500_000
    assert resolve_case("synthetic", 1, 1, 1.0).clock_shift_ns == 0


def test_inspect_shows_the_clock_model(behind) -> None:
    path, _ = behind
    r = subprocess.run(
        [sys.executable, "-m", "mm_sim", "inspect", str(path), "--json"],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=300,
    )
    assert r.returncode == 0, r.stderr[-2000:]
    c = json.loads(r.stdout)["clock"]
    shift_ms = open_feed(path).meta.clock["shift_ns"] / 1e6  # type: ignore[index]
    assert c["shift_ms"] == pytest.approx(shift_ms, abs=1e-3)
    assert c["lag_ms_raw"]["p50"] < -1400
    for q in ("p1", "p50", "p95"):
        assert c["lag_ms_corrected"][q] == pytest.approx(c["lag_ms_raw"][q] + shift_ms)


def test_live_soak_takes_the_same_switch(tmp_path: Path) -> None:
    """``--clock`` on a live feed sets the feed's own clock (the venue offset is then not
    measured but given); the run records and reports it like a replay's."""
    import re
    import signal

    fake = subprocess.Popen(
        [sys.executable, "-m", "mm_sim", "fake-exchange", "--port", "0", "--speed", "50",
         "--duration-s", "60"],
        cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert fake.stdout is not None
        m = re.search(r"ws://127\.0\.0\.1:\d+", fake.stdout.readline())
        assert m, fake.stderr.read() if fake.poll() is not None else "no listening line"
        art = tmp_path / "live"
        cmd = [sys.executable, "-m", "mm_sim", "soak", "--feed", m.group(0), "--iterations", "1",
               "--iteration-minutes", "0.1", "--clock", "250", "--artifacts", str(art)]  # fmt: skip
        r = subprocess.run(cmd, capture_output=True, text=True, cwd=REPO, timeout=300)
    finally:
        fake.send_signal(signal.SIGTERM)
        try:
            fake.wait(10)
        except subprocess.TimeoutExpired:
            fake.kill()
            fake.wait()
    assert r.returncode == 0, r.stderr[-2000:]
    assert "Clock: shift +250.0 ms added to local_ts (live, 250.0: manual)." in r.stdout
    feed = json.loads((art / "soak" / "run.json").read_text())["feed"]
    assert (feed["clock"]["chosen"], feed["clock"]["shift_ns"]) == ("manual", 250_000_000)
    md = (art / "reports" / "SOAK_RESULTS.md").read_text()
    assert "Clock: shift +250.0 ms added to local_ts (live, 250.0: manual)." in md


# -- the real capture ----------------------------------------------------------------------------


def test_hftbacktest_spot_recorder_runs_about_1_27_s_behind(
    shared_data: Path, tmp_path: Path
) -> None:
    spot = shared_data / "hftbacktest-binance" / "spot"
    out = tmp_path / "btc.npy"
    inputs = [str(spot / "btcusdt_20240808.gz"), str(spot / "btcusdt_20240809.gz")]
    cmd = [sys.executable, "-m", "mm_sim", "convert", "--from", "binance", "--json", *inputs,
           "--out", str(out)]  # fmt: skip
    r = subprocess.run(cmd, capture_output=True, text=True, cwd=REPO, timeout=600)
    assert r.returncode == 0, r.stderr[-2000:]
    printed = json.loads(r.stdout)["clock"]
    model = model_of(open_feed(out))
    assert printed == model.to_json()
    assert model.method == METHOD_FLOOR
    assert 1.2e9 < model.shift_ns < 1.35e9
    # Corrected, the per-message lag sits on the floor at p1 and is a few ms at the median.
    assert model.lag_ms_corrected()["p1"] == pytest.approx(FLOOR_NS / 1e6)
    assert 1.0 < model.lag_ms_corrected()["p50"] < 50.0  # type: ignore[operator]
