"""The embedded synthetic market: a seeded limit-order-book simulation that needs no data.

Why it exists: ``make soak`` must run on a fresh machine with no licensed data, on order flow
rich enough that quoting, queue position and adverse selection mean something. The model (a
Cont-Stoikov-Talreja style order-flow book around a latent fair price with volatility regimes,
informed takers and fading liquidity providers) and every parameter are documented in
docs/SYNTHETIC.md; the event loop is in ``synthetic_kernel``.

Determinism: one splitmix64 stream per seed, drawn in a fixed order, so the same seed and
parameters give byte-identical events on every run, whatever the buffer sizes.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Annotated, Any, get_args

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, model_validator

from mm_sim.events import EVENT_DTYPE, Instrument
from mm_sim.feeds import synthetic_kernel as K

SYMBOL = "SYNTH-BTCUSDT"
INVERSE_SYMBOL = "SYNTH-BTCUSD_PERP"  # the same market quoted as a coin-margined contract
VENUE = "synthetic"
SECONDS_PER_YEAR = 365.0 * 24.0 * 3600.0
REGIME_NAMES = ("calm", "normal", "stressed")
# Bump when the events a seed and parameters give change (the disk cache, synthetic_cache.py,
# keys on it; it also keys on this module's and the kernel's source text).
GENERATOR_VERSION = 1

_Vol = Annotated[float, Field(gt=0.0, le=5.0)]
_Dur = Annotated[float, Field(ge=1.0, le=1e7)]
_Act = Annotated[float, Field(gt=0.0, le=20.0)]


class SyntheticParams(BaseModel):
    """Every knob of the synthetic market; defaults are the soak feed (feeds/synthetic.json)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    # instrument and clock
    initial_price: float = Field(30000.0, gt=0.0, le=1e7, description="Fair price at t0.")
    tick_size: float = Field(0.1, gt=0.0, le=1e4, description="Price increment (tick).")
    lot_size: float = Field(0.001, gt=0.0, le=1e4, description="Quantity increment (lot).")
    contract_size: float | None = Field(
        None,
        gt=0.0,
        le=1e7,
        description="Set: an inverse (coin-margined) contract of this many quote units; every "
        "quantity (lot, sizes) is then in contracts. Null: a linear instrument.",
    )
    start_unix_s: int = Field(
        1_685_577_600,
        ge=0,
        le=4_000_000_000,
        description="Wall-clock time of t0 (exch_ts of the snapshot).",
    )
    warmup_s: float = Field(
        300.0, ge=0.0, le=86400.0, description="Simulated, unrecorded time before the snapshot."
    )
    # fair price and volatility regimes (calm, normal, stressed)
    regime_vol: tuple[_Vol, _Vol, _Vol] = Field(
        (0.35, 0.55, 0.95), description="Annualised volatility of the fair price per regime."
    )
    regime_mean_duration_s: tuple[_Dur, _Dur, _Dur] = Field(
        (1800.0, 2400.0, 600.0), description="Mean time spent in each regime (exponential)."
    )
    regime_activity: tuple[_Act, _Act, _Act] = Field(
        (0.8, 1.0, 1.6), description="Multiplier of all order-flow rates in each regime."
    )
    fair_update_hz: float = Field(
        10.0, ge=0.1, le=1000.0, description="Rate of fair-price updates (Poisson)."
    )
    # limit orders
    limit_rate_hz: float = Field(
        180.0, gt=0.0, le=20000.0, description="Limit-order arrivals on each side."
    )
    limit_distance_exponent: float = Field(
        1.0, ge=0.0, le=4.0, description="Power-law exponent of the placement distance."
    )
    limit_max_distance_ticks: int = Field(
        300, ge=5, le=3000, description="Farthest placement from the reference price."
    )
    limit_size_mean: float = Field(
        0.4, gt=0.0, le=1e6, description="Mean limit-order (and cancel) size."
    )
    limit_size_tail: float = Field(
        2.0, gt=1.05, le=50.0, description="Lomax tail index of limit sizes."
    )
    cancel_rate_hz: float = Field(
        0.2, ge=0.0, le=1000.0, description="Cancel rate of each resting mean-sized order."
    )
    fade_rate_hz: float = Field(
        40.0,
        ge=0.0,
        le=10000.0,
        description="Pull rate of a stale touch level, per tick of staleness + 1.",
    )
    fade_margin_ticks: float = Field(
        0.25, ge=0.0, le=100.0, description="How far past fair a touch must be to count as stale."
    )
    # market orders
    market_rate_hz: float = Field(
        8.0, ge=0.0, le=10000.0, description="Uninformed market orders, both sides together."
    )
    informed_rate_hz: float = Field(
        30.0,
        ge=0.0,
        le=10000.0,
        description="Rate at which an informed trader checks for stale quotes.",
    )
    informed_edge_ticks: float = Field(
        0.5, ge=0.0, le=100.0, description="Mispricing (quote vs fair) an informed trader needs."
    )
    market_size_mean: float = Field(0.25, gt=0.0, le=1e6, description="Mean market-order size.")
    market_size_tail: float = Field(
        1.8, gt=1.05, le=50.0, description="Lomax tail index of market-order sizes."
    )
    max_order_size: float = Field(50.0, gt=0.0, le=1e7, description="Cap on any single order size.")
    market_protect_ticks: int = Field(
        50, ge=1, le=1000, description="Market orders fill at most this far beyond the touch."
    )
    # feed latency (local_ts - exch_ts)
    latency_median_ms: float = Field(
        30.0, gt=0.0, le=10000.0, description="Median feed latency (local_ts - exch_ts)."
    )
    latency_log_sigma: float = Field(
        0.3, ge=0.0, le=3.0, description="Stationary std of log latency."
    )
    latency_corr_s: float = Field(
        5.0, gt=0.0, le=86400.0, description="Correlation time of log latency."
    )
    latency_spikes_per_hour: float = Field(
        20.0, ge=0.0, le=36000.0, description="Latency spikes per hour."
    )
    latency_spike_mean_ms: float = Field(
        250.0, ge=0.0, le=60000.0, description="Mean height of a spike (exponential)."
    )
    latency_spike_decay_s: float = Field(
        0.5, gt=0.0, le=3600.0, description="Decay time constant of a spike."
    )

    @model_validator(mode="after")
    def _consistent(self) -> SyntheticParams:
        ticks = self.initial_price / self.tick_size
        if not 100.0 <= ticks <= 1e9:
            raise ValueError(f"initial_price / tick_size = {ticks:.6g}; expected 100 .. 1e9 ticks")
        if self.limit_size_mean < self.lot_size or self.market_size_mean < self.lot_size:
            raise ValueError("limit_size_mean and market_size_mean must be at least one lot")
        if self.max_order_size < self.lot_size:
            raise ValueError("max_order_size must be at least one lot")
        # A typical fair-price step (4 sigma of one update gap, worst regime) must stay well
        # inside the simulator's level window, or the book would be re-centred constantly.
        step = (
            4.0 * max(self.regime_vol) * ticks / math.sqrt(SECONDS_PER_YEAR * self.fair_update_hz)
        )
        reach = self.limit_max_distance_ticks + self.market_protect_ticks + step
        if reach > K.QUARTER:
            raise ValueError(
                f"placement distance + protection + a 4-sigma fair step = {reach:.0f} ticks; "
                f"expected at most {K.QUARTER} (lower the distances, the volatility or the tick "
                "count, or raise fair_update_hz)"
            )
        return self


