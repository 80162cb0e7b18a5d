"""Runtime overrides: the six knobs the tuner and the operator may change mid-run, and the
field bounds both of them clamp to."""

from __future__ import annotations

import types
import typing
from typing import Any, ClassVar, NamedTuple

from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator
from pydantic.fields import FieldInfo
from pydantic_core import PydanticCustomError
from pydantic_settings import BaseSettings, SettingsConfigDict

from mm_sim.config.file_source import sources


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


def _numeric(annotation: Any) -> bool:
    """A number field (``float``, ``int | None`` ...), not a switch that also takes a bool."""
    args = (
        typing.get_args(annotation)
        if typing.get_origin(annotation) in (typing.Union, types.UnionType)
        else (annotation,)
    )
    return bool(set(args) & {int, float}) and bool not in args


def refuse_bool(cls: type[BaseModel], value: Any, info: ValidationInfo) -> Any:
    """``true`` in a number field is a slip (pydantic reads it as 1.0: an order of one BTC, a
    profile that could never quote). Only bools: pydantic's strict mode would also refuse the
    numbers the environment gives as text."""
    field = info.field_name
    if (
        isinstance(value, bool)
        and field is not None
        and _numeric(cls.model_fields[field].annotation)
    ):
        raise PydanticCustomError("bool_for_number", "Input should be a number, not true/false")
    return value


class Section(BaseModel):
    # NaN and infinity are never meant (and would print as invalid JSON): refused everywhere.
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)

    _refuse_bool = field_validator("*", mode="before")(refuse_bool)


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

    _refuse_bool = field_validator("*", mode="before")(refuse_bool)

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
        return sources(settings_cls, init_settings, env_settings)
