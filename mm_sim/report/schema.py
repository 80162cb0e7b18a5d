"""JSON schemas of every report and run-directory file, as pydantic models.

The same models build the files (``model_dump(mode="json")``) and read them back
(``model_validate``), so a report that does not match its schema can neither be written nor
loaded silently. Every file carries ``schema_version``; a reader refuses a version it does not
know. Field meanings, units and formulas are in docs/REPORTS.md (a test checks that every field
named here is documented there).

Conventions: amounts are in quote currency; ``*_bps`` values are basis points of traded
notional; ``*_cost_*_bps`` values are costs (minus the contribution); ``None`` (JSON ``null``)
means "undefined" (e.g. bps with no fills), never zero.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Annotated, Any, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, ValidationError

from mm_sim.errors import UserError, shown

SCHEMA_VERSION: Literal[1] = 1

Verdict = Literal["SUCCESS", "OK", "WARN", "FAIL"]


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid")


class _NaNWhenUnmeasured:
    """Marks a float the run writes as NaN when a fill had no mid to measure it against (a
    fill into a book not known then): reading a run back accepts NaN there and nowhere else."""


NAN_WHEN_UNMEASURED = _NaNWhenUnmeasured()
# An amount summed over fills that needs their mids: NaN when one of them had none.
MidAmount = Annotated[float, NAN_WHEN_UNMEASURED]


# --------------------------------------------------------------------------------------------
# Edge report
# --------------------------------------------------------------------------------------------


class Amounts(_Model):
    """Components as amounts of quote currency (the bps values are these over notional)."""

    gross: MidAmount
    slippage: MidAmount
    fees_eff: float
    inventory: MidAmount
    net: MidAmount


class Markout(_Model):
    horizon_ms: int
    fills_covered: int
    adverse_bps: float | None
    cost_p50_bps: float | None
    cost_p95_bps: float | None


class ActionCounts(_Model):
    place: int
    replace: int
    cancel: int


class BlockReasons(_Model):
    attempts: int
    counts: dict[str, int]
    ratios: dict[str, float]


class PositionStats(_Model):
    start: float | None
    end: float | None
    max_abs: float | None
    mean_abs: float | None
    inventory_notional_max_abs: float | None
    mid_start: float | None
    mid_end: float | None


class QuoteStats(_Model):
    quoted_spread_bps_mean: float | None
    quoted_spread_bps_p50: float | None
    two_sided_pct: float | None


class OrderCounts(_Model):
    """Orders as the venue counts them (a replace ends one order and starts another)."""

    sent: int
    ended_by_cancel: int
    ended_by_replace: int
    ended_by_fill: int
    open_at_end: int
    rejected: int
    lost_cancels: int


class RuleCycle(_Model):
    start_ns: int
    orders: int
    unfilled_ratio: float
    invalid_cancel_ratio: float
    dust_ratio: float


class RuleIndicator(_Model):
    name: str
    recording_orders: int
    ban: float
    worst: float | None
    worst_cycle_start_ns: int | None
    mean: float | None
    cycles_recorded: int
    worst_recorded: float | None
    cycles_banned: int


class VenueRules(_Model):
    """Binance Futures' quantitative trading rules, per cycle (docs/REPORTS.md)."""

    venue: Literal["binance_futures"] = "binance_futures"
    cycle_s: float
    invalid_cancel_s: float
    dust_notional: float
    indicators: dict[str, RuleIndicator]
    cycles: list[RuleCycle]


class Driver(_Model):
    name: str
    kind: Literal["component", "markout", "block"]
    value: float
    unit: Literal["bps", "ratio"]
    harm_bps: float | None
    threshold: float | None


class Money(_Model):
    """Units of an inverse run's money figures: base coin, with quote-currency figures beside.

    ``pnl``, ``notional`` and ``amounts`` of the section are base coin; these are their values
    in quote currency. The traded notional is exact (contracts x contract size); a coin amount
    is converted at the section's final mid (what the coin is worth at its end).
    """

    currency: Literal["base_coin"]
    contract_size: float
    quote_mid: float | None
    pnl_quote: float | None
    net_quote: float | None
    notional_quote: float