@dataclass
class SyntheticRun:
    """Events plus the latent truth behind them (for tests and statistics, not for quoting)."""

    events: np.ndarray
    instrument: Instrument
    fair_t: np.ndarray  # seconds since t0 of each fair-price update
    fair_px: np.ndarray  # fair price after that update, quote units
    regime_t: np.ndarray  # seconds since t0 where a regime starts (first entry 0.0)
    regime: np.ndarray  # regime index 0 calm, 1 normal, 2 stressed
    final_bids: np.ndarray  # (price, qty) rows of the generator's own book at the end
    final_asks: np.ndarray
    counters: dict[str, int] = field(default_factory=dict)


def instrument_for(params: SyntheticParams) -> Instrument:
    decimals = max(0, round(-math.log10(params.tick_size))) if params.tick_size < 1 else 0
    if params.contract_size is not None:
        return Instrument(
            INVERSE_SYMBOL,
            VENUE,
            params.tick_size,
            params.lot_size,
            decimals,
            True,
            params.contract_size,
        )
    return Instrument(SYMBOL, VENUE, params.tick_size, params.lot_size, decimals)


def _exact_divisor(step: float) -> float:
    """1/step when that is an integer: prices become ``ticks / div``, the exact decimal."""
    inv = 1.0 / step
    r = round(inv)
    return float(r) if r >= 1 and abs(inv - r) < 1e-9 * r else 0.0


