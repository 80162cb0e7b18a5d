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
from typing import Annotated

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
