"""The embedded synthetic market: determinism, book invariants, statistics, feed loading.

Plain-Python references for the numba kernels live here (RNG, size and distance draws, the
Fenwick tree, the latency process, the touch replay), each checked against the kernel on small
inputs; the whole event loop is also run as interpreted Python and compared byte for byte.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
from numba.core.registry import CPUDispatcher

from mm_sim.config import FEEDS_DIR
from mm_sim.core.book import (
    best_ask,
    best_bid,
    book_apply,
    book_apply_events,
    make_book,
    top_levels,
)
from mm_sim.errors import UserError
from mm_sim.events import (
    EVENT_DTYPE,
    KIND_CLEAR,
    KIND_DEPTH,
    KIND_SNAPSHOT,
    KIND_TRADE,
)
from mm_sim.feeds import synthetic_kernel as K
from mm_sim.feeds.spec import SyntheticFeedSpec, load_events, resolve_feed
from mm_sim.feeds.synthetic import (
    SECONDS_PER_YEAR,
    SyntheticParams,
    generate,
    seed_state,
    simulate,
)
from mm_sim.feeds.synthetic_doc import param_table, touch_grid

DEFAULT = SyntheticParams()
T0 = DEFAULT.start_unix_s * 1_000_000_000
MASK = (1 << 64) - 1


# ---- shared runs -----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def short_run():
    """Two minutes of the default market (book invariants, determinism)."""
    return simulate(DEFAULT, 11, 120.0)


@pytest.fixture(scope="module")
def ten_minutes():
    """The synthetic-short feed's content for seed 1 (statistics, loading)."""
    return simulate(DEFAULT, 1, 600.0)


# ---- plain-Python references -----------------------------------------------------------------


class RefRng:
    """splitmix64 on Python integers."""

    def __init__(self, state: int) -> None:
        self.s = state

    def next(self) -> int:
        self.s = (self.s + 0x9E3779B97F4A7C15) & MASK
        z = self.s
        z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & MASK
        z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & MASK
        return z ^ (z >> 31)

    def uniform(self) -> float:
        return (self.next() >> 11) * 2.0**-53

    def exponential(self) -> float:
        return -math.log(1.0 - self.uniform())

    def normal(self) -> float:
        u1 = self.uniform()
        u2 = self.uniform()
        return math.sqrt(-2.0 * math.log(1.0 - u1)) * math.cos(2.0 * math.pi * u2)


def ref_lomax(rng: RefRng, scale: float, shape: float, cap: int) -> int:
    x = scale * ((1.0 - rng.uniform()) ** (-1.0 / shape) - 1.0)
    if x >= cap:
        return cap
    return max(1, math.ceil(x))


def ref_distance(rng: RefRng, alpha: float, kmax: int) -> int:
    u = rng.uniform()
    if abs(alpha - 1.0) < 1e-9:
        x = (kmax + 1.0) ** u
    else:
        b = 1.0 - alpha
        x = (1.0 + u * ((kmax + 1.0) ** b - 1.0)) ** (1.0 / b)
    return min(max(math.floor(x), 1), kmax)


def ref_touch_samples(events: np.ndarray, t0: int, step: int, n: int) -> np.ndarray:
    """Dict-based book; row k = (best bid, best ask, bid qty, ask qty) after events <= grid k."""
    bids: dict[float, float] = {}
    asks: dict[float, float] = {}
    out = np.zeros((n, 4))
    k = 0

    def sample(k: int) -> None:
        b = max(bids) if bids else math.nan
        a = min(asks) if asks else math.nan
        out[k] = (b, a, bids.get(b, 0.0), asks.get(a, 0.0))

    for e in events:
        while k < n and t0 + k * step < e["exch_ts"]:
            sample(k)
            k += 1
        if e["kind"] == KIND_CLEAR:
            bids.clear()
            asks.clear()
        elif e["kind"] in (KIND_SNAPSHOT, KIND_DEPTH):
            book = bids if e["side"] > 0 else asks
            px = round(float(e["price"]), 6)
            if e["qty"] > 0:
                book[px] = float(e["qty"])
            else:
                book.pop(px, None)
    while k < n:
        sample(k)
        k += 1
    return out


# ---- kernels against their references --------------------------------------------------------


def test_rng_matches_reference_and_known_answer() -> None:
    rs = np.array([0], dtype=np.uint64)
    assert int(K.rng_next(rs)) == 0xE220A8397B1DCDAF  # splitmix64(0), first output
    rs = seed_state(42)
    ref = RefRng(int(rs[0]))
    for _ in range(200):
        assert int(K.rng_next(rs)) == ref.next()
        assert K.rng_uniform(rs) == ref.uniform()
        assert K.rng_exponential(rs) == ref.exponential()
        assert K.rng_normal(rs) == ref.normal()