class EdgeSection(_Model):
    iteration: int | None
    ts_start_ns: int | None
    ts_end_ns: int | None
    fills: int
    maker_fills: int
    volume: float
    notional: float
    pnl: float | None
    pnl_residual: float | None
    amounts: Amounts
    gross_bps: float | None
    slippage_bps: float | None
    fees_eff_bps: float | None
    inventory_bps: float | None
    net_bps: float | None
    adverse_bps: float | None
    adverse_cost_p50_bps: float | None
    adverse_cost_p95_bps: float | None
    adverse: dict[str, Markout]
    maker_share_pct: float | None
    actions: ActionCounts
    cancel_ratio: float | None
    # Defaults below let run directories written before these fields existed be rebuilt.
    cancel_action_share: float | None = None
    orders: OrderCounts | None = None
    venue_rules: VenueRules | None = None
    post_only_rejected: int = 0
    post_only_rejected_share: float | None = None
    order_age_p50_ms: float | None
    order_age_p95_ms: float | None
    slippage_cost_p50_bps: float | None
    slippage_cost_p95_bps: float | None
    ws_lag_p95_ms: float | None
    clock_error: bool = False
    block_reasons: BlockReasons
    position: PositionStats
    quotes: QuoteStats
    final_mid: float | None
    neg_edge_drivers: list[Driver]
    money: Money | None = None  # inverse instruments only (linear: quote currency throughout)


class RunIdentity(_Model):
    profile: str
    feed: dict[str, Any]
    seed: int | None


class Interval(_Model):
    estimate: float | None
    lo: float | None
    hi: float | None
    se: float | None


class BandSignificance(_Model):
    band: Verdict
    band_lo: Verdict | None
    band_hi: Verdict | None
    significant: bool


class StatisticalErrorBars(_Model):
    method: str
    block_s: float | None
    block_s_configured: float
    blocks: int
    resamples: int
    confidence: float
    seed: int
    reconcile_residual: float | None
    figures: dict[str, Interval]
    band_decision: BandSignificance
    note: str | None


class ErrorBars(_Model):
    statistical: StatisticalErrorBars | None
    model: dict[str, Any] | None = None  # fill-model alternatives (to come); null until then


class EdgeReport(_Model):
    schema_version: Literal[1] = SCHEMA_VERSION
    kind: Literal["edge_report"] = "edge_report"
    run: RunIdentity
    horizons_ms: list[int]
    gate_horizon_ms: int
    totals: EdgeSection
    iterations: list[EdgeSection]
    error_bars: ErrorBars


# --------------------------------------------------------------------------------------------
# KPI gate
# --------------------------------------------------------------------------------------------


class GateCheck(_Model):
    name: str
    kind: Literal["hard", "soft"]
    metric: str
    op: Literal[">=", "<=", "<"]
    threshold: float
    ideal: float | None
    value: float | None
    passed: bool
    status: Literal["IDEAL", "PASS", "FAIL", "NO_DATA", "NOT_RECORDED", "CLOCK_ERROR"]


class GateResult(_Model):
    verdict: Verdict
    band: Verdict
    net_bps: float | None
    clock_error: bool = False
    hard_failed: list[str]
    soft_failed: list[str]
    checks: list[GateCheck]
    next_step: str


class IterationVerdict(_Model):
    iteration: int
    verdict: Verdict
    band: Verdict
    net_bps: float | None
    hard_failed: list[str]
    partial: bool = False  # cut short (the feed ended, or the run was interrupted)


class KpiGate(_Model):
    schema_version: Literal[1] = SCHEMA_VERSION
    kind: Literal["kpi_gate"] = "kpi_gate"
    verdict: Verdict
    band: Verdict
    net_bps: float | None
    clock_error: bool
    band_decision: BandSignificance | None
    bands: dict[str, float]
    rule: str
    hard_failed: list[str]
    soft_failed: list[str]
    hard: list[GateCheck]
    soft: list[GateCheck]
    next_step: str
    iterations: list[IterationVerdict]
    # Iterations cut short (the feed ended, or the run was interrupted): the verdict covers
    # them as recorded, and next_step says so.
    partial_iterations: list[int] = []


# --------------------------------------------------------------------------------------------
# Run directory: run.json, metrics.jsonl lines, soak_metrics.json
# --------------------------------------------------------------------------------------------


class DecisionRecord(_Model):
    """One tuner decision (the tuner's ``Decision.to_json()``)."""

    iteration: int
    sim_ts: int | None = None
    driver: str
    field: str | None
    old: float | None
    new: float | None
    reason: str


class RunConfig(BaseModel):
    """run.json. Extra keys (e.g. the runner's instrument or iteration plan) are kept as is."""

    model_config = ConfigDict(extra="allow")

    schema_version: Literal[1] = SCHEMA_VERSION
    kind: Literal["run_config"] = "run_config"
    settings: dict[str, Any]
    profile: dict[str, Any]
    initial_overrides: dict[str, float]
    feed: dict[str, Any]
    seed: int | None
    # name -> the raw record file's layout, field -> numpy type string (older runs: numpy's
    # descr as JSON text, still read)
    records: dict[str, dict[str, str] | str]


