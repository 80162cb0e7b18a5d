"""The strategy profile: instrument, quoting, inventory, fees, latency, queue, matching, limiter
and gates, each a frozen section validated on load."""

from __future__ import annotations

from enum import StrEnum
from typing import Any

from pydantic import Field, field_validator, model_validator
from pydantic_core import PydanticCustomError
from pydantic_settings import BaseSettings, SettingsConfigDict

from mm_sim.config.file_source import sources
from mm_sim.config.overrides import Section, refuse_bool
from mm_sim.events import Instrument


class QueueModel(StrEnum):
    conservative = "conservative"
    probabilistic = "probabilistic"


class LatencyMode(StrEnum):
    constant = "constant"
    feed = "feed"


class OrderType(StrEnum):
    post_only = "post_only"  # Binance GTX / LIMIT_MAKER: rejected if it would cross on arrival
    limit = "limit"  # plain GTC limit: takes what it crosses on arrival, the rest rests


class EventOrder(StrEnum):
    exchange = "exchange"  # two cursors: venue in exchange-time order, strategy in local order
    file = "file"  # one cursor in file (local receive) order for both


class DecisionPoints(StrEnum):
    timestamp = "timestamp"  # once per local timestamp: a whole message, then one decision
    event = "event"  # after every event (a diff's levels one by one); snapshots grouped


class ThroughFill(StrEnum):
    printed = "print"  # a print through our price fills at most the printed size
    order = "order"  # ... fills our whole remaining order (hftbacktest's rule)


class InstrumentCfg(Section):
    tick_size: float | None = Field(
        None,
        gt=0,
        description="Price tick; null = taken from the feed's metadata. Every run (soak, live, "
        "sweep, validate tuner) refuses one more than 100x from the feed's own tick, either way.",
    )
    lot_size: float | None = Field(
        None, gt=0, description="Quantity step; null = taken from the feed's metadata."
    )
    inverse: bool | None = Field(
        None,
        description="Coin-margined (inverse) contract: quantity in contracts, money in the base "
        "coin; null = taken from the feed's metadata.",
    )
    contract_size: float | None = Field(
        None,
        gt=0,
        description="Quote currency per contract of an inverse instrument (100 for "
        "BTCUSD_PERP); set, it makes the instrument inverse unless inverse is false; null = "
        "taken from the feed's metadata.",
    )


class QuotingCfg(Section):
    order_qty: float = Field(
        0.01,
        gt=0,
        description="Quote size per side, base units; at most inventory.max_position, and (in a "
        "replayed run: soak, sweep cell, validate tuner) worth at most inventory.max_notional "
        "at the feed's price.",
    )
    base_half_spread_bps: float = Field(
        1.0, ge=0, le=500, description="Half-spread around the reservation price, bps of mid."
    )
    gamma: float = Field(
        0.1, ge=0, le=100, description="Avellaneda-Stoikov risk aversion (inventory skew)."
    )
    horizon_s: float = Field(
        60.0, gt=0, le=86400, description="A-S horizon tau, seconds (skew = q*gamma*sigma^2*tau)."
    )
    vol_halflife_s: float = Field(
        30.0, gt=0, le=86400, description="Half-life of the EWMA volatility estimate, seconds."
    )
    vol_sample_ms: float = Field(
        100.0, gt=0, le=60000, description="Step on which mid returns feed the EWMA."
    )
    impact_levels: int = Field(
        5, ge=1, le=100, description="Levels near the touch whose visible size caps our size."
    )
    order_type: OrderType = Field(
        OrderType.post_only,
        description="post_only: a quote that would cross on arrival is rejected (GTX); "
        "limit: it takes liquidity as taker.",
    )
    decide: DecisionPoints = Field(
        DecisionPoints.timestamp,
        description="timestamp: the strategy decides once everything received at one local "
        "time is applied (a whole depth message); event: after every event, on the book as "
        "each level of a message leaves it.",
    )


class InventoryCfg(Section):
    max_position: float = Field(0.1, gt=0, description="Absolute position limit, base units.")
    max_notional: float = Field(
        10000.0, gt=0, description="Absolute position notional limit, quote currency."
    )


class FeesCfg(Section):
    maker_bps: float = Field(
        -0.5, ge=-50, le=50, description="Maker fee, bps of notional; negative = rebate."
    )
    taker_bps: float = Field(4.0, ge=-50, le=50, description="Taker fee, bps of notional.")


class LatencyCfg(Section):
    mode: LatencyMode = Field(
        LatencyMode.constant,
        description="constant: fixed values; feed: entry = feed_mult * feed lag + entry_ms.",
    )
    entry_ms: float = Field(5.0, ge=0, le=10000, description="Order entry latency, ms.")
    cancel_ms: float = Field(5.0, ge=0, le=10000, description="Cancel latency, ms.")
    ack_ms: float = Field(5.0, ge=0, le=10000, description="Exchange response (ack) latency, ms.")
    feed_mult: float = Field(
        1.0, ge=0, le=100, description="In feed mode: multiple of the observed feed lag."
    )