def _pack(params: SyntheticParams, start_ns: int) -> tuple[np.ndarray, np.ndarray]:
    fp = np.zeros(K.N_FP)
    for r in range(3):
        fp[K.P_SIG0 + r] = params.regime_vol[r] / math.sqrt(SECONDS_PER_YEAR)
        fp[K.P_DUR0 + r] = params.regime_mean_duration_s[r]
        fp[K.P_ACT0 + r] = params.regime_activity[r]
    lot = params.lot_size
    fp[K.P_NU] = params.fair_update_hz
    fp[K.P_LAMBDA] = params.limit_rate_hz
    fp[K.P_ALPHA] = params.limit_distance_exponent
    fp[K.P_LIM_SHAPE] = params.limit_size_tail
    fp[K.P_LIM_SCALE] = params.limit_size_mean / lot * (params.limit_size_tail - 1.0)
    fp[K.P_MKT_SHAPE] = params.market_size_tail
    fp[K.P_MKT_SCALE] = params.market_size_mean / lot * (params.market_size_tail - 1.0)
    fp[K.P_SIZE_CAP] = max(1.0, math.floor(params.max_order_size / lot + 1e-9))
    fp[K.P_LIM_MEAN] = params.limit_size_mean / lot
    fp[K.P_THETA] = params.cancel_rate_hz
    fp[K.P_PHI] = params.fade_rate_hz
    fp[K.P_FADE_MARGIN] = params.fade_margin_ticks
    fp[K.P_MU_NOISE] = params.market_rate_hz
    fp[K.P_MU_INF] = params.informed_rate_hz
    fp[K.P_EDGE] = params.informed_edge_ticks
    fp[K.P_LAT_MU] = math.log(params.latency_median_ms / 1000.0)
    fp[K.P_LAT_SIG] = params.latency_log_sigma
    fp[K.P_LAT_TAU] = params.latency_corr_s
    fp[K.P_SPIKE_RATE] = params.latency_spikes_per_hour / 3600.0
    fp[K.P_SPIKE_MEAN] = params.latency_spike_mean_ms / 1000.0
    fp[K.P_SPIKE_TAU] = params.latency_spike_decay_s
    fp[K.P_TICK] = params.tick_size
    fp[K.P_TICK_DIV] = _exact_divisor(params.tick_size)
    fp[K.P_LOT] = lot
    fp[K.P_LOT_DIV] = _exact_divisor(lot)
    ip = np.zeros(K.N_IP, dtype=np.int64)
    ip[K.Q_KMAX] = params.limit_max_distance_ticks
    ip[K.Q_PROTECT] = params.market_protect_ticks
    ip[K.Q_START_NS] = start_ns
    return fp, ip


def seed_state(seed: int) -> np.ndarray:
    """Generator state for a seed: the seed itself, scrambled once so nearby seeds decorrelate."""
    rs = np.array([np.uint64(seed & 0xFFFFFFFFFFFFFFFF)], dtype=np.uint64)
    rs[0] = K.rng_next(rs)
    return rs