@pytest.mark.parametrize(("alpha", "kmax"), [(1.0, 300), (0.55, 50), (1.7, 1000), (0.0, 7)])
def test_placement_distance_matches_reference(alpha: float, kmax: int) -> None:
    rs = seed_state(3)
    ref = RefRng(int(rs[0]))
    draws = [K.placement_distance(rs, alpha, kmax) for _ in range(2000)]
    assert draws == [ref_distance(ref, alpha, kmax) for _ in range(2000)]
    assert min(draws) >= 1 and max(draws) <= kmax
    # frequencies follow the documented law P(i) = (F(i+1) - F(i)) / (F(kmax+1) - F(1))
    n = 20000
    many = np.array([K.placement_distance(rs, alpha, kmax) for _ in range(n)])

    def cdf(x: float) -> float:
        return math.log(x) if abs(alpha - 1.0) < 1e-9 else x ** (1.0 - alpha) / (1.0 - alpha)

    for i in (1, 2, 3, kmax):
        p = (cdf(i + 1) - cdf(i)) / (cdf(kmax + 1) - cdf(1))
        assert abs(np.mean(many == i) - p) < 5 * math.sqrt(p * (1 - p) / n) + 1e-4


@pytest.mark.parametrize(("scale", "shape", "cap"), [(400.0, 2.0, 50000), (3.0, 1.5, 20)])
def test_lomax_sizes_match_reference(scale: float, shape: float, cap: int) -> None:
    rs = seed_state(5)
    ref = RefRng(int(rs[0]))
    draws = [K.lomax_lots(rs, scale, shape, cap) for _ in range(3000)]
    assert draws == [ref_lomax(ref, scale, shape, cap) for _ in range(3000)]
    assert min(draws) >= 1 and max(draws) <= cap
    # the median of a Lomax is scale * (2^(1/shape) - 1), rounded up to the lot
    med = scale * (2 ** (1 / shape) - 1)
    assert abs(np.median(draws) - med) <= 0.15 * med + 1


def test_fenwick_matches_naive_prefix_search() -> None:
    rng = np.random.default_rng(0)
    n = 37
    q = np.zeros(n, dtype=np.int64)
    tree = np.zeros(n + 1, dtype=np.int64)
    for _ in range(400):
        i = int(rng.integers(n))
        delta = int(rng.integers(-q[i], 9))
        q[i] += delta
        K.fw_add(tree, i, delta)
        total = int(q.sum())
        if total:
            for target in rng.integers(0, total, 5):
                expected = int(np.searchsorted(np.cumsum(q), target, side="right"))
                assert K.fw_find(tree, int(target)) == expected
    rebuilt = np.zeros_like(tree)
    K.fw_build(rebuilt, q)
    assert np.array_equal(rebuilt, tree)


def test_latency_step_matches_reference() -> None:
    fp = np.zeros(K.N_FP)
    fp[K.P_LAT_MU] = math.log(0.03)
    fp[K.P_LAT_SIG] = 0.3
    fp[K.P_LAT_TAU] = 5.0
    fp[K.P_SPIKE_RATE] = 0.5
    fp[K.P_SPIKE_MEAN] = 0.25
    fp[K.P_SPIKE_TAU] = 0.5
    fs = np.zeros(K.N_FS)
    ist = np.zeros(K.N_IS, dtype=np.int64)
    rs = seed_state(9)
    ref = RefRng(int(rs[0]))
    x = spike = last = 0.0
    first = True
    t = 0.0
    for step in range(500):
        t += 0.001 * (step % 13) + 0.05 * (step % 3 == 0)
        got = K.latency_step(rs, fp, fs, ist, t)
        if first:
            x, spike, first = 0.3 * ref.normal(), 0.0, False
        else:
            gap = t - last
            rho = math.exp(-gap / 5.0)
            x = x * rho + 0.3 * math.sqrt(1.0 - rho * rho) * ref.normal()
            spike *= math.exp(-gap / 0.5)
            if ref.uniform() < 1.0 - math.exp(-0.5 * gap):
                spike += 0.25 * ref.exponential()
        last = t
        assert got == math.exp(math.log(0.03) + x) + spike