class QueueCfg(Section):
    model: QueueModel = Field(QueueModel.probabilistic, description="Queue-position model.")
    power: float = Field(
        2.0, gt=0, le=10, description="Probabilistic model: f(x) = x^power in P = f(b)/(f(b)+f(a))."
    )


class MatchingCfg(Section):
    """The simulated venue's fill rules; each changes reported numbers (docs/CORE.md)."""

    event_order: EventOrder = Field(
        EventOrder.exchange,
        description="exchange: the venue consumes the feed in exchange-time order, the strategy "
        "in local-time order; file: one cursor in file order for both.",
    )
    reorder_window_ms: float = Field(
        1000.0,
        ge=0,
        le=600000,
        description="exchange order, replay: the most an event's exchange time may precede its "
        "receipt; an event received later than this is matched at local_ts - window.",
    )
    live_reorder_window_ms: float = Field(
        100.0,
        ge=0,
        le=60000,
        description="exchange order, Engine.run_live (a live message at a time, push mode): the "
        "same window; the simulated venue runs this far behind the strategy, so fill reports "
        "arrive up to this much later. The live soak reads its feed in chunks through "
        "Engine.run and uses reorder_window_ms.",
    )
    crossing_fills: bool = Field(
        True,
        description="Fill a resting order as maker when the book moves through its price "
        "without a print.",
    )
    through_fill: ThroughFill = Field(
        ThroughFill.printed,
        description="A print through our price fills at most its size (print) or our whole "
        "remaining order (order).",
    )


class LimiterCfg(Section):
    max_in_flight: int = Field(
        4, ge=1, le=1000, description="Actions awaiting ack at once before 'concurrency' blocks."
    )
    venue_budget: int = Field(
        50, ge=1, le=100000, description="Venue request budget per window ('throttle')."
    )
    venue_window_ms: float = Field(
        1000.0, gt=0, le=3600000, description="Window of the venue request budget, ms."
    )


def _gate(default: float, text: str) -> Any:
    return Field(default, description=text)


class HardGates(Section):
    """Must pass; any failure makes the verdict FAIL."""

    net_bps_min: float = _gate(2.5, "Total net edge must be at least this.")
    adverse_p95_max: float = _gate(5.0, "p95 of per-fill adverse cost (1 s markout) at most this.")
    cancel_ratio_max: float = _gate(
        0.65,
        "Orders ended by a cancel or a replace / orders sent (places + replaces) at most this.",
    )
    maker_share_min_pct: float = _gate(80.0, "Maker share of traded notional at least this.")


class SoftGates(Section):
    """Targets and ideals; a miss is reported as a warning, not a failure."""

    net_bps_min: float = _gate(2.8, "Target total net edge.")
    net_bps_ideal: float = _gate(3.0, "Ideal total net edge.")
    slippage_p95_max: float = _gate(3.5, "Target p95 of per-fill slippage cost.")
    slippage_p95_ideal: float = _gate(3.0, "Ideal p95 of per-fill slippage cost.")
    order_age_p95_max_ms: float = _gate(340.0, "Target p95 order age at fill.")
    order_age_p95_ideal_ms: float = _gate(330.0, "Ideal p95 order age at fill.")
    ws_lag_p95_max_ms: float = _gate(130.0, "Target p95 feed lag (local - exchange time).")
    ws_lag_p95_ideal_ms: float = _gate(120.0, "Ideal p95 feed lag.")
    maker_share_min_pct: float = _gate(85.0, "Target maker share of traded notional.")
    maker_share_ideal_pct: float = _gate(90.0, "Ideal maker share of traded notional.")


class DecisionBands(Section):
    """The seed's decision matrix on net_bps: >= success, >= ok, >= warn, else FAIL."""

    success: float = _gate(3.0, "net_bps at or above: SUCCESS (run the 24 h soak).")
    ok: float = _gate(2.8, "net_bps at or above: OK (1-2 adjustments, re-run 3 h).")
    warn: float = _gate(2.5, "net_bps at or above: WARN (targeted package); below: FAIL.")

    @model_validator(mode="after")
    def _ordered(self) -> DecisionBands:
        if not self.success >= self.ok >= self.warn:
            raise ValueError("bands must satisfy success >= ok >= warn")
        return self