def expected_event_rate(params: SyntheticParams) -> float:
    """Events per simulated second to expect (fitted on the default feed; sizes buffers only)."""
    durs = np.asarray(params.regime_mean_duration_s)
    act = float(np.dot(params.regime_activity, durs) / durs.sum())
    flow = 2.0 * params.limit_rate_hz * 1.65 + 1.2 * (
        params.market_rate_hz + params.informed_rate_hz
    )
    return act * flow + 4.0 * params.fair_update_hz


# What the generator did, by process (reported with each run; not visible in the events).
_COUNTERS = {
    "places": K.I_N_PLACES,
    "cancels": K.I_N_CANCELS,
    "fades": K.I_N_FADES,
    "noise": K.I_N_NOISE,
    "informed": K.I_N_INFORMED,
    "recentres": K.I_N_RECENTRES,
    "skipped": K.I_N_SKIPPED,
}


def _grow(a: np.ndarray, n: int) -> np.ndarray:
    b = np.zeros(max(2 * len(a), n), dtype=a.dtype)
    b[: len(a)] = a
    return b


def simulate(
    params: SyntheticParams, seed: int, duration_s: float, *, initial_capacity: int | None = None
) -> SyntheticRun:
    """Run warm-up, write the t0 snapshot, then simulate ``duration_s`` seconds of events.

    Buffers are pre-sized from the expected event rate and doubled when full;
    ``initial_capacity`` overrides the first size (tests use it to prove that growing the
    buffers mid-run does not change the output).
    """
    if not (duration_s > 0 and math.isfinite(duration_s)):
        raise ValueError(f"duration_s must be a positive number, got {duration_s!r}")
    fp, ip = _pack(params, params.start_unix_s * 1_000_000_000)
    rs = seed_state(int(seed))
    fs = np.zeros(K.N_FS)
    ist = np.zeros(K.N_IS, dtype=np.int64)
    fs[K.S_T] = -params.warmup_s
    fs[K.S_LOGP] = math.log(params.initial_price)
    fs[K.S_FAIR] = params.initial_price / params.tick_size
    fs[K.S_TMARK] = fs[K.S_T]
    ist[K.I_BASE] = math.floor(fs[K.S_FAIR]) - K.WINDOW // 2
    ist[K.I_BB] = -1
    ist[K.I_BA] = -1
    ist[K.I_LAST_LOCAL] = np.iinfo(np.int64).min
    # Start in a regime drawn from the chain's long-run occupancy (proportional to durations).
    durs = np.asarray(params.regime_mean_duration_s)
    u = K.rng_uniform(rs) * durs.sum()
    ist[K.I_REG] = int(np.searchsorted(np.cumsum(durs), u, side="right").clip(0, 2))
    fs[K.S_TSWITCH] = fs[K.S_T] + durs[ist[K.I_REG]] * K.rng_exponential(rs)
    bq = np.zeros(K.WINDOW, dtype=np.int64)
    aq = np.zeros(K.WINDOW, dtype=np.int64)
    btree = np.zeros(K.WINDOW + 1, dtype=np.int64)
    atree = np.zeros(K.WINDOW + 1, dtype=np.int64)
    scratch = np.zeros((params.market_protect_ticks + 1, 2), dtype=np.int64)
    if initial_capacity is None:
        n_events = int(expected_event_rate(params) * duration_s * 1.15) + 4 * K.WINDOW + 1024
        n_fair = int(params.fair_update_hz * duration_s * 1.1) + 64
        n_reg = 64
    else:
        n_events = n_fair = n_reg = max(1, initial_capacity)
    out = np.zeros(n_events, dtype=EVENT_DTYPE)
    fair_t = np.zeros(n_fair)
    fair_px = np.zeros(n_fair)
    reg_t = np.zeros(n_reg)
    reg_state = np.zeros(n_reg, dtype=np.int64)

    mk: K.Market = (rs, fp, ip, fs, ist, bq, aq, btree, atree)

    def loop(t_end: float, emit: bool, n: int) -> int:
        nonlocal out, fair_t, fair_px, reg_t, reg_state
        while True:
            status, n = K.run(mk, out, n, fair_t, fair_px, reg_t, reg_state, scratch, t_end, emit)
            if status == K.STATUS_DONE:
                return int(n)
            if status == K.STATUS_OUT_FULL:
                out = _grow(out, len(out) + 4 * K.WINDOW)
            elif status == K.STATUS_FAIR_FULL:
                fair_t, fair_px = _grow(fair_t, 0), _grow(fair_px, 0)
            else:
                reg_t, reg_state = _grow(reg_t, 0), _grow(reg_state, 0)

    loop(0.0, False, 0)
    for index in _COUNTERS.values():
        ist[index] = 0  # count the recorded part only
    first_regime = int(ist[K.I_REG])
    levels_now = int(ist[K.I_NB] + ist[K.I_NA]) + 1
    if len(out) < levels_now:
        out = _grow(out, levels_now)
    n = K.write_snapshot(mk, out, 0)
    n = loop(float(duration_s), True, n)
    nf = int(ist[K.I_N_FAIR])
    nr = int(ist[K.I_N_REGSW])
    counters = {name: int(ist[index]) for name, index in _COUNTERS.items()}

    def levels(q: np.ndarray) -> np.ndarray:
        idx = np.flatnonzero(q)
        ticks = (int(ist[K.I_BASE]) + idx).astype(np.float64)
        px = ticks / fp[K.P_TICK_DIV] if fp[K.P_TICK_DIV] > 0 else ticks * fp[K.P_TICK]
        qty = q[idx] / fp[K.P_LOT_DIV] if fp[K.P_LOT_DIV] > 0 else q[idx] * fp[K.P_LOT]
        return np.column_stack([px, qty])

    # Shrink in place (realloc) rather than copy: a 3-hour feed is ~300 MB.
    out.resize((n,), refcheck=False)
    return SyntheticRun(
        events=out,
        instrument=instrument_for(params),
        fair_t=fair_t[:nf].copy(),
        fair_px=fair_px[:nf].copy() * params.tick_size,
        regime_t=np.concatenate([[0.0], reg_t[:nr]]),
        regime=np.concatenate([[first_regime], reg_state[:nr]]).astype(np.int64),
        final_bids=levels(bq),
        final_asks=levels(aq),
        counters=counters,
    )