def test_touch_samples_matches_dict_book(short_run) -> None:
    ev = short_run.events[:40000]
    n = int((ev["exch_ts"][-1] - T0) // 50_000_000) + 2
    bid, ask, bq, aq, bad = touch_grid(ev, short_run.instrument, T0, 50_000_000, n)
    ref = ref_touch_samples(ev, T0, 50_000_000, n)
    assert bad == 0
    np.testing.assert_allclose(bid, ref[:, 0], rtol=0, atol=1e-6)
    np.testing.assert_allclose(ask, ref[:, 1], rtol=0, atol=1e-6)
    np.testing.assert_allclose(bq, ref[:, 2], rtol=0, atol=1e-9)
    np.testing.assert_allclose(aq, ref[:, 3], rtol=0, atol=1e-9)


def test_event_loop_equals_interpreted_python(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every kernel swapped for its own Python source: the output must not change by one bit."""
    params = SyntheticParams(warmup_s=3.0, market_protect_ticks=5)
    compiled = simulate(params, 7, 4.0)
    for name in dir(K):
        f = getattr(K, name)
        if isinstance(f, CPUDispatcher) and f.__module__ == K.__name__:
            monkeypatch.setattr(K, name, f.py_func)
    with np.errstate(over="ignore"):
        interpreted = simulate(params, 7, 4.0)
    assert len(compiled.events) > 1000
    assert compiled.events.tobytes() == interpreted.events.tobytes()
    assert np.array_equal(compiled.fair_px, interpreted.fair_px)
    assert compiled.counters == interpreted.counters


# ---- determinism -----------------------------------------------------------------------------


def test_same_seed_is_byte_identical_whatever_the_buffers(short_run) -> None:
    again = simulate(DEFAULT, 11, 120.0, initial_capacity=1)  # grows every buffer many times
    assert again.events.dtype == EVENT_DTYPE
    assert again.events.tobytes() == short_run.events.tobytes()
    assert np.array_equal(again.fair_px, short_run.fair_px)
    events, instrument = generate(DEFAULT, seed=11, duration_s=120.0)
    assert events.tobytes() == short_run.events.tobytes()
    assert instrument == short_run.instrument


def test_different_seed_differs(short_run) -> None:
    other = simulate(DEFAULT, 12, 120.0)
    n = min(len(other.events), len(short_run.events))
    assert not np.array_equal(other.events[:n], short_run.events[:n])
    assert not np.array_equal(other.fair_px[:100], short_run.fair_px[:100])


# ---- shape of the feed -----------------------------------------------------------------------


def test_instrument_and_prices_on_the_grid(short_run) -> None:
    inst = short_run.instrument
    assert (inst.symbol, inst.venue, inst.tick_size, inst.lot_size) == (
        "SYNTH-BTCUSDT",
        "synthetic",
        0.1,
        0.001,
    )
    ev = short_run.events[short_run.events["kind"] != KIND_CLEAR]
    ticks = ev["price"] / inst.tick_size
    lots = ev["qty"] / inst.lot_size
    assert np.abs(ticks - np.rint(ticks)).max() < 1e-6
    assert np.abs(lots - np.rint(lots)).max() < 1e-6
    assert ev["price"].min() > 25_000 and ev["price"].max() < 35_000


def test_event_rate_reaches_the_soak_target() -> None:
    # the calm regime has the least flow; 5 M events per 3 h is 463 per second
    calm = SyntheticParams(regime_vol=(0.35, 0.35, 0.35), regime_activity=(0.8, 0.8, 0.8))
    run = simulate(calm, 2, 180.0)
    assert len(run.events) / 180.0 * 3600.0 >= 5e6 / 3


def test_timestamps(ten_minutes) -> None:
    ev = ten_minutes.events
    assert ev["kind"][0] == KIND_CLEAR
    n_snap = int(np.argmax(ev["kind"][1:] != KIND_SNAPSHOT)) + 1
    assert n_snap > 300  # a deep initial snapshot
    assert (ev["exch_ts"][:n_snap] == T0).all()
    assert (ev["local_ts"] >= ev["exch_ts"]).all()
    assert (np.diff(ev["exch_ts"]) >= 0).all()
    assert (np.diff(ev["local_ts"]) >= 0).all()
    assert ev["exch_ts"][-1] <= T0 + 600 * 1_000_000_000
    lat_ms = (ev["local_ts"] - ev["exch_ts"]) / 1e6
    assert 20.0 < np.median(lat_ms) < 40.0
    assert lat_ms.max() > 100.0  # spikes happen
    # latency is autocorrelated: 1-s apart samples of it are strongly correlated
    grid = np.searchsorted(ev["exch_ts"], T0 + np.arange(1, 600) * 1_000_000_000)
    lat = np.log(lat_ms[grid - 1])
    assert np.corrcoef(lat[:-1], lat[1:])[0, 1] > 0.5


def _apply(book, e) -> None:
    book_apply(
        book.bid, book.ask, book.st, book.tick_size, e["kind"], e["side"], e["price"], e["qty"]
    )


def test_replay_never_crossed_and_trades_at_the_touch(short_run) -> None:
    ev = short_run.events
    assert (ev["qty"] >= 0).all()
    tick = short_run.instrument.tick_size
    book = make_book(tick)
    px = np.zeros(64)
    qty = np.zeros(64)
    i = 0
    n = len(ev)
    trades_checked = 0
    while i < n:
        e = ev[i]
        if e["kind"] == KIND_TRADE:
            # a market order: its trades, then the depth updates of the levels it consumed
            j = i
            while j < n and ev[j]["kind"] == KIND_TRADE:
                j += 1
            side = int(e["side"])
            m = top_levels(book.bid, book.ask, book.st, tick, -side, 64, px, qty)
            group = ev[i:j]
            assert (group["side"] == side).all()
            assert (group["exch_ts"] == e["exch_ts"]).all()
            assert j - i <= m
            np.testing.assert_allclose(group["price"], px[: j - i], atol=1e-6)
            assert (group["qty"] > 0).all()
            assert (group["qty"][:-1] == qty[: j - i - 1]).all()  # inner levels fully consumed
            assert group["qty"][-1] <= qty[j - i - 1]
            updates = ev[j : j + (j - i)]
            assert (updates["kind"] == KIND_DEPTH).all() and (updates["side"] == -side).all()
            np.testing.assert_allclose(updates["price"], group["price"], atol=1e-9)
            np.testing.assert_allclose(
                updates["qty"], qty[: j - i] - group["qty"], rtol=0, atol=1e-9
            )
            trades_checked += j - i
            for u in updates:
                _apply(book, u)
            i = j + (j - i)
        else:
            _apply(book, e)
            i += 1
        b = best_bid(book.bid, book.st, tick)
        a = best_ask(book.ask, book.st, tick)
        if e["kind"] not in (KIND_CLEAR, KIND_SNAPSHOT):
            # past the snapshot both sides always exist, and never touch or cross
            assert b < a, f"crossed, locked or one-sided after event {i}: {b} / {a}"
        elif not (math.isnan(b) or math.isnan(a)):
            assert b < a
    assert trades_checked > 500
    _assert_same_book(book, short_run)


def _assert_same_book(book, run) -> None:
    """The replayed events rebuild exactly the generator's own book, level for level."""
    tick = book.tick_size
    size = 1 << 16
    for side, final in ((1, run.final_bids[::-1]), (-1, run.final_asks)):
        got_px = np.zeros(size)
        got_q = np.zeros(size)
        m = top_levels(book.bid, book.ask, book.st, tick, side, size, got_px, got_q)
        assert m == len(final) > 0
        assert np.array_equal(np.rint(got_px[:m] / tick), np.rint(final[:, 0] / tick))
        assert np.array_equal(got_q[:m], final[:, 1])


def test_recentring_keeps_the_stream_consistent() -> None:
    """A fine tick and extreme volatility force window shifts; the stream must stay exact."""
    params = SyntheticParams(
        tick_size=0.01, regime_vol=(3.0, 3.0, 3.0), fair_update_hz=100.0, warmup_s=20.0
    )
    run = simulate(params, 3, 60.0)
    assert run.counters["recentres"] > 0
    bid, ask, _, _, bad = touch_grid(run.events, run.instrument, T0, 10**9, 61)
    assert bad == 0 and np.isfinite(bid).all() and np.isfinite(ask).all()
    book = make_book(params.tick_size)
    book_apply_events(book.bid, book.ask, book.st, book.tick_size, run.events)
    _assert_same_book(book, run)


# ---- statistics ------------------------------------------------------------------------------


def _mid_grid(run, seconds: float, step_ns: int) -> np.ndarray:
    n = int(seconds * 1e9 // step_ns)
    bid, ask, _, _, bad = touch_grid(run.events, run.instrument, T0, step_ns, n)
    assert bad == 0
    return 0.5 * (bid + ask)


def test_realised_volatility_follows_each_regime() -> None:
    params = SyntheticParams(regime_mean_duration_s=(120.0, 120.0, 120.0))
    run = simulate(params, 4, 900.0)
    mid = _mid_grid(run, 900.0, 1_000_000_000)
    r = np.diff(np.log(mid))
    sec = np.arange(len(r), dtype=np.float64)
    reg = run.regime[np.searchsorted(run.regime_t, sec, side="right") - 1]
    seen = 0
    for k in range(3):
        sel = reg == k
        if sel.sum() >= 60:
            seen += 1
            realised = r[sel].std() * math.sqrt(SECONDS_PER_YEAR)
            assert params.regime_vol[k] / 3 < realised < params.regime_vol[k] * 3
    assert seen >= 2
    assert len(np.unique(run.regime)) >= 2


def test_book_is_liquid_near_the_touch(ten_minutes) -> None:
    mid_n = 6000
    bid, ask, bq, aq, _ = touch_grid(ten_minutes.events, ten_minutes.instrument, T0, 10**8, mid_n)
    spread = np.rint((ask - bid) / 0.1)
    assert spread.min() >= 1
    assert np.median(spread) <= 3
    assert np.mean(spread <= 3) > 0.7
    assert 0.3 < np.median(np.concatenate([bq, aq])) < 5.0
    # levels reach far past a maker's +-2.5 bp (75 ticks) quotes
    for side, final in ((1, ten_minutes.final_bids), (-1, ten_minutes.final_asks)):
        touch = final[:, 0].max() if side == 1 else final[:, 0].min()
        dist = np.abs(final[:, 0] - touch) / 0.1
        assert (dist <= 200.5).sum() > 100
        assert dist.max() > 200


def test_informed_flow_moves_the_mid_after_trades(ten_minutes) -> None:
    step = 100_000_000
    mid = _mid_grid(ten_minutes, 600.0, step)
    ev = ten_minutes.events
    trades = ev[ev["kind"] == KIND_TRADE]
    k = (trades["exch_ts"] - T0 - 1) // step  # last sample strictly before the trade
    ok = (k >= 0) & (k + 10 < len(mid))
    for side in (1, -1):
        sel = ok & (trades["side"] == side)
        d = (mid[k[sel] + 10] - mid[k[sel]]) / 0.1
        t_stat = d.mean() / (d.std() / math.sqrt(len(d)))
        assert side * t_stat > 3.0, (side, d.mean(), t_stat)


# ---- definitions and loading -----------------------------------------------------------------


def test_feed_definitions_spell_out_the_defaults() -> None:
    fields = set(SyntheticParams.model_fields)
    for name, duration in (("synthetic", 10800), ("synthetic-short", 600)):
        data = json.loads((FEEDS_DIR / f"{name}.json").read_text())
        assert data["kind"] == "synthetic" and data["duration_s"] == duration
        assert data["description"]
        assert set(data["params"]) == fields
        assert SyntheticParams(**data["params"]) == DEFAULT


def test_load_events_equals_generate(ten_minutes) -> None:
    spec = resolve_feed("synthetic-short")
    assert isinstance(spec, SyntheticFeedSpec)
    events, instrument, identity = load_events(spec, 1)
    assert events.tobytes() == ten_minutes.events.tobytes()
    assert instrument == ten_minutes.instrument
    assert identity["count"] == len(events) and identity["seed"] == 1
    json.dumps(identity)  # run records must be able to store it


@pytest.mark.parametrize(
    ("params", "needle"),
    [
        ({"limit_rate_hz": -1}, "params.limit_rate_hz"),
        ({"regime_vol": [0.5, 0.5]}, "params.regime_vol"),
        ({"no_such_knob": 1}, "params.no_such_knob"),
        ({"tick_size": 1e-6}, "initial_price / tick_size"),
        (
            {"regime_vol": [5, 5, 5], "fair_update_hz": 0.1, "limit_max_distance_ticks": 900},
            "at most",
        ),
    ],
)
def test_invalid_params_are_user_errors(params: dict, needle: str) -> None:
    spec = SyntheticFeedSpec(kind="synthetic", name="bad", params=params, duration_s=1.0)
    with pytest.raises(UserError, match="invalid synthetic parameters") as err:
        load_events(spec, 1)
    assert needle in str(err.value)


def test_invalid_params_in_a_definition_file(tmp_path: Path) -> None:
    path = tmp_path / "mine.json"
    path.write_text(json.dumps({"kind": "synthetic", "params": {"fade_rate_hz": "fast"}}))
    with pytest.raises(UserError, match=r"feed 'mine'.*params.fade_rate_hz"):
        load_events(resolve_feed(path), 1)


def test_docs_parameter_table_is_current() -> None:
    docs = (Path(__file__).resolve().parent.parent / "docs" / "SYNTHETIC.md").read_text()
    assert param_table() in docs
