"""Typed configuration: the only source of truth for every tunable value.

Three models, each loaded from a JSON file and then overridden, in this order of precedence
(highest last):

1. the JSON file (``profiles/market_maker_S1.json``, ``overrides/runtime_overrides.json``);
2. environment variables: ``MM_PROFILE__<SECTION>__<FIELD>`` and ``MM_OVERRIDES__<FIELD>``
   (``__`` separates nesting levels; names are case-insensitive);
3. command-line ``--set profile.<section>.<field>=VALUE`` / ``--set overrides.<field>=VALUE``.

Run settings (iterations, seed, feed, ...) come from ``MM_<NAME>`` and their own CLI flags.
Any invalid value stops the program with one message naming where it came from (file and line,
environment variable or flag), the field, the value and what was expected.
"""

from __future__ import annotations

import contextvars
import json
import os
import re
from enum import StrEnum
from pathlib import Path
from typing import Any, ClassVar, Literal, NamedTuple, TypeVar

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic.fields import FieldInfo
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
)

from mm_sim.errors import UserError
from mm_sim.events import Instrument, read_text_file

REPO_ROOT = Path(__file__).resolve().parent.parent
PROFILES_DIR = REPO_ROOT / "profiles"
OVERRIDES_DIR = REPO_ROOT / "overrides"
FEEDS_DIR = REPO_ROOT / "feeds"
DEFAULT_PROFILE = PROFILES_DIR / "market_maker_S1.json"
DEFAULT_OVERRIDES = OVERRIDES_DIR / "runtime_overrides.json"


class Bounds(NamedTuple):
    """A numeric field's limits as declared on the model (None where unbounded)."""

    lower: float | None
    lower_open: bool
    upper: float | None
    upper_open: bool


def field_bounds(info: FieldInfo) -> Bounds:
    """Read ge/gt/le/lt from a field, so docs and the tuner clamp to the same limits."""
    lo: float | None = None
    hi: float | None = None
    lo_open = hi_open = False
    for meta in info.metadata:
        if getattr(meta, "ge", None) is not None:
            lo, lo_open = float(meta.ge), False
        if getattr(meta, "gt", None) is not None:
            lo, lo_open = float(meta.gt), True
        if getattr(meta, "le", None) is not None:
            hi, hi_open = float(meta.le), False
        if getattr(meta, "lt", None) is not None:
            hi, hi_open = float(meta.lt), True
    return Bounds(lo, lo_open, hi, hi_open)


class _Section(BaseModel):
    # NaN and infinity are never meant (and would print as invalid JSON): refused everywhere.
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)


# --------------------------------------------------------------------------------------------
# Runtime overrides: the six knobs the tuner and the operator may change mid-run.
# --------------------------------------------------------------------------------------------


class Overrides(BaseSettings):
    """The six runtime overrides (the seed's baseline values are the defaults)."""

    model_config = SettingsConfigDict(
        env_prefix="MM_OVERRIDES__",
        extra="forbid",
        frozen=True,
        case_sensitive=False,
        allow_inf_nan=False,
    )

    min_interval_ms: float = Field(
        70.0, ge=0.0, le=5000.0, description="Minimum time between two quote updates on one side."
    )
    replace_rate_per_min: float = Field(
        280.0,
        ge=1.0,
        le=6000.0,
        description="Cancel/replace actions allowed per rolling minute (token bucket).",
    )
    base_spread_bps_delta: float = Field(
        0.10, ge=-5.0, le=10.0, description="Added to the profile's base half-spread, in bps."
    )
    tail_age_ms: float = Field(
        650.0,
        ge=10.0,
        le=60000.0,
        description="A resting quote older than this is refreshed (bounds the order-age tail).",
    )
    impact_cap_ratio: float = Field(
        0.09,
        gt=0.0,
        le=10.0,
        description="Quote size is capped at this fraction of visible size near the touch.",
    )
    max_delta_ratio: float = Field(
        0.14,
        gt=0.0,
        le=10.0,
        description="Largest move of a quote in one update, as a fraction of the half-spread.",
    )

    FIELDS: ClassVar[tuple[str, ...]] = (
        "min_interval_ms",
        "replace_rate_per_min",
        "base_spread_bps_delta",
        "tail_age_ms",
        "impact_cap_ratio",
        "max_delta_ratio",
    )

    def as_dict(self) -> dict[str, float]:
        return {f: float(getattr(self, f)) for f in self.FIELDS}

    @classmethod
    def settings_customise_sources(cls, settings_cls, init_settings, env_settings, *_a, **_k):
        return _sources(settings_cls, init_settings, env_settings)