def generate(
    params: SyntheticParams, seed: int, duration_s: float
) -> tuple[np.ndarray, Instrument]:
    """Events (EVENT_DTYPE, ordered by local_ts) and the instrument of a synthetic feed."""
    run = simulate(params, seed, duration_s)
    return run.events, run.instrument


UNITS = {
    "initial_price": "quote",
    "tick_size": "quote",
    "lot_size": "base",
    "contract_size": "quote per contract",
    "start_unix_s": "s (Unix)",
    "warmup_s": "s",
    "regime_vol": "1/sqrt(year)",
    "regime_mean_duration_s": "s",
    "regime_activity": "x",
    "fair_update_hz": "1/s",
    "limit_rate_hz": "1/s per side",
    "limit_distance_exponent": "-",
    "limit_max_distance_ticks": "ticks",
    "limit_size_mean": "base",
    "limit_size_tail": "-",
    "cancel_rate_hz": "1/s per order",
    "fade_rate_hz": "1/s",
    "fade_margin_ticks": "ticks",
    "market_rate_hz": "1/s",
    "informed_rate_hz": "1/s",
    "informed_edge_ticks": "ticks",
    "market_size_mean": "base",
    "market_size_tail": "-",
    "max_order_size": "base",
    "market_protect_ticks": "ticks",
    "latency_median_ms": "ms",
    "latency_log_sigma": "-",
    "latency_corr_s": "s",
    "latency_spikes_per_hour": "1/h",
    "latency_spike_mean_ms": "ms",
    "latency_spike_decay_s": "s",
}