class IterationLine(_Model):
    """One line of ``soak/metrics.jsonl``: written once, when the iteration commits."""

    schema_version: Literal[1] = SCHEMA_VERSION
    iteration: int
    partial: bool = False
    edge: EdgeSection
    gate: GateResult
    overrides: dict[str, float]
    overrides_next: dict[str, float]
    offsets: dict[str, int]
    ws_lag_p95_ms: float | None
    decisions: list[DecisionRecord]
    extra: dict[str, Any]
    # XXH3-64 of each records file's bytes of this iteration (from the previous line's offset
    # to this one's): a report refuses records changed after the run wrote them instead of
    # computing figures from them. Absent in runs written before 2026-12-05.
    digests: dict[str, str] = {}


class LineExtra(BaseModel):
    """The keys of a line's ``extra`` a report decides on (``outage`` fails the feed_outage
    gate), typed for reading back; the rest is carried as the runner wrote it."""

    model_config = ConfigDict(extra="allow")
    events: int | None = None
    outage: bool | None = None


class SoakMetrics(_Model):
    schema_version: Literal[1] = SCHEMA_VERSION
    kind: Literal["soak_metrics"] = "soak_metrics"
    iterations: list[IterationLine]


M = TypeVar("M", bound=BaseModel)


def dump(model: BaseModel) -> dict[str, Any]:
    return model.model_dump(mode="json")


def validate(
    cls: type[M], data: Any, where: str, strict: bool = False, at: tuple[str, ...] = ()
) -> M:
    """Validate ``data`` as ``cls``; a mismatch becomes a UserError naming the file and field
    (``at``: where ``data`` sits in the file, put before the field's name)."""
    if isinstance(data, dict):
        version = data.get("schema_version", SCHEMA_VERSION)
        if version != SCHEMA_VERSION:
            raise UserError(
                f"{where}: schema_version {version!r} is not supported "
                f"(this mm_sim reads version {SCHEMA_VERSION})"
            )
    try:
        return cls.model_validate(data, strict=strict)
    except ValidationError as exc:
        err = exc.errors()[0]
        loc = ".".join(str(p) for p in (*at, *err["loc"])) or "<root>"
        more = f" (and {len(exc.errors()) - 1} more)" if len(exc.errors()) > 1 else ""
        raise UserError(
            f"{where}: field '{loc}' = {shown(err.get('input'))}: {err['msg']}{more}"
        ) from None


def _non_finite(
    value: Any, at: tuple[str, ...], nan_ok: bool = False
) -> tuple[tuple[str, ...], float] | None:
    """Where in a validated ``value`` a NaN or an infinity sits that its run cannot have
    written (the first one), with it."""
    if isinstance(value, float):
        return None if math.isfinite(value) or nan_ok else (at, value)
    if isinstance(value, BaseModel):
        items = [
            (name, getattr(value, name), NAN_WHEN_UNMEASURED in info.metadata)
            for name, info in type(value).model_fields.items()
        ]
        items += [(k, v, False) for k, v in (value.model_extra or {}).items()]
    elif isinstance(value, dict):
        items = [(k, v, nan_ok) for k, v in value.items()]
    elif isinstance(value, list | tuple):
        items = [(str(k), v, nan_ok) for k, v in enumerate(value)]
    else:
        return None
    for key, item, ok in items:
        found = _non_finite(item, (*at, str(key)), ok)
        if found is not None:
            return found
    return None


def validate_written(cls: type[M], data: Any, where: str, at: tuple[str, ...] = ()) -> M:
    """Validate, strictly, what a run wrote and now reads back to decide on.

    The writer stores dumps of validated models, so each value already has its field's JSON
    type, and it writes null where a figure is undefined (NaN only in the amounts marked
    NAN_WHEN_UNMEASURED). A "NaN" for a number, a "yes" for a flag or a NaN anywhere else was
    therefore edited in by hand, and lax parsing (the string "NaN" as a float, "yes" as true)
    would compute a verdict on it."""
    model = validate(cls, data, where, strict=True, at=at)
    found = _non_finite(model, at)
    if found is not None:
        loc, value = found
        raise UserError(
            f"{where}: field '{'.'.join(loc)}' = {value!r}: expected a finite number or null "
            "(a run writes null where a figure is undefined)"
        )
    return model


def load(cls: type[M], path: Path) -> M:
    """Read and validate one JSON report file."""
    if not path.exists():
        raise UserError(f"{path}: file not found")
    try:
        data = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise UserError(f"{path}:{exc.lineno}:{exc.colno}: invalid JSON: {exc.msg}") from None
    return validate(cls, data, str(path))