class VenueRuleGates(Section):
    """Binance Futures' quantitative trading rules, judged per cycle (docs/REPORTS.md §3).

    A cycle is judged on a rule when its order count reaches the rule's recording threshold;
    a judged cycle at or above the ban ratio fails the rule's hard gate.
    """

    # Rounded to whole ns and divided by: a whole second at least (the venue's cycle is 600 s).
    cycle_s: float = Field(600.0, ge=1, le=86400, description="Length of a rule cycle.")
    invalid_cancel_s: float = Field(
        5.0,
        ge=0,
        le=3600,
        description="An order cancelled sooner than this after placement is an invalid cancel.",
    )
    dust_notional: float = Field(
        50.0,
        ge=0,
        description="An order whose value (qty x price, quote currency) is below this is dust.",
    )
    ufr_recording_orders: int = Field(
        10000, ge=0, description="Unfilled Ratio: orders in a cycle from which it is judged."
    )
    ufr_ban: float = Field(0.99, ge=0, le=1, description="Unfilled Ratio at or above this: ban.")
    icr_recording_orders: int = Field(
        5000,
        ge=0,
        description="Invalid Cancellation Ratio: GTC/GTX orders in a cycle to be judged.",
    )
    icr_ban: float = Field(
        0.99, ge=0, le=1, description="Invalid Cancellation Ratio at or above this: ban."
    )
    dr_recording_orders: int = Field(
        10000, ge=0, description="Dust Ratio: orders in a cycle from which it is judged."
    )
    dr_ban: float = Field(0.9, ge=0, le=1, description="Dust Ratio at or above this: ban.")


class ErrorBarsCfg(Section):
    """The block bootstrap behind the statistical error bars (docs/REPORTS.md §2)."""

    # Rounded to whole ns and divided by: a whole second at least (a block holds marks).
    block_s: float = Field(
        300.0,
        ge=1,
        le=86400,
        description="Bootstrap block length (time blocks of fills and marks).",
    )
    min_blocks: int = Field(
        20,
        ge=2,
        le=10000,
        description="Shorter blocks are used when a run has fewer blocks than this.",
    )
    resamples: int = Field(2000, ge=100, le=100000, description="Bootstrap resamples.")
    confidence: float = Field(0.95, gt=0, lt=1, description="Confidence level of the intervals.")
    seed: int = Field(
        20240,
        ge=0,
        lt=2**64,
        description="Seed of the resampling (the intervals are reproducible).",
    )


class GatesCfg(Section):
    hard: HardGates = HardGates()
    soft: SoftGates = SoftGates()
    bands: DecisionBands = DecisionBands()
    venue_rules: VenueRuleGates = VenueRuleGates()
    error_bars: ErrorBarsCfg = ErrorBarsCfg()


class Profile(BaseSettings):
    """A strategy profile: instrument, quoting, risk, fees, latency, queue, limiter, gates."""

    model_config = SettingsConfigDict(
        env_prefix="MM_PROFILE__",
        env_nested_delimiter="__",
        extra="forbid",
        frozen=True,
        case_sensitive=False,
        allow_inf_nan=False,
    )

    name: str = Field("S1", description="Short name shown in reports.")
    description: str = Field("", description="What this profile is for.")
    instrument: InstrumentCfg = InstrumentCfg()
    quoting: QuotingCfg = QuotingCfg()
    inventory: InventoryCfg = InventoryCfg()
    fees: FeesCfg = FeesCfg()
    latency: LatencyCfg = LatencyCfg()
    queue: QueueCfg = QueueCfg()
    matching: MatchingCfg = MatchingCfg()
    limiter: LimiterCfg = LimiterCfg()
    gates: GatesCfg = GatesCfg()
    # At least 1 ms: the step is rounded to whole ns (below 0.5 ns it was 0 and the run died
    # dividing by it), and sub-millisecond marks multiply the records with no new information
    # (1 us would be 1.8e9 marks per 30-minute iteration).
    mark_interval_ms: float = Field(
        100.0, ge=1, le=60000, description="Sampling step of the recorded mid/position marks."
    )

    _refuse_bool = field_validator("*", mode="before")(refuse_bool)

    @model_validator(mode="after")
    def _can_quote(self) -> Profile:
        """A profile under which no order can ever be placed ran to a verdict on 0 fills.
        ``ctx.fields`` names the settings involved, for the message's origin (config/loading)."""
        qty, limit = self.quoting.order_qty, self.inventory.max_position
        if qty > limit * (1.0 + 1e-9):  # the limiter's own tolerance (core/limiter.py)
            raise PydanticCustomError(
                "cannot_quote",
                "quoting.order_qty {qty} is above inventory.max_position {limit}: every order "
                "would breach the position limit, so the strategy could never quote",
                {
                    "qty": qty,
                    "limit": limit,
                    "fields": ("quoting.order_qty", "inventory.max_position"),
                },
            )
        return self

    def instrument_for(self, feed: Instrument) -> Instrument:
        """The feed's instrument with this profile's tick/lot, where set, winning."""
        i = self.instrument
        tick, lot = i.tick_size, i.lot_size
        if tick is None and lot is None and i.inverse is None and i.contract_size is None:
            return feed
        # A contract size alone makes the instrument inverse; inverse=false forces linear.
        inverse = (feed.inverse or i.contract_size is not None) if i.inverse is None else i.inverse
        return Instrument(
            feed.symbol, feed.venue, tick or feed.tick_size, lot or feed.lot_size,
            feed.price_decimals, inverse,
            (i.contract_size or feed.contract_size) if inverse else None,
        )  # fmt: skip

    @classmethod
    def settings_customise_sources(cls, settings_cls, init_settings, env_settings, *_a, **_k):
        return sources(settings_cls, init_settings, env_settings)