def _range_text(metadata: list[Any]) -> str:
    lo = hi = ""
    for m in metadata:
        for op in ("gt", "ge", "lt", "le"):
            value = getattr(m, op, None)
            if value is None:
                continue
            text = f"{value:g}" if isinstance(value, float) else str(value)
            if op in ("gt", "ge"):
                lo = ("> " if op == "gt" else ">= ") + text
            elif op in ("lt", "le"):
                hi = ("< " if op == "lt" else "<= ") + text
    return ", ".join(x for x in (lo, hi) if x)


def param_table() -> str:
    """The Markdown parameter table of docs/SYNTHETIC.md, built from the model itself."""
    rows = ["| name | meaning | unit | default | range |", "| --- | --- | --- | --- | --- |"]
    for name, f in SyntheticParams.model_fields.items():
        meta = list(f.metadata)
        default = f.default
        if isinstance(default, tuple):
            inner = get_args(get_args(f.annotation)[0])[1]
            meta = list(inner.metadata)
            shown = "(" + ", ".join(f"{v:g}" for v in default) + ")"
            rng = "each " + _range_text(meta)
        else:
            shown = f"{default:g}" if isinstance(default, float) else str(default)
            rng = _range_text(meta)
        rows.append(f"| `{name}` | {f.description} | {UNITS[name]} | {shown} | {rng} |")
    return "\n".join(rows)


# ---- statistics of a generated feed (docs/SYNTHETIC.md is produced from these) ---------------


def touch_grid(
    events: np.ndarray, instrument: Instrument, t0_ns: int, step_ns: int, n: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, int]:
    """Best bid, best ask and their quantities on a time grid, plus crossed-event count."""
    from mm_sim.core.book import make_book

    book = make_book(instrument.tick_size)
    bid, ask, bq, aq = (np.zeros(n) for _ in range(4))
    bad = K.touch_samples(
        events, book.bid, book.ask, book.st, book.tick_size, t0_ns, step_ns, bid, ask, bq, aq
    )
    return bid, ask, bq, aq, int(bad)