# --------------------------------------------------------------------------------------------
# Strategy profile
# --------------------------------------------------------------------------------------------


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


class InstrumentCfg(_Section):
    tick_size: float | None = Field(
        None, gt=0, description="Price tick; null = taken from the feed's metadata."
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


class QuotingCfg(_Section):
    order_qty: float = Field(0.01, gt=0, description="Quote size per side, base units.")
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


class InventoryCfg(_Section):
    max_position: float = Field(0.1, gt=0, description="Absolute position limit, base units.")
    max_notional: float = Field(
        10000.0, gt=0, description="Absolute position notional limit, quote currency."
    )


class FeesCfg(_Section):
    maker_bps: float = Field(
        -0.5, ge=-50, le=50, description="Maker fee, bps of notional; negative = rebate."
    )
    taker_bps: float = Field(4.0, ge=-50, le=50, description="Taker fee, bps of notional.")


class LatencyCfg(_Section):
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


class QueueCfg(_Section):
    model: QueueModel = Field(QueueModel.probabilistic, description="Queue-position model.")
    power: float = Field(
        2.0, gt=0, le=10, description="Probabilistic model: f(x) = x^power in P = f(b)/(f(b)+f(a))."
    )


class MatchingCfg(_Section):
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
        description="exchange order, live feeds: the same window; the simulated venue runs this "
        "far behind the strategy, so fill reports arrive up to this much later.",
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


class LimiterCfg(_Section):
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


class HardGates(_Section):
    """Must pass; any failure makes the verdict FAIL."""

    net_bps_min: float = _gate(2.5, "Total net edge must be at least this.")
    adverse_p95_max: float = _gate(5.0, "p95 of per-fill adverse cost (1 s markout) at most this.")
    cancel_ratio_max: float = _gate(
        0.65,
        "Orders ended by a cancel or a replace / orders sent (places + replaces) at most this.",
    )
    maker_share_min_pct: float = _gate(80.0, "Maker share of traded notional at least this.")


class SoftGates(_Section):
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


class DecisionBands(_Section):
    """The seed's decision matrix on net_bps: >= success, >= ok, >= warn, else FAIL."""

    success: float = _gate(3.0, "net_bps at or above: SUCCESS (run the 24 h soak).")
    ok: float = _gate(2.8, "net_bps at or above: OK (1-2 adjustments, re-run 3 h).")
    warn: float = _gate(2.5, "net_bps at or above: WARN (targeted package); below: FAIL.")

    @model_validator(mode="after")
    def _ordered(self) -> DecisionBands:
        if not self.success >= self.ok >= self.warn:
            raise ValueError("bands must satisfy success >= ok >= warn")
        return self


class VenueRuleGates(_Section):
    """Binance Futures' quantitative trading rules, judged per cycle (docs/REPORTS.md §3).

    A cycle is judged on a rule when its order count reaches the rule's recording threshold;
    a judged cycle at or above the ban ratio fails the rule's hard gate.
    """

    cycle_s: float = Field(600.0, gt=0, le=86400, description="Length of a rule cycle.")
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


class ErrorBarsCfg(_Section):
    """The block bootstrap behind the statistical error bars (docs/REPORTS.md §2)."""

    block_s: float = Field(
        300.0,
        gt=0,
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


class GatesCfg(_Section):
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
    mark_interval_ms: float = Field(
        100.0, gt=0, le=60000, description="Sampling step of the recorded mid/position marks."
    )

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
        return _sources(settings_cls, init_settings, env_settings)


# --------------------------------------------------------------------------------------------
# Loading with precedence and one clear error message
# --------------------------------------------------------------------------------------------

_file_data: contextvars.ContextVar[dict[str, Any]] = contextvars.ContextVar("_file_data")


class _FileSource(PydanticBaseSettingsSource):
    """Lowest-priority source: the already-parsed JSON file."""

    def get_field_value(self, field: Any, field_name: str) -> tuple[Any, str, bool]:
        return None, field_name, False

    def __call__(self) -> dict[str, Any]:
        return dict(_file_data.get({}))


def _sources(settings_cls: Any, init_settings: Any, env_settings: Any) -> tuple[Any, ...]:
    return (init_settings, env_settings, _FileSource(settings_cls))


def read_json_file(path: Path, what: str) -> dict[str, Any]:
    if not path.exists():
        raise UserError(f"{path}: {what} file not found")
    try:
        data = json.loads(read_text_file(path, what))
    except json.JSONDecodeError as exc:
        raise UserError(
            f"{path}:{exc.lineno}:{exc.colno}: invalid JSON in {what}: {exc.msg}"
        ) from None
    if not isinstance(data, dict):
        raise UserError(f"{path}: {what} must be a JSON object, got {type(data).__name__}")
    return data


def _line_of(path: Path, key: str) -> int | None:
    pattern = re.compile(r'"' + re.escape(key) + r'"\s*:')
    for n, line in enumerate(path.read_text(errors="replace").splitlines(), 1):
        if pattern.search(line):
            return n
    return None


def _nest(flat: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for dotted, value in flat.items():
        cur = out
        parts = dotted.split(".")
        for p in parts[:-1]:
            cur = cur.setdefault(p, {})
        cur[parts[-1]] = value
    return out


M = TypeVar("M", bound=BaseSettings)


def _load(
    cls: type[M], path: Path | None, cli: dict[str, Any] | None, env_prefix: str, what: str
) -> M:
    file_data = read_json_file(path, what) if path is not None else {}
    cli = cli or {}
    _check_env_names(cls, env_prefix, what)
    token = _file_data.set(file_data)
    try:
        return cls(**_nest(cli))
    except ValidationError as exc:
        raise UserError(_explain(exc, path, cli, env_prefix, what)) from None
    finally:
        _file_data.reset(token)


def _check_env_names(cls: type[BaseModel], env_prefix: str, what: str) -> None:
    """An ``MM_PROFILE__*`` / ``MM_OVERRIDES__*`` variable that names no field is a typo the
    settings loader would silently ignore: refuse it, naming the variable."""
    for key in sorted(os.environ):
        if not key.upper().startswith(env_prefix):
            continue
        model: Any = cls
        parts = key[len(env_prefix) :].lower().split("__")
        for i, part in enumerate(parts):
            fields = getattr(model, "model_fields", None)
            if not fields or part not in fields:
                raise UserError(
                    f"environment {key}: no {what} field '{'.'.join(parts[: i + 1])}' "
                    "(check the spelling; see docs/CONFIG.md)"
                )
            model = fields[part].annotation


def _explain(
    exc: ValidationError,
    path: Path | None,
    cli: dict[str, Any],
    env_prefix: str,
    what: str,
    where: str | None = None,
) -> str:
    lines = []
    for err in exc.errors():
        loc = [str(p) for p in err["loc"]]
        dotted = ".".join(loc)
        env_name = env_prefix + "__".join(loc).upper()
        value = err.get("input")
        if where is not None:
            origin = where
        elif dotted in cli:
            origin = f"command line --set {what}.{dotted}"
        elif any(k.upper() == env_name for k in os.environ):
            origin = f"environment {env_name}"
        elif path is not None:
            line = _line_of(path, loc[-1]) if loc else None
            origin = f"{path}:{line}" if line else str(path)
        else:
            origin = "defaults"
        if err["type"] == "extra_forbidden":
            expected = "no such field (check the spelling; see docs/CONFIG.md)"
        else:
            expected = err["msg"]
        lines.append(f"{origin}: {what} field '{dotted}' = {value!r}: {expected}")
    return "invalid configuration: " + "; ".join(lines)  # one line, however many errors


def resolve_profile_path(name_or_path: str | os.PathLike[str] | None) -> Path:
    """``S1`` -> ``profiles/market_maker_S1.json``; anything else is a path."""
    if name_or_path is None:
        return DEFAULT_PROFILE
    s = str(name_or_path)
    named = PROFILES_DIR / f"market_maker_{s}.json"
    if "/" not in s and not s.endswith(".json") and named.exists():
        return named
    p = Path(s)
    if not p.exists() and not s.endswith(".json"):
        known = sorted(x.stem.removeprefix("market_maker_") for x in PROFILES_DIR.glob("*.json"))
        raise UserError(f"unknown profile {s!r}: not a file, and not one of {known}")
    return p


def load_profile(
    name_or_path: str | os.PathLike[str] | None = None, cli: dict[str, Any] | None = None
) -> Profile:
    return _load(Profile, resolve_profile_path(name_or_path), cli, "MM_PROFILE__", "profile")


def load_overrides(
    path: str | os.PathLike[str] | None = None, cli: dict[str, Any] | None = None
) -> Overrides:
    p = Path(path) if path is not None else DEFAULT_OVERRIDES
    return _load(Overrides, p, cli, "MM_OVERRIDES__", "overrides")


def validate_overrides_dict(data: dict[str, Any], where: str) -> Overrides:
    """Validate overrides arriving mid-run (operator edit, tuner): no env or CLI layering."""
    try:
        return Overrides.model_validate(data)
    except ValidationError as exc:
        raise UserError(_explain(exc, None, {}, "MM_OVERRIDES__", "overrides", where)) from None


def parse_set_flags(items: list[str] | None) -> tuple[dict[str, Any], dict[str, Any]]:
    """Split ``--set profile.a.b=V`` / ``--set overrides.x=V`` into two flat dicts."""
    prof: dict[str, Any] = {}
    ovr: dict[str, Any] = {}
    for item in items or []:
        key, sep, raw = item.partition("=")
        if not sep:
            raise UserError(f"--set {item!r}: expected KEY=VALUE, e.g. overrides.tail_age_ms=700")
        try:
            value: Any = json.loads(raw)
        except json.JSONDecodeError:
            value = raw
        head, _, rest = key.strip().partition(".")
        if head == "profile" and rest:
            prof[rest] = value
        elif head == "overrides" and rest:
            ovr[rest] = value
        else:
            raise UserError(
                f"--set {item!r}: key must start with 'profile.' or 'overrides.' "
                "(e.g. profile.fees.maker_bps=-0.5)"
            )
    return prof, ovr


class RunSettings(BaseSettings):
    """Settings of one soak run; CLI flags override ``MM_<NAME>`` environment values."""

    model_config = SettingsConfigDict(
        env_prefix="MM_", extra="ignore", case_sensitive=False, allow_inf_nan=False
    )

    profile: str = Field("S1", description="Profile name in profiles/ or a path.")
    overrides: str | None = Field(
        None, description="Starting overrides file; null = overrides/runtime_overrides.json."
    )
    feed: str = Field("synthetic", description="Feed name in feeds/, a .npy feed or a .json.")
    iterations: int = Field(6, ge=1, le=10000, description="Number of iterations.")
    iteration_minutes: float = Field(
        30.0, gt=0, le=10080, description="Simulated minutes per iteration."
    )
    seed: int = Field(1, ge=0, lt=2**64, description="Seed of the synthetic market and the core.")
    artifacts: str = Field("artifacts", description="Output directory of the run.")
    speed: float | None = Field(
        None, gt=0, description="Replay pace vs the wall clock (1 = real time); null = max."
    )
    clock: str = Field(
        "auto",
        description="Shift added to the feed's local_ts: auto = the feed's clock model, raw = "
        "none, or milliseconds (docs/FEEDS.md).",
    )

    model_arms: str = Field(
        "all",
        description="Fill-model arms run beside the soak for the model error bars: all, none or "
        "a comma-separated list of crossing_fills, through_fill, event_order, order_type, decide, "
        "clock (docs/REPORTS.md).",
    )
    tuner: Literal["seed", "walk-forward"] = Field(
        "seed",
        description="Who tunes the overrides between iterations: seed = the seed's scenarios "
        "A-D, walk-forward = counterfactual replays of each iteration (docs/TUNER.md).",
    )
    shadow: int = Field(
        0,
        ge=0,
        le=12,
        description="Shadow arms: engines running candidate overrides on the same events, "
        "paper only (docs/TUNER.md).",
    )
    scheduler: str | None = Field(
        None,
        description="Dask scheduler (tcp://HOST:PORT) for the walk-forward replays; null = in "
        "the soak's process.",
    )

    @field_validator("clock", mode="before")
    @classmethod
    def _clock(cls, v: Any) -> str:
        from mm_sim.feeds.clock import parse_clock_setting

        return parse_clock_setting(v)

    @field_validator("model_arms", mode="before")
    @classmethod
    def _model_arms(cls, v: Any) -> str:
        from mm_sim.runtime.arm_names import parse_arms

        return ",".join(parse_arms(str(v))) or "none"


class LocalSettings(BaseSettings):
    """How this machine runs a soak (``MM_<NAME>``): settings that never change a reported
    number, so they are not part of a run's record (a cached feed is byte-identical to a
    generated one; the model arms give the same records in a second process or inline)."""

    model_config = SettingsConfigDict(
        env_prefix="MM_", extra="ignore", case_sensitive=False, allow_inf_nan=False
    )

    synthetic_cache: bool = Field(
        True,
        description="Keep each generated synthetic day on disk and reuse it when the feed "
        "definition, seed, duration and generator are the same (docs/SYNTHETIC.md).",
    )
    synthetic_cache_dir: str | None = Field(
        None,
        description="Directory of the synthetic feed cache; null = $XDG_CACHE_HOME/mm_sim/"
        "synthetic (~/.cache/mm_sim/synthetic).",
    )
    synthetic_cache_max_mb: float = Field(
        2048.0,
        ge=0,
        le=1e7,
        description="Size cap of the cache; the least recently used days are removed beyond it.",
    )
    sweep_feed_cache_mb: float = Field(
        1024.0,
        ge=0,
        le=1e7,
        description="Per sweep worker process: feeds up to this size are read into memory on "
        "a worker's first cell on them and kept for its next cells; larger ones stay memory-"
        "mapped (opened and verified once); 0 = every cell opens its feed (docs/SWEEP.md).",
    )
    model_arms_process: Literal["auto", "always", "never"] = Field(
        "auto",
        description="Where the fill-model arms run: always = in a second (forked) process beside "
        "the primary engine; never = after it on each chunk, in the soak's process; auto = the "
        "second process when the load average leaves a core free for it (docs/REPORTS.md).",
    )


def load_local_settings() -> LocalSettings:
    try:
        return LocalSettings()
    except ValidationError as exc:
        errs = [
            f"environment MM_{'.'.join(map(str, e['loc'])).upper()} = {e.get('input')!r}: "
            f"{e['msg']}"
            for e in exc.errors()
        ]
        raise UserError("invalid local settings: " + "; ".join(errs)) from None


def load_run_settings(cli: dict[str, Any]) -> RunSettings:
    try:
        return RunSettings(**{k: v for k, v in cli.items() if v is not None})
    except ValidationError as exc:
        errs = []
        for e in exc.errors():
            name = ".".join(str(p) for p in e["loc"])
            from_flag = cli.get(name) is not None  # a flag left unset falls back to MM_<NAME>
            origin = (
                f"--{name.replace('_', '-')}" if from_flag else f"environment MM_{name.upper()}"
            )
            errs.append(f"{origin} = {e.get('input')!r}: {e['msg']}")
        raise UserError("invalid run settings: " + "; ".join(errs)) from None
