"""``mm_sim inspect``: the numba pass against its plain-Python twin, and the CLI's figures
against values computed here independently (exact samples + numpy quantiles)."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mm_sim.core.reference_book import ReferenceBook
from mm_sim.events import (
    ASK,
    BID,
    EVENT_DTYPE,
    KIND_CLEAR,
    KIND_DEPTH,
    KIND_SNAPSHOT,
    KIND_TRADE,
    Instrument,
    open_feed,
    write_feed,
)
from mm_sim.feeds.inspect import inspect_events, inspect_reference, summarise

REPO = Path(__file__).resolve().parent.parent
TICK = 0.01
T0 = 1_720_000_000_000_000_000
ENV = {**os.environ, "NUMBA_CACHE_DIR": str(REPO / ".venv" / "numba-cache")}
REL = 1e-3  # log-histogram quantiles: bins at most 0.1 % wide


def run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "mm_sim", "inspect", *args],
        capture_output=True,
        text=True,
        cwd=REPO,
        env=ENV,
        timeout=300,
    )


def nearest_rank(samples: list[float], q: float) -> float | None:
    if not samples:
        return None
    return float(np.quantile(np.asarray(samples), q, method="inverted_cdf"))


def expected_figures(events: np.ndarray, tick: float, gap_s: float = 5.0) -> dict[str, Any]:
    """The inspect figures computed the slow, obvious way from exact samples."""
    book = ReferenceBook(tick)
    spread_t: list[float] = []
    spread_b: list[float] = []
    depth_b: list[float] = []
    depth_a: list[float] = []
    crossed = boundaries = 0

    def sample() -> None:
        nonlocal crossed, boundaries
        boundaries += 1
        b, a = book.best_bid_tick, book.best_ask_tick
        if b is not None:
            depth_b.append(sum(q for _, q in book.top_levels(BID, 5)))
        if a is not None:
            depth_a.append(sum(q for _, q in book.top_levels(ASK, 5)))
        if b is not None and a is not None:
            if b >= a:
                crossed += 1
            else:
                spread_t.append(a - b)
                bid_px, ask_px = b * tick, a * tick
                spread_b.append((ask_px - bid_px) / ((ask_px + bid_px) / 2) * 1e4)

    ex = events["exch_ts"].astype(np.int64)
    for i, e in enumerate(events):
        if i and ex[i] != ex[i - 1]:
            sample()
        book.apply(int(e["kind"]), int(e["side"]), float(e["price"]), float(e["qty"]))
    if len(events):
        sample()
    lags_ms = (events["local_ts"].astype(np.int64) - ex) / 1e6
    d = np.diff(ex)
    return {
        "events": len(events),
        "span_s": (int(ex[-1]) - int(ex[0])) / 1e9 if len(ex) else 0.0,
        "kinds": np.bincount(events["kind"], minlength=5)[1:5].tolist(),
        "spread_ticks": (nearest_rank(spread_t, 0.5), nearest_rank(spread_t, 0.95)),
        "spread_bps": (nearest_rank(spread_b, 0.5), nearest_rank(spread_b, 0.95)),
        "depth": (nearest_rank(depth_b, 0.5), nearest_rank(depth_a, 0.5)),
        "lag_ms": (nearest_rank(list(lags_ms), 0.5), nearest_rank(list(lags_ms), 0.95)),
        "crossed": crossed,
        "boundaries": boundaries,
        "time_gaps": int(np.sum(d > gap_s * 1e9)),
        "max_gap_s": float(d.max()) / 1e9 if len(d) else 0.0,
        "final": (book.best_bid, book.best_ask),
    }


def close(got: float | None, want: float | None, rel: float = REL) -> bool:
    if want is None or got is None:
        return got is want
    return math.isclose(got, want, rel_tol=rel, abs_tol=1e-12)


def check_against_expected(r: dict[str, Any], x: dict[str, Any]) -> None:
    assert r["events"] == x["events"]
    assert r["span_s"] == pytest.approx(x["span_s"], abs=1e-9)
    k = r["events_by_kind"]
    assert [k["clear"], k["snapshot"], k["depth"], k["trade"]] == x["kinds"]
    assert (r["spread_ticks"]["median"], r["spread_ticks"]["p95"]) == x["spread_ticks"]
    assert close(r["spread_bps"]["median"], x["spread_bps"][0])
    assert close(r["spread_bps"]["p95"], x["spread_bps"][1])
    assert close(r["depth_top5"]["bid_median"], x["depth"][0])
    assert close(r["depth_top5"]["ask_median"], x["depth"][1])
    assert close(r["feed_lag_ms"]["p50"], x["lag_ms"][0])
    assert close(r["feed_lag_ms"]["p95"], x["lag_ms"][1])
    assert r["crossed"] == x["crossed"]
    assert r["boundaries"] == x["boundaries"]
    assert r["time_gaps"]["count"] == x["time_gaps"]
    assert r["time_gaps"]["max_s"] == pytest.approx(x["max_gap_s"], abs=1e-9)
    fb, fa = x["final"]
    assert r["final_best_bid"] == (None if math.isnan(fb) else fb)
    assert r["final_best_ask"] == (None if math.isnan(fa) else fa)


# ------------------------------------------------------------------------------------------
# A hand-made feed whose figures are known by construction
# ------------------------------------------------------------------------------------------


def small_feed() -> np.ndarray:
    rows: list[tuple[int, int, float, float, int, int]] = []
    t = T0

    def add(dt_ms: float, kind: int, side: int, price: float, qty: float, lag_ms: float) -> None:
        nonlocal t
        t += int(dt_ms * 1e6)
        rows.append((t, t + int(lag_ms * 1e6), price, qty, kind, side))

    add(0, KIND_CLEAR, 0, 0.0, 0.0, 3.0)
    for k in range(6):
        add(0, KIND_SNAPSHOT, BID, 100.00 - k * TICK, 1.0 + k, 3.0)
        add(0, KIND_SNAPSHOT, ASK, 100.02 + k * TICK, 2.0 + k, 3.0)
    add(100, KIND_TRADE, BID, 100.02, 0.5, 4.0)
    add(0, KIND_DEPTH, ASK, 100.02, 1.5, 4.0)
    add(6000, KIND_DEPTH, BID, 100.01, 3.0, 2.5)  # a time gap > 5 s, spread now 1 tick
    add(50, KIND_DEPTH, BID, 100.02, 1.0, 2.5)  # locked
    add(50, KIND_DEPTH, BID, 100.03, 1.0, -1.0)  # crossed
    add(0, KIND_DEPTH, BID, 100.03, 0.0, -1.0)  # (same timestamp: not sampled in between)
    add(50, KIND_DEPTH, BID, 100.02, 0.0, 5.0)
    add(7000, KIND_TRADE, ASK, 100.01, 2.0, 5.0)  # second time gap
    add(10, KIND_DEPTH, ASK, 100.05, 0.0, 0.0)
    arr = np.zeros(len(rows), dtype=EVENT_DTYPE)
    for i, (ex, lo, px, q, kind, side) in enumerate(rows):
        arr[i] = (ex, lo, px, q, kind, side)
    return arr


def test_cli_json_on_a_small_feed_matches_independent_figures(tmp_path: Path) -> None:
    events = small_feed()
    inst = Instrument("TESTUSDT", "test", TICK, 0.001)
    path = write_feed(tmp_path / "small.npy", events, inst, stats={"gaps": 3})
    proc = run_cli(str(path), "--json")
    assert proc.returncode == 0, proc.stderr
    r = json.loads(proc.stdout)
    for key in ("events", "span_s", "gaps", "crossed", "final_best_bid", "final_best_ask"):
        assert key in r
    x = expected_figures(events, TICK)
    check_against_expected(r, x)
    # Known by construction:
    assert r["gaps"] == 3
    assert r["time_gaps"]["count"] == 2
    assert r["crossed"] == 2  # the locked and the crossed boundary
    assert r["final_best_bid"] == 100.01 and r["final_best_ask"] == 100.02
    assert r["spread_ticks"]["median"] == 1.0
    assert r["events_by_kind"] == {"clear": 1, "snapshot": 12, "depth": 7, "trade": 2}
    assert r["symbol"] == "TESTUSDT"


def test_cli_human_table_and_errors(tmp_path: Path) -> None:
    path = write_feed(tmp_path / "small.npy", small_feed(), Instrument("T", "v", TICK, 1.0))
    proc = run_cli(str(path))
    assert proc.returncode == 0, proc.stderr
    for label in ("events", "spread ticks", "seq gaps", "crossed", "lag ms", "final touch"):
        assert label in proc.stdout
    proc = run_cli(str(tmp_path / "missing.npy"))
    assert proc.returncode == 2
    assert "missing.npy" in proc.stderr and "Traceback" not in proc.stderr
    # A feed without events is a problem a soak would refuse: said, and exit 1.
    empty = write_feed(tmp_path / "empty.npy", small_feed()[:0], Instrument("T", "v", TICK, 1.0))
    proc = run_cli(str(empty))
    assert proc.returncode == 1, proc.stderr
    assert "problem: the feed has no events" in proc.stdout


def test_cli_on_a_synthetic_definition_uses_the_seed(tmp_path: Path) -> None:
    spec = json.loads((REPO / "feeds" / "synthetic-short.json").read_text())
    spec["duration_s"] = 20
    (tmp_path / "tiny.json").write_text(json.dumps(spec))
    proc = run_cli(str(tmp_path / "tiny.json"), "--json", "--seed", "7")
    assert proc.returncode == 0, proc.stderr
    r = json.loads(proc.stdout)
    from mm_sim.feeds.spec import load_events, resolve_feed

    events, inst, _ = load_events(resolve_feed(tmp_path / "tiny.json"), 7)
    check_against_expected(r, expected_figures(np.asarray(events), inst.tick_size))
    assert r["seed"] == 7 and r["gaps"] == 0


# ------------------------------------------------------------------------------------------
# Kernel vs plain-Python reference
# ------------------------------------------------------------------------------------------


@st.composite
def feeds(draw: st.DrawFn) -> np.ndarray:
    n = draw(st.integers(0, 120))
    arr = np.zeros(n, dtype=EVENT_DTYPE)
    t = T0
    for i in range(n):
        t += draw(st.sampled_from([0, 0, 0, 1_000, 2_000_000, 6_000_000_000, -3_000]))
        lag = draw(st.sampled_from([0, 1_000, 3_000_000, -2_000_000, 1_270_000_000]))
        kind = draw(
            st.sampled_from([KIND_CLEAR, KIND_SNAPSHOT, KIND_DEPTH, KIND_DEPTH, KIND_TRADE, 9])
        )
        side = draw(st.sampled_from([BID, ASK]))
        tick = 10_000 + draw(st.integers(-15, 15))
        qty = draw(st.sampled_from([0.0, 0.25, 1.0, 3.5, 1e-7, 2e6]))
        arr[i] = (t, t + lag, tick * TICK, qty, kind, side)
    return arr


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(feeds(), st.integers(1, 130))
def test_kernel_matches_reference_in_any_chunking(events: np.ndarray, chunk: int) -> None:
    k = inspect_events(events, TICK, chunk=chunk, n_ticks=4096)
    r = inspect_reference(events, TICK)
    assert np.array_equal(k.acc, r.acc)
    assert np.array_equal(k.ticks, r.ticks)
    assert np.array_equal(k.hists, r.hists)
    assert (k.final_bid == r.final_bid) or (math.isnan(k.final_bid) and math.isnan(r.final_bid))
    assert (k.final_ask == r.final_ask) or (math.isnan(k.final_ask) and math.isnan(r.final_ask))
    assert summarise(k, TICK) == summarise(r, TICK)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(feeds())
def test_summary_matches_independent_figures(events: np.ndarray) -> None:
    # Only forward-moving clocks here: the independent figures assume ordered timestamps.
    events = events[events["kind"] != 9]
    order = np.argsort(events["exch_ts"], kind="stable")
    events = events[order]
    if len(events) == 0:
        return
    check_against_expected(
        summarise(inspect_events(events, TICK), TICK), expected_figures(events, TICK)
    )


def test_memory_mapped_feed_gives_the_same_state_as_in_memory(tmp_path: Path) -> None:
    events = small_feed()
    path = write_feed(tmp_path / "m.npy", events, Instrument("T", "v", TICK, 1.0))
    mm = open_feed(path).events
    assert isinstance(mm, np.memmap)
    a = inspect_events(mm, TICK, chunk=3)
    b = inspect_events(events, TICK)
    assert np.array_equal(a.acc, b.acc) and np.array_equal(a.hists, b.hists)


# ------------------------------------------------------------------------------------------
# Real data
# ------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def real_feed(shared_data: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    import mm_sim.feeds.convert.binance as binance  # our own module: must import
    from mm_sim.feeds.convert.base import ConvertOptions

    spot = shared_data / "hftbacktest-binance" / "spot"
    out = tmp_path_factory.mktemp("inspect_real") / "btcusdt.npy"
    res = binance.convert(
        [spot / "btcusdt_20240808.gz", spot / "btcusdt_20240809.gz"], out, ConvertOptions()
    )
    return Path(res.out)


@pytest.mark.shared_data
def test_cli_json_on_real_binance_data(real_feed: Path) -> None:
    proc = run_cli(str(real_feed), "--json")
    assert proc.returncode == 0, proc.stderr
    r = json.loads(proc.stdout)
    feed = open_feed(real_feed)
    events = np.asarray(feed.events)
    check_against_expected(r, expected_figures(events, feed.instrument.tick_size))
    assert r["gaps"] == 0  # the chained spot files have no sequence gap (PROVENANCE.md)
    assert r["crossed"] == 0
    # The recorder's clock runs ~1.27 s behind exchange time (PROVENANCE.md).
    assert -1400 < r["feed_lag_ms"]["p50"] < -1100
    assert 600 < r["span_s"] < 700