def feed_statistics(
    run: SyntheticRun, params: SyntheticParams, duration_s: float
) -> dict[str, Any]:
    """Measured properties of a run: what the docs report and the tests bound."""
    from mm_sim.core.book import book_apply_events, make_book, top_levels
    from mm_sim.events import KIND_NAMES, KIND_TRADE

    ev = run.events
    tick = params.tick_size
    t0 = params.start_unix_s * 1_000_000_000
    step = 100_000_000
    n = int(duration_s * 10)
    bid, ask, bq, aq, crossed = touch_grid(ev, run.instrument, t0, step, n)
    spread = np.rint((ask - bid) / tick)
    mid = 0.5 * (bid + ask)
    # realised volatility of the mid from 1-s log returns, split by the regime at the start
    m1 = mid[::10]
    r1 = np.diff(np.log(m1))
    sec = np.arange(len(r1), dtype=np.float64)
    reg = run.regime[np.searchsorted(run.regime_t, sec, side="right") - 1]
    per_regime = {}
    for r, name in enumerate(REGIME_NAMES):
        sel = reg == r
        per_regime[name] = {
            "seconds": int(sel.sum()),
            "configured_vol": params.regime_vol[r],
            "realised_vol": float(r1[sel].std() * math.sqrt(SECONDS_PER_YEAR))
            if sel.sum() > 30
            else None,
        }
    # mid minus fair (fair as of each grid time)
    fi = np.searchsorted(run.fair_t, np.arange(n) * 0.1, side="right") - 1
    fair = np.where(fi >= 0, run.fair_px[np.maximum(fi, 0)], params.initial_price)
    track = (mid - fair) / tick
    # markouts: mid change over the next second after each trade, from the pre-trade mid
    trades = ev[ev["kind"] == KIND_TRADE]
    k = (trades["exch_ts"] - t0 - 1) // step
    ok = (k >= 0) & (k + 10 < n)
    markout = {}
    for side, name in ((1, "buy"), (-1, "sell")):
        sel = ok & (trades["side"] == side)
        d = (mid[k[sel] + 10] - mid[k[sel]]) / tick
        markout[name] = {
            "trades": int(sel.sum()),
            "mean_ticks": float(d.mean()),
            "stderr_ticks": float(d.std() / math.sqrt(max(1, len(d)))),
        }
    # visible depth every 10 s: levels within 200 ticks of the touch, farthest level
    book = make_book(tick)
    px = np.zeros(4096)
    qty = np.zeros(4096)
    times = t0 + np.arange(10, int(duration_s), 10, dtype=np.int64) * 1_000_000_000
    cuts = np.searchsorted(ev["exch_ts"], times, side="right")
    prev = 0
    within: list[int] = []
    farthest: list[float] = []
    qty_75: list[float] = []
    for c in cuts:
        book_apply_events(book.bid, book.ask, book.st, book.tick_size, ev[prev:c])
        prev = int(c)
        for side in (1, -1):
            m = top_levels(book.bid, book.ask, book.st, book.tick_size, side, 4096, px, qty)
            dist = np.abs(px[:m] - px[0]) / tick
            within.append(int((dist <= 200.5).sum()))
            farthest.append(float(dist.max()))
            qty_75.append(float(qty[:m][dist <= 75.5].sum()))
    lat_ms = (ev["local_ts"] - ev["exch_ts"]) / 1e6
    counts = {name: int((ev["kind"] == kind).sum()) for kind, name in KIND_NAMES.items()}
    uniq, cnt = np.unique(spread[np.isfinite(spread)], return_counts=True)
    spread_dist = {int(u): float(c / cnt.sum()) for u, c in zip(uniq, cnt, strict=True)}
    return {
        "events": len(ev),
        "events_per_s": len(ev) / duration_s,
        "by_kind": counts,
        "crossed_events": crossed,
        "spread_ticks": spread_dist,
        "spread_mean_ticks": float(np.nanmean(spread)),
        "touch_qty_pct": dict(
            zip(
                ("p10", "p50", "p90"),
                map(float, np.percentile(np.concatenate([bq, aq]), [10, 50, 90])),
                strict=True,
            )
        ),
        "regimes": per_regime,
        "realised_vol_all": float(r1.std() * math.sqrt(SECONDS_PER_YEAR)),
        "mid_minus_fair_ticks": dict(
            zip(("p5", "p50", "p95"), map(float, np.percentile(track, [5, 50, 95])), strict=True)
        ),
        "trades": len(trades),
        "traded_base": float(trades["qty"].sum()),
        "trade_qty_pct": dict(
            zip(
                ("p50", "p90", "p99"),
                map(float, np.percentile(trades["qty"], [50, 90, 99])),
                strict=True,
            )
        ),
        "markout_1s": markout,
        "levels_within_200_ticks_median": float(np.median(within)),
        "farthest_level_ticks_median": float(np.median(farthest)),
        "qty_within_75_ticks_median": float(np.median(qty_75)),
        "latency_ms_pct": dict(
            zip(
                ("p1", "p50", "p99", "p99.9", "max"),
                map(float, np.percentile(lat_ms, [1, 50, 99, 99.9, 100])),
                strict=True,
            )
        ),
        "counters": run.counters,
    }


