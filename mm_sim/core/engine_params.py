"""The flat parameter vector the core's kernels read, built from a profile, overrides and an
instrument: the one place where configuration units (ms, bps, rates per minute) become the
kernels' (ns, fractions, rates per ns), so that a hot-swapped override and a fresh engine
cannot disagree."""

from __future__ import annotations

import numpy as np

from mm_sim.config import (
    DecisionPoints,
    LatencyMode,
    OrderType,
    Overrides,
    Profile,
    QueueModel,
    ThroughFill,
)
from mm_sim.core import venue_state
from mm_sim.core.params import (
    K_ACK_NS,
    K_CANCEL_NS,
    K_CSIZE,
    K_ENTRY_NS,
    K_FEED_MULT,
    K_GAMMA,
    K_HALF_BPS,
    K_IMPACT_LEVELS,
    K_IMPACT_RATIO,
    K_LAT_MODE,
    K_LOT,
    K_MAKER_BPS,
    K_MARK_NS,
    K_MAX_DELTA_RATIO,
    K_MAX_IN_FLIGHT,
    K_MAX_NOTIONAL,
    K_MAX_POS,
    K_MIN_INTERVAL_NS,
    K_ORDER_QTY,
    K_QUEUE_MODEL,
    K_QUEUE_POWER,
    K_REPL_CAP,
    K_REPL_RATE,
    K_RULES,
    K_SIZE,
    K_SPREAD_DELTA_BPS,
    K_TAIL_AGE_NS,
    K_TAKER_BPS,
    K_TAU_S,
    K_TICK,
    K_VENUE_CAP,
    K_VENUE_RATE,
    K_VOL_HL_S,
    K_VOL_SAMPLE_NS,
    LAT_CONSTANT,
    LAT_FEED,
)
from mm_sim.errors import UserError
from mm_sim.events import Instrument


def override_values(o: Overrides) -> dict[int, float]:
    """Overrides -> parameter slots (the unit conversions live here and nowhere else)."""
    return {
        K_MIN_INTERVAL_NS: o.min_interval_ms * 1e6,
        K_REPL_CAP: float(o.replace_rate_per_min),
        K_REPL_RATE: o.replace_rate_per_min / 60e9,
        K_SPREAD_DELTA_BPS: float(o.base_spread_bps_delta),
        K_TAIL_AGE_NS: o.tail_age_ms * 1e6,
        K_IMPACT_RATIO: float(o.impact_cap_ratio),
        K_MAX_DELTA_RATIO: float(o.max_delta_ratio),
    }


def fill_rules(profile: Profile) -> int:
    """The profile's order type and fill rules as the venue's RULE_* bits."""
    m = profile.matching
    rules = 0
    if profile.quoting.order_type == OrderType.post_only:
        rules |= venue_state.RULE_POST_ONLY
    if not m.crossing_fills:
        rules |= venue_state.RULE_NO_CROSS_FILLS
    if m.through_fill == ThroughFill.order:
        rules |= venue_state.RULE_THROUGH_ORDER
    if profile.quoting.decide == DecisionPoints.event:
        rules |= venue_state.RULE_DECIDE_EACH_EVENT
    return rules


def contract_size_of(instrument: Instrument) -> float:
    """The kernels' inverse switch: the contract size of an inverse instrument, else 0."""
    if not instrument.inverse:
        return 0.0
    assert instrument.contract_size is not None  # Instrument checks it
    return float(instrument.contract_size)


def make_params(profile: Profile, overrides: Overrides, instrument: Instrument) -> np.ndarray:
    """The flat parameter vector the kernels read (units: ns, bps, base/quote currency)."""
    q = profile.quoting
    lat = profile.latency
    lim = profile.limiter
    tick = profile.instrument.tick_size or instrument.tick_size
    lot = profile.instrument.lot_size or instrument.lot_size
    if q.order_qty < lot:
        raise UserError(
            f"profile {profile.name}: quoting.order_qty = {q.order_qty} is below one lot "
            f"({lot}); the strategy could never quote"
        )
    p = np.zeros(K_SIZE)
    p[K_TICK] = tick
    p[K_LOT] = lot
    p[K_ORDER_QTY] = q.order_qty
    p[K_HALF_BPS] = q.base_half_spread_bps
    p[K_GAMMA] = q.gamma
    p[K_TAU_S] = q.horizon_s
    p[K_VOL_HL_S] = q.vol_halflife_s
    p[K_VOL_SAMPLE_NS] = q.vol_sample_ms * 1e6
    p[K_IMPACT_LEVELS] = q.impact_levels
    p[K_MAX_POS] = profile.inventory.max_position
    p[K_MAX_NOTIONAL] = profile.inventory.max_notional
    p[K_MAKER_BPS] = profile.fees.maker_bps
    p[K_TAKER_BPS] = profile.fees.taker_bps
    p[K_LAT_MODE] = LAT_FEED if lat.mode == LatencyMode.feed else LAT_CONSTANT
    p[K_ENTRY_NS] = lat.entry_ms * 1e6
    p[K_CANCEL_NS] = lat.cancel_ms * 1e6
    p[K_ACK_NS] = lat.ack_ms * 1e6
    p[K_FEED_MULT] = lat.feed_mult
    p[K_QUEUE_MODEL] = (
        venue_state.QUEUE_PROBABILISTIC
        if profile.queue.model == QueueModel.probabilistic
        else venue_state.QUEUE_CONSERVATIVE
    )
    p[K_QUEUE_POWER] = profile.queue.power
    p[K_MAX_IN_FLIGHT] = lim.max_in_flight
    p[K_VENUE_CAP] = lim.venue_budget
    p[K_VENUE_RATE] = lim.venue_budget / (lim.venue_window_ms * 1e6)
    p[K_MARK_NS] = round(profile.mark_interval_ms * 1e6)
    p[K_RULES] = fill_rules(profile)
    p[K_CSIZE] = contract_size_of(instrument)
    for idx, val in override_values(overrides).items():
        p[idx] = val
    return p