def _markdown(
    stats: dict[str, Any], gen_s: float, cpu_s: float, feed: str, seed: int, duration_s: float
) -> str:
    """The statistics section of docs/SYNTHETIC.md, exactly as measured."""
    lines = [
        f"Feed `{feed}`, seed {seed}, {duration_s:,.0f} simulated seconds.",
        "",
        f"- events: {stats['events']:,} ({stats['events_per_s']:,.0f} per simulated second); "
        f"generated in {gen_s:.2f} s wall / {cpu_s:.2f} s CPU (time.perf_counter / "
        "time.process_time around `simulate`, kernels already compiled, one thread)",
        "- by kind: " + ", ".join(f"{k} {v:,}" for k, v in stats["by_kind"].items()),
        f"- events that left the replayed book crossed or locked: {stats['crossed_events']}",
        f"- trades: {stats['trades']:,}, traded {stats['traded_base']:,.1f} base units; "
        "trade size p50/p90/p99: "
        + " / ".join(f"{v:.3f}" for v in stats["trade_qty_pct"].values()),
        "- generator counters: " + ", ".join(f"{k} {v:,}" for k, v in stats["counters"].items()),
        "",
        "Touch spread (sampled every 100 ms):",
        "",
        "| spread, ticks | share of time |",
        "| ---: | ---: |",
    ]
    dist = stats["spread_ticks"]
    for s in sorted(dist):
        if s <= 8:
            lines.append(f"| {s} | {dist[s]:.1%} |")
    rest = sum(v for s, v in dist.items() if s > 8)
    lines += [
        f"| > 8 | {rest:.1%} |",
        "",
        f"Mean spread {stats['spread_mean_ticks']:.2f} ticks. Touch quantity (both sides, 100 ms "
        "samples) p10/p50/p90: "
        + " / ".join(f"{v:.3f}" for v in stats["touch_qty_pct"].values())
        + " base units.",
        "",
        "Realised volatility of the mid (1-s log returns, annualised) per regime:",
        "",
        "| regime | seconds | configured | realised |",
        "| --- | ---: | ---: | ---: |",
    ]
    for name, r in stats["regimes"].items():
        rv = "n/a" if r["realised_vol"] is None else f"{r['realised_vol']:.3f}"
        lines.append(f"| {name} | {r['seconds']:,} | {r['configured_vol']:.2f} | {rv} |")
    m = stats["markout_1s"]
    lines += [
        f"| all | | | {stats['realised_vol_all']:.3f} |",
        "",
        "- mid minus fair, ticks (p5/p50/p95): "
        + " / ".join(f"{v:.2f}" for v in stats["mid_minus_fair_ticks"].values()),
        f"- mid change over the next 1 s after a buyer-initiated trade: "
        f"{m['buy']['mean_ticks']:+.2f} ticks (s.e. {m['buy']['stderr_ticks']:.2f}, "
        f"{m['buy']['trades']:,} trades); after a seller-initiated trade: "
        f"{m['sell']['mean_ticks']:+.2f} ticks (s.e. {m['sell']['stderr_ticks']:.2f}, "
        f"{m['sell']['trades']:,} trades)",
        f"- visible depth (every 10 s, per side, medians): "
        f"{stats['levels_within_200_ticks_median']:.0f} non-empty levels within 200 ticks of "
        f"the touch, farthest level {stats['farthest_level_ticks_median']:.0f} ticks away, "
        f"{stats['qty_within_75_ticks_median']:.1f} base units within 75 ticks (2.5 bp)",
        "- feed latency local_ts - exch_ts, ms (p1/p50/p99/p99.9/max): "
        + " / ".join(f"{v:.1f}" for v in stats["latency_ms_pct"].values()),
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """Print the measured statistics of a synthetic feed as Markdown (for docs/SYNTHETIC.md)."""
    import argparse
    import time

    from mm_sim.feeds.spec import SyntheticFeedSpec, resolve_feed

    ap = argparse.ArgumentParser(prog="python -m mm_sim.feeds.synthetic", description=main.__doc__)
    ap.add_argument("--feed", default="synthetic", help="feed name or definition path")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--params-table", action="store_true", help="print the parameter table only")
    args = ap.parse_args(argv)
    if args.params_table:
        print(param_table())
        return 0
    spec = resolve_feed(args.feed)
    if not isinstance(spec, SyntheticFeedSpec):
        raise SystemExit(f"{args.feed} is not a synthetic feed")
    params = SyntheticParams(**spec.params)
    simulate(params, args.seed, 1.0)  # load (or compile) the kernels outside the timing
    t = time.perf_counter()
    c = time.process_time()
    run = simulate(params, args.seed, spec.duration_s)
    gen_s = time.perf_counter() - t
    cpu_s = time.process_time() - c
    stats = feed_statistics(run, params, spec.duration_s)
    print(_markdown(stats, gen_s, cpu_s, spec.name, args.seed, spec.duration_s))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
